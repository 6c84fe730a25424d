"""Shortcuts (chapter 8): a spurious mark that travels with one finding, and whether grounding
supervision keeps the model from reading it.

The second world's `shortcut=(p_with, p_without)` knob draws a "portable" marker on a `p_with`
share of the films with the shortcut finding and a `p_without` share of the others. Models trained
where the mark travels with the finding are tested where the correlation is kept, removed
(the same share of marks with and without the finding) and inverted; and on the same films with the
mark taken away (the dataset is deterministic per seed, so only the mark differs), which says
whether the mark decided a call.

Scores of the affected finding, from free-running generation through the labeler: F1, hallucination
rate (share of its positive calls that are wrong), omission rate (share of its cases not called),
and how much attention the finding's words, and the rows just before them (the rows that predict
them), put on the mark. The supervision variants are options of `ml.train` (see
`loss.compute_loss`); `ARMS` names the ones the chapter and `benchmarks/bench_shortcuts.py` compare.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import as_batch
from .labeler import label_findings
from .model import eval_mode
from .rendered import RENDERED_FINDINGS, RenderedChestXrayDataset
from .rendered_metrics import positive_sentences

SHORTCUT = (0.95, 0.05)          # the training set's correlation: mark on 95 % of cases, 5 % of others
SHORTCUT_FINDING = "pneumothorax"
# The chapter's training budget (both models; chapter 8 runs in about two minutes on one thread).
SHORTCUT_RECIPE = {"n_train": 1500, "epochs": 15, "lr": 3e-3, "batch_size": 64}
# The supervision variants: keyword arguments of `ml.train` (the course default is KL grounding of
# weight 1 on the head-averaged last layer, row that holds the word).
ARMS = {
    "no grounding": {"lambda_ground": 0.0},
    "grounding (row holds word)": {},
    "grounding (row predicts word)": {"ground_rows": "predicts"},
    "grounding, every layer and head": {"ground_layers": "all", "ground_heads": "each"},
    # the predicting row's KL grounding plus a penalty, of the weight named, on the attention that
    # falls outside every finding's mask (in the spirit of Ross et al. 2017; the mark's position
    # is never used)
    "grounding + outside penalty 0.1": {"ground_rows": "predicts", "lambda_outside": 0.1},
    "grounding + outside penalty 0.3": {"ground_rows": "predicts", "lambda_outside": 0.3},
    "grounding + outside penalty 1": {"ground_rows": "predicts", "lambda_outside": 1.0},
}


def test_sets(n_samples, seed, shortcut=SHORTCUT, finding=SHORTCUT_FINDING, **kwargs):
    """Three test sets of the same films: {"kept": the training correlation, "removed": the mark on
    the same share of films with and without the finding, "inverted": p_with and p_without
    swapped}. Only the marks differ between the three."""
    p_with, p_without = shortcut
    middle = (p_with + p_without) / 2
    return {name: RenderedChestXrayDataset(n_samples, seed=seed, shortcut=s,
                                           shortcut_finding=finding, **kwargs)
            for name, s in (("kept", (p_with, p_without)), ("removed", (middle, middle)),
                            ("inverted", (p_without, p_with)))}


test_sets.__test__ = False       # not a pytest test, whatever its name


def without_mark(dataset):
    """The same films as `dataset` with no mark drawn (everything else is identical)."""
    return RenderedChestXrayDataset(len(dataset), image_size=dataset.image_size,
                                    patch_size=dataset.patch_size, seed=dataset.seed,
                                    shortcut=None, shortcut_finding=dataset.shortcut_finding)


def has_finding(dataset, finding=None):
    """(n,) bool: the films that have `finding` (default: the dataset's shortcut finding)."""
    finding = finding or dataset.shortcut_finding
    return np.array([label[finding]["status"] == "positive" for label in dataset.labels])


def mark_correlation(dataset) -> dict:
    """The mark's share among the films with and without the shortcut finding, and their counts."""
    has, mark = has_finding(dataset), np.asarray(dataset.has_mark)
    return {"with finding": float(mark[has].mean()) if has.any() else float("nan"),
            "without finding": float(mark[~has].mean()) if (~has).any() else float("nan"),
            "n with": int(has.sum()), "n without": int((~has).sum())}


def attention_on_mark(attn, mark, words):
    """How much attention the finding's words put on the mark (chapter 8's exercise).

    attn (B, T, N): one attention map per row (row t reads token t and predicts token t+1);
    mark (B, N) 0/1: the patches of each image's mark; words (B, T) bool: the rows that hold the
    finding's words (never row 0, which holds <bos>; at least one in the batch).
    Returns (on_words, before), 0-dim tensors: the mean over all finding words of the batch of the
    attention mass on the mark in the word's own row, and in the row just before it (the row that
    predicts the word).
    """
    mass = (attn * mark[:, None, :]).sum(-1)            # (B, T) mass on the mark, per row
    before = torch.zeros_like(words)
    before[:, :-1] = words[:, 1:]                       # row t-1 predicts the word at t
    return mass[words].mean(), mass[before].mean()


@torch.no_grad()
def read_reports(model, dataset, finding=None, batch_size=500) -> dict:
    """Free-running reports of `model` on `dataset`, read for one finding: per film whether the
    report calls it (`said`), whether the film has it (`has`), `has_mark`, the rows of its words in
    the report (`words`, (n, T) bool), the cross-attention per layer averaged over heads (`attn`,
    list of (n, T, N)), the reports (`reports`). An unreadable report calls nothing."""
    finding = finding or dataset.shortcut_finding
    device = next(model.parameters()).device
    patches = as_batch(dataset, device)["patches"]
    ids, layers = [], []
    with eval_mode(model):
        for start in range(0, len(dataset), batch_size):
            out = model.generate(patches[start:start + batch_size])
            ids.append(out.token_ids.cpu())
            layers.append([a.mean(1).cpu() for a in out.cross_attention])
    ids = torch.cat(ids)
    attn = [torch.cat(per_layer) for per_layer in zip(*layers)]
    tokenizer = dataset.tokenizer
    said = np.zeros(len(dataset), dtype=bool)
    words = torch.zeros(ids.shape, dtype=torch.bool)
    reports = [tokenizer.decode(row) for row in ids]
    for i, row in enumerate(ids):
        try:
            said[i] = label_findings(reports[i])[finding]["status"] == "positive"
            for f, _, positions in positive_sentences(tokenizer.decode_tokens(row)):
                if f == finding:
                    words[i, positions] = True
        except ValueError:
            continue
    return {"said": said, "has": has_finding(dataset, finding),
            "has_mark": np.asarray(dataset.has_mark), "words": words, "attn": attn,
            "reports": reports, "finding": finding}


def call_scores(said, has) -> dict:
    """F1, hallucination rate (wrong share of the positive calls) and omission rate (share of the
    cases not called) of one finding, from per-film bool arrays."""
    said, has = np.asarray(said, bool), np.asarray(has, bool)
    tp, fp, fn = (int((said & has).sum()), int((said & ~has).sum()), int((~said & has).sum()))
    nan = float("nan")
    return {"f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan,
            "hallucination_rate": fp / (tp + fp) if tp + fp else nan,
            "omission_rate": fn / (tp + fn) if tp + fn else nan}


def shortcut_scores(model, dataset, finding=None) -> dict:
    """`call_scores` of the finding on `dataset`, the share of films without the finding that the
    model calls positive with and without the mark (`false_call_with_mark`, `..._without_mark`),
    and the attention on the mark of the finding's words on marked films, per layer (`mark_words`,
    `mark_before`: lists, last layer last; NaN where no marked film's report states the finding).
    `read` keeps what `read_reports` returned."""
    read = read_reports(model, dataset, finding)
    said, has, mark = read["said"], read["has"], read["has_mark"]
    out = call_scores(said, has)
    for name, films in (("with_mark", ~has & mark), ("without_mark", ~has & ~mark)):
        out[f"false_call_{name}"] = float(said[films].mean()) if films.any() else float("nan")
    words = read["words"] & torch.from_numpy(mark)[:, None]
    marks = dataset.mark_mask
    pairs = [attention_on_mark(a, marks, words) if words.any() else (torch.tensor(float("nan")),) * 2
             for a in read["attn"]]
    out["mark_words"] = [w.item() for w, _ in pairs]
    out["mark_before"] = [b.item() for _, b in pairs]
    out["read"] = read
    return out


def mark_decides(model, dataset, finding=None) -> dict:
    """Does the mark decide the call? The same films with the mark taken away: among the marked
    films, the share whose call of the finding changes (`flipped`), and among the marked films
    that have the finding and whose report calls it, the share that are "right for the wrong
    reason": the finding words' attention mass lies inside the finding's mask (above 0.5, the
    spatial-precision rule) while the call disappears without the mark (`looks_right_but_mark`),
    with their count and the count of candidates."""
    finding = finding or dataset.shortcut_finding
    with_mark = read_reports(model, dataset, finding)
    plain = read_reports(model, without_mark(dataset), finding)
    marked = with_mark["has_mark"]
    flipped = (with_mark["said"] != plain["said"]) & marked
    lesion = dataset.finding_masks[:, RENDERED_FINDINGS.index(finding)]          # (n, N)
    mass = (with_mark["attn"][-1] * lesion[:, None]).sum(-1)                     # (n, T)
    words = with_mark["words"]
    n_words = words.sum(1)
    mean_mass = (mass * words).sum(1) / n_words.clamp_min(1)
    candidates = marked & with_mark["has"] & with_mark["said"] & (n_words > 0).numpy()
    looks_right = candidates & (mean_mass > 0.5).numpy() & ~plain["said"]
    return {"flipped": float(flipped[marked].mean()) if marked.any() else float("nan"),
            "looks_right_but_mark": (float(looks_right.sum() / candidates.sum())
                                     if candidates.any() else float("nan")),
            "n_looks_right_but_mark": int(looks_right.sum()), "n_candidates": int(candidates.sum()),
            "examples": np.flatnonzero(looks_right).tolist()}


def train_arm(train_set, seed=0, recipe=None, progress=True, **options):
    """The course model trained on `train_set` with `recipe` (default `SHORTCUT_RECIPE`) and the
    supervision `options` of one arm (see `ARMS`); training seed `seed`. `progress` shows
    `ml.train`'s progress line (in a notebook) or bar (elsewhere). Seeds and trains through the
    package's `ml.set_seed` and `ml.train`, so a notebook-wide seed shift
    (`scripts/check_seed_robustness.py`) reaches it."""
    import medsight_lab as ml
    recipe = {**SHORTCUT_RECIPE, **(recipe or {})}
    ml.set_seed(seed)
    model = ml.default_model(train_set)
    ml.train(model, train_set, epochs=recipe["epochs"], lr=recipe["lr"],
             batch_size=recipe["batch_size"], seed=seed, progress=progress, **options)
    return model


def bootstrap_ci(values, n_boot=2000, seed=0, level=0.95):
    """Percentile bootstrap interval of the mean of `values` (1-D; NaNs dropped): (mean, lo, hi)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    means = np.random.default_rng(seed).choice(v, size=(n_boot, v.size)).mean(1)
    alpha = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def bootstrap_diff(a, b, n_boot=2000, seed=0, level=0.95):
    """Percentile bootstrap interval of mean(a) - mean(b), the two resampled independently."""
    a, b = (np.asarray(x, dtype=float) for x in (a, b))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    rng = np.random.default_rng(seed)
    diffs = (rng.choice(a, size=(n_boot, a.size)).mean(1)
             - rng.choice(b, size=(n_boot, b.size)).mean(1))
    alpha = (1 - level) / 2
    return (float(a.mean() - b.mean()), float(np.quantile(diffs, alpha)),
            float(np.quantile(diffs, 1 - alpha)))


def bootstrap_films(said, has, score="f1", n_boot=1000, seed=0, level=0.95):
    """A `call_scores` score of one model with a percentile bootstrap interval over the test films
    (the chapter's intervals for a single training run): (value, lo, hi)."""
    said, has = np.asarray(said, bool), np.asarray(has, bool)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(said), size=(n_boot, len(said)))
    values = np.array([call_scores(said[i], has[i])[score] for i in idx])
    values = values[~np.isnan(values)]
    alpha = (1 - level) / 2
    return (call_scores(said, has)[score], float(np.quantile(values, alpha)),
            float(np.quantile(values, 1 - alpha)))
