"""Exercise checks: the cases, references and known mistakes of every exercise, and the judge.

`check(exercise_id, fn)` (the chapters' check cells) runs the student's function here, on the
visible cases, and prints one verdict line a student can act on. The grader runs the same cases
(and the hidden ones) in a sandbox instead (grading/runner.py), gets the outputs back as data, and
judges them with the same `judge_suite`: one judge, two ways of calling the student's function.

The judge compares an output with the package's reference implementation on the same inputs, with
a tolerance, so the verdict is the same on CPU and GPU and never shows a number. When the answer
is wrong it recomputes known mistakes on the same inputs (unshifted cross-entropy, unnormalised
target, missing scale, ...) and names the one the student's output matches. The hidden suite
(fresh random inputs, edge cases, gradients equal the reference's) lives outside the package, in
the instructor's `instructor/hidden_cases.py`; inputs changed in place fail every suite.

While check() runs the student's function in the student's own kernel, the package's own
implementations of the exercises are switched off (their code swapped for a stub that records the
call), so that `compute_loss = ml.compute_loss` fails there too; in the grader's sandbox there is
no package at all.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
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
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import baselines as _baselines
from .. import data as _data
from .. import loss as _loss
from .. import metrics as _metrics
from .. import model as _model
from .. import rendered_metrics as _rendered_metrics
from .. import sanity as _sanity
from .. import shortcuts as _shortcuts
from .policy import answer_problem
from .runner import Opaque, PatchScore, projected_gradients, tensors

TIME_LIMIT_S = 10          # per call of the student's function
ATOL, RTOL = 1e-5, 1e-4


@dataclass(frozen=True)
class Exercise:
    function: str          # the function the chapter asks the student to write
    points: int
    chapter: str           # the chapter notebook's stem, e.g. "03_loss"


EXERCISES = {
    "finding_masks": Exercise("finding_masks", 2, "01_dataset"),
    "cross_attention": Exercise("cross_attention", 2, "02_architecture"),
    "causal_attention_weights": Exercise("causal_attention_weights", 1, "02_architecture"),
    "shifted_cross_entropy": Exercise("shifted_cross_entropy", 2, "03_loss"),
    "grounding_loss": Exercise("grounding_loss", 2, "03_loss"),
    "attention_entropy": Exercise("attention_entropy", 1, "03_loss"),
    "compute_loss": Exercise("compute_loss", 3, "03_loss"),
    "cached_attention_step": Exercise("cached_attention_step", 2, "04_training"),
    "pointing_game_and_mass": Exercise("pointing_game_and_mass", 2, "05_evaluation"),
    "patch_norm_map": Exercise("patch_norm_map", 1, "06_testing_explanations"),
    "rank_correlation": Exercise("rank_correlation", 2, "06_testing_explanations"),
    "deletion_curve": Exercise("deletion_curve", 2, "06_testing_explanations"),
    "gradient_times_input": Exercise("gradient_times_input", 2, "06_testing_explanations"),
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


def _ce_inputs(seed, **kw):
    """(logits, token_ids) of `_loss_inputs`."""
    return _loss_inputs(seed, **kw)[:2]


def _grounding_inputs(seed, **kw):
    """(attn_weights, finding_masks) of `_loss_inputs`."""
    return _loss_inputs(seed, **kw)[2:]


def _entropy_inputs(seed, **kw):
    """(attn_weights,) of `_loss_inputs`."""
    return _loss_inputs(seed, **kw)[2:3]


def _attention_inputs(seed, B=2, T=5, N=6, D=8):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, L, D, generator=g) for L in (T, N, N))


def _scores(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


# ---------------------------------------------------------------------------------------------
# Visible cases per exercise (the hidden ones live in the instructor's tree: HIDDEN_CASES_FILE)
# ---------------------------------------------------------------------------------------------

def _mask_inputs(seed, B=4, T=9, N=16, G=5, V=20, normal_rows=(0,), reports=False):
    """(token_ids, lesion_mask, grounded_ids): random ids (or the course's reports) with
    <bos>/<eos>/<pad>, lesions of 1-4 patches, and images without a lesion at `normal_rows`."""
    g = torch.Generator().manual_seed(seed)
    if reports:
        ds = _data.SyntheticRadiologyDataset(B, n_patches=N, max_len=T, seed=seed)
        return ds.token_ids.clone(), ds.lesion_mask.clone(), ds.grounded_ids.clone()
    token_ids = torch.randint(3, V, (B, T), generator=g)
    token_ids[:, 0] = 1                                               # <bos>
    for b in range(B):
        end = int(torch.randint(2, T + 1, (1,), generator=g))
        if end < T:
            token_ids[b, end - 1], token_ids[b, end:] = 2, 0          # <eos>, then <pad>
    lesion_mask = torch.zeros(B, N)
    for b in range(B):
        if b not in normal_rows:
            size = int(torch.randint(1, 5, (1,), generator=g))
            lesion_mask[b, torch.randperm(N, generator=g)[:size]] = 1.0
    grounded_ids = torch.randperm(V - 3, generator=g)[:G] + 3
    return token_ids, lesion_mask, grounded_ids


def _cache_inputs(seed, B=2, H=2, S=4, T=1, d_k=8):
    """(q_new, k_cache, v_cache, k_new, v_new): T new positions on a cache of S."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, d_k, generator=g) for _ in range(3))
    k_cache, v_cache = (torch.randn(B, H, S, d_k, generator=g) for _ in range(2))
    return q, k_cache, v_cache, k, v


def _cases_finding_masks():
    return [Case("the course's reports (6 images)", _mask_inputs(0, B=6, T=20, reports=True)),
            Case("random reports with 5 grounded words", _mask_inputs(1)),
            Case("a batch with two normal images", _mask_inputs(2, normal_rows=(1, 3)))]


def _cases_cached_attention_step():
    return [Case("one new position on a cache of 4", _cache_inputs(0)),
            Case("the first step (an empty cache, S=0)", _cache_inputs(1, S=0)),
            Case("three new positions at once on a cache of 5", _cache_inputs(2, S=5, T=3))]


def _cases_cross_attention():
    return [Case("a batch of 2 with 2 heads", (*_attention_inputs(0), 2)),
            Case("a batch of 2 with 4 heads", (*_attention_inputs(1, D=16), 4)),
            Case("a single image (B=1)", (*_attention_inputs(2, B=1), 2))]


def _cases_causal_attention_weights():
    return [Case("a 4 x 4 score matrix", (_scores(0, 4, 4),)),
            Case("a batch of scores (B, H, T, T)", (_scores(1, 2, 3, 5, 5),)),
            Case("a batch of scores (B, H, T, T)", (_scores(2, 1, 2, 6, 6),))]


def _cases_shifted_cross_entropy():
    return [Case("a batch without padding", _ce_inputs(0, padding=False)),
            Case("a batch with padding", _ce_inputs(1)),
            Case("a single report (B=1)", _ce_inputs(2, B=1)),
            Case("a batch with padding", _ce_inputs(3, B=4, T=9, V=13)),
            Case("a batch padded with pad_id=4", _ce_inputs(4, pad_id=4), {"pad_id": 4})]


def _cases_grounding_loss():
    return [Case("a batch with findings", _grounding_inputs(0)),
            Case("a batch with findings", _grounding_inputs(1, B=4, N=9)),
            Case("a single image with a finding (B=1)", _grounding_inputs(2, B=1)),
            Case("a batch in which no image has a finding", _grounding_inputs(3, findings=False))]


def _cases_attention_entropy():
    return [Case("a batch of attention maps", _entropy_inputs(0)),
            Case("a batch of attention maps", _entropy_inputs(1, B=4, H=4, N=9)),
            Case("a single image (B=1)", _entropy_inputs(2, B=1))]


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


def _cases_pointing_game_and_mass():
    # The first case is square (as many rows as patches): an argmax over the rows (dim=0) then
    # gives a wrong value the verdict can name, where other shapes raise an IndexError. Its seed
    # is one on which the two argmaxes disagree. (The hidden suite's first case is square too.)
    return [Case("16 attention rows over 16 patches", _grounding_rows(3, M=16)),
            Case("10 attention rows over 16 patches", _grounding_rows(1, M=10)),
            Case("attention rows over 9 patches", _grounding_rows(2, N=9, sizes=(2, 3)))]


def _sentence_rows(seed, S=4, N=16, words=(1, 2, 3), hallucinated=0, shuffle=False,
                   threshold=0.5, distinct=False):
    """(rows, masks, sentence): S sentences of 1-3 finding words each; each sentence's attention is
    drawn towards its mask by its own amount (and each word's a little differently), so that some
    sentences are precise and some not, and none lies within 0.05 of the threshold (0.5 or the one
    given, which then changes the answer); the first `hallucinated` sentences have no mask."""
    for attempt in range(1000):
        g = torch.Generator().manual_seed(seed * 1000 + attempt)
        rows, masks, sentence = [], [], []
        for s in range(S):
            k = words[int(torch.randint(len(words), (1,), generator=g))]
            mask = torch.zeros(N)
            mask[torch.randperm(N, generator=g)[:int(torch.randint(2, 5, (1,), generator=g))]] = 1
            pull = float(torch.rand(1, generator=g)) * 8 + torch.randn(k, 1, generator=g) * 2
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
        # clear of the threshold, per sentence and per word
        clear = all((mean - t).abs().min() > 0.05 and (words_mass - t).abs().min() > 0.02
                    for t in {0.5, threshold})
        if clear and (S < 4 or _telling(rows, masks, sentence, threshold, distinct)):
            return rows, masks, sentence
    raise RuntimeError("no clear case drawn")  # pragma: no cover


def _telling(rows, masks, sentence, threshold, distinct):
    """Whether the case catches the known mistakes: the share of precise sentences differs from
    the per-word, best-word, pointing-game, divided-mass and all-words-averaged shares (at this
    threshold and at 0.5); `distinct`: those five also differ from each other, so that the first
    case names each mistake rightly."""
    S = int(sentence.max()) + 1
    words_mass = (rows * masks).sum(-1)
    count = torch.bincount(sentence, minlength=S)
    per_sentence = lambda x: torch.zeros(S).index_add(0, sentence, x) / count
    mean = per_sentence(words_mass)
    best = torch.full((S,), -1.0).scatter_reduce(0, sentence, words_mass, "amax")
    pointing = per_sentence(masks.gather(1, rows.argmax(-1, keepdim=True))[:, 0])
    divided = per_sentence(words_mass / masks.sum(-1).clamp_min(1))
    right = float((mean > threshold).float().mean())
    shares = [[float((x > t).float().mean()) for x in (words_mass, best, pointing, divided)]
              + [float(words_mass.mean() > t)] for t in dict.fromkeys((threshold, 0.5))]
    wrong = {v for row in shares for v in row}
    if threshold != 0.5:
        # an answer that ignores the threshold argument must not pass for another mistake
        ignored = float((mean > 0.5).float().mean())
        if ignored in shares[0]:
            return False
        wrong.add(ignored)
    return 0 < right < 1 and right not in wrong and (not distinct or len(set(shares[0])) == 5)


def _threshold_case():
    """Three sentences: mean mass exactly 0.5 (not precise), one above it, one outside."""
    rows = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 0.0]])
    masks = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                          [1.0, 0.0, 0.0, 0.0]])
    return rows, masks, torch.tensor([0, 0, 1, 2])


def _cases_spatial_precision():
    return [Case("6 sentences of 1-3 words over 16 patches", _sentence_rows(0, S=6, distinct=True)),
            Case("5 sentences over 16 patches", _sentence_rows(1, S=5)),
            Case("a sentence about a finding the image does not have",
                 _sentence_rows(2, hallucinated=1))]


def _cases_compute_loss():
    return [Case("a batch with padding and findings", _loss_inputs(0)),
            Case("a batch with padding and findings", _loss_inputs(1, B=4, T=9, N=9)),
            Case("a call with lambda_ground=0.5, lambda_entropy=0.2", _loss_inputs(2),
                 {"lambda_ground": 0.5, "lambda_entropy": 0.2}),
            Case("a batch in which no image has a finding", _loss_inputs(3, findings=False))]


# -- chapter 6 (testing explanations) --------------------------------------------------------
# A score function crosses the sandbox's boundary as data: every case's score is a PatchScore.

def _explanation_patches(seed, B=3, N=6, D=5, bright=2):
    """(B, N, D) background-like patches, `bright` of them per image several times longer."""
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(B, N, D, generator=g) * 0.3
    for b in range(B):
        idx = torch.randperm(N, generator=g)[:bright]
        patches[b, idx] += torch.randn(len(idx), D, generator=g) * 2
    return patches


def _cases_patch_norm_map():
    return [Case("3 images of 6 patches", (_explanation_patches(0),)),
            Case("2 images of 16 patches", (_explanation_patches(1, B=2, N=16, D=8),)),
            Case("4 images with no bright patch", (_explanation_patches(2, B=4, bright=0),))]


def _rank_pairs(seed, B=3, N=7, relation="noisy"):
    """(a, b), (B, N) each, without ties: b is a noisy copy of a, a monotone transform of it (the
    same ranks, other values), its reverse, or unrelated."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, N, generator=g)
    b = {"noisy": lambda: a + torch.randn(B, N, generator=g) * 0.7,
         "monotone": lambda: (2 * a).exp(),
         "reversed": lambda: -a ** 3,
         "unrelated": lambda: torch.rand(B, N, generator=g)}[relation]()
    return a, b


def _cases_rank_correlation():
    return [Case("3 rows of 7 values", _rank_pairs(0)),
            Case("a monotone transform of the same rows", _rank_pairs(1, relation="monotone")),
            Case("5 rows of 16 values", _rank_pairs(2, B=5, N=16))]


def _patch_score(seed, N, D):
    """A fixed score in which every patch counts differently (scale between 0.5 and 1.5), so the
    order of deletion shows in the curve."""
    g = torch.Generator().manual_seed(seed)
    W, v = torch.randn(D, 3, generator=g), torch.randn(3, generator=g)
    return PatchScore(W, v, torch.rand(N, generator=g) + 0.5, square=1 / D)


def _deletion_inputs(seed, B=3, N=6, D=4):
    g = torch.Generator().manual_seed(seed + 100)
    patches = _explanation_patches(seed, B, N, D)
    return (_patch_score(seed, N, D), patches, torch.rand(B, N, generator=g),
            torch.randn(B, N, D, generator=g) * 0.3)


def _cases_deletion_curve():
    return [Case("3 images of 6 patches", _deletion_inputs(0)),
            Case("2 images of 16 patches", _deletion_inputs(1, B=2, N=16, D=8)),
            Case("4 images of 5 patches", _deletion_inputs(2, B=4, N=5))]


def _gradient_inputs(seed, B=3, N=6, D=4, reads=None):
    """(score_fn, patches): a smooth nonlinear score of each image; `reads` limits it to the
    first patches (scale 0 for the others, which get a zero gradient)."""
    g = torch.Generator().manual_seed(seed + 200)
    W, v = torch.randn(D, 3, generator=g), torch.randn(3, generator=g)
    scale = (torch.arange(N) < (N if reads is None else reads)).float()
    return PatchScore(W, v, scale, square=0.1), _explanation_patches(seed, B, N, D)


def _cases_gradient_times_input():
    return [Case("3 images of 6 patches", _gradient_inputs(0)),
            Case("2 images of 16 patches", _gradient_inputs(1, B=2, N=16, D=8)),
            Case("a score that reads only the first 3 patches", _gradient_inputs(2, reads=3))]


# -- chapter 8 (shortcuts) -----------------------------------------------------------------
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


def _cases_attention_on_mark():
    return [Case("3 reports of 8 rows over 9 patches", _mark_inputs(0)),
            Case("5 reports whose finding words are consecutive",
                 _mark_inputs(1, B=5, consecutive=True)),
            Case("4 reports over 16 patches", _mark_inputs(2, B=4, N=16))]




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


def _masks(token_ids, lesion_mask, grounded, shift=0):
    """finding_masks from a (B, T) grounded-token indicator, rows optionally shifted by one."""
    grounded = grounded.float()
    if shift:                           # row t marked when token t + shift is grounded
        grounded = torch.cat([grounded[:, shift:], torch.zeros_like(grounded[:, :shift])], 1)
    return grounded[:, :, None] * lesion_mask[:, None, :]


_FINDING_MASK_MISTAKES = [
    ("you ground every word of the report (every id above the special tokens): only the tokens "
     "whose id is in grounded_ids get a mask row", lambda t, l, g: _masks(t, l, t > 2)),
    ("you ground every token, <bos>, <eos> and <pad> included: only the tokens whose id is in "
     "grounded_ids get a mask row", lambda t, l, g: _masks(t, l, torch.ones_like(t))),
    ("you mark the tokens that are NOT grounded words: a row gets the lesion mask when its token "
     "is in grounded_ids", lambda t, l, g: _masks(t, l, ~torch.isin(t, g))),
    ("your rows are shifted by one: row t belongs to the token read at position t "
     "(token_ids[:, t]), not to the token it predicts",
     lambda t, l, g: _masks(t, l, torch.isin(t, g), shift=1)),
    ("a grounded word's row is all ones: it must be the image's lesion mask (so all zeros for an "
     "image without a lesion)", lambda t, l, g: _masks(t, torch.ones_like(l), torch.isin(t, g))),
    ("the axes are swapped: the mask is (B, T, N), one row per token and one column per patch",
     lambda t, l, g: _masks(t, l, torch.isin(t, g)).transpose(1, 2)),
]


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


def _pointing(rows, lesions, pick=torch.argmax, dim=-1):
    """The pointing game written out (the package's own is switched off while a check runs);
    dim=0 is the mistake of taking the argmax over the rows."""
    index = pick(rows, dim, keepdim=True)
    return lesions.gather(1, index if dim == -1 else index.T).mean()


def _mass(rows, lesions):
    return (rows * lesions).sum(-1).mean()


_POINTING_MISTAKES = [
    ("returned (attention mass, pointing game): return (pointing game, attention mass)",
     lambda r, l: (_mass(r, l), _pointing(r, l))),
    ("you divide each row's weight inside the lesion by the lesion's size: the attention mass is "
     "the total weight the row puts on the lesion's patches, not divided by anything (a number "
     "between 0 and 1), then averaged over the rows",
     lambda r, l: (_pointing(r, l), ((r * l).sum(-1) / l.sum(-1)).mean())),
    ("you average the weights inside the lesion over all the patches: the attention mass is the "
     "total weight each row puts on the lesion's patches (sum over the patches), then averaged "
     "over the rows", lambda r, l: (_pointing(r, l), (r * l).mean())),
    ("the attention mass sums the whole row (always 1): multiply by the lesion mask first",
     lambda r, l: (_pointing(r, l), r.sum(-1).mean())),
    ("the pointing game averages the largest weights: it is the fraction of rows whose "
     "most-attended patch (the argmax) lies in the lesion",
     lambda r, l: (r.max(-1).values.mean(), _mass(r, l))),
    ("the pointing game uses the least-attended patch (argmin): it asks about the most-attended "
     "one", lambda r, l: (_pointing(r, l, torch.argmin), _mass(r, l))),
    ("the pointing game takes the argmax over the rows (dim=0): each row's most-attended patch "
     "is the argmax over its patches, the last axis (dim=-1)",
     lambda r, l: (_pointing(r, l, dim=0), _mass(r, l))),
]


# -- chapter 6 mistakes, written out (the package's own functions are switched off meanwhile) --
def _softmax_norms(p, dim=-1):
    return p.norm(dim=-1).softmax(dim)


_PATCH_NORM_MISTAKES = [
    ("the softmax runs over the images (axis 0): each image's weights must sum to 1 over its "
     "patches (the last axis of the norms)", lambda p: _softmax_norms(p, 0)),
    ("you return the raw norms: turn them into a distribution over the patches with a softmax",
     lambda p: p.norm(dim=-1)),
    ("you divide the norms by their sum: the exercise asks for their softmax",
     lambda p: p.norm(dim=-1) / p.norm(dim=-1).sum(-1, keepdim=True)),
    ("you take the softmax of the squared norms: use the norm itself (the square root of the sum "
     "of squares)", lambda p: p.pow(2).sum(-1).softmax(-1)),
    ("you take the softmax of the sum of the features: a patch's length is its L2 norm "
     "(negative features count too)", lambda p: p.sum(-1).softmax(-1)),
    ("you put all the weight on the longest patch: the exercise asks for the softmax of the "
     "norms, which keeps some weight on every patch",
     lambda p: F.one_hot(p.norm(dim=-1).argmax(-1), p.shape[1]).float()),
]


def _ranks(x):
    return x.argsort(-1).argsort(-1).to(x.dtype)


def _pearson(a, b, dim=-1):
    a, b = a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim))


_RANK_MISTAKES = [
    ("this is Pearson's correlation of the values: Spearman's correlates their *ranks* (replace "
     "each value by its position in the sorted row first)", lambda a, b: _pearson(a, b)),
    ("your 'ranks' are argsort's output, the order of the patches: the rank of each value is the "
     "argsort of that argsort", lambda a, b: _pearson(a.argsort(-1).to(a.dtype),
                                                      b.argsort(-1).to(b.dtype))),
    ("the ranks are not centred: subtract each row's mean rank before multiplying (a cosine "
     "similarity of raw ranks is not a correlation)",
     lambda a, b: (_ranks(a) * _ranks(b)).sum(-1) / (_ranks(a).norm(dim=-1) *
                                                       _ranks(b).norm(dim=-1))),
    ("one map is ranked in ascending order and the other in descending order: rank both the "
     "same way", lambda a, b: _pearson(_ranks(a), _ranks(-b))),
    # (Correlating the flattened ranks of all rows at once gives the same number, since every row
    # has the same ranks 0..N-1: this message covers both.)
    ("you return the mean over the rows: return one correlation per row, shape (B,)",
     lambda a, b: _pearson(_ranks(a), _ranks(b)).mean()),
]


def _delete(score, patches, ranking, background, ks, descending=True, cumulative=True,
            fill=None):
    order = ranking.argsort(dim=-1, descending=descending, stable=True)
    rank = order.argsort(-1)
    fill = background if fill is None else fill

    def deleted(k):
        return (rank < k) if cumulative else (rank == k - 1)
    return torch.stack([score(torch.where(deleted(k)[..., None], fill, patches)) for k in ks], -1)


_DELETION_MISTAKES = [
    ("you delete the lowest-ranked patches first: delete the highest-ranked first (sort the "
     "ranking in descending order)",
     lambda s, p, r, bg: _delete(s, p, r, bg, range(p.shape[1] + 1), descending=False)),
    ("your curve starts at k = 1: it must start with the intact image (k = 0, nothing deleted) "
     "and end with every patch deleted (k = N), N + 1 points",
     lambda s, p, r, bg: _delete(s, p, r, bg, range(1, p.shape[1] + 1))),
    ("your curve stops at k = N - 1: it must end with every patch deleted (k = N), N + 1 points",
     lambda s, p, r, bg: _delete(s, p, r, bg, range(p.shape[1]))),
    ("point k deletes only the k-th patch: deletions accumulate (point k has the k "
     "highest-ranked patches deleted)",
     lambda s, p, r, bg: _delete(s, p, r, bg, range(p.shape[1] + 1), cumulative=False)),
    ("you insert patches into the background: a deletion curve starts from the intact image and "
     "replaces its patches by the background", lambda s, p, r, bg: _delete(
         s, bg, r, p, range(p.shape[1] + 1))),
    ("you replace the deleted patches by zeros: replace them by the background patches given",
     lambda s, p, r, bg: _delete(s, p, r, bg, range(p.shape[1] + 1),
                                 fill=torch.zeros_like(p))),
    ("the curve is transposed: return (B, N + 1), one row per image",
     lambda s, p, r, bg: _delete(s, p, r, bg, range(p.shape[1] + 1)).T),
]


def _grad(score, patches, reduce="sum"):
    x = patches.detach().clone().requires_grad_(True)
    out = score(x)
    (grad,) = torch.autograd.grad(out.sum() if reduce == "sum" else out.mean(), x)
    return grad, x.detach()


def _gxi(score, patches, how):
    grad, x = _grad(score, patches, "mean" if how == "mean" else "sum")
    return {"no input": lambda: grad.sum(-1), "abs": lambda: (grad * x).sum(-1).abs(),
            "abs each": lambda: (grad * x).abs().sum(-1), "norm": lambda: grad.norm(dim=-1),
            "mean": lambda: (grad * x).sum(-1), "features": lambda: grad * x,
            "mean features": lambda: (grad * x).mean(-1)}[how]()


_GRADIENT_MISTAKES = [
    ("you return the gradient alone: multiply it by the input (the patches), feature by feature, "
     "then sum each patch's features", lambda s, p: _gxi(s, p, "no input")),
    ("you take the absolute value: keep the sign (a negative value means the patch lowers the "
     "score)", lambda s, p: _gxi(s, p, "abs")),
    ("you sum the absolute values of the features' products: keep their signs and sum them",
     lambda s, p: _gxi(s, p, "abs each")),
    ("you return the norm of the gradient: multiply the gradient by the input and sum each "
     "patch's features", lambda s, p: _gxi(s, p, "norm")),
    ("you differentiate the mean of the scores over the images, which divides every image's "
     "gradient by B: differentiate their sum", lambda s, p: _gxi(s, p, "mean")),
    ("you return one value per feature: sum the products over each patch's features, shape "
     "(B, N)", lambda s, p: _gxi(s, p, "features")),
    ("you average over the features: sum the products over each patch's features",
     lambda s, p: _gxi(s, p, "mean features")),
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
    ("the masses of all sentences were averaged before the comparison: decide for each sentence, "
     "then take the share of precise sentences",
     lambda r, m, s, threshold=0.5: ((r * m).sum(-1).mean() > threshold).float()),
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
    cases: Callable[[], list]   # the visible cases
    outputs: tuple          # names of the returned values
    shapes: tuple           # how each returned shape is spelt in a message
    inputs: tuple           # the arguments' names, for messages
    grad_args: tuple        # indices of the arguments whose gradients are compared
    diagnose: Callable      # (out, expected, args, kwargs) -> a known mistake's message, or None


def _mistakes(table):
    return lambda out, expected, args, kwargs: _mistake(table, out, expected, args, kwargs)


_SPECS = {
    "finding_masks": _Spec(
        lambda t, l, g: _data.finding_masks(t, l, g), _cases_finding_masks, ("mask",),
        ("(B, T, N)",), ("token_ids", "lesion_mask", "grounded_ids"), (),
        _mistakes(_FINDING_MASK_MISTAKES)),
    "cross_attention": _Spec(
        lambda q, k, v, h: _model.multi_head_attention(q, k, v, h), _cases_cross_attention,
        ("context", "weights"), ("(B, T, D)", "(B, H, T, N)"),
        ("query", "key", "value", "num_heads"), (0, 1, 2), _mistakes(_CROSS_ATTENTION_MISTAKES)),
    "causal_attention_weights": _Spec(
        _reference_causal, _cases_causal_attention_weights, ("weights",), ("the shape of scores",),
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
    "cached_attention_step": _Spec(
        lambda q, kc, vc, k, v: _model.cached_attention_step(q, kc, vc, k, v),
        _cases_cached_attention_step, ("context", "k_cache", "v_cache"),
        ("(B, H, T, d_k)", "(B, H, S + T, d_k)", "(B, H, S + T, d_k)"),
        ("q_new", "k_cache", "v_cache", "k_new", "v_new"), (0, 1, 2, 3, 4),
        _mistakes(_CACHED_ATTENTION_MISTAKES)),
    "pointing_game_and_mass": _Spec(
        lambda r, l: _metrics.pointing_game_and_mass(r, l), _cases_pointing_game_and_mass,
        ("pointing game", "attention mass"), ("a scalar", "a scalar"), ("rows", "lesions"), (),
        _mistakes(_POINTING_MISTAKES)),
    "patch_norm_map": _Spec(
        lambda p: _baselines.patch_norm_map(p), _cases_patch_norm_map, ("map",), ("(B, N)",),
        ("patches",), (0,), _mistakes(_PATCH_NORM_MISTAKES)),
    "rank_correlation": _Spec(
        lambda a, b: _sanity.rank_correlation(a, b), _cases_rank_correlation,
        ("correlation",), ("(B,)",), ("a", "b"), (), _mistakes(_RANK_MISTAKES)),
    "deletion_curve": _Spec(
        lambda s, p, r, bg: _sanity.deletion_curve(s, p, r, bg), _cases_deletion_curve,
        ("curve",), ("(B, N + 1)",), ("score_fn", "patches", "ranking", "background"), (),
        _mistakes(_DELETION_MISTAKES)),
    "gradient_times_input": _Spec(
        lambda s, p: _sanity.gradient_times_input(s, p), _cases_gradient_times_input,
        ("map",), ("(B, N)",), ("score_fn", "patches"), (), _mistakes(_GRADIENT_MISTAKES)),
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
# Cases: the visible ones here, the hidden ones in the instructor's tree
# ---------------------------------------------------------------------------------------------

# Beside the package in the instructor's checkout (the package is installed from it in editable
# mode); absent from the student edition and from the grading sandbox.
HIDDEN_CASES_FILE = Path(__file__).resolve().parents[2] / "instructor" / "hidden_cases.py"
HIDDEN_CASES_ENV = "MEDSIGHT_HIDDEN_CASES"      # another location, e.g. for a grading server


class HiddenCasesMissing(LookupError):
    """The hidden cases are not on this machine (e.g. in the student edition)."""


def hidden_cases_file():
    return Path(os.environ.get(HIDDEN_CASES_ENV) or HIDDEN_CASES_FILE)


def hidden_cases(exercise_id):
    """The exercise's hidden cases, read from the instructor's `hidden_cases.py`."""
    path = hidden_cases_file()
    if not path.is_file():
        raise HiddenCasesMissing(f"the hidden cases are not on this machine ({path} is missing): "
                                 "they exist only in the instructor's copy of the course")
    module = _load_hidden_module(str(path), path.stat().st_mtime_ns)
    if exercise_id not in module.HIDDEN:
        raise HiddenCasesMissing(f"{path} has no hidden cases for {exercise_id}")
    return module.HIDDEN[exercise_id]()


@functools.lru_cache(maxsize=4)
def _load_hidden_module(path, mtime):
    spec = importlib.util.spec_from_file_location("medsight_hidden_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(exercise_id, suite):
    """The cases of one suite ("visible" or "hidden") of an exercise."""
    return _SPECS[exercise_id].cases() if suite == "visible" else hidden_cases(exercise_id)


# ---------------------------------------------------------------------------------------------
# What one call of the student's function gave: in this process (check) or from the sandbox
# ---------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """One call of the student's function on one case, as data. `problem` (in words) when the
    call did not return; else the output, the arguments as they are after the call, and, for a
    gradient case, the gradients of `projection(expected)` w.r.t. the `spec.grad_args` tensors
    (None where no gradient flowed)."""
    problem: str | None = None
    out: object = None
    args_after: tuple = ()
    grads: list | None = None


def projection(expected):
    """The fixed random weights, one per output, whose weighted sum's gradient is compared."""
    g = torch.Generator().manual_seed(1234)
    outs = expected if isinstance(expected, (tuple, list)) else (expected,)
    return [torch.randn(o.numel(), generator=g) for o in outs]


def grad_inputs(spec, args):
    """The tensors whose gradients are compared: the float tensors of the `grad_args`."""
    return [t for i in spec.grad_args for t in tensors(args[i]) if t.is_floating_point()]


def timeout_problem(seconds, label):
    return f"did not finish within {seconds:g} s on {label}: an infinite loop?"


def raised_problem(kind, message, label):
    return f"your function raised {kind} on {label}: {message}"


NOT_IMPLEMENTED = "not implemented yet: replace `raise NotImplementedError` with your code"


def _not_implemented(err, fn):
    """The stub message, or which other exercise's stub the answer called."""
    stub = re.fullmatch(r"(\w+): your code here", str(err))
    other = next((e for i, e in EXERCISES.items() if stub and stub.group(1) in (i, e.function)),
                 None)
    if other is not None and other.function != getattr(fn, "__name__", None):
        return (f"your function calls {other.function}, which is not implemented yet: "
                "do that exercise first")
    return NOT_IMPLEMENTED


# -- in this process: the student's own check() ------------------------------------------------

class ReferenceCalled(Exception):
    """Raised by the package's exercise functions while a student's answer is being checked."""


class _TimeUp(BaseException):
    """A BaseException, so that a student's `except Exception` cannot swallow it."""


# The package's implementations of the exercises: switched off while check() runs an answer in
# the student's own kernel. (The grader needs no such thing: its sandbox has no package.)
_GUARDED = [(_data, "finding_masks"), (_model, "multi_head_attention"), (_model, "causal_mask"),
            (_model, "cached_attention_step"),
            (_loss, "shifted_cross_entropy"), (_loss, "grounding_loss"),
            (_loss, "attention_entropy"), (_loss, "compute_loss"),
            (_metrics, "pointing_game_and_mass"), (_baselines, "patch_norm_map"),
            (_sanity, "rank_correlation"), (_sanity, "deletion_curve"),
            (_sanity, "gradient_times_input"), (_rendered_metrics, "spatial_precision"),
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


@torch.enable_grad()   # whatever the notebook did to autograd, the gradient checks must see it
def call_in_process(spec, fn, case):
    """Run the student's function on `case` here, printing silenced and the package's exercise
    functions switched off; the `Outcome`."""
    args = _clone(case.args)
    inputs = grad_inputs(spec, args) if case.grad else []
    for t in inputs:
        t.requires_grad_()
    del _called_references[:]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings(), _references_switched_off(), _time_limit(TIME_LIMIT_S):
            warnings.simplefilter("ignore")
            out = fn(*args, **case.kwargs)
    except _TimeUp:
        return Outcome(timeout_problem(TIME_LIMIT_S, case.label))
    except (Exception, SystemExit) as err:  # the student's error is the verdict, never a crash
        if not _called_references:
            if isinstance(err, NotImplementedError):
                return Outcome(_not_implemented(err, fn))
            return Outcome(raised_problem(type(err).__name__, _first_line(err), case.label))
    if _called_references:
        return Outcome(f"your answer calls medsight_lab's own {_called_references[0]} — write it "
                       "yourself")
    grads = None
    if case.grad:
        expected = spec.reference(*_clone(case.args), **case.kwargs)
        grads = projected_gradients(out, inputs, projection(expected))
    return Outcome(None, out, args, grads)


# ---------------------------------------------------------------------------------------------
# Judging one outcome: the same code for check() and for the grader
# ---------------------------------------------------------------------------------------------

def _clone(x, requires_grad=False):
    if isinstance(x, PatchScore):     # a copy, so that a change the answer makes to it shows
        return PatchScore(*(t.detach().clone() for t in tensors(x)), x.square)
    if isinstance(x, torch.Tensor):
        x = x.detach().clone()
        return x.requires_grad_() if requires_grad and x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(item, requires_grad) for item in x)
    return x


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
    name = x.type_name if isinstance(x, Opaque) else type(x).__name__
    return "None" if x is None else f"{'an' if name[:1] in tuple('aeiou') else 'a'} {name}"


def _first_line(err):
    text = str(err).strip().splitlines()
    return (text[0][:200] if text else "").strip()


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
    if not all(torch.isfinite(t).all() for t in tensors(out)):
        return f"returned NaN or inf on {case.label}: a log of 0 or a division by 0?"
    if len(spec.outputs) > 1:
        wrong = next(n for n, o, e in zip(spec.outputs, out, expected) if not _matches(o, e))
        return f"wrong {wrong} on {case.label}"
    return f"wrong value on {case.label}"


def _gradient_problem(spec, grads, case):
    """Compare the student's gradients (of the projection) with the reference's."""
    ref_args = _clone(case.args)
    inputs = grad_inputs(spec, ref_args)
    for t in inputs:
        t.requires_grad_()
    expected = spec.reference(*ref_args, **case.kwargs)
    wanted = projected_gradients(expected, inputs, projection(expected))
    names = [spec.inputs[i] for i in spec.grad_args for t in tensors(case.args[i])
             if t.is_floating_point()]
    grads = list(grads or []) + [None] * (len(wanted) - len(grads or []))
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


@torch.enable_grad()   # the reference's gradients, whatever the notebook did to autograd
def judge(spec, case, outcome):
    """None if `outcome` is right on `case`, else the problem in words."""
    if outcome.problem:
        return outcome.problem
    out = outcome.out
    problem = _structure_problem(out, spec)
    if problem:
        return problem
    expected = spec.reference(*_clone(case.args), **case.kwargs)
    if not _matches(out, expected):
        return _value_problem(spec, out, expected, case)
    after = outcome.args_after
    for name, given, original in zip(spec.inputs, after, case.args):
        given, original = tensors(given), tensors(original)
        if len(given) != len(original) or not all(
                isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and torch.equal(a, b) for a, b in zip(given, original)):
            return (f"your function changes its input ({name}) in place: use out-of-place "
                    "operations (masked_fill, not masked_fill_; x = x + y, not x += y)")
    return _gradient_problem(spec, outcome.grads, case) if case.grad else None


def suite_title(exercise_id, suite):
    return exercise_id + (" (hidden tests)" if suite == "hidden" else "")


def judge_suite(exercise_id, suite, suite_cases, outcome_of):
    """The verdict on one suite: the first case whose outcome (`outcome_of(case)`, asked for
    lazily, in order) is wrong, or a pass."""
    spec, title = _SPECS[exercise_id], suite_title(exercise_id, suite)
    for case in suite_cases:
        try:
            problem = judge(spec, case, outcome_of(case))
        except (Exception, SystemExit) as err:  # e.g. a returned object that breaks torch
            problem = f"your result could not be checked ({type(err).__name__}: " \
                      f"{_first_line(err)}) (on {case.label})"
        if problem:
            end = "" if problem.endswith(("?", ".")) else "."
            return CheckResult(False, f"✘ {title}: {problem}{end}")
    return CheckResult(True, f"✔ {title}: correct on {len(suite_cases)} cases.")


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
    title = suite_title(exercise_id, suite)
    if not callable(fn):
        return CheckResult(False, f"✘ {title}: expected a function, got {_describe(fn)} — did "
                                  "you run the cell that defines it?")
    try:
        suite_cases = cases(exercise_id, suite)
    except HiddenCasesMissing as err:
        return CheckResult(False, f"✘ {title}: {err}")
    spec = _SPECS[exercise_id]
    return judge_suite(exercise_id, suite, suite_cases,
                       lambda case: call_in_process(spec, fn, case))


RAISE_ENV = "MEDSIGHT_CHECKS_RAISE"
NBGRADER_ENV = "NBGRADER_EXECUTION"      # set by nbgrader in the kernels of validate and autograde
RAISE_ENVS = (RAISE_ENV, NBGRADER_ENV)   # what a grader that reads verdict lines must unset


def _raises_on_failure():
    """nbgrader scores a grade cell by whether it raises, not by what it prints: a failed check
    raises when nbgrader runs the notebook, or when MEDSIGHT_CHECKS_RAISE=1 asks for it."""
    return os.environ.get(RAISE_ENV) == "1" or bool(os.environ.get(NBGRADER_ENV))


def check(exercise_id, fn, suite="visible"):
    """Print the verdict line for `fn` on exercise `exercise_id`. Returns None, so that a
    notebook cell shows only the printed line. Under nbgrader (its NBGRADER_EXECUTION variable)
    or with MEDSIGHT_CHECKS_RAISE=1, a failed check also raises AssertionError: nbgrader scores a
    grade cell by whether it raises, not by what it prints. `suite="hidden"` works only where the
    instructor's hidden cases are (HIDDEN_CASES_FILE)."""
    result = run_check(exercise_id, fn, suite)
    refused = _refusal(fn) if result.passed else None
    if refused:
        result = CheckResult(False, f"✘ {suite_title(exercise_id, suite)}: right, but the grader "
                                    f"will refuse this answer: {refused}.")
    print(result.message, flush=True)
    if not result.passed and _raises_on_failure():
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
