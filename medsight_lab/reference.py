"""The reference notebook's code, kept as it was written (bugs included) — the baseline that the
benchmarks measure against and the oracle that `compute_loss` is tested against.

Not part of the course's API and not imported by `medsight_lab/__init__.py`. Known bugs, each a
lesson of the course: no causal mask; "right-sided"/"left-sided" tokenize to <pad>; no patch
positions; every word of a report is grounded. Only what the benchmarks need is kept (the plots
are dropped); randomness comes from the global NumPy / PyTorch generators, as in the notebook.
"""

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset


class SyntheticRadiologyDataset(Dataset):
    FINDINGS = {
        0: ("normal", "No acute findings. Heart size is normal. Lungs are clear."),
        1: ("nodule", "There is a small nodule in the right upper lobe."),
        2: ("effusion", "There is a moderate left-sided pleural effusion."),
        3: ("cardiomegaly", "The heart is enlarged, consistent with cardiomegaly."),
        4: ("pneumothorax", "Small right-sided pneumothorax is present."),
    }
    VOCAB = ["<pad>", "<bos>", "<eos>", "no", "acute", "findings", "heart",
             "size", "is", "normal", "lungs", "are", "clear", "there", "a",
             "small", "nodule", "in", "the", "right", "upper", "lobe",
             "moderate", "left", "sided", "pleural", "effusion", "enlarged",
             "consistent", "with", "cardiomegaly", "pneumothorax", "present"]

    def __init__(self, n_samples=1000, n_patches=16, d_vision=64, max_len=20):
        self.n_samples = n_samples
        self.n_patches = n_patches
        self.d_vision = d_vision
        self.max_len = max_len
        self.vocab_size = len(self.VOCAB)
        self.word2idx = {w: i for i, w in enumerate(self.VOCAB)}
        self.data = []
        for _ in range(n_samples):
            finding_idx = np.random.randint(0, 5)
            self.data.append(self._generate_sample(finding_idx))

    def _tokenize(self, text):
        tokens = [self.word2idx.get(w.lower().rstrip(".,"), 0) for w in text.split()]
        tokens = [self.word2idx["<bos>"]] + tokens + [self.word2idx["<eos>"]]
        if len(tokens) < self.max_len:
            tokens += [0] * (self.max_len - len(tokens))
        return tokens[:self.max_len]

    def _generate_sample(self, finding_idx):
        patches = torch.randn(self.n_patches, self.d_vision) * 0.3
        finding_name, report_text = self.FINDINGS[finding_idx]
        if finding_idx == 0:
            finding_patches = []
        elif finding_idx == 1:
            finding_patches = [0, 1]
            patches[0] += torch.randn(self.d_vision) * 2 + 3.0
            patches[1] += torch.randn(self.d_vision) * 1.5 + 2.0
        elif finding_idx == 2:
            finding_patches = [12, 13, 14]
            for p in finding_patches:
                patches[p] += torch.randn(self.d_vision) * 2 + 2.5
        elif finding_idx == 3:
            finding_patches = [5, 6, 9, 10]
            for p in finding_patches:
                patches[p] += torch.randn(self.d_vision) * 1.5 + 2.0
        elif finding_idx == 4:
            finding_patches = [3, 7]
            for p in finding_patches:
                patches[p] += torch.randn(self.d_vision) * 2.5 + 3.5
        token_ids = self._tokenize(report_text)
        finding_mask = torch.zeros(self.max_len, self.n_patches)
        if finding_patches:
            for t_idx in range(len(token_ids)):
                if token_ids[t_idx] > 2:
                    for p in finding_patches:
                        finding_mask[t_idx, p] = 1.0
        return {
            "patches": patches,
            "token_ids": torch.tensor(token_ids, dtype=torch.long),
            "finding_mask": finding_mask,
            "finding_idx": finding_idx,
            "finding_name": finding_name,
        }

    def __len__(self):
        return self.n_samples

    def __getitem__(self, idx):
        return self.data[idx]


def collate(batch):
    """The notebook's DataLoader lambda, named so it can be passed around."""
    return {k: torch.stack([b[k] for b in batch]) if isinstance(batch[0][k], torch.Tensor)
            else [b[k] for b in batch] for k in batch[0]}


class GroundedReportVLM(nn.Module):
    def __init__(self, d_vision, d_model, num_heads, num_layers, vocab_size, max_len,
                 causal=False):
        super().__init__()
        self.image_proj = nn.Linear(d_vision, d_model)
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.pos_embedding = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList()
        for _ in range(num_layers):
            self.blocks.append(nn.ModuleDict({
                'self_attn': nn.MultiheadAttention(d_model, num_heads, batch_first=True),
                'cross_attn_q': nn.Linear(d_model, d_model),
                'cross_attn_k': nn.Linear(d_model, d_model),
                'cross_attn_v': nn.Linear(d_model, d_model),
                'cross_attn_out': nn.Linear(d_model, d_model),
                'ffn': nn.Sequential(nn.Linear(d_model, d_model * 4), nn.GELU(),
                                     nn.Linear(d_model * 4, d_model)),
                'norm1': nn.LayerNorm(d_model),
                'norm2': nn.LayerNorm(d_model),
                'norm3': nn.LayerNorm(d_model),
            }))
        self.output_head = nn.Linear(d_model, vocab_size)
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.d_model = d_model
        # The one change the benchmark can switch on: the reference "with a causal mask added".
        self.causal = causal

    def cross_attention(self, block, text, image):
        B, T, D = text.shape
        _, N, _ = image.shape
        Q = block['cross_attn_q'](text)
        K = block['cross_attn_k'](image)
        V = block['cross_attn_v'](image)
        Q = Q.view(B, T, self.num_heads, self.d_k).transpose(1, 2)
        K = K.view(B, N, self.num_heads, self.d_k).transpose(1, 2)
        V = V.view(B, N, self.num_heads, self.d_k).transpose(1, 2)
        scores = torch.matmul(Q, K.transpose(-2, -1)) / math.sqrt(self.d_k)
        attn_weights = F.softmax(scores, dim=-1)
        context = torch.matmul(attn_weights, V)
        context = context.transpose(1, 2).contiguous().view(B, T, self.d_model)
        return block['cross_attn_out'](context), attn_weights

    def forward(self, image_patches, token_ids):
        B, T = token_ids.shape
        image_tokens = self.image_proj(image_patches)
        positions = torch.arange(T, device=token_ids.device).unsqueeze(0)
        text_tokens = self.token_embedding(token_ids) + self.pos_embedding(positions)
        mask = (torch.ones(T, T, dtype=torch.bool, device=token_ids.device).triu(1)
                if self.causal else None)
        all_attn = []
        for block in self.blocks:
            normed = block['norm1'](text_tokens)
            sa_out, _ = block['self_attn'](normed, normed, normed, attn_mask=mask)
            text_tokens = text_tokens + sa_out
            normed = block['norm2'](text_tokens)
            ca_out, attn = self.cross_attention(block, normed, image_tokens)
            text_tokens = text_tokens + ca_out
            all_attn.append(attn)
            normed = block['norm3'](text_tokens)
            text_tokens = text_tokens + block['ffn'](normed)
        return self.output_head(text_tokens), all_attn


def compute_loss(logits, token_ids, attn_weights, finding_masks,
                 lambda_ground=0.1, lambda_entropy=0.01):
    shift_logits = logits[:, :-1].contiguous()
    shift_targets = token_ids[:, 1:].contiguous()
    ce_loss = F.cross_entropy(shift_logits.view(-1, logits.size(-1)),
                              shift_targets.view(-1), ignore_index=0)
    last_attn = attn_weights[-1]
    avg_attn = last_attn.mean(dim=1)
    mask_exists = finding_masks.sum(dim=-1) > 0
    if mask_exists.any():
        attn_for_ground = avg_attn[mask_exists]
        masks_for_ground = finding_masks[mask_exists]
        ground_loss = F.binary_cross_entropy(
            attn_for_ground.clamp(1e-6, 1 - 1e-6),
            masks_for_ground / (masks_for_ground.sum(dim=-1, keepdim=True) + 1e-6))
    else:
        ground_loss = torch.tensor(0.0, device=logits.device)
    entropy = -(avg_attn * (avg_attn + 1e-8).log()).sum(dim=-1).mean()
    total = ce_loss + lambda_ground * ground_loss + lambda_entropy * entropy
    return total, ce_loss, ground_loss, entropy


def train(model, train_loader, epochs=15, device="cpu"):
    """The notebook's training loop (without the plot)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    train_losses = []
    for _ in range(epochs):
        model.train()
        epoch_loss, n_batches = 0, 0
        for batch in train_loader:
            patches = batch["patches"].to(device)
            token_ids = batch["token_ids"].to(device)
            masks = batch["finding_mask"].to(device)
            logits, attn = model(patches, token_ids)
            total_loss, ce, gnd, ent = compute_loss(logits, token_ids, attn, masks)
            optimizer.zero_grad()
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            epoch_loss += total_loss.item()
            n_batches += 1
        train_losses.append(epoch_loss / n_batches)
    return train_losses


@torch.no_grad()
def greedy_generate(model, patches, max_len=20, bos=1, eos=2):
    """Per-image greedy decoding that re-runs the whole prefix at every step (the reference has
    no generation code; this is the straightforward loop one would write for it)."""
    model.eval()
    tokens = torch.tensor([[bos]], device=patches.device)
    while tokens.shape[1] < max_len and tokens[0, -1] != eos:
        logits, _ = model(patches[None], tokens)
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[0]
