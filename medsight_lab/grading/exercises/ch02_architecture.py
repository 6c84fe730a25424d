"""Chapter 2 (02_architecture): the exercises `cross_attention` and `causal_attention_weights`,
one record each (see ch01_dataset.py for what a record holds).
"""

from __future__ import annotations

import math

import torch

from ... import model as _model
from .record import Case, Exercise


# -- cross_attention ---------------------------------------------------------------------------

def _attention_inputs(seed, B=2, T=5, N=6, D=8):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, L, D, generator=g) for L in (T, N, N))


def _cases_cross_attention():
    return [Case("a batch of 2 with 2 heads", (*_attention_inputs(0), 2)),
            Case("a batch of 2 with 4 heads", (*_attention_inputs(1, D=16), 4)),
            Case("a single image (B=1)", (*_attention_inputs(2, B=1), 2))]


def _mha(query, key, value, num_heads, scale="d_k", dim=-1, split="right", merge="right",
         raw=False):
    """Multi-head attention with one deliberate mistake switched on by the keyword arguments."""
    B, T, D = query.shape
    N, d_k = key.shape[1], D // num_heads

    def heads(x, L):
        if split == "wrong":
            return x.reshape(B, num_heads, L, d_k)
        return x.view(B, L, num_heads, d_k).transpose(1, 2)

    q, k, v = heads(query, T), heads(key, N), heads(value, N)
    scores = q @ k.transpose(-2, -1) / {"d_k": math.sqrt(d_k), "d_model": math.sqrt(D),
                                        "heads": math.sqrt(num_heads), "none": 1.0}[scale]
    weights = scores.softmax(dim)
    out = weights @ v                                            # (B, H, T, d_k)
    context = out.reshape(B, T, D) if merge == "wrong" else out.transpose(1, 2).reshape(B, T, D)
    return context, scores if raw else weights


_CROSS_ATTENTION_MISTAKES = [
    ("the softmax runs over the wrong axis: each token's weights must sum to 1 over the patches "
     "(the last axis)", lambda q, k, v, h: _mha(q, k, v, h, dim=-2)),
    ("the softmax runs over the wrong axis: each token's weights must sum to 1 over the patches "
     "(the last axis)", lambda q, k, v, h: _mha(q, k, v, h, dim=1)),
    ("the scores are not scaled: divide them by sqrt(d_k), d_k = D / num_heads",
     lambda q, k, v, h: _mha(q, k, v, h, scale="none")),
    ("you scale by sqrt(D), the model width: scale by sqrt(d_k), the width of one head "
     "(D / num_heads)", lambda q, k, v, h: _mha(q, k, v, h, scale="d_model")),
    ("you scale by sqrt(num_heads): scale by sqrt(d_k), the width of one head (D / num_heads)",
     lambda q, k, v, h: _mha(q, k, v, h, scale="heads")),
    ("you compute a single head: split D into num_heads heads of width D / num_heads and "
     "return weights of shape (B, H, T, N)", lambda q, k, v, h: _mha(q, k, v, 1)),
    ("the heads are merged in the wrong order: transpose (B, H, T, d_k) back to (B, T, H, d_k) "
     "before reshaping to (B, T, D)", lambda q, k, v, h: _mha(q, k, v, h, merge="wrong")),
    ("the heads are split the wrong way: view (B, T, D) as (B, T, H, d_k), then transpose to "
     "(B, H, T, d_k)", lambda q, k, v, h: _mha(q, k, v, h, split="wrong")),
    ("the weights you return are the raw scores: return them after the softmax",
     lambda q, k, v, h: _mha(q, k, v, h, raw=True)),
]


CROSS_ATTENTION = Exercise(
    id="cross_attention", chapter="02_architecture", title="Cross-attention", points=2,
    cases=_cases_cross_attention, hidden="_hidden_cross_attention",
    reference=lambda q, k, v, h: _model.multi_head_attention(q, k, v, h),
    guarded=((_model, "multi_head_attention"),),
    outputs=("context", "weights"), shapes=("(B, T, D)", "(B, H, T, N)"),
    inputs=("query", "key", "value", "num_heads"), grad_args=(0, 1, 2),
    mistakes=_CROSS_ATTENTION_MISTAKES)


# -- causal_attention_weights ------------------------------------------------------------------

def _scores(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def _cases_causal_attention_weights():
    return [Case("a 4 x 4 score matrix", (_scores(0, 4, 4),)),
            Case("a batch of scores (B, H, T, T)", (_scores(1, 2, 3, 5, 5),)),
            Case("a batch of scores (B, H, T, T)", (_scores(2, 1, 2, 6, 6),))]


def _reference_causal(scores):
    return scores.masked_fill(~_model.causal_mask(scores.shape[-1], scores.device),
                              float("-inf")).softmax(-1)


def _masked(scores, allowed, fill=float("-inf"), dim=-1):
    return scores.masked_fill(~allowed, fill).softmax(dim)


def _tril(scores, diagonal=0):
    T = scores.shape[-1]
    return torch.ones(T, T, dtype=torch.bool).tril(diagonal)


# A large negative fill (-1e9) is as right as -inf, but where a mistake masks a whole row it gives
# that row uniform weights instead of NaN: each such mistake is recognised with either fill.
_FILLS = (float("-inf"), -1e9)
_CAUSAL_MISTAKES = [
    ("no mask is applied: row t also attends to the keys after t",
     lambda s: s.softmax(-1)),
    ("your mask is inverted, so row t attends to the future: it may only see keys 0..t",
     lambda s: _masked(s, _tril(s).T)),
    *[("your mask is inverted, so row t attends to the future: it may only see keys 0..t",
       lambda s, fill=fill: _masked(s, ~_tril(s), fill)) for fill in _FILLS],
    *[("the diagonal is masked: position t may attend to itself (keys j <= t)",
       lambda s, fill=fill: _masked(s, _tril(s, -1), fill)) for fill in _FILLS],
    ("you mask after the softmax, so rows no longer sum to 1: fill the forbidden scores with "
     "-inf before the softmax", lambda s: s.softmax(-1) * _tril(s)),
    ("the forbidden scores are set to 0, which still gets weight: set them to -inf "
     "(or a very large negative number)", lambda s: _masked(s, _tril(s), 0.0)),
    ("the softmax runs over the wrong axis: each row (one query) must sum to 1 over the keys, "
     "the last axis", lambda s: _masked(s, _tril(s), dim=-2)),
]


CAUSAL_ATTENTION_WEIGHTS = Exercise(
    id="causal_attention_weights", chapter="02_architecture", title="Causal attention weights",
    points=1, cases=_cases_causal_attention_weights, hidden="_hidden_causal_attention_weights",
    reference=_reference_causal, guarded=((_model, "causal_mask"),),
    outputs=("weights",), shapes=("the shape of scores",), inputs=("scores",), grad_args=(0,),
    mistakes=_CAUSAL_MISTAKES)
