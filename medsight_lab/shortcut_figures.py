"""Chapter 8's figures (the core module `shortcuts` imports no plotting)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from . import visualise as vis

MODEL_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00")
MARK_COLOUR = "#FFD400"


def outline_mark(ax, dataset, index):
    """A yellow box around the patch(es) of the mark on film `index`, if it has one."""
    grid, p = dataset.grid, dataset.patch_size
    for patch in np.flatnonzero(dataset.mark_mask[index].numpy()):
        r, c = divmod(int(patch), grid)
        ax.add_patch(plt.Rectangle((c * p - 0.5, r * p - 0.5), p, p, fill=False,
                                   edgecolor=MARK_COLOUR, linewidth=1.5))


def plot_marked_films(dataset, indices, reports=None, ncols=4, title=None):
    """`visualise.plot_rendered_examples` with the mark's patch boxed in yellow."""
    indices = list(indices)
    fig = vis.plot_rendered_examples(dataset, indices, reports=reports, ncols=ncols)
    for ax, i in zip(fig.axes, indices):
        outline_mark(ax, dataset, i)
        ax.set_title(f"image {i}" + (" (mark)" if dataset.has_mark[i] else ""), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
        fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


def plot_shortcut_bars(results, keys=("f1", "hallucination_rate"), sets=("kept", "removed",
                                                                           "inverted")):
    """results {model: {set: {key: (value, lo, hi)}}} -> one panel per key, grouped bars per test
    set, whiskers the intervals. Returns the Figure."""
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.4), squeeze=False)
    width = 0.8 / len(results)
    for ax, key in zip(axes[0], keys):
        for m, (model, per_set) in enumerate(results.items()):
            values = np.array([per_set[s][key] for s in sets], dtype=float)     # (sets, 3)
            x = np.arange(len(sets)) + (m - (len(results) - 1) / 2) * width
            err = np.abs(values[:, 1:].T - values[:, 0])
            ax.bar(x, values[:, 0], width, yerr=err, capsize=3, label=model,
                   color=MODEL_COLOURS[m % len(MODEL_COLOURS)])
        ax.set_xticks(np.arange(len(sets)), [f"mark {s}" for s in sets])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(vis.metric_label(key) if key != "f1" else "pneumothorax F1")
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_mark_attention(scores, n_patches, set_name="kept"):
    """scores {model: {set: shortcut_scores(...)}} -> per model, the attention on the mark of the
    finding's words and of the rows before them, per layer, beside uniform attention (1 / N)."""
    fig, axes = plt.subplots(1, len(scores), figsize=(4.6 * len(scores), 3.2), squeeze=False,
                             sharey=True)
    for ax, (model, per_set) in zip(axes[0], scores.items()):
        s = per_set[set_name]
        layers = np.arange(len(s["mark_words"]))
        ax.bar(layers - 0.18, s["mark_words"], 0.36, label="finding words' rows", color="#0072B2")
        ax.bar(layers + 0.18, s["mark_before"], 0.36, label="rows before them", color="#D55E00")
        ax.axhline(1 / n_patches, color="grey", linestyle="--", label="uniform attention")
        ax.set_xticks(layers, [f"layer {l}" for l in layers])
        ax.set_title(model, fontsize=10)
        ax.set_ylabel("attention mass on the mark")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_words_attention(dataset, read, indices, finding_index=4, title=None):
    """Per film, the mean last-layer attention of the finding's words in the report `read`
    (from `shortcuts.read_reports`) over the film, the finding outlined and the mark boxed."""
    indices = list(indices)
    fig, axes = plt.subplots(1, len(indices), figsize=(3.6 * len(indices), 3.4), squeeze=False)
    for ax, i in zip(axes[0], indices):
        row = read["attn"][-1][i][read["words"][i]].mean(0)
        vis.plot_attention_on_image(dataset.images[i], row, dataset.pixel_masks[i, finding_index],
                                    ax=ax, title=f"image {i}: {read['finding']} words")
        outline_mark(ax, dataset, i)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
