"""The figures chapters 1 and 4 draw through the package: the dataset overview, metric bars of
several runs, and finding-word maps of several models."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import medsight_lab as ml  # noqa: E402
from medsight_lab import visualise  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_dataset_overview_counts_every_image_and_draws_one_line_per_finding(dataset):
    fig = visualise.plot_dataset_overview(dataset)
    bars, lines = fig.axes
    assert sum(p.get_height() for p in bars.patches) == len(dataset)
    assert [t.get_text() for t in lines.get_legend().get_texts()] == \
        [name for name, _ in ml.FINDINGS.values()]


def test_runs_metric_bars_one_panel_per_run(trained, dataset):
    metrics = ml.evaluate(trained, dataset)
    fig = visualise.plot_runs_metric_bars({"a": metrics, "b": metrics, "c": metrics},
                                          keys=["pointing_game", "attention_mass"])
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    assert all(len(ax.patches) == 2 for ax in fig.axes)
    with pytest.raises(ValueError, match="non-empty dict"):
        visualise.plot_runs_metric_bars([metrics])


def test_finding_maps_one_row_per_model_one_column_per_finding(trained, dataset):
    fig = visualise.plot_finding_maps_by_model({"one": trained, "two": trained}, dataset,
                                               findings=(1, 3))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["nodule: one", "cardiomegaly: one", "nodule: two", "cardiomegaly: two"]
    with pytest.raises(ValueError, match="no image of finding"):
        visualise.plot_finding_maps_by_model({"one": trained}, ml.SyntheticRadiologyDataset(
            1, seed=0), findings=(1, 2, 3, 4))
