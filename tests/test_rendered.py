"""The second world: RenderedChestXrayDataset."""

import numpy as np
import pytest
import torch

import medsight_lab as ml
from medsight_lab.baselines import brightest_patch_map
from medsight_lab.metrics import pointing_game_and_mass
from medsight_lab.rendered import (FUNCTION_WORDS, NEGATIVE, POSITIVE, RENDERED_FINDINGS,
                                   RENDERED_VOCAB, all_sentences, image_patches, pool_to_patches)


@pytest.fixture(scope="module")
def ds():
    return ml.RenderedChestXrayDataset(300, seed=1)


def test_deterministic_per_seed_and_global_rng_untouched(ds):
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    again = ml.RenderedChestXrayDataset(300, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(again.images, ds.images) and again.reports == ds.reports
    assert torch.equal(again.token_ids, ds.token_ids)
    other = ml.RenderedChestXrayDataset(300, seed=2)
    assert not torch.equal(other.images, ds.images)


def test_item_keys_and_shapes(ds):
    item = ds[3]
    assert ds.n_patches == 64 and ds.d_vision == 64
    assert item["image"].shape == (1, 64, 64)
    assert item["patches"].shape == (64, 64)
    assert item["token_ids"].shape == (ds.max_len,)
    assert item["finding_mask"].shape == (ds.max_len, 64)
    assert item["finding_masks"].shape == (len(RENDERED_FINDINGS), 64)
    assert set(item["labels"]) == set(RENDERED_FINDINGS)
    assert isinstance(item["has_mark"], bool) and not item["has_mark"]
    assert 0 <= float(item["image"].min()) and float(item["image"].max()) <= 1


def test_patches_follow_the_grid(ds):
    # patch p is rows (p // 8) * 8 ... and columns (p % 8) * 8 ... of the image, standardised
    img = ds.images[5, 0]
    p = 8 * 3 + 5
    expected = img[24:32, 40:48].reshape(-1)
    assert torch.allclose(image_patches(ds.images[5:6], 8)[0, p], expected)
    assert torch.allclose(ds.patches[5, p], (expected - 0.3) / 0.2)


def test_pool_to_patches():
    m = np.zeros((16, 16), dtype=bool)
    m[0:8, 0:1] = True            # 8 of 64 pixels of patch 0: 12.5 % >= 10 %
    m[8, 8] = True                # 1 pixel of patch 3: under 10 %
    assert pool_to_patches(m, 8).tolist() == [1, 0, 0, 0]
    lone = np.zeros((16, 16), dtype=bool)
    lone[9, 9] = True             # a mask whose only patch is under the threshold keeps it
    assert pool_to_patches(lone, 8).tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="must divide"):
        pool_to_patches(m, 5)


def test_masks_labels_and_finding_mask_agree(ds):
    for i in range(len(ds)):
        item = ds[i]
        for j, f in enumerate(RENDERED_FINDINGS):
            positive = item["labels"][f]["status"] == "positive"
            assert bool(ds.pixel_masks[i, j].any()) == positive
            assert bool(item["finding_masks"][j].any()) == positive
        # every grounded token's mask is one positive finding's mask; negatives ground nowhere
        words = ds.decode_tokens(item["token_ids"])
        for t, w in enumerate(words):
            row = item["finding_mask"][t]
            if row.any():
                assert w not in FUNCTION_WORDS
                assert any(torch.equal(row, m) for m in item["finding_masks"] if m.any())
        start = 1
        for t, w in enumerate(words):
            if w == ".":
                sentence = words[start:t]
                grounded = item["finding_mask"][start:t].any()
                denied = "no" in sentence or "normal" in sentence
                assert bool(grounded) != denied, sentence
                start = t + 1
        assert torch.equal(item["lesion_mask"], item["finding_masks"].max(0).values)


def test_distributions_are_realistic():
    big = ml.RenderedChestXrayDataset(1200, seed=0)
    positives = [sum(l[f]["status"] == "positive" for f in RENDERED_FINDINGS) for l in big.labels]
    counts = np.bincount(positives, minlength=4)
    assert counts.max() <= 1200 and len(counts) == 4               # 0-3 findings
    assert 0.28 < counts[0] / 1200 < 0.42                          # normal share about 0.35
    for f in RENDERED_FINDINGS:
        status = [l[f]["status"] for l in big.labels]
        assert 0.05 < status.count("positive") / 1200 < 0.3
        sides = [l[f]["side"] for l in big.labels if l[f]["status"] == "positive"]
        if f != "cardiomegaly":
            assert 0.4 < sides.count("right") / len(sides) < 0.6
    assert any(l["nodule"]["status"] == "absent" for l in big.labels)


def test_reports_round_trip_and_vocabulary_is_the_grammar(ds):
    tok = ml.Tokenizer(RENDERED_VOCAB)
    for report, ids in zip(ds.reports, ds.token_ids):
        assert tok.decode(tok.encode(report, ds.max_len)) == report
        assert torch.equal(torch.tensor(tok.encode(report, ds.max_len)), ids)
    used = {w for _, _, text in all_sentences() for w in tok.decode_tokens(tok.encode(text))}
    assert used | {"<pad>"} == set(RENDERED_VOCAB)      # nothing typed by hand, nothing missing
    assert all(len(POSITIVE[f]) >= 2 and len(NEGATIVE[f]) >= 2 for f in RENDERED_FINDINGS)


def test_brightest_patch_does_not_ground_the_findings():
    big = ml.RenderedChestXrayDataset(1000, seed=4)
    pixels = image_patches(big.images, 8)
    for j, f in enumerate(RENDERED_FINDINGS):
        keep = big.finding_masks[:, j].sum(-1) > 0
        pointing, _ = pointing_game_and_mass(brightest_patch_map(pixels[keep]),
                                             big.finding_masks[keep, j])
        assert pointing < 0.2, f


def test_shortcut_knob_statistics_and_invisibility():
    plain = ml.RenderedChestXrayDataset(1000, seed=5)
    marked = ml.RenderedChestXrayDataset(1000, seed=5, shortcut=(0.9, 0.1))
    ptx = np.array([l["pneumothorax"]["status"] == "positive" for l in marked.labels])
    mark = marked.has_mark
    assert abs(mark[ptx].mean() - 0.9) < 0.06 and abs(mark[~ptx].mean() - 0.1) < 0.03
    # the mark is in no report and no mask, and nothing else changes
    assert marked.reports == plain.reports
    assert torch.equal(marked.pixel_masks, plain.pixel_masks)
    differs = (marked.images != plain.images).flatten(1).any(1).numpy()
    assert np.array_equal(differs, mark)
    assert [marked[i]["has_mark"] for i in range(5)] == mark[:5].tolist()
    inverted = ml.RenderedChestXrayDataset(1000, seed=5, shortcut=(0.0, 1.0),
                                           shortcut_finding="effusion")
    eff = np.array([l["effusion"]["status"] == "positive" for l in inverted.labels])
    assert not inverted.has_mark[eff].any() and inverted.has_mark[~eff].all()
    assert not plain.has_mark.any()


@pytest.mark.parametrize("kwargs, error", [
    (dict(n_samples=0), ValueError), (dict(image_size=60, patch_size=8), ValueError),
    (dict(image_size=16, patch_size=8), ValueError), (dict(seed=1.5), TypeError),
    (dict(shortcut=(1.2, 0.0)), ValueError), (dict(shortcut=0.9), ValueError),
    (dict(shortcut_finding="fracture"), ValueError),
])
def test_bad_arguments_are_refused(kwargs, error):
    args = dict(n_samples=4) | kwargs
    with pytest.raises(error):
        ml.RenderedChestXrayDataset(**args)


def test_index_checks(ds):
    with pytest.raises(IndexError):
        ds[300]
    with pytest.raises(TypeError):
        ds["a"]
    assert ds[-1]["report"] == ds.reports[-1]


def test_other_patch_grids():
    small = ml.RenderedChestXrayDataset(20, image_size=32, patch_size=4, seed=0)
    assert small.n_patches == 64 and small.d_vision == 16
    assert small.patches.shape == (20, 64, 16)


def test_figures_of_the_second_world(ds):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsight_lab import visualise as vis
    fig = vis.plot_rendered_examples(ds, range(3), ncols=3)
    assert len(fig.axes) == 3
    fig = vis.plot_finding_distribution(ds.labels)
    bars = fig.axes[3].patches
    assert [b.get_height() for b in bars] == [
        sum(sum(l[f]["status"] == "positive" for f in RENDERED_FINDINGS) == k for l in ds.labels)
        for k in range(4)]
    row = torch.zeros(64)
    row[10] = 1.0
    ax = vis.plot_attention_on_image(ds.images[0], row, ds.pixel_masks[0].any(0))
    heat = ax.images[1].get_array()
    assert heat.shape == (64, 64) and heat[8, 16] == 1 and heat[0, 0] == 0   # patch 10 = row 1, col 2
    with pytest.raises(ValueError):
        vis.plot_attention_on_image(ds.images[0], torch.zeros(10))
    with pytest.raises(ValueError):
        vis.plot_rendered_examples(ds, [])
    plt.close("all")
