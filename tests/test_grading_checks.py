"""The exercise checks: right answers pass both suites; every plausible wrong answer fails with a
verdict that names the mistake; broken answers give a verdict instead of an exception."""

import contextlib
import math

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


RIGHT = {"cross_attention": cross_attention, "causal_mask": causal_attention_weights,
         "shifted_cross_entropy": shifted_cross_entropy, "grounding_loss": grounding_loss,
         "attention_entropy": attention_entropy, "compute_loss": compute_loss,
         "pointing_game_and_mass": pointing_game_and_mass, "spatial_precision": spatial_precision,
         "attention_on_mark": attention_on_mark}


@pytest.mark.parametrize("suite", ["visible", "hidden"])
@pytest.mark.parametrize("exercise", EXERCISES)
def test_the_right_answer_passes(exercise, suite):
    result = run_check(exercise, RIGHT[exercise], suite)
    assert result.passed, result.message
    title = exercise + (" (hidden tests)" if suite == "hidden" else "")
    assert result.message.startswith(f"✔ {title}: correct on ")


def test_other_right_answers_pass():
    large_negative = lambda s: causal_attention_weights(s, fill=-1e9)  # noqa: E731
    assert run_check("causal_mask", large_negative, "hidden").passed
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
     lambda r, m, s, threshold=0.5: (_mean_masses(r, m, s) > threshold).float(), "a scalar"),
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
     "the *sum* of a row's weights inside the lesion"),
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
    ("causal_mask", "visible",
     lambda s: causal_attention_weights(s, keep=lambda T: torch.ones(T, T).triu()),
     "attends to the future"),
    ("causal_mask", "visible",
     lambda s: causal_attention_weights(s, keep=lambda T: torch.ones(T, T).tril(-1)),
     "diagonal is masked"),
    ("causal_mask", "visible",
     lambda s: s.softmax(-1) * torch.ones(s.shape[-1], s.shape[-1]).tril(),
     "mask after the softmax"),
    ("causal_mask", "visible",
     lambda s: s.softmax(-1).masked_fill(~torch.ones(s.shape[-1], s.shape[-1]).tril().bool(), 0),
     "mask after the softmax"),
    ("causal_mask", "visible", lambda s: causal_attention_weights(s, fill=0.0),
     "set to 0"),
    ("causal_mask", "visible", lambda s: s.softmax(-1), "no mask is applied"),
    ("causal_mask", "visible",
     lambda s: s.masked_fill(~torch.ones(s.shape[-1], s.shape[-1]).tril().bool(),
                             float("-inf")).softmax(-2), "wrong axis"),
    ("causal_mask", "visible",
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
    tables = {"cross_attention": checks._CROSS_ATTENTION_MISTAKES,
              "causal_mask": checks._CAUSAL_MISTAKES, "shifted_cross_entropy": checks._CE_MISTAKES,
              "grounding_loss": checks._GROUNDING_MISTAKES,
              "attention_entropy": checks._ENTROPY_MISTAKES,
              "pointing_game_and_mass": checks._POINTING_MISTAKES,
              "spatial_precision": checks._SPATIAL_MISTAKES,
              "attention_on_mark": checks._MARK_MISTAKES}
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
    ("compute_loss", ml.compute_loss, "compute_loss"),
    ("compute_loss", lambda *a, **k: ml.loss.compute_loss(*a, **k), "compute_loss"),
    ("shifted_cross_entropy", ml.shifted_cross_entropy, "shifted_cross_entropy"),
    ("grounding_loss", lambda a, m: ml.grounding_loss(a, m), "grounding_loss"),
    ("attention_entropy", ml.attention_entropy, "attention_entropy"),
    ("pointing_game_and_mass", ml.metrics.pointing_game_and_mass, "pointing_game_and_mass"),
    ("spatial_precision", ml.rendered_metrics.spatial_precision, "spatial_precision"),
    ("attention_on_mark", ml.shortcuts.attention_on_mark, "attention_on_mark"),
    ("cross_attention", ml.multi_head_attention, "multi_head_attention"),
    ("causal_mask", lambda s: causal_attention_weights(
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
        result = run_check("causal_mask", detached, "hidden")
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


def test_for_nbgrader_a_failed_check_can_raise(monkeypatch, capsys):
    wrong = lambda a: -attention_entropy(a)                       # noqa: E731
    check("attention_entropy", wrong)                             # by default it only prints
    assert capsys.readouterr().out.startswith("✘ attention_entropy")
    monkeypatch.setenv(checks.RAISE_ENV, "1")
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
