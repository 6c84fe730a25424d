"""The grounding explorer: step through a report and see where each word looks.

Two faces on one precomputed data structure:
- `explorer_data(model, dataset, indices)` runs the model once (teacher-forced and free-running)
  and returns plain lists: tokens, per-layer per-head cross-attention, lesion masks. Everything
  after it is a pure function of that dict.
- `GroundingExplorer(data)`: an ipywidgets panel for a live kernel.
- `explorer_html(data)`: the same panel as self-contained HTML + vanilla JavaScript (data embedded
  as JSON, no external script), for the static HTML book where there is no kernel.

Alignment (see CONTRIBUTING.md): row t of a cross-attention map is the query that *reads* token t
and predicts token t + 1, so the slider position t highlights token t. The pointing game asks
whether the most-attended patch lies inside the lesion; the course scores it on finding words only.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import math

import ipywidgets as widgets
import torch
from matplotlib import colormaps
from matplotlib.colors import to_hex

from .data import GROUNDED_WORDS
from .model import eval_mode

MODES = {"teacher_forced": "teacher-forced", "generated": "generated (free-running)"}
DECIMALS = 3                      # attention weights kept in the data: stable across CPU and GPU
PALETTE = [to_hex(colormaps["viridis"](i / 31)) for i in range(32)]   # colour-blind-safe scale
_instances = itertools.count()    # makes element ids unique per page, yet the same on every run


# -- the data ------------------------------------------------------------------------------------
def explorer_data(model, dataset, indices):
    """Run `model` on `dataset[i]` for each i in `indices`, teacher-forced and free-running.

    Returns {"n_layers", "n_heads", "samples": [...]}, each sample a dict with "index",
    "finding_name", "lesion_mask" (N ints) and, per mode ("teacher_forced", "generated"),
    {"tokens": [str], "grounded": [bool], "attention": [layer][head][t][patch]} with one row per
    token (pads dropped) and weights rounded to 3 decimals. In the generated mode, a row of zeros
    marks a position the model never read (the final <eos>).
    """
    indices = list(indices)
    if not indices:
        raise ValueError("indices must name at least one sample of the dataset")
    # A Subset has no decode_tokens; its parent dataset does.
    decoder = getattr(dataset, "dataset", dataset)
    device = next(model.parameters()).device
    samples = []
    with eval_mode(model), torch.no_grad():
        for i in indices:
            item = dataset[i]
            patches = item["patches"][None].to(device)                      # (1, N, d)
            _, attn = model(patches, item["token_ids"][None].to(device))    # L x (1, H, T, N)
            generated = model.generate(patches)
            lesion = [int(v > 0.5) for v in item["lesion_mask"].tolist()]
            samples.append({
                "index": int(i),
                "finding_name": item["finding_name"],
                "lesion_mask": lesion,
                "teacher_forced": _mode_view(decoder, item["token_ids"], attn, any(lesion)),
                "generated": _mode_view(decoder, generated.token_ids[0],
                                        generated.cross_attention, any(lesion)),
            })
    return {"n_layers": len(attn), "n_heads": int(attn[0].shape[1]), "samples": samples}


def _mode_view(decoder, token_ids, attn, has_lesion):
    tokens = decoder.decode_tokens(token_ids.cpu())
    maps = torch.stack([a[0, :, :len(tokens)] for a in attn])                  # (L, H, T, N)
    if maps.shape[2] != len(tokens):
        raise ValueError(f"cross-attention has {maps.shape[2]} rows for {len(tokens)} tokens; "
                         "expected one row per token")
    return {
        "tokens": tokens,
        # The words the grounding loss supervises: finding, side and size words of an image
        # that has a lesion (the same rule as the dataset's finding_mask).
        "grounded": [has_lesion and tok in GROUNDED_WORDS for tok in tokens],
        "attention": maps.double().cpu().numpy().round(DECIMALS).tolist(),
    }


def _check_data(data):
    if not isinstance(data, dict) or not data.get("samples"):
        raise ValueError("data must be explorer_data(...)'s dict with a non-empty 'samples' list")
    for key in ("n_layers", "n_heads"):
        if not isinstance(data.get(key), int) or data[key] < 1:
            raise ValueError(f"data[{key!r}] must be a positive integer")


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


def verdict(row, lesion_mask, grounded):
    """(outcome, sentence): outcome is "hit", "miss", "n/a" or "unread"."""
    if not any(row):
        return "unread", "Position not read by the model: generation stopped before it."
    if not any(lesion_mask):
        return "n/a", "No lesion in this image: the pointing game does not apply."
    top = row.index(max(row))
    lesion = ", ".join(str(p) for p, v in enumerate(lesion_mask) if v)
    hit = pointing_game(row, lesion_mask)
    text = (f"Pointing game: {'hit' if hit else 'miss'}. The most-attended patch, {top}, lies "
            f"{'inside' if hit else 'outside'} the lesion (patches {lesion}).")
    if not grounded:
        text += " Not a finding word: the course scores finding words only."
    return ("hit" if hit else "miss"), text


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


def render_state(data, sample, mode, layer, head, t):
    """HTML of the grid, the report and the verdict for one setting of the controls."""
    s = data["samples"][sample]
    view = s[mode]
    row = attention_row(view, layer, head, t)
    return {"grid": _grid_html(row, s["lesion_mask"]),
            "report": _report_html(view["tokens"], view["grounded"], t),
            "verdict": _verdict_html(*verdict(row, s["lesion_mask"], view["grounded"][t]))}


def _sample_label(s):
    return f"#{s['index']} {s['finding_name']}"


# -- the live widget -----------------------------------------------------------------------------
class GroundingExplorer(widgets.VBox):
    """ipywidgets explorer over `explorer_data(...)`: pick sample, mode, layer and head, slide over
    the tokens; the grounding map, highlighted word and pointing-game verdict follow."""

    def __init__(self, data):
        _check_data(data)
        self.data = data
        self.sample_select = widgets.Dropdown(
            options=[(_sample_label(s), k) for k, s in enumerate(data["samples"])],
            description="sample")
        self.mode_select = widgets.ToggleButtons(options=[(v, k) for k, v in MODES.items()])
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
  var palette = __PALETTE__;
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
  function verdict(r, lesion, grounded) {
    if (!any(r)) return ["unread", "Position not read by the model: generation stopped before it."];
    if (!any(lesion)) return ["n/a", "No lesion in this image: the pointing game does not apply."];
    var top = argmax(r), hit = lesion[top] === 1;
    var patches = [];
    lesion.forEach(function (v, p) { if (v) patches.push(p); });
    var text = "Pointing game: " + (hit ? "hit" : "miss") + ". The most-attended patch, " +
      top + ", lies " + (hit ? "inside" : "outside") + " the lesion (patches " +
      patches.join(", ") + ").";
    if (!grounded) text += " Not a finding word: the course scores finding words only.";
    return [hit ? "hit" : "miss", text];
  }
  function render() {
    var s = sampleData(), v = view(), t = +slider.value, r = row(v, t);
    var top = any(r) ? argmax(r) : -1;
    var cells = r.map(function (value, p) {
      var shade = Math.min(palette.length - 1, Math.floor(value * palette.length));
      var outline = s.lesion_mask[p] ? "box-shadow:0 0 0 2px #000;border:3px solid #fff"
                                     : "border:3px solid transparent";
      return '<div title="patch ' + p + '" style="background:' + palette[shade] + ";color:" +
        (shade < 18 ? "#fff" : "#000") + ";" + outline + '"><small>' + p + "</small><br>" +
        (p === top ? "&#x2715; " : "") + fmt(value) + "</div>";
    });
    q("grid").innerHTML = cells.join("");
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
    var outcome = verdict(r, s.lesion_mask, v.grounded[t]), box = q("verdict");
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


def explorer_html(data):
    """The explorer as one self-contained HTML fragment (display it with IPython.display.HTML).

    It renders its initial state on the server, so it reads even where scripts don't run; with
    scripts it updates live. Element ids come from a hash of the data and a per-session counter:
    unique on a page, identical on every fresh run (notebook outputs are compared byte for byte).
    """
    _check_data(data)
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True)
    uid = (f"medsight-explorer-{hashlib.sha1(payload.encode()).hexdigest()[:10]}"
           f"-{next(_instances)}")
    layer, mode = data["n_layers"] - 1, "teacher_forced"
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
    script = _SCRIPT.replace("__UID__", uid).replace("__PALETTE__", json.dumps(PALETTE))
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
