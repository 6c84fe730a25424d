"""A small transformer decoder that writes a report while cross-attending to image patches.

Fixes over the reference notebook: causal self-attention (the reference let position t read token
t+1 during training), a key-padding mask, and position embeddings for the image patches (the
lesson is about *where*, and nodule / pneumothorax differ mainly in place). The cross-attention runs
`multi_head_attention` (the function chapter 2's exercise is graded against), written out so that
its weights are returned, as in The Annotated Transformer. Sizes come from one `ModelConfig`, which
`ModelConfig.from_dataset` fills from the data (either world).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks, generation


@dataclass
class ModelConfig:
    d_vision: int = 64          # size of one patch feature vector (the image encoder's output)
    d_model: int = 64           # width of the decoder
    num_heads: int = 4          # attention heads; must divide d_model
    num_layers: int = 2         # decoder blocks
    vocab_size: int = 36        # len(medsight_lab.VOCAB)
    max_len: int = 20           # longest token sequence, <bos> and <eos> included
    n_patches: int = 16         # image patches (4x4 grid); sizes the patch position table
    causal: bool = True         # False reproduces the reference's leak (chapter 5 case study)
    patch_positions: bool = True  # False reproduces the reference's position-free patches
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        for name in ("d_vision", "d_model", "num_heads", "num_layers", "vocab_size", "max_len",
                     "n_patches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide d_model={self.d_model}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be at least 2 (<bos> and one token), got {self.max_len}")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name} must lie in [0, vocab_size={self.vocab_size})")

    @classmethod
    def from_dataset(cls, dataset, **overrides) -> "ModelConfig":
        """The config whose data sizes (vocabulary, patch count, patch dimension, report length)
        are the dataset's, the one place they come from; `overrides` set the others."""
        base = getattr(dataset, "dataset", dataset)  # a Subset keeps its parent in .dataset
        missing = [k for k in ("vocab_size", "n_patches", "d_vision", "max_len")
                   if not hasattr(base, k)]
        if missing:
            raise TypeError(f"{type(base).__name__} does not say its {', '.join(missing)}: "
                            "expected a SyntheticRadiologyDataset or RenderedChestXrayDataset")
        sizes = dict(vocab_size=base.vocab_size, n_patches=base.n_patches,
                     d_vision=base.d_vision, max_len=base.max_len)
        return cls(**{**sizes, **overrides})


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool, True where query i may attend to key j, i.e. j <= i."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def split_heads(x, num_heads):
    """(B, T, D) -> (B, H, T, D // H)."""
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)


def merge_heads(x):
    """(B, H, T, d_k) -> (B, T, H * d_k), the inverse of `split_heads`."""
    B, H, T, d_k = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d_k)


def attention(q, k, v, mask=None):
    """Scaled dot-product attention per head, returning its weights.

    q: (B, H, T, d_k), k and v: (B, H, S, d_k); mask: bool, broadcastable to (B, H, T, S), True
    where attention is allowed. Returns context (B, H, T, d_k) and weights (B, H, T, S).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])   # (B, H, T, S)
    if mask is not None:
        # Masking happens before the softmax, so masked keys get exactly zero weight.
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ v, weights


def multi_head_attention(query, key, value, num_heads, mask=None):
    """Scaled dot-product attention over `num_heads` heads, returning its weights.

    query: (B, T, D), key and value: (B, S, D), already projected; D divisible by num_heads.
    mask: bool, broadcastable to (B, H, T, S), True where attention is allowed.
    Returns context (B, T, D) and weights (B, H, T, S) (each row sums to 1 over S).
    """
    context, weights = attention(split_heads(query, num_heads), split_heads(key, num_heads),
                                 split_heads(value, num_heads), mask)
    return merge_heads(context), weights


def cached_attention_step(q_new, k_cache, v_cache, k_new, v_new):
    """One step of self-attention with a key/value cache (per head, already split).

    q_new, k_new, v_new: (B, H, T, d_k), the T newest positions (T = 1 in a generation step);
    k_cache, v_cache: (B, H, S, d_k), the S earlier positions' keys and values (S may be 0).
    The new keys and values are appended to the cache along the positions (dim 2), and each new
    query attends over every cached position and the new positions up to its own: new position i
    sits at S + i. Returns context (B, H, T, d_k) and the extended caches (B, H, S + T, d_k).
    """
    for name, t in (("q_new", q_new), ("k_cache", k_cache), ("v_cache", v_cache),
                    ("k_new", k_new), ("v_new", v_new)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a (B, H, positions, d_k) tensor")
    if k_new.shape != q_new.shape or v_new.shape != q_new.shape \
            or k_cache.shape != v_cache.shape or k_cache.shape[:2] != q_new.shape[:2] \
            or k_cache.shape[3] != q_new.shape[3]:
        raise ValueError("q_new, k_new, v_new must share one shape (B, H, T, d_k), and k_cache, "
                         "v_cache one shape (B, H, S, d_k) with the same B, H, d_k")
    k, v = torch.cat([k_cache, k_new], dim=2), torch.cat([v_cache, v_new], dim=2)
    S, T = k_cache.shape[2], q_new.shape[2]
    allowed = torch.ones(T, S + T, dtype=torch.bool, device=q_new.device).tril(diagonal=S)
    context, _ = attention(q_new, k, v, allowed)
    return context, k, v


class SelfAttention(nn.Module):
    """Causal multi-head self-attention over the report tokens, with a key/value cache for
    generation. Its weights are not needed, so training uses PyTorch's fused kernel."""

    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x, mask=None, cache=None):
        """x: (B, T, D); mask: bool (B, 1, T, T) or None. With `cache` (a list holding the past
        keys and values, or empty), x holds only the new positions and the cache is extended."""
        B, T, D = x.shape
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).split(D, dim=-1))
        if cache is not None:
            if mask is not None:
                raise ValueError("a mask with a key/value cache is not supported: the cache "
                                 "masks causally itself")
            k_cache, v_cache = cache if cache else (k[:, :, :0], v[:, :, :0])
            context, k, v = cached_attention_step(q, k_cache, v_cache, k, v)
            cache[:] = [k, v]
            return self.out(merge_heads(context))
        return self.out(merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class CrossAttention(nn.Module):
    """Text queries attend to image patches; returns the output and the weights (B, H, T, N)."""

    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def image_keys_values(self, image):
        """Project the image once, (B, N, D) keys and values: generation reuses them at every
        step."""
        return self.k(image), self.v(image)

    def forward(self, text, image_kv):
        context, weights = multi_head_attention(self.q(text), *image_kv, self.num_heads)
        return self.out(context), weights


class DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention to the image, feed-forward."""

    def __init__(self, d_model, num_heads):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.self_attn = SelfAttention(d_model, num_heads)
        self.cross_attn = CrossAttention(d_model, num_heads)
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x, image_kv, mask=None, cache=None):
        x = x + self.self_attn(self.norm1(x), mask, cache)
        ca_out, attn = self.cross_attn(self.norm2(x), image_kv)
        x = x + ca_out
        x = x + self.ffn(self.norm3(x))
        return x, attn


class GroundedReportVLM(nn.Module):
    """Report generator: `forward(image_patches, token_ids) -> (logits, attn)` where attn is a
    list with one (B, H, T, N) cross-attention tensor per layer."""

    def __init__(self, *args, **kwargs):
        """`GroundedReportVLM(config)` with a `ModelConfig`, or the config's fields as arguments
        (`GroundedReportVLM(d_vision=64, d_model=64, ...)`)."""
        super().__init__()
        if len(args) == 1 and not kwargs and isinstance(args[0], ModelConfig):
            self.config = args[0]
        else:
            # ModelConfig validates the sizes (clear errors) and is what checkpoints store.
            self.config = ModelConfig(*args, **kwargs)
        cfg = self.config
        d_vision, d_model, num_heads, num_layers = (cfg.d_vision, cfg.d_model, cfg.num_heads,
                                                    cfg.num_layers)
        vocab_size, max_len, n_patches = cfg.vocab_size, cfg.max_len, cfg.n_patches
        patch_positions = cfg.patch_positions
        self.image_proj = nn.Linear(d_vision, d_model)
        self.patch_embedding = nn.Embedding(n_patches, d_model) if patch_positions else None
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.pos_embedding = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(DecoderBlock(d_model, num_heads) for _ in range(num_layers))
        self.output_head = nn.Linear(d_model, vocab_size)

    @classmethod
    def from_config(cls, config: ModelConfig | dict):
        return cls(config if isinstance(config, ModelConfig) else ModelConfig(**config))

    # -- the two halves of a forward pass, shared with generation ------------------------------
    def encode_image(self, image_patches):
        """(B, N, d_vision) -> per-layer (keys, values) of the projected, position-tagged image."""
        _checks.check_patches(self.config, image_patches, self.image_proj.weight.device)
        image = self.image_proj(image_patches)                       # (B, N, D)
        if self.patch_embedding is not None:
            image = image + self.patch_embedding.weight               # (N, D) broadcasts over B
        return [block.cross_attn.image_keys_values(image) for block in self.blocks]

    def decode(self, token_ids, image_kv, start=0, mask=None, caches=None):
        """Token ids (B, T) at positions start..start+T-1 -> logits (B, T, V), attn list."""
        positions = torch.arange(start, start + token_ids.shape[1], device=token_ids.device)
        x = self.token_embedding(token_ids) + self.pos_embedding(positions)
        all_attn = []
        for i, block in enumerate(self.blocks):
            x, attn = block(x, image_kv[i], mask, None if caches is None else caches[i])
            all_attn.append(attn)
        return self.output_head(x), all_attn

    def self_attention_mask(self, token_ids):
        """(B, 1, T, T) bool: causal (if configured) and no attention to <pad> keys. A position
        may always see itself, so even an all-<pad> row has a key to attend to."""
        T = token_ids.shape[1]
        allowed = (token_ids != self.config.pad_id)[:, None, None, :]           # (B, 1, 1, T)
        allowed = allowed | torch.eye(T, dtype=torch.bool, device=token_ids.device)
        if self.config.causal:
            allowed = allowed & causal_mask(T, token_ids.device)
        return allowed

    def forward(self, image_patches, token_ids):
        """
        Args:
            image_patches: (B, N, d_vision)
            token_ids: (B, T), T <= max_len
        Returns:
            logits: (B, T, vocab_size)
            all_attn: list of (B, H, T, N) per layer
        """
        image_kv = self.encode_image(image_patches)
        _checks.check_tokens(self.config, token_ids, image_patches.shape[0],
                             self.image_proj.weight.device)
        return self.decode(token_ids, image_kv, mask=self.self_attention_mask(token_ids))

    def generate(self, image_patches, max_len=None, num_beams=1, length_penalty=1.0):
        """Write reports for a batch of images; see `medsight_lab.generation.generate`."""
        return generation.generate(self, image_patches, max_len=max_len, num_beams=num_beams,
                                   length_penalty=length_penalty)


@contextlib.contextmanager
def eval_mode(model):
    """Run the block with `model` in eval mode, then put back the mode it had (even on an error):
    measuring a model must not switch its dropout or normalisation behind the caller's back."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def future_leak(model, image_patches, token_ids, position) -> bool:
    """The leak test: does changing the token at `position` change any logit before it?

    A causal decoder must answer False. image_patches (1, N, d_vision), token_ids (1, T).
    """
    if not 0 < position < token_ids.shape[1]:
        raise ValueError(f"position must lie in [1, T={token_ids.shape[1]}), got {position}")
    changed = token_ids.clone()
    changed[:, position] = (changed[:, position] + 1) % model.config.vocab_size
    before, _ = model(image_patches, token_ids)
    after, _ = model(image_patches, changed)
    return not torch.allclose(before[:, :position], after[:, :position], atol=1e-6)
