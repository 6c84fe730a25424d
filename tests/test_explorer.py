"""The grounding explorer: its data, its verdicts, the live widget and the kernel-free HTML."""

import itertools
import json
import re
import shutil
import subprocess

import pytest
import torch

from medsight_lab import explorer
from medsight_lab.data import SyntheticRadiologyDataset
from medsight_lab.model import GroundedReportVLM, ModelConfig


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
