"""What the course measures on the second world (`RenderedChestXrayDataset`), from free-running
generation only.

Clinical scores through the labeler (`label_findings`), the way the field scores reports:
per-finding precision / recall / F1 of the positive findings (micro and macro), laterality and
severity accuracy on the findings found, hallucination rate (share of the positive findings written
that the image does not have) and omission rate (share of the image's findings not written), exact
match and BLEU-4. A report the labeler refuses counts as stating nothing (`unreadable_rate`).

Grounded scores in the spirit of RadFact (Bannur et al., 2024), exact here because the masks are
known. For each generated positive sentence: logical precision (the image has that finding, on that
side) and spatial precision (the attention mass of its finding words inside that finding's mask is
above 0.5); their recall counterparts over the image's findings; the pointing game and attention
mass per finding word. Attention is the last layer's, averaged over heads. Every score comes with
its chance level, and the grounding scores with the model-free maps of `baselines`.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .baselines import brightest_patch_map, uniform_map, unusual_patch_map
from .data import as_batch
from .labeler import label_findings, label_sentence
from .metrics import corpus_bleu, generate_all, pointing_game_and_mass
from .model import eval_mode
from .rendered import (FUNCTION_WORDS, RENDERED_FINDINGS, SIZES, RenderedChestXrayDataset,
                       image_patches)

SPATIAL_THRESHOLD = 0.5


def positive_sentences(tokens):
    """The positive sentences of a generated report, as (finding, label, positions of its finding
    words) — `tokens` the decoded token strings, <bos> first, so a position is a row of the
    cross-attention. Raises ValueError (from the labeler) on a sentence it cannot read."""
    out, words, positions = [], [], []
    for t, w in enumerate(tokens):
        if w in ("<bos>", "<eos>"):
            continue
        if w != ".":
            words.append(w)
            positions.append(t)
            continue
        finding, label = label_sentence(words)
        if label["status"] == "positive":
            out.append((finding, label, [p for p, x in zip(positions, words)
                                         if x not in FUNCTION_WORDS]))
        words, positions = [], []
    return out


def _prf(tp, fp, fn):
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _ratio(a, b):
    return a / b if b else float("nan")


def clinical_scores(predicted, truth) -> dict:
    """Report scores of labels `predicted` (None for an unreadable report) against `truth`, both
    lists of `label_findings`-style dicts."""
    if len(predicted) != len(truth):
        raise ValueError(f"got {len(predicted)} predicted labels for {len(truth)} true ones")
    counts = {f: defaultdict(int) for f in RENDERED_FINDINGS}
    side_ok = side_n = size_ok = size_n = 0
    for pred, true in zip(predicted, truth):
        for f in RENDERED_FINDINGS:
            said = pred is not None and pred[f]["status"] == "positive"
            has = true[f]["status"] == "positive"
            counts[f]["tp" if said and has else "fp" if said else "fn" if has else "tn"] += 1
            if said and has:
                if true[f]["side"] is not None:
                    side_n += 1
                    side_ok += pred[f]["side"] == true[f]["side"]
                if true[f]["size"] is not None:
                    size_n += 1
                    size_ok += pred[f]["size"] == true[f]["size"]
    per_finding = {}
    for f, c in counts.items():
        p, r, f1 = _prf(c["tp"], c["fp"], c["fn"])
        per_finding[f] = {"precision": p, "recall": r, "f1": f1, "support": c["tp"] + c["fn"]}
    tp, fp, fn = (sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn"))
    with_support = [s["f1"] for s in per_finding.values() if s["support"]]
    return {
        "finding_f1_micro": _prf(tp, fp, fn)[2],
        "finding_f1_macro": sum(with_support) / len(with_support) if with_support else float("nan"),
        "per_finding": per_finding,
        "laterality_accuracy": _ratio(side_ok, side_n),
        "severity_accuracy": _ratio(size_ok, size_n),
        "hallucination_rate": _ratio(fp, tp + fp),
        "omission_rate": _ratio(fn, tp + fn),
        "unreadable_rate": sum(p is None for p in predicted) / max(len(predicted), 1),
    }


def clinical_chance(truth) -> dict:
    """The chance levels of `clinical_scores`: a reader who calls each finding positive at its
    prevalence, independently of the image, and a side / size at random."""
    n = max(len(truth), 1)
    prevalence = {f: sum(t[f]["status"] == "positive" for t in truth) / n for f in RENDERED_FINDINGS}
    hit = sum(p * p for p in prevalence.values()) / max(sum(prevalence.values()), 1e-12)
    sized = [1 / len(SIZES[f]) for t in truth for f in SIZES if t[f]["status"] == "positive"]
    return {"finding_f1_micro": hit,
            "finding_f1_macro": sum(p for p in prevalence.values() if p) / max(
                sum(1 for p in prevalence.values() if p), 1),
            "laterality_accuracy": 0.5,
            "severity_accuracy": sum(sized) / len(sized) if sized else float("nan"),
            "hallucination_rate": 1 - hit, "omission_rate": 1 - hit}


def grounded_scores(sentences, truth, finding_masks, attn) -> dict:
    """RadFact-style grounded scores.

    sentences: per image, the `positive_sentences` of its generated report (None if unreadable);
    truth: per image, its true labels; finding_masks (B, F, N) 0/1; attn (B, T, N) the map per
    token. Returns the logical / spatial precision and recall, the pointing game and attention mass
    over the finding words of correctly stated findings (overall and per finding), and the chance
    level of the last two (a uniformly random patch / uniform attention).
    """
    n_said = logical = spatial = 0
    found = defaultdict(bool)          # (image, finding) -> stated correctly and spatially right
    stated = defaultdict(bool)         # (image, finding) -> stated correctly
    rows, lesions, names = [], [], []
    for i, said in enumerate(sentences):
        for finding, label, positions in said or []:
            n_said += 1
            j = RENDERED_FINDINGS.index(finding)
            true = truth[i][finding]
            correct = true["status"] == "positive" and label["side"] == true["side"]
            mask = finding_masks[i, j] if true["status"] == "positive" else \
                torch.zeros_like(finding_masks[i, j])
            mass = (attn[i, positions] * mask).sum(-1).mean().item() if positions else 0.0
            logical += correct
            spatial += correct and mass > SPATIAL_THRESHOLD
            stated[i, finding] |= bool(correct)
            found[i, finding] |= bool(correct and mass > SPATIAL_THRESHOLD)
            if correct and positions:
                rows.append(attn[i, positions])
                lesions.append(mask.expand(len(positions), -1))
                names += [finding] * len(positions)
    n_true = sum(t[f]["status"] == "positive" for t in truth for f in RENDERED_FINDINGS)
    out = {
        "grounded_logical_precision": _ratio(logical, n_said),
        "grounded_spatial_precision": _ratio(spatial, n_said),
        "grounded_logical_recall": _ratio(sum(stated.values()), n_true),
        "grounded_spatial_recall": _ratio(sum(found.values()), n_true),
        "n_positive_sentences": n_said,
    }
    if not rows:
        nan = float("nan")
        out.update(pointing_game=nan, attention_mass=nan, pointing_game_chance=nan,
                   attention_mass_chance=nan, grounding_per_finding={})
        return out
    rows, lesions = torch.cat(rows), torch.cat(lesions)
    pointing, mass = pointing_game_and_mass(rows, lesions)
    chance = (lesions.sum(-1) / lesions.shape[-1]).mean().item()
    per_finding = {}
    for f in RENDERED_FINDINGS:
        keep = torch.tensor([x == f for x in names])
        if keep.any():
            p, m = pointing_game_and_mass(rows[keep], lesions[keep])
            per_finding[f] = {"pointing_game": p.item(), "attention_mass": m.item(),
                              "chance": (lesions[keep].sum(-1) / lesions.shape[-1]).mean().item(),
                              "n_words": int(keep.sum())}
    out.update(pointing_game=pointing.item(), attention_mass=mass.item(),
               pointing_game_chance=chance, attention_mass_chance=chance,
               grounding_per_finding=per_finding)
    return out


def baseline_grounding(patches, finding_masks, truth, reference=None) -> dict:
    """The model-free maps (uniform, brightest patch, most unusual patch against `reference`) scored
    on every true finding of every image: {map: {"pointing_game", "attention_mass",
    "grounded_spatial_precision"}}, the last being the share of findings whose mask holds more than
    half the map."""
    pairs = [(i, RENDERED_FINDINGS.index(f)) for i, t in enumerate(truth)
             for f in RENDERED_FINDINGS if t[f]["status"] == "positive"]
    if not pairs:
        raise ValueError("no image has a finding: there is nothing to point at")
    images, findings = (torch.tensor(x) for x in zip(*pairs))
    lesions = finding_masks[images, findings]
    maps = {"uniform": uniform_map(patches), "brightest patch": brightest_patch_map(patches)}
    if reference is not None:
        maps["unusual patch"] = unusual_patch_map(patches, reference)
    scores = {}
    for name, full in maps.items():
        rows = full[images]
        pointing, mass = pointing_game_and_mass(rows, lesions)
        if name == "uniform":
            pointing = mass  # every patch ties: a random patch hits as often as the mass says
        scores[name] = {"pointing_game": pointing.item(), "attention_mass": mass.item(),
                        "grounded_spatial_precision":
                            ((rows * lesions).sum(-1) > SPATIAL_THRESHOLD).float().mean().item()}
    return scores


@torch.no_grad()
def evaluate_rendered(model, dataset, batch_size=500, num_beams=1, reference=None) -> dict:
    """Free-running evaluation on a RenderedChestXrayDataset (or a Subset of one): the clinical and
    grounded scores above, their chance levels (`chance`) and the model-free maps' scores
    (`baselines`; `reference`, e.g. the training images' raw pixel patches from
    `rendered.image_patches`, adds the unusual-patch map)."""
    base = getattr(dataset, "dataset", dataset)
    if not isinstance(base, RenderedChestXrayDataset):
        raise TypeError(f"expected a RenderedChestXrayDataset, got {type(base).__name__}")
    if model.config.vocab_size != base.vocab_size or model.config.n_patches != base.n_patches:
        raise ValueError(f"the model (vocab_size={model.config.vocab_size}, n_patches="
                         f"{model.config.n_patches}) was not built for this dataset (vocab_size="
                         f"{base.vocab_size}, n_patches={base.n_patches}): use "
                         "ml.default_model(dataset)")
    device = next(model.parameters()).device
    data = as_batch(dataset, device)
    with eval_mode(model):
        ids, attn = generate_all(model, data["patches"], batch_size, num_beams)
    ids, attn = ids.cpu(), attn.cpu()
    tokenizer = base.tokenizer
    texts = [tokenizer.decode(row) for row in ids]
    predicted, sentences = [], []
    for row, text in zip(ids, texts):
        try:
            predicted.append(label_findings(text))
            sentences.append(positive_sentences(tokenizer.decode_tokens(row)))
        except ValueError:
            predicted.append(None)
            sentences.append(None)
    truth = data["labels"]
    words = lambda tokens: [w for w in tokens if w not in ("<bos>", "<eos>")]
    metrics = {"n_samples": len(texts)}
    metrics.update(clinical_scores(predicted, truth))
    metrics["exact_match"] = sum(a == b for a, b in zip(texts, data["report"])) / len(texts)
    metrics["bleu4"] = corpus_bleu([words(tokenizer.decode_tokens(r)) for r in data["token_ids"].cpu()],
                                   [words(tokenizer.decode_tokens(r)) for r in ids])
    metrics.update(grounded_scores(sentences, truth, data["finding_masks"].cpu(), attn))
    metrics["chance"] = clinical_chance(truth)
    metrics["chance"].update(pointing_game=metrics["pointing_game_chance"],
                             attention_mass=metrics["attention_mass_chance"])
    # The brightest patch is read off the raw pixels (the model's patches are standardised).
    pixels = image_patches(data["image"].cpu(), base.patch_size)
    metrics["baselines"] = baseline_grounding(pixels, data["finding_masks"].cpu(), truth,
                                              None if reference is None else reference.cpu())
    metrics["reports"] = texts
    return metrics
