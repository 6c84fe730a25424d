"""Training loop, seeding, device choice and checkpoints."""

from __future__ import annotations

import random
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .data import VOCAB, as_batch
from .loss import compute_loss
from .metrics import evaluate
from .model import GroundedReportVLM

CHECKPOINT_FORMAT = "medsight_lab.checkpoint/1"


def set_seed(seed: int = 0):
    """Seed Python, NumPy and PyTorch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(device=None) -> torch.device:
    """`device` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class EpochProgress:
    """How far training is, where a person can see it.

    In a Jupyter kernel: one plain-text line, `ml.train: epoch 3/8, loss 0.412, ...`, rewritten in
    place through a display id. JupyterLab and Notebook 7 show it live, and nbconvert / nbval /
    nbclient store its last state. (A tqdm widget needs a widget front-end: under nbclient it is
    stored as a bar stuck at 0.) Elsewhere (the command line): a tqdm bar on stderr.
    `notebooks/nbval_sanitize.cfg` reads the line as `ml.train: ...`, since losses vary by device.
    """

    PREFIX = "ml.train:"

    def __init__(self, epochs: int):
        self.epochs = epochs
        self._handle = self._bar = None
        if _in_jupyter_kernel():
            from IPython.display import display
            self._handle = display(_Text(f"{self.PREFIX} epoch 0/{epochs}"), display_id=True)
        else:
            from tqdm.std import tqdm
            self._bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr)

    def update(self, epoch: int, values: dict):
        """Epoch `epoch` (1-based) is done; `values` are the figures to show, e.g. the loss."""
        shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        if self._handle is not None:
            self._handle.update(_Text(f"{self.PREFIX} epoch {epoch}/{self.epochs}, {shown}"))
        else:
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
            self._bar.update(1)

    def close(self):
        if self._bar is not None:
            self._bar.close()


class _Text:
    """A display object that is only text (its repr is the line, without quotes)."""

    def __init__(self, text):
        self.text = text

    def _repr_pretty_(self, printer, cycle):
        printer.text(self.text)


def _in_jupyter_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def train(model, train_dataset, epochs=15, batch_size=32, lr=3e-4, seed=0, device=None,
          val_dataset=None, progress=True, lambda_ground=1.0, lambda_entropy=0.01,
          grounding="kl", ground_rows="holds", ground_layers="last", ground_heads="mean",
          lambda_outside=0.0):
    """Train `model` with Adam and `compute_loss`; returns a history of per-epoch means.

    history: {"loss", "ce", "ground", "entropy"} (and, with `val_dataset`, "val_exact_match",
    "val_finding_accuracy", "val_pointing_game" from free-running generation), one value per epoch.

    The course's default grounding term is the KL one with weight 1 (chapter 4 compares it with
    the reference's BCE at 0.1); `ground_rows`, `ground_layers`, `ground_heads` and
    `lambda_outside` choose chapter 8's supervision variants (see `compute_loss`). `progress` shows
    each finished epoch (`EpochProgress`). Shuffling uses its own generator seeded with `seed`, so
    a run is repeatable on CPU whatever else touched the global RNG.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not isinstance(model, GroundedReportVLM):
        raise TypeError(f"model must be a GroundedReportVLM, got {type(model).__name__}")
    device = pick_device(device)
    model.to(device)
    # The whole set is a few MB: keep it on the device and slice batches from it.
    data = as_batch(train_dataset, device)
    n = len(train_dataset)
    # The fused Adam kernel saves about a tenth of each step of this small model.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    gen = torch.Generator().manual_seed(seed)
    history = {"loss": [], "ce": [], "ground": [], "entropy": []}

    bar = EpochProgress(epochs) if progress else None
    for epoch in range(1, epochs + 1):
        model.train()
        sums = torch.zeros(4)
        order = torch.randperm(n, generator=gen).to(device)
        n_batches = 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            logits, attn = model(data["patches"][idx], data["token_ids"][idx])
            losses = compute_loss(logits, data["token_ids"][idx], attn, data["finding_mask"][idx],
                                  lambda_ground=lambda_ground, lambda_entropy=lambda_entropy,
                                  grounding=grounding, ground_rows=ground_rows,
                                  ground_layers=ground_layers, ground_heads=ground_heads,
                                  lambda_outside=lambda_outside)
            optimizer.zero_grad()
            losses[0].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            sums += torch.stack([x.detach() for x in losses]).cpu()
            n_batches += 1
        for key, value in zip(history, (sums / n_batches).tolist()):
            history[key].append(value)
        shown = {"loss": history["loss"][-1]}
        if val_dataset is not None:
            metrics = evaluate(model, val_dataset)
            for key in ("exact_match", "finding_accuracy", "pointing_game"):
                history.setdefault(f"val_{key}", []).append(metrics[key])
            shown["val exact match"] = metrics["exact_match"]
        if bar is not None:
            bar.update(epoch, shown)
    if bar is not None:
        bar.close()
    model.eval()
    return history


def save_checkpoint(model, path, vocab=VOCAB):
    """Save weights with the hyperparameters and vocabulary needed to rebuild and check them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "config": asdict(model.config), "vocab": list(vocab),
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, path)


def load_checkpoint(path, vocab=VOCAB, device=None) -> GroundedReportVLM:
    """Rebuild a model saved by `save_checkpoint`; refuses a file that is not a MedSight Lab
    checkpoint or was made with a different vocabulary than `vocab`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a MedSight Lab checkpoint (torch.load failed: "
                         f"{type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a MedSight Lab checkpoint "
                         f"(expected format {CHECKPOINT_FORMAT!r})")
    if ckpt["vocab"] != list(vocab):
        raise ValueError(f"{path} was made with a different vocabulary ({len(ckpt['vocab'])} "
                         f"tokens) than the one expected ({len(vocab)} tokens); retrain it "
                         f"with this version of medsight_lab")
    model = GroundedReportVLM.from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(pick_device(device)).eval()
