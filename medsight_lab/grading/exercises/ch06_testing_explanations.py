"""Chapter 6 (06_testing_explanations): the exercises `patch_norm_map`, `rank_correlation`,
`deletion_curve` and `gradient_times_input`, one record each (see ch01_dataset.py for what a
record holds).

A score function crosses the sandbox's boundary as data: every case's score is a PatchScore. The
mistakes are written out (the package's own functions are switched off while a check runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import baselines as _baselines
from ... import sanity as _sanity
from ..runner import PatchScore
from .record import Case, Exercise


def _explanation_patches(seed, B=3, N=6, D=5, bright=2):
    """(B, N, D) background-like patches, `bright` of them per image several times longer."""
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(B, N, D, generator=g) * 0.3
    for b in range(B):
        idx = torch.randperm(N, generator=g)[:bright]
        patches[b, idx] += torch.randn(len(idx), D, generator=g) * 2
    return patches


# -- patch_norm_map ----------------------------------------------------------------------------

def _cases_patch_norm_map():
    return [Case("3 images of 6 patches", (_explanation_patches(0),)),
            Case("2 images of 16 patches", (_explanation_patches(1, B=2, N=16, D=8),)),
            Case("4 images with no bright patch", (_explanation_patches(2, B=4, bright=0),))]


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


PATCH_NORM_MAP = Exercise(
    id="patch_norm_map", chapter="06_testing_explanations", title="The patch-norm baseline",
    points=1, cases=_cases_patch_norm_map, hidden="_hidden_patch_norm_map",
    reference=lambda p: _baselines.patch_norm_map(p),
    guarded=((_baselines, "patch_norm_map"),),
    outputs=("map",), shapes=("(B, N)",), inputs=("patches",), grad_args=(0,),
    mistakes=_PATCH_NORM_MISTAKES)


# -- rank_correlation --------------------------------------------------------------------------

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


RANK_CORRELATION = Exercise(
    id="rank_correlation", chapter="06_testing_explanations", title="Spearman's rank correlation",
    points=2, cases=_cases_rank_correlation, hidden="_hidden_rank_correlation",
    reference=lambda a, b: _sanity.rank_correlation(a, b),
    guarded=((_sanity, "rank_correlation"),),
    outputs=("correlation",), shapes=("(B,)",), inputs=("a", "b"), grad_args=(),
    mistakes=_RANK_MISTAKES)


# -- deletion_curve ----------------------------------------------------------------------------

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


DELETION_CURVE = Exercise(
    id="deletion_curve", chapter="06_testing_explanations", title="The deletion curve",
    points=2, cases=_cases_deletion_curve, hidden="_hidden_deletion_curve",
    reference=lambda s, p, r, bg: _sanity.deletion_curve(s, p, r, bg),
    guarded=((_sanity, "deletion_curve"),),
    outputs=("curve",), shapes=("(B, N + 1)",),
    inputs=("score_fn", "patches", "ranking", "background"), grad_args=(),
    mistakes=_DELETION_MISTAKES)


# -- gradient_times_input ----------------------------------------------------------------------

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


GRADIENT_TIMES_INPUT = Exercise(
    id="gradient_times_input", chapter="06_testing_explanations", title="Gradient × input",
    points=2, cases=_cases_gradient_times_input, hidden="_hidden_gradient_times_input",
    reference=lambda s, p: _sanity.gradient_times_input(s, p),
    guarded=((_sanity, "gradient_times_input"),),
    outputs=("map",), shapes=("(B, N)",), inputs=("score_fn", "patches"), grad_args=(),
    mistakes=_GRADIENT_MISTAKES)
