"""The grounding explorer: its data, its verdicts, the live widget and the kernel-free HTML."""

import base64
import html
import io
import itertools
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import medsight_lab as ml
from medsight_lab import explorer
from medsight_lab.data import SyntheticRadiologyDataset
from medsight_lab.model import GroundedReportVLM, ModelConfig
from medsight_lab.rendered import (RENDERED_FINDINGS, RenderedChestXrayDataset, image_patches,
                                   patch_grid_to_pixels)


def peaked(patch, weight=0.7):
    """An attention row (16 patches) with `weight` on one patch, the rest spread evenly."""
    row = [round((1 - weight) / 15, 3)] * 16
    row[patch] = weight
    return row


ZERO = [0.0] * 16


@pytest.fixture
def data():
    """Two layers, two heads. Nodule image (lesion: patches 0, 1) and a normal image.

    Nodule, teacher-forced, last layer: <bos> looks at patch 15 (miss), "small" at 0 (hit);
    at "nodule" head 0 looks at 12 and head 1 at 1, so the mean misses while head 1 hits.
    Layer 0 misses everywhere. Generated: "<eos>" is never read (zero row).
    """
    last = [[peaked(15), peaked(0), peaked(12, 0.9), peaked(3)],
            [peaked(15), peaked(0), peaked(1, 0.5), peaked(3)]]
    first = [[peaked(15)] * 4, [peaked(15)] * 4]
    tokens = ["<bos>", "small", "nodule", "<eos>"]
    normal_tokens = ["<bos>", "lungs", "are", "clear", ".", "<eos>"]
    normal_attn = [[[peaked(5)] * 6] * 2] * 2
    return {
        "n_layers": 2, "n_heads": 2,
        "samples": [
            {"index": 7, "finding_name": "nodule", "lesion_mask": [1, 1] + [0] * 14,
             "teacher_forced": {"tokens": tokens, "grounded": [False, True, True, False],
                                "attention": [first, last]},
             "generated": {"tokens": tokens, "grounded": [False, True, True, False],
                           "attention": [[h[:3] + [ZERO] for h in first],
                                         [h[:3] + [ZERO] for h in last]]}},
            {"index": 3, "finding_name": "normal", "lesion_mask": [0] * 16,
             "teacher_forced": {"tokens": normal_tokens, "grounded": [False] * 6,
                                "attention": normal_attn},
             "generated": {"tokens": normal_tokens, "grounded": [False] * 6,
                           "attention": normal_attn}},
        ],
    }


def outcome(verdict_html):
    return re.search(r'data-verdict="([^"]+)"', verdict_html).group(1)


# -- pure functions ------------------------------------------------------------------------------
def test_attention_row_averages_the_heads(data):
    view = data["samples"][0]["teacher_forced"]
    mean = explorer.attention_row(view, 1, "mean", 2)
    assert mean[12] == pytest.approx((0.9 + 0.033) / 2)
    assert mean[1] == pytest.approx((0.007 + 0.5) / 2)
    assert explorer.attention_row(view, 1, 1, 2) == peaked(1, 0.5)


def test_pointing_game_and_verdicts():
    lesion = [1, 1] + [0] * 14
    assert explorer.pointing_game(peaked(1), lesion) is True
    assert explorer.pointing_game(peaked(2), lesion) is False
    assert explorer.pointing_game(peaked(1), [0] * 16) is None
    assert explorer.pointing_game(ZERO, lesion) is None
    assert explorer.verdict(peaked(1), lesion, True)[0] == "hit"
    outcome_, text = explorer.verdict(peaked(9), lesion, False)
    assert outcome_ == "miss" and "patch, 9," in text and "Not a finding word" in text
    assert explorer.verdict(peaked(1), [0] * 16, True)[0] == "n/a"
    assert explorer.verdict(ZERO, lesion, True)[0] == "unread"


# -- the widget ----------------------------------------------------------------------------------
def test_widget_verdict_follows_the_token_slider(data):
    widget = explorer.GroundingExplorer(data)
    assert widget.token_slider.value == 1                 # starts on the first finding word
    assert widget.token_slider.max == 3
    assert outcome(widget.verdict.value) == "hit"
    assert "&laquo;small&raquo;" in widget.report.value
    widget.token_slider.value = 0
    assert outcome(widget.verdict.value) == "miss"
    assert "Not a finding word" in widget.verdict.value
    assert "&#x2715; 0.70" in widget.grid.value           # patch 15 marked as the argmax


def test_widget_verdict_follows_layer_head_mode_and_sample(data):
    widget = explorer.GroundingExplorer(data)
    widget.layer_select.value = 0
    assert outcome(widget.verdict.value) == "miss"        # layer 0 looks at patch 15
    widget.layer_select.value = 1
    widget.token_slider.value = 2
    assert outcome(widget.verdict.value) == "miss"        # mean of heads: patch 12
    widget.head_select.value = 1
    assert outcome(widget.verdict.value) == "hit"         # head 1: patch 1
    widget.mode_select.value = "generated"
    widget.token_slider.value = 3
    assert outcome(widget.verdict.value) == "unread"
    widget.sample_select.value = 1
    assert widget.token_slider.max == 5
    assert outcome(widget.verdict.value) == "n/a"


def test_widget_refuses_data_without_samples():
    with pytest.raises(ValueError, match="samples"):
        explorer.GroundingExplorer({"n_layers": 1, "n_heads": 1, "samples": []})


# -- the static HTML -----------------------------------------------------------------------------
def test_html_is_self_contained_and_embeds_the_data(data):
    page = explorer.explorer_html(data)
    assert "http" not in page and not re.search(r"<script[^>]*\bsrc=", page)
    assert 'class="medsight-explorer"' in page
    assert re.search(r'<input type="range" class="medsight-token-slider" min="0" max="3"[^>]*'
                     r'value="1"', page)
    assert 'class="medsight-verdict" data-verdict="hit"' in page   # initial state, pre-rendered
    embedded = re.search(r'<script type="application/json" class="medsight-data">(.*?)</script>',
                         page).group(1)
    assert json.loads(embedded) == data


def test_html_ids_are_unique_per_instance_but_identical_across_runs(data, monkeypatch):
    first, second = explorer.explorer_html(data), explorer.explorer_html(data)
    ids = [re.search(r'class="medsight-explorer" id="([^"]+)"', p).group(1)
           for p in (first, second)]
    assert ids[0] != ids[1]
    monkeypatch.setattr(explorer, "_instances", itertools.count())      # a fresh kernel
    rerun = explorer.explorer_html(data)
    monkeypatch.setattr(explorer, "_instances", itertools.count())
    assert explorer.explorer_html(data) == rerun


def test_html_survives_a_closing_script_tag_in_the_data(data):
    data["samples"][0]["finding_name"] = "</script><b>"
    page = explorer.explorer_html(data)
    assert page.count("</script>") == 2
    embedded = re.search(r'class="medsight-data">(.*?)</script>', page).group(1)
    assert json.loads(embedded)["samples"][0]["finding_name"] == "</script><b>"


# Runs the page's script against a minimal fake DOM: sets controls, fires their events and
# reports what the script wrote.
NODE_HARNESS = r"""
const fs = require("fs");
const [pagePath, ...steps] = process.argv.slice(2);
const page = fs.readFileSync(pagePath, "utf8");
const uid = page.match(/class="medsight-explorer" id="([^"]+)"/)[1];
const payload = page.match(/class="medsight-data">([\s\S]*?)<\/script>/)[1];
const code = page.match(/<script>([\s\S]*?)<\/script><\/div>$/)[1];
function element(props) {
  const listeners = {}, attrs = {};
  return Object.assign({
    innerHTML: "", textContent: "", value: "",
    addEventListener(type, fn) { listeners[type] = fn; },
    fire(type) { listeners[type](); },
    setAttribute(k, v) { attrs[k] = String(v); },
    getAttribute(k) { return attrs[k]; },
  }, props);
}
const els = {"script.medsight-data": element({textContent: payload})};
for (const name of ["sample", "mode", "layer", "head", "token-slider", "grid", "report", "step",
                    "verdict"]) els[".medsight-" + name] = element({});
Object.assign(els[".medsight-sample"], {value: "0"});
Object.assign(els[".medsight-mode"], {value: "teacher_forced"});
Object.assign(els[".medsight-head"], {value: "mean"});
els[".medsight-layer"].value = page.match(/<option value="(\d+)" selected>layer/)[1];
els[".medsight-token-slider"].value = page.match(/medsight-token-slider"[^>]*value="(\d+)"/)[1];
global.document = {getElementById: (id) => id === uid ? {querySelector: (s) => els[s]} : null};
new Function(code)();
const out = [];
for (const step of steps) {
  const [name, value] = step.split("=");
  els[".medsight-" + name].value = value;
  els[".medsight-" + name].fire(name === "token-slider" ? "input" : "change");
  out.push({verdict: els[".medsight-verdict"].getAttribute("data-verdict"),
            text: els[".medsight-verdict"].textContent, grid: els[".medsight-grid"].innerHTML,
            token: String(els[".medsight-token-slider"].value),
            max: String(els[".medsight-token-slider"].max)});
}
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_html_script_updates_like_the_python_version(data, tmp_path):
    (tmp_path / "page.html").write_text(explorer.explorer_html(data))
    (tmp_path / "harness.js").write_text(NODE_HARNESS)
    steps = ["token-slider=0", "token-slider=2", "head=1", "layer=0", "mode=generated",
             "token-slider=3", "sample=1"]
    result = subprocess.run(["node", str(tmp_path / "harness.js"), str(tmp_path / "page.html"),
                             *steps], capture_output=True, text=True, timeout=30, check=True)
    states = json.loads(result.stdout)
    assert [s["verdict"] for s in states] == ["miss", "miss", "hit", "miss", "miss", "unread",
                                              "n/a"]
    assert states[-1]["max"] == "5" and states[-1]["token"] == "0"
    # The script's grid and verdict are exactly what the Python side renders for the same state.
    settings = [(0, "teacher_forced", 1, "mean", 0), (0, "teacher_forced", 1, "mean", 2),
                (0, "teacher_forced", 1, 1, 2), (0, "teacher_forced", 0, 1, 2),
                (0, "generated", 0, 1, 1), (0, "generated", 0, 1, 3), (1, "generated", 0, 1, 0)]
    for state, setting in zip(states, settings):
        expected = explorer.render_state(data, *setting)
        assert expected["grid"].endswith(state["grid"] + "</div>")
        assert f">{state['text']}</div>" in expected["verdict"]


# -- explorer_data against the package's model and dataset ---------------------------------------
def test_explorer_data_from_the_model_and_dataset():
    torch.manual_seed(0)
    dataset = SyntheticRadiologyDataset(n_samples=12, d_vision=8, seed=1)
    model = GroundedReportVLM.from_config(ModelConfig(d_vision=8, d_model=16, num_heads=2,
                                                      num_layers=2)).train()
    indices = [0, 5]
    data = explorer.explorer_data(model, dataset, indices)
    subset = torch.utils.data.Subset(dataset, indices)              # how chapters hold val_set
    assert explorer.explorer_data(model, subset, [0, 1])["samples"][1]["generated"] == \
        data["samples"][1]["generated"]
    assert model.training                                        # mode restored
    assert (data["n_layers"], data["n_heads"]) == (2, 2)
    assert json.loads(json.dumps(data)) == data                  # plain, JSON-ready
    for sample, i in zip(data["samples"], indices):
        item = dataset[i]
        assert sample["index"] == i and sample["finding_name"] == item["finding_name"]
        assert sample["lesion_mask"] == item["lesion_mask"].int().tolist()
        teacher = sample["teacher_forced"]
        assert teacher["tokens"] == dataset.decode_tokens(item["token_ids"])
        n = len(teacher["tokens"])
        assert teacher["grounded"] == (item["finding_mask"][:n].sum(-1) > 0).tolist()
        with torch.no_grad():
            _, attn = model.eval()(item["patches"][None], item["token_ids"][None])
        model.train()
        expected = attn[-1][0, :, :n].double()
        stored = torch.tensor(teacher["attention"][-1], dtype=torch.float64)
        assert torch.allclose(stored, expected, atol=6e-4)
        assert all(round(v, 3) == v for v in teacher["attention"][0][1][2])
        generated = sample["generated"]
        assert len(generated["attention"][0][0]) == len(generated["tokens"])
        for layer in generated["attention"]:                     # the last token is never read
            assert all(head[-1] == [0.0] * 16 for head in layer)
            assert all(any(head[0]) for head in layer)           # <bos> is


def test_explorer_data_needs_indices():
    with pytest.raises(ValueError, match="indices"):
        explorer.explorer_data(None, None, [])


# == the second world: the explorer on films ======================================================


@pytest.fixture(scope="module")
def films():
    return RenderedChestXrayDataset(40, seed=3)


def _film_with(films, *names):
    """The first film whose positive findings are exactly `names`."""
    for i, label in enumerate(films.labels):
        if sorted(f for f in RENDERED_FINDINGS if label[f]["status"] == "positive") == sorted(names):
            return i
    raise LookupError(names)


def _film_sample(films, i, present):
    return explorer.film_data(films.images[i], films.pixel_masks[i], films.finding_masks[i],
                              present)


def peaked64(patch, weight=0.5):
    row = [round((1 - weight) / 63, 3)] * 64
    row[patch] = weight
    return row


def edges_of_path(path):
    """The unit pixel edges an outline path draws, as {("h", x, y), ("v", x, y)}."""
    edges = set()
    for x, y, kind, n in re.findall(r"M(\d+) (\d+)([hv])(\d+)", path):
        x, y, n = int(x), int(y), int(n)
        for k in range(n):
            edges.add(("h", x + k, y) if kind == "h" else ("v", x, y + k))
    assert "".join(f"M{x} {y}{kd}{n}" for x, y, kd, n in
                   re.findall(r"M(\d+) (\d+)([hv])(\d+)", path)) == path    # nothing else in it
    return edges


def boundary_edges(mask):
    """Brute force: every pixel edge with the mask on one side only."""
    mask = torch.as_tensor(mask).bool()
    H, W = mask.shape
    inside = lambda y, x: 0 <= y < H and 0 <= x < W and bool(mask[y, x])    # noqa: E731
    edges = set()
    for y in range(H + 1):
        for x in range(W):
            if inside(y - 1, x) != inside(y, x):
                edges.add(("h", x, y))
    for y in range(H):
        for x in range(W + 1):
            if inside(y, x - 1) != inside(y, x):
                edges.add(("v", x, y))
    return edges


@pytest.fixture
def film_data(films):
    """One layer, two heads, over a real film with an effusion and a pneumothorax, and a normal
    film. Teacher-forced tokens of the first film: <bos> reads patch `out` (outside both
    findings), "effusion" reads a patch of the effusion, "pneumothorax" one of the effusion too
    (a miss: its own mask is the pneumothorax's). Generated: "nodule", a finding the film does not
    have; <eos> never read."""
    i = _film_with(films, "effusion", "pneumothorax")
    film = _film_sample(films, i, ["effusion", "pneumothorax"])
    eff, ptx = (set(p for p, v in enumerate(f["mask"]) if v) for f in film["findings"])
    p_eff = min(eff - ptx)
    out = min(set(range(64)) - eff - ptx)
    tokens = ["<bos>", "large", "effusion", ".", "small", "pneumothorax", ".", "<eos>"]
    finding = [None, "effusion", "effusion", None, "pneumothorax", "pneumothorax", None, None]
    rows = [peaked64(out), peaked64(p_eff), peaked64(p_eff), peaked64(out), peaked64(out),
            peaked64(p_eff), peaked64(out), peaked64(out)]
    gen_tokens = ["<bos>", "nodule", "in", "the", "left", "upper", "zone", ".", "<eos>"]
    gen_finding = [None, "nodule", None, None, "nodule", "nodule", "nodule", None, None]
    gen_rows = [peaked64(p_eff)] * 8 + [[0.0] * 64]
    j = _film_with(films)                                   # a normal film
    normal_tokens = ["<bos>", "no", "pneumothorax", ".", "<eos>"]
    lesion = [int(p in eff | ptx) for p in range(64)]
    return {
        "n_layers": 1, "n_heads": 2, "p_eff": p_eff, "out": out, "film_index": i,
        "samples": [
            {"index": i, "finding_name": "effusion, pneumothorax", "lesion_mask": lesion,
             "film": film,
             "teacher_forced": {"tokens": tokens, "grounded": [f is not None for f in finding],
                                "finding": finding, "attention": [[rows, rows]]},
             "generated": {"tokens": gen_tokens, "grounded": [f is not None for f in gen_finding],
                           "finding": gen_finding, "attention": [[gen_rows, gen_rows]]}},
            {"index": j, "finding_name": "normal", "lesion_mask": [0] * 64,
             "film": _film_sample(films, j, []),
             "teacher_forced": {"tokens": normal_tokens, "grounded": [False] * 5,
                                "finding": [None] * 5, "attention": [[[peaked64(3)] * 5] * 2]},
             "generated": {"tokens": normal_tokens, "grounded": [False] * 5,
                           "finding": [None] * 5, "attention": [[[peaked64(3)] * 5] * 2]}},
        ],
    }


def heat_cells(grid_html):
    """{patch: (left, top, width, height, opacity)} of the heatmap squares of a film's map."""
    return {int(p): (int(l), int(t), int(w), int(h), float(o)) for p, l, t, w, h, o in re.findall(
        r'<div class="medsight-heat" data-patch="(\d+)" title="[^"]*" style="position:absolute;'
        r'left:(\d+)px;top:(\d+)px;width:(\d+)px;height:(\d+)px;background:#[0-9a-f]{6};'
        r'opacity:([0-9.]+)"></div>', grid_html)}


def png_pixels(grid_html):
    from PIL import Image
    uri = re.search(r'<img class="medsight-film-image" src="data:image/png;base64,([^"]+)"',
                    grid_html).group(1)
    return torch.from_numpy(np.array(Image.open(io.BytesIO(base64.b64decode(uri))))).reshape(-1)


# -- pure functions on arrays --------------------------------------------------------------------
def test_patch_grid_to_pixels_puts_each_patch_on_its_pixels(films):
    image = films.images[0]                                   # (1, 64, 64)
    patches = image_patches(films.images[:1], 8)[0]           # (64, 64): the model's patch order
    for p in (0, 13, 41, 63):                                 # 13 and 41 swap under a transpose
        heat = patch_grid_to_pixels(peaked64(p), 64, 64)
        assert heat.shape == (64, 64)
        hot = torch.from_numpy(heat == heat.max())
        assert int(hot.sum()) == 64                           # one 8 x 8 block
        assert torch.equal(image[0][hot], patches[p])         # ... holding patch p's pixels
        y, x = divmod(int(heat.argmax()), 64)
        assert (y // 8) * 8 + x // 8 == p
    values = torch.rand(64).tolist()
    heat = patch_grid_to_pixels(values, 64, 64)
    assert heat[5, 60] == pytest.approx(values[7]) and heat[63, 0] == pytest.approx(values[56])


@pytest.mark.parametrize("values, size, message", [
    ([0.1] * 63, 64, "square"), ([0.1] * 64, 60, "tile"), ([[0.1] * 8] * 8, 64, r"\(N,\)"),
    ([], 64, r"\(N,\)")])
def test_patch_grid_to_pixels_refuses_bad_input(values, size, message):
    with pytest.raises(ValueError, match=message):
        patch_grid_to_pixels(values, size, size)


def test_outline_path_draws_exactly_the_mask_boundary(films):
    gen = torch.Generator().manual_seed(0)
    masks = [torch.zeros(6, 7), torch.ones(3, 3), torch.rand(12, 10, generator=gen) > 0.6,
             films.pixel_masks[_film_with(films, "effusion", "pneumothorax")][3]]
    holed = torch.ones(5, 5)
    holed[2, 2] = 0                                           # a hole has a boundary too
    for mask in masks + [holed]:
        assert edges_of_path(explorer.outline_path(mask)) == boundary_edges(mask)
    assert explorer.outline_path(torch.zeros(4, 4)) == ""
    assert explorer.outline_path(torch.ones(1, 2)) == "M0 0h2M0 1h2M0 0v1M2 0v1"
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        explorer.outline_path(torch.ones(2, 2, 2))


def test_film_png_holds_the_film(films):
    from PIL import Image
    uri = explorer.film_png(films.images[4])
    assert uri.startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.mode == "L" and img.size == (64, 64)
    expected = (films.images[4, 0].double().clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(torch.from_numpy(np.array(img)), expected)
    assert explorer.film_png(films.images[4]) == uri           # the same bytes every time
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        explorer.film_png(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        explorer.film_png(torch.full((8, 8), float("nan")))


def test_film_data_outlines_the_films_findings(films):
    i = _film_with(films, "effusion", "pneumothorax")
    film = _film_sample(films, i, ["effusion", "pneumothorax"])
    assert [f["name"] for f in film["findings"]] == ["effusion", "pneumothorax"]
    for f in film["findings"]:
        k = RENDERED_FINDINGS.index(f["name"])
        assert f["mask"] == films.finding_masks[i, k].int().tolist()
        assert edges_of_path(f["outline"]) == boundary_edges(films.pixel_masks[i, k])
        blocks = patch_grid_to_pixels(f["mask"], 64, 64)
        assert edges_of_path(f["patch_outline"]) == boundary_edges(torch.from_numpy(blocks))
    union = patch_grid_to_pixels(films.lesion_mask[i].tolist(), 64, 64)
    assert edges_of_path(film["lesion_outline"]) == boundary_edges(torch.from_numpy(union))
    with pytest.raises(ValueError, match="unknown findings"):
        _film_sample(films, i, ["fracture"])
    with pytest.raises(ValueError, match="pixel_masks"):
        explorer.film_data(films.images[i], films.pixel_masks[i, :3], films.finding_masks[i], [])


# -- the map over the film -----------------------------------------------------------------------
def test_film_map_puts_the_attention_on_the_attended_patch(films, film_data):
    p = film_data["p_eff"]
    state = explorer.render_state(film_data, 0, "teacher_forced", 0, 0, 1)    # "large", head 0
    grid = state["grid"]
    assert grid.startswith('<div class="medsight-grid medsight-film"')
    cells = heat_cells(grid)
    assert sorted(cells) == list(range(64))
    # The squares tile the 256 x 256 film exactly, each 8 film pixels (32 screen pixels) wide.
    scale = explorer.FILM_SCALE
    covered = torch.zeros(64 * scale, 64 * scale, dtype=torch.int)
    for left, top, w, h, _ in cells.values():
        assert w == h == 8 * scale
        covered[top:top + h, left:left + w] += 1
    assert bool((covered == 1).all())
    # The most opaque square, and the ✕, sit on the attended patch's pixels: the film pixels under
    # it are patch p of the model's input.
    opacity = {q: c[4] for q, c in cells.items()}
    assert max(opacity, key=opacity.get) == p and opacity[p] == 0.7
    assert all(o < 0.2 for q, o in opacity.items() if q != p)
    left, top = cells[p][0] // scale, cells[p][1] // scale
    pixels = png_pixels(grid).reshape(64, 64)
    expected = (image_patches(films.images[film_data["film_index"]][None], 8)[0, p]
                .double().clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(pixels[top:top + 8, left:left + 8].reshape(-1), expected)
    x, y = (int(v) for v in re.search(r'<text class="medsight-top" x="(\d+)" y="(\d+)"',
                                      grid).groups())
    assert (left <= x < left + 8) and (top <= y < top + 8)
    # Every finding of the film is outlined in its colour; the stated one thicker, its patches dashed.
    effusion = film_data["samples"][0]["film"]["findings"][0]
    assert f'data-finding="effusion" d="{effusion["outline"]}" fill="none" stroke="#F0E442" ' \
           f'stroke-width="3"' in grid
    assert 'data-finding="pneumothorax"' in grid and 'stroke-width="1.5"' in grid
    assert f'class="medsight-target" d="{effusion["patch_outline"]}"' in grid


def test_film_verdicts_score_the_stated_finding(film_data):
    hit = explorer.render_state(film_data, 0, "teacher_forced", 0, "mean", 2)["verdict"]
    assert outcome(hit) == "hit" and "inside the effusion" in hit
    miss = explorer.render_state(film_data, 0, "teacher_forced", 0, "mean", 5)["verdict"]
    assert outcome(miss) == "miss" and "outside the pneumothorax" in miss   # not the union
    other = explorer.render_state(film_data, 0, "teacher_forced", 0, "mean", 0)["verdict"]
    assert outcome(other) == "miss" and "findings of the film" in other \
        and "Not a finding word" in other
    made_up = explorer.render_state(film_data, 0, "generated", 0, "mean", 1)
    assert outcome(made_up["verdict"]) == "hallucinated" and "has no nodule" in made_up["verdict"]
    assert "medsight-target" not in made_up["grid"]
    unread = explorer.render_state(film_data, 0, "generated", 0, "mean", 8)
    assert outcome(unread["verdict"]) == "unread" and "medsight-top" not in unread["grid"]
    normal = explorer.render_state(film_data, 1, "teacher_forced", 0, "mean", 2)
    assert outcome(normal["verdict"]) == "n/a" and "No finding on this film" in normal["verdict"]
    assert "normal film: no finding to outline" in normal["grid"]


def test_finding_word_verdicts(film_data, data):
    films = explorer.finding_word_verdicts(film_data, "teacher_forced", layer=0)
    assert films == [[(1, "large", "effusion", "hit"), (2, "effusion", "effusion", "hit"),
                      (4, "small", "pneumothorax", "miss"),
                      (5, "pneumothorax", "pneumothorax", "miss")], []]
    assert explorer.finding_word_verdicts(film_data)[0] == [
        (t, w, "nodule", "hallucinated") for t, w in [(1, "nodule"), (4, "left"), (5, "upper"),
                                                       (6, "zone")]]
    # The first world: the words against the lesion, on the last layer's mean of heads by default.
    assert explorer.finding_word_verdicts(data, "teacher_forced") == [
        [(1, "small", None, "hit"), (2, "nodule", None, "miss")], []]
    assert explorer.finding_word_verdicts(data, "teacher_forced", head=1)[0][1][3] == "hit"
    with pytest.raises(ValueError, match="mode"):
        explorer.finding_word_verdicts(data, "beam")


def test_film_widget_opens_on_the_generated_report(film_data):
    widget = explorer.GroundingExplorer(film_data, mode="generated")
    assert widget.mode_select.value == "generated" and widget.token_slider.value == 1
    assert outcome(widget.verdict.value) == "hallucinated"
    assert 'class="medsight-grid medsight-film"' in widget.grid.value
    widget.mode_select.value = "teacher_forced"
    assert widget.token_slider.value == 1 and outcome(widget.verdict.value) == "hit"
    widget.token_slider.value = 5
    assert outcome(widget.verdict.value) == "miss"
    assert widget.grid.value == explorer.render_state(film_data, 0, "teacher_forced", 0, "mean",
                                                      5)["grid"]
    widget.sample_select.value = 1
    assert outcome(widget.verdict.value) == "n/a"


def test_explorer_refuses_a_bad_mode_or_film(film_data):
    with pytest.raises(ValueError, match="mode must be one of"):
        explorer.explorer_html(film_data, mode="beam")
    with pytest.raises(ValueError, match="mode must be one of"):
        explorer.GroundingExplorer(film_data, mode="greedy")
    del film_data["samples"][0]["generated"]["finding"]
    with pytest.raises(ValueError, match="'finding' entry per token"):
        explorer.explorer_html(film_data)


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the page's script")
def test_film_html_script_updates_like_the_python_version(film_data, tmp_path):
    page = explorer.explorer_html(film_data, mode="generated")
    assert 'class="medsight-verdict" data-verdict="hallucinated"' in page
    assert not re.search(r'(src|href)="http', page)
    (tmp_path / "page.html").write_text(page)
    (tmp_path / "harness.js").write_text(NODE_HARNESS.replace('{value: "teacher_forced"}',
                                                              '{value: "generated"}'))
    steps = ["token-slider=8", "mode=teacher_forced", "token-slider=2", "token-slider=5",
             "head=1", "token-slider=0", "sample=1"]
    result = subprocess.run(["node", str(tmp_path / "harness.js"), str(tmp_path / "page.html"),
                             *steps], capture_output=True, text=True, timeout=30, check=True)
    states = json.loads(result.stdout)
    assert [s["verdict"] for s in states] == ["unread", "hit", "hit", "miss", "miss", "miss", "n/a"]
    settings = [(0, "generated", 0, "mean", 8), (0, "teacher_forced", 0, "mean", 1),
                (0, "teacher_forced", 0, "mean", 2), (0, "teacher_forced", 0, "mean", 5),
                (0, "teacher_forced", 0, 1, 5), (0, "teacher_forced", 0, 1, 0),
                (1, "teacher_forced", 0, 1, 0)]
    for state, setting in zip(states, settings):
        expected = explorer.render_state(film_data, *setting)
        assert expected["grid"].endswith(state["grid"] + "</div>")
        assert f">{html.escape(state['text'], quote=True)}</div>" in expected["verdict"]


# -- explorer_data on the second world -----------------------------------------------------------
def test_explorer_data_on_films(films):
    torch.manual_seed(0)
    model = ml.default_model(films).train()
    indices = [_film_with(films, "effusion", "pneumothorax"), _film_with(films)]
    data = explorer.explorer_data(model, films, indices)
    assert model.training
    assert json.loads(json.dumps(data)) == data
    assert (data["n_layers"], data["n_heads"]) == (2, 4)
    for sample, i in zip(data["samples"], indices):
        item = films[i]
        assert sample["film"] == _film_sample(
            films, i, [f for f in RENDERED_FINDINGS if films.labels[i][f]["status"] == "positive"])
        teacher = sample["teacher_forced"]
        n = len(teacher["tokens"])
        assert teacher["tokens"] == films.decode_tokens(item["token_ids"])
        # The finding words are the words the dataset grounds, each to its own finding's patches.
        assert teacher["grounded"] == (item["finding_mask"][:n].sum(-1) > 0).tolist()
        for t, name in enumerate(teacher["finding"]):
            if name is not None:
                assert torch.equal(item["finding_mask"][t],
                                   item["finding_masks"][RENDERED_FINDINGS.index(name)])
        assert len(teacher["attention"][0][0]) == n and len(teacher["attention"][0][0][0]) == 64
        generated = sample["generated"]
        assert len(generated["finding"]) == len(generated["tokens"])
    assert data["samples"][0]["finding_name"] == "effusion, pneumothorax"
    assert data["samples"][1]["finding_name"] == "normal"
    assert any(data["samples"][0]["teacher_forced"]["grounded"])
    # Through a Subset (how a chapter may hold its held-out films): the same films, found by the
    # Subset's indices.
    subset = torch.utils.data.Subset(torch.utils.data.Subset(films, list(range(40))[::-1]),
                                     [39 - i for i in indices])
    via_subset = explorer.explorer_data(model, subset, [0, 1])
    for a, b in zip(via_subset["samples"], data["samples"]):
        assert a["film"] == b["film"] and a["teacher_forced"] == b["teacher_forced"]
