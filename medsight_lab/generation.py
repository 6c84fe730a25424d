"""Free-running report generation: batched greedy and beam search with a key/value cache.

Each step feeds one token per sequence; the image's cross-attention keys/values are computed once
and the self-attention keys/values of earlier positions are cached, so a step costs O(t) rather than
re-running the whole prefix.

Cross-attention rows follow the model's convention: row t is the attention of the query that
*reads* token t (and predicts token t+1). Positions that are never read — the final token (<eos>,
or the last position when max_len is reached) and the <pad> after it — have an all-zero row.

This module uses only the model's `config`, `encode_image` and `decode`, so it does not import
`model.py` (which imports it to provide `GroundedReportVLM.generate`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GenerationOutput:
    token_ids: torch.Tensor              # (B, T): <bos> ... <eos> then <pad>
    cross_attention: list                # per layer (B, H, T, N); unread positions are zero
    scores: torch.Tensor                 # (B,) sum of token log-probabilities (length-normalised for beams)


def generate(model, image_patches, max_len=None, num_beams=1, length_penalty=1.0):
    """Write one report per image.

    image_patches: (B, N, d_vision). max_len: total length including <bos> (default: the model's).
    num_beams=1 is greedy decoding; more beams keep the `num_beams` best partial reports, and the
    finished ones are ranked by log-probability / length ** length_penalty.
    """
    cfg = model.config
    max_len = cfg.max_len if max_len is None else max_len
    if not isinstance(max_len, int) or not 2 <= max_len <= cfg.max_len:
        raise ValueError(f"max_len must be an integer between 2 and the model's "
                         f"max_len={cfg.max_len}, got {max_len!r}")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    with torch.no_grad():
        image_kv = model.encode_image(image_patches)
        if num_beams == 1:
            return _greedy(model, image_kv, max_len)
        return beam_search(model, image_kv, max_len, num_beams, length_penalty)


def _start(model, image_kv, rows, max_len):
    """Token buffer starting with <bos>, and empty per-layer attention maps and caches.

    The maps are kept position-first, (T, rows, H, N), so that each step writes one contiguous
    block; `_per_row` turns them into the public (rows, H, T, N) layout at the end."""
    cfg, device = model.config, image_kv[0][0].device
    N = image_kv[0][0].shape[1]                 # keys are (rows, N, D)
    tokens = torch.full((rows, max_len), cfg.pad_id, dtype=torch.long, device=device)
    tokens[:, 0] = cfg.bos_id
    attn = [torch.zeros(max_len, rows, cfg.num_heads, N, device=device)
            for _ in range(cfg.num_layers)]
    caches = [[] for _ in range(cfg.num_layers)]
    return tokens, attn, caches


def _greedy(model, image_kv, max_len):
    cfg = model.config
    B = image_kv[0][0].shape[0]
    tokens, attn, caches = _start(model, image_kv, B, max_len)
    finished = torch.zeros(B, dtype=torch.bool, device=tokens.device)
    scores = torch.zeros(B, device=tokens.device)
    for t in range(max_len - 1):
        logits, step_attn = model.decode(tokens[:, t:t + 1], image_kv, start=t, caches=caches)
        logp = logits[:, 0].log_softmax(dim=-1)                      # (B, V)
        live = ~finished
        for layer, a in zip(attn, step_attn):
            layer[t] = a[:, :, 0] * live[:, None, None]              # zero rows of <pad> reads
        next_token = torch.where(live, logp.argmax(dim=-1), cfg.pad_id)
        scores += torch.where(live, logp.gather(1, next_token[:, None])[:, 0], 0.0)
        tokens[:, t + 1] = next_token
        finished |= next_token == cfg.eos_id
        if finished.all():
            break
    return GenerationOutput(tokens, _per_row(attn), scores)


def beam_search(model, image_kv, max_len, num_beams, length_penalty=1.0):
    """Beam search over a batch; `image_kv` is `model.encode_image(patches)`.

    A finished beam stays in the beam, extended with <pad> at no cost, so beams of different
    lengths compete on their summed log-probability; the length penalty ranks the final beams.
    """
    cfg = model.config
    B, K = image_kv[0][0].shape[0], num_beams
    # Every image is repeated K times: row b * K + k is beam k of image b.
    image_kv = [(k.repeat_interleave(K, 0), v.repeat_interleave(K, 0)) for k, v in image_kv]
    tokens, attn, caches = _start(model, image_kv, B * K, max_len)
    device = tokens.device
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    # Only beam 0 is live at the start, so the K beams don't all pick the same first token.
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    base = (torch.arange(B, device=device) * K)[:, None]             # (B, 1) first row of each image
    for t in range(max_len - 1):
        logits, step_attn = model.decode(tokens[:, t:t + 1], image_kv, start=t, caches=caches)
        logp = logits[:, 0].log_softmax(dim=-1)                      # (B*K, V)
        # A finished beam can only be extended with <pad>, at log-probability 0.
        done_row = torch.full_like(logp[0], float("-inf"))
        done_row[cfg.pad_id] = 0.0
        logp = torch.where(finished[:, None], done_row, logp)
        V = logp.shape[-1]
        candidates = (scores[:, :, None] + logp.view(B, K, V)).view(B, K * V)
        scores, flat = candidates.topk(K, dim=-1)                    # (B, K)
        rows = (base + flat // V).view(-1)                           # (B*K,) the beam each extends
        next_token = (flat % V).view(-1)
        tokens = tokens[rows]
        for layer, a in zip(attn, step_attn):
            layer[t] = a[:, :, 0] * (~finished)[:, None, None]
        attn = [layer[:, rows] for layer in attn]
        finished = finished[rows]
        for cache in caches:
            cache[:] = [c[rows] for c in cache]
        tokens[:, t + 1] = next_token
        finished |= next_token == cfg.eos_id
        if finished.all():
            break
    # Rank the beams of each image by length-normalised log-probability.
    lengths = (tokens[:, 1:] != cfg.pad_id).sum(dim=1).clamp(min=1).view(B, K).float()
    ranked = scores / lengths ** length_penalty
    best = (base[:, 0] + ranked.argmax(dim=-1))                      # (B,)
    return GenerationOutput(tokens[best], _per_row([layer[:, best] for layer in attn]),
                            ranked.max(dim=-1).values)


def _per_row(attn):
    """(T, B, H, N) per layer -> (B, H, T, N), contiguous."""
    return [layer.permute(1, 2, 0, 3).contiguous() for layer in attn]

