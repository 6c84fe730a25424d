"""The second world: rendered chest-like images, reports with several findings, negation, laterality.

Each image is a grayscale film (numpy only): body, two lung fields with texture and ribs,
clavicles, mediastinum and heart shadow, diaphragm domes over a bright abdomen, and noise.
Normal anatomy is bright where the findings are not (heart, diaphragm, clavicles, ribs), a
pneumothorax is *darker* than lung, and every finding's place varies from image to image, so a
model-free map such as "point at the brightest patch" does not ground the findings.

Radiological convention: the patient's right is on the image's left (x < 0.5).

Findings (0-3 per image, about a third of the studies normal), each with a pixel mask pooled to a
patch mask:
- cardiomegaly: the heart shadow widened (cardiothoracic ratio above 0.5);
- nodule: a small bright disc in the upper or lower zone of either lung;
- consolidation: patchy opacity in the upper or lower zone of either lung;
- effusion: a meniscus-shaped opacity at a costophrenic angle (small / moderate / large);
- pneumothorax: an apical rim without lung texture, with a pleural line (small / large).

Reports: one sentence per mentioned finding in a radiologist's order (heart, lungs, pleura), two or
more phrasings each, explicit negatives ("No pneumothorax."); nodule and consolidation are, when
absent, either denied or not mentioned. The vocabulary is built from this grammar.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .data import ReportDataset, Tokenizer

# In report order.
RENDERED_FINDINGS = ("cardiomegaly", "nodule", "consolidation", "effusion", "pneumothorax")
SIDES = ("right", "left")
ZONES = ("upper", "lower")
SIZES = {"effusion": ("small", "moderate", "large"), "pneumothorax": ("small", "large")}
HAS_SIDE = frozenset({"nodule", "consolidation", "effusion", "pneumothorax"})
HAS_ZONE = frozenset({"nodule", "consolidation"})

# The report grammar: per finding, its positive and negative phrasings. Slots: {side} {zone} {size}
# ({Size} is the capitalised size at the start of a sentence).
POSITIVE = {
    "cardiomegaly": ["The heart is enlarged.", "Cardiomegaly is present.",
                     "The cardiac silhouette is enlarged."],
    "nodule": ["There is a nodule in the {side} {zone} zone.", "A {side} {zone} zone nodule is seen.",
               "Nodule in the {side} {zone} zone."],
    "consolidation": ["There is consolidation in the {side} {zone} zone.",
                      "Patchy {side} {zone} zone consolidation.",
                      "Consolidation is seen in the {side} {zone} zone."],
    "effusion": ["There is a {size} {side} pleural effusion.", "{Size} {side}-sided pleural effusion.",
                 "A {size} effusion is seen on the {side}."],
    "pneumothorax": ["There is a {size} {side} pneumothorax.", "{Size} {side} apical pneumothorax.",
                     "A {size} {side}-sided pneumothorax is present."],
}
NEGATIVE = {
    "cardiomegaly": ["The heart size is normal.", "No cardiomegaly."],
    "nodule": ["No pulmonary nodule.", "No nodule is seen."],
    "consolidation": ["No focal consolidation.", "There is no consolidation."],
    "effusion": ["No pleural effusion.", "There is no pleural effusion."],
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
}
# Absent findings the report may leave unmentioned (the others are always denied).
MAY_OMIT = frozenset({"nodule", "consolidation"})

# Words of a positive sentence that do not refer to the finding's place: they ground to nothing.
FUNCTION_WORDS = frozenset({"there", "is", "a", "the", "in", "on", "seen", "present", ".", ",", "-"})

NORMAL_SHARE = 0.35
N_FINDINGS_P = (0.55, 0.30, 0.15)           # 1, 2 or 3 findings in an abnormal study
PREVALENCE = {"cardiomegaly": 0.2, "nodule": 0.15, "consolidation": 0.2, "effusion": 0.25,
              "pneumothorax": 0.2}
MIN_PATCH_COVER = 0.1                        # share of a patch's pixels that puts it in a mask
# Patches are standardised pixels, as a ViT's input is: raw [0, 1] pixels through the model's
# freshly initialised linear patch embedding are swamped by the patch position embeddings.
PIXEL_MEAN, PIXEL_STD = 0.3, 0.2

# Chapter 7's training recipe (the course model; `benchmarks/bench_world2.py` measures it): chosen
# so that the chapter runs in about 90 s from a fresh kernel on one thread.
RECIPE = {"n_train": 2000, "epochs": 20, "lr": 3e-3, "batch_size": 64}


def sentence(finding, positive, phrasing=0, side=None, zone=None, size=None) -> str:
    """One sentence of the grammar, e.g. sentence("effusion", True, 1, "left", size="small")."""
    templates = (POSITIVE if positive else NEGATIVE)[finding]
    text = templates[phrasing]
    return text.format(side=side, zone=zone, size=size, Size=(size or "").capitalize())


def all_sentences():
    """Every sentence the grammar can write, as (finding, label, text) with label the
    {"status", "side", "size"} the sentence states."""
    out = []
    for f in RENDERED_FINDINGS:
        sides = SIDES if f in HAS_SIDE else (None,)
        zones = ZONES if f in HAS_ZONE else (None,)
        sizes = SIZES.get(f, (None,))
        for k, side, zone, size in itertools.product(range(len(POSITIVE[f])), sides, zones, sizes):
            out.append((f, {"status": "positive", "side": side, "size": size},
                        sentence(f, True, k, side, zone, size)))
        for k in range(len(NEGATIVE[f])):
            out.append((f, {"status": "negative", "side": None, "size": None},
                        sentence(f, False, k)))
    return out


def build_vocab() -> list[str]:
    """Special tokens, then every word and punctuation mark the grammar can write, sorted."""
    from .data import _WORD  # the tokenizer's word pattern, so the two agree
    words = {w for _, _, text in all_sentences() for w in _WORD.findall(text.lower())}
    return ["<pad>", "<bos>", "<eos>"] + sorted(words)


RENDERED_VOCAB = build_vocab()


def _longest_report_tokens() -> int:
    longest = {}
    for f, _, text in all_sentences():
        longest[f] = max(longest.get(f, 0), len(Tokenizer(RENDERED_VOCAB).encode(text)) - 2)
    return sum(longest.values()) + 2


def pool_to_patches(pixel_mask, patch_size, min_cover=MIN_PATCH_COVER):
    """(..., H, W) bool pixel masks -> (..., N) float patch masks on the patch_size grid (row-major):
    a patch is in the mask where at least `min_cover` of its pixels are; a non-empty pixel mask
    always keeps at least its most-covered patch."""
    m = np.asarray(pixel_mask, dtype=np.float32)
    *lead, H, W = m.shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide the image size {H}x{W}")
    g_h, g_w = H // patch_size, W // patch_size
    cover = m.reshape(*lead, g_h, patch_size, g_w, patch_size).mean(axis=(-3, -1))
    cover = cover.reshape(*lead, g_h * g_w)
    best = cover.max(axis=-1, keepdims=True)
    return ((cover >= min_cover) | ((cover == best) & (best > 0))).astype(np.float32)


def image_patches(images, patch_size):
    """(B, 1, H, W) images -> (B, N, patch_size**2) raw pixel patches on the row-major grid."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 1:
        raise ValueError("images must be a (B, 1, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    B, _, H, W = images.shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide the image size {H}x{W}")
    p = patch_size
    return (images[:, 0].reshape(B, H // p, p, W // p, p).permute(0, 1, 3, 2, 4)
            .reshape(B, (H // p) * (W // p), p * p))


def patch_grid_to_pixels(values, height, width):
    """(N,) values on the row-major patch grid (the order of `image_patches`) -> (height, width)
    array holding each patch's value over its pixels: the way back from patches to the film."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be one value per patch (N,), got shape {v.shape}")
    side = math.isqrt(v.size)
    if side * side != v.size:
        raise ValueError(f"{v.size} values do not form a square patch grid")
    if height % side or width % side:
        raise ValueError(f"a {side}x{side} patch grid does not tile a {height}x{width} image")
    return np.kron(v.reshape(side, side), np.ones((height // side, width // side)))


def _check_args(n_samples, image_size, patch_size, seed, shortcut, shortcut_finding):
    for name, value in (("n_samples", n_samples), ("image_size", image_size),
                        ("patch_size", patch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels to draw the anatomy, got {image_size}")
    if image_size % patch_size:
        raise ValueError(f"patch_size={patch_size} must divide image_size={image_size}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if shortcut_finding not in RENDERED_FINDINGS:
        raise ValueError(f"shortcut_finding must be one of {RENDERED_FINDINGS}, "
                         f"got {shortcut_finding!r}")
    if shortcut is not None:
        if (not isinstance(shortcut, (tuple, list)) or len(shortcut) != 2
                or not all(isinstance(p, (int, float)) and not isinstance(p, bool)
                           and 0 <= p <= 1 for p in shortcut)):
            raise ValueError("shortcut must be None or (p_with, p_without), two probabilities in "
                             f"[0, 1], got {shortcut!r}")


class RenderedChestXrayDataset(ReportDataset):
    """Rendered chest films with multi-finding reports, deterministic from `seed` (the global RNG
    is neither read nor changed).

    Items (dicts): image (1, H, W) float in [0, 1]; patches (N, patch_size**2), the image cut into
    the row-major patch grid and standardised ((pixel - PIXEL_MEAN) / PIXEL_STD); token_ids (max_len,); finding_mask (max_len, N): each word of a
    positive sentence (but its function words) grounds to that finding's patches, negative
    sentences to nothing; lesion_mask (N,): the union of the positive findings' patches;
    finding_masks (F, N) per finding in `RENDERED_FINDINGS` order; labels (see `labels`);
    report (str); has_mark (bool); mark_mask (N,): the patches the mark covers (all zero
    without one).

    `labels[i]`: {finding: {"status": "positive" | "negative" | "absent", "side", "size"}}, what
    report i states (absent = not mentioned); `pixel_masks` (n, F, H, W) bool.

    shortcut=(p_with, p_without) draws a spurious "portable" marker in a top corner of a `p_with`
    share of the images with `shortcut_finding` and a `p_without` share of the others; it is in no
    report and no mask, and everything else about the images is the same as with shortcut=None.
    """

    FINDINGS = RENDERED_FINDINGS

    def __init__(self, n_samples=1000, image_size=64, patch_size=8, seed=0, shortcut=None,
                 shortcut_finding="pneumothorax"):
        _check_args(n_samples, image_size, patch_size, seed, shortcut, shortcut_finding)
        self.n_samples, self.image_size, self.patch_size, self.seed = (n_samples, image_size,
                                                                        patch_size, seed)
        self.shortcut, self.shortcut_finding = shortcut, shortcut_finding
        self.vocab = RENDERED_VOCAB
        self.tokenizer = Tokenizer(self.vocab)
        self.vocab_size = len(self.vocab)
        self.word2idx = self.tokenizer.word2idx
        self.grid = image_size // patch_size
        self.n_patches = self.grid ** 2
        self.d_vision = patch_size ** 2
        self.max_len = _longest_report_tokens()

        streams = [np.random.default_rng([seed, k]) for k in range(5)]
        present, sides, zones, sizes = self._draw_findings(streams[0])
        # In chunks that fit in the cache: several times faster than one pass over all images.
        chunks = [_render(streams[1], image_size, *(a[k:k + 256] for a in (present, sides, zones,
                                                                          sizes)))
                  for k in range(0, n_samples, 256)]
        images = np.concatenate([c[0] for c in chunks])
        pixel_masks = np.concatenate([c[1] for c in chunks])
        self.has_mark = self._draw_mark(streams[4], present)
        mark_pixels = _draw_marker(images, self.has_mark, streams[4])
        self.pixel_masks = torch.from_numpy(pixel_masks)                         # (n, F, H, W)
        self.images = torch.from_numpy(images)[:, None]                          # (n, 1, H, W)
        p = patch_size
        self.patches = (image_patches(self.images, p) - PIXEL_MEAN) / PIXEL_STD  # (n, N, p*p)
        self.finding_masks = torch.from_numpy(pool_to_patches(pixel_masks, p))   # (n, F, N)
        self.lesion_mask = self.finding_masks.max(dim=1).values                 # (n, N)
        self.mark_mask = torch.from_numpy(pool_to_patches(mark_pixels, p))       # (n, N)

        self.reports, self.labels, token_finding = self._write_reports(
            streams[2], present, sides, zones, sizes)
        self.token_ids = torch.tensor([self.tokenizer.encode(r, self.max_len) for r in self.reports])
        # token_finding[i, t]: the finding whose patches token t grounds to, or -1
        self._token_finding = torch.tensor(token_finding)

    # -- drawing the cases ---------------------------------------------------------------------
    def _draw_findings(self, rng):
        n, F = self.n_samples, len(RENDERED_FINDINGS)
        present = np.zeros((n, F), dtype=bool)
        weights = np.array([PREVALENCE[f] for f in RENDERED_FINDINGS])
        counts = np.where(rng.random(n) < NORMAL_SHARE, 0,
                          1 + rng.choice(3, size=n, p=N_FINDINGS_P))
        for i, k in enumerate(counts):
            if k:
                present[i, rng.choice(F, size=k, replace=False, p=weights / weights.sum())] = True
        sides = rng.integers(0, 2, size=(n, F))                 # 0 right, 1 left
        zones = rng.integers(0, 2, size=(n, F))                 # 0 upper, 1 lower
        sizes = np.stack([rng.integers(0, len(SIZES.get(f, (None,))), size=n)
                          for f in RENDERED_FINDINGS], axis=1)
        return present, sides, zones, sizes

    def _draw_mark(self, rng, present):
        draw = rng.random(self.n_samples)
        if self.shortcut is None:
            return np.zeros(self.n_samples, dtype=bool)
        p_with, p_without = self.shortcut
        has = present[:, RENDERED_FINDINGS.index(self.shortcut_finding)]
        return np.where(has, draw < p_with, draw < p_without)

    def _write_reports(self, rng, present, sides, zones, sizes):
        reports, labels, token_finding = [], [], []
        word_ids = self.tokenizer.word2idx
        for i in range(self.n_samples):
            ids, tf, label = [], [], {}
            for j, f in enumerate(RENDERED_FINDINGS):
                if present[i, j]:
                    side = SIDES[sides[i, j]] if f in HAS_SIDE else None
                    zone = ZONES[zones[i, j]] if f in HAS_ZONE else None
                    size = SIZES[f][sizes[i, j]] if f in SIZES else None
                    text = sentence(f, True, rng.integers(len(POSITIVE[f])), side, zone, size)
                    label[f] = {"status": "positive", "side": side, "size": size}
                    ground = j
                elif f in MAY_OMIT and rng.random() < 0.5:
                    label[f] = {"status": "absent", "side": None, "size": None}
                    continue
                else:
                    text = sentence(f, False, rng.integers(len(NEGATIVE[f])))
                    label[f] = {"status": "negative", "side": None, "size": None}
                    ground = -1
                for w in self.tokenizer.decode_tokens(self.tokenizer.encode(text))[1:-1]:
                    ids.append(word_ids[w])
                    tf.append(ground if ground >= 0 and w not in FUNCTION_WORDS else -1)
            reports.append(self.tokenizer.decode([1] + ids + [2]))
            labels.append(label)
            # aligned with token_ids: <bos>, the words, <eos>, padding
            token_finding.append([-1] + tf + [-1] * (self.max_len - 1 - len(tf)))
        return reports, labels, token_finding

    # -- the Dataset interface -----------------------------------------------------------------
    def __len__(self):
        return self.n_samples

    def finding_mask(self, idx):
        """(max_len, N) grounding mask of item idx."""
        tf = self._token_finding[idx]
        masks = torch.cat([self.finding_masks[idx], torch.zeros(1, self.n_patches)])  # -1 -> zeros
        return masks[tf]

    def __getitem__(self, idx):
        if not isinstance(idx, (int, np.integer)) or isinstance(idx, bool):
            raise TypeError(f"index must be an int, got {type(idx).__name__}")
        if not -self.n_samples <= idx < self.n_samples:
            raise IndexError(f"index {idx} out of range for {self.n_samples} samples")
        idx = int(idx) % self.n_samples
        return {
            "image": self.images[idx],
            "patches": self.patches[idx],
            "token_ids": self.token_ids[idx],
            "finding_mask": self.finding_mask(idx),
            "lesion_mask": self.lesion_mask[idx],
            "finding_masks": self.finding_masks[idx],
            "labels": self.labels[idx],
            "report": self.reports[idx],
            "has_mark": bool(self.has_mark[idx]),
            "mark_mask": self.mark_mask[idx],
        }


# -- rendering (vectorised over images) -----------------------------------------------------------
def _smooth_noise(rng, n, size, cells):
    """(n, size, size) smooth noise in about [-1, 1]: a cells x cells random grid, upsampled."""
    coarse = torch.from_numpy(rng.standard_normal((n, 1, cells, cells)).astype(np.float32))
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic",
                                         align_corners=False)
    return up[:, 0].numpy().clip(-2.5, 2.5) / 2.5


def _ellipse(x, y, cx, cy, rx, ry):
    """Normalised elliptic radius: < 1 inside."""
    return np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)


def _render(rng, size, present, sides, zones, sizes):
    """Images (n, H, W) float32 in [0, 1] and pixel masks (n, F, H, W) bool."""
    n = present.shape[0]
    u = lambda lo, hi: rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    y, x = coords[None, :, None], coords[None, None, :]
    # Patient position and build vary: the findings' places move with the anatomy.
    cx, dy, s = u(0.46, 0.54), u(-0.05, 0.05), u(0.85, 1.05)
    lung_cy, lung_dx, lung_rx, lung_ry = 0.45 + dy, 0.19 * s, 0.14 * s, 0.29 * s
    lung_cx = (cx - lung_dx, cx + lung_dx)                       # patient's right, left

    img = np.full((n, size, size), 0.03, dtype=np.float32)
    body = _ellipse(x, y, cx, 0.58 + dy, 0.47 * s, 0.62 * s) < 1
    img = np.where(body, 0.30 + 0.03 * _smooth_noise(rng, n, size, 6), img)

    # Diaphragm domes: below them is the bright abdomen; the right dome sits a little higher.
    dome_top = (lung_cy + 0.21 * s - 0.015, lung_cy + 0.21 * s + 0.015)
    below = [y > top + 2.2 * (x - lx) ** 2 / s for top, lx in zip(dome_top, lung_cx)]
    abdomen = body & np.where(x < cx, below[0], below[1])
    lung_r = [_ellipse(x, y, lx, lung_cy, lung_rx, lung_ry) for lx in lung_cx]
    lungs = [(r < 1) & ~b & body for r, b in zip(lung_r, below)]
    texture = _smooth_noise(rng, n, size, 12)
    lung_value = 0.13 + 0.04 * texture
    # Ribs: bright curved bands across each lung, with their own phase per image.
    phase = u(0, 2 * np.pi)
    ribs = np.clip(np.cos(2 * np.pi * (y + 0.9 * (x - cx) ** 2) / (0.09 * s) + phase), 0, 1) ** 3
    lung_any = lungs[0] | lungs[1]
    img = np.where(lung_any, lung_value + 0.09 * ribs, img)
    img = np.where(abdomen, 0.62 + 0.03 * texture, img)

    # Cardiomegaly widens the heart shadow: cardiothoracic ratio 0.38-0.48 normal, 0.56-0.66 not.
    thorax = 2 * (lung_dx + lung_rx)
    cardio = present[:, 0][:, None, None]
    ctr = np.where(cardio, u(0.56, 0.66), u(0.38, 0.48))
    heart_cx, heart_cy = cx + 0.035 * s, lung_cy + 0.11 * s
    heart = _ellipse(x, y, heart_cx, heart_cy, ctr * thorax / 2, 0.15 * s) < 1
    mediastinum = (np.abs(x - cx) < 0.055 * s) & (y > 0.08) & (y < heart_cy) & body
    img = np.where(mediastinum, 0.52, img)
    img = np.where(heart & body, 0.58 + 0.02 * texture, img)
    # Clavicles: bright bars from the neck outwards and up.
    for sign in (-1, 1):
        t = np.clip((x - cx) * sign / (0.32 * s), 0, 1)
        line_y = 0.2 + dy - 0.06 * t
        clav = (np.abs(y - line_y) < 0.016 * s) & ((x - cx) * sign > 0.03) & (t < 1)
        img = np.where(clav, img + 0.32, img)

    masks = np.zeros((n,) + (len(RENDERED_FINDINGS), size, size), dtype=bool)
    masks[:, 0] = heart & cardio & body
    side_of = lambda j: sides[:, j][:, None, None]
    pick = lambda j, values: np.where(side_of(j) == 0, values[0], values[1])
    lung_of = lambda j: pick(j, lungs)
    lcx = lambda j: pick(j, lung_cx)
    zone_y = lambda j: lung_cy + np.where(zones[:, j][:, None, None] == 0, -0.12, 0.09) * s

    # Nodule: a small bright disc in the chosen zone.
    j = 1
    has = present[:, j][:, None, None]
    ncx, ncy = lcx(j) + u(-0.05, 0.05) * s, zone_y(j) + u(-0.04, 0.04) * s
    radius = u(0.028, 0.042)
    disc_r = _ellipse(x, y, ncx, ncy, radius, radius)
    disc = (disc_r < 1) & has
    img = np.where(disc, img + 0.22 * np.clip(1.3 - disc_r, 0, 1), img)
    masks[:, j] = disc

    # Consolidation: patchy opacity in a zone of one lung.
    j = 2
    has = present[:, j][:, None, None]
    region = (_ellipse(x, y, lcx(j) + u(-0.02, 0.02) * s, zone_y(j), 0.11 * s, 0.08 * s) < 1) \
        & lung_of(j)
    patchy = np.clip(0.6 + _smooth_noise(rng, n, size, 16), 0, 1)
    consolidation = region & (patchy > 0.25) & has
    img = np.where(consolidation, img + 0.26 * patchy, img)
    masks[:, j] = consolidation

    # Effusion: fluid at the costophrenic angle, its meniscus rising towards the chest wall.
    j = 3
    has = present[:, j][:, None, None]
    depth = np.array([0.07, 0.13, 0.2], dtype=np.float32)[sizes[:, j]][:, None, None] * s
    base = lung_cy + lung_ry
    lateral = np.abs(x - lcx(j)) / lung_rx                     # 0 at the lung's middle, 1 at the wall
    side_lung = np.where(side_of(j) == 0, lung_r[0], lung_r[1]) < 1
    fluid = (y > base - depth - 0.06 * s * lateral ** 2) & side_lung & body \
        & (np.abs(x - cx) > 0.05 * s) & has
    img = np.where(fluid, 0.5 + 0.02 * texture, img)
    masks[:, j] = fluid

    # Pneumothorax: an apical-lateral rim of the lung with no texture, behind a pleural line.
    j = 4
    has = present[:, j][:, None, None]
    rim = np.array([0.78, 0.58], dtype=np.float32)[sizes[:, j]][:, None, None]
    r = np.where(side_of(j) == 0, lung_r[0], lung_r[1])
    outward = (y < lung_cy + 0.05 * s) & ((x - lcx(j)) * np.where(side_of(j) == 0, -1, 1) > -0.04)
    air = (r > rim) & (r < 1) & outward & lung_of(j) & has
    line = (np.abs(r - rim) < 0.06) & outward & lung_of(j) & has
    img = np.where(air, 0.05 + 0.01 * texture, img)
    img = np.where(line, img + 0.18, img)
    masks[:, j] = air

    img += rng.normal(0, 0.02, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), masks


def _draw_marker(images, has_mark, rng):
    """A bright "portable" marker (a letter-like block) in a top corner, outside the body; returns
    its (n, H, W) bool pixel mask."""
    n, size, _ = images.shape
    w = max(size // 10, 3)
    pixels = np.zeros(images.shape, dtype=bool)
    for i in np.flatnonzero(has_mark):
        left = rng.random() < 0.5
        x0 = 1 if left else size - w - 2
        block = np.full((w, w), 0.95, dtype=np.float32)
        block[w // 3: 2 * w // 3, w // 3:] = 0.2             # a "P"-like notch
        images[i, 1:1 + w, x0:x0 + w] = block
        pixels[i, 1:1 + w, x0:x0 + w] = True
    return pixels
