"""Chapter 5 (05_evaluation): the exercise `pointing_game_and_mass`, as one record (see
ch01_dataset.py for what a record holds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import metrics as _metrics
from .record import Case, Exercise


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


POINTING_GAME_AND_MASS = Exercise(
    id="pointing_game_and_mass", chapter="05_evaluation",
    title="Pointing game and attention mass", points=2,
    cases=_cases_pointing_game_and_mass, hidden="_hidden_pointing_game_and_mass",
    reference=lambda r, l: _metrics.pointing_game_and_mass(r, l),
    guarded=((_metrics, "pointing_game_and_mass"),),
    outputs=("pointing game", "attention mass"), shapes=("a scalar", "a scalar"),
    inputs=("rows", "lesions"), grad_args=(), mistakes=_POINTING_MISTAKES)
