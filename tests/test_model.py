import pytest
import torch

import medsight_lab as ml


def test_forward_shapes(model, dataset):
    batch = ml.as_batch(torch.utils.data.Subset(dataset, range(3)))
    logits, attn = model(batch["patches"], batch["token_ids"])
    assert logits.shape == (3, 20, len(ml.VOCAB))
    assert len(attn) == 2 and attn[0].shape == (3, 4, 20, 16)
    torch.testing.assert_close(attn[-1].sum(-1), torch.ones(3, 4, 20))


def test_causal_mask():
    m = ml.causal_mask(4)
    assert m.dtype == torch.bool and m[2].tolist() == [True, True, True, False]


def test_changing_token_t_changes_no_logit_before_t(model, dataset):
    """The leak test, by hand: logits before t stay, logits from t on change."""
    patches, tokens = dataset[0]["patches"][None], dataset[0]["token_ids"][None].clone()
    before, _ = model(patches, tokens)
    t = 6
    tokens[0, t] = (tokens[0, t] + 5) % len(ml.VOCAB)
    after, _ = model(patches, tokens)
    torch.testing.assert_close(before[:, :t], after[:, :t])
    assert not torch.allclose(before[:, t], after[:, t])


@pytest.mark.parametrize("t", [1, 6, 19])
def test_future_leak_passes_the_causal_model_and_catches_the_reference(model, dataset, t):
    patches, tokens = dataset[0]["patches"][None], dataset[0]["token_ids"][None]
    assert not ml.future_leak(model, patches, tokens, t)
    torch.manual_seed(0)
    leaky = ml.default_model(causal=False).eval()   # the reference notebook's decoder
    assert ml.future_leak(leaky, patches, tokens, t)
    with pytest.raises(ValueError, match="position"):
        ml.future_leak(model, patches, tokens, 0)


def test_padding_keys_are_ignored(model, dataset):
    """Real positions give the same logits whatever stands in the padded tail's place."""
    item = dataset[0]
    tokens = item["token_ids"][None]
    n_real = int((tokens != 0).sum())
    short, _ = model(item["patches"][None], tokens[:, :n_real])
    full, _ = model(item["patches"][None], tokens)
    torch.testing.assert_close(short, full[:, :n_real])
    all_pad, attn = model(item["patches"][None], torch.zeros(1, 20, dtype=torch.long))
    assert torch.isfinite(all_pad).all()


def test_patch_positions_tell_apart_identical_patches_in_different_places(model):
    patches = torch.zeros(1, 16, 64)
    patches[0, 0] = 3.0
    moved = torch.zeros(1, 16, 64)
    moved[0, 7] = 3.0
    tokens = torch.tensor([[1]])
    a, _ = model(patches, tokens)
    b, _ = model(moved, tokens)
    assert not torch.allclose(a, b)
    torch.manual_seed(0)
    no_pos = ml.default_model(patch_positions=False).eval()
    torch.testing.assert_close(no_pos(patches, tokens)[0], no_pos(moved, tokens)[0])


def test_gradients_reach_every_parameter(model, dataset):
    model.train()
    batch = ml.as_batch(torch.utils.data.Subset(dataset, range(16)))
    logits, attn = model(batch["patches"], batch["token_ids"])
    total, *_ = ml.compute_loss(logits, batch["token_ids"], attn, batch["finding_mask"])
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("patches, tokens, message", [
    (torch.zeros(2, 16, 32), torch.ones(2, 5, dtype=torch.long), "d_vision=64"),
    (torch.zeros(2, 9, 64), torch.ones(2, 5, dtype=torch.long), "n_patches=16"),
    (torch.zeros(16, 64), torch.ones(2, 5, dtype=torch.long), r"\(B, n_patches"),
    (torch.zeros(2, 16, 64), torch.full((2, 5), 36), "vocab_size=36"),
    (torch.zeros(2, 16, 64), torch.full((2, 5), -1), "vocab_size=36"),
    (torch.zeros(2, 16, 64), torch.ones(2, 21, dtype=torch.long), "max_len=20"),
    (torch.zeros(2, 16, 64), torch.ones(3, 5, dtype=torch.long), r"\(B=2, T\)"),
])
def test_bad_inputs_get_clear_errors(model, patches, tokens, message):
    with pytest.raises(ValueError, match=message):
        model(patches, tokens)


def test_float_token_ids_are_refused(model):
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 16, 64), torch.ones(1, 3))


def test_integer_patches_are_refused(model):
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 16, 64, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


# No GPU in CI: the "meta" device stands in for "not where the model is".
@pytest.mark.parametrize("patches_device, tokens_device, name", [
    ("meta", "cpu", "image_patches"), ("cpu", "meta", "token_ids"),
])
def test_inputs_on_another_device_than_the_model(model, patches_device, tokens_device, name):
    patches = torch.zeros(1, 16, 64, device=patches_device)
    tokens = torch.ones(1, 3, dtype=torch.long, device=tokens_device)
    with pytest.raises(ValueError, match=rf"{name} are on meta but the model is on cpu; "
                                         rf"move them with {name}\.to\('cpu'\)"):
        model(patches, tokens)


@pytest.mark.parametrize("overrides, message", [
    ({"num_heads": 5}, "must divide d_model=64"),
    ({"d_model": 0}, "d_model must be a positive integer"),
    ({"num_layers": -1}, "num_layers"),
    ({"max_len": 1}, "max_len must be at least 2"),
])
def test_bad_hyperparameters(overrides, message):
    with pytest.raises(ValueError, match=message):
        ml.default_model(**overrides)


@pytest.mark.parametrize("S, T", [(0, 1), (4, 1), (0, 5), (3, 4)])
def test_cached_attention_step_equals_causal_attention_over_the_whole_sequence(S, T):
    g = torch.Generator().manual_seed(S * 10 + T)
    q, k, v = (torch.randn(2, 3, S + T, 8, generator=g) for _ in range(3))
    full, _ = ml.model.attention(q, k, v, ml.causal_mask(S + T))
    context, k_cache, v_cache = ml.cached_attention_step(
        q[:, :, S:], k[:, :, :S], v[:, :, :S], k[:, :, S:], v[:, :, S:])
    torch.testing.assert_close(context, full[:, :, S:])
    assert torch.equal(k_cache, k) and torch.equal(v_cache, v)


@pytest.mark.parametrize("args, message", [
    ((torch.zeros(2, 3, 1, 8), torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 4, 8),
      torch.zeros(2, 3, 1, 8), torch.zeros(2, 3, 8)), "v_new must be a (B, H, positions, d_k)"),
    ((torch.zeros(2, 3, 1, 8), torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 4, 8),
      torch.zeros(2, 3, 2, 8), torch.zeros(2, 3, 1, 8)), "must share one shape"),
    ((torch.zeros(2, 3, 1, 8), torch.zeros(2, 3, 4, 6), torch.zeros(2, 3, 4, 6),
      torch.zeros(2, 3, 1, 8), torch.zeros(2, 3, 1, 8)), "with the same B, H, d_k"),
    (([[0.0]], torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 1, 8),
      torch.zeros(2, 3, 1, 8)), "q_new must be a (B, H, positions, d_k) tensor"),
])
def test_cached_attention_step_bad_inputs(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ml.cached_attention_step(*args)


def test_a_mask_with_a_cache_is_refused(model, dataset):
    image_kv = model.encode_image(dataset.patches[:2])
    caches = [[] for _ in range(model.config.num_layers)]
    tokens = dataset.token_ids[:2, :1]
    with pytest.raises(ValueError, match="mask with a key/value cache"):
        model.decode(tokens, image_kv, mask=torch.ones(2, 1, 1, 1, dtype=torch.bool),
                     caches=caches)
