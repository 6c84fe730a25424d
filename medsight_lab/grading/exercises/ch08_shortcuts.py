"""Chapter 8 (08_shortcuts): the exercise `attention_on_mark`, as one record (see
ch01_dataset.py for what a record holds).
"""

from __future__ import annotations

import torch

from ... import shortcuts as _shortcuts
from .record import Case, Exercise


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


ATTENTION_ON_MARK = Exercise(
    id="attention_on_mark", chapter="08_shortcuts", title="Attention on the mark", points=2,
    cases=_cases_attention_on_mark, hidden="_hidden_attention_on_mark",
    reference=lambda a, m, w: _shortcuts.attention_on_mark(a, m, w),
    guarded=((_shortcuts, "attention_on_mark"),),
    outputs=("on_words", "before"), shapes=("a scalar", "a scalar"),
    inputs=("attn", "mark", "words"), grad_args=(0,), mistakes=_MARK_MISTAKES)
