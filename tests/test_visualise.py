"""The course figures: the right panels and data, the lesion outlined where it is, bad shapes
refused."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from medsight_lab import visualise  # noqa: E402

LESION = [5, 6, 9, 10]                              # cardiomegaly: the centre of the 4x4 grid


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def lesion_mask():
    mask = torch.zeros(16)
    mask[LESION] = 1.0
    return mask


def panels(fig):
    """The figure's axes other than colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def colorbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def outlined_patches(ax):
    """Patch indices outlined on a 4x4 grid, read back from the rectangles' corners."""
    found = []
    for rect in ax.patches:
        if rect.get_gid() == visualise.LESION_LABEL:
            x, y = rect.get_xy()
            assert rect.get_width() == rect.get_height() == 1
            found.append(int(round(y + 0.5)) * 4 + int(round(x + 0.5)))
    return sorted(found)


# -- patch grid ----------------------------------------------------------------------------------
def test_patch_grid_shows_norms_and_outlines_the_lesion(lesion_mask):
    patches = torch.randn(16, 64)
    ax = visualise.plot_patch_grid(patches, lesion_mask)
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown, patches.norm(dim=-1).numpy().reshape(4, 4), rtol=1e-6)
    assert outlined_patches(ax) == LESION
    assert len(colorbars(ax.figure)) == 1 and colorbars(ax.figure)[0].get_ylabel()
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_patch_grid_places_patch_p_at_row_p_div_4():
    values = np.arange(16.0)
    mask = np.zeros(16)
    mask[7] = 1                                      # row 1, column 3
    ax = visualise.plot_patch_grid(values, mask)
    assert np.asarray(ax.images[0].get_array())[1, 3] == 7
    assert outlined_patches(ax) == [7]


def test_patch_grid_draws_on_a_given_axes_without_outline_when_no_lesion():
    fig, ax = plt.subplots()
    assert visualise.plot_patch_grid(np.ones(16), np.zeros(16), ax=ax) is ax
    assert outlined_patches(ax) == []
    assert "lesion" not in ax.get_xlabel()


@pytest.mark.parametrize("bad", [np.ones(15), np.ones((2, 16, 8)), np.ones((15, 4))])
def test_patch_grid_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match=r"patches_or_norms must have .*N"):
        visualise.plot_patch_grid(bad)


def test_patch_grid_rejects_a_lesion_mask_of_the_wrong_length():
    with pytest.raises(ValueError, match="lesion_mask"):
        visualise.plot_patch_grid(np.ones(16), np.ones(9))


# -- grounding map -------------------------------------------------------------------------------
def test_grounding_map_marks_the_most_attended_patch(lesion_mask):
    row = torch.full((16,), 0.02)
    row[9] = 0.7
    ax = visualise.plot_grounding_map(row, lesion_mask)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), row.numpy().reshape(4, 4))
    assert outlined_patches(ax) == LESION
    (marker,) = ax.lines
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (1, 2)      # patch 9
    assert colorbars(ax.figure)[0].get_ylabel() == "attention weight"


@pytest.mark.parametrize("bad", [np.ones((4, 4)), np.ones(12)])
def test_grounding_map_rejects_bad_shapes(bad):
    with pytest.raises(ValueError, match="attn_row"):
        visualise.plot_grounding_map(bad)


# -- attention heatmap ---------------------------------------------------------------------------
def test_attention_heatmap_labels_tokens_and_drops_padding_rows():
    attn = torch.softmax(torch.randn(20, 16), dim=-1)                   # 20 rows, 5 real tokens
    tokens = ["<bos>", "small", "nodule", ".", "<eos>"]
    ax = visualise.plot_attention_heatmap(attn, tokens, grounded=[0, 1, 1, 0, 0])
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), attn[:5].numpy(), rtol=1e-6)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["<bos>", "small *", "nodule *", ".", "<eos>"]
    assert ax.get_xlabel() == "image patch"
    assert len(colorbars(ax.figure)) == 1


@pytest.mark.parametrize("attn, tokens", [
    (np.ones(16), ["a"]),                            # not (T, N)
    (np.ones((2, 16)), ["a", "b", "c"]),             # more tokens than rows
    (np.ones((2, 10)), ["a"]),                       # N not a square
    (np.ones((2, 16)), []),
])
def test_attention_heatmap_rejects_bad_shapes(attn, tokens):
    with pytest.raises(ValueError):
        visualise.plot_attention_heatmap(attn, tokens)


# -- show_heatmaps -------------------------------------------------------------------------------
def test_show_heatmaps_grid_shares_one_colour_scale():
    matrices = torch.rand(2, 3, 5, 16)
    matrices[1, 2, 0, 0] = 4.0                       # an outlier sets the shared maximum
    fig = visualise.show_heatmaps(matrices, "patch", "token", titles=["h0", "h1", "h2"])
    axes = panels(fig)
    assert len(axes) == 6 and len(colorbars(fig)) == 1
    assert {ax.images[0].get_clim() for ax in axes} == {(float(matrices.min()), 4.0)}
    assert [ax.get_title() for ax in axes[:3]] == ["h0", "h1", "h2"]
    assert [ax.get_xlabel() for ax in axes] == ["", "", "", "patch", "patch", "patch"]
    assert [ax.get_ylabel() for ax in axes] == ["token", "", "", "token", "", ""]


def test_show_heatmaps_accepts_one_title_per_panel():
    fig = visualise.show_heatmaps(np.zeros((2, 1, 3, 3)), "x", "y", titles=[["a"], ["b"]])
    assert [ax.get_title() for ax in panels(fig)] == ["a", "b"]


def test_show_heatmaps_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(rows, cols, h, w\)"):
        visualise.show_heatmaps(np.zeros((3, 4, 5)), "x", "y")
    with pytest.raises(ValueError, match="titles"):
        visualise.show_heatmaps(np.zeros((1, 2, 3, 3)), "x", "y", titles=["only one"])


# -- training curves -----------------------------------------------------------------------------
HISTORY = {"loss": [3.0, 2.0, 1.5], "ce": [2.5, 1.6, 1.2], "ground": [0.4, 0.3, 0.2],
           "entropy": [2.7, 2.2, 1.9]}


def test_training_curves_one_panel_per_loss_term():
    fig = visualise.plot_training_curves(HISTORY)
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == [
        "total loss", "cross-entropy (next token)", "grounding loss", "attention entropy"]
    assert [ax.get_ylabel() for ax in axes] == ["loss (nats)"] * 3 + ["entropy (nats)"]
    for ax, key in zip(axes, HISTORY):
        (line,) = ax.lines
        assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == HISTORY[key]
        assert ax.get_xlabel() == "epoch" and ax.get_title()


def test_training_curves_add_a_validation_panel():
    history = dict(HISTORY, val_finding_accuracy=[0.2, 0.6, 0.9], val_exact_match=[0.1, 0.4, 0.8])
    fig = visualise.plot_training_curves(history)
    validation = panels(fig)[-1]
    assert len(panels(fig)) == 5
    assert [list(line.get_ydata()) for line in validation.lines] == [[0.2, 0.6, 0.9],
                                                                     [0.1, 0.4, 0.8]]
    assert validation.get_legend() is not None


def test_training_curves_name_the_missing_keys():
    with pytest.raises(ValueError, match="entropy"):
        visualise.plot_training_curves({k: v for k, v in HISTORY.items() if k != "entropy"})
    with pytest.raises(ValueError, match="ce"):
        visualise.plot_training_curves(dict(HISTORY, ce=[]))


# -- metric bars ---------------------------------------------------------------------------------
METRICS = {"pointing_game": 0.99, "pointing_game_chance": 0.19, "attention_mass": 0.93,
           "attention_mass_chance": 0.19, "auroc": 0.98, "auroc_chance": 0.5, "bleu4": 0.9,
           "per_finding": {"nodule": {"f1": 1.0}}, "n_samples": 400}


def test_metric_bars_draw_each_score_with_its_chance_level():
    ax = visualise.plot_metric_bars(METRICS)
    heights = [bar.get_height() for bar in ax.containers[0]]
    assert heights == [0.99, 0.93, 0.98, 0.9]               # per_finding and the count skipped
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "pointing game", "attention mass", "AUROC", "BLEU-4"]
    (chance,) = ax.collections                                          # the dashed segments
    segments = chance.get_segments()
    assert len(segments) == 3                                           # bleu4 has no chance level
    for segment, (bar_x, level) in zip(segments, [(0, 0.19), (1, 0.19), (2, 0.5)]):
        (x0, y0), (x1, y1) = segment
        assert y0 == y1 == pytest.approx(level) and x0 < bar_x < x1


def test_metric_bars_take_chance_levels_from_the_argument():
    ax = visualise.plot_metric_bars({"exact_match": 0.8}, chance={"exact_match": 0.2})
    ((_, y0), _), = ax.collections[0].get_segments()
    assert y0 == pytest.approx(0.2)
    assert ax.get_legend() is not None                       # model vs chance level
    alone = visualise.plot_metric_bars({"exact_match": 0.8})
    assert alone.get_legend() is None and not alone.collections   # nothing to tell apart


def test_metric_bars_refuse_scores_outside_0_1_and_unknown_keys():
    with pytest.raises(ValueError, match="n_samples"):
        visualise.plot_metric_bars({"auroc": 0.9, "n_samples": 400}, keys=["auroc", "n_samples"])
    with pytest.raises(ValueError, match="missing_metric"):
        visualise.plot_metric_bars(METRICS, keys=["missing_metric"])


# -- findings overview ---------------------------------------------------------------------------
def example(name, lesion, tokens, grounded):
    mask = torch.zeros(16)
    mask[lesion] = 1.0
    return {"finding_name": name, "patches": torch.randn(16, 8), "lesion_mask": mask,
            "tokens": tokens, "attn": torch.softmax(torch.randn(12, 16), dim=-1),
            "grounded": grounded + [False] * (12 - len(grounded))}


def test_findings_overview_grounds_only_the_finding_words():
    nodule = example("nodule", [0, 1], ["<bos>", "there", "is", "a", "small", "nodule", "<eos>"],
                     [False, False, False, False, True, True, False])
    normal = example("normal", [], ["<bos>", "lungs", "are", "clear", "<eos>"], [False] * 5)
    fig = visualise.plot_findings_overview([nodule, normal])
    axes = panels(fig)
    assert len(axes) == 6
    grid, heatmap, grounding = axes[:3]
    assert outlined_patches(grid) == [0, 1] and outlined_patches(grounding) == [0, 1]
    assert [t.get_text() for t in heatmap.get_yticklabels()][4:6] == ["small *", "nodule *"]
    expected = nodule["attn"][4:6].mean(dim=0).numpy().reshape(4, 4)   # finding words only
    np.testing.assert_allclose(np.asarray(grounding.images[0].get_array()), expected, rtol=1e-6)
    assert "nodule" in grid.get_title()
    assert not axes[5].images and not axes[5].axison                # normal: nothing to ground


def test_findings_overview_names_the_missing_keys():
    broken = example("nodule", [0], ["<bos>"], [False])
    del broken["grounded"]
    with pytest.raises(ValueError, match="grounded"):
        visualise.plot_findings_overview([broken])
    with pytest.raises(ValueError):
        visualise.plot_findings_overview([])


def test_finding_words_map_averages_the_finding_words_only():
    attn = torch.softmax(torch.randn(6, 16), dim=-1)
    grounded = [False, False, True, False, True, False]
    np.testing.assert_allclose(visualise.finding_words_map(attn, grounded),
                               attn[[2, 4]].mean(0).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="no finding words"):
        visualise.finding_words_map(attn, [False] * 6)
    ax = visualise.plot_finding_words_map(attn, grounded, torch.zeros(16))
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()).ravel(),
                               attn[[2, 4]].mean(0).numpy(), rtol=1e-6)
    note = visualise.plot_finding_words_map(attn, [False] * 6)      # e.g. a normal report
    assert not note.images and "no finding words" in note.texts[0].get_text()


def test_findings_overview_row_generated_and_teacher_forced(trained, dataset):
    import medsight_lab as ml

    index = next(i for i in range(len(dataset)) if dataset[i]["finding_name"] == "nodule")
    trained.train()                                   # the row is computed in eval mode ...
    generated = visualise.findings_overview_row(trained, dataset, index)
    assert trained.training is True                   # ... and the caller's mode is restored
    trained.eval()
    out = trained.generate(dataset.patches[index:index + 1])
    assert generated["tokens"] == dataset.decode_tokens(out.token_ids[0])
    torch.testing.assert_close(generated["attn"], out.cross_attention[-1][0].mean(0))
    assert generated["grounded"] == [t in ml.GROUNDED_WORDS for t in generated["tokens"]]

    forced = visualise.findings_overview_row(trained, dataset, index, teacher_forced=True,
                                             label="nodule, teacher-forced")
    assert forced["tokens"] == dataset.decode_tokens(dataset.token_ids[index])
    assert forced["finding_name"] == "nodule, teacher-forced"
    visualise.plot_findings_overview([generated, forced])          # a valid row of the figure

    normal = next(i for i in range(len(dataset)) if dataset[i]["finding_name"] == "normal")
    assert not any(visualise.findings_overview_row(trained, dataset, normal)["grounded"])
    subset = torch.utils.data.Subset(dataset, [normal, index])
    assert visualise.findings_overview_row(trained, subset, 1)["tokens"] == generated["tokens"]
    with pytest.raises(IndexError, match="between 0 and 1"):
        visualise.findings_overview_row(trained, subset, 2)


# -- chapter 6 figures --------------------------------------------------------------------------
def _fake_randomisation(shift):
    steps = [{"randomised": f"unit {i}", "rank_correlation": 1.0 - 0.2 * i + shift,
              "attention_mass": 0.9 - 0.1 * i, "pointing_game": 1.0} for i in range(4)]
    return {"steps": steps, "trained": {"attention_mass": 0.99, "pointing_game": 1.0},
            "unrelated_images": 0.4, "chance": 0.17}


def test_plot_randomisation_draws_mean_and_band():

    ax = visualise.plot_randomisation([_fake_randomisation(0.0), _fake_randomisation(0.1)])
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([1.0, 1.05, 0.85, 0.65, 0.45])
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["trained", "unit 0"]
    plt.close("all")
    with pytest.raises(ValueError, match="model_randomisation results"):
        visualise.plot_randomisation([])


def test_plot_curves_labels_each_map_with_its_area():

    curve = torch.linspace(1, 0, 5).repeat(3, 1)
    curves = {"attention": {"deletion": curve, "insertion": curve.flip(-1),
                            "deletion_area": torch.full((3,), 0.5),
                            "insertion_area": torch.full((3,), 0.5)}}
    ax = visualise.plot_curves(curves, "insertion")
    assert ax.get_legend().get_texts()[0].get_text() == "attention (area 0.50)"
    assert list(ax.get_lines()[0].get_ydata()) == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    plt.close("all")
    with pytest.raises(ValueError, match="kind must be"):
        visualise.plot_curves(curves, "both")
