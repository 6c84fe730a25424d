"""Maps that need no model: the baselines every grounding score is read against.

A grounding score means something only where it beats a map that could have been drawn without
the model (COURSE_DESIGN, "What the course measures"):

- `uniform_map`: the same weight on every patch (the chance level of the attention mass; the
  "uniform attention" baseline of Wiegreffe & Pinter, 2019);
- `brightest_patch_map`: all weight on the patch with the largest norm, the input-only map
  "point at the brightest patch" (for pixel patches of a rendered image the norm grows with
  the brightness);
- `patch_norm_map`: the softmax of each patch's L2 norm, a soft version of the brightest patch
  (the chapter 6 exercise);
- `unusual_patch_map`: all weight on the patch farthest from the average of the same patch
  position over a reference set, "point at what looks unusual here".

Every map is (B, N): one distribution over the N patches per image, like a row of attention.
`baseline_scores` scores them with the course's pointing game and attention mass.
"""

from __future__ import annotations

import torch

from .metrics import pointing_game_and_mass


def _check_patches(patches, name="patches"):
    if not isinstance(patches, torch.Tensor) or patches.dim() != 3 \
            or not patches.is_floating_point():
        shape = tuple(patches.shape) if isinstance(patches, torch.Tensor) else type(patches).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, N, D), got {shape}")


def _one_hot_argmax(scores):
    """(B, N) -> (B, N): all weight on the highest score of each row (ties: the lower index)."""
    return torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).to(scores.dtype)


def uniform_map(patches) -> torch.Tensor:
    """(B, N, D) -> (B, N), every weight 1/N."""
    _check_patches(patches)
    B, N, _ = patches.shape
    return torch.full((B, N), 1.0 / N, dtype=patches.dtype, device=patches.device)


def brightest_patch_map(patches) -> torch.Tensor:
    """(B, N, D) -> (B, N): all weight on the patch with the largest L2 norm."""
    _check_patches(patches)
    return _one_hot_argmax(patches.norm(dim=-1))


def patch_norm_map(patches) -> torch.Tensor:
    """(B, N, D) -> (B, N): the softmax over each image's patches of their L2 norms (the chapter 6
    exercise's reference): a distribution like a row of attention, computed from the input alone,
    that puts most weight where the patches are longest (brightest)."""
    _check_patches(patches)
    return patches.norm(dim=-1).softmax(-1)


def unusual_patch_map(patches, reference) -> torch.Tensor:
    """(B, N, D) -> (B, N): all weight on the patch farthest (L2) from the mean of the same patch
    position in `reference` (M, N, D), e.g. the training images."""
    _check_patches(patches)
    _check_patches(reference, "reference")
    if reference.shape[1:] != patches.shape[1:]:
        raise ValueError(f"reference must have the same (N, D) as patches: "
                         f"{tuple(reference.shape[1:])} vs {tuple(patches.shape[1:])}")
    typical = reference.mean(0).to(patches.device, patches.dtype)            # (N, D)
    return _one_hot_argmax((patches - typical).norm(dim=-1))


def baseline_scores(patches, lesion_mask, reference=None) -> dict:
    """{map name: {"pointing_game", "attention_mass"}} of the model-free maps on the images that
    have a lesion. patches (B, N, D), lesion_mask (B, N) 0/1; `reference` (M, N, D) adds the
    unusual-patch map."""
    _check_patches(patches)
    if lesion_mask.shape != patches.shape[:2]:
        raise ValueError(f"lesion_mask must be (B, N) = {tuple(patches.shape[:2])}, "
                         f"got {tuple(lesion_mask.shape)}")
    keep = lesion_mask.sum(-1) > 0
    if not keep.any():
        raise ValueError("no image has a lesion: there is nothing to point at")
    patches, lesion = patches[keep], lesion_mask[keep]
    maps = {"uniform": uniform_map(patches), "brightest patch": brightest_patch_map(patches),
            "patch norms (softmax)": patch_norm_map(patches)}
    if reference is not None:
        maps["unusual patch"] = unusual_patch_map(patches, reference)
    scores = {}
    for name, rows in maps.items():
        pointing, mass = pointing_game_and_mass(rows, lesion)
        if name == "uniform":
            # Every patch ties, so an argmax would always pick patch 0; a random patch, the
            # honest reading of "no preference", hits the lesion as often as the mass says.
            pointing = mass
        scores[name] = {"pointing_game": pointing.item(), "attention_mass": mass.item()}
    return scores
