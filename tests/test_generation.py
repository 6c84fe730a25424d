import pytest
import torch

import medsight_lab as ml
from medsight_lab.generation import beam_search
from medsight_lab.reference import greedy_generate  # re-runs forward on the whole prefix


@pytest.mark.parametrize("which", ["model", "trained"])
def test_greedy_equals_step_by_step_argmax_of_forward(request, dataset, which):
    model = request.getfixturevalue(which)
    batch = ml.as_batch(torch.utils.data.Subset(dataset, range(10)))
    out = model.generate(batch["patches"])
    assert out.token_ids.shape == (10, 20)
    for i in range(10):
        expected = greedy_generate(model, batch["patches"][i])[None]
        n = expected.shape[1]
        assert out.token_ids[i, :n].tolist() == expected[0].tolist()
        assert (out.token_ids[i, n:] == 0).all()
        # attention rows equal forward's on the generated prefix, for every position read
        _, attn = model(batch["patches"][i:i + 1], expected)
        read = n - 1                                   # the last token is never read
        for layer in range(2):
            torch.testing.assert_close(out.cross_attention[layer][i, :, :read],
                                       attn[layer][0, :, :read], atol=1e-5, rtol=1e-4)
            assert (out.cross_attention[layer][i, :, read:] == 0).all()


def test_reports_start_with_bos_and_hold_pad_after_eos(trained, dataset):
    out = trained.generate(ml.as_batch(dataset)["patches"])
    assert (out.token_ids[:, 0] == 1).all()
    for row in out.token_ids:
        eos = (row == 2).nonzero()
        if len(eos):
            assert (row[eos[0, 0] + 1:] == 0).all()
    assert (out.token_ids == 2).any(dim=1).float().mean() > 0.9


def test_one_beam_equals_greedy(trained, dataset):
    patches = ml.as_batch(dataset)["patches"][:50]
    greedy = trained.generate(patches)
    with torch.no_grad():
        one_beam = beam_search(trained, trained.encode_image(patches), 20, num_beams=1)
    assert torch.equal(greedy.token_ids, one_beam.token_ids)
    torch.testing.assert_close(greedy.cross_attention[-1], one_beam.cross_attention[-1])


def test_beam_search_is_no_worse_than_greedy_in_log_probability(model, dataset):
    """On an untrained model the beams disagree with greedy; the best beam's summed
    log-probability (length_penalty=0: no normalisation) is at least greedy's."""
    patches = ml.as_batch(dataset)["patches"][:20]
    greedy = model.generate(patches)
    beams = model.generate(patches, num_beams=4, length_penalty=0.0)
    assert (beams.scores >= greedy.scores - 1e-4).all()
    assert (beams.scores > greedy.scores + 1e-3).any()
    assert beams.token_ids.shape == greedy.token_ids.shape


def test_beam_attention_rows_match_forward(model, dataset):
    patches = ml.as_batch(dataset)["patches"][:5]
    out = model.generate(patches, num_beams=3)
    for i in range(5):
        row = out.token_ids[i]
        n = int((row != 0).sum())
        _, attn = model(patches[i:i + 1], row[None, :n])
        torch.testing.assert_close(out.cross_attention[-1][i, :, :n - 1], attn[-1][0, :, :n - 1],
                                   atol=1e-5, rtol=1e-4)


def test_generation_is_batched_independently(trained, dataset):
    patches = ml.as_batch(dataset)["patches"][:8]
    together = trained.generate(patches).token_ids
    alone = torch.cat([trained.generate(patches[i:i + 1]).token_ids for i in range(8)])
    assert torch.equal(together, alone)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_len": 21}, "max_len"), ({"max_len": 1}, "max_len"), ({"num_beams": 0}, "num_beams"),
])
def test_bad_generation_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(torch.zeros(1, 16, 64), **kwargs)


def test_generate_checks_the_patch_shape(model):
    with pytest.raises(ValueError, match="d_vision=64"):
        model.generate(torch.zeros(1, 16, 10))


def test_generate_checks_the_patch_device(model):
    with pytest.raises(ValueError, match="image_patches are on meta but the model is on cpu"):
        model.generate(torch.zeros(1, 16, 64, device="meta"))
