"""Sanity checks for attention maps: do they show what the model *uses*, or only what it was
trained to show?

A heatmap that lands on the lesion is not, by itself, evidence that the report depends on the
lesion (see the book page "Attention is not (by itself) an explanation"). Each function here puts
one question to a trained model and answers it with numbers; each runs in seconds on a CPU.

- `randomise_cross_attention` / `cascading_randomisation` — *model randomisation*
  (Adebayo et al., 2018): re-initialise the cross-attention queries and keys, from the top layer
  down, and ask whether the maps still point at the lesion and whether the reports survive.
- `deletion_test` — replace the patches the finding words attend to most with background noise,
  and compare with replacing as many random patches outside the lesion, or the lesion itself.
  If the map marks evidence the model uses, deleting the attended patches should hurt most.
- `wrong_region_dataset` — train the attention onto the wrong place: the grounding masks point
  at the lesion shifted by half the grid. If the reports stay right while the maps point
  elsewhere, the maps show what they were trained to show, not what the model used.
- `shuffle_reports` — *label randomisation*: each image gets another image's report, its lesion
  mask stays; the grounding loss can still teach the attention to find the lesion.

Scores come from the last layer's cross-attention averaged over heads, on the words that name a
finding, its side or size (the map the grounding loss supervises), as everywhere in the course.
This module imports only data, model, generation and metrics; it draws nothing.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.utils.data import Subset

from .data import SyntheticRadiologyDataset, as_batch
from .metrics import finding_accuracy, free_running, grounded_token_ids, grounding_scores
from .model import GroundedReportVLM, eval_mode

# The dataset's background: every patch starts as N(0, 0.3^2) noise before a lesion brightens it
# (see SyntheticRadiologyDataset). Deleted patches are replaced by fresh draws of the same noise.
BACKGROUND_STD = 0.3


# -- small shared pieces -------------------------------------------------------------------------
def _check_model(model):
    if not isinstance(model, GroundedReportVLM):
        raise TypeError(f"model must be a GroundedReportVLM, got {type(model).__name__}")


def _device(model):
    return next(model.parameters()).device


def _in_eval_mode(model, fn):
    with eval_mode(model):
        return fn()


# -- grounding of the true reports ---------------------------------------------------------------
@torch.no_grad()
def teacher_forced_grounding(model, dataset, region_shift=0) -> dict:
    """Grounding scores of the finding words of the *true* reports (teacher-forced), as
    `metrics.grounding_scores` computes them.

    Teacher forcing puts the same words in front of every model, so the maps of a trained, a
    randomised and a mis-trained model can be compared word for word even when their own reports
    differ. `region_shift` scores against the lesion rolled by that many patches (the region a
    model from `wrong_region_dataset(..., shift=region_shift)` was trained to look at); 0 scores
    against the lesion itself.
    """
    _check_model(model)

    def run():
        data = as_batch(dataset, _device(model))
        _, attn = model(data["patches"], data["token_ids"])
        region = torch.roll(data["lesion_mask"], region_shift, dims=-1)
        return grounding_scores(data["token_ids"], attn[-1].mean(1), region)

    return _in_eval_mode(model, run)


# -- model randomisation -------------------------------------------------------------------------
def _layer_indices(layers, num_layers):
    if layers is None:
        return list(range(num_layers))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TypeError(f"layers must be integers, got {layer!r}")
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"layer {layer} does not exist: the model has {num_layers} layers "
                             f"(indices 0..{num_layers - 1}, or negative from the top)")
        out.append(layer % num_layers)
    return sorted(set(out))


def randomise_cross_attention(model, layers=None, seed=0):
    """A copy of `model` whose cross-attention query and key projections in `layers` (indices,
    negative counting from the top; default: every layer) are re-initialised as PyTorch
    initialises an `nn.Linear` (uniform in +-1/sqrt(fan_in)). Values, outputs and everything else
    keep their trained weights; `model` itself is not changed.

    The new weights are drawn on the CPU from a generator seeded with `seed`, so they are the same
    on every device and the global random state is untouched.
    """
    _check_model(model)
    indices = _layer_indices(layers, len(model.blocks))
    randomised = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i in indices:
            attention = randomised.blocks[i].cross_attn
            for linear in (attention.q, attention.k):
                bound = 1 / math.sqrt(linear.in_features)
                for param in (linear.weight, linear.bias):
                    fresh = (torch.rand(param.shape, generator=gen) * 2 - 1) * bound
                    param.copy_(fresh.to(param.device, param.dtype))
    return randomised


def cascading_randomisation(model, dataset, seed=0) -> list:
    """Model randomisation from the top layer down (Adebayo et al., 2018).

    Returns one dict per step — nothing randomised, then the top layer's cross-attention queries
    and keys, then the top two layers', ... — with "randomised" (a label), "pointing_game" and
    "attention_mass" of the teacher-forced maps of the finding words, their chance level, and
    "finding_accuracy" of the free-running reports. Maps that still point at the lesion after
    randomisation describe the input (the bright patches), not what the model learned.
    """
    _check_model(model)
    n = len(model.blocks)
    data = as_batch(dataset, _device(model))
    rows = []
    for depth in range(n + 1):
        layers = list(range(n - depth, n))
        candidate = randomise_cross_attention(model, layers, seed) if layers else model
        scores = teacher_forced_grounding(candidate, dataset)
        _, _, labels = _in_eval_mode(candidate,
                                     lambda: free_running(candidate, data["patches"]))
        rows.append({
            "randomised": ("none" if not layers else
                           "layer " + ", ".join(str(i) for i in reversed(layers))),
            "pointing_game": scores["pointing_game"],
            "attention_mass": scores["attention_mass"],
            "chance": scores["pointing_game_chance"],
            "finding_accuracy": finding_accuracy(labels, data["finding_name"]),
        })
    return rows


# -- deletion of the attended patches ------------------------------------------------------------
def _first_k(scores, k):
    """(B, N) bool: True at the k[b] highest scores of row b (ties: lower patch index first)."""
    order = scores.argsort(dim=-1, descending=True, stable=True)             # (B, N)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device)
                  .expand_as(order).contiguous())
    return rank < k[:, None]


@torch.no_grad()
def deletion_test(model, dataset, k=None, seed=0) -> dict:
    """Replace patches with background noise and see whether the reports survive.

    For every image with a lesion, the model writes its report; the finding words' attention
    (last layer, mean of heads; every read position if the report names no finding) ranks the
    patches. Four versions of each image are then reported on again:

    - "original": unchanged;
    - "attended": its k most-attended patches replaced by noise;
    - "random": k random patches *outside* the lesion replaced (the control);
    - "lesion": k random lesion patches replaced (all of them when k >= the lesion's size).

    k=None uses the image's lesion size (2 to 4 patches). The noise is the dataset's background
    (N(0, 0.3^2)), drawn from a generator seeded with `seed`, the same draws for every version.
    Returns {"n_images", "k", "attended_in_lesion" (fraction of the deleted attended patches that
    lie in the lesion), and the finding accuracy of each version: "original", "attended",
    "random", "lesion"}.
    """
    _check_model(model)
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"k must be a positive integer or None (the lesion's size), got {k!r}")

    def run():
        device = _device(model)
        data = as_batch(dataset, device)
        keep = data["lesion_mask"].sum(-1) > 0
        if not keep.any():
            raise ValueError("the dataset has no image with a lesion: nothing to delete")
        patches, lesion = data["patches"][keep], data["lesion_mask"][keep].bool()
        findings = [f for f, kept in zip(data["finding_name"], keep.tolist()) if kept]
        B, N, d = patches.shape
        n_delete = (lesion.sum(-1) if k is None else torch.full((B,), min(k, N), device=device))

        ids, attn, labels = free_running(model, patches)
        words = torch.isin(ids, grounded_token_ids(device)) & (attn.sum(-1) > 0)   # (B, T)
        read = attn.sum(-1) > 0
        use = torch.where(words.any(-1, keepdim=True), words, read).float()    # (B, T)
        attended = (attn * use[..., None]).sum(1)                              # (B, N)

        gen = torch.Generator().manual_seed(seed)
        noise = (torch.randn(B, N, d, generator=gen) * BACKGROUND_STD).to(device)
        coin = torch.rand(B, N, generator=gen).to(device)                      # random ranking
        masks = {
            "attended": _first_k(attended, n_delete),
            "random": _first_k(coin.masked_fill(lesion, -1.0), n_delete) & ~lesion,
            "lesion": _first_k(coin.masked_fill(~lesion, -1.0), n_delete) & lesion,
        }
        result = {"n_images": B, "k": k, "original": finding_accuracy(labels, findings)}
        for name, mask in masks.items():
            _, _, new_labels = free_running(model, torch.where(mask[..., None], noise,
                                                                     patches))
            result[name] = finding_accuracy(new_labels, findings)
        chosen = masks["attended"]
        result["attended_in_lesion"] = (chosen & lesion).sum().item() / chosen.sum().item()
        return result

    return _in_eval_mode(model, run)


# -- datasets with deliberately wrong supervision ------------------------------------------------
def _base_and_indices(dataset):
    if isinstance(dataset, Subset):
        return dataset.dataset, dataset.indices
    return dataset, None


def _rebuilt(dataset, change):
    """A shallow copy of the SyntheticRadiologyDataset behind `dataset` (which may be a Subset of
    one) with `change(copy)` applied; the original keeps its tensors."""
    base, indices = _base_and_indices(dataset)
    if not isinstance(base, SyntheticRadiologyDataset):
        raise TypeError("dataset must be a SyntheticRadiologyDataset or a Subset of one, "
                        f"got {type(base).__name__}")
    new = copy.copy(base)
    change(new)
    return new if indices is None else Subset(new, indices)


def wrong_region_dataset(dataset, shift=None):
    """The same images and reports, but every grounding mask points at the lesion rolled by
    `shift` patches (default: half the grid, i.e. two rows down on the 4 x 4 grid, wrapping round),
    a region that shares no patch with the lesion. `lesion_mask` still marks the true lesion, so
    evaluation scores against the truth; `teacher_forced_grounding(..., region_shift=shift)`
    scores against the region the model was trained to look at.
    """
    base, _ = _base_and_indices(dataset)
    n = getattr(base, "n_patches", None)
    if n is None:
        raise TypeError("dataset must be a SyntheticRadiologyDataset or a Subset of one")
    shift = n // 2 if shift is None else shift
    if not isinstance(shift, int) or isinstance(shift, bool):
        raise TypeError(f"shift must be an integer number of patches, got {shift!r}")
    for name_lesion in base.LESIONS.values():
        patches = {p for p, _, _ in name_lesion}
        if patches & {(p + shift) % n for p in patches}:
            raise ValueError(f"shift={shift} moves the lesion on patches {sorted(patches)} "
                             "(partly) onto itself: choose a shift whose region is disjoint "
                             f"from every lesion, e.g. {n // 2}")

    def change(new):
        grounded = (new.finding_mask.sum(-1) > 0).float()                       # (n, T)
        new.finding_mask = grounded[:, :, None] * torch.roll(new.lesion_mask, shift,
                                                             dims=-1)[:, None, :]
    return _rebuilt(dataset, change)


def shuffle_reports(dataset, seed=0):
    """Label randomisation: the reports are permuted across images (a generator seeded with
    `seed`), while each image keeps its patches and its lesion mask. The grounding masks are
    rebuilt from the new report's finding words and the image's own lesion, so the grounding loss
    still points the attention at the lesion while the text no longer matches the image.
    `finding_idx` / `finding_name` keep the image's true finding (what evaluation scores against).
    """
    def change(new):
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(new.n_samples, generator=gen)
        new.token_ids = new.token_ids[perm]
        grounded = torch.isin(new.token_ids, new.grounded_ids).float()          # (n, T)
        new.finding_mask = grounded[:, :, None] * new.lesion_mask[:, None, :]
    return _rebuilt(dataset, change)


__all__ = ["BACKGROUND_STD", "cascading_randomisation", "deletion_test",
           "randomise_cross_attention", "shuffle_reports", "teacher_forced_grounding",
           "wrong_region_dataset"]
