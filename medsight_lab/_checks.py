"""Input checks of the model: clear errors instead of tracebacks from deep inside torch.

Kept out of `model.py` so that its reading path is the model itself.
"""

from __future__ import annotations

import torch


def check_device(name, tensor, device):
    # The usual slip on a GPU: the model was moved (ml.train does it), the inputs were not.
    if tensor.device != device:
        raise ValueError(f"{name} are on {tensor.device} but the model is on {device}; "
                         f"move them with {name}.to({str(device)!r})")


def check_patches(config, image_patches, device):
    if not isinstance(image_patches, torch.Tensor):
        raise TypeError(f"image_patches must be a tensor, got {type(image_patches).__name__}")
    if (image_patches.dim() != 3 or image_patches.shape[1] != config.n_patches
            or image_patches.shape[2] != config.d_vision):
        raise ValueError(f"image_patches must have shape (B, n_patches={config.n_patches}, "
                         f"d_vision={config.d_vision}), got {tuple(image_patches.shape)}")
    if not image_patches.is_floating_point():
        raise TypeError(f"image_patches must be a floating-point tensor, got {image_patches.dtype}")
    check_device("image_patches", image_patches, device)


def check_tokens(config, token_ids, batch_size, device):
    if not isinstance(token_ids, torch.Tensor) or token_ids.dtype not in (torch.long, torch.int):
        raise TypeError("token_ids must be an integer (long) tensor")
    if token_ids.dim() != 2 or token_ids.shape[0] != batch_size:
        raise ValueError(f"token_ids must have shape (B={batch_size}, T), "
                         f"got {tuple(token_ids.shape)}")
    check_device("token_ids", token_ids, device)
    if not 1 <= token_ids.shape[1] <= config.max_len:
        raise ValueError(f"sequence length T={token_ids.shape[1]} must be between 1 and "
                         f"max_len={config.max_len}")
    if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= config.vocab_size):
        raise ValueError(f"token ids must lie in [0, vocab_size={config.vocab_size}), got values "
                         f"in [{int(token_ids.min())}, {int(token_ids.max())}]")
