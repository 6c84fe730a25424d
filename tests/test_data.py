import pickle

import pytest
import torch
from torch.utils.data import DataLoader, Subset

import medsight_lab as ml
from medsight_lab.data import EOS_ID, PAD_ID


def test_vocab_keeps_the_reference_tokens_first():
    assert ml.VOCAB[:3] == ["<pad>", "<bos>", "<eos>"]
    assert len(ml.VOCAB) == 36 and ml.VOCAB[32] == "present"


@pytest.mark.parametrize("finding_idx", sorted(ml.FINDINGS))
def test_every_report_round_trips(dataset, finding_idx):
    name, report = ml.FINDINGS[finding_idx]
    ids = dataset.encode(report)
    assert dataset.decode(ids) == report
    assert PAD_ID not in ids[: (ids == EOS_ID).nonzero()[0, 0]].tolist()  # no word became <pad>


def test_laterality_is_not_dropped(dataset):
    tokens = dataset.decode_tokens(dataset.encode("Small right-sided pneumothorax is present."))
    assert tokens[1:5] == ["small", "right", "-", "sided"]


def test_unknown_word_is_refused():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ml.Tokenizer().encode("There is a large mass.")


@pytest.mark.parametrize("text, stray", [
    ("Small right\u2013sided pneumothorax is present.", "\u2013"),   # an en dash, not '-'
    ("There is a small nodule; 3 of them.", ";"),
])
def test_characters_it_cannot_read_are_refused_not_dropped(text, stray):
    # The word pattern alone would skip them: "right–sided" would become "right sided".
    with pytest.raises(ValueError, match=f"cannot read: .*{stray}"):
        ml.Tokenizer().encode(text)


def test_a_text_must_be_a_string():
    with pytest.raises(TypeError, match="must be a str"):
        ml.Tokenizer().encode(["there", "is"])


def test_too_long_report_is_refused():
    with pytest.raises(ValueError, match="max_len=5"):
        ml.Tokenizer().encode("There is a small nodule in the right upper lobe.", max_len=5)


def test_decode_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ml.Tokenizer().decode([1, 99, 2])


def test_items_have_the_reference_keys_and_shapes(dataset):
    item = dataset[0]
    assert item["patches"].shape == (16, 64)
    assert item["token_ids"].shape == (20,) and item["token_ids"].dtype == torch.long
    assert item["finding_mask"].shape == (20, 16)
    assert item["finding_name"] == ml.FINDINGS[item["finding_idx"]][0]


def test_only_finding_side_and_size_words_are_grounded(dataset):
    for i in range(len(dataset)):
        item = dataset[i]
        grounded = item["finding_mask"].sum(-1) > 0
        words = [dataset.VOCAB[t] for t in item["token_ids"][grounded]]
        if item["finding_name"] == "normal":
            assert not grounded.any()
        else:
            assert words and set(words) <= ml.GROUNDED_WORDS
            assert "there" not in words and "is" not in words
            # every grounded row points at exactly the lesion's patches
            lesion = item["lesion_mask"]
            assert torch.equal(item["finding_mask"][grounded], lesion.expand(int(grounded.sum()), -1))
    pneumo = next(dataset[i] for i in range(len(dataset)) if dataset[i]["finding_idx"] == 4)
    assert pneumo["lesion_mask"].nonzero().flatten().tolist() == [3, 7]


def test_same_seed_same_data_whatever_the_global_rng():
    torch.manual_seed(123)
    a = ml.SyntheticRadiologyDataset(50, seed=7)
    torch.randn(1000)
    b = ml.SyntheticRadiologyDataset(50, seed=7)
    c = ml.SyntheticRadiologyDataset(50, seed=8)
    assert torch.equal(a.patches, b.patches) and torch.equal(a.token_ids, b.token_ids)
    assert not torch.equal(a.patches, c.patches)


def test_lesion_patches_are_brighter(dataset):
    norms = dataset.patches.norm(dim=-1)
    assert norms[dataset.lesion_mask.bool()].mean() > 3 * norms[~dataset.lesion_mask.bool()].mean()


def test_lesion_scale_makes_the_findings_fainter_and_leaves_the_rest():
    default = ml.SyntheticRadiologyDataset(200, seed=4)
    assert torch.equal(ml.SyntheticRadiologyDataset(200, seed=4, lesion_scale=1.0).patches,
                       default.patches)
    faint = ml.SyntheticRadiologyDataset(200, seed=4, lesion_scale=0.1)
    lesion = default.lesion_mask.bool()
    # The same findings, reports, masks and background; the lesion's brightening is 10x smaller.
    assert torch.equal(faint.token_ids, default.token_ids)
    assert torch.equal(faint.finding_mask, default.finding_mask)
    assert torch.equal(faint.patches[~lesion], default.patches[~lesion])
    background = default.patches[~lesion].norm(dim=-1).mean()
    assert faint.patches[lesion].norm(dim=-1).mean() < 0.5 * default.patches[lesion].norm(
        dim=-1).mean()
    assert faint.patches[lesion].norm(dim=-1).mean() > background    # still a little brighter


def test_collate_works_with_worker_processes(dataset):
    pickle.dumps(ml.collate)
    loader = DataLoader(Subset(dataset, range(8)), batch_size=4, num_workers=2,
                        collate_fn=ml.collate)
    batches = list(loader)
    assert batches[0]["patches"].shape == (4, 16, 64)
    assert batches[0]["finding_name"] == [dataset[i]["finding_name"] for i in range(4)]


@pytest.mark.parametrize("kwargs, message", [
    ({"n_samples": 0}, "n_samples"),
    ({"n_samples": 10, "d_vision": -1}, "d_vision"),
    ({"n_samples": 10, "n_patches": 8}, "n_patches"),
    ({"n_samples": 10, "max_len": 10}, "max_len=10"),
    ({"n_samples": 10, "lesion_scale": 0}, "lesion_scale"),
    ({"n_samples": 10, "lesion_scale": -0.5}, "lesion_scale"),
    ({"n_samples": 10, "lesion_scale": True}, "lesion_scale"),
    ({"n_samples": 10, "lesion_scale": "faint"}, "lesion_scale"),
])
def test_bad_sizes_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ml.SyntheticRadiologyDataset(**kwargs)


def test_empty_batch_and_empty_dataset_are_refused(dataset):
    with pytest.raises(ValueError, match="empty"):
        ml.collate([])
    with pytest.raises(ValueError, match="empty"):
        ml.as_batch(Subset(dataset, []))
