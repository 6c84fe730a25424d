"""Chapter 8's package code: the mark's patch mask, the three test sets, the supervision variants
of the grounding loss, the attention-on-mark score, the shortcut scores and the bootstrap."""

import numpy as np
import pytest
import torch

import medsight_lab as ml
from medsight_lab import shortcuts as sc
from medsight_lab.loss import compute_loss, grounding_loss, outside_attention


@pytest.fixture(scope="module")
def sets():
    return sc.test_sets(400, seed=3)


def test_mark_mask_is_the_marks_patches():
    ds = ml.RenderedChestXrayDataset(120, seed=2, shortcut=(0.9, 0.3))
    plain = sc.without_mark(ds)
    for i in range(len(ds)):
        item = ds[i]
        assert item["mark_mask"].shape == (ds.n_patches,)
        changed = (ds.patches[i] != plain.patches[i]).any(-1).float()    # (N,) patches the mark touched
        assert torch.equal(item["mark_mask"], changed), i
        assert bool(item["mark_mask"].any()) == item["has_mark"]
        # never inside a finding's mask
        assert not (item["mark_mask"] * item["lesion_mask"]).any()
    assert not plain.mark_mask.any()


def test_three_sets_keep_remove_and_invert_the_correlation(sets):
    kept, removed, inverted = (sc.mark_correlation(sets[k]) for k in ("kept", "removed", "inverted"))
    assert kept["n with"] > 40
    assert kept["with finding"] > 0.85 and kept["without finding"] < 0.1
    assert abs(removed["with finding"] - removed["without finding"]) < 0.12
    assert inverted["with finding"] < 0.15 and inverted["without finding"] > 0.9
    # the same films: same reports, same finding masks; only the marks differ
    assert sets["kept"].reports == sets["inverted"].reports
    assert torch.equal(sets["kept"].finding_masks, sets["removed"].finding_masks)


def _attn_and_masks(seed, B=3, T=6, N=5, H=2, layers=2):
    g = torch.Generator().manual_seed(seed)
    attn = [torch.randn(B, H, T, N, generator=g).softmax(-1) for _ in range(layers)]
    masks = torch.zeros(B, T, N)
    masks[0, 2:4, 1] = 1
    masks[1, 3, 2:4] = 1
    return attn, masks


def test_grounding_loss_defaults_unchanged_and_predicts_shifts_one_row():
    attn, masks = _attn_and_masks(0)
    for kind in ("bce", "kl"):
        assert torch.equal(grounding_loss(attn, masks, kind),
                           grounding_loss(attn, masks, kind, "holds", "last", "mean"))
        shifted = torch.cat([masks[:, 1:], torch.zeros_like(masks[:, :1])], 1)
        assert torch.allclose(grounding_loss(attn, masks, kind, rows="predicts"),
                              grounding_loss(attn, shifted, kind))
        assert not torch.allclose(grounding_loss(attn, masks, kind, rows="predicts"),
                                  grounding_loss(attn, masks, kind))
        # every layer: the mean of the per-layer losses
        per_layer = [grounding_loss([a], masks, kind) for a in attn]
        assert torch.allclose(grounding_loss(attn, masks, kind, layers="all"),
                              sum(per_layer) / 2)
    # each head: the head-averaged map can match the mask while no single head does
    target = masks / masks.sum(-1, keepdim=True).clamp_min(1)
    h0, h1 = target.clone(), target.clone()
    h0[1, 3], h1[1, 3] = torch.eye(5)[2], torch.eye(5)[3]        # mask: patches 2 and 3
    attn = [torch.stack([h0, h1], 1)]
    assert grounding_loss(attn, masks, "kl") < 1e-6
    assert grounding_loss(attn, masks, "kl", heads="each") > 0.1
    with pytest.raises(ValueError, match="rows"):
        grounding_loss(attn, masks, "kl", rows="after")


def test_outside_attention_by_hand():
    attn = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])[None, None]     # (1, 1, 2, 3)
    masks = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[None]             # finding: patch 1
    # rows 0 and 1: 0.75 and 1.0 outside patch 1
    assert torch.isclose(outside_attention([attn], masks), torch.tensor(0.875))
    tokens = torch.tensor([[1, 0]])                                          # row 1 is <pad>
    assert torch.isclose(outside_attention([attn], masks, tokens), torch.tensor(0.75))
    # an image without a finding contributes nothing
    assert outside_attention([attn], torch.zeros_like(masks)) == 0
    # compute_loss: the penalty enters the total only
    logits, ids = torch.randn(1, 2, 5), torch.tensor([[1, 3]])
    base = compute_loss(logits, ids, [attn], masks)
    more = compute_loss(logits, ids, [attn], masks, lambda_outside=2.0)
    assert torch.isclose(more[0] - base[0], torch.tensor(2 * 0.875))
    assert all(torch.equal(a, b) for a, b in zip(base[1:], more[1:]))


def test_attention_on_mark_by_hand():
    attn = torch.zeros(1, 4, 3)
    attn[0, :, :] = torch.tensor([[0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [0.5, 0.5, 0.0],
                                  [0.0, 0.0, 1.0]])
    mark = torch.tensor([[1.0, 0.0, 0.0]])
    words = torch.tensor([[False, False, True, True]])
    on_words, before = sc.attention_on_mark(attn, mark, words)
    assert torch.isclose(on_words, torch.tensor(0.25))        # rows 2, 3: 0.5 and 0.0
    assert torch.isclose(before, torch.tensor(0.7))           # rows 1, 2: 0.9 and 0.5


def test_call_scores_and_bootstrap():
    said = np.array([1, 1, 0, 0, 1], bool)
    has = np.array([1, 0, 1, 0, 1], bool)
    s = sc.call_scores(said, has)
    assert s["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert s["hallucination_rate"] == pytest.approx(1 / 3)
    assert s["omission_rate"] == pytest.approx(1 / 3)
    mean, lo, hi = sc.bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert mean == pytest.approx(0.3) and 0.1 <= lo < 0.3 < hi <= 0.5
    d, lo, hi = sc.bootstrap_diff([1.0, 1.1, 0.9], [0.0, 0.1, -0.1])
    assert d == pytest.approx(1.0) and lo > 0.7 and hi < 1.3
    value, lo, hi = sc.bootstrap_films(said, has)
    assert value == pytest.approx(s["f1"]) and lo <= value <= hi


def test_a_model_that_reads_only_the_mark_is_caught(sets, monkeypatch):
    """A stand-in reader that calls the finding exactly when the mark is there: perfect on the
    kept set's marks, wrong on the inverted set, and every call flips without the mark."""
    kept, inverted = sets["kept"], sets["inverted"]

    def fake_read(model, dataset, finding=None):
        mark = np.asarray(dataset.has_mark)
        n, T, N = len(dataset), dataset.max_len, dataset.n_patches
        words = torch.zeros(n, T, dtype=torch.bool)
        words[mark, 3] = True
        attn = torch.full((n, T, N), 1.0 / N)
        attn[:, 2] = dataset.mark_mask                  # the row before the word looks at the mark
        return {"said": mark.copy(), "has": sc.has_finding(dataset), "has_mark": mark,
                "words": words, "attn": [attn], "reports": [""] * n, "finding": "pneumothorax"}

    monkeypatch.setattr(sc, "read_reports", fake_read)
    on_kept, on_inverted = sc.shortcut_scores(None, kept), sc.shortcut_scores(None, inverted)
    assert on_kept["f1"] > 0.8 and on_inverted["f1"] < 0.2
    assert on_inverted["false_call_with_mark"] == 1 and on_inverted["false_call_without_mark"] == 0
    assert on_kept["mark_before"][-1] == pytest.approx(1.0)
    assert on_kept["mark_words"][-1] == pytest.approx(1.0 / kept.n_patches)
    decides = sc.mark_decides(None, kept)
    assert decides["flipped"] == 1.0


def test_a_short_training_run_of_each_arm(sets):
    torch.set_num_threads(1)
    train_set = ml.RenderedChestXrayDataset(64, seed=0, shortcut=sc.SHORTCUT)
    small = sc.test_sets(40, seed=9)["inverted"]
    for name, options in sc.ARMS.items():
        model = sc.train_arm(train_set, seed=0, recipe={"epochs": 1, "batch_size": 32},
                             progress=False, **options)
        scores = sc.shortcut_scores(model, small)
        assert set(scores) >= {"f1", "hallucination_rate", "omission_rate", "mark_words",
                               "mark_before", "false_call_with_mark"}
        assert len(scores["mark_words"]) == model.config.num_layers
    decides = sc.mark_decides(model, small)
    assert 0 <= decides["flipped"] <= 1


def test_train_arm_shows_progress_unless_told_not_to(capsys):
    torch.set_num_threads(1)
    train_set = ml.RenderedChestXrayDataset(32, seed=0, shortcut=sc.SHORTCUT)
    recipe = {"epochs": 2, "batch_size": 32}
    sc.train_arm(train_set, seed=0, recipe=recipe, **sc.ARMS["no grounding"])
    assert "2/2" in capsys.readouterr().err          # ml.train's bar (a line in a notebook)
    sc.train_arm(train_set, seed=0, recipe=recipe, progress=False, **sc.ARMS["no grounding"])
    assert capsys.readouterr().err == ""
