"""The training loss: next-token cross-entropy + grounding of the cross-attention + entropy.

`compute_loss` keeps the reference notebook's formulas exactly (it is the reference solution of the
chapter 3 exercise), built from three small pieces a student writes one at a time. The reference's
grounding term is a binary cross-entropy between a softmax distribution and the normalised mask,
which treats the 16 weights of one row as if they were independent probabilities; the principled
alternative, `grounding="kl"`, matches the two distributions with a KL divergence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GROUNDING_LOSSES = ("bce", "kl")
GROUND_ROWS = ("holds", "predicts")
GROUND_LAYERS = ("last", "all")
GROUND_HEADS = ("mean", "each")


def shifted_cross_entropy(logits, token_ids, pad_id=0):
    """Next-token cross-entropy: position t predicts token t+1; <pad> targets are ignored.

    logits (B, T, V), token_ids (B, T) -> scalar mean over the non-pad targets.
    """
    shift_logits = logits[:, :-1].contiguous()          # (B, T-1, V) predictions for 1..T-1
    shift_targets = token_ids[:, 1:].contiguous()       # (B, T-1)
    if not (shift_targets != pad_id).any():
        # Nothing to predict (the reference would return NaN here).
        return logits.sum() * 0.0
    return F.cross_entropy(shift_logits.view(-1, logits.size(-1)), shift_targets.view(-1),
                           ignore_index=pad_id)


def grounding_loss(attn_weights, finding_masks, kind="bce", rows="holds", layers="last",
                   heads="mean"):
    """How far the head-averaged last-layer attention is from the grounding mask, on the tokens
    that have one.

    attn_weights: list of (B, H, T, N) per layer; finding_masks: (B, T, N) with 0/1 entries.
    kind="bce" (the reference): BCE between the weights and the mask normalised to sum to 1.
    kind="kl": KL(normalised mask || attention), zero exactly when the two distributions agree.

    Variants (chapter 8), the reference's choice first:
    rows="holds" supervises the row of the position that holds a finding word; rows="predicts" the
    row before it, the one whose output predicts the word. layers="last" | "all" (the mean of the
    per-layer losses); heads="mean" (the head-averaged map) | "each" (every head on its own).
    """
    if kind not in GROUNDING_LOSSES:
        raise ValueError(f"grounding loss must be one of {GROUNDING_LOSSES}, got {kind!r}")
    for name, value, allowed in (("rows", rows, GROUND_ROWS), ("layers", layers, GROUND_LAYERS),
                                 ("heads", heads, GROUND_HEADS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if rows == "predicts":                              # row t-1 predicts token t
        finding_masks = torch.cat([finding_masks[:, 1:], torch.zeros_like(finding_masks[:, :1])], 1)
    losses = []
    for a in attn_weights[-1:] if layers == "last" else attn_weights:
        a = a.mean(dim=1, keepdim=True) if heads == "mean" else a     # (B, h, T, N)
        m = finding_masks[:, None].expand_as(a)
        mask_exists = m.sum(dim=-1) > 0                 # (B, h, T) tokens that name a finding
        if not mask_exists.any():
            return a.sum() * 0.0
        attn, masks = a[mask_exists], m[mask_exists]    # (M, N)
        if kind == "bce":
            losses.append(F.binary_cross_entropy(attn.clamp(1e-6, 1 - 1e-6),
                                                 masks / (masks.sum(dim=-1, keepdim=True) + 1e-6)))
        else:
            target = masks / masks.sum(dim=-1, keepdim=True)
            losses.append((torch.xlogy(target, target)
                           - target * attn.clamp_min(1e-8).log()).sum(-1).mean())
    return sum(losses) / len(losses)


def outside_attention(attn_weights, finding_masks, token_ids=None, pad_id=0):
    """Attention mass outside every finding, in the spirit of Ross et al. (2017) "right for the
    right reasons": the mean, over layers, heads and (non-pad) rows of the images that have a
    finding, of the attention that falls outside the union of that image's finding masks.

    attn_weights: list of (B, H, T, N); finding_masks: (B, T, N); token_ids (B, T) to skip <pad>.
    """
    union = finding_masks.amax(dim=1)                   # (B, N) every finding of the image
    rows = (union.sum(-1) > 0)[:, None].expand(finding_masks.shape[:2])      # (B, T)
    if token_ids is not None:
        rows = rows & (token_ids != pad_id)
    if not rows.any():
        return attn_weights[-1].sum() * 0.0
    outside = [(a * (1 - union)[:, None, None]).sum(-1).transpose(1, 2)[rows].mean()
               for a in attn_weights]                   # (B, T, H)[rows] -> mean
    return sum(outside) / len(outside)


def attention_entropy(attn_weights):
    """Mean entropy (nats) of the head-averaged last-layer attention rows, over every position."""
    avg_attn = attn_weights[-1].mean(dim=1)             # (B, T, N)
    return -(avg_attn * (avg_attn + 1e-8).log()).sum(dim=-1).mean()


def _check_loss_inputs(logits, token_ids, attn_weights, finding_masks):
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (B, T, vocab_size), got {tuple(logits.shape)}")
    B, T, _ = logits.shape
    if tuple(token_ids.shape) != (B, T):
        raise ValueError(f"token_ids must have shape (B, T)=({B}, {T}), "
                         f"got {tuple(token_ids.shape)}")
    if not isinstance(attn_weights, (list, tuple)) or not attn_weights:
        raise TypeError("attn_weights must be a non-empty list of (B, H, T, N) tensors, one per layer")
    a = attn_weights[-1]
    if a.dim() != 4 or a.shape[0] != B or a.shape[2] != T:
        raise ValueError(f"each attention tensor must have shape (B={B}, H, T={T}, N), "
                         f"got {tuple(a.shape)}")
    if tuple(finding_masks.shape) != (B, T, a.shape[3]):
        raise ValueError(f"finding_masks must have shape (B, T, N)=({B}, {T}, {a.shape[3]}), "
                         f"got {tuple(finding_masks.shape)}")


def compute_loss(logits, token_ids, attn_weights, finding_masks,
                 lambda_ground=0.1, lambda_entropy=0.01, grounding="bce", pad_id=0,
                 ground_rows="holds", ground_layers="last", ground_heads="mean",
                 lambda_outside=0.0):
    """
    Compute combined training loss.

    Args:
        logits: (B, T, vocab_size)
        token_ids: (B, T) ground truth tokens
        attn_weights: list of (B, H, T, N) per layer
        finding_masks: (B, T, N) ground truth grounding
        lambda_ground: weight for grounding loss
        lambda_entropy: weight for entropy regularization
        grounding: "bce" (the reference's term) or "kl" (distribution matching)
        ground_rows, ground_layers, ground_heads: `grounding_loss`'s rows / layers / heads
        lambda_outside: weight of `outside_attention` (0: not computed), added to the total

    Returns:
        total_loss, ce_loss, ground_loss, entropy_loss
    """
    _check_loss_inputs(logits, token_ids, attn_weights, finding_masks)
    ce = shifted_cross_entropy(logits, token_ids, pad_id)
    ground = grounding_loss(attn_weights, finding_masks, grounding, ground_rows, ground_layers,
                            ground_heads)
    entropy = attention_entropy(attn_weights)
    total = ce + lambda_ground * ground + lambda_entropy * entropy
    if lambda_outside:
        total = total + lambda_outside * outside_attention(attn_weights, finding_masks, token_ids,
                                                           pad_id)
    return total, ce, ground, entropy
