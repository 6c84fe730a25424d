"""Chapter 1 (01_dataset): the exercise `finding_masks`, as one record.

The record (`FINDING_MASKS`) holds the visible cases, the reference, the known mistakes and the
package function switched off while `check()` runs an answer; the hidden cases are the
instructor's (its `hidden` names their function in `instructor/hidden_cases.py`).
"""

from __future__ import annotations

import torch

from ... import data as _data
from .record import Case, Exercise


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


def _cases_finding_masks():
    return [Case("the course's reports (6 images)", _mask_inputs(0, B=6, T=20, reports=True)),
            Case("random reports with 5 grounded words", _mask_inputs(1)),
            Case("a batch with two normal images", _mask_inputs(2, normal_rows=(1, 3)))]


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


FINDING_MASKS = Exercise(
    id="finding_masks", chapter="01_dataset", title="Finding masks", points=2,
    cases=_cases_finding_masks, hidden="_hidden_finding_masks",
    reference=lambda t, l, g: _data.finding_masks(t, l, g),
    guarded=((_data, "finding_masks"),),
    outputs=("mask",), shapes=("(B, T, N)",), inputs=("token_ids", "lesion_mask", "grounded_ids"),
    grad_args=(), mistakes=_FINDING_MASK_MISTAKES)
