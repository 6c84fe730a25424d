"""What the course measures, from free-running generation only.

Report quality: exact-match reports, finding accuracy through a rule-based labeler on the generated
text (per-finding precision / recall / F1), corpus BLEU-4.
Grounding, on the generated words that name a finding, its side or size, using the last layer's
head-averaged cross-attention: pointing game (is the most-attended patch inside the lesion?),
attention mass inside the lesion, AUROC of attention vs lesion mask — each with its chance level.
Teacher-forced token accuracy is reported only as a labelled diagnostic: it can be perfect while
generation fails (the reference notebook's missing causal mask).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import torch

from .data import FINDINGS, GROUNDED_WORDS, PAD_ID, VOCAB, Tokenizer, as_batch
from .model import eval_mode

FINDING_NAMES = [name for name, _ in FINDINGS.values()]

# Rule-based labeler: a finding is reported when one of its words appears in the text.
_FINDING_WORDS = {
    "nodule": ("nodule",),
    "effusion": ("effusion",),
    "cardiomegaly": ("cardiomegaly", "enlarged"),
    "pneumothorax": ("pneumothorax",),
}


def label_report(text: str) -> set:
    """The set of findings a report states: any abnormal finding named in it, else {"normal"} if it
    says "no acute findings" or "normal", else the empty set (an unreadable report)."""
    lowered = text.lower()
    words = set(re.findall(r"[a-z]+", lowered))
    found = {f for f, keys in _FINDING_WORDS.items() if words.intersection(keys)}
    if found:
        return found
    return {"normal"} if "no acute findings" in lowered or "normal" in words else set()


def per_finding_prf(true_findings, predicted_sets) -> dict:
    """{finding: {"precision", "recall", "f1", "support"}} for single-label truths and predicted
    label sets. Precision is 0 where a finding was never predicted."""
    scores = {}
    for f in FINDING_NAMES:
        tp = sum(f in p and t == f for t, p in zip(true_findings, predicted_sets))
        fp = sum(f in p and t != f for t, p in zip(true_findings, predicted_sets))
        fn = sum(f not in p and t == f for t, p in zip(true_findings, predicted_sets))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[f] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    return scores


def corpus_bleu(references, hypotheses, max_n=4) -> float:
    """Corpus BLEU (Papineni et al., 2002): geometric mean of clipped n-gram precisions for
    n = 1..max_n, times the brevity penalty. references, hypotheses: lists of token lists."""
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references for {len(hypotheses)} hypotheses")
    matches, totals = [0] * max_n, [0] * max_n
    ref_len = hyp_len = 0
    for ref, hyp in zip(references, hypotheses):
        ref_len, hyp_len = ref_len + len(ref), hyp_len + len(hyp)
        for n in range(1, max_n + 1):
            hyp_ngrams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            ref_ngrams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
            matches[n - 1] += sum(min(c, ref_ngrams[g]) for g, c in hyp_ngrams.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def auroc(scores, labels) -> torch.Tensor:
    """Row-wise AUROC of `scores` against 0/1 `labels`, both (M, N): the probability that a random
    positive outranks a random negative (ties count one half). Rows need both classes."""
    pos, neg = labels.bool(), ~labels.bool()
    if not (pos.any(-1) & neg.any(-1)).all():
        raise ValueError("every row needs at least one positive and one negative label")
    greater = (scores[:, :, None] > scores[:, None, :]).float()      # (M, N, N) s_i > s_j
    ties = (scores[:, :, None] == scores[:, None, :]).float()
    pairs = pos[:, :, None] & neg[:, None, :]                         # i positive, j negative
    wins = ((greater + 0.5 * ties) * pairs).sum((1, 2))
    return wins / pairs.sum((1, 2))


def pointing_game_and_mass(rows, lesions):
    """The two grounding scores of attention rows (the chapter 5 exercise's reference solution).

    rows (M, N): one attention distribution over the N patches per scored word; lesions (M, N):
    the 0/1 lesion mask of each row's image, at least one patch per row. Returns two 0-dim
    tensors: the pointing game (the fraction of rows whose most-attended patch lies in the
    lesion) and the attention mass (the mean over rows of the weight inside the lesion).
    """
    if not (isinstance(rows, torch.Tensor) and isinstance(lesions, torch.Tensor)):
        raise TypeError("rows and lesions must be torch tensors")
    if rows.dim() != 2 or rows.shape != lesions.shape or rows.shape[0] == 0:
        raise ValueError(f"rows and lesions must both be (M, N) with M >= 1, got "
                         f"{tuple(rows.shape)} and {tuple(lesions.shape)}")
    lesions = lesions.to(rows.dtype)
    if not (lesions.sum(-1) > 0).all():
        raise ValueError("every row needs a lesion (at least one 1 in its lesion mask)")
    hit = lesions.gather(1, rows.argmax(-1, keepdim=True)).squeeze(1)        # (M,) 1 = inside
    return hit.mean(), (rows * lesions).sum(-1).mean()


def grounding_scores(token_ids, attn, lesion_mask, grounded_words=GROUNDED_WORDS) -> dict:
    """Grounding of the words that name a finding, its side or size.

    token_ids (B, T); attn (B, T, N) one map per token (e.g. last layer averaged over heads; a
    zero row marks a token that was never read); lesion_mask (B, N). Images without a lesion are
    skipped. Returns the scores, their chance levels (a uniformly random patch / uniform attention,
    and 0.5 for AUROC) and the number of words scored.
    """
    grounded_ids = grounded_token_ids(token_ids.device, grounded_words)
    has_lesion = lesion_mask.sum(-1) > 0                                     # (B,)
    read = attn.sum(-1) > 0                                                  # (B, T)
    scored = torch.isin(token_ids, grounded_ids) & read & has_lesion[:, None]
    n = int(scored.sum())
    if n == 0:
        nan = float("nan")
        return {"pointing_game": nan, "attention_mass": nan, "auroc": nan,
                "pointing_game_chance": nan, "attention_mass_chance": nan, "auroc_chance": 0.5,
                "n_grounded_words": 0}
    rows = attn[scored]                                                      # (n, N)
    lesion = lesion_mask[:, None, :].expand_as(attn)[scored]                 # (n, N)
    pointing, mass = pointing_game_and_mass(rows, lesion)
    chance = (lesion.sum(-1) / lesion.shape[-1]).mean().item()
    return {
        "pointing_game": pointing.item(),
        "attention_mass": mass.item(),
        "auroc": auroc(rows, lesion).mean().item(),
        "pointing_game_chance": chance,
        "attention_mass_chance": chance,
        "auroc_chance": 0.5,
        "n_grounded_words": n,
    }


def grounded_token_ids(device=None, words=GROUNDED_WORDS) -> torch.Tensor:
    """Ids of `words` (default `GROUNDED_WORDS`, the words whose attention the course scores)."""
    return torch.tensor([VOCAB.index(w) for w in sorted(words)], device=device)


def finding_accuracy(labels, findings) -> float:
    """Share of reports whose labeler output is exactly the image's finding."""
    return sum(p == {f} for p, f in zip(labels, findings)) / max(len(findings), 1)


@torch.no_grad()
def generate_all(model, patches, batch_size=500, num_beams=1):
    """Reports written by `model` for `patches` (B, N, d_vision), in chunks of `batch_size`:
    token ids (B, T) and the last layer's head-averaged cross-attention (B, T, N)."""
    ids, attn = [], []
    for start in range(0, patches.shape[0], batch_size):
        out = model.generate(patches[start:start + batch_size], num_beams=num_beams)
        ids.append(out.token_ids)
        attn.append(out.cross_attention[-1].mean(1))                         # (b, T, N)
    return torch.cat(ids), torch.cat(attn)


def free_running(model, patches, batch_size=500, num_beams=1):
    """`generate_all`, plus the set of findings the labeler reads in each report."""
    ids, attn = generate_all(model, patches, batch_size, num_beams)
    tokenizer = Tokenizer()
    return ids, attn, [label_report(tokenizer.decode(row)) for row in ids.cpu()]


def _check_model_matches(model, dataset_size):
    if model.config.vocab_size != len(VOCAB):
        raise ValueError(f"the model has vocab_size={model.config.vocab_size}, but the dataset's "
                         f"vocabulary has {len(VOCAB)} tokens: it was trained on another vocabulary")
    if dataset_size == 0:
        raise ValueError("the dataset is empty: expected at least one sample")


def report_scores(generated, truth, labels, findings) -> dict:
    """exact_match, finding_accuracy, per_finding and bleu4 of reports `generated` (B, T) against
    the true reports `truth` (B, T); `labels`: the labeler's findings of each generated report,
    `findings`: each image's finding name."""
    tokenizer = Tokenizer()
    words = lambda ids: [w for w in tokenizer.decode_tokens(ids) if w not in ("<bos>", "<eos>")]
    texts = [tokenizer.decode(ids) for ids in generated]
    truths = [tokenizer.decode(ids) for ids in truth]
    return {
        "exact_match": sum(a == b for a, b in zip(texts, truths)) / len(texts),
        "finding_accuracy": finding_accuracy(labels, findings),
        "per_finding": per_finding_prf(findings, labels),
        "bleu4": corpus_bleu([words(ids) for ids in truth], [words(ids) for ids in generated]),
    }


def majority_baseline(dataset) -> dict:
    """The chance level of the report scores: the scores of writing the most common report of
    `dataset` for every image, with that report's finding ("finding_name") and its text."""
    data = as_batch(dataset)                             # raises on an empty dataset
    majority = Counter(data["finding_name"]).most_common(1)[0][0]
    report = data["token_ids"][data["finding_name"].index(majority)]
    text = Tokenizer().decode(report)
    scores = report_scores(report.expand_as(data["token_ids"]), data["token_ids"],  # (B, T)
                           [label_report(text)] * len(dataset), data["finding_name"])
    scores.update(finding_name=majority, report=text)
    return scores


@torch.no_grad()
def evaluate(model, dataset, batch_size=500, num_beams=1) -> dict:
    """Free-running evaluation of `model` on `dataset` (a SyntheticRadiologyDataset or a Subset;
    for a RenderedChestXrayDataset, `rendered_metrics.evaluate_rendered`).

    Returns exact_match, finding_accuracy, per_finding (P/R/F1), bleu4, the grounding scores of
    `grounding_scores` on the generated reports, and teacher_forced_token_accuracy (diagnostic).
    """
    from .rendered import RenderedChestXrayDataset
    if isinstance(getattr(dataset, "dataset", dataset), RenderedChestXrayDataset):
        from .rendered_metrics import evaluate_rendered  # it builds on this module
        return evaluate_rendered(model, dataset, batch_size, num_beams)
    _check_model_matches(model, len(dataset))
    device = next(model.parameters()).device
    data = as_batch(dataset, device)
    with eval_mode(model):
        generated, attn, labels = free_running(model, data["patches"], batch_size, num_beams)
        # Teacher-forced token accuracy, the diagnostic: the true report goes in.
        tf_correct = tf_total = 0
        for start in range(0, len(dataset), batch_size):
            targets = data["token_ids"][start:start + batch_size]
            logits, _ = model(data["patches"][start:start + batch_size], targets)
            predicted, wanted = logits[:, :-1].argmax(-1), targets[:, 1:]
            tf_correct += ((predicted == wanted) & (wanted != PAD_ID)).sum().item()
            tf_total += (wanted != PAD_ID).sum().item()

    metrics = {"n_samples": len(dataset)}
    metrics.update(report_scores(generated.cpu(), data["token_ids"].cpu(), labels,
                                 data["finding_name"]))
    metrics.update(grounding_scores(generated, attn, data["lesion_mask"]))
    metrics["teacher_forced_token_accuracy"] = tf_correct / max(tf_total, 1)
    return metrics
