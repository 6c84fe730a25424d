"""The exercise checks: right answers pass both suites; every plausible wrong answer fails with a
verdict that names the mistake; broken answers give a verdict instead of an exception."""

import contextlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import medsight_lab as ml
from medsight_lab.grading import EXERCISES, check, checks, run_check


# -- right answers, written as a student would (not calling the package) ------------------------

def cross_attention(query, key, value, num_heads, scale=None, dim=-1, split=True, merge=True,
                    raw=False):
    B, T, D = query.shape
    N, d_k = key.shape[1], D // num_heads

    def heads(x, L):
        return x.view(B, L, num_heads, d_k).transpose(1, 2) if split else \
            x.reshape(B, num_heads, L, d_k)

    q, k, v = heads(query, T), heads(key, N), heads(value, N)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d_k) if scale is None else scale)
    weights = scores.softmax(dim)
    out = weights @ v
    context = out.transpose(1, 2).reshape(B, T, D) if merge else out.reshape(B, T, D)
    return context, scores if raw else weights


def causal_attention_weights(scores, fill=float("-inf"), keep=lambda T: torch.ones(T, T).tril()):
    allowed = keep(scores.shape[-1]).bool()
    return scores.masked_fill(~allowed, fill).softmax(dim=-1)


def shifted_cross_entropy(logits, token_ids, pad_id=0):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                           token_ids[:, 1:].reshape(-1), ignore_index=pad_id)


def grounding_loss(attn_weights, finding_masks):
    avg = attn_weights[-1].mean(1)
    rows = finding_masks.sum(-1) > 0
    if not rows.any():
        return torch.tensor(0.0)
    masks = finding_masks[rows]
    return F.binary_cross_entropy(avg[rows].clamp(1e-6, 1 - 1e-6),
                                  masks / (masks.sum(-1, keepdim=True) + 1e-6))


def attention_entropy(attn_weights):
    p = attn_weights[-1].mean(1)
    return -(p * (p + 1e-8).log()).sum(-1).mean()


def compute_loss(logits, token_ids, attn_weights, finding_masks, lambda_ground=0.1,
                 lambda_entropy=0.01):
    ce = shifted_cross_entropy(logits, token_ids)
    ground = grounding_loss(attn_weights, finding_masks)
    entropy = attention_entropy(attn_weights)
    return ce + lambda_ground * ground + lambda_entropy * entropy, ce, ground, entropy


def pointing_game_and_mass(rows, lesions):
    inside = lesions.bool()
    hit = inside[torch.arange(len(rows)), rows.argmax(-1)].float()
    return hit.mean(), rows.masked_fill(~inside, 0).sum(-1).mean()


def patch_norm_map(patches):
    return torch.softmax(torch.linalg.vector_norm(patches, dim=-1), dim=-1)


def _ranks(x):
    return x.argsort(-1).argsort(-1).float()


def rank_correlation(a, b):
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(-1, keepdim=True), rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))


def deletion_curve(score_fn, patches, ranking, background, start=0, step=1, fill=None):
    order = ranking.argsort(dim=-1, descending=True)
    rows = torch.arange(len(patches))
    x, curve = patches.clone(), [score_fn(patches)]
    for k in range(patches.shape[1]):
        x[rows, order[:, k]] = (background if fill is None else fill)[rows, order[:, k]]
        curve.append(score_fn(x))
    return torch.stack(curve, 1)[:, start::step]


def gradient_times_input(score_fn, patches):
    x = patches.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score_fn(x).sum(), x)
    return (grad * x).sum(-1)


def spatial_precision(rows, masks, sentence, threshold=0.5):
    precise = []
    for s in range(int(sentence.max()) + 1):
        mass = (rows[sentence == s] * masks[sentence == s]).sum(-1).mean()
        precise.append(float(mass > threshold))
    return torch.tensor(precise).mean()


def attention_on_mark(attn, mark, words):
    on_mark = (attn * mark.unsqueeze(1)).sum(dim=2)
    rows, cols = words.nonzero(as_tuple=True)
    return on_mark[rows, cols].mean(), on_mark[rows, cols - 1].mean()


def finding_masks(token_ids, lesion_mask, grounded_ids, shift=0, every_word=False):
    grounded = (token_ids > 2) if every_word else torch.isin(token_ids, grounded_ids)
    if shift:
        grounded = torch.cat([grounded[:, 1:], torch.zeros_like(grounded[:, :1])], dim=1)
    return grounded.float()[:, :, None] * lesion_mask[:, None, :]


def finding_masks_loop(token_ids, lesion_mask, grounded_ids):
    B, T = token_ids.shape
    masks = torch.zeros(B, T, lesion_mask.shape[1])
    for b in range(B):
        for t in range(T):
            if int(token_ids[b, t]) in grounded_ids.tolist():
                masks[b, t] = lesion_mask[b]
    return masks


def cached_attention_step(q_new, k_cache, v_cache, k_new, v_new, dim=2, scale=True,
                          new_only=False, diagonal=None, softmax_dim=-1):
    k, v = torch.cat([k_cache, k_new], dim=dim), torch.cat([v_cache, v_new], dim=dim)
    keys, values = (k_new, v_new) if new_only else (k, v)
    S, T = keys.shape[-2] - q_new.shape[-2], q_new.shape[-2]
    scores = q_new @ keys.transpose(-2, -1) / (math.sqrt(q_new.shape[-1]) if scale else 1)
    future = torch.ones(T, S + T).tril(S if diagonal is None else diagonal) == 0
    weights = scores.masked_fill(future, float("-inf")).softmax(softmax_dim)
    return weights @ values, k, v


def cached_attention_step_loop(q_new, k_cache, v_cache, k_new, v_new):
    """Right too: one new position at a time, each over the cache extended so far."""
    contexts = []
    for i in range(q_new.shape[2]):
        k_cache = torch.cat([k_cache, k_new[:, :, i:i + 1]], dim=2)
        v_cache = torch.cat([v_cache, v_new[:, :, i:i + 1]], dim=2)
        scores = q_new[:, :, i:i + 1] @ k_cache.transpose(-2, -1) / q_new.shape[-1] ** 0.5
        contexts.append(scores.softmax(-1) @ v_cache)
    return torch.cat(contexts, dim=2), k_cache, v_cache


RIGHT = {"finding_masks": finding_masks, "cached_attention_step": cached_attention_step,
         "cross_attention": cross_attention, "causal_attention_weights": causal_attention_weights,
         "shifted_cross_entropy": shifted_cross_entropy, "grounding_loss": grounding_loss,
         "attention_entropy": attention_entropy, "compute_loss": compute_loss,
         "pointing_game_and_mass": pointing_game_and_mass, "patch_norm_map": patch_norm_map,
         "rank_correlation": rank_correlation, "deletion_curve": deletion_curve,
         "gradient_times_input": gradient_times_input, "spatial_precision": spatial_precision,
         "attention_on_mark": attention_on_mark}


def _spearman_formula(a, b):
    """Spearman's rho by 1 - 6 sum(d^2) / (N (N^2 - 1)): right when there are no ties."""
    N = a.shape[-1]
    return 1 - 6 * (_ranks(a) - _ranks(b)).pow(2).sum(-1) / (N * (N ** 2 - 1))


def _grad_only(score_fn, patches, how):
    x = patches.detach().clone().requires_grad_(True)
    out = score_fn(x)
    (grad,) = torch.autograd.grad(out.mean() if how == "mean" else out.sum(), x)
    return {"grad": grad.sum(-1), "abs": (grad * x).sum(-1).abs(), "mean": (grad * x).sum(-1),
            "features": grad * x, "norm": grad.norm(dim=-1), "abs each": (grad * x).abs().sum(-1),
            "avg": (grad * x).mean(-1), "item": (grad * x).sum(-1).tolist()}[how]


@pytest.mark.parametrize("suite", ["visible", "hidden"])
@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_right_answer_passes(exercise, suite):
    result = run_check(exercise, RIGHT[exercise], suite)
    assert result.passed, result.message
    title = exercise + (" (hidden tests)" if suite == "hidden" else "")
    assert result.message.startswith(f"✔ {title}: correct on ")


def test_other_right_answers_pass_chapter_6():
    assert run_check("rank_correlation", _spearman_formula, "hidden").passed
    in_place = lambda s, p, r, bg: deletion_curve(s, p, r, bg)  # noqa: E731
    assert run_check("deletion_curve", in_place, "hidden").passed


def test_other_right_answers_pass():
    assert run_check("finding_masks", finding_masks_loop, "hidden").passed
    assert run_check("cached_attention_step", cached_attention_step_loop, "hidden").passed
    large_negative = lambda s: causal_attention_weights(s, fill=-1e9)  # noqa: E731
    assert run_check("causal_attention_weights", large_negative, "hidden").passed
    entr = lambda a: torch.special.entr(a[-1].mean(1)).sum(-1).mean()  # noqa: E731
    assert run_check("attention_entropy", entr, "visible").passed


def test_check_prints_one_line_and_returns_none(capsys):
    assert check("compute_loss", compute_loss) is None
    assert capsys.readouterr().out == "✔ compute_loss: correct on 4 cases.\n"


def test_the_student_functions_output_is_silenced(capsys):
    def chatty(logits, token_ids, pad_id=0):
        print("debugging", logits.shape)
        return shifted_cross_entropy(logits, token_ids, pad_id)
    check("shifted_cross_entropy", chatty)
    assert capsys.readouterr().out == "✔ shifted_cross_entropy: correct on 5 cases.\n"


# -- plausible wrong answers: each fails, with the diagnosis where there is one -----------------

def _ce(logits, targets, ignore_index=-100, reduction="mean"):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)


def _bce(avg, masks, normalise=True, only_findings=True, reduction="mean", clamp=True):
    if only_findings:
        rows = masks.sum(-1) > 0
        if not rows.any():
            return avg.sum() * 0.0
        avg, masks = avg[rows], masks[rows]
    target = masks / (masks.sum(-1, keepdim=True) + 1e-6) if normalise else masks
    return F.binary_cross_entropy(avg.clamp(1e-6, 1 - 1e-6) if clamp else avg, target,
                                  reduction=reduction)


def _entropy_rows(p):
    return -(p * (p + 1e-8).log()).sum(-1)


def _scaled_total(scale_ground, scale_entropy):
    def answer(lo, t, a, m, lambda_ground=0.1, lambda_entropy=0.01):
        _, ce, g, e = compute_loss(lo, t, a, m)
        return (ce + scale_ground(lambda_ground, lambda_entropy) * g
                + scale_entropy(lambda_ground, lambda_entropy) * e, ce, g, e)
    return answer


def _with_part(index, part):
    def answer(lo, t, a, m, lambda_ground=0.1, lambda_entropy=0.01):
        values = list(compute_loss(lo, t, a, m, lambda_ground, lambda_entropy))
        values[index] = part(lo, t, a, m)
        values[0] = values[1] + lambda_ground * values[2] + lambda_entropy * values[3]
        return tuple(values)
    return answer


def _weighted_terms(lo, t, a, m, lambda_ground=0.1, lambda_entropy=0.01):
    total, ce, g, e = compute_loss(lo, t, a, m, lambda_ground, lambda_entropy)
    return total, ce, lambda_ground * g, lambda_entropy * e


def _on_mark(a, m):
    return (a * m[:, None]).sum(-1)


def _mean_masses(r, m, s):
    return torch.stack([(r[s == k] * m[s == k]).sum(-1).mean() for k in range(int(s.max()) + 1)])


WRONG = [
    # finding_masks
    ("finding_masks", "visible", lambda t, l, g: finding_masks(t, l, g, every_word=True),
     "you ground every word of the report"),
    ("finding_masks", "visible",
     lambda t, l, g: torch.ones_like(t).float()[:, :, None] * l[:, None, :],
     "<bos>, <eos> and <pad> included"),
    ("finding_masks", "visible",
     lambda t, l, g: (~torch.isin(t, g)).float()[:, :, None] * l[:, None, :],
     "you mark the tokens that are NOT grounded words"),
    ("finding_masks", "visible", lambda t, l, g: finding_masks(t, l, g, shift=1),
     "your rows are shifted by one"),
    ("finding_masks", "visible",
     lambda t, l, g: torch.isin(t, g).float()[:, :, None].expand(-1, -1, l.shape[1]),
     "a grounded word's row is all ones"),
    ("finding_masks", "visible", lambda t, l, g: finding_masks(t, l, g).transpose(1, 2),
     "the axes are swapped"),
    ("finding_masks", "visible", lambda t, l, g: torch.isin(t, g).float(),
     "shape of the mask: (6, 20), expected (B, T, N) = (6, 20, 16)"),
    # cached_attention_step
    ("cached_attention_step", "visible",
     lambda q, kc, vc, k, v: (cached_attention_step(q, kc, vc, k, v)[0], kc, vc),
     "the caches you return are not the extended ones"),
    ("cached_attention_step", "visible",
     lambda q, kc, vc, k, v: (((q @ kc.transpose(-2, -1)) / 8 ** 0.5).softmax(-1) @ vc, kc, vc),
     "you attend over the cache without this step's key and value"),
    ("cached_attention_step", "visible",
     lambda *a: cached_attention_step(*a, new_only=True), "you attend only to the new key(s)"),
    ("cached_attention_step", "visible",
     lambda q, kc, vc, k, v: cached_attention_step(q, k, v, kc, vc),
     "the new keys and values come before the cache"),
    ("cached_attention_step", "visible", lambda *a: cached_attention_step(*a, scale=False),
     "your scores are not scaled"),
    ("cached_attention_step", "visible",
     lambda q, kc, vc, k, v: cached_attention_step(q / q.shape[1] ** 0.5, kc, vc, k, v),
     "you scale by sqrt(H * d_k)"),
    ("cached_attention_step", "visible",
     lambda *a: cached_attention_step(*a, diagonal=10 ** 6),
     "the new positions see each other's future"),
    ("cached_attention_step", "visible", lambda *a: cached_attention_step(*a, diagonal=0),
     "your causal mask starts at the cache's first position"),
    ("cached_attention_step", "visible", lambda *a: cached_attention_step(*a, softmax_dim=-2),
     "your softmax runs over the queries"),
    ("cached_attention_step", "visible",
     lambda q, kc, vc, k, v: (cached_attention_step(q, kc, vc, k, v)[0], k, v),
     "the caches you return are not the extended ones"),
    ("cached_attention_step", "visible",
     lambda *a: tuple(cached_attention_step(*a)[i] for i in (0, 2, 1)),
     "you return (context, v_cache, k_cache)"),
    ("cached_attention_step", "visible",
     lambda *a: cached_attention_step(*a)[0], "expected a tuple (context, k_cache, v_cache)"),
    ("cached_attention_step", "visible", lambda *a: cached_attention_step(*a, dim=-1),
     "your function raised RuntimeError on one new position on a cache of 4"),
    # spatial_precision (chapter 7)
    ("spatial_precision", "visible",
     lambda r, m, s, threshold=0.5: ((r * m).sum(-1) > threshold).float().mean(),
     "each word was scored on its own"),
    ("spatial_precision", "visible",
     lambda r, m, s, threshold=0.5: ((r * m).sum(-1).mean() > threshold).float(),
     "averaged before the comparison"),
    ("spatial_precision", "hidden",
     lambda r, m, s, threshold=0.5: (_mean_masses(r, m, s) >= threshold).float().mean(),
     "strictly above"),
    ("spatial_precision", "visible",
     lambda r, m, s, threshold=0.5: torch.stack([(r[s == k] * m[s == k]).sum(-1).max()
                                                 for k in range(int(s.max()) + 1)]).gt(
         threshold).float().mean(), "best word"),
    ("spatial_precision", "visible",
     lambda r, m, s, threshold=0.5: torch.stack([m[s == k].gather(1, r[s == k].argmax(
         -1, keepdim=True)).mean() for k in range(int(s.max()) + 1)]).gt(threshold).float().mean(),
     "pointing game"),
    ("spatial_precision", "visible",
     lambda r, m, s, threshold=0.5: torch.stack([((r[s == k] * m[s == k]).sum(-1) / m[s == k].sum(
         -1).clamp_min(1)).mean() for k in range(int(s.max()) + 1)]).gt(threshold).float().mean(),
     "divided by the mask's size"),
    ("spatial_precision", "visible",
     lambda r, m, s, threshold=0.5: (_mean_masses(r, m, s) > threshold).float().sum(),
     "number of precise sentences"),
    ("spatial_precision", "visible",
     lambda r, m, s, threshold=0.5: _mean_masses(r, m, s).mean(), "returned the mean mass"),
    ("spatial_precision", "hidden",                           # ignores the threshold argument
     lambda r, m, s, threshold=0.5: (_mean_masses(r, m, s) > 0.5).float().mean(),
     "wrong value on threshold=0.8"),
    ("spatial_precision", "visible",                          # per-sentence values, not their share
     lambda r, m, s, threshold=0.5: (_mean_masses(r, m, s) > threshold).float(),
     "expected a single number"),
    # attention_on_mark (chapter 8)
    ("attention_on_mark", "visible", lambda a, m, w: (
        _on_mark(a, m)[w].mean(), _on_mark(a, m)[:, 1:][w[:, :-1]].mean()), "rows after the words"),
    ("attention_on_mark", "visible", lambda a, m, w: (_on_mark(a, m)[w].mean(),) * 2,
     "own rows again"),
    ("attention_on_mark", "visible", lambda a, m, w: tuple(reversed(attention_on_mark(a, m, w))),
     "return (on_words, before)"),
    ("attention_on_mark", "visible", lambda a, m, w: (
        _on_mark(a, m)[w].sum(), _on_mark(a, m)[:, :-1][w[:, 1:]].sum()), "mean over the finding"),
    ("attention_on_mark", "visible", lambda a, m, w: (_on_mark(a, m).mean(),) * 2,
     "average over every row"),
    ("attention_on_mark", "visible", lambda a, m, w: (
        torch.stack([_on_mark(a, m)[b][w[b]].mean() for b in range(len(w))]).mean(),
        torch.stack([_on_mark(a, m)[b][:-1][w[b, 1:]].mean() for b in range(len(w))]).mean()),
     "then the reports"),
    ("attention_on_mark", "visible", lambda a, m, w: tuple(
        1 - x for x in attention_on_mark(a, m, w)), "outside the mark"),
    ("attention_on_mark", "visible", lambda a, m, w: (
        (a * m[:, None]).amax(-1)[w].mean(), (a * m[:, None]).amax(-1)[:, :-1][w[:, 1:]].mean()),
     "largest weight"),
    ("attention_on_mark", "visible", lambda a, m, w: tuple(
        x / 2.5 for x in attention_on_mark(a, m, w)), "wrong on_words on 3 reports"),
    ("attention_on_mark", "hidden", lambda a, m, w: (
        (a * m[:, None]).sum(-1)[w].mean() / m.sum(-1).mean(),
        (a * m[:, None]).sum(-1)[:, :-1][w[:, 1:]].mean() / m.sum(-1).mean()),
     "wrong on_words on fresh random reports"),
    ("attention_on_mark", "hidden", lambda a, m, w: (
        (a * m[:, None] / m.sum(-1).clamp_min(1)[:, None, None]).sum(-1)[w].mean(),
        (a * m[:, None] / m.sum(-1).clamp_min(1)[:, None, None]).sum(-1)[:, :-1][w[:, 1:]].mean()),
     "averaged the weights over the mark's patches"),
    ("attention_on_mark", "hidden", lambda a, m, w: (          # drops words in the last row
        _on_mark(a, m)[:, :-1][w[:, :-1]].mean(), _on_mark(a, m)[:, :-1][w[:, 1:]].mean()),
     "wrong on_words on"),
    ("attention_on_mark", "visible", lambda a, m, w: (_on_mark(a, m)[w],) * 2, "a single number"),
    # pointing_game_and_mass
    ("pointing_game_and_mass", "visible",
     lambda r, l: pointing_game_and_mass(r, l)[::-1], "return (pointing game, attention mass)"),
    ("pointing_game_and_mass", "visible",
     lambda r, l: (pointing_game_and_mass(r, l)[0], ((r * l).sum(-1) / l.sum(-1)).mean()),
     "you divide each row's weight inside the lesion by the lesion's size"),
    ("pointing_game_and_mass", "visible",                     # mean over the patches
     lambda r, l: (pointing_game_and_mass(r, l)[0], (r * l).mean(-1).mean()),
     "you average the weights inside the lesion over all the patches"),
    ("pointing_game_and_mass", "hidden",
     lambda r, l: (pointing_game_and_mass(r, l)[0], (r * l).mean()),
     "you average the weights inside the lesion over all the patches"),
    ("pointing_game_and_mass", "visible",                     # argmax over the rows, indexed
     lambda r, l: (l.bool()[torch.arange(len(r)), r.argmax(dim=0)].float().mean(),
                   pointing_game_and_mass(r, l)[1]),
     "the argmax over the rows (dim=0)"),
    ("pointing_game_and_mass", "hidden",                      # argmax over the rows, gathered
     lambda r, l: (l.gather(1, r.argmax(dim=0).unsqueeze(1)).mean(),
                   pointing_game_and_mass(r, l)[1]),
     "the argmax over the rows (dim=0)"),
    ("pointing_game_and_mass", "visible",
     lambda r, l: (pointing_game_and_mass(r, l)[0], r.sum(-1).mean()),
     "multiply by the lesion mask first"),
    ("pointing_game_and_mass", "visible",
     lambda r, l: (r.max(-1).values.mean(), pointing_game_and_mass(r, l)[1]),
     "most-attended patch (the argmax)"),
    ("pointing_game_and_mass", "visible",
     lambda r, l: (pointing_game_and_mass(-r, l)[0], pointing_game_and_mass(r, l)[1]),
     "least-attended patch (argmin)"),
    ("pointing_game_and_mass", "visible",
     lambda r, l: tuple(x.item() for x in pointing_game_and_mass(r, l)),
     "not x.mean().item()"),
    ("pointing_game_and_mass", "hidden",                     # per-row values, not their mean
     lambda r, l: (l.gather(1, r.argmax(-1, keepdim=True)).squeeze(1), (r * l).sum(-1)),
     "shape of the pointing game"),

    # chapter 6: patch_norm_map
    ("patch_norm_map", "visible", lambda p: p.norm(dim=-1).softmax(0), "over the images"),
    ("patch_norm_map", "visible", lambda p: p.norm(dim=-1), "raw norms"),
    ("patch_norm_map", "visible", lambda p: p.norm(dim=-1) / p.norm(dim=-1).sum(-1, keepdim=True),
     "divide the norms by their sum"),
    ("patch_norm_map", "visible", lambda p: (p ** 2).sum(-1).softmax(-1), "squared norms"),
    ("patch_norm_map", "visible", lambda p: p.sum(-1).softmax(-1), "sum of the features"),
    ("patch_norm_map", "visible",
     lambda p: F.one_hot(p.norm(dim=-1).argmax(-1), p.shape[1]).float(), "all the weight"),
    ("patch_norm_map", "visible", lambda p: p.norm(dim=1).softmax(-1), "shape of the map"),
    ("patch_norm_map", "visible", lambda p: ml.baselines.patch_norm_map(p), "calls medsight_lab"),
    ("patch_norm_map", "hidden", lambda p: patch_norm_map(p).detach(),
     "no gradient flows back to the patches"),
    # rank_correlation
    ("rank_correlation", "visible", lambda a, b: F.cosine_similarity(
        a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True), dim=-1), "Pearson"),
    ("rank_correlation", "visible", lambda a, b: rank_correlation(a.argsort(-1).float(),
                                                                  b.argsort(-1).float()),
     "argsort of that argsort"),
    ("rank_correlation", "visible",
     lambda a, b: F.cosine_similarity(_ranks(a), _ranks(b), dim=-1), "not centred"),
    ("rank_correlation", "visible", lambda a, b: rank_correlation(a, -b), "descending"),
    ("rank_correlation", "visible", lambda a, b: rank_correlation(a, b).mean(),
     "mean over the rows"),
    ("rank_correlation", "hidden",                # the formula with N^3 instead of N (N^2 - 1)
     lambda a, b: 1 - 6 * (_ranks(a) - _ranks(b)).pow(2).sum(-1) / a.shape[-1] ** 3,
     "wrong value on fresh random rows"),
    ("rank_correlation", "visible", lambda a, b: ml.sanity.rank_correlation(a, b),
     "calls medsight_lab"),
    # deletion_curve
    ("deletion_curve", "visible",
     lambda s, p, r, bg: deletion_curve(s, p, -r, bg), "lowest-ranked patches first"),
    ("deletion_curve", "visible",
     lambda s, p, r, bg: deletion_curve(s, p, r, bg, start=1), "starts at k = 1"),
    ("deletion_curve", "visible",
     lambda s, p, r, bg: deletion_curve(s, p, r, bg)[:, :-1], "stops at k = N - 1"),
    ("deletion_curve", "visible", lambda s, p, r, bg: torch.stack(
        [s(p)] + [s(torch.where(F.one_hot(r.argsort(-1, descending=True)[:, k], p.shape[1])
                                .bool()[..., None], bg, p)) for k in range(p.shape[1])], 1),
     "deletions accumulate"),
    ("deletion_curve", "visible", lambda s, p, r, bg: deletion_curve(s, bg, r, p),
     "insert patches into the background"),
    ("deletion_curve", "visible",
     lambda s, p, r, bg: deletion_curve(s, p, r, bg, fill=torch.zeros_like(p)), "by zeros"),
    ("deletion_curve", "visible", lambda s, p, r, bg: deletion_curve(s, p, r, bg).T,
     "transposed"),
    ("deletion_curve", "visible", lambda s, p, r, bg: deletion_curve(s, p, r, bg).tolist(),
     "expected a torch tensor"),
    ("deletion_curve", "visible", lambda s, p, r, bg: ml.sanity.deletion_curve(s, p, r, bg),
     "calls medsight_lab"),
    ("deletion_curve", "visible",                            # the score's weights changed
     lambda s, p, r, bg: (deletion_curve(s, p, r, bg), s.W.mul_(2))[0],
     "changes its input (score_fn) in place"),
    # gradient_times_input
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "grad"), "gradient alone"),
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "abs"), "absolute value"),
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "abs each"),
     "absolute values of the features"),
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "norm"),
     "norm of the gradient"),
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "mean"),
     "mean of the scores over the images"),
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "features"),
     "one value per feature"),
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "avg"),
     "average over the features"),
    ("gradient_times_input", "visible", lambda s, p: _grad_only(s, p, "item"),
     "expected a torch tensor"),
    ("gradient_times_input", "visible",
     lambda s, p: ml.sanity.gradient_times_input(s, p), "calls medsight_lab"),
    ("gradient_times_input", "visible",
     lambda s, p: (gradient_times_input(s, p), s.scale.zero_())[0],
     "changes its input (score_fn) in place"),

    # exercise, suite, answer, words the verdict must contain
    ("shifted_cross_entropy", "visible", lambda lo, t, pad_id=0: _ce(lo, t, pad_id),
     "not shifted by one position"),
    ("shifted_cross_entropy", "visible",
     lambda lo, t, pad_id=0: _ce(lo[:, 1:], t[:, :-1], pad_id), "shifted the wrong way"),
    ("shifted_cross_entropy", "visible", lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:]),
     "<pad> targets are not ignored"),
    ("shifted_cross_entropy", "visible",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], pad_id, "sum"), "you sum"),
    ("shifted_cross_entropy", "visible",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], pad_id, "sum") / t[:, 1:].numel(),
     "padding included"),
    ("shifted_cross_entropy", "visible", lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], 0),
     "pad_id argument is ignored"),
    ("shifted_cross_entropy", "visible", lambda lo, t, pad_id=0: torch.stack([
        _ce(lo[b:b + 1, :-1], t[b:b + 1, 1:], pad_id) for b in range(t.shape[0])]).mean(),
     "you average each report's loss"),
    ("shifted_cross_entropy", "visible", lambda lo, t, pad_id=0: F.nll_loss(
        lo[:, :-1].reshape(-1, lo.shape[-1]), t[:, 1:].reshape(-1), ignore_index=pad_id),
     "raw logits to nll_loss"),
    ("shifted_cross_entropy", "hidden",
     lambda lo, t, pad_id=0: shifted_cross_entropy(lo.detach(), t, pad_id),
     "no gradient flows back to the logits"),
    ("grounding_loss", "visible", lambda a, m: _bce(a[-1].mean(1), m, normalise=False),
     "normalise each mask row"),
    ("grounding_loss", "visible", lambda a, m: _bce(a[0].mean(1), m), "first layer"),
    ("grounding_loss", "visible", lambda a, m: _bce(a[-1].amax(1), m), "maximum over heads"),
    ("grounding_loss", "visible", lambda a, m: _bce(a[-1].mean(1), m, only_findings=False),
     "tokens without a finding"),
    ("grounding_loss", "visible", lambda a, m: _kl(a, m), "KL divergence"),
    ("grounding_loss", "visible",
     lambda a, m: torch.stack([_bce(a[-1][:, h], m) for h in range(a[-1].shape[1])]).mean(),
     "for each head"),
    ("grounding_loss", "visible",
     lambda a, m: _bce(a[-1].mean(1), m, reduction="none").sum(-1).mean(), "sum the BCE"),
    ("grounding_loss", "visible",                                         # NaN without findings
     lambda a, m: _bce(a[-1].mean(1)[m.sum(-1) > 0], m[m.sum(-1) > 0], only_findings=False),
     "no image has a finding"),
    ("grounding_loss", "hidden", lambda a, m: _bce(a[-1].mean(1), m, clamp=False),
     "clamp the weights"),
    ("attention_entropy", "visible", lambda a: -attention_entropy(a), "wrong sign"),
    ("attention_entropy", "visible", lambda a: _entropy_rows(a[-1]).mean(),
     "entropy of the head-averaged attention"),
    ("attention_entropy", "visible", lambda a: _entropy_rows(a[0].mean(1)).mean(), "first layer"),
    ("attention_entropy", "visible",
     lambda a: torch.stack([_entropy_rows(x.mean(1)).mean() for x in a]).mean(),
     "average over every layer"),
    ("attention_entropy", "visible", lambda a: _entropy_rows(a[-1].mean(1)).sum(),
     "sum the row entropies"),
    ("attention_entropy", "visible",
     lambda a: -(a[-1].mean(1) * a[-1].mean(1).log2()).sum(-1).mean(), "log base 2"),
    ("attention_entropy", "hidden",
     lambda a: -(a[-1].mean(1) * a[-1].mean(1).log()).sum(-1).mean(),
     "NaN or inf on attention rows with weights exactly 0"),
    ("compute_loss", "visible", _scaled_total(lambda g, e: 1, lambda g, e: 1),
     "ignores the lambdas"),
    ("compute_loss", "visible", _scaled_total(lambda g, e: e, lambda g, e: g), "swapped"),
    ("compute_loss", "visible", _scaled_total(lambda g, e: g, lambda g, e: -e), "subtracted"),
    ("compute_loss", "visible", _scaled_total(lambda g, e: 0.1, lambda g, e: 0.01),
     "ignores the lambda arguments"),
    ("compute_loss", "visible", _scaled_total(lambda g, e: 0, lambda g, e: 0),
     "only the cross-entropy"),
    ("compute_loss", "visible", lambda *args, **kw: compute_loss(*args, **kw)[::-1],
     "wrong order"),
    ("compute_loss", "visible", _weighted_terms, "returned multiplied by their lambdas"),
    ("compute_loss", "visible", _with_part(1, lambda lo, t, a, m: _ce(lo, t, 0)),
     "cross-entropy (ce, output 2) is wrong: your cross-entropy is not shifted"),
    ("compute_loss", "visible",
     _with_part(2, lambda lo, t, a, m: _bce(a[-1].mean(1), m, normalise=False)),
     "grounding term (ground, output 3) is wrong: your target is the raw 0/1 mask"),
    ("compute_loss", "visible",
     _with_part(3, lambda lo, t, a, m: _entropy_rows(a[-1].mean(1))[m.sum(-1) > 0].mean()),
     "entropy term (entropy, output 4) is wrong: the entropy is averaged over the tokens with a "
     "finding only"),
    ("compute_loss", "visible", lambda *args, **kw: compute_loss(*args, **kw)[:3],
     "returned a tuple of 3, expected (total, ce, ground, entropy)"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, h, dim=-2),
     "softmax runs over the wrong axis"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, h, scale=1.0),
     "not scaled"),
    ("cross_attention", "visible",
     lambda q, k, v, h: cross_attention(q, k, v, h, scale=math.sqrt(q.shape[-1])),
     "scale by sqrt(D), the model width"),
    ("cross_attention", "visible",
     lambda q, k, v, h: cross_attention(q, k, v, h, scale=math.sqrt(h)),
     "you scale by sqrt(num_heads)"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, 1),
     "single head"),
    ("cross_attention", "visible", lambda q, k, v, h: _single_head_squeezed(q, k, v),
     "single head"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, h)[0],
     "returned a tensor of shape (2, 5, 8), expected a tuple (context, weights)"),
    ("cross_attention", "visible", lambda q, k, v, h: (cross_attention(q, k, v, h)[0], None),
     "you return None as the weights"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, h)[::-1],
     "returned (weights, context): return (context, weights)"),
    ("cross_attention", "visible",
     lambda q, k, v, h: (cross_attention(q, k, v, h)[0], cross_attention(q, k, v, h)[1][:, 0]),
     "shape of the weights: (2, 5, 6), expected (B, H, T, N) = (2, 2, 5, 6)"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, h, merge=False),
     "merged in the wrong order"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, h, split=False),
     "split the wrong way"),
    ("cross_attention", "visible", lambda q, k, v, h: cross_attention(q, k, v, h, raw=True),
     "raw scores"),
    ("causal_attention_weights", "visible",
     lambda s: causal_attention_weights(s, keep=lambda T: torch.ones(T, T).triu()),
     "attends to the future"),
    ("causal_attention_weights", "visible",
     lambda s: causal_attention_weights(s, keep=lambda T: torch.ones(T, T).tril(-1)),
     "diagonal is masked"),
    ("causal_attention_weights", "visible",
     lambda s: s.softmax(-1) * torch.ones(s.shape[-1], s.shape[-1]).tril(),
     "mask after the softmax"),
    ("causal_attention_weights", "visible",
     lambda s: s.softmax(-1).masked_fill(~torch.ones(s.shape[-1], s.shape[-1]).tril().bool(), 0),
     "mask after the softmax"),
    ("causal_attention_weights", "visible",                                # -1e9 masks row 0 to uniform
     lambda s: causal_attention_weights(s, fill=-1e9, keep=lambda T: torch.ones(T, T).tril(-1)),
     "diagonal is masked"),
    ("causal_attention_weights", "hidden",
     lambda s: causal_attention_weights(s, fill=-1e9, keep=lambda T: torch.ones(T, T).tril(-1)),
     "diagonal is masked"),
    ("causal_attention_weights", "visible",
     lambda s: causal_attention_weights(s, fill=-1e9, keep=lambda T: 1 - torch.ones(T, T).tril()),
     "attends to the future"),
    ("causal_attention_weights", "visible", lambda s: causal_attention_weights(s, fill=0.0),
     "set to 0"),
    ("causal_attention_weights", "visible", lambda s: s.softmax(-1), "no mask is applied"),
    ("causal_attention_weights", "visible",
     lambda s: s.masked_fill(~torch.ones(s.shape[-1], s.shape[-1]).tril().bool(),
                             float("-inf")).softmax(-2), "wrong axis"),
    ("causal_attention_weights", "visible",
     lambda s: s.masked_fill_(~torch.ones(s.shape[-1], s.shape[-1]).tril().bool(),
                              float("-inf")).softmax(-1), "in place"),
]


def _kl(a, m):
    target = m / m.sum(-1, keepdim=True).clamp_min(1e-12)
    rows = m.sum(-1) > 0
    p = a[-1].mean(1)
    return (torch.xlogy(target, target) - target * p.clamp_min(1e-8).log())[rows].sum(-1).mean()


def _single_head_squeezed(q, k, v):
    context, weights = cross_attention(q, k, v, 1)
    return context, weights[:, 0]


@pytest.mark.parametrize("exercise, suite, answer, words", WRONG,
                         ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)])
def test_a_wrong_answer_fails_with_its_diagnosis(exercise, suite, answer, words):
    result = run_check(exercise, answer, suite)
    assert not result.passed
    assert result.message.startswith(f"✘ {exercise}")
    assert words in result.message, result.message


def test_every_known_mistake_is_exercised():
    """The tables of known mistakes and this test's wrong answers cover each other."""
    tables = {e: ex.mistakes for e, ex in EXERCISES.items() if ex.diagnose is None}
    assert set(EXERCISES) - set(tables) == {"compute_loss"}     # it diagnoses its parts instead
    for exercise, table in tables.items():
        for message, wrong in table:
            result = run_check(exercise, wrong, "hidden")
            if "calls medsight_lab's own" in result.message:
                continue        # this mistake is computed with the package's function
            assert not result.passed and message in result.message, (exercise, result.message)


def test_an_unknown_wrong_answer_names_the_case():
    result = run_check("shifted_cross_entropy", lambda lo, t, pad_id=0: lo.sum() * 0 + 1.0)
    assert result.message == ("✘ shifted_cross_entropy: wrong value on a batch without "
                              "padding.")
    result = run_check("grounding_loss", lambda a, m: a[-1].sum() * 0 + 0.5, "hidden")
    assert "wrong value on fresh random inputs" in result.message


# -- calling the package's own implementation --------------------------------------------------

@pytest.mark.parametrize("exercise, answer, name", [
    ("finding_masks", ml.finding_masks, "finding_masks"),
    ("cached_attention_step", ml.cached_attention_step, "cached_attention_step"),
    ("compute_loss", ml.compute_loss, "compute_loss"),
    ("compute_loss", lambda *a, **k: ml.loss.compute_loss(*a, **k), "compute_loss"),
    ("shifted_cross_entropy", ml.shifted_cross_entropy, "shifted_cross_entropy"),
    ("grounding_loss", lambda a, m: ml.grounding_loss(a, m), "grounding_loss"),
    ("attention_entropy", ml.attention_entropy, "attention_entropy"),
    ("pointing_game_and_mass", ml.metrics.pointing_game_and_mass, "pointing_game_and_mass"),
    ("spatial_precision", ml.rendered_metrics.spatial_precision, "spatial_precision"),
    ("attention_on_mark", ml.shortcuts.attention_on_mark, "attention_on_mark"),
    ("cross_attention", ml.multi_head_attention, "multi_head_attention"),
    ("causal_attention_weights", lambda s: causal_attention_weights(
        s, keep=lambda T: ml.causal_mask(T)), "causal_mask"),
    ("compute_loss", lambda lo, t, a, m, lambda_ground=0.1, lambda_entropy=0.01: (
        ml.shifted_cross_entropy(lo, t), 0, 0, 0), "shifted_cross_entropy"),
])
def test_calling_the_package_fails(exercise, answer, name):
    result = run_check(exercise, answer, "visible")
    assert result.message == f"✘ {exercise}: your answer calls medsight_lab's own {name} — " \
                             "write it yourself."
    assert ml.compute_loss.__code__.co_name == "compute_loss"   # switched back on afterwards
    torch.testing.assert_close(ml.attention_entropy([torch.full((1, 1, 1, 4), 0.25)]),
                               torch.tensor(math.log(4)))


def test_an_alias_imported_under_another_name_fails():
    from medsight_lab.loss import compute_loss as my_loss
    assert "calls medsight_lab's own compute_loss" in run_check("compute_loss", my_loss).message


def test_catching_the_switched_off_reference_does_not_help():
    def sneaky(logits, token_ids, pad_id=0):
        try:
            return ml.shifted_cross_entropy(logits, token_ids, pad_id)
        except Exception:
            return shifted_cross_entropy(logits, token_ids, pad_id)
    assert "calls medsight_lab's own" in run_check("shifted_cross_entropy", sneaky).message


# -- broken answers: a verdict, never an exception ----------------------------------------------

def _loop(*args, **kwargs):
    while True:
        pass


@pytest.mark.parametrize("answer, words", [
    (lambda a: 1 / 0, "your function raised ZeroDivisionError on a batch of attention maps: "
                      "division by zero"),
    (lambda a: (_ for _ in ()).throw(NotImplementedError("x")), "not implemented yet"),
    (lambda a: float("nan") * a[-1].sum(), "NaN or inf"),
    (lambda a: a[-1].mean(1), "shape of the entropy: (3, 7, 6), expected a single number"),
    (lambda a: 0.5, "your function returned a float, expected a torch tensor"),
    (lambda a: None, "your function returned None"),
    (lambda a: exit(), "raised SystemExit"),
    (3, "expected a function, got an int"),
    (None, "expected a function, got None"),
])
def test_a_broken_answer_gets_a_verdict(answer, words):
    result = run_check("attention_entropy", answer)
    assert not result.passed and words in result.message, result.message


def test_an_answer_that_calls_an_unfinished_exercise_says_which():
    def shifted_cross_entropy(logits, token_ids, pad_id=0):      # the student edition's stub
        raise NotImplementedError("shifted_cross_entropy: your code here")

    def compute_loss(lo, t, a, m, lambda_ground=0.1, lambda_entropy=0.01):
        ce = shifted_cross_entropy(lo, t)
        return ce, ce, ce, ce

    message = run_check("compute_loss", compute_loss).message
    assert "calls shifted_cross_entropy, which is not implemented yet" in message, message
    assert "not implemented yet: replace" in run_check("shifted_cross_entropy",
                                                       shifted_cross_entropy).message


@pytest.mark.parametrize("answer", [
    lambda a: torch.distributions.Categorical(probs=a[-1].mean(1)).entropy().mean(),
    lambda a: (lambda p: -(p * (p + 1e-8).log()).sum(-1).mean())(
        a[-1].mean(1) / a[-1].mean(1).sum(-1, keepdim=True)),           # renormalises each row
])
def test_right_answers_that_differ_off_the_simplex_pass_the_gradient_check(answer):
    result = run_check("attention_entropy", answer, "hidden")
    assert result.passed, result.message


def test_gradients_are_checked_even_when_the_notebook_switched_autograd_off():
    def detached(scores):                  # right values, but no gradient can flow back
        T = scores.shape[-1]
        allowed = torch.ones(T, T, dtype=torch.bool).tril()
        return torch.tensor(scores.masked_fill(~allowed, float("-inf")).softmax(-1).tolist())

    with torch.no_grad():
        result = run_check("causal_attention_weights", detached, "hidden")
    assert not result.passed and "no gradient flows back" in result.message, result.message


def test_the_check_warns_of_an_answer_the_grader_would_refuse(tmp_path, capsys, monkeypatch):
    # A right answer that reaches the package through `ml`: the check says the grader refuses it.
    (tmp_path / "student_answer.py").write_text(
        "import medsight_lab as ml\n\n\n"
        "def attention_entropy(attn_weights):\n"
        "    return ml.loss.attention_entropy(attn_weights) * 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from student_answer import attention_entropy as via_package
    monkeypatch.setattr(checks, "_called_references", [])      # the tripwire is not the point
    monkeypatch.setattr(checks, "_references_switched_off", contextlib.nullcontext)
    check("attention_entropy", via_package)
    out = capsys.readouterr().out
    assert out.startswith("✘ attention_entropy: right, but the grader will refuse this answer: "
                          "answer cells must not use `ml`"), out
    check("attention_entropy", attention_entropy)                 # the course's own answer
    assert capsys.readouterr().out.startswith("✔")


@pytest.mark.parametrize("variable, value", [(checks.RAISE_ENV, "1"),
                                             (checks.NBGRADER_ENV, "validate"),
                                             (checks.NBGRADER_ENV, "autograde")])
def test_for_nbgrader_a_failed_check_raises(monkeypatch, capsys, variable, value):
    """nbgrader scores a grade cell by whether it raises; it sets NBGRADER_EXECUTION itself."""
    for name in checks.RAISE_ENVS:
        monkeypatch.delenv(name, raising=False)
    wrong = lambda a: -attention_entropy(a)                       # noqa: E731
    check("attention_entropy", wrong)                             # by default it only prints
    assert capsys.readouterr().out.startswith("✘ attention_entropy")
    monkeypatch.setenv(checks.RAISE_ENV, "0")                     # off unless "1"
    check("attention_entropy", wrong)
    monkeypatch.setenv(variable, value)
    with pytest.raises(AssertionError, match="wrong sign"):
        check("attention_entropy", wrong)
    check("attention_entropy", attention_entropy)                 # a pass never raises


def test_an_infinite_loop_is_stopped(monkeypatch):
    monkeypatch.setattr(checks, "TIME_LIMIT_S", 0.5)
    result = run_check("compute_loss", _loop)
    assert "did not finish within 0.5 s on a batch with padding and findings: an infinite loop?" \
        in result.message


def test_unknown_exercise_or_suite():
    assert "unknown exercise" in run_check("nope", compute_loss).message
    assert "unknown suite" in run_check("compute_loss", compute_loss, "secret").message


def test_the_verdict_never_contains_a_number_from_a_computation():
    for exercise, answer, _ in [(w[0], w[2], w[3]) for w in WRONG]:
        message = run_check(exercise, answer).message
        assert "tensor(" not in message and "e-0" not in message, message


# -- the hidden cases live outside the package --------------------------------------------------

def test_the_hidden_cases_are_outside_the_package_and_the_release_scans_for_them(tmp_path):
    from medsight_lab.grading.release import find_leaks, hidden_case_lines
    package = Path(checks.__file__).resolve().parents[1]
    assert not checks.HIDDEN_CASES_FILE.is_relative_to(package)
    lines = hidden_case_lines(checks.HIDDEN_CASES_FILE)
    assert len(lines) >= len(EXERCISES) * 4                  # every exercise has hidden cases
    assert find_leaks(package, lines) == []                  # the package the edition ships
    for source in package.rglob("*.py"):                     # the exercises' records included
        assert "def _hidden" not in source.read_text(encoding="utf-8"), source
    leaked = tmp_path / "medsight_lab" / "grading" / "checks.py"
    leaked.parent.mkdir(parents=True)
    leaked.write_text("x = 1\n    " + lines[0] + "\n")
    assert find_leaks(tmp_path, lines) == [(leaked, lines[0])]


def test_without_the_hidden_cases_only_the_visible_suite_runs(monkeypatch, tmp_path):
    monkeypatch.setenv(checks.HIDDEN_CASES_ENV, str(tmp_path / "missing.py"))
    result = run_check("attention_entropy", attention_entropy, "hidden")
    assert not result.passed and "exist only in the instructor's copy" in result.message
    assert run_check("attention_entropy", attention_entropy).passed


# -- one record per exercise -------------------------------------------------------------------

def test_each_record_is_its_chapters_exercise_and_names_its_hidden_cases():
    from medsight_lab.grading.running import Chapter
    notebooks = Path(checks.__file__).resolve().parents[2] / "notebooks"
    hidden = checks._load_hidden_module(str(checks.HIDDEN_CASES_FILE),
                                        checks.HIDDEN_CASES_FILE.stat().st_mtime_ns)
    chapters = {}
    for exercise, record in EXERCISES.items():
        if record.chapter not in chapters:
            chapters[record.chapter] = Chapter.read(notebooks / f"{record.chapter}.ipynb")
        assert record.id == record.function == exercise
        assert chapters[record.chapter].exercises.get(exercise) == record.points, exercise
        assert callable(getattr(hidden, record.hidden, None)), record.hidden
        assert record.guarded and record.title
    # every exercise of every chapter has its record, in the chapters' order
    assert [e for c in sorted(chapters) for e in chapters[c].exercises] == list(EXERCISES)


def test_a_hidden_cases_file_without_the_records_function_says_so(monkeypatch, tmp_path):
    partial = tmp_path / "hidden_cases.py"
    partial.write_text("def _hidden_compute_loss():\n    return []\n")
    monkeypatch.setenv(checks.HIDDEN_CASES_ENV, str(partial))
    result = run_check("attention_entropy", attention_entropy, "hidden")
    assert result.message == f"✘ attention_entropy (hidden tests): {partial} has no hidden cases " \
                             "for attention_entropy", result.message
