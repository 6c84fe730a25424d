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


# == chapter 6: testing explanations ==============================================================
from medsight_lab.baselines import brightest_patch_map, patch_norm_map  # noqa: E402


def test_rank_correlation_known_values_and_ties():
    a = torch.tensor([[0.1, 0.5, 0.2, 0.9], [1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(sanity.rank_correlation(a, a.exp()), torch.ones(2))
    torch.testing.assert_close(sanity.rank_correlation(a, -a), -torch.ones(2))
    # Ties share their mean rank: one-hot on the top value against a strictly ordered row.
    one_hot = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    expected = torch.tensor([3 / (3 ** 0.5 * 5 ** 0.5)])   # ranks [1, 1, 1, 3] vs [0, 1, 2, 3]
    torch.testing.assert_close(sanity.rank_correlation(one_hot, a[1:]), expected)
    assert torch.isnan(sanity.rank_correlation(torch.ones(1, 4), a[:1])).all()


@pytest.mark.parametrize("a, b", [(torch.ones(2, 3), torch.ones(2, 4)),
                                  (torch.ones(3), torch.ones(3)),
                                  (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))])
def test_rank_correlation_rejects_bad_input(a, b):
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        sanity.rank_correlation(a, b)


def _linear_score(w):
    return lambda patches: (patches * w).sum((-2, -1))


def test_deletion_curve_endpoints_order_and_insertion_mirror():
    g = torch.Generator().manual_seed(0)
    patches, background = torch.randn(2, 5, 3, generator=g), torch.zeros(2, 5, 3)
    w = torch.randn(5, 3, generator=g)
    score = _linear_score(w)
    ranking = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [5.0, 4.0, 3.0, 2.0, 1.0]])
    curve = sanity.deletion_curve(score, patches, ranking, background)
    assert curve.shape == (2, 6)
    torch.testing.assert_close(curve[:, 0], score(patches))
    torch.testing.assert_close(curve[:, -1], score(background))
    # Image 0 deletes patch 1 first, then 4: each step removes that patch's contribution.
    contribution = (patches * w).sum(-1)                                      # (B, N)
    torch.testing.assert_close(curve[0, 1], curve[0, 0] - contribution[0, 1])
    torch.testing.assert_close(curve[0, 2], curve[0, 1] - contribution[0, 4])
    insertion = sanity.insertion_curve(score, patches, ranking, background)
    torch.testing.assert_close(insertion[:, 0], score(background))
    torch.testing.assert_close(insertion[:, -1], score(patches))
    torch.testing.assert_close(insertion[0, 1], contribution[0, 1])
    torch.testing.assert_close(sanity.curve_area(torch.full((3, 17), 0.25)), torch.full((3,), 0.25))
    torch.testing.assert_close(sanity.curve_area(torch.tensor([0.0, 1.0])), torch.tensor(0.5))


def test_deletion_curve_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="ranking must be"):
        sanity.deletion_curve(_linear_score(1.0), torch.ones(2, 5, 3), torch.ones(2, 4),
                              torch.zeros(2, 5, 3))


def test_gradients_of_a_linear_score_are_exact_and_integrated_gradients_complete():
    g = torch.Generator().manual_seed(1)
    patches, w = torch.randn(3, 4, 2, generator=g), torch.randn(4, 2, generator=g)
    torch.testing.assert_close(sanity.gradient_times_input(_linear_score(w), patches),
                               (patches * w).sum(-1))
    baseline = torch.randn(3, 4, 2, generator=g)
    torch.testing.assert_close(sanity.integrated_gradients(_linear_score(w), patches, baseline, 1),
                               ((patches - baseline) * w).sum(-1))
    # Completeness on a nonlinear score: the map adds up to score(x) - score(x0).
    nonlinear = lambda x: torch.tanh(x).pow(2).sum((-2, -1))                  # noqa: E731
    ig = sanity.integrated_gradients(nonlinear, patches, baseline, steps=200)
    torch.testing.assert_close(ig.sum(-1), nonlinear(patches) - nonlinear(baseline),
                               atol=1e-3, rtol=1e-3)
    assert not patches.requires_grad


def test_patch_norm_map_is_a_distribution_peaking_at_the_brightest_patch(dataset):
    patches = ml.as_batch(dataset, "cpu")["patches"]
    m = patch_norm_map(patches)
    torch.testing.assert_close(m.sum(-1), torch.ones(len(dataset)))
    assert torch.equal(m.argmax(-1), brightest_patch_map(patches).argmax(-1))


def test_model_units_cover_every_parameter_once(trained):
    seen = [id(p) for _, modules in sanity.model_units(trained) for m in modules
            for p in m.parameters()]
    assert sorted(seen) == sorted(id(p) for p in trained.parameters())


def test_randomise_units_changes_only_the_chosen_units(trained):
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    state = torch.get_rng_state()
    a = sanity.randomise_units(trained, ["block 1 MLP", "embeddings"], seed=2)
    b = sanity.randomise_units(trained, ["block 1 MLP", "embeddings"], seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    changed = {k for k, v in a.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("blocks.1.ffn", "blocks.1.norm3", "token_embedding",
                                         "pos_embedding", "image_proj", "patch_embedding"))
                           for k in changed)
    assert {"blocks.1.ffn.0.weight", "token_embedding.weight"} <= changed
    for key, value in trained.state_dict().items():
        assert torch.equal(value, before[key])
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    with pytest.raises(ValueError, match="unknown unit"):
        sanity.randomise_units(trained, ["block 7 MLP"])


def test_finding_maps_average_the_rows_of_the_finding_words(trained, dataset):
    data = ml.as_batch(dataset, "cpu")
    patches, tokens = data["patches"][:4], data["token_ids"][:4]
    with torch.no_grad():
        attn = trained(patches, tokens)[1][-1].mean(1)                       # (B, T, N)
    words = torch.isin(tokens, ml.metrics.grounded_token_ids())
    for b in range(4):
        rows = words[b].nonzero().flatten()
        read = sanity.finding_maps(trained, patches, tokens, "read")[b]
        predict = sanity.finding_maps(trained, patches, tokens, "predict")[b]
        if len(rows) == 0:
            assert (read == 0).all()
            continue
        torch.testing.assert_close(read, attn[b, rows].mean(0))
        torch.testing.assert_close(predict, attn[b, rows - 1].mean(0))
    with pytest.raises(ValueError, match="row must be one of"):
        sanity.finding_maps(trained, patches, tokens, "write")


def test_model_randomisation_the_map_ignores_the_layers_above_it(trained, dataset):
    result = sanity.model_randomisation(trained, dataset, mode="independent", seed=0)
    steps = {s["randomised"]: s for s in result["steps"]}
    # The scored map is computed before the output head and the last MLP: it cannot change.
    assert steps["output head"]["rank_correlation"] == pytest.approx(1.0)
    assert steps["block 1 MLP"]["rank_correlation"] == pytest.approx(1.0)
    assert steps["embeddings"]["rank_correlation"] < 0.9
    cascading = sanity.model_randomisation(trained, dataset, mode="cascading", seed=0)
    assert [s["randomised"] for s in cascading["steps"]][-1] == "... embeddings"
    assert -1 <= cascading["unrelated_images"] <= 1
    with pytest.raises(ValueError, match="mode must be"):
        sanity.model_randomisation(trained, dataset, mode="sideways")


def test_faithfulness_curves_start_at_the_intact_image(trained, dataset):
    explained = sanity.explanation_maps(trained, Subset(dataset, range(40)), ig_steps=2)
    curves = sanity.faithfulness(trained, explained)
    intact = sanity.finding_probability(trained, explained["token_ids"])(explained["patches"])
    for name, c in curves.items():
        torch.testing.assert_close(c["deletion"][:, 0], intact)
        torch.testing.assert_close(c["insertion"][:, -1], intact)
        assert c["deletion_area"].shape == (len(intact),)


def test_row_grounding_scores_each_row_kind(trained, dataset):
    rows = sanity.row_grounding(trained, dataset)
    assert set(rows) == {"read", "predict", "other", "chance"}
    for kind in sanity.ROWS:
        assert 0 <= rows[kind]["attention_mass"] <= 1


def test_bootstrap_ci():
    assert sanity.bootstrap_ci([0.5] * 5) == pytest.approx((0.5, 0.5))
    low, high = sanity.bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert 0.1 <= low < 0.3 < high <= 0.5
    with pytest.raises(ValueError, match="at least two"):
        sanity.bootstrap_ci([1.0])
