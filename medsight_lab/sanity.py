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

Chapter 6 ("Testing explanations") adds tests that compare the map with other answers to the
question "which patches did the finding words depend on?":

- `rank_correlation`, `model_units`, `randomise_units`, `model_randomisation` — model
  randomisation as Adebayo et al. do it: re-initialise the *whole* model block by block from the
  top (cascading) or one block at a time (independent), and measure by Spearman rank correlation
  how much the scored map changes, beside the correlation of maps of unrelated images;
- `finding_log_prob`, `deletion_curve`, `insertion_curve`, `curve_area` — delete (or insert) the
  patches in the order a map ranks them, k = 0..N, and follow the probability of the true finding
  words;
- `gradient_times_input`, `integrated_gradients` — gradient-based importance of each patch for
  the finding words' log-probability, to set beside attention (Jain & Wallace, 2019);
- `finding_maps`, `row_grounding` — the map of the row that *reads* a finding word (supervised)
  against the row before it, which *predicts* it, and the unsupervised rows.
"""

from __future__ import annotations

import copy
import math

import torch
from torch.utils.data import Subset

from .baselines import patch_norm_map
from .data import SyntheticRadiologyDataset, as_batch
from .metrics import (finding_accuracy, free_running, grounded_token_ids, grounding_scores,
                      pointing_game_and_mass)
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

    with eval_mode(model):
        data = as_batch(dataset, _device(model))
        _, attn = model(data["patches"], data["token_ids"])
        region = torch.roll(data["lesion_mask"], region_shift, dims=-1)
        return grounding_scores(data["token_ids"], attn[-1].mean(1), region)


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
        with eval_mode(candidate):
            _, _, labels = free_running(candidate, data["patches"])
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

    with eval_mode(model):
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





# == Chapter 6: testing explanations ============================================================

def _check_rows(name, x, dims=2):
    if not isinstance(x, torch.Tensor) or x.dim() != dims or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        spelt = "(B, N)" if dims == 2 else "(B, N, D)"
        raise ValueError(f"{name} must be a floating-point tensor of shape {spelt}, got {shape}")


def _average_ranks(x):
    """(B, N) -> (B, N) ranks 0..N-1 along the last axis; tied values share their mean rank."""
    below = (x[..., :, None] > x[..., None, :]).sum(-1).to(x.dtype)
    ties = (x[..., :, None] == x[..., None, :]).sum(-1).to(x.dtype)
    return below + (ties - 1) / 2


def rank_correlation(a, b):
    """Spearman's rank correlation of each row of `a` with the same row of `b`: (B, N), (B, N)
    -> (B,), the Pearson correlation of the rows' ranks (the chapter 6 exercise's reference).

    1 means the two maps order the patches the same way, -1 the reverse, 0 no relation. Tied
    values share their mean rank (a one-hot map has 15 ties); a row whose values are all equal has
    no order, and its correlation is NaN.
    """
    _check_rows("a", a)
    _check_rows("b", b)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (B, N), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    ra, rb = _average_ranks(a.double()), _average_ranks(b.double())
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return ((ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))).to(a.dtype)


# -- the map of the finding words, and their probability, on the true reports ---------------
def _finding_positions(token_ids):
    """(B, T) bool: the positions that hold a finding word (GROUNDED_WORDS)."""
    return torch.isin(token_ids, grounded_token_ids(token_ids.device))


ROWS = ("read", "predict", "other")


def finding_maps(model, patches, token_ids, row="read", layer=-1):
    """(B, N): the head-averaged cross-attention of layer `layer`, averaged over the rows of the
    finding words of the true report (teacher-forced).

    row="read": the rows at the finding words' positions, the steps that *read* them (the map the
    grounding loss supervises, and the one every grounding score in the course uses);
    row="predict": the rows one position earlier, the steps that *predict* them;
    row="other": every other row of the report (never supervised), <bos> to the last word.
    A report with no finding word gets a row of zeros.
    """
    if row not in ROWS:
        raise ValueError(f"row must be one of {ROWS}, got {row!r}")
    _check_model(model)
    with torch.no_grad(), eval_mode(model):
        _, attn = model(patches, token_ids)
    maps = attn[layer].mean(1)                                                # (B, T, N)
    words = _finding_positions(token_ids)
    if row == "predict":
        words = torch.roll(words, -1, dims=1)
        words[:, -1] = False
    elif row == "other":
        read = token_ids != model.config.pad_id
        predict = torch.roll(words, -1, dims=1)
        predict[:, -1] = False
        words = read & ~words & ~predict
    weight = words.to(maps.dtype)
    return (maps * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp(min=1)


def finding_log_prob(model, patches, token_ids):
    """(B,): the summed log-probability of the finding words of the true report, each predicted
    from the image and the true words before it (teacher-forced). Differentiable with respect to
    `patches`: the score that the gradients, deletion and insertion curves follow."""
    _check_model(model)
    with eval_mode(model):
        logits, _ = model(patches, token_ids)
    logp = logits[:, :-1].log_softmax(-1).gather(-1, token_ids[:, 1:, None]).squeeze(-1)
    return (logp * _finding_positions(token_ids[:, 1:])).sum(-1)


def finding_probability(model, token_ids):
    """A score function for the curves: patches (B, N, D) -> (B,) the probability of the true
    finding words, exp(mean log-probability per word), between 0 and 1."""
    n_words = _finding_positions(token_ids[:, 1:]).sum(-1).clamp(min=1)

    @torch.no_grad()
    def score(patches):
        return (finding_log_prob(model, patches, token_ids) / n_words).exp()
    return score


# -- deletion and insertion curves ---------------------------------------------------------
def deletion_curve(score_fn, patches, ranking, background):
    """The score as the patches are deleted in the order `ranking` gives them (the chapter 6
    exercise's reference).

    score_fn maps patches (B, N, D) to one score per image (B,); ranking (B, N) ranks each image's
    patches (the highest first: an attention map, a gradient map, random numbers); background
    (B, N, D) replaces a deleted patch. Returns (B, N + 1): column k is the score after the k
    highest-ranked patches of each image are replaced by background (column 0: the intact image,
    column N: all background). Ties in `ranking` go to the lower patch index first.
    """
    _check_rows("patches", patches, 3)
    _check_rows("ranking", ranking)
    if ranking.shape != patches.shape[:2] or background.shape != patches.shape:
        raise ValueError(f"ranking must be (B, N) = {tuple(patches.shape[:2])} and background "
                         f"(B, N, D) = {tuple(patches.shape)}, got {tuple(ranking.shape)} and "
                         f"{tuple(background.shape)}")
    order = ranking.argsort(dim=-1, descending=True, stable=True)
    rank = order.argsort(-1)                                   # rank[b, n]: 0 = first deleted
    scores = [score_fn(torch.where((rank < k)[..., None], background, patches))
              for k in range(patches.shape[1] + 1)]
    return torch.stack(scores, -1)


def insertion_curve(score_fn, patches, ranking, background):
    """The mirror image: start from the background and put the patches back in the order of
    `ranking`. Column k of the (B, N + 1) result is the score with the k highest-ranked patches
    restored. (Inserting into the background is deleting from it, with the roles swapped.)"""
    return deletion_curve(score_fn, background, ranking, patches)


def curve_area(curve):
    """(..., K + 1) -> (...): the area under a curve over k = 0..K, with k scaled to [0, 1]
    (trapezoid rule). A deletion curve that falls fast has a small area; an insertion curve that
    rises fast, a large one."""
    if not isinstance(curve, torch.Tensor) or curve.shape[-1] < 2:
        raise ValueError("curve must be a tensor (..., K + 1) with at least two points")
    return (curve[..., 1:] + curve[..., :-1]).mean(-1) / 2


# -- gradients -------------------------------------------------------------------------------
def gradient_times_input(score_fn, patches):
    """(B, N): for each patch, the sum over its features of feature x d score / d feature
    (the chapter 6 exercise's reference). score_fn maps (B, N, D) to (B,), one score per image,
    each depending on its own image only, so the gradient of their sum gives every image's own."""
    _check_rows("patches", patches, 3)
    with torch.enable_grad():
        x = patches.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(score_fn(x).sum(), x)
    return (grad * x).sum(-1).detach()


def integrated_gradients(score_fn, patches, baseline, steps=16):
    """(B, N): integrated gradients (Sundararajan et al., 2017) from `baseline` (B, N, D) to
    `patches`, summed over each patch's features: (x - x0) times the mean gradient along the
    straight path, by the midpoint rule with `steps` points. The maps of all patches add up to
    about score(patches) - score(baseline)."""
    _check_rows("patches", patches, 3)
    if baseline.shape != patches.shape:
        raise ValueError(f"baseline must have the shape of patches {tuple(patches.shape)}, "
                         f"got {tuple(baseline.shape)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    total = torch.zeros_like(patches)
    with torch.enable_grad():
        for i in range(steps):
            alpha = (i + 0.5) / steps
            x = (baseline + alpha * (patches - baseline)).detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(score_fn(x).sum(), x)
            total += grad
    return ((patches - baseline) * total / steps).sum(-1).detach()


def background_like(patches, seed=0):
    """Fresh background noise of the dataset, N(0, 0.3^2), shaped like `patches`, drawn on the
    CPU from a generator seeded with `seed` (the same on every device)."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(patches.shape, generator=gen) * BACKGROUND_STD).to(patches.device,
                                                                           patches.dtype)


def _lesion_batch(model, dataset):
    data = as_batch(dataset, _device(model))
    keep = data["lesion_mask"].sum(-1) > 0
    if not keep.any():
        raise ValueError("the dataset has no image with a lesion: nothing to explain")
    return {"patches": data["patches"][keep], "token_ids": data["token_ids"][keep],
            "lesion_mask": data["lesion_mask"][keep],
            "finding_name": [f for f, k in zip(data["finding_name"], keep.tolist()) if k]}


def explanation_maps(model, dataset, seed=0, ig_steps=16):
    """The maps of chapter 6, on the images of `dataset` that have a lesion, with their true
    reports: {"attention" (the supervised, reading rows), "attention (predicting row)",
    "gradient x input", "integrated gradients" (from the background), "input only" (softmax of
    the patch norms), "random"}, each (B, N); plus "patches", "token_ids", "lesion_mask",
    "finding_name" and "background" (the noise that deletes a patch)."""
    data = _lesion_batch(model, dataset)
    patches, tokens = data["patches"], data["token_ids"]
    background = background_like(patches, seed)
    log_prob = lambda x: finding_log_prob(model, x, tokens)                  # noqa: E731
    gen = torch.Generator().manual_seed(seed + 1)
    maps = {
        "attention": finding_maps(model, patches, tokens, "read"),
        "attention (predicting row)": finding_maps(model, patches, tokens, "predict"),
        "gradient x input": gradient_times_input(log_prob, patches),
        "integrated gradients": integrated_gradients(log_prob, patches, background, ig_steps),
        "input only": patch_norm_map(patches),
        "random": torch.rand(patches.shape[:2], generator=gen).to(patches.device),
    }
    return {**data, "maps": maps, "background": background}


def faithfulness(model, explained) -> dict:
    """Deletion and insertion curves of every map in `explained` (from `explanation_maps`).

    Returns {map name: {"deletion": (B, N + 1), "insertion": (B, N + 1), "deletion_area": (B,),
    "insertion_area": (B,)}}: the probability of the true finding words as patches are deleted
    from the image (or inserted into the background) in the map's order. A faithful map has a
    small deletion area and a large insertion area."""
    score = finding_probability(model, explained["token_ids"])
    out = {}
    for name, ranking in explained["maps"].items():
        deletion = deletion_curve(score, explained["patches"], ranking, explained["background"])
        insertion = insertion_curve(score, explained["patches"], ranking,
                                    explained["background"])
        out[name] = {"deletion": deletion, "insertion": insertion,
                     "deletion_area": curve_area(deletion),
                     "insertion_area": curve_area(insertion)}
    return out


# -- which row decides the word ---------------------------------------------------------------
@torch.no_grad()
def row_grounding(model, dataset, layer=-1) -> dict:
    """Pointing game and attention mass of the maps of the rows that read the finding words
    ("read", supervised), predict them ("predict": one position earlier) and of all other rows
    ("other"), on the true reports of the images with a lesion, for layer `layer`."""
    data = _lesion_batch(model, dataset)
    out = {}
    for row in ROWS:
        maps = finding_maps(model, data["patches"], data["token_ids"], row, layer)
        keep = maps.sum(-1) > 0
        pointing, mass = pointing_game_and_mass(maps[keep], data["lesion_mask"][keep])
        out[row] = {"pointing_game": pointing.item(), "attention_mass": mass.item()}
    out["chance"] = (data["lesion_mask"].sum(-1) / data["lesion_mask"].shape[-1]).mean().item()
    return out


# -- model randomisation of the whole model ----------------------------------------------------
def model_units(model) -> list:
    """The model's parts from the top (output) down, as (label, [modules]): the output head;
    then, for every block from the last, its MLP, its cross-attention and its self-attention
    (each with the layer norm in front of it); last the embeddings (tokens, positions, image
    projection, patch positions)."""
    _check_model(model)
    units = [("output head", [model.output_head])]
    for i in reversed(range(len(model.blocks))):
        block = model.blocks[i]
        units += [(f"block {i} MLP", [block.norm3, block.ffn]),
                  (f"block {i} cross-attention", [block.norm2, block.cross_attn]),
                  (f"block {i} self-attention", [block.norm1, block.self_attn])]
    embeddings = [model.token_embedding, model.pos_embedding, model.image_proj]
    if model.patch_embedding is not None:
        embeddings.append(model.patch_embedding)
    units.append(("embeddings", embeddings))
    return units


def randomise_units(model, labels, seed=0):
    """A copy of `model` whose units named in `labels` (see `model_units`) are re-initialised as
    PyTorch initialises them (`reset_parameters`: layer norms to 1 and 0). The draws are made on
    the CPU from the seed (the same on every device; the global random state is restored), and
    `model` is not changed."""
    _check_model(model)
    units = dict(model_units(model))
    unknown = [label for label in labels if label not in units]
    if unknown:
        raise ValueError(f"unknown unit(s) {unknown}: expected labels from model_units(model): "
                         f"{list(units)}")
    device = _device(model)
    randomised = copy.deepcopy(model).cpu()
    units = dict(model_units(randomised))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for label in labels:
            for module in units[label]:
                for sub in module.modules():
                    if hasattr(sub, "reset_parameters"):
                        sub.reset_parameters()
    return randomised.to(device)


def _unrelated_pairs(findings, seed):
    """For each image, the index of another image with a different finding (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(findings), generator=gen).tolist()
    pairs = []
    for i, finding in enumerate(findings):
        start = order.index(i)
        for j in order[start + 1:] + order[:start]:
            if findings[j] != finding:
                pairs.append(j)
                break
        else:
            raise ValueError("every image has the same finding: no unrelated image to compare")
    return torch.tensor(pairs)


def model_randomisation(model, dataset, mode="cascading", seed=0) -> dict:
    """Model randomisation (Adebayo et al., 2018) of the whole model, scored on the supervised
    map (last layer, mean of heads, rows reading the finding words of the true reports).

    mode="cascading": step k re-initialises the top k units of `model_units` (output head first,
    embeddings last); mode="independent": step k re-initialises unit k alone.
    Returns {"steps": [{"randomised", "rank_correlation" (mean over images of Spearman's rho
    against the trained map), "input_only_correlation" (rho against softmax of the patch norms),
    "pointing_game", "attention_mass"}], "trained": the trained map's scores,
    "unrelated_images": mean rho between the trained maps of images with different findings (the
    level at which a map says nothing about its own image), "chance"}.
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    data = _lesion_batch(model, dataset)
    patches, tokens, lesion = data["patches"], data["token_ids"], data["lesion_mask"]
    input_only = patch_norm_map(patches)

    def scores(candidate):
        maps = finding_maps(candidate, patches, tokens)
        pointing, mass = pointing_game_and_mass(maps, lesion)
        return maps, {"pointing_game": pointing.item(), "attention_mass": mass.item()}

    trained_maps, trained = scores(model)
    labels = [label for label, _ in model_units(model)]
    steps = []
    for k, label in enumerate(labels):
        chosen = labels[:k + 1] if mode == "cascading" else [label]
        maps, row = scores(randomise_units(model, chosen, seed))
        steps.append({"randomised": label if mode == "independent" else "... " + label,
                      **row,
                      "rank_correlation": rank_correlation(trained_maps, maps).nanmean().item(),
                      "input_only_correlation":
                          rank_correlation(input_only, maps).nanmean().item()})
    pairs = _unrelated_pairs(data["finding_name"], seed).to(trained_maps.device)
    unrelated = rank_correlation(trained_maps, trained_maps[pairs]).nanmean().item()
    return {"steps": steps, "trained": trained, "unrelated_images": unrelated,
            "chance": (lesion.sum(-1) / lesion.shape[-1]).mean().item()}


def bootstrap_ci(values, n_resamples=2000, level=0.95, seed=0):
    """(low, high): the percentile bootstrap interval of the mean of `values` (e.g. one number
    per training seed), resampled with a seeded generator."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() < 2:
        raise ValueError("bootstrap_ci needs at least two values")
    gen = torch.Generator().manual_seed(seed)
    means = x[torch.randint(x.numel(), (n_resamples, x.numel()), generator=gen)].mean(1)
    tail = (1 - level) / 2
    return (torch.quantile(means, tail).item(), torch.quantile(means, 1 - tail).item())


__all__ = ["BACKGROUND_STD", "ROWS", "background_like", "bootstrap_ci", "cascading_randomisation",
           "curve_area", "deletion_curve", "deletion_test", "explanation_maps", "faithfulness",
           "finding_log_prob", "finding_maps", "finding_probability", "gradient_times_input",
           "insertion_curve", "integrated_gradients", "model_randomisation", "model_units",
           "randomise_cross_attention", "randomise_units", "rank_correlation", "row_grounding",
           "shuffle_reports", "teacher_forced_grounding", "wrong_region_dataset"]
