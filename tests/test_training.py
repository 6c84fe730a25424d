import pytest
import torch

import medsight_lab as ml


def _trained_weights(seed):
    ml.set_seed(0)
    model = ml.default_model()
    history = ml.train(model, ml.SyntheticRadiologyDataset(64, seed=1), epochs=2, batch_size=16,
                       seed=seed, progress=False)
    return model.state_dict(), history


def test_same_seed_same_trained_weights():
    a, history = _trained_weights(0)
    torch.randn(100)                             # disturb the global RNG in between
    b, _ = _trained_weights(0)
    c, _ = _trained_weights(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert set(history) == {"loss", "ce", "ground", "entropy"} and len(history["loss"]) == 2


def test_training_reduces_the_loss_and_reports_validation_metrics():
    ml.set_seed(0)
    model = ml.default_model()
    history = ml.train(model, ml.SyntheticRadiologyDataset(256, seed=1), epochs=3,
                       val_dataset=ml.SyntheticRadiologyDataset(32, seed=2), progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["val_exact_match"]) == 3


def test_progress_bar_is_silent_when_off(capsys):
    ml.set_seed(0)
    ml.train(ml.default_model(), ml.SyntheticRadiologyDataset(32), epochs=1, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    ml.train(ml.default_model(), ml.SyntheticRadiologyDataset(32), epochs=1, progress=True)
    assert "training" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, message", [({"epochs": 0}, "epochs"),
                                             ({"batch_size": -2}, "batch_size"),
                                             ({"lr": 0}, "lr")])
def test_bad_training_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ml.train(ml.default_model(), ml.SyntheticRadiologyDataset(8), progress=False, **kwargs)


def test_empty_training_set_is_refused(dataset):
    with pytest.raises(ValueError, match="empty"):
        ml.train(ml.default_model(), torch.utils.data.Subset(dataset, []), progress=False)


def test_checkpoint_round_trip(tmp_path, trained, dataset):
    path = tmp_path / "model.pt"
    ml.save_checkpoint(trained, path)
    loaded = ml.load_checkpoint(path)
    assert loaded.config == trained.config
    patches = ml.as_batch(dataset)["patches"][:5]
    assert torch.equal(loaded.generate(patches).token_ids, trained.generate(patches).token_ids)


def test_checkpoint_with_another_vocabulary_is_refused(tmp_path, trained):
    path = tmp_path / "old.pt"
    ml.save_checkpoint(trained, path, vocab=ml.VOCAB[:33])
    with pytest.raises(ValueError, match="different vocabulary"):
        ml.load_checkpoint(path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a MedSight Lab checkpoint"):
        ml.load_checkpoint(text)
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a MedSight Lab checkpoint"):
        ml.load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ml.load_checkpoint(tmp_path / "missing.pt")


def test_progress_in_a_notebook_is_stored_at_its_last_epoch():
    """Under nbclient (nbconvert, nbval's reference run) the progress line is stored as it ended,
    as plain text; a tqdm widget would be stored as a bar stuck at 0 and a widget view."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import torch, medsight_lab as ml\ntorch.set_num_threads(1)\n"
        "ml.train(ml.default_model(), ml.SyntheticRadiologyDataset(16), epochs=2)")]
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    outputs = nb.cells[0].outputs
    assert [o["output_type"] for o in outputs] == ["display_data", "execute_result"]
    assert list(outputs[0]["data"]) == ["text/plain"]
    assert outputs[0]["data"]["text/plain"].startswith("ml.train: epoch 2/2, loss ")
