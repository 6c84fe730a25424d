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


def spatial_precision(rows, masks, sentence, threshold=SPATIAL_THRESHOLD):
    """The share of sentences whose finding words look inside the finding (the chapter 7
    exercise's reference solution).

    rows (M, N): the attention of each of the M finding words over the N patches; masks (M, N) 0/1:
    the mask of the finding its sentence states (all zero where the image does not have it there);
    sentence (M,) long: the sentence of each word, 0..S-1, each sentence with at least one word.
    A sentence is spatially precise when the mean over its words of the attention mass inside the
    mask is above `threshold`. Returns a 0-dim tensor, the share of the S sentences that are.
    """
    if not all(isinstance(x, torch.Tensor) for x in (rows, masks, sentence)):
        raise TypeError("rows, masks and sentence must be torch tensors")
    if rows.dim() != 2 or rows.shape != masks.shape or sentence.shape != rows.shape[:1] \
            or rows.shape[0] == 0:
        raise ValueError(f"rows and masks must be (M, N) with M >= 1 and sentence (M,), got "
                         f"{tuple(rows.shape)}, {tuple(masks.shape)}, {tuple(sentence.shape)}")
    n_sentences = int(sentence.max()) + 1
    words = torch.bincount(sentence, minlength=n_sentences)
    if sentence.min() < 0 or (words == 0).any():
        raise ValueError("sentence must number the sentences 0..S-1, each with at least one word")
    mass = (rows * masks.to(rows.dtype)).sum(-1)                                 # (M,)
    per_sentence = torch.zeros(n_sentences, dtype=rows.dtype, device=rows.device)
    per_sentence = per_sentence.index_add(0, sentence, mass) / words             # (S,) mean mass
    return (per_sentence > threshold).to(rows.dtype).mean()


def grounded_scores(sentences, truth, finding_masks, attn) -> dict:
    """RadFact-style grounded scores.

    sentences: per image, the `positive_sentences` of its generated report (None if unreadable);
    truth: per image, its true labels; finding_masks (B, F, N) 0/1; attn (B, T, N) the map per
    token. A sentence is logically right when the image has its finding on the side it gives, and
    spatially right when also `spatial_precision` counts it. Returns the logical / spatial
    precision and recall, the pointing game and attention mass over the finding words of the
    logically right sentences (overall and per finding), and the chance level of the last two (a
    uniformly random patch / uniform attention).
    """
    rows, masks, ids, correct, keys = [], [], [], [], []
    for i, said in enumerate(sentences):
        for finding, label, positions in said or []:
            true = truth[i][finding]
            right = true["status"] == "positive" and label["side"] == true["side"]
            mask = finding_masks[i, RENDERED_FINDINGS.index(finding)] * float(right)
            positions = positions or [0]     # a sentence without finding words looks nowhere
            weight = 1.0 if positions != [0] else 0.0
            rows.append(attn[i, positions] * weight)
            masks.append(mask.expand(len(positions), -1))
            ids += [len(correct)] * len(positions)
            correct.append(right)
            keys.append((i, finding))
    n_true = sum(t[f]["status"] == "positive" for t in truth for f in RENDERED_FINDINGS)
    out = {"n_positive_sentences": len(correct),
           "grounded_logical_precision": _ratio(sum(correct), len(correct)),
           "grounded_logical_recall": _ratio(len({k for k, c in zip(keys, correct) if c}), n_true)}
    nan = float("nan")
    if not correct:
        out.update(grounded_spatial_precision=nan, grounded_spatial_recall=_ratio(0, n_true),
                   pointing_game=nan, attention_mass=nan, pointing_game_chance=nan,
                   attention_mass_chance=nan, grounding_per_finding={})
        return out
    rows, masks, ids = torch.cat(rows), torch.cat(masks), torch.tensor(ids)
    # per sentence, as spatial_precision decides it (a sentence's mean mass above the threshold)
    words = torch.bincount(ids, minlength=len(correct))
    mean_mass = torch.zeros(len(correct)).index_add(0, ids, (rows * masks).sum(-1)) / words
    precise = (mean_mass > SPATIAL_THRESHOLD).tolist()
    out["grounded_spatial_precision"] = spatial_precision(rows, masks, ids).item()
    out["grounded_spatial_recall"] = _ratio(len({k for k, p in zip(keys, precise) if p}), n_true)
    right_word = torch.tensor(correct)[ids] & (masks.sum(-1) > 0)
    if not right_word.any():
        out.update(pointing_game=nan, attention_mass=nan, pointing_game_chance=nan,
                   attention_mass_chance=nan, grounding_per_finding={})
        return out
    rows, masks = rows[right_word], masks[right_word]
    names = [keys[s][1] for s in ids[right_word].tolist()]
    pointing, mass = pointing_game_and_mass(rows, masks)
    chance = (masks.sum(-1) / masks.shape[-1]).mean().item()
    per_finding = {}
    for f in RENDERED_FINDINGS:
        keep = torch.tensor([x == f for x in names])
        if keep.any():
            p, m = pointing_game_and_mass(rows[keep], masks[keep])
            per_finding[f] = {"pointing_game": p.item(), "attention_mass": m.item(),
                              "chance": (masks[keep].sum(-1) / masks.shape[-1]).mean().item(),
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


@torch.no_grad()
def grounded_sentences(model, dataset, indices, num_beams=1) -> list:
    """What the model writes for images `indices` of a RenderedChestXrayDataset, sentence by
    sentence: per image {"report", "sentences": [{"finding", "label", "attention" (N,), "mass"}]}
    with the mean attention of each positive sentence's finding words and its mass inside the true
    mask of that finding (0 where the image does not have it); "sentences" is None where the
    labeler cannot read the report."""
    base = getattr(dataset, "dataset", dataset)
    indices = list(indices)
    device = next(model.parameters()).device
    patches = torch.stack([dataset[i]["patches"] for i in indices]).to(device)
    with eval_mode(model):
        ids, attn = generate_all(model, patches, num_beams=num_beams)
    out = []
    for k, i in enumerate(indices):
        tokens = base.tokenizer.decode_tokens(ids[k].cpu())
        item = dataset[i]
        entry = {"report": base.tokenizer.decode(ids[k].cpu()), "sentences": None}
        try:
            said = positive_sentences(tokens)
        except ValueError:
            out.append(entry)
            continue
        entry["sentences"] = []
        for finding, label, positions in said:
            row = attn[k, positions].mean(0).cpu() if positions else torch.zeros(attn.shape[-1])
            mask = item["finding_masks"][RENDERED_FINDINGS.index(finding)]
            entry["sentences"].append({"finding": finding, "label": label, "attention": row,
                                       "mass": float((row * mask).sum())})
        out.append(entry)
    return out


def format_per_finding(metrics) -> str:
    """The per-finding table of `evaluate_rendered`'s result (precision, recall, F1, support, and
    the pointing game / attention mass of each finding's words) as aligned text."""
    lines = [f"{'finding':14s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'support':>7s} "
             f"{'pointing':>8s} {'mass':>6s}"]
    grounding = metrics.get("grounding_per_finding", {})
    for f in RENDERED_FINDINGS:
        s = metrics["per_finding"][f]
        g = grounding.get(f, {})
        lines.append(f"{f:14s} {s['precision']:9.2f} {s['recall']:7.2f} {s['f1']:6.2f} "
                     f"{s['support']:7d} {g.get('pointing_game', float('nan')):8.2f} "
                     f"{g.get('attention_mass', float('nan')):6.2f}")
    return "\n".join(lines)


TARGETS = {"finding_f1_micro": (">=", 0.95), "laterality_accuracy": (">=", 0.98),
           "hallucination_rate": ("<=", 0.02), "grounded_spatial_precision": (">=", 0.9)}
HEADLINE = ("finding_f1_micro", "finding_f1_macro", "laterality_accuracy", "severity_accuracy",
            "hallucination_rate", "omission_rate", "unreadable_rate", "exact_match", "bleu4",
            "grounded_logical_precision", "grounded_spatial_precision", "grounded_spatial_recall",
            "pointing_game", "attention_mass")


def format_against_targets(metrics) -> str:
    """`evaluate_rendered`'s headline scores as aligned text, each beside its chance level, the
    brightest-patch map's score where it has one, and the course's target where there is one."""
    lines = [f"{'metric':28s} {'model':>6s} {'chance':>6s} {'bright':>6s}  target"]
    for key in HEADLINE:
        chance = metrics["chance"].get(key, float("nan"))
        bright = metrics["baselines"]["brightest patch"].get(key, float("nan"))
        op, bound = TARGETS.get(key, ("", ""))
        lines.append(f"{key:28s} {metrics[key]:6.2f} {chance:6.2f} {bright:6.2f}  {op} {bound}")
    return "\n".join(lines)
