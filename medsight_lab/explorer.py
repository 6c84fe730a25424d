"""The grounding explorer: step through a report and see where each word looks.

Two faces on one precomputed data structure:
- `explorer_data(model, dataset, indices)` runs the model once (teacher-forced and free-running)
  and returns plain lists: tokens, per-layer per-head cross-attention, lesion masks. Everything
  after it is a pure function of that dict.
- `GroundingExplorer(data)`: an ipywidgets panel for a live kernel.
- `explorer_html(data)`: the same panel as self-contained HTML + vanilla JavaScript (data embedded
  as JSON, no external script), for the static HTML book where there is no kernel.

Both worlds: on the first one (`SyntheticRadiologyDataset`) the map is the 4 x 4 grid of patch
weights with the lesion outlined. On the second (`RenderedChestXrayDataset`) each sample also holds
its film: the map is the word's attention drawn over the film (each patch's weight over its
pixels), the pixel mask of every finding of the film outlined in its colour, and the pointing game
of a finding word is played against the mask of the finding its sentence states (dashed); a
finding the film does not have (a hallucination) leaves nothing to point at.

Alignment (see CONTRIBUTING.md): row t of a cross-attention map is the query that *reads* token t
and predicts token t + 1, so the slider position t highlights token t. The pointing game asks
whether the most-attended patch lies inside the lesion; the course scores it on finding words only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import math
import struct
import zlib

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import to_hex
from torch.utils.data import Subset

from .data import GROUNDED_WORDS
from .model import eval_mode
from .rendered import RENDERED_FINDINGS, RenderedChestXrayDataset, patch_grid_to_pixels
from .rendered_metrics import positive_sentences
from .visualise import FINDING_COLOURS

MODES = {"teacher_forced": "teacher-forced", "generated": "generated (free-running)"}
DECIMALS = 3                      # attention weights kept in the data: stable across CPU and GPU
PALETTE = [to_hex(colormaps["viridis"](i / 31)) for i in range(32)]   # colour-blind-safe scale
_instances = itertools.count()    # makes element ids unique per page, yet the same on every run
FILM_SCALE = 4                    # screen pixels per film pixel (a 64 x 64 film is drawn 256 px wide)
NO_LESION = ("n/a", "No lesion in this image: the pointing game does not apply.")
NO_FINDING = ("n/a", "No finding on this film: the pointing game does not apply.")


# -- the data ------------------------------------------------------------------------------------
def explorer_data(model, dataset, indices):
    """Run `model` on `dataset[i]` for each i in `indices`, teacher-forced and free-running.

    Returns {"n_layers", "n_heads", "samples": [...]}, each sample a dict with "index",
    "finding_name", "lesion_mask" (N ints) and, per mode ("teacher_forced", "generated"),
    {"tokens": [str], "grounded": [bool], "attention": [layer][head][t][patch]} with one row per
    token (pads dropped) and weights rounded to 3 decimals. In the generated mode, a row of zeros
    marks a position the model never read (the final <eos>).

    On a `RenderedChestXrayDataset` (or a Subset of one), "finding_name" lists the film's positive
    findings ("normal" for none), each view also has "finding": per token, the finding its
    positive sentence states (None for other words; all None where the labeler cannot read the
    report), and the sample has "film" (`film_data`): the image and its findings' masks.
    """
    indices = list(indices)
    if not indices:
        raise ValueError("indices must name at least one sample of the dataset")
    # A Subset has no decode_tokens; its parent dataset does.
    root, _ = _source(dataset, indices[0])
    films = isinstance(root, RenderedChestXrayDataset)
    decoder = root if films else getattr(dataset, "dataset", dataset)
    device = next(model.parameters()).device
    samples = []
    with eval_mode(model), torch.no_grad():
        for i in indices:
            item = dataset[i]
            patches = item["patches"][None].to(device)                      # (1, N, d)
            _, attn = model(patches, item["token_ids"][None].to(device))    # L x (1, H, T, N)
            generated = model.generate(patches)
            lesion = [int(v > 0.5) for v in item["lesion_mask"].tolist()]
            if films:
                _, j = _source(dataset, i)
                present = [f for f in RENDERED_FINDINGS if item["labels"][f]["status"] == "positive"]
                samples.append({
                    "index": int(i),
                    "finding_name": ", ".join(present) or "normal",
                    "lesion_mask": lesion,
                    "film": film_data(item["image"], root.pixel_masks[j], item["finding_masks"],
                                      present),
                    "teacher_forced": _film_view(decoder, item["token_ids"], attn),
                    "generated": _film_view(decoder, generated.token_ids[0],
                                            generated.cross_attention),
                })
                continue
            samples.append({
                "index": int(i),
                "finding_name": item["finding_name"],
                "lesion_mask": lesion,
                "teacher_forced": _mode_view(decoder, item["token_ids"], attn, any(lesion)),
                "generated": _mode_view(decoder, generated.token_ids[0],
                                        generated.cross_attention, any(lesion)),
            })
    return {"n_layers": len(attn), "n_heads": int(attn[0].shape[1]), "samples": samples}


def _source(dataset, i):
    """(the dataset under any Subsets, the index of item i in it)."""
    while isinstance(dataset, Subset):
        dataset, i = dataset.dataset, dataset.indices[i]
    return dataset, int(i)


def _attention_lists(tokens, attn):
    maps = torch.stack([a[0, :, :len(tokens)] for a in attn])                  # (L, H, T, N)
    if maps.shape[2] != len(tokens):
        raise ValueError(f"cross-attention has {maps.shape[2]} rows for {len(tokens)} tokens; "
                         "expected one row per token")
    return maps.double().cpu().numpy().round(DECIMALS).tolist()


def _mode_view(decoder, token_ids, attn, has_lesion):
    tokens = decoder.decode_tokens(token_ids.cpu())
    attention = _attention_lists(tokens, attn)
    return {
        "tokens": tokens,
        # The words the grounding loss supervises: finding, side and size words of an image
        # that has a lesion (the same rule as the dataset's finding_mask).
        "grounded": [has_lesion and tok in GROUNDED_WORDS for tok in tokens],
        "attention": attention,
    }


def _film_view(decoder, token_ids, attn):
    tokens = decoder.decode_tokens(token_ids.cpu())
    attention = _attention_lists(tokens, attn)
    finding = [None] * len(tokens)
    try:
        stated = positive_sentences(tokens)
    except ValueError:          # a sentence the labeler cannot read: no word is a finding word
        stated = []
    for name, _, positions in stated:
        for t in positions:
            finding[t] = name
    # The finding words are the words of positive sentences but their function words: the words
    # the dataset's finding_mask grounds (and the grounded scores of `ml.evaluate` read).
    return {"tokens": tokens, "grounded": [f is not None for f in finding],
            "finding": finding, "attention": attention}


# -- films: pure functions of arrays ------------------------------------------------------------
def _runs(flags):
    """(start, end) of each run of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist())


def outline_path(mask):
    """The boundary of a (H, W) 0/1 mask as an SVG path in pixel units ("" for an empty mask):
    every pixel edge between inside and outside, merged into straight runs."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    m = np.pad(m > 0.5, 1)
    horizontal = m[:-1, 1:-1] != m[1:, 1:-1]          # (H + 1, W): the edge above row y
    vertical = m[1:-1, :-1] != m[1:-1, 1:]            # (H, W + 1): the edge left of column x
    parts = [f"M{x0} {y}h{x1 - x0}" for y in range(horizontal.shape[0])
             for x0, x1 in _runs(horizontal[y])]
    parts += [f"M{x} {y0}v{y1 - y0}" for x in range(vertical.shape[1])
              for y0, y1 in _runs(vertical[:, x])]
    return "".join(parts)


def film_png(image):
    """A (1, H, W) or (H, W) image in [0, 1] as a data: URI of an 8-bit grayscale PNG (values
    outside [0, 1] clipped). Written here with zlib, so the same film gives the same bytes."""
    a = np.asarray(image, dtype=np.float64)
    a = a[0] if a.ndim == 3 and a.shape[0] == 1 else a
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"image must be (1, H, W) or (H, W), got shape {np.shape(image)}")
    if not np.isfinite(a).all():
        raise ValueError("image holds NaN or infinite values")
    pixels = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    height, width = pixels.shape

    def chunk(tag, body):
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)      # filter 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)        # 8-bit grayscale
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
           + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def film_data(image, pixel_masks, patch_masks, findings):
    """What the explorer draws of one film: {"height", "width", "png", "lesion_outline",
    "findings": [{"name", "colour", "mask" (N ints), "outline", "patch_outline"}]} for each name
    in `findings` (the film's positive findings). `pixel_masks` (F, H, W) and `patch_masks` (F, N)
    are in `RENDERED_FINDINGS` order; outlines are SVG paths in film pixels ("patch_outline": the
    patches the pointing game counts as inside, "lesion_outline": those of all the findings)."""
    img = np.asarray(image, dtype=np.float64)
    img = img[0] if img.ndim == 3 and img.shape[0] == 1 else img
    if img.ndim != 2:
        raise ValueError(f"image must be (1, H, W) or (H, W), got shape {np.shape(image)}")
    height, width = img.shape
    pixel_masks, patch_masks = np.asarray(pixel_masks), np.asarray(patch_masks)
    n = len(RENDERED_FINDINGS)
    if pixel_masks.shape != (n, height, width):
        raise ValueError(f"pixel_masks must be ({n}, {height}, {width}), got {pixel_masks.shape}")
    if patch_masks.ndim != 2 or patch_masks.shape[0] != n:
        raise ValueError(f"patch_masks must be ({n}, N), got {patch_masks.shape}")
    unknown = [f for f in findings if f not in RENDERED_FINDINGS]
    if unknown:
        raise ValueError(f"unknown findings {unknown}; expected names from {RENDERED_FINDINGS}")
    entries = []
    for name in findings:
        k = RENDERED_FINDINGS.index(name)
        mask = [int(v > 0.5) for v in patch_masks[k].tolist()]
        entries.append({"name": name, "colour": FINDING_COLOURS[name], "mask": mask,
                        "outline": outline_path(pixel_masks[k]),
                        "patch_outline": outline_path(patch_grid_to_pixels(mask, height, width))})
    lesion = [int(any(e["mask"][p] for e in entries)) for p in range(patch_masks.shape[1])]
    return {"height": height, "width": width, "png": film_png(img),
            "lesion_outline": outline_path(patch_grid_to_pixels(lesion, height, width)),
            "findings": entries}


def _check_data(data):
    if not isinstance(data, dict) or not data.get("samples"):
        raise ValueError("data must be explorer_data(...)'s dict with a non-empty 'samples' list")
    for key in ("n_layers", "n_heads"):
        if not isinstance(data.get(key), int) or data[key] < 1:
            raise ValueError(f"data[{key!r}] must be a positive integer")
    for s in data["samples"]:
        if "film" in s and any(len(s[m].get("finding", ())) != len(s[m]["tokens"]) for m in MODES):
            raise ValueError(f"sample {s.get('index')}: a film's views need one 'finding' entry "
                             "per token")


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")


# -- pure functions shared by the widget and the initial state of the HTML version ---------------
def attention_row(view, layer, head, t):
    """Attention of the query at position t over the patches, as a list of N floats; head is an
    int or "mean" (the heads averaged, summed in head order exactly like the JavaScript)."""
    heads = view["attention"][layer]
    if head == "mean":
        return [sum(h[t][p] for h in heads) / len(heads) for p in range(len(heads[0][t]))]
    return list(heads[head][t])


def pointing_game(row, lesion_mask):
    """True if the most-attended patch (first one on ties) lies in the lesion; None when the game
    does not apply: no lesion in the image, or a position the model never read (all zeros)."""
    if not any(lesion_mask) or not any(row):
        return None
    return bool(lesion_mask[row.index(max(row))])


def word_target(sample, view, t):
    """What the word at position t of `view` is scored against: {"mask" (N ints), "region" (words
    for the verdict), "empty" ((outcome, sentence) when the mask is empty), "outline" (SVG path of
    the mask's patches on a film, else None)}. On the first world, the image's lesion. On a film,
    a finding word's mask is that of the finding its sentence states (empty when the film does not
    have it: a hallucination); any other word's is the union of the film's findings."""
    film = sample.get("film")
    if film is None:
        return {"mask": sample["lesion_mask"], "region": "the lesion", "empty": NO_LESION,
                "outline": None}
    name = view["finding"][t]
    if name is None:
        return {"mask": sample["lesion_mask"], "region": "the findings of the film",
                "empty": NO_FINDING, "outline": film["lesion_outline"]}
    for finding in film["findings"]:
        if finding["name"] == name:
            return {"mask": finding["mask"], "region": f"the {name}", "empty": NO_FINDING,
                    "outline": finding["patch_outline"]}
    return {"mask": [0] * len(sample["lesion_mask"]), "region": f"the {name}",
            "empty": ("hallucinated", f"This film has no {name}: the sentence states a finding "
                                      "that is not there, so no patch can be right."),
            "outline": None}


def verdict(row, lesion_mask, grounded, region="the lesion", empty=NO_LESION):
    """(outcome, sentence): outcome is "hit", "miss", "unread", or empty[0] ("n/a" by default)
    when the mask is empty; `region` names the mask in the sentence."""
    if not any(row):
        return "unread", "Position not read by the model: generation stopped before it."
    if not any(lesion_mask):
        return empty
    top = row.index(max(row))
    lesion = ", ".join(str(p) for p, v in enumerate(lesion_mask) if v)
    hit = pointing_game(row, lesion_mask)
    text = (f"Pointing game: {'hit' if hit else 'miss'}. The most-attended patch, {top}, lies "
            f"{'inside' if hit else 'outside'} {region} (patches {lesion}).")
    if not grounded:
        text += " Not a finding word: the course scores finding words only."
    return ("hit" if hit else "miss"), text


def finding_word_verdicts(data, mode="generated", layer=-1, head="mean"):
    """Per sample of `explorer_data(...)`, the pointing-game outcome of each finding word of its
    `mode` report on `layer` (the last by default) and `head` (or the mean of the heads): a list of
    (position, word, finding, outcome), finding None on the first world; outcome as `verdict`'s."""
    _check_data(data)
    _check_mode(mode)
    out = []
    for s in data["samples"]:
        view, words = s[mode], []
        for t, (word, grounded) in enumerate(zip(view["tokens"], view["grounded"])):
            if grounded:
                target = word_target(s, view, t)
                outcome = verdict(attention_row(view, layer, head, t), target["mask"], True,
                                  target["region"], target["empty"])[0]
                words.append((t, word, view.get("finding", [None] * (t + 1))[t], outcome))
        out.append(words)
    return out


def _fmt(value):
    # Rounded the same way in JavaScript (floor(100 v + 0.5)), so both faces print the same.
    return f"{math.floor(value * 100 + 0.5) / 100:.2f}"


def _grid_html(row, lesion_mask):
    side = math.isqrt(len(row))
    top = row.index(max(row)) if any(row) else None
    cells = []
    for p, value in enumerate(row):
        # A fixed 0-1 colour scale, so maps of different words and heads compare at a glance.
        shade = min(len(PALETTE) - 1, math.floor(value * len(PALETTE)))
        outline = "box-shadow:0 0 0 2px #000;border:3px solid #fff" if lesion_mask[p] else \
            "border:3px solid transparent"
        mark = "&#x2715; " if p == top else ""
        cells.append(f'<div title="patch {p}" style="background:{PALETTE[shade]};'
                     f'color:{"#fff" if shade < 18 else "#000"};{outline}">'
                     f'<small>{p}</small><br>{mark}{_fmt(value)}</div>')
    return (f'<div class="medsight-grid" style="display:grid;grid-template-columns:'
            f'repeat({side},54px);grid-auto-rows:46px;gap:3px;font:12px sans-serif;'
            f'text-align:center">{"".join(cells)}</div>')


def _report_html(tokens, grounded, t):
    words = []
    for k, (tok, flag) in enumerate(zip(tokens, grounded)):
        style = "text-decoration:underline dotted;" if flag else ""
        if k == t:
            style += "background:#fde725;color:#000;font-weight:bold;outline:1px solid #000;"
        words.append(f'<span style="{style}padding:0 2px">{html.escape(tok)}</span>')
    following = html.escape(tokens[t + 1]) if t + 1 < len(tokens) else "nothing"
    return (f'<div class="medsight-report" style="font:14px monospace;line-height:1.8">'
            f'{" ".join(words)}</div><div class="medsight-step" style="font:12px sans-serif">'
            f'Step {t} reads &laquo;{html.escape(tokens[t])}&raquo; and predicts '
            f'&laquo;{following}&raquo;. Underlined: finding words.</div>')


def _verdict_html(outcome, text):
    return (f'<div class="medsight-verdict" data-verdict="{outcome}" '
            f'style="font:13px sans-serif;margin-top:6px">{html.escape(text)}</div>')


def _first_grounded(view):
    return next((t for t, flag in enumerate(view["grounded"]) if flag), 0)


def _film_html(sample, row, target, focus):
    """The word's attention over the film: each patch a square of the PALETTE colour, colour and
    opacity growing with its weight relative to the word's most-attended patch (marked \u2715);
    the film's findings outlined in their colours (the stated one, `focus`, thicker) and the
    patches the pointing game counts as inside dashed."""
    film = sample["film"]
    height, width, side = film["height"], film["width"], math.isqrt(len(row))
    cell_w, cell_h = width * FILM_SCALE // side, height * FILM_SCALE // side
    peak = max(row)
    top = row.index(peak) if any(row) else None
    cells = []
    for p, value in enumerate(row):
        rel = value / peak if peak > 0 else 0.0
        shade = min(len(PALETTE) - 1, math.floor(rel * len(PALETTE)))
        cells.append(f'<div class="medsight-heat" data-patch="{p}" title="patch {p}: '
                     f'{_fmt(value)}" style="position:absolute;left:{p % side * cell_w}px;'
                     f'top:{p // side * cell_h}px;width:{cell_w}px;height:{cell_h}px;'
                     f'background:{PALETTE[shade]};opacity:{_fmt(0.1 + 0.6 * rel)}"></div>')
    lines = [f'<path class="medsight-outline" data-finding="{html.escape(f["name"])}" '
             f'd="{f["outline"]}" fill="none" stroke="{f["colour"]}" '
             f'stroke-width="{3 if f["name"] == focus else 1.5}" '
             'vector-effect="non-scaling-stroke"/>' for f in film["findings"]]
    if target["outline"]:
        lines.append(f'<path class="medsight-target" d="{target["outline"]}" fill="none" '
                     'stroke="#fff" stroke-width="1.5" stroke-dasharray="5 4" '
                     'vector-effect="non-scaling-stroke"/>')
    if top is not None:
        size = height // side
        lines.append(f'<text class="medsight-top" x="{top % side * size + size // 2}" '
                     f'y="{top // side * size + size // 2}" font-size="{size}" fill="#fff" '
                     'stroke="#000" stroke-width="0.4" text-anchor="middle" '
                     'dominant-baseline="central">&#x2715;</text>')
    legend = "".join(f'<span style="margin-right:8px"><span style="display:inline-block;'
                     f'width:10px;height:10px;background:{f["colour"]}"></span> '
                     f'{html.escape(f["name"])}</span>' for f in film["findings"])
    peak_text = (f"&#x2715; most-attended patch {top}: {_fmt(peak)} of the attention"
                 if top is not None else "no attention (position not read)")
    return (f'<div style="position:relative;width:{width * FILM_SCALE}px;'
            f'height:{height * FILM_SCALE}px"><img class="medsight-film-image" '
            f'src="{film["png"]}" alt="chest film {sample["index"]}" width="{width * FILM_SCALE}" '
            f'height="{height * FILM_SCALE}" style="position:absolute;left:0;top:0;'
            f'image-rendering:pixelated">{"".join(cells)}'
            f'<svg viewBox="0 0 {width} {height}" width="{width * FILM_SCALE}" '
            f'height="{height * FILM_SCALE}" style="position:absolute;left:0;top:0;'
            f'pointer-events:none">'
            f'{"".join(lines)}</svg></div>'
            f'<div class="medsight-legend" style="margin-top:4px">'
            f'{legend or "normal film: no finding to outline"}</div>'
            f'<div style="max-width:{width * FILM_SCALE}px">{peak_text} (uniform: 1/{len(row)} '
            f'each). Dashed: the patches the pointing game counts as inside.</div>')


def _film_grid_html(sample, row, target, focus):
    return (f'<div class="medsight-grid medsight-film" style="font:12px sans-serif">'
            f'{_film_html(sample, row, target, focus)}</div>')


def render_state(data, sample, mode, layer, head, t):
    """HTML of the grid, the report and the verdict for one setting of the controls."""
    s = data["samples"][sample]
    view = s[mode]
    row = attention_row(view, layer, head, t)
    target = word_target(s, view, t)
    grid = (_grid_html(row, target["mask"]) if "film" not in s
            else _film_grid_html(s, row, target, view["finding"][t]))
    return {"grid": grid,
            "report": _report_html(view["tokens"], view["grounded"], t),
            "verdict": _verdict_html(*verdict(row, target["mask"], view["grounded"][t],
                                              target["region"], target["empty"]))}


def _sample_label(s):
    return f"#{s['index']} {s['finding_name']}"


# -- the live widget -----------------------------------------------------------------------------
class GroundingExplorer(widgets.VBox):
    """ipywidgets explorer over `explorer_data(...)`: pick sample, mode, layer and head, slide over
    the tokens; the grounding map (over the film, on the second world), highlighted word and
    pointing-game verdict follow. `mode`: the report it opens on."""

    def __init__(self, data, mode="teacher_forced"):
        _check_data(data)
        _check_mode(mode)
        self.data = data
        self.sample_select = widgets.Dropdown(
            options=[(_sample_label(s), k) for k, s in enumerate(data["samples"])],
            description="sample")
        self.mode_select = widgets.ToggleButtons(options=[(v, k) for k, v in MODES.items()],
                                                 value=mode)
        self.layer_select = widgets.Dropdown(
            options=[(f"layer {l}", l) for l in range(data["n_layers"])],
            value=data["n_layers"] - 1, description="layer")
        self.head_select = widgets.Dropdown(
            options=[("mean of heads", "mean")] + [(f"head {h}", h)
                                                   for h in range(data["n_heads"])],
            description="head")
        self.token_slider = widgets.IntSlider(description="token", min=0, max=0,
                                              continuous_update=True)
        self.grid, self.report, self.verdict = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.sample_select.observe(self._new_report, names="value")
        self.mode_select.observe(self._new_report, names="value")
        for control in (self.layer_select, self.head_select, self.token_slider):
            control.observe(self._refresh, names="value")
        super().__init__([
            widgets.HBox([self.sample_select, self.layer_select, self.head_select]),
            self.mode_select, self.token_slider,
            widgets.HBox([self.grid, widgets.VBox([self.report, self.verdict])]),
        ])
        self._new_report()

    def _view(self):
        return self.data["samples"][self.sample_select.value][self.mode_select.value]

    def _new_report(self, change=None):
        view = self._view()
        # Set max before value so the slider never clamps the new position.
        self.token_slider.max = max(self.token_slider.max, len(view["tokens"]) - 1)
        self.token_slider.value = _first_grounded(view)
        self.token_slider.max = len(view["tokens"]) - 1
        self._refresh()

    def _refresh(self, change=None):
        state = render_state(self.data, self.sample_select.value, self.mode_select.value,
                             self.layer_select.value, self.head_select.value,
                             self.token_slider.value)
        self.grid.value, self.report.value, self.verdict.value = (
            state["grid"], state["report"], state["verdict"])


# -- the static, kernel-free version -------------------------------------------------------------
_SCRIPT = r"""
(function () {
  var root = document.getElementById("__UID__");
  var data = JSON.parse(root.querySelector("script.medsight-data").textContent);
  var palette = __PALETTE__, scale = __SCALE__;
  var noLesion = __NO_LESION__, noFinding = __NO_FINDING__;
  function q(name) { return root.querySelector(".medsight-" + name); }
  var sample = q("sample"), mode = q("mode"), layer = q("layer"), head = q("head");
  var slider = q("token-slider");
  function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
  function fmt(v) { return (Math.floor(v * 100 + 0.5) / 100).toFixed(2); }
  function any(xs) { return xs.some(function (x) { return x !== 0; }); }
  function argmax(xs) {  // the first maximum, like Python's row.index(max(row))
    var k = 0;
    xs.forEach(function (x, i) { if (x > xs[k]) k = i; });
    return k;
  }
  function sampleData() { return data.samples[+sample.value]; }
  function view() { return sampleData()[mode.value]; }
  function row(v, t) {
    var heads = v.attention[+layer.value];
    if (head.value !== "mean") return heads[+head.value][t].slice();
    return heads[0][t].map(function (_, p) {
      var total = 0;
      heads.forEach(function (h) { total += h[t][p]; });
      return total / heads.length;
    });
  }
  function target(s, v, t) {  // what the word at t is scored against (word_target in Python)
    if (!s.film) return {mask: s.lesion_mask, region: "the lesion", empty: noLesion, outline: null};
    var name = v.finding[t];
    if (name === null) {
      return {mask: s.lesion_mask, region: "the findings of the film", empty: noFinding,
              outline: s.film.lesion_outline};
    }
    var found = s.film.findings.filter(function (f) { return f.name === name; })[0];
    if (found) {
      return {mask: found.mask, region: "the " + name, empty: noFinding,
              outline: found.patch_outline};
    }
    return {mask: s.lesion_mask.map(function () { return 0; }), region: "the " + name,
            empty: ["hallucinated", "This film has no " + name + ": the sentence states a " +
                    "finding that is not there, so no patch can be right."], outline: null};
  }
  function verdict(r, g, grounded) {
    if (!any(r)) return ["unread", "Position not read by the model: generation stopped before it."];
    if (!any(g.mask)) return g.empty;
    var top = argmax(r), hit = g.mask[top] === 1;
    var patches = [];
    g.mask.forEach(function (v, p) { if (v) patches.push(p); });
    var text = "Pointing game: " + (hit ? "hit" : "miss") + ". The most-attended patch, " +
      top + ", lies " + (hit ? "inside" : "outside") + " " + g.region + " (patches " +
      patches.join(", ") + ").";
    if (!grounded) text += " Not a finding word: the course scores finding words only.";
    return [hit ? "hit" : "miss", text];
  }
  function gridHtml(r, mask) {
    var top = any(r) ? argmax(r) : -1;
    return r.map(function (value, p) {
      var shade = Math.min(palette.length - 1, Math.floor(value * palette.length));
      var outline = mask[p] ? "box-shadow:0 0 0 2px #000;border:3px solid #fff"
                            : "border:3px solid transparent";
      return '<div title="patch ' + p + '" style="background:' + palette[shade] + ";color:" +
        (shade < 18 ? "#fff" : "#000") + ";" + outline + '"><small>' + p + "</small><br>" +
        (p === top ? "&#x2715; " : "") + fmt(value) + "</div>";
    }).join("");
  }
  function filmHtml(s, r, g, focus) {  // _film_html in Python
    var film = s.film, height = film.height, width = film.width;
    var side = Math.round(Math.sqrt(r.length));
    var cellW = Math.floor(width * scale / side), cellH = Math.floor(height * scale / side);
    var peak = Math.max.apply(null, r), top = any(r) ? argmax(r) : -1;
    var cells = r.map(function (value, p) {
      var rel = peak > 0 ? value / peak : 0;
      var shade = Math.min(palette.length - 1, Math.floor(rel * palette.length));
      return '<div class="medsight-heat" data-patch="' + p + '" title="patch ' + p + ": " +
        fmt(value) + '" style="position:absolute;left:' + (p % side) * cellW + "px;top:" +
        Math.floor(p / side) * cellH + "px;width:" + cellW + "px;height:" + cellH +
        "px;background:" + palette[shade] + ";opacity:" + fmt(0.1 + 0.6 * rel) + '"></div>';
    });
    var lines = film.findings.map(function (f) {
      return '<path class="medsight-outline" data-finding="' + esc(f.name) + '" d="' +
        f.outline + '" fill="none" stroke="' + f.colour + '" stroke-width="' +
        (f.name === focus ? 3 : 1.5) + '" vector-effect="non-scaling-stroke"/>';
    });
    if (g.outline) {
      lines.push('<path class="medsight-target" d="' + g.outline + '" fill="none" ' +
                 'stroke="#fff" stroke-width="1.5" stroke-dasharray="5 4" ' +
                 'vector-effect="non-scaling-stroke"/>');
    }
    if (top >= 0) {
      var size = Math.floor(height / side), half = Math.floor(size / 2);
      lines.push('<text class="medsight-top" x="' + ((top % side) * size + half) + '" y="' +
                 (Math.floor(top / side) * size + half) + '" font-size="' + size +
                 '" fill="#fff" stroke="#000" stroke-width="0.4" text-anchor="middle" ' +
                 'dominant-baseline="central">&#x2715;</text>');
    }
    var legend = film.findings.map(function (f) {
      return '<span style="margin-right:8px"><span style="display:inline-block;width:10px;' +
        "height:10px;background:" + f.colour + '"></span> ' + esc(f.name) + "</span>";
    }).join("");
    var peakText = top >= 0 ? "&#x2715; most-attended patch " + top + ": " + fmt(peak) +
      " of the attention" : "no attention (position not read)";
    var w = width * scale, h = height * scale;
    return '<div style="position:relative;width:' + w + "px;height:" + h + 'px">' +
      '<img class="medsight-film-image" src="' + film.png + '" alt="chest film ' + s.index +
      '" width="' + w + '" height="' + h + '" style="position:absolute;left:0;top:0;' +
      'image-rendering:pixelated">' + cells.join("") + '<svg viewBox="0 0 ' + width + " " +
      height + '" width="' + w + '" height="' + h + '" style="position:absolute;left:0;top:0;' +
      'pointer-events:none">' + lines.join("") + "</svg></div>" +
      '<div class="medsight-legend" style="margin-top:4px">' +
      (legend || "normal film: no finding to outline") + "</div>" +
      '<div style="max-width:' + w + 'px">' + peakText + " (uniform: 1/" + r.length +
      " each). Dashed: the patches the pointing game counts as inside.</div>";
  }
  function render() {
    var s = sampleData(), v = view(), t = +slider.value, r = row(v, t), g = target(s, v, t);
    q("grid").innerHTML = s.film ? filmHtml(s, r, g, v.finding[t]) : gridHtml(r, g.mask);
    q("report").innerHTML = v.tokens.map(function (tok, k) {
      var style = v.grounded[k] ? "text-decoration:underline dotted;" : "";
      if (k === t) {
        style += "background:#fde725;color:#000;font-weight:bold;outline:1px solid #000;";
      }
      return '<span style="' + style + 'padding:0 2px">' + esc(tok) + "</span>";
    }).join(" ");
    q("step").innerHTML = "Step " + t + " reads &laquo;" + esc(v.tokens[t]) +
      "&raquo; and predicts &laquo;" +
      (t + 1 < v.tokens.length ? esc(v.tokens[t + 1]) : "nothing") +
      "&raquo;. Underlined: finding words.";
    var outcome = verdict(r, g, v.grounded[t]), box = q("verdict");
    box.setAttribute("data-verdict", outcome[0]);
    box.textContent = outcome[1];
  }
  function newReport() {
    var v = view(), first = v.grounded.indexOf(true);
    slider.max = v.tokens.length - 1;
    slider.value = first < 0 ? 0 : first;
    render();
  }
  sample.addEventListener("change", newReport);
  mode.addEventListener("change", newReport);
  layer.addEventListener("change", render);
  head.addEventListener("change", render);
  slider.addEventListener("input", render);
})();
"""


def _options(pairs, selected):
    return "".join(f'<option value="{html.escape(str(value))}"'
                   f'{" selected" if value == selected else ""}>{html.escape(label)}</option>'
                   for label, value in pairs)


def explorer_html(data, mode="teacher_forced"):
    """The explorer as one self-contained HTML fragment (display it with IPython.display.HTML),
    opening on the report of `mode`.

    It renders its initial state on the server, so it reads even where scripts don't run; with
    scripts it updates live. Element ids come from a hash of the data and a per-session counter:
    unique on a page, identical on every fresh run (notebook outputs are compared byte for byte).
    """
    _check_data(data)
    _check_mode(mode)
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True)
    uid = (f"medsight-explorer-{hashlib.sha1(payload.encode()).hexdigest()[:10]}"
           f"-{next(_instances)}")
    layer = data["n_layers"] - 1
    view = data["samples"][0][mode]
    t = _first_grounded(view)
    state = render_state(data, 0, mode, layer, "mean", t)
    selects = "".join(
        f'<label style="margin-right:10px">{name} <select class="medsight-{name}">'
        f'{_options(pairs, selected)}</select></label>'
        for name, pairs, selected in [
            ("sample", [(_sample_label(s), k) for k, s in enumerate(data["samples"])], 0),
            ("mode", [(v, k) for k, v in MODES.items()], mode),
            ("layer", [(f"layer {l}", l) for l in range(data["n_layers"])], layer),
            ("head", [("mean of heads", "mean")] + [(f"head {h}", h)
                                                    for h in range(data["n_heads"])], "mean"),
        ])
    # "</" inside a <script> would end it early; "<\/" is the same string to JSON.
    embedded = payload.replace("</", "<\\/")
    script = (_SCRIPT.replace("__UID__", uid).replace("__PALETTE__", json.dumps(PALETTE))
              .replace("__SCALE__", str(FILM_SCALE))
              .replace("__NO_LESION__", json.dumps(list(NO_LESION)))
              .replace("__NO_FINDING__", json.dumps(list(NO_FINDING))))
    return (
        f'<div class="medsight-explorer" id="{uid}" style="font:13px sans-serif">'
        f'<div style="margin-bottom:6px">{selects}</div>'
        f'<label>token <input type="range" class="medsight-token-slider" min="0" '
        f'max="{len(view["tokens"]) - 1}" step="1" value="{t}" style="width:320px"></label>'
        f'<div style="display:flex;gap:18px;align-items:flex-start;margin-top:8px">'
        f'{state["grid"]}<div style="max-width:480px">{state["report"]}{state["verdict"]}</div>'
        f'</div>'
        f'<script type="application/json" class="medsight-data">{embedded}</script>'
        f'<script>{script}</script></div>'
    )
