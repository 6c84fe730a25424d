import pytest
import torch

import medsight_lab as ml
from medsight_lab import baselines


def test_maps_are_distributions_on_the_expected_patch():
    patches = torch.zeros(2, 4, 3)
    patches[0, 2] = 5.0                      # image 0: patch 2 is the brightest
    patches[1, 1] = 1.0                      # image 1: patch 1
    assert torch.equal(baselines.brightest_patch_map(patches),
                       torch.tensor([[0., 0., 1., 0.], [0., 1., 0., 0.]]))
    assert torch.allclose(baselines.uniform_map(patches), torch.full((2, 4), 0.25))
    reference = torch.zeros(5, 4, 3)
    reference[:, 2] = 5.0                    # patch 2 is always bright: not unusual there
    patches[0, 3] = 2.0                      # image 0: patch 3 is unusual, its patch 2 is not
    unusual = baselines.unusual_patch_map(patches, reference)
    assert unusual[0].argmax() == 3 and unusual[1].argmax() == 2   # image 1 lacks the usual brightness
    assert torch.allclose(unusual.sum(-1), torch.ones(2))


def test_baseline_scores_on_the_first_world_show_the_input_only_map_grounds_perfectly():
    # The first world's lesions are its brightest patches: the model-free map scores 1.00.
    data = ml.SyntheticRadiologyDataset(200, seed=1)
    scores = baselines.baseline_scores(data.patches, data.lesion_mask)
    assert scores["brightest patch"] == {"pointing_game": 1.0, "attention_mass": 1.0}
    chance = (data.lesion_mask.sum(-1) / 16)[data.lesion_mask.sum(-1) > 0].mean().item()
    assert scores["uniform"]["attention_mass"] == pytest.approx(chance)
    assert scores["uniform"]["pointing_game"] == pytest.approx(chance)


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        baselines.brightest_patch_map(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="same \\(N, D\\)"):
        baselines.unusual_patch_map(torch.zeros(1, 4, 3), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="no image has a lesion"):
        baselines.baseline_scores(torch.zeros(2, 4, 3), torch.zeros(2, 4))
