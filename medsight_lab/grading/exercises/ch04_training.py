"""Chapter 4 (04_training): the exercise `cached_attention_step`, as one record (see
ch01_dataset.py for what a record holds).
"""

from __future__ import annotations

import math

import torch

from ... import model as _model
from .record import Case, Exercise


def _cache_inputs(seed, B=2, H=2, S=4, T=1, d_k=8):
    """(q_new, k_cache, v_cache, k_new, v_new): T new positions on a cache of S."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, d_k, generator=g) for _ in range(3))
    k_cache, v_cache = (torch.randn(B, H, S, d_k, generator=g) for _ in range(2))
    return q, k_cache, v_cache, k, v


def _cases_cached_attention_step():
    return [Case("one new position on a cache of 4", _cache_inputs(0)),
            Case("the first step (an empty cache, S=0)", _cache_inputs(1, S=0)),
            Case("three new positions at once on a cache of 5", _cache_inputs(2, S=5, T=3))]


def _cached(q, kc, vc, k, v, append=True, attend="all", scale="d_k", offset=True,
            order="cache first", softmax_dim=-1, returned="extended"):
    """cached_attention_step with one deliberate mistake switched on."""
    ks, vs = ((torch.cat([kc, k], 2), torch.cat([vc, v], 2)) if order == "cache first"
              else (torch.cat([k, kc], 2), torch.cat([v, vc], 2)))
    keys, values = {"all": (ks, vs), "new": (k, v), "cache": (kc, vc)}[attend]
    S, T = keys.shape[2] - q.shape[2], q.shape[2]
    d = {"d_k": q.shape[-1], "none": 1, "d_model": q.shape[1] * q.shape[-1]}[scale]
    scores = q @ keys.transpose(-2, -1) / math.sqrt(d)
    if offset is not None and attend != "cache":
        allowed = torch.ones(T, S + T, dtype=torch.bool).tril(diagonal=S if offset else 0)
        scores = scores.masked_fill(~allowed, float("-inf"))
    context = scores.softmax(softmax_dim) @ values
    if not append:
        return context, kc, vc
    return (context, vs, ks) if returned == "swapped" else (context, ks, vs)


_CACHED_ATTENTION_MISTAKES = [
    ("you attend over the cache without this step's key and value, and return the cache "
     "unchanged: append k_new, v_new to the cache (dim 2), then attend",
     lambda *a: _cached(*a, append=False, attend="cache")),
    ("you attend only to the new key(s): the new query attends over every cached position too "
     "(concatenate the cache and the new keys first)", lambda *a: _cached(*a, attend="new")),
    ("the new keys and values come before the cache: append them after it, "
     "torch.cat([k_cache, k_new], dim=2), so that position s stays at index s",
     lambda *a: _cached(*a, order="new first")),
    ("your scores are not scaled: divide q @ k^T by sqrt(d_k), d_k = the last dimension",
     lambda *a: _cached(*a, scale="none")),
    ("you scale by sqrt(H * d_k): the scale is sqrt(d_k), the size of one head",
     lambda *a: _cached(*a, scale="d_model")),
    ("the new positions see each other's future: new position i may attend to the cache and to "
     "new positions up to i (a causal mask shifted by S)", lambda *a: _cached(*a, offset=None)),
    ("your causal mask starts at the cache's first position: new position i sits at S + i, so "
     "it sees every cached position (tril with diagonal=S)", lambda *a: _cached(*a, offset=False)),
    ("your softmax runs over the queries (dim=-2): each query's weights sum to 1 over the keys "
     "(dim=-1)", lambda *a: _cached(*a, softmax_dim=-2)),
    ("you return (context, v_cache, k_cache): return (context, k_cache, v_cache)",
     lambda *a: _cached(*a, returned="swapped")),
    # Last: with the right context, any caches of another shape match this one.
    ("the caches you return are not the extended ones: return the cache with this step's key "
     "and value appended, torch.cat([k_cache, k_new], dim=2), shape (B, H, S + T, d_k)",
     lambda *a: _cached(*a, append=False)),
]


CACHED_ATTENTION_STEP = Exercise(
    id="cached_attention_step", chapter="04_training",
    title="One attention step with a key/value cache", points=2,
    cases=_cases_cached_attention_step, hidden="_hidden_cached_attention_step",
    reference=lambda q, kc, vc, k, v: _model.cached_attention_step(q, kc, vc, k, v),
    guarded=((_model, "cached_attention_step"),),
    outputs=("context", "k_cache", "v_cache"),
    shapes=("(B, H, T, d_k)", "(B, H, S + T, d_k)", "(B, H, S + T, d_k)"),
    inputs=("q_new", "k_cache", "v_cache", "k_new", "v_new"), grad_args=(0, 1, 2, 3, 4),
    mistakes=_CACHED_ATTENTION_MISTAKES)
