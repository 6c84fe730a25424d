import pytest
import torch
import torch.nn.functional as F

import medsight_lab as ml
from medsight_lab.reference import compute_loss as reference_compute_loss


def random_inputs(seed, B=4, T=12, V=36, H=4, N=16, layers=2, with_findings=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    token_ids = torch.randint(3, V, (B, T), generator=g)
    token_ids[:, 0] = 1
    token_ids[0, 8:] = 0                                       # a padded tail
    attn = [torch.randn(B, H, T, N, generator=g).softmax(-1) for _ in range(layers)]
    masks = torch.zeros(B, T, N)
    if with_findings:
        masks[1, 2:5, 3] = masks[1, 2:5, 7] = 1.0
        masks[2, 6, :4] = 1.0                                  # rows 0 and 3: no finding at all
    return logits, token_ids, attn, masks


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("with_findings", [True, False])
@pytest.mark.parametrize("lambdas", [(0.1, 0.01), (0.5, 0.2)])
def test_compute_loss_equals_the_reference_formulas(seed, with_findings, lambdas):
    inputs = random_inputs(seed, with_findings=with_findings)
    ours = ml.compute_loss(*inputs, *lambdas)
    ref = reference_compute_loss(*inputs, *lambdas)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_cross_entropy_is_shifted_and_ignores_padding():
    logits, token_ids, attn, masks = random_inputs(0)
    ce = ml.shifted_cross_entropy(logits, token_ids)
    unshifted = F.cross_entropy(logits.reshape(-1, 36), token_ids.reshape(-1), ignore_index=0)
    assert not torch.isclose(ce, unshifted)
    # Changing a logit at the last position (which predicts nothing) leaves the loss unchanged.
    logits2 = logits.clone()
    logits2[:, -1] += 10
    torch.testing.assert_close(ml.shifted_cross_entropy(logits2, token_ids), ce)


def test_all_padding_batch_gives_zero_not_nan():
    logits = torch.randn(2, 5, 36, requires_grad=True)
    ce = ml.shifted_cross_entropy(logits, torch.zeros(2, 5, dtype=torch.long))
    assert ce.item() == 0.0
    ce.backward()


def test_kl_grounding_is_zero_on_a_perfect_match_and_positive_otherwise():
    masks = torch.zeros(1, 3, 16)
    masks[0, 1, [3, 7]] = 1.0
    perfect = torch.full((1, 4, 3, 16), 1 / 16)
    perfect[0, :, 1] = masks[0, 1] / 2
    assert ml.grounding_loss([perfect], masks, "kl").item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((1, 4, 3, 16), 1 / 16)
    assert ml.grounding_loss([uniform], masks, "kl").item() == pytest.approx(torch.log(torch.tensor(8.0)).item(), rel=1e-5)


def test_unknown_grounding_kind_is_refused():
    with pytest.raises(ValueError, match="bce"):
        ml.compute_loss(*random_inputs(0), grounding="mse")


@pytest.mark.parametrize("bad, message", [
    ("tokens", r"token_ids must have shape \(B, T\)"),
    ("masks", r"finding_masks must have shape \(B, T, N\)"),
    ("attn", r"shape \(B=4, H, T=12, N\)"),
])
def test_bad_loss_inputs(bad, message):
    logits, token_ids, attn, masks = random_inputs(0)
    if bad == "tokens":
        token_ids = token_ids[:, :-1]
    elif bad == "masks":
        masks = masks[..., :8].transpose(1, 2)
    else:
        attn = [a[:, :, :5] for a in attn]
    with pytest.raises(ValueError, match=message):
        ml.compute_loss(logits, token_ids, attn, masks)
