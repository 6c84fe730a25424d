"""Synthetic chest-X-ray-like data: images as patch features, one-sentence reports, grounding masks.

Each "image" is 16 patch feature vectors (what a ViT would hand the decoder), laid out on a 4x4 grid
(patch p at row p // 4, column p % 4). A finding brightens a fixed set of patches (its lesion), and
the report names it. Grounding masks say, for every report token that names a finding, its side or
its size, which patches it refers to.

Two fixes over the reference notebook:
- the tokenizer splits hyphens and keeps punctuation, so "right-sided" is no longer silently mapped
  to <pad> (id 0) and `decode(encode(report)) == report` for every report;
- only finding, side and size words are grounded, not "there is a".
"""

from __future__ import annotations

import re

import torch
from torch.utils.data import Dataset

# The reference's 33 tokens, in the reference's order, then our additions (punctuation and the
# hyphen, so that reports round-trip). Ids 0-2 are special.
VOCAB = [
    "<pad>", "<bos>", "<eos>", "no", "acute", "findings", "heart",
    "size", "is", "normal", "lungs", "are", "clear", "there", "a",
    "small", "nodule", "in", "the", "right", "upper", "lobe",
    "moderate", "left", "sided", "pleural", "effusion", "enlarged",
    "consistent", "with", "cardiomegaly", "pneumothorax", "present",
    ".", ",", "-",
]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

# finding_idx -> (name, report), as in the reference.
FINDINGS = {
    0: ("normal", "No acute findings. Heart size is normal. Lungs are clear."),
    1: ("nodule", "There is a small nodule in the right upper lobe."),
    2: ("effusion", "There is a moderate left-sided pleural effusion."),
    3: ("cardiomegaly", "The heart is enlarged, consistent with cardiomegaly."),
    4: ("pneumothorax", "Small right-sided pneumothorax is present."),
}

# finding_idx -> [(patch, std, mean shift), ...]: where each finding lies and how bright it is.
# Nodule (0, 1) and pneumothorax (3, 7) are both two bright patches: a model without patch
# position embeddings can tell them apart only by brightness (the pneumothorax's is higher).
LESIONS = {
    0: [],
    1: [(0, 2.0, 3.0), (1, 1.5, 2.0)],
    2: [(12, 2.0, 2.5), (13, 2.0, 2.5), (14, 2.0, 2.5)],
    3: [(5, 1.5, 2.0), (6, 1.5, 2.0), (9, 1.5, 2.0), (10, 1.5, 2.0)],
    4: [(3, 2.5, 3.5), (7, 2.5, 3.5)],
}

# Words that name a finding, its side or its size: the only tokens the grounding loss supervises.
GROUNDED_WORDS = frozenset({
    "small", "nodule", "right", "upper", "lobe",
    "moderate", "left", "sided", "pleural", "effusion",
    "heart", "enlarged", "cardiomegaly", "pneumothorax",
})

def finding_masks(token_ids, lesion_mask, grounded_ids) -> torch.Tensor:
    """The grounding target: (B, T) token ids, (B, N) 0/1 lesion masks and the ids of the
    grounded words -> (B, T, N) float. Row t (the token read at position t) is the image's lesion
    mask when token t is a grounded word, else zeros; an image without a lesion has no target."""
    if (token_ids.dim(), lesion_mask.dim()) != (2, 2) or len(token_ids) != len(lesion_mask):
        raise ValueError(f"expected token_ids (B, T) and lesion_mask (B, N) with the same B, got "
                         f"{tuple(token_ids.shape)} and {tuple(lesion_mask.shape)}")
    grounded = torch.isin(token_ids, grounded_ids.to(token_ids.device)).float()      # (B, T)
    return grounded[:, :, None] * lesion_mask.float()[:, None, :]


_WORD = re.compile(r"[a-z]+|[.,\-]")


class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary that refuses unknown words (and characters
    that are neither letters, `.`, `,`, `-` nor spaces) instead of mapping them to <pad> or
    dropping them (the reference's silent laterality bug)."""

    def __init__(self, vocab=VOCAB):
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate tokens")
        self.vocab = list(vocab)
        self.word2idx = {w: i for i, w in enumerate(self.vocab)}

    def __len__(self):
        return len(self.vocab)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """`<bos> words <eos>`, padded with <pad> to `max_len` if given."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        # Anything the word pattern would skip (an en dash, a digit, ';') is refused, not dropped.
        stray = sorted(set(_WORD.sub("", text.lower())) - set(" \t\n"))
        if stray:
            raise ValueError(f"characters the tokenizer cannot read: {stray} (in {text!r}); "
                             "it reads letters, '.', ',', '-' and spaces")
        words = _WORD.findall(text.lower())
        unknown = [w for w in words if w not in self.word2idx]
        if unknown:
            raise ValueError(f"words not in the vocabulary: {unknown} (in {text!r})")
        ids = [BOS_ID] + [self.word2idx[w] for w in words] + [EOS_ID]
        if max_len is not None:
            if len(ids) > max_len:
                raise ValueError(f"report needs {len(ids)} tokens with <bos>/<eos>, "
                                 f"more than max_len={max_len}: {text!r}")
            ids += [PAD_ID] * (max_len - len(ids))
        return ids

    def decode_tokens(self, ids) -> list[str]:
        """Token strings up to and including <eos>, pads dropped."""
        tokens = []
        for i in _as_id_list(ids):
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} outside the vocabulary [0, {len(self.vocab)})")
            if i == PAD_ID:
                continue
            tokens.append(self.vocab[i])
            if i == EOS_ID:
                break
        return tokens

    def decode(self, ids) -> str:
        """Readable text: special tokens dropped, punctuation attached, sentences capitalised."""
        text = ""
        for w in self.decode_tokens(ids):
            if w in ("<bos>", "<eos>"):
                continue
            if w in (".", ",", "-") or text.endswith("-") or not text:
                text += w
            else:
                text += " " + w
        # Capitalise the first word and every word after a full stop.
        return re.sub(r"(^|\. )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def _as_id_list(ids) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"expected a 1-D sequence of token ids, got shape {tuple(ids.shape)}")
        return ids.tolist()
    return [int(i) for i in ids]


def _check_positive(**sizes):
    for name, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class ReportDataset(Dataset):
    """What both worlds' datasets share: reports tokenized with `self.tokenizer` to `self.max_len`
    tokens, and the text of token ids."""

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text, self.max_len))

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def decode_tokens(self, ids) -> list[str]:
        return self.tokenizer.decode_tokens(ids)


class SyntheticRadiologyDataset(ReportDataset):
    """
    Synthetic dataset for grounded report generation, deterministic from its own `seed`
    (the global RNG is neither read nor changed).

    Each item is a dict:
    - patches: (n_patches, d_vision) float - simulated ViT output
    - token_ids: (max_len,) long - tokenized report
    - finding_mask: (max_len, n_patches) float - which patches each token refers to
    - lesion_mask: (n_patches,) float - the finding's patches (all zero for "normal")
    - finding_idx: int, finding_name: str

    `lesion_scale` (default 1) multiplies each lesion's brightening against the same background:
    below about 0.05 the findings become hard to tell apart, a harder variant for assignments
    (`benchmarks/bench_difficulty.py` measures how hard).
    """

    FINDINGS = FINDINGS
    VOCAB = VOCAB
    LESIONS = LESIONS
    GROUNDED_WORDS = GROUNDED_WORDS

    def __init__(self, n_samples=1000, n_patches=16, d_vision=64, max_len=20, seed=0,
                 lesion_scale=1.0):
        _check_positive(n_samples=n_samples, n_patches=n_patches, d_vision=d_vision,
                        max_len=max_len)
        if not isinstance(lesion_scale, (int, float)) or isinstance(lesion_scale, bool) \
                or not 0 < lesion_scale <= 10:
            raise ValueError(f"lesion_scale must be a number in (0, 10], got {lesion_scale!r}")
        largest_patch = max(p for lesion in LESIONS.values() for p, _, _ in lesion)
        if n_patches <= largest_patch:
            raise ValueError(f"n_patches must be at least {largest_patch + 1} to hold every "
                             f"lesion, got {n_patches}")
        self.n_samples, self.n_patches = n_samples, n_patches
        self.d_vision, self.max_len, self.seed = d_vision, max_len, seed
        self.lesion_scale = lesion_scale
        self.tokenizer = Tokenizer(VOCAB)
        self.vocab_size = len(VOCAB)
        self.word2idx = self.tokenizer.word2idx

        # Each report is tokenized once; its grounding mask depends only on the finding.
        self._report_ids = {k: torch.tensor(self.tokenizer.encode(text, max_len))
                            for k, (_, text) in FINDINGS.items()}
        grounded_ids = torch.tensor([self.word2idx[w] for w in sorted(GROUNDED_WORDS)])
        self.grounded_ids = grounded_ids

        gen = torch.Generator().manual_seed(seed)
        self.finding_idx = torch.randint(0, len(FINDINGS), (n_samples,), generator=gen)
        self.patches = torch.randn(n_samples, n_patches, d_vision, generator=gen) * 0.3
        self.lesion_mask = torch.zeros(n_samples, n_patches)
        for i, k in enumerate(self.finding_idx.tolist()):
            for p, std, shift in LESIONS[k]:
                # lesion_scale < 1 makes a finding fainter against the same background noise
                self.patches[i, p] += (torch.randn(d_vision, generator=gen) * std + shift) \
                    * lesion_scale
                self.lesion_mask[i, p] = 1.0
        self.token_ids = torch.stack([self._report_ids[k] for k in self.finding_idx.tolist()])
        self.finding_mask = finding_masks(self.token_ids, self.lesion_mask, grounded_ids)

    def __len__(self):
        return self.n_samples

    def __getitem__(self, idx):
        if not -self.n_samples <= idx < self.n_samples:
            raise IndexError(f"index {idx} out of range for {self.n_samples} samples")
        k = int(self.finding_idx[idx])
        return {
            "patches": self.patches[idx],
            "token_ids": self.token_ids[idx],
            "finding_mask": self.finding_mask[idx],
            "lesion_mask": self.lesion_mask[idx],
            "finding_idx": k,
            "finding_name": FINDINGS[k][0],
        }


def collate(batch):
    """Stack a list of items into a batch dict. A module-level function (not a lambda) so that a
    DataLoader with num_workers > 0 can pickle it."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return {k: torch.stack([b[k] for b in batch]) if isinstance(batch[0][k], torch.Tensor)
            else [b[k] for b in batch]
            for k in batch[0]}


def as_batch(dataset, device=None) -> dict:
    """All items of a dataset (or Subset) stacked into one batch dict, moved to `device`."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: expected at least one sample")
    batch = collate([dataset[i] for i in range(len(dataset))])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
