"""Attention sanity checks: model randomisation, deletion, wrong-region and shuffled supervision."""

import pytest
import torch
from torch.utils.data import Subset

import medsight_lab as ml
from medsight_lab import sanity
from medsight_lab.data import GROUNDED_WORDS, VOCAB


def cross_attention_params(model, layer):
    attention = model.blocks[layer].cross_attn
    return {f"{name}.{p}": getattr(getattr(attention, name), p)
            for name in ("q", "k") for p in ("weight", "bias")}


# -- model randomisation -------------------------------------------------------------------------
def test_randomise_touches_only_the_chosen_queries_and_keys(trained):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    randomised = sanity.randomise_cross_attention(trained, layers=-1, seed=1)
    # The trained model is left alone.
    for key, value in trained.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} of the original model changed"
    changed = {k for k, v in randomised.state_dict().items() if not torch.equal(v, before[k])}
    last = len(trained.blocks) - 1
    assert changed == {f"blocks.{last}.cross_attn.{name}" for name in
                       ("q.weight", "q.bias", "k.weight", "k.bias")}
    for name, param in cross_attention_params(randomised, last).items():
        bound = 1 / trained.config.d_model ** 0.5
        assert param.abs().max() <= bound, f"{name} outside nn.Linear's initial range"
        assert param.std() > bound / 3, f"{name} looks constant, not freshly drawn"


def test_randomise_is_repeatable_and_leaves_the_global_rng_alone(trained):
    state = torch.get_rng_state()
    a = sanity.randomise_cross_attention(trained, seed=3)
    b = sanity.randomise_cross_attention(trained, seed=3)
    c = sanity.randomise_cross_attention(trained, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    for layer in range(len(trained.blocks)):
        pa, pb, pc = (cross_attention_params(m, layer) for m in (a, b, c))
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
        assert not any(torch.equal(pa[k], pc[k]) for k in pa)


def test_randomise_rejects_bad_layers(trained):
    with pytest.raises(ValueError, match="layer 2 does not exist"):
        sanity.randomise_cross_attention(trained, layers=[2])
    with pytest.raises(ValueError):
        sanity.randomise_cross_attention(trained, layers=-3)
    with pytest.raises(TypeError):
        sanity.randomise_cross_attention(trained, layers=["top"])
    with pytest.raises(TypeError, match="GroundedReportVLM"):
        sanity.randomise_cross_attention(torch.nn.Linear(2, 2))


def test_teacher_forced_grounding_scores_the_true_reports(trained, dataset):
    scores = sanity.teacher_forced_grounding(trained, dataset)
    lesion_images = dataset.lesion_mask.sum(-1) > 0
    grounded = torch.isin(dataset.token_ids,
                          torch.tensor([VOCAB.index(w) for w in GROUNDED_WORDS]))
    assert scores["n_grounded_words"] == int((grounded & lesion_images[:, None]).sum())
    assert scores["pointing_game"] >= 0.9
    assert scores["pointing_game"] > 3 * scores["pointing_game_chance"]
    # Half a grid away from the lesion there is nothing for a well-grounded model to look at.
    assert sanity.teacher_forced_grounding(trained, dataset, region_shift=8)["pointing_game"] < 0.1
    assert not trained.training


def test_cascading_randomisation_degrades_attention_and_reports(trained, dataset):
    steps = sanity.cascading_randomisation(trained, dataset)
    assert [s["randomised"] for s in steps] == ["none", "layer 1", "layer 1, 0"]
    none, top = steps[0], steps[1]
    assert none["pointing_game"] >= 0.9 and none["finding_accuracy"] >= 0.9
    assert none["pointing_game"] == pytest.approx(
        sanity.teacher_forced_grounding(trained, dataset)["pointing_game"])
    assert top["attention_mass"] < none["attention_mass"] - 0.3
    assert top["finding_accuracy"] < none["finding_accuracy"]


# -- deletion ------------------------------------------------------------------------------------
def test_first_k_picks_the_highest_scores_per_row():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [1.0, 0.0, 0.2, 0.3]])
    chosen = sanity._first_k(scores, torch.tensor([2, 1]))
    assert chosen.tolist() == [[False, True, True, False], [True, False, False, False]]


def test_deletion_of_attended_patches_hurts_more_than_random_ones(trained, dataset):
    result = sanity.deletion_test(trained, dataset)
    assert result["n_images"] == int((dataset.lesion_mask.sum(-1) > 0).sum())
    assert result["original"] >= 0.9
    assert result["random"] >= result["original"] - 0.05
    assert result["attended"] < 0.5 * result["original"]
    assert result["lesion"] < 0.5 * result["original"]
    assert result["attended_in_lesion"] >= 0.9
    assert sanity.deletion_test(trained, dataset) == result      # same noise, same answer


def test_deletion_checks_its_arguments(trained, dataset):
    with pytest.raises(ValueError, match="k must be"):
        sanity.deletion_test(trained, dataset, k=0)
    normal = [i for i in range(len(dataset)) if dataset[i]["finding_name"] == "normal"]
    with pytest.raises(ValueError, match="no image with a lesion"):
        sanity.deletion_test(trained, Subset(dataset, normal))
    assert sanity.deletion_test(trained, dataset, k=1)["k"] == 1


# -- wrong supervision ---------------------------------------------------------------------------
def test_wrong_region_masks_point_half_a_grid_away(dataset):
    before = dataset.finding_mask.clone()
    wrong = sanity.wrong_region_dataset(dataset)
    assert torch.equal(dataset.finding_mask, before), "the original dataset changed"
    for i in range(len(dataset)):
        item, moved = dataset[i], wrong[i]
        assert torch.equal(moved["lesion_mask"], item["lesion_mask"])
        assert torch.equal(moved["token_ids"], item["token_ids"])
        grounded = item["finding_mask"].sum(-1) > 0
        assert torch.equal(moved["finding_mask"].sum(-1) > 0, grounded)
        for row in moved["finding_mask"][grounded]:
            assert torch.equal(row, torch.roll(item["lesion_mask"], 8))
            assert not (row * item["lesion_mask"]).any(), "the wrong region overlaps the lesion"


def test_wrong_region_keeps_subsets_and_rejects_overlapping_shifts(dataset):
    subset = Subset(dataset, [5, 7, 11])
    wrong = sanity.wrong_region_dataset(subset, shift=7)
    assert isinstance(wrong, Subset) and list(wrong.indices) == [5, 7, 11]
    assert torch.equal(wrong[0]["finding_mask"].amax(0),
                       torch.roll(dataset[5]["lesion_mask"], 7))
    for shift in (0, 16, 1, 4):   # 1: the nodule's patches 0, 1 overlap; 4: cardiomegaly's
        with pytest.raises(ValueError, match="onto itself"):
            sanity.wrong_region_dataset(dataset, shift=shift)
    with pytest.raises(TypeError):
        sanity.wrong_region_dataset(list(range(3)))


def test_attention_follows_the_wrong_supervision_while_reports_stay_right(dataset):
    torch.manual_seed(0)
    model = ml.default_model()
    ml.train(model, sanity.wrong_region_dataset(ml.SyntheticRadiologyDataset(600, seed=3)),
             epochs=6, progress=False)
    metrics = ml.evaluate(model, dataset)
    assert metrics["finding_accuracy"] >= 0.9
    assert sanity.teacher_forced_grounding(model, dataset)["pointing_game"] < 0.1
    assert sanity.teacher_forced_grounding(model, dataset, region_shift=8)["pointing_game"] >= 0.9
    deletion = sanity.deletion_test(model, dataset)
    assert deletion["attended_in_lesion"] < 0.1
    assert deletion["attended"] >= deletion["original"] - 0.05   # the map's patches don't matter
    assert deletion["lesion"] < 0.5                              # the lesion does


def test_shuffle_reports_moves_reports_not_lesions(dataset):
    shuffled = sanity.shuffle_reports(dataset, seed=1)
    assert torch.equal(shuffled.lesion_mask, dataset.lesion_mask)
    assert torch.equal(shuffled.patches, dataset.patches)
    assert sorted(map(tuple, shuffled.token_ids.tolist())) == \
        sorted(map(tuple, dataset.token_ids.tolist()))
    moved = (shuffled.token_ids != dataset.token_ids).any(-1).float().mean()
    assert moved > 0.5, "most reports should now belong to another image"
    grounded = torch.isin(shuffled.token_ids, dataset.grounded_ids).float()
    assert torch.equal(shuffled.finding_mask,
                       grounded[:, :, None] * dataset.lesion_mask[:, None, :])
    assert torch.equal(sanity.shuffle_reports(dataset, seed=1).token_ids, shuffled.token_ids)
    assert [shuffled[i]["finding_name"] for i in range(5)] == \
        [dataset[i]["finding_name"] for i in range(5)]
