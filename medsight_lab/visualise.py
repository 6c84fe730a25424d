"""Figures for the chapters: patch grids, attention heatmaps, grounding maps, curves, metric bars.

Conventions:
- Single-panel functions accept `ax=` (a new figure is made when it is None) and return the Axes;
  multi-panel functions make their own figure and return the Figure. Nothing calls `plt.show()`,
  so every function works under the non-interactive `Agg` backend (tests, CI, the book build).
- The patch grid is square (4 x 4 for the course's 16 patches): patch p sits at row p // side,
  column p % side. Lesion patches are outlined in white with a black halo, so the outline stays
  visible on both ends of the colour map.
- Colour maps are perceptually uniform and colour-blind safe: cividis for image content, viridis
  for attention.
- Inputs may be torch tensors, NumPy arrays or lists; bad shapes raise ValueError naming the
  expected shape.
"""

from __future__ import annotations

import math

import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .data import GROUNDED_WORDS, Tokenizer
from .model import eval_mode
from .rendered import patch_grid_to_pixels

IMAGE_CMAP = "cividis"
ATTENTION_CMAP = "viridis"
LESION_LABEL = "lesion"          # gid of the outline rectangles, so tests and users can find them

LOSS_TERMS = {                   # history key -> (panel title, y label); all in nats (natural log)
    "loss": ("total loss", "loss (nats)"),
    "ce": ("cross-entropy (next token)", "loss (nats)"),
    "ground": ("grounding loss", "loss (nats)"),
    "entropy": ("attention entropy", "entropy (nats)"),
}
VALIDATION_KEYS = {              # optional history keys -> legend label
    "val_finding_accuracy": "finding accuracy",
    "val_exact_match": "exact-match reports",
}
METRIC_LABELS = {                # metric key (as `evaluate` returns it) -> axis label
    "exact_match": "exact match",
    "finding_accuracy": "finding accuracy",
    "bleu4": "BLEU-4",
    "pointing_game": "pointing game",
    "attention_mass": "attention mass",
    "auroc": "AUROC",
    "teacher_forced_token_accuracy": "teacher-forced token accuracy",
}


def metric_label(key):
    """How a figure names the metric `key` ("bleu4" -> "BLEU-4"); unknown keys lose their "_"."""
    return METRIC_LABELS.get(key, key.replace("_", " "))


# -- input handling ------------------------------------------------------------------------------
def _as_array(x, name: str) -> np.ndarray:
    """Tensor (any device, with or without grad), array or list -> float NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a tensor, an array or a list of numbers") from err


def _grid_side(n_patches: int, name: str) -> int:
    side = math.isqrt(n_patches)
    if n_patches == 0 or side * side != n_patches:
        raise ValueError(f"{name} must have a square number of patches N (16 for a 4x4 grid), "
                         f"got N={n_patches}")
    return side


def _as_patch_vector(x, name: str, n_patches: int | None = None) -> np.ndarray:
    """A (N,) vector over patches, N a square number (and equal to n_patches if given)."""
    arr = _as_array(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) with one value per patch, "
                         f"got shape {arr.shape}")
    if n_patches is not None and arr.shape[0] != n_patches:
        raise ValueError(f"{name} must have shape (N={n_patches},), got shape {arr.shape}")
    _grid_side(arr.shape[0], name)
    return arr


def _as_attention(attn, tokens, name="attn") -> np.ndarray:
    """(T, N) attention cropped to len(tokens) rows: decode_tokens drops the <pad> positions,
    which are always the trailing rows."""
    arr = _as_array(attn, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (T, N): one row per token, one column per "
                         f"patch; got shape {arr.shape}")
    if not 0 < len(tokens) <= arr.shape[0]:
        raise ValueError(f"tokens must hold between 1 and T={arr.shape[0]} strings (one per "
                         f"row of {name}), got {len(tokens)}")
    _grid_side(arr.shape[1], name)
    return arr[:len(tokens)]


def _new_axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


# -- the patch grid ------------------------------------------------------------------------------
def _draw_grid(ax, values, lesion_mask, cmap, colorbar_label, title, vmin=None, vmax=None):
    """Draw a (N,) vector as its side x side grid, number the patches, outline the lesion."""
    side = _grid_side(values.shape[0], "values")
    im = ax.imshow(values.reshape(side, side), cmap=cmap, vmin=vmin, vmax=vmax)
    halo = [path_effects.withStroke(linewidth=2, foreground="black")]
    for p in range(side * side):
        ax.text(p % side - 0.42, p // side - 0.42, str(p), ha="left", va="top", fontsize=7,
                color="white", path_effects=halo)
    has_lesion = lesion_mask is not None and lesion_mask.any()
    if lesion_mask is not None:
        for p in np.flatnonzero(lesion_mask > 0.5):
            ax.add_patch(Rectangle((p % side - 0.5, p // side - 0.5), 1, 1, fill=False,
                                   edgecolor="white", linewidth=2.5, gid=LESION_LABEL,
                                   path_effects=[path_effects.withStroke(linewidth=4.5,
                                                                         foreground="black")]))
    ax.set_xticks(range(side))
    ax.set_yticks(range(side))
    ax.set_xlabel("patch column" + ("  (outlined: lesion)" if has_lesion else ""))
    ax.set_ylabel("patch row")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label=colorbar_label, shrink=0.85)
    return im


def plot_patch_grid(patches_or_norms, lesion_mask=None, ax=None,
                    title="Image: L2 norm of each patch"):
    """Show an image as its grid of patches, the lesion outlined.

    patches_or_norms: (N, d_vision) patch features (each patch is shown by its L2 norm) or a (N,)
    vector of values to show. lesion_mask: optional (N,) 0/1. Returns the Axes.
    """
    arr = _as_array(patches_or_norms, "patches_or_norms")
    if arr.ndim == 2:
        values, label = np.linalg.norm(arr, axis=-1), "L2 norm of patch features"
    elif arr.ndim == 1:
        values, label = arr, "value"
    else:
        raise ValueError("patches_or_norms must have shape (N, d_vision) or (N,), "
                         f"got shape {arr.shape}")
    _grid_side(values.shape[0], "patches_or_norms")
    mask = None if lesion_mask is None else _as_patch_vector(lesion_mask, "lesion_mask",
                                                             values.shape[0])
    ax = _new_axes(ax, (4.2, 3.6))
    _draw_grid(ax, values, mask, IMAGE_CMAP, label, title)
    return ax


def plot_grounding_map(attn_row, lesion_mask=None, ax=None,
                       title="Where one word looks: cross-attention over patches"):
    """One query's attention (N,) on the patch grid, the lesion outlined and the most-attended
    patch (the pointing game's guess) marked with a cross. Returns the Axes."""
    row = _as_patch_vector(attn_row, "attn_row")
    mask = None if lesion_mask is None else _as_patch_vector(lesion_mask, "lesion_mask",
                                                             row.shape[0])
    ax = _new_axes(ax, (4.2, 3.6))
    _draw_grid(ax, row, mask, ATTENTION_CMAP, "attention weight", title, vmin=0)
    side = _grid_side(row.shape[0], "attn_row")
    top = int(np.argmax(row))
    ax.plot(top % side, top // side, marker="x", markersize=11, markeredgewidth=2.5,
            color="#d62728", path_effects=[path_effects.withStroke(linewidth=4.5,
                                                                   foreground="white")],
            linestyle="none", label="most-attended patch")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, frameon=False)
    return ax


# -- attention as matrices -----------------------------------------------------------------------
def plot_attention_heatmap(attn, tokens, ax=None, grounded=None,
                           title="Cross-attention: each token's weights over the patches"):
    """Tokens x patches heatmap of one cross-attention map.

    attn: (T, N); row t is the query that reads token t (and predicts token t + 1). tokens: the
    token strings, at most T of them; the rows past len(tokens) (padding) are not drawn.
    grounded: optional bools per token; those labels are marked with "*" and drawn in bold.
    Returns the Axes.
    """
    rows = _as_attention(attn, tokens)
    if grounded is not None and len(grounded) < len(tokens):
        raise ValueError(f"grounded must hold one flag per token ({len(tokens)}), "
                         f"got {len(grounded)}")
    ax = _new_axes(ax, (5.5, 0.28 * len(tokens) + 1.5))
    im = ax.imshow(rows, cmap=ATTENTION_CMAP, aspect="auto", vmin=0)
    ax.set_yticks(range(len(tokens)))
    ax.set_yticklabels([f"{tok} *" if grounded is not None and grounded[t] else tok
                        for t, tok in enumerate(tokens)], fontsize=8)
    if grounded is not None:
        for label, flag in zip(ax.get_yticklabels(), grounded):
            label.set_fontweight("bold" if flag else "normal")
    ax.set_xticks(range(rows.shape[1]))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("image patch")
    ax.set_ylabel("token read" + ("  (* = finding word)" if grounded is not None else ""))
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="attention weight")
    return ax


def show_heatmaps(matrices, xlabel, ylabel, titles=None, figsize=None, cmap=ATTENTION_CMAP,
                  colorbar_label="attention weight"):
    """A grid of heatmaps with one shared colour scale, after d2l's `show_heatmaps`.

    matrices: (rows, cols, h, w), e.g. layers x heads x tokens x patches. titles: one per column
    (a flat list) or one per panel (a list of rows). Returns the Figure.
    """
    arr = _as_array(matrices, "matrices")
    if arr.ndim != 4:
        raise ValueError(f"matrices must have shape (rows, cols, h, w), got shape {arr.shape}")
    n_rows, n_cols = arr.shape[:2]
    if figsize is None:
        figsize = (2.4 * n_cols + 1.2, 2.2 * n_rows + 0.4)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=figsize, sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    # One colour scale for all panels, otherwise the single colour bar would misread them.
    vmin, vmax = float(arr.min()), float(arr.max())
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i, j]
            im = ax.imshow(arr[i, j], cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            if i == n_rows - 1:
                ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel(ylabel)
            if titles is not None:
                ax.set_title(_panel_title(titles, i, j, n_rows, n_cols), fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label=colorbar_label)
    return fig


def _panel_title(titles, i, j, n_rows, n_cols):
    if len(titles) == n_rows and all(isinstance(t, (list, tuple)) for t in titles):
        if len(titles[i]) != n_cols:
            raise ValueError(f"titles must be {n_cols} strings or {n_rows} lists of {n_cols}")
        return titles[i][j]
    if len(titles) != n_cols:
        raise ValueError(f"titles must be {n_cols} strings (one per column) or {n_rows} lists "
                         f"of {n_cols} (one per panel), got {len(titles)} entries")
    return titles[j]


# -- training and evaluation summaries -----------------------------------------------------------
def plot_training_curves(history):
    """One panel per loss term (loss, ce, ground, entropy), plus a panel of validation scores when
    the history holds `val_finding_accuracy` / `val_exact_match`. Returns the Figure."""
    if not isinstance(history, dict):
        raise TypeError(f"history must be a dict of per-epoch lists, got {type(history).__name__}")
    missing = [k for k in LOSS_TERMS if k not in history]
    if missing:
        raise ValueError(f"history must have the keys {list(LOSS_TERMS)} (per-epoch lists); "
                         f"missing {missing}")
    validation = [k for k in VALIDATION_KEYS if k in history]
    n_panels = len(LOSS_TERMS) + bool(validation)
    fig, axes = plt.subplots(1, n_panels, figsize=(3.2 * n_panels, 3.0), layout="constrained")
    for ax, (key, (title, ylabel)) in zip(axes, LOSS_TERMS.items()):
        _plot_series(ax, history[key], key)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    if validation:
        ax = axes[-1]
        for key in validation:
            _plot_series(ax, history[key], key, label=VALIDATION_KEYS[key])
        ax.set_ylim(0, 1.05)
        ax.set_title("validation (free-running)")
        ax.set_ylabel("fraction of reports")
        ax.legend(fontsize=8)
    return fig


def _plot_series(ax, values, key, label=None):
    values = _as_array(values, f"history[{key!r}]")
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"history[{key!r}] must be a non-empty list of per-epoch numbers, "
                         f"got shape {values.shape}")
    epochs = np.arange(1, values.size + 1)
    ax.plot(epochs, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_metric_bars(metrics, chance=None, keys=None, ax=None,
                     title="Scores, with the chance level of each"):
    """Bar chart of scores in [0, 1], each with its chance level drawn as a dashed line.

    metrics: dict name -> value; an entry `X_chance` is the chance level of `X` (as `evaluate`
    returns them). chance: optional dict name -> chance level, added to / overriding those.
    keys: which metrics to draw (default: every float in `metrics` that is not a chance level;
    counts such as `n_samples` (ints) and per-finding tables are skipped). Returns the Axes.
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict name -> value, got {type(metrics).__name__}")
    levels = {k[:-len("_chance")]: v for k, v in metrics.items() if k.endswith("_chance")}
    levels.update(chance or {})
    if keys is None:
        keys = [k for k, v in metrics.items()
                if not k.endswith("_chance") and isinstance(v, (float, np.floating))]
    if not keys:
        raise ValueError("metrics holds no score (a float) to draw")
    for k in keys:
        if k not in metrics:
            raise ValueError(f"metric {k!r} is not in metrics (has {sorted(metrics)})")
        if not 0 <= float(metrics[k]) <= 1:
            raise ValueError(f"plot_metric_bars draws scores in [0, 1]; {k}={metrics[k]} is "
                             "not one: pass keys=[...] to choose the scores to draw")
    values = [float(metrics[k]) for k in keys]
    ax = _new_axes(ax, (1.1 * len(keys) + 2, 3.4))
    x = np.arange(len(keys))
    bars = ax.bar(x, values, color="#3b528b", width=0.7, label="model")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=2)
    with_chance = [i for i, k in enumerate(keys) if k in levels]
    if with_chance:
        ax.hlines([float(levels[keys[i]]) for i in with_chance],
                  [i - 0.42 for i in with_chance], [i + 0.42 for i in with_chance],
                  colors="#fde725", linestyles="--", linewidth=2.5, label="chance level",
                  path_effects=[path_effects.withStroke(linewidth=4, foreground="black")])
    ax.set_xticks(x)
    ax.set_xticklabels([metric_label(k) for k in keys], rotation=20, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score")
    ax.set_title(title)
    if with_chance:               # a legend only where there is something to tell apart
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return ax


# -- what the summary figure shows, computed from a model ------------------------------------------
def finding_words_map(attn, grounded) -> np.ndarray:
    """The grounding map of a report: the attention rows (T, N) of its finding words (`grounded`,
    one flag per token) averaged into one (N,) map. Averaging the whole report would mix in
    "there is a", which looks at nothing in particular."""
    grounded = np.asarray(grounded, dtype=bool)
    attn = _as_attention(attn, grounded)
    if not grounded.any():
        raise ValueError("the report has no finding words (grounded is all False): "
                         "there is no grounding map to draw")
    return attn[grounded].mean(axis=0)


def plot_finding_words_map(attn, grounded, lesion_mask=None, ax=None,
                           title="Finding words: mean cross-attention"):
    """`plot_grounding_map` of `finding_words_map(attn, grounded)`; a report without finding
    words (a normal image, or a model that wrote "no acute findings") gets a note instead of a
    map. Returns the Axes."""
    if np.asarray(grounded, dtype=bool).any():
        return plot_grounding_map(finding_words_map(attn, grounded), lesion_mask, ax=ax,
                                  title=title)
    ax = _new_axes(ax, (4.2, 3.6))
    ax.text(0.5, 0.5, "no finding words in this report:\nnothing to ground", ha="center",
            va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_axis_off()
    return ax


@torch.no_grad()
def findings_overview_row(model, dataset, index, teacher_forced=False, label=None) -> dict:
    """One row of `plot_findings_overview` for image `index` of `dataset` (a
    SyntheticRadiologyDataset or a Subset of one): the report the model writes for it (or, with
    teacher_forced=True, the true report fed in) and the cross-attention of its last layer,
    averaged over heads, the map the grounding loss supervises. Finding words are flagged only
    when the image has a lesion (a normal image has nothing to point at)."""
    if not 0 <= index < len(dataset):
        raise IndexError(f"index must be between 0 and {len(dataset) - 1}, got {index}")
    sample = dataset[index]
    device = next(model.parameters()).device
    patches = sample["patches"][None].to(device)                               # (1, N, d)
    with eval_mode(model):
        if teacher_forced:
            ids = sample["token_ids"]
            _, attn = model(patches, ids[None].to(device))
        else:
            out = model.generate(patches)
            ids, attn = out.token_ids[0], out.cross_attention
    tokens = Tokenizer().decode_tokens(ids.cpu())
    has_lesion = bool(sample["lesion_mask"].any())
    return {"finding_name": label or sample["finding_name"],
            "patches": sample["patches"], "lesion_mask": sample["lesion_mask"],
            "tokens": tokens, "attn": attn[-1][0].mean(0).cpu(),                # (T, N)
            "grounded": [has_lesion and tok in GROUNDED_WORDS for tok in tokens]}


# -- the chapter's summary figure ----------------------------------------------------------------
def plot_findings_overview(examples, figsize=None,
                           suptitle="Cross-attention by finding (last layer, mean of heads)"):
    """One row per example: the image with its lesion, the token x patch cross-attention, and
    the grounding map of the finding words (their attention rows averaged).

    examples: list of dicts with keys "finding_name" (str), "patches" (N, d_vision),
    "lesion_mask" (N,), "tokens" (list of str), "attn" (T, N) and "grounded" (one bool per
    token: is it a finding word). Only the finding words enter the grounding map: averaging the
    whole report would mix in "there is a", which looks at nothing in particular.
    Returns the Figure.
    """
    required = ("finding_name", "patches", "lesion_mask", "tokens", "attn", "grounded")
    if not examples:
        raise ValueError("examples must be a non-empty list of dicts")
    for n, example in enumerate(examples):
        missing = [k for k in required if k not in example]
        if missing:
            raise ValueError(f"examples[{n}] must have the keys {list(required)}; "
                             f"missing {missing}")
    if figsize is None:
        figsize = (14, 3.4 * len(examples))
    fig, axes = plt.subplots(len(examples), 3, figsize=figsize, squeeze=False,
                             layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1.6, 1]})
    for row, example in zip(axes, examples):
        name, tokens = example["finding_name"], list(example["tokens"])
        attn = _as_attention(example["attn"], tokens)
        grounded = np.asarray(example["grounded"], dtype=bool)[:len(tokens)]
        if grounded.shape != (len(tokens),):
            raise ValueError(f"grounded of {name!r} must hold one flag per token "
                             f"({len(tokens)}), got {grounded.shape[0]}")
        # The example's name on a line of its own: long names ("nodule, teacher-forced") would
        # otherwise run into the next panel's title.
        plot_patch_grid(example["patches"], example["lesion_mask"], ax=row[0],
                        title=f"{name}\nimage (patch norms)")
        plot_attention_heatmap(attn, tokens, ax=row[1], grounded=grounded,
                               title=f"{name}\ncross-attention per token")
        plot_finding_words_map(attn, grounded, example["lesion_mask"], ax=row[2],
                               title=f"{name}\nfinding words, mean attention")
    # Room between the panels, so that a colour bar's label and the next panel's y label do not
    # read as one.
    fig.get_layout_engine().set(w_pad=0.15, wspace=0.06)
    fig.suptitle(suptitle, fontweight="bold")
    return fig


# -- figures of several runs or of a whole dataset (chapters 1 and 4) ----------------------------
def plot_runs_metric_bars(runs, keys=None, figsize=None):
    """`plot_metric_bars` for several runs side by side, one panel per run, sharing the y axis.
    runs: dict title -> metrics (as `evaluate` returns them). Returns the Figure."""
    if not isinstance(runs, dict) or not runs:
        raise ValueError("runs must be a non-empty dict of title -> metrics")
    fig, axes = plt.subplots(1, len(runs), figsize=figsize or (4.3 * len(runs) + 0.5, 3.7),
                             layout="constrained", sharey=True, squeeze=False)
    for ax, (title, metrics) in zip(axes[0], runs.items()):
        plot_metric_bars(metrics, keys=keys, ax=ax, title=title)
    return fig


def plot_finding_maps_by_model(models, dataset, findings=(1, 2, 3, 4), figsize=None):
    """One row per model, one column per finding: the grounding map of the finding words in the
    report the model writes for the first image of `dataset` with that finding (last layer,
    heads averaged). models: dict label -> model. Returns the Figure."""
    from .data import FINDINGS
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict of label -> model")
    fig, axes = plt.subplots(len(models), len(findings), squeeze=False, layout="constrained",
                             figsize=figsize or (4.25 * len(findings), 3.75 * len(models)))
    for col, k in enumerate(findings):
        matches = (dataset.finding_idx == k).nonzero()
        if len(matches) == 0:
            raise ValueError(f"no image of finding {k} ({FINDINGS[k][0]}) in the dataset")
        for row, (label, model) in enumerate(models.items()):
            example = findings_overview_row(model, dataset, int(matches[0]))
            plot_finding_words_map(example["attn"], example["grounded"], example["lesion_mask"],
                                   ax=axes[row, col], title=f"{FINDINGS[k][0]}: {label}")
    return fig


def plot_dataset_overview(dataset):
    """Two panels: images per finding, and each finding's mean patch norm by patch index (flat
    background, peaks at the lesion patches). Returns the Figure."""
    from .data import FINDINGS
    names = [name for name, _ in FINDINGS.values()]
    counts = torch.bincount(dataset.finding_idx, minlength=len(names))
    norms = dataset.patches.norm(dim=-1)                                  # (n_samples, N)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
    axes[0].bar(names, counts.tolist(), color="#3b528b")
    axes[0].set_title(f"Finding distribution ({len(dataset):,} images)")
    axes[0].set_ylabel("images")
    axes[0].tick_params(axis="x", rotation=20)
    for k, name in enumerate(names):
        axes[1].plot(range(norms.shape[1]), norms[dataset.finding_idx == k].mean(0), marker="o",
                     markersize=3, label=name)
    axes[1].set_xticks(range(norms.shape[1]))
    axes[1].set_xlabel("patch index")
    axes[1].set_ylabel("mean L2 norm of the patch")
    axes[1].set_title("Patch activation by finding (mean over images)")
    axes[1].legend(fontsize=8)
    return fig


# -- the second world (chapter 7): rendered films, their masks and attention on the image ---------
# Okabe-Ito colours (colour-blind safe), one per finding of `RENDERED_FINDINGS`.
FINDING_COLOURS = {"cardiomegaly": "#E69F00", "nodule": "#56B4E9", "consolidation": "#009E73",
                   "effusion": "#F0E442", "pneumothorax": "#CC79A7"}


def _outline(ax, pixel_mask, colour, label=None):
    mask = _as_array(pixel_mask, "pixel_mask").astype(float)
    if mask.any():
        ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.2)
        if label:
            ax.plot([], [], color=colour, label=label)


def plot_rendered_examples(dataset, indices, reports=None, ncols=4, width=3.2):
    """Films of a RenderedChestXrayDataset with each positive finding's pixel mask outlined in its
    colour, and the report (or `reports[k]`, e.g. a generated one) under each. Returns the Figure."""
    import textwrap
    from .rendered import RENDERED_FINDINGS
    indices = list(indices)
    if not indices:
        raise ValueError("indices must name at least one image")
    nrows = math.ceil(len(indices) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, width * 1.45 * nrows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, i) in enumerate(zip(axes.flat, indices)):
        ax.imshow(_as_array(dataset.images[i, 0], "image"), cmap="gray", vmin=0, vmax=1)
        for j, f in enumerate(RENDERED_FINDINGS):
            _outline(ax, dataset.pixel_masks[i, j], FINDING_COLOURS[f], f)
        text = dataset.reports[i] if reports is None else reports[k]
        ax.set_title(f"image {i}", fontsize=9)
        ax.text(0.5, -0.03, textwrap.fill(text, 42), transform=ax.transAxes, ha="center",
                va="top", fontsize=7)
    handles = [plt.Line2D([], [], color=c, label=f) for f, c in FINDING_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_finding_distribution(labels):
    """Four panels from a list of label dicts (`dataset.labels`): how often each finding is
    positive / denied / not mentioned, the side of the positive ones, the sizes, and the number of
    findings per image. Returns the Figure."""
    from .rendered import RENDERED_FINDINGS, SIDES, SIZES
    if not labels:
        raise ValueError("labels must hold at least one image's labels")
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    x = np.arange(len(RENDERED_FINDINGS))
    bottom = np.zeros(len(RENDERED_FINDINGS))
    for status, colour in (("positive", "#D55E00"), ("negative", "#0072B2"), ("absent", "#BBBBBB")):
        counts = np.array([sum(l[f]["status"] == status for l in labels) for f in RENDERED_FINDINGS])
        axes[0].bar(x, counts, bottom=bottom, color=colour, label=status)
        bottom += counts
    axes[0].set_xticks(x, RENDERED_FINDINGS, rotation=30, ha="right")
    axes[0].set_title("status per finding")
    axes[0].legend(fontsize=8)
    lateral = [f for f in RENDERED_FINDINGS if f != "cardiomegaly"]
    for k, (side, colour) in enumerate(zip(SIDES, ("#009E73", "#CC79A7"))):
        counts = [sum(l[f]["status"] == "positive" and l[f]["side"] == side for l in labels)
                  for f in lateral]
        axes[1].bar(np.arange(len(lateral)) + 0.4 * k - 0.2, counts, width=0.4, color=colour,
                    label=side)
    axes[1].set_xticks(np.arange(len(lateral)), lateral, rotation=30, ha="right")
    axes[1].set_title("side of the positive findings")
    axes[1].legend(fontsize=8)
    names, counts = [], []
    for f, sizes in SIZES.items():
        for s in sizes:
            names.append(f"{f}\n{s}")
            counts.append(sum(l[f]["status"] == "positive" and l[f]["size"] == s for l in labels))
    axes[2].bar(np.arange(len(names)), counts, color="#E69F00")
    axes[2].set_xticks(np.arange(len(names)), names, fontsize=7)
    axes[2].set_title("sizes")
    per_image = [sum(l[f]["status"] == "positive" for f in RENDERED_FINDINGS) for l in labels]
    axes[3].bar(range(4), [per_image.count(k) for k in range(4)], color="#56B4E9")
    axes[3].set_xticks(range(4))
    axes[3].set_xlabel("positive findings in the image")
    axes[3].set_title("findings per image")
    for ax in axes:
        ax.set_ylabel("images")
    fig.tight_layout()
    return fig


def plot_attention_on_image(image, attn_row, pixel_mask=None, ax=None, title=None,
                            colour="white"):
    """One attention distribution over the patch grid (N,), drawn over the film (1, H, W) or
    (H, W) as a translucent heatmap, with `pixel_mask` (H, W) outlined. Returns the Axes."""
    img = _as_array(image, "image")
    img = img[0] if img.ndim == 3 else img
    if img.ndim != 2:
        raise ValueError(f"image must be (1, H, W) or (H, W), got shape {img.shape}")
    row = _as_patch_vector(attn_row, "attn_row")
    _grid_side(row.size, "attn_row")
    heat = patch_grid_to_pixels(row, *img.shape)
    ax = _new_axes(ax, (3.2, 3.2))
    ax.imshow(img, cmap="gray", vmin=0, vmax=1)
    shown = ax.imshow(heat, cmap=ATTENTION_CMAP, alpha=0.55, vmin=0, vmax=max(row.max(), 1e-6))
    plt.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="attention")
    if pixel_mask is not None:
        _outline(ax, pixel_mask, colour)
    ax.set_title(title or "attention on the image", fontsize=8)
    ax.axis("off")
    return ax


def plot_sentence_attention(dataset, indices, written, max_panels=4):
    """One panel per positive sentence the model wrote for films `indices` of a
    RenderedChestXrayDataset (`written`: `rendered_metrics.grounded_sentences` of those films),
    up to `max_panels`: the mean attention of the sentence's finding words over the film, with the
    true mask of that finding outlined (none where the film does not have it). Returns the Figure."""
    from .rendered import RENDERED_FINDINGS
    panels = [(i, s) for i, w in zip(indices, written) for s in (w["sentences"] or [])][:max_panels]
    if not panels:
        raise ValueError("no positive sentence among the reports written for these films")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6),
                             layout="constrained", squeeze=False)
    for ax, (i, s) in zip(axes[0], panels):
        j = RENDERED_FINDINGS.index(s["finding"])
        side = f" ({s['label']['side']})" if s["label"]["side"] else ""
        plot_attention_on_image(dataset.images[i], s["attention"], dataset.pixel_masks[i, j],
                                ax=ax, title=f"film {i}: {s['finding']}{side}")
    return fig


# -- chapter 6: tests of explanations --------------------------------------------------------------
_SERIES_COLOURS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725", "#8c8c8c")


def plot_randomisation(draws, ax=None, title="Model randomisation"):
    """One line per score over the randomisation steps of `sanity.model_randomisation` (a list of
    its results, one per random draw): the mean over the draws with the range as a band, for the
    rank correlation with the trained map and the attention mass, and the rank correlation of
    maps of unrelated images as a dashed level. Returns the Axes."""
    if not draws or not all(isinstance(d, dict) and "steps" in d for d in draws):
        raise ValueError("draws must be a non-empty list of sanity.model_randomisation results")
    labels = ["trained"] + [s["randomised"] for s in draws[0]["steps"]]
    ax = _new_axes(ax, (9, 3.6))
    x = np.arange(len(labels))
    for key, colour, name in (("rank_correlation", "#3b528b", "rank correlation with the "
                               "trained map"), ("attention_mass", "#21918c",
                                                "attention mass in lesion")):
        first = 1.0 if key == "rank_correlation" else draws[0]["trained"][key]
        values = np.array([[first] + [s[key] for s in d["steps"]] for d in draws])
        ax.plot(x, values.mean(0), marker="o", color=colour, label=name)
        ax.fill_between(x, values.min(0), values.max(0), color=colour, alpha=0.25, linewidth=0)
    ax.axhline(np.mean([d["unrelated_images"] for d in draws]), color="black", linestyle="--",
               linewidth=1, label="rank correlation, maps of unrelated images")
    ax.axhline(draws[0]["chance"], color="#fde725", linestyle=":", linewidth=2,
               label="attention mass, chance (uniform)")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.05)
    ax.set_ylabel("score (band: range of draws)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return ax


def plot_curves(curves, kind="deletion", ax=None, title=None):
    """Mean deletion (or insertion) curve of each map in `curves` (from `sanity.faithfulness`):
    the probability of the true finding words against the number of patches deleted (inserted),
    with each curve's mean area in the legend. Returns the Axes."""
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if not curves:
        raise ValueError("curves is empty: pass sanity.faithfulness(model, explained)")
    ax = _new_axes(ax, (5, 3.4))
    styles = ("-", "--", "-.", ":", (0, (5, 1)), (0, (1, 1)))
    for (name, c), colour, style in zip(curves.items(), _SERIES_COLOURS, styles):
        mean = c[kind].detach().cpu().mean(0).numpy()
        area = float(c[f"{kind}_area"].mean())
        ax.plot(np.arange(len(mean)), mean, color=colour, linestyle=style,
                label=f"{name} (area {area:.2f})")
    ax.set_xlabel(f"patches {'deleted' if kind == 'deletion' else 'inserted'}, in the map's order")
    ax.set_ylabel("probability of the finding words")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"{kind.capitalize()} curves")
    ax.legend(fontsize=7, frameon=False)
    return ax
