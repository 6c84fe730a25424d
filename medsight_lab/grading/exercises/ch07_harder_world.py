"""Chapter 7 (07_harder_world): the exercise `spatial_precision`, as one record (see
ch01_dataset.py for what a record holds).
"""

from __future__ import annotations

import torch

from ... import rendered_metrics as _rendered_metrics
from .record import Case, Exercise


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


SPATIAL_PRECISION = Exercise(
    id="spatial_precision", chapter="07_harder_world", title="Grounded spatial precision",
    points=2, cases=_cases_spatial_precision, hidden="_hidden_spatial_precision",
    reference=lambda r, m, s, threshold=0.5: _rendered_metrics.spatial_precision(r, m, s,
                                                                                threshold),
    guarded=((_rendered_metrics, "spatial_precision"),),
    outputs=("spatial precision",), shapes=("a scalar",), inputs=("rows", "masks", "sentence"),
    grad_args=(), mistakes=_SPATIAL_MISTAKES)
