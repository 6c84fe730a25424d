"""Exercise checks: `check(exercise_id, fn)` prints one verdict line a student can act on.

A check runs the student's function on a few cases and compares it with the package's reference
implementation inside this module, with a tolerance, so the printed line is the same on CPU and
GPU and never shows a number. When the answer is wrong it recomputes known mistakes on the same
inputs (unshifted cross-entropy, unnormalised target, missing scale, ...) and names the one the
student's output matches. `suite="hidden"` (the grader's extra tests) adds fresh random inputs,
edge cases and properties: gradients equal the reference's, inputs are not modified in place.

While the student's function runs, the package's own implementations of the exercises are switched
off (their code swapped for a stub that records the call), so `compute_loss = ml.compute_loss`
or any alias of it cannot pass.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import math
import os
import re
import signal
import textwrap
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .. import loss as _loss
from .. import metrics as _metrics
from .. import model as _model
from .. import rendered_metrics as _rendered_metrics
from .. import shortcuts as _shortcuts
from .policy import answer_problem

TIME_LIMIT_S = 10          # per call of the student's function
ATOL, RTOL = 1e-5, 1e-4


@dataclass(frozen=True)
class Exercise:
    function: str          # the function the chapter asks the student to write
    points: int
    chapter: str           # the chapter notebook's stem, e.g. "03_loss"


EXERCISES = {
    "cross_attention": Exercise("cross_attention", 2, "02_architecture"),
    "causal_mask": Exercise("causal_attention_weights", 1, "02_architecture"),
    "shifted_cross_entropy": Exercise("shifted_cross_entropy", 2, "03_loss"),
    "grounding_loss": Exercise("grounding_loss", 2, "03_loss"),
    "attention_entropy": Exercise("attention_entropy", 1, "03_loss"),
    "compute_loss": Exercise("compute_loss", 3, "03_loss"),
    "pointing_game_and_mass": Exercise("pointing_game_and_mass", 2, "05_evaluation"),
    "spatial_precision": Exercise("spatial_precision", 2, "07_harder_world"),
    "attention_on_mark": Exercise("attention_on_mark", 2, "08_shortcuts"),
}


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    message: str           # the verdict line, as printed


@dataclass
class Case:
    label: str             # completes "wrong value on ...": says which situation failed
    args: tuple
    kwargs: dict = field(default_factory=dict)
    grad: bool = False     # also compare gradients with the reference's (hidden suite)


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def _loss_inputs(seed, B=3, T=7, V=11, H=2, N=6, layers=2, padding=True, findings=True,
                 pad_id=0, all_pad_row=False, one_hot_row=False, saturated_finding_row=False):
    """logits, token_ids, attn_weights, finding_masks as the loss sees them. The last image has
    no finding, and only some tokens of the others have a mask."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2
    logits[..., pad_id] -= 3      # <pad> targets cost more, so counting them shows in the mean
    token_ids = torch.randint(0 if pad_id else 3, V, (B, T), generator=g)
    token_ids[token_ids == pad_id] = (pad_id + 1) % V
    token_ids[:, 0] = 1                                           # <bos>
    if padding and T > 2:                     # row 0 stays full length, unless it is alone
        for b in range(1, B) if B > 1 else [0]:
            token_ids[b, int(torch.randint(2, T, (1,), generator=g)):] = pad_id
    if all_pad_row:
        token_ids[-1, 1:] = pad_id
    attn = [(torch.randn(B, H, T, N, generator=g) * 1.5).softmax(-1) for _ in range(layers)]
    if one_hot_row:                                               # weights exactly 0 and 1
        attn[-1][0, :, 0] = F.one_hot(torch.tensor(N - 1), N).float()
    masks = torch.zeros(B, T, N)
    if findings:
        for b in range(max(B - 1, 1)):
            rows = torch.randperm(T, generator=g)[:max(1, T // 3)]
            for t in rows.tolist():
                masks[b, t, torch.randperm(N, generator=g)[:1 + t % 3]] = 1.0
    if saturated_finding_row:       # every head puts all its weight on a patch outside the lesion
        t = int(masks[0].sum(-1).nonzero()[0])
        attn[-1][0, :, t] = F.one_hot((masks[0, t] == 0).nonzero()[0], N).float()
    return logits, token_ids, attn, masks


def _attention_inputs(seed, B=2, T=5, N=6, D=8):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, L, D, generator=g) for L in (T, N, N))


def _scores(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


# ---------------------------------------------------------------------------------------------
# Cases per exercise: a few visible ones, then the hidden suite
# ---------------------------------------------------------------------------------------------

def _cases_cross_attention(suite):
    if suite == "visible":
        return [Case("a batch of 2 with 2 heads", (*_attention_inputs(0), 2)),
                Case("a batch of 2 with 4 heads", (*_attention_inputs(1, D=16), 4)),
                Case("a single image (B=1)", (*_attention_inputs(2, B=1), 2))]
    return [Case("fresh random inputs", (*_attention_inputs(10, B=3, T=7, N=16, D=12), 3),
                 grad=True),
            Case("fresh random inputs", (*_attention_inputs(11, D=16), 4), grad=True),
            Case("a single head (H=1)", (*_attention_inputs(12), 1)),
            Case("a single image (B=1) and two tokens (T=2)",
                 (*_attention_inputs(13, B=1, T=2), 2)),
            Case("a different number of patches (N=9)", (*_attention_inputs(14, N=9), 2))]


def _cases_causal_mask(suite):
    if suite == "visible":
        return [Case("a 4 x 4 score matrix", (_scores(0, 4, 4),)),
                Case("a batch of scores (B, H, T, T)", (_scores(1, 2, 3, 5, 5),)),
                Case("a batch of scores (B, H, T, T)", (_scores(2, 1, 2, 6, 6),))]
    return [Case("fresh random scores", (_scores(10, 3, 2, 7, 7),), grad=True),
            Case("fresh random scores", (_scores(11, 2, 9, 9),), grad=True),
            Case("two positions (T=2)", (_scores(12, 2, 2, 2),)),
            Case("a single position (T=1)", (_scores(13, 2, 1, 1),)),
            Case("scores with large values", (_scores(14, 4, 6, 6) * 20,))]


def _cases_shifted_cross_entropy(suite):
    ce = lambda seed, **kw: _loss_inputs(seed, **kw)[:2]  # noqa: E731 (logits, token_ids)
    if suite == "visible":
        return [Case("a batch without padding", ce(0, padding=False)),
                Case("a batch with padding", ce(1)),
                Case("a single report (B=1)", ce(2, B=1)),
                Case("a batch with padding", ce(3, B=4, T=9, V=13)),
                Case("a batch padded with pad_id=4", ce(4, pad_id=4), {"pad_id": 4})]
    return [Case("fresh random inputs", ce(10, B=4, T=12, V=36), grad=True),
            Case("fresh random inputs", ce(11), grad=True),
            Case("a batch with a report that is all <pad>", ce(12, all_pad_row=True)),
            Case("reports of two tokens (T=2)", ce(13, T=2, padding=False)),
            Case("a batch padded with pad_id=4", ce(14, pad_id=4), {"pad_id": 4}),
            Case("a single report with padding (B=1)", ce(15, B=1, T=6)),
            Case("a long batch with padding", ce(16, B=2, T=20, V=36))]


def _cases_grounding_loss(suite):
    g = lambda seed, **kw: _loss_inputs(seed, **kw)[2:]  # noqa: E731 (attn_weights, finding_masks)
    if suite == "visible":
        return [Case("a batch with findings", g(0)),
                Case("a batch with findings", g(1, B=4, N=9)),
                Case("a single image with a finding (B=1)", g(2, B=1)),
                Case("a batch in which no image has a finding", g(3, findings=False))]
    return [Case("fresh random inputs", g(10, B=4, T=12, H=4, N=16), grad=True),
            Case("fresh random inputs", g(11), grad=True),
            Case("a batch in which no image has a finding", g(12, findings=False)),
            Case("a single head (H=1)", g(13, H=1)),
            Case("a single layer", g(14, layers=1)),
            Case("a different number of patches (N=9)", g(15, N=9)),
            Case("a single image with a finding (B=1)", g(16, B=1, T=4)),
            Case("attention weights of exactly 0 and 1 on a finding row",
                 g(17, saturated_finding_row=True))]


def _cases_attention_entropy(suite):
    a = lambda seed, **kw: _loss_inputs(seed, **kw)[2:3]  # noqa: E731 (attn_weights,)
    if suite == "visible":
        return [Case("a batch of attention maps", a(0)),
                Case("a batch of attention maps", a(1, B=4, H=4, N=9)),
                Case("a single image (B=1)", a(2, B=1))]
    return [Case("fresh random inputs", a(10, B=4, T=12, H=4, N=16), grad=True),
            Case("fresh random inputs", a(11), grad=True),
            Case("attention rows with weights exactly 0", a(12, one_hot_row=True)),
            Case("a single head (H=1)", a(13, H=1)),
            Case("a single layer", a(14, layers=1)),
            Case("two positions (T=2)", a(15, T=2))]


def _grounding_rows(seed, M=6, N=16, sharp=3.0, sizes=(2, 3, 4), one_hot=False):
    """(rows, lesions): M attention rows over N patches and a lesion of 2-4 patches per row.
    Sharp random rows have no ties, so every correct argmax agrees; `one_hot` makes row 0 all on
    a lesion patch and row 1 all on a patch outside the lesion."""
    g = torch.Generator().manual_seed(seed)
    rows = (torch.randn(M, N, generator=g) * sharp).softmax(-1)
    lesions = torch.zeros(M, N)
    for m in range(M):
        size = sizes[int(torch.randint(len(sizes), (1,), generator=g))]
        lesions[m, torch.randperm(N, generator=g)[:size]] = 1.0
    if one_hot:
        inside, outside = lesions[0].argmax(), (1 - lesions[1]).argmax()
        rows[0], rows[1] = F.one_hot(inside, N).float(), F.one_hot(outside, N).float()
    return rows, lesions


def _cases_pointing_game_and_mass(suite):
    if suite == "visible":
        return [Case("6 attention rows over 16 patches", _grounding_rows(0)),
                Case("10 attention rows over 16 patches", _grounding_rows(1, M=10)),
                Case("attention rows over 9 patches", _grounding_rows(2, N=9, sizes=(2, 3)))]
    return [Case("fresh random rows", _grounding_rows(10, M=40)),
            Case("a single row (M=1)", _grounding_rows(11, M=1)),
            Case("rows with all weight on one patch", _grounding_rows(12, one_hot=True)),
            Case("nearly uniform rows", _grounding_rows(13, sharp=0.05)),
            Case("lesions of one patch", _grounding_rows(14, sizes=(1,)))]


def _sentence_rows(seed, S=4, N=16, words=(1, 2, 3), hallucinated=0, shuffle=False):
    """(rows, masks, sentence): S sentences of 1-3 finding words each; each sentence's attention is
    drawn towards its mask by its own amount, so that some sentences are precise and some not, and
    none lies within 0.05 of the 0.5 threshold; the first `hallucinated` sentences have no mask."""
    for attempt in range(100):
        g = torch.Generator().manual_seed(seed * 100 + attempt)
        rows, masks, sentence = [], [], []
        for s in range(S):
            k = words[int(torch.randint(len(words), (1,), generator=g))]
            mask = torch.zeros(N)
            mask[torch.randperm(N, generator=g)[:int(torch.randint(2, 5, (1,), generator=g))]] = 1
            pull = float(torch.rand(1, generator=g)) * 8
            rows.append((torch.randn(k, N, generator=g) + pull * mask).softmax(-1))
            masks.append((mask * float(s >= hallucinated)).expand(k, N))
            sentence += [s] * k
        rows, masks, sentence = torch.cat(rows), torch.cat(masks), torch.tensor(sentence)
        if shuffle:
            order = torch.randperm(len(sentence), generator=g)
            rows, masks, sentence = rows[order], masks[order], sentence[order]
        mean = torch.zeros(S).index_add(0, sentence, (rows * masks).sum(-1)) / torch.bincount(
            sentence, minlength=S)
        words_mass = (rows * masks).sum(-1)
        # clear of the threshold, per sentence and per word, and not all on one side
        if ((mean - 0.5).abs().min() > 0.05 and (words_mass - 0.5).abs().min() > 0.02
                and (S == 1 or 0 < (mean > 0.5).sum() < S)):
            return rows, masks, sentence
    raise RuntimeError("no clear case drawn")  # pragma: no cover


def _threshold_case():
    """Three sentences: mean mass exactly 0.5 (not precise), one above it, one outside."""
    rows = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 0.0]])
    masks = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                          [1.0, 0.0, 0.0, 0.0]])
    return rows, masks, torch.tensor([0, 0, 1, 2])


def _cases_spatial_precision(suite):
    if suite == "visible":
        return [Case("4 sentences of 1-3 words over 16 patches", _sentence_rows(0)),
                Case("6 sentences over 16 patches", _sentence_rows(1, S=6)),
                Case("a sentence about a finding the image does not have",
                     _sentence_rows(2, hallucinated=1))]
    return _hidden_cases_spatial_precision()


def _hidden_cases_spatial_precision():
    # The grader's extra cases for chapter 7's exercise (kept apart so that they can be moved).
    return [Case("fresh random sentences", _sentence_rows(10, S=12)),
            Case("words of the sentences in mixed order", _sentence_rows(11, S=5, shuffle=True)),
            Case("a sentence whose mean mass is exactly the threshold", _threshold_case()),
            Case("threshold=0.8", _sentence_rows(12, S=6), {"threshold": 0.8}),
            Case("one sentence of one word", _sentence_rows(13, S=1, words=(1,))),
            Case("an 8 x 8 patch grid", _sentence_rows(14, S=5, N=64)),
            Case("several hallucinated sentences", _sentence_rows(15, S=6, hallucinated=3))]


def _mark_inputs(seed, B=3, T=8, N=9, mark_size=(2, 3), unmarked=0, consecutive=False,
                 last_row=False):
    """(attn, mark, words) of chapter 8's exercise: B maps (T, N) drawn towards each image's mark
    by their own amount, a mark of 2-3 patches (none on the last `unmarked` images), and 1-3
    finding words per image in rows 1..T-1 (a run of consecutive rows with `consecutive`, the last
    row among them with `last_row`); images get different numbers of words."""
    g = torch.Generator().manual_seed(seed)
    mark = torch.zeros(B, N)
    for b in range(B - unmarked):
        size = mark_size[int(torch.randint(len(mark_size), (1,), generator=g))]
        mark[b, torch.randperm(N, generator=g)[:size]] = 1.0
    pull = torch.rand(B, T, 1, generator=g) * 4
    attn = (torch.randn(B, T, N, generator=g) + pull * mark[:, None]).softmax(-1)
    words = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        k = 1 + b % 3
        if consecutive or last_row:
            start = T - k if last_row else int(torch.randint(1, T - k + 1, (1,), generator=g))
            words[b, start:start + k] = True
        else:
            words[b, 1 + torch.randperm(T - 1, generator=g)[:k]] = True
    return attn, mark, words


def _cases_attention_on_mark(suite):
    if suite == "visible":
        return [Case("3 reports of 8 rows over 9 patches", _mark_inputs(0)),
                Case("5 reports whose finding words are consecutive",
                     _mark_inputs(1, B=5, consecutive=True)),
                Case("4 reports over 16 patches", _mark_inputs(2, B=4, N=16))]
    return _hidden_attention_on_mark()


def _hidden_attention_on_mark():
    # The grader's extra cases for chapter 8's exercise (kept apart so that they can be moved).
    return [Case("fresh random reports", _mark_inputs(10, B=8, T=12, N=16), grad=True),
            Case("a single report (B=1)", _mark_inputs(11, B=1)),
            Case("a finding word in the last row", _mark_inputs(12, B=4, last_row=True)),
            Case("images without a mark", _mark_inputs(13, B=5, unmarked=2)),
            Case("an 8 x 8 patch grid and a mark of one patch",
                 _mark_inputs(14, B=4, T=10, N=64, mark_size=(1,))),
            Case("marks of four patches", _mark_inputs(15, B=4, mark_size=(4,)))]


def _cases_compute_loss(suite):
    if suite == "visible":
        return [Case("a batch with padding and findings", _loss_inputs(0)),
                Case("a batch with padding and findings", _loss_inputs(1, B=4, T=9, N=9)),
                Case("a call with lambda_ground=0.5, lambda_entropy=0.2", _loss_inputs(2),
                     {"lambda_ground": 0.5, "lambda_entropy": 0.2}),
                Case("a batch in which no image has a finding", _loss_inputs(3, findings=False))]
    return [Case("fresh random inputs", _loss_inputs(10, B=4, T=12, V=36, H=4, N=16), grad=True),
            Case("fresh random inputs with lambda_ground=1, lambda_entropy=0.5",
                 _loss_inputs(11), {"lambda_ground": 1.0, "lambda_entropy": 0.5}, grad=True),
            Case("a batch in which no image has a finding", _loss_inputs(12, findings=False)),
            Case("a batch with a report that is all <pad>", _loss_inputs(13, all_pad_row=True)),
            Case("a single report (B=1)", _loss_inputs(14, B=1)),
            Case("a single head and a single layer", _loss_inputs(15, H=1, layers=1)),
            Case("reports of two tokens (T=2)", _loss_inputs(16, T=2)),
            Case("lambdas of zero", _loss_inputs(17), {"lambda_ground": 0.0,
                                                       "lambda_entropy": 0.0})]


# ---------------------------------------------------------------------------------------------
# References (the package's implementations) and known mistakes, as functions of the same inputs
# ---------------------------------------------------------------------------------------------

def _reference_causal(scores):
    return scores.masked_fill(~_model.causal_mask(scores.shape[-1], scores.device),
                              float("-inf")).softmax(-1)


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


def _masked(scores, allowed, fill=float("-inf"), dim=-1):
    return scores.masked_fill(~allowed, fill).softmax(dim)


def _tril(scores, diagonal=0):
    T = scores.shape[-1]
    return torch.ones(T, T, dtype=torch.bool).tril(diagonal)


_CAUSAL_MISTAKES = [
    ("no mask is applied: row t also attends to the keys after t",
     lambda s: s.softmax(-1)),
    ("your mask is inverted, so row t attends to the future: it may only see keys 0..t",
     lambda s: _masked(s, _tril(s).T)),
    ("your mask is inverted, so row t attends to the future: it may only see keys 0..t",
     lambda s: _masked(s, ~_tril(s))),
    ("the diagonal is masked: position t may attend to itself (keys j <= t)",
     lambda s: _masked(s, _tril(s, -1))),
    ("you mask after the softmax, so rows no longer sum to 1: fill the forbidden scores with "
     "-inf before the softmax", lambda s: s.softmax(-1) * _tril(s)),
    ("the forbidden scores are set to 0, which still gets weight: set them to -inf "
     "(or a very large negative number)", lambda s: _masked(s, _tril(s), 0.0)),
    ("the softmax runs over the wrong axis: each row (one query) must sum to 1 over the keys, "
     "the last axis", lambda s: _masked(s, _tril(s), dim=-2)),
]


def _ce(logits, targets, ignore_index, reduction="mean"):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)


def _ce_mean_over_all(lo, t, pad_id=0):
    return _ce(lo[:, :-1], t[:, 1:], pad_id, "sum") / t[:, 1:].numel()


def _ce_mean_per_report(lo, t, pad_id=0):
    losses = F.cross_entropy(lo[:, :-1].transpose(1, 2), t[:, 1:], ignore_index=pad_id,
                             reduction="none")                                     # (B, T-1)
    counted = (t[:, 1:] != pad_id).sum(1)
    return (losses.sum(1)[counted > 0] / counted[counted > 0]).mean()


_NOT_SHIFTED = ("your cross-entropy is not shifted by one position: position t must predict "
                "token t+1 (drop the last logit and the first token)")
_CE_MISTAKES = [
    ("the pad_id argument is ignored: skip the targets equal to pad_id, not a fixed id",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], 0)),
    (_NOT_SHIFTED, lambda lo, t, pad_id=0: _ce(lo, t, pad_id)),
    ("your cross-entropy is shifted the wrong way: the logits at position t predict token t+1, "
     "so drop the last logit and the first token",
     lambda lo, t, pad_id=0: _ce(lo[:, 1:], t[:, :-1], pad_id)),
    ("<pad> targets are not ignored: pass ignore_index=pad_id, padding must cost nothing",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], -100)),
    (_NOT_SHIFTED + ", and <pad> targets are not ignored (ignore_index=pad_id)",
     lambda lo, t, pad_id=0: _ce(lo, t, -100)),
    ("you sum the per-token losses: the loss is their mean over the non-pad targets",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], pad_id, "sum")),
    ("you divide by every position, padding included: average over the non-pad targets only",
     _ce_mean_over_all),
    ("you average each report's loss, then the reports: average over all non-pad targets of the "
     "batch at once (reports of different lengths then count by their tokens)",
     _ce_mean_per_report),
    ("you pass the raw logits to nll_loss: it expects log-probabilities (use F.cross_entropy, or "
     "F.log_softmax first)", lambda lo, t, pad_id=0: F.nll_loss(
         lo[:, :-1].reshape(-1, lo.shape[-1]), t[:, 1:].reshape(-1), ignore_index=pad_id)),
]


def _bce_rows(avg, masks, normalise=True, all_rows=False, reduce_patches="mean", clamp=True):
    """The reference's BCE on (B, T, N) head-averaged attention, with optional mistakes."""
    if not all_rows:
        exists = masks.sum(-1) > 0
        if not exists.any():
            return avg.sum() * 0.0
        avg, masks = avg[exists], masks[exists]
    target = masks / (masks.sum(-1, keepdim=True) + 1e-6) if normalise else masks
    bce = F.binary_cross_entropy(avg.clamp(1e-6, 1 - 1e-6) if clamp else avg, target,
                                 reduction="none")
    return bce.sum(-1).mean() if reduce_patches == "sum" else bce.mean()


_GROUNDING_MISTAKES = [
    ("your target is the raw 0/1 mask: normalise each mask row to sum to 1 "
     "(divide it by its sum)", lambda a, m: _bce_rows(a[-1].mean(1), m, normalise=False)),
    ("you use the first layer's attention: the loss supervises the last layer, "
     "attn_weights[-1]", lambda a, m: _bce_rows(a[0].mean(1), m)),
    ("you take the maximum over heads: average the heads (mean over dim 1)",
     lambda a, m: _bce_rows(a[-1].amax(1), m)),
    ("you sum over heads: average the heads (mean over dim 1)",
     lambda a, m: _bce_rows(a[-1].sum(1), m)),
    ("you compute the loss for each head and average the losses: average the heads' attention "
     "first, then compare it with the mask",
     lambda a, m: torch.stack([_bce_rows(a[-1][:, h], m) for h in range(a[-1].shape[1])]).mean()),
    ("you include the tokens without a finding: use only the rows whose mask has at least one "
     "patch", lambda a, m: _bce_rows(a[-1].mean(1), m, all_rows=True)),
    ("you compute a KL divergence: this exercise asks for the reference's binary cross-entropy "
     "between the head-averaged weights and the normalised mask",
     lambda a, m: _loss.grounding_loss(a, m, "kl")),
    ("you sum the BCE over the patches: average it over every entry (the default reduction)",
     lambda a, m: _bce_rows(a[-1].mean(1), m, reduce_patches="sum")),
    ("on a weight of exactly 0 or 1 your loss differs from the reference's: clamp the weights to "
     "[1e-6, 1 - 1e-6] before the BCE, as the reference does (log 0 is -inf; PyTorch's BCE caps "
     "it at -100)", lambda a, m: _bce_rows(a[-1].mean(1), m, clamp=False)),
]


def _row_entropy(p, log=torch.log):
    return -(p * log(p + 1e-8)).sum(-1)


_ENTROPY_MISTAKES = [
    ("your entropy has the wrong sign: H = -sum p log p is never negative",
     lambda a: -_loss.attention_entropy(a)),
    ("you average the entropies of the heads: take the entropy of the head-averaged attention "
     "(average the heads first)", lambda a: _row_entropy(a[-1]).mean()),
    ("you use the first layer's attention: use the last layer, attn_weights[-1]",
     lambda a: _row_entropy(a[0].mean(1)).mean()),
    ("you sum the row entropies: take their mean over the batch and the positions",
     lambda a: _row_entropy(a[-1].mean(1)).sum()),
    ("you sum the row entropies: take their mean over the batch and the positions",
     lambda a: _row_entropy(a[-1].mean(1)).sum(-1).mean()),
    ("you average over every layer: the entropy term uses the last layer only, attn_weights[-1]",
     lambda a: torch.stack([_row_entropy(x.mean(1)).mean() for x in a]).mean()),
    ("you use log base 2: use the natural logarithm (entropy in nats)",
     lambda a: _row_entropy(a[-1].mean(1), torch.log2).mean()),
    ("you average -p log p over the patches: a row's entropy sums over its patches, then the "
     "rows are averaged", lambda a: _row_entropy(a[-1].mean(1)).mean() / a[-1].shape[-1]),
]

# compute_loss's entropy term may also be restricted to some rows by mistake.
_ENTROPY_ROW_MISTAKES = [
    ("the entropy is averaged over the tokens with a finding only: it runs over every position",
     lambda lo, t, a, m: _row_entropy(a[-1].mean(1))[m.sum(-1) > 0].mean()),
    ("the entropy is averaged over the non-pad positions only: it runs over every position",
     lambda lo, t, a, m: _row_entropy(a[-1].mean(1))[t != 0].mean()),
]


def _pointing(rows, lesions, pick=torch.argmax):
    """The pointing game written out (the package's own is switched off while a check runs)."""
    return lesions.gather(1, pick(rows, -1, keepdim=True)).mean()


def _mass(rows, lesions):
    return (rows * lesions).sum(-1).mean()


_POINTING_MISTAKES = [
    ("returned (attention mass, pointing game): return (pointing game, attention mass)",
     lambda r, l: (_mass(r, l), _pointing(r, l))),
    ("the attention mass is the mean weight per lesion patch: it is the *sum* of a row's weights "
     "inside the lesion (how much of its one unit of attention lands there), averaged over rows",
     lambda r, l: (_pointing(r, l), ((r * l).sum(-1) / l.sum(-1)).mean())),
    ("the attention mass sums the whole row (always 1): multiply by the lesion mask first",
     lambda r, l: (_pointing(r, l), r.sum(-1).mean())),
    ("the pointing game averages the largest weights: it is the fraction of rows whose "
     "most-attended patch (the argmax) lies in the lesion",
     lambda r, l: (r.max(-1).values.mean(), _mass(r, l))),
    ("the pointing game uses the least-attended patch (argmin): it asks about the most-attended "
     "one", lambda r, l: (_pointing(r, l, torch.argmin), _mass(r, l))),
]


def _sentence_mass(rows, masks, sentence, reduce="mean"):
    """Per sentence, the mean (or max) over its words of the attention mass inside the mask."""
    mass = (rows * masks).sum(-1)
    S = int(sentence.max()) + 1
    if reduce == "max":
        return torch.full((S,), -1.0).scatter_reduce(0, sentence, mass, "amax")
    return torch.zeros(S).index_add(0, sentence, mass) / torch.bincount(sentence, minlength=S)


def _per_sentence(words_value, sentence):
    S = int(sentence.max()) + 1
    return torch.zeros(S).index_add(0, sentence, words_value) / torch.bincount(sentence, minlength=S)


_SPATIAL_MISTAKES = [
    ("each word was scored on its own: a sentence is precise when the *mean* mass of its words "
     "is above the threshold, so average per sentence before comparing",
     lambda r, m, s, threshold=0.5: ((r * m).sum(-1) > threshold).float().mean()),
    ("the masses of all sentences were averaged before the comparison: decide for each sentence, "
     "then take the share of precise sentences",
     lambda r, m, s, threshold=0.5: ((r * m).sum(-1).mean() > threshold).float()),
    ("a mass of exactly the threshold counts as precise: the rule is strictly above",
     lambda r, m, s, threshold=0.5: (_sentence_mass(r, m, s) >= threshold).float().mean()),
    ("each sentence was judged by its best word (max): use the mean over its words",
     lambda r, m, s, threshold=0.5: (_sentence_mass(r, m, s, "max") > threshold).float().mean()),
    ("the most-attended patch (the pointing game) decided: spatial precision asks how much "
     "attention lies inside the mask",
     lambda r, m, s, threshold=0.5: (_per_sentence(
         m.gather(1, r.argmax(-1, keepdim=True))[:, 0], s) > threshold).float().mean()),
    ("the mass was divided by the mask's size: it is the sum of the weights inside the mask",
     lambda r, m, s, threshold=0.5: (_per_sentence(
         (r * m).sum(-1) / m.sum(-1).clamp_min(1), s) > threshold).float().mean()),
    ("returned the number of precise sentences: return their share",
     lambda r, m, s, threshold=0.5: (_sentence_mass(r, m, s) > threshold).float().sum()),
    ("returned the mean mass: each sentence counts 1 if precise, 0 if not",
     lambda r, m, s, threshold=0.5: _sentence_mass(r, m, s).mean()),
]


def _mark_mass(attn, mark, reduce="sum"):
    on = attn * mark[:, None]
    if reduce == "max":
        return on.amax(-1)
    if reduce == "mean":
        return on.sum(-1) / mark.sum(-1, keepdim=True).clamp_min(1)
    return on.sum(-1)


def _shift(words, rows=-1):
    """The rows `rows` away from the finding words (-1: the rows before them)."""
    out = torch.zeros_like(words)
    if rows < 0:
        out[:, :rows] = words[:, -rows:]
    else:
        out[:, rows:] = words[:, :-rows]
    return out


def _per_image_mean(mass, rows):
    per_image = (mass * rows).sum(1) / rows.sum(1).clamp_min(1)
    return per_image[rows.any(1)].mean()


_MARK_MISTAKES = [
    ("the second value reads the rows after the words: the row that predicts the word at t is "
     "row t-1, so take the rows just before the finding words",
     lambda a, m, w: (_mark_mass(a, m)[w].mean(), _mark_mass(a, m)[_shift(w, 1)].mean())),
    ("the second value is the words' own rows again: shift one row earlier, to the row that "
     "predicts each word", lambda a, m, w: (_mark_mass(a, m)[w].mean(),) * 2),
    ("returned (before, on_words): return (on_words, before)",
     lambda a, m, w: (_mark_mass(a, m)[_shift(w)].mean(), _mark_mass(a, m)[w].mean())),
    ("you sum the mass over the words: take its mean over the finding words",
     lambda a, m, w: (_mark_mass(a, m)[w].sum(), _mark_mass(a, m)[_shift(w)].sum())),
    ("you average over every row: only the finding words' rows (and the rows just before them) "
     "count", lambda a, m, w: (_mark_mass(a, m).mean(), _mark_mass(a, m).mean())),
    ("you average each report's words, then the reports: average over all the finding words of "
     "the batch at once (a report with more words counts more)",
     lambda a, m, w: (_per_image_mean(_mark_mass(a, m), w),
                      _per_image_mean(_mark_mass(a, m), _shift(w)))),
    ("you measured the attention outside the mark: the mass on the mark is the sum of the "
     "weights on its patches",
     lambda a, m, w: ((1 - _mark_mass(a, m))[w].mean(), (1 - _mark_mass(a, m))[_shift(w)].mean())),
    ("you took the largest weight on the mark: the mass is the *sum* of the weights on its "
     "patches", lambda a, m, w: (_mark_mass(a, m, "max")[w].mean(),
                                 _mark_mass(a, m, "max")[_shift(w)].mean())),
    ("you averaged the weights over the mark's patches: the mass is their sum",
     lambda a, m, w: (_mark_mass(a, m, "mean")[w].mean(),
                      _mark_mass(a, m, "mean")[_shift(w)].mean())),
]


def _mistake(mistakes, out, reference, args, kwargs=None):
    """The message of the first known mistake whose output `out` matches, else None."""
    for message, wrong in mistakes:
        try:
            if _matches(out, wrong(*args, **(kwargs or {})), reference):
                return message
        except Exception:  # a mistake that cannot be computed on these inputs is not the one
            continue
    return None


def _diagnose_compute_loss(out, expected, args, kwargs):
    """Which part of (total, ce, ground, entropy) is wrong, and how."""
    if any(o.numel() != 1 for o in out):
        return None                                  # a shape problem, reported as such
    lo, t, a, m = args
    lg, le = kwargs.get("lambda_ground", 0.1), kwargs.get("lambda_entropy", 0.01)
    ce, ground, entropy = (_loss.shifted_cross_entropy(lo, t), _loss.grounding_loss(a, m),
                           _loss.attention_entropy(a))
    expected = (ce + lg * ground + le * entropy, ce, ground, entropy)
    for order in itertools.permutations(range(4)):
        if order != (0, 1, 2, 3) and _matches(tuple(out), tuple(expected[i] for i in order)):
            return ("the four values are right but in the wrong order: return "
                    "(total, ce, ground, entropy)")
    if (_matches(out[0], expected[0]) and _matches(out[1], ce)
            and _matches(out[2], lg * ground) and _matches(out[3], le * entropy)):
        return ("the total is right, but ground and entropy are returned multiplied by their "
                "lambdas: return them unweighted, as the training log records them")
    parts = [("ce", "the cross-entropy", ce, _CE_MISTAKES, (lo, t)),
             ("ground", "the grounding term", ground, _GROUNDING_MISTAKES, (a, m)),
             ("entropy", "the entropy term", entropy, _ENTROPY_MISTAKES, (a,))]
    for index, (name, what, value, mistakes, part_args) in enumerate(parts, start=1):
        if not _matches(out[index], value):
            found = _mistake(mistakes, out[index], value, part_args)
            if found is None and name == "entropy":
                found = _mistake(_ENTROPY_ROW_MISTAKES, out[index], value, args)
            return f"{what} ({name}, output {index + 1}) is wrong" + (f": {found}" if found else
                                                                      "")
    totals = [
        ("the total ignores the lambdas: total = ce + lambda_ground * ground "
         "+ lambda_entropy * entropy", ce + ground + entropy),
        ("lambda_ground and lambda_entropy are swapped: lambda_ground weights the grounding term",
         ce + le * ground + lg * entropy),
        ("the entropy term is subtracted: the reference adds lambda_entropy * entropy",
         ce + lg * ground - le * entropy),
        ("the total ignores the lambda arguments (hard-coded weights?): use lambda_ground and "
         "lambda_entropy", ce + 0.1 * ground + 0.01 * entropy),
        ("the total is only the cross-entropy: add lambda_ground * ground "
         "+ lambda_entropy * entropy", ce),
        ("the total leaves out the entropy term (+ lambda_entropy * entropy)", ce + lg * ground),
        ("the total leaves out the grounding term (+ lambda_ground * ground)", ce + le * entropy),
    ]
    for message, value in totals:
        if _matches(out[0], value):
            return message
    return "the total is not ce + lambda_ground * ground + lambda_entropy * entropy"


@dataclass(frozen=True)
class _Spec:
    reference: Callable
    cases: Callable[[str], list]
    outputs: tuple          # names of the returned values
    shapes: tuple           # how each returned shape is spelt in a message
    inputs: tuple           # the arguments' names, for messages
    grad_args: tuple        # indices of the arguments whose gradients are compared
    diagnose: Callable      # (out, expected, args, kwargs) -> a known mistake's message, or None


def _mistakes(table):
    return lambda out, expected, args, kwargs: _mistake(table, out, expected, args, kwargs)


_SPECS = {
    "cross_attention": _Spec(
        lambda q, k, v, h: _model.multi_head_attention(q, k, v, h), _cases_cross_attention,
        ("context", "weights"), ("(B, T, D)", "(B, H, T, N)"),
        ("query", "key", "value", "num_heads"), (0, 1, 2), _mistakes(_CROSS_ATTENTION_MISTAKES)),
    "causal_mask": _Spec(
        _reference_causal, _cases_causal_mask, ("weights",), ("the shape of scores",),
        ("scores",), (0,), _mistakes(_CAUSAL_MISTAKES)),
    "shifted_cross_entropy": _Spec(
        lambda lo, t, pad_id=0: _loss.shifted_cross_entropy(lo, t, pad_id),
        _cases_shifted_cross_entropy, ("loss",), ("a scalar",), ("logits", "token_ids"), (0,),
        _mistakes(_CE_MISTAKES)),
    "grounding_loss": _Spec(
        lambda a, m: _loss.grounding_loss(a, m, "bce"), _cases_grounding_loss, ("loss",),
        ("a scalar",), ("attention weights", "finding masks"), (0,),
        _mistakes(_GROUNDING_MISTAKES)),
    "attention_entropy": _Spec(
        lambda a: _loss.attention_entropy(a), _cases_attention_entropy, ("entropy",),
        ("a scalar",), ("attention weights",), (0,), _mistakes(_ENTROPY_MISTAKES)),
    "compute_loss": _Spec(
        lambda lo, t, a, m, **kw: _loss.compute_loss(lo, t, a, m, **kw), _cases_compute_loss,
        ("total", "ce", "ground", "entropy"), ("a scalar",) * 4,
        ("logits", "token_ids", "attention weights", "finding masks"), (0, 2),
        _diagnose_compute_loss),
    "pointing_game_and_mass": _Spec(
        lambda r, l: _metrics.pointing_game_and_mass(r, l), _cases_pointing_game_and_mass,
        ("pointing game", "attention mass"), ("a scalar", "a scalar"), ("rows", "lesions"), (),
        _mistakes(_POINTING_MISTAKES)),
    "spatial_precision": _Spec(
        lambda r, m, s, threshold=0.5: _rendered_metrics.spatial_precision(r, m, s, threshold),
        _cases_spatial_precision, ("spatial precision",), ("a scalar",),
        ("rows", "masks", "sentence"), (), _mistakes(_SPATIAL_MISTAKES)),
    "attention_on_mark": _Spec(
        lambda a, m, w: _shortcuts.attention_on_mark(a, m, w), _cases_attention_on_mark,
        ("on_words", "before"), ("a scalar", "a scalar"), ("attn", "mark", "words"), (0,),
        _mistakes(_MARK_MISTAKES)),
}
assert _SPECS.keys() == EXERCISES.keys()


# ---------------------------------------------------------------------------------------------
# Running the student's function safely
# ---------------------------------------------------------------------------------------------

class ReferenceCalled(Exception):
    """Raised by the package's exercise functions while a student's answer is being checked."""


class _TimeUp(BaseException):
    """A BaseException, so that a student's `except Exception` cannot swallow it."""


_GUARDED = [(_model, "multi_head_attention"), (_model, "causal_mask"),
            (_loss, "shifted_cross_entropy"), (_loss, "grounding_loss"),
            (_loss, "attention_entropy"), (_loss, "compute_loss"),
            (_metrics, "pointing_game_and_mass"), (_rendered_metrics, "spatial_precision"),
            (_shortcuts, "attention_on_mark")]
_called_references: list = []


def _tripwire(*args, **kwargs):
    # This code runs as the body of a guarded package function, i.e. with that module's globals,
    # so it reaches this module through the import system rather than by name.
    checks = __import__("medsight_lab.grading.checks", fromlist=["ReferenceCalled"])
    name = __import__("sys")._getframe().f_code.co_name
    checks._called_references.append(name)
    raise checks.ReferenceCalled(f"medsight_lab's {name} is switched off while your answer "
                                 "is checked")


@contextlib.contextmanager
def _references_switched_off():
    """Swap the code of the package's exercise functions for the tripwire. Swapping `__code__`
    (not the module attribute) catches every alias: `f = ml.compute_loss`, `from ... import`."""
    saved = []
    try:
        for module, name in _GUARDED:
            fn = getattr(module, name)
            saved.append((fn, fn.__code__))
            fn.__code__ = _tripwire.__code__.replace(co_name=name)
        yield
    finally:
        for fn, code in saved:
            fn.__code__ = code


@contextlib.contextmanager
def _time_limit(seconds):
    """Interrupt the block after `seconds` (SIGALRM; only possible on the main thread)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() != threading.main_thread():
        yield
        return

    def time_up(signum, frame):
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, time_up)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _clone(x, requires_grad=False):
    if isinstance(x, torch.Tensor):
        x = x.detach().clone()
        return x.requires_grad_() if requires_grad and x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(item, requires_grad) for item in x)
    return x


def _tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _tensors(item)]
    return []


def _matches(out, expected, reference=None):
    """`out` equals `expected` within the tolerance. With the `reference` output (when `expected`
    is a known mistake), an output whose shape the mistake changes is left out when the student's
    shape differs from it too: a single head shows in the context whatever shape of weights the
    student returns."""
    if isinstance(expected, tuple):
        if not isinstance(out, (tuple, list)) or len(out) != len(expected):
            return False
        pairs = [(o, e) for o, e, r in zip(out, expected, reference or expected)
                 if _same_shape(o, e) or _same_shape(e, r)]
        return bool(pairs) and all(_matches(o, e) for o, e in pairs)
    if not _same_shape(out, expected):
        return False
    return torch.allclose(out.detach().double().reshape(expected.shape),
                          expected.detach().double(), atol=ATOL, rtol=RTOL, equal_nan=True)


def _same_shape(out, expected):
    """Shapes agree; a one-element tensor stands for a 0-dim scalar."""
    return isinstance(out, torch.Tensor) and (
        out.shape == expected.shape or (expected.dim() == 0 and out.numel() == 1))


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    name = type(x).__name__
    return "None" if x is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _first_line(err):
    text = str(err).strip().splitlines()
    return (text[0][:200] if text else "").strip()


NOT_IMPLEMENTED = "not implemented yet: replace `raise NotImplementedError` with your code"


def _not_implemented(err, fn):
    """The stub message, or which other exercise's stub the answer called."""
    stub = re.fullmatch(r"(\w+): your code here", str(err))
    other = EXERCISES.get(stub.group(1)) if stub else None
    if other is not None and other.function != getattr(fn, "__name__", None):
        return (f"your function calls {other.function}, which is not implemented yet: "
                "do that exercise first")
    return NOT_IMPLEMENTED


def _call(fn, args, kwargs, label):
    """Run the student's function with its printing silenced and the references switched off.
    Returns (output, problem); problem is None or a short message."""
    del _called_references[:]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings(), _references_switched_off(), _time_limit(TIME_LIMIT_S):
            warnings.simplefilter("ignore")
            out = fn(*args, **kwargs)
    except _TimeUp:
        return None, f"did not finish within {TIME_LIMIT_S} s on {label}: an infinite loop?"
    except (Exception, SystemExit) as err:  # the student's error is the verdict, never a crash
        if _called_references:
            out = None
        elif isinstance(err, NotImplementedError):
            return None, _not_implemented(err, fn)
        else:
            return None, (f"your function raised {type(err).__name__} on {label}: "
                          f"{_first_line(err)}")
    if _called_references:
        return None, (f"your answer calls medsight_lab's own {_called_references[0]} — write it "
                      "yourself")
    return out, None


# ---------------------------------------------------------------------------------------------
# Judging one case
# ---------------------------------------------------------------------------------------------

def _structure_problem(out, spec):
    """Wrong type or number of returned values, in words."""
    names = spec.outputs
    if len(names) > 1:
        if not isinstance(out, (tuple, list)):
            return f"returned {_describe(out)}, expected a tuple ({', '.join(names)})"
        if len(out) != len(names):
            return (f"returned a {type(out).__name__} of {len(out)}, expected "
                    f"({', '.join(names)})")
    for name, item in zip(names, out if len(names) > 1 else (out,)):
        if not isinstance(item, torch.Tensor):
            what = ("your function returned " + _describe(item) if len(names) == 1
                    else f"you return {_describe(item)} as the {name}")
            why = " (keep the result a tensor, so that gradients can flow)" if spec.grad_args \
                else " (e.g. x.mean(), not x.mean().item())"
            return f"{what}, expected a torch tensor{why}"
    return None


def _shape_problem(out, expected, spec):
    items, wanted = (out, expected) if len(spec.outputs) > 1 else ((out,), (expected,))
    shapes = [tuple(i.shape) for i in items]
    if len(items) == 2 and shapes == [tuple(w.shape) for w in reversed(wanted)] \
            and shapes[0] != shapes[1]:
        return f"returned ({', '.join(reversed(spec.outputs))}): return ({', '.join(spec.outputs)})"
    for name, item, want, spelt in zip(spec.outputs, items, wanted, spec.shapes):
        if not _same_shape(item, want):
            wanted_shape = ("a single number (a 0-dim tensor)" if spelt == "a scalar"
                            else f"{spelt} = {tuple(want.shape)}")
            return f"shape of the {name}: {tuple(item.shape)}, expected {wanted_shape}"
    return None


def _value_problem(spec, out, expected, case):
    """Why `out` differs from `expected`: a known mistake if one matches, else what and where."""
    found = spec.diagnose(out, expected, _clone(case.args), case.kwargs)
    if found:
        return found
    problem = _shape_problem(out, expected, spec)
    if problem:
        return f"{problem} (on {case.label})"
    if not all(torch.isfinite(t).all() for t in _tensors(out)):
        return f"returned NaN or inf on {case.label}: a log of 0 or a division by 0?"
    if len(spec.outputs) > 1:
        wrong = next(n for n, o, e in zip(spec.outputs, out, expected) if not _matches(o, e))
        return f"wrong {wrong} on {case.label}"
    return f"wrong value on {case.label}"


def _gradients(out, inputs):
    """Gradients of a fixed random projection of every output w.r.t. `inputs` (None if the
    outputs are cut off from the inputs)."""
    g = torch.Generator().manual_seed(1234)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    objective = sum((o.reshape(-1).float() * torch.randn(o.numel(), generator=g)).sum()
                    for o in outs)
    if not objective.requires_grad:
        return [None] * len(inputs)
    return torch.autograd.grad(objective, inputs, allow_unused=True)


def _gradient_problem(spec, out, args, case):
    ref_args = _clone(case.args, requires_grad=True)
    expected = spec.reference(*ref_args, **case.kwargs)
    grads = _gradients(out, [t for i in spec.grad_args for t in _tensors(args[i])])
    wanted = _gradients(expected, [t for i in spec.grad_args for t in _tensors(ref_args[i])])
    names = [spec.inputs[i] for i in spec.grad_args for _ in _tensors(args[i])]
    for name, grad, want in zip(names, grads, wanted):
        if want is None:                     # e.g. a layer the loss does not read
            continue
        if grad is None:
            return (f"no gradient flows back to the {name}: avoid .item(), .detach(), .numpy() "
                    f"and new tensors built with torch.tensor(...) (on {case.label})")
        if name == "attention weights":
            # Each row is a distribution: moving along a row (adding the same amount to every
            # weight) leaves the simplex, so an answer may treat that direction differently
            # (e.g. renormalise). Only the part of the gradient along the simplex is compared.
            grad, want = grad - grad.mean(-1, keepdim=True), want - want.mean(-1, keepdim=True)
        if not _matches(grad, want):
            return (f"the value is right but its gradient with respect to the {name} is not: is "
                    f"part of the computation detached? (on {case.label})")
    return None


@torch.enable_grad()   # whatever the notebook did to autograd, the gradient checks must see it
def _judge(spec, fn, case):
    """None if `fn` is right on `case`, else the problem in words."""
    expected = spec.reference(*_clone(case.args), **case.kwargs)
    args = _clone(case.args, requires_grad=case.grad)
    out, problem = _call(fn, args, case.kwargs, case.label)
    if problem:
        return problem
    problem = _structure_problem(out, spec)
    if problem:
        return problem
    if not _matches(out, expected):
        return _value_problem(spec, out, expected, case)
    for name, given, original in zip(spec.inputs, args, case.args):
        if not all(torch.equal(a, b) for a, b in zip(_tensors(given), _tensors(original))):
            return (f"your function changes its input ({name}) in place: use out-of-place "
                    "operations (masked_fill, not masked_fill_; x = x + y, not x += y)")
    return _gradient_problem(spec, out, args, case) if case.grad else None


# ---------------------------------------------------------------------------------------------
# The public face
# ---------------------------------------------------------------------------------------------

def run_check(exercise_id, fn, suite="visible") -> CheckResult:
    """Check `fn` against exercise `exercise_id`; never raises (except KeyboardInterrupt)."""
    if exercise_id not in _SPECS:
        return CheckResult(False, f"✘ {exercise_id}: unknown exercise (known: "
                                  f"{', '.join(EXERCISES)})")
    if suite not in ("visible", "hidden"):
        return CheckResult(False, f"✘ {exercise_id}: unknown suite {suite!r} "
                                  "(visible or hidden)")
    title = exercise_id + (" (hidden tests)" if suite == "hidden" else "")
    if not callable(fn):
        return CheckResult(False, f"✘ {title}: expected a function, got {_describe(fn)} — did "
                                  "you run the cell that defines it?")
    spec = _SPECS[exercise_id]
    cases = spec.cases(suite)
    for case in cases:
        try:
            problem = _judge(spec, fn, case)
        except (Exception, SystemExit) as err:  # e.g. a returned object that breaks torch
            problem = f"your result could not be checked ({type(err).__name__}: " \
                      f"{_first_line(err)}) (on {case.label})"
        if problem:
            end = "" if problem.endswith(("?", ".")) else "."
            return CheckResult(False, f"✘ {title}: {problem}{end}")
    return CheckResult(True, f"✔ {title}: correct on {len(cases)} cases.")


RAISE_ENV = "MEDSIGHT_CHECKS_RAISE"


def check(exercise_id, fn, suite="visible"):
    """Print the verdict line for `fn` on exercise `exercise_id`. Returns None, so that a
    notebook cell shows only the printed line. With the environment variable
    MEDSIGHT_CHECKS_RAISE=1, a failed check also raises AssertionError: nbgrader's autograder
    scores a grade cell by whether it raises, not by what it prints."""
    result = run_check(exercise_id, fn, suite)
    refused = _refusal(fn) if result.passed else None
    if refused:
        title = exercise_id + (" (hidden tests)" if suite == "hidden" else "")
        result = CheckResult(False, f"✘ {title}: right, but the grader will refuse this answer: "
                                    f"{refused}.")
    print(result.message, flush=True)
    if not result.passed and os.environ.get(RAISE_ENV) == "1":
        raise AssertionError(result.message)


def _refusal(fn):
    """What the grader's answer policy says of the function's own source (None when it has no
    objection, or when the source cannot be read). The rest of the answer cell is not seen here:
    the grader reads the whole cell."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    return answer_problem(source)
