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


def grounding_loss(attn_weights, finding_masks, kind="bce"):
    """How far the head-averaged last-layer attention is from the grounding mask, on the tokens
    that have one.

    attn_weights: list of (B, H, T, N) per layer; finding_masks: (B, T, N) with 0/1 entries.
    kind="bce" (the reference): BCE between the weights and the mask normalised to sum to 1.
    kind="kl": KL(normalised mask || attention), zero exactly when the two distributions agree.
    """
    if kind not in GROUNDING_LOSSES:
        raise ValueError(f"grounding loss must be one of {GROUNDING_LOSSES}, got {kind!r}")
    avg_attn = attn_weights[-1].mean(dim=1)             # (B, T, N) last layer, mean over heads
    mask_exists = finding_masks.sum(dim=-1) > 0         # (B, T) tokens that name a finding
    if not mask_exists.any():
        return avg_attn.sum() * 0.0
    attn = avg_attn[mask_exists]                        # (M, N)
    masks = finding_masks[mask_exists]
    if kind == "bce":
        return F.binary_cross_entropy(attn.clamp(1e-6, 1 - 1e-6),
                                      masks / (masks.sum(dim=-1, keepdim=True) + 1e-6))
    target = masks / masks.sum(dim=-1, keepdim=True)
    return (torch.xlogy(target, target) - target * attn.clamp_min(1e-8).log()).sum(-1).mean()


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
                 lambda_ground=0.1, lambda_entropy=0.01, grounding="bce", pad_id=0):
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

    Returns:
        total_loss, ce_loss, ground_loss, entropy_loss
    """
    _check_loss_inputs(logits, token_ids, attn_weights, finding_masks)
    ce = shifted_cross_entropy(logits, token_ids, pad_id)
    ground = grounding_loss(attn_weights, finding_masks, grounding)
    entropy = attention_entropy(attn_weights)
    total = ce + lambda_ground * ground + lambda_entropy * entropy
    return total, ce, ground, entropy
