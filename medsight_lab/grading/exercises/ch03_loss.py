"""Chapter 3 (03_loss): the exercises `shifted_cross_entropy`, `grounding_loss`,
`attention_entropy` and `compute_loss`, one record each (see ch01_dataset.py for what a record
holds). Their inputs come from one builder, `_loss_inputs`; compute_loss's diagnosis reuses the
mistakes of the three others.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from ... import loss as _loss
from .record import Case, Exercise, first_mistake, matches


def _loss_inputs(seed, B=3, T=7, V=11, H=2, N=6, layers=2, padding=True, findings=True,
                 pad_id=0, all_pad_row=False, one_hot_row=False, saturated_finding_row=False):
    """logits, token_ids, attn_weights, finding_masks as the loss sees them. The last image has
    no finding, and only some tokens of the others have a mask."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2
    logits[..., pad_id] -= 3      # <pad> targets cost more, so counting them shows in the mean
    token_ids = torch.randint(0 if pad_id else 3, V, (B, T), generator=g)
    token_ids[token_ids == pad_id] = (pad_id + 1) % V
    token_ids[:, 0] = 1                                           # <bos>
    if padding and T > 2:                     # row 0 stays full length, unless it is alone
        for b in range(1, B) if B > 1 else [0]:
            token_ids[b, int(torch.randint(2, T, (1,), generator=g)):] = pad_id
    if all_pad_row:
        token_ids[-1, 1:] = pad_id
    attn = [(torch.randn(B, H, T, N, generator=g) * 1.5).softmax(-1) for _ in range(layers)]
    if one_hot_row:                                               # weights exactly 0 and 1
        attn[-1][0, :, 0] = F.one_hot(torch.tensor(N - 1), N).float()
    masks = torch.zeros(B, T, N)
    if findings:
        for b in range(max(B - 1, 1)):
            rows = torch.randperm(T, generator=g)[:max(1, T // 3)]
            for t in rows.tolist():
                masks[b, t, torch.randperm(N, generator=g)[:1 + t % 3]] = 1.0
    if saturated_finding_row:       # every head puts all its weight on a patch outside the lesion
        t = int(masks[0].sum(-1).nonzero()[0])
        attn[-1][0, :, t] = F.one_hot((masks[0, t] == 0).nonzero()[0], N).float()
    return logits, token_ids, attn, masks


def _ce_inputs(seed, **kw):
    """(logits, token_ids) of `_loss_inputs`."""
    return _loss_inputs(seed, **kw)[:2]


def _grounding_inputs(seed, **kw):
    """(attn_weights, finding_masks) of `_loss_inputs`."""
    return _loss_inputs(seed, **kw)[2:]


def _entropy_inputs(seed, **kw):
    """(attn_weights,) of `_loss_inputs`."""
    return _loss_inputs(seed, **kw)[2:3]


# -- shifted_cross_entropy ---------------------------------------------------------------------

def _cases_shifted_cross_entropy():
    return [Case("a batch without padding", _ce_inputs(0, padding=False)),
            Case("a batch with padding", _ce_inputs(1)),
            Case("a single report (B=1)", _ce_inputs(2, B=1)),
            Case("a batch with padding", _ce_inputs(3, B=4, T=9, V=13)),
            Case("a batch padded with pad_id=4", _ce_inputs(4, pad_id=4), {"pad_id": 4})]


def _ce(logits, targets, ignore_index, reduction="mean"):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index, reduction=reduction)


def _ce_mean_over_all(lo, t, pad_id=0):
    return _ce(lo[:, :-1], t[:, 1:], pad_id, "sum") / t[:, 1:].numel()


def _ce_mean_per_report(lo, t, pad_id=0):
    losses = F.cross_entropy(lo[:, :-1].transpose(1, 2), t[:, 1:], ignore_index=pad_id,
                             reduction="none")                                     # (B, T-1)
    counted = (t[:, 1:] != pad_id).sum(1)
    return (losses.sum(1)[counted > 0] / counted[counted > 0]).mean()


_NOT_SHIFTED = ("your cross-entropy is not shifted by one position: position t must predict "
                "token t+1 (drop the last logit and the first token)")
_CE_MISTAKES = [
    ("the pad_id argument is ignored: skip the targets equal to pad_id, not a fixed id",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], 0)),
    (_NOT_SHIFTED, lambda lo, t, pad_id=0: _ce(lo, t, pad_id)),
    ("your cross-entropy is shifted the wrong way: the logits at position t predict token t+1, "
     "so drop the last logit and the first token",
     lambda lo, t, pad_id=0: _ce(lo[:, 1:], t[:, :-1], pad_id)),
    ("<pad> targets are not ignored: pass ignore_index=pad_id, padding must cost nothing",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], -100)),
    (_NOT_SHIFTED + ", and <pad> targets are not ignored (ignore_index=pad_id)",
     lambda lo, t, pad_id=0: _ce(lo, t, -100)),
    ("you sum the per-token losses: the loss is their mean over the non-pad targets",
     lambda lo, t, pad_id=0: _ce(lo[:, :-1], t[:, 1:], pad_id, "sum")),
    ("you divide by every position, padding included: average over the non-pad targets only",
     _ce_mean_over_all),
    ("you average each report's loss, then the reports: average over all non-pad targets of the "
     "batch at once (reports of different lengths then count by their tokens)",
     _ce_mean_per_report),
    ("you pass the raw logits to nll_loss: it expects log-probabilities (use F.cross_entropy, or "
     "F.log_softmax first)", lambda lo, t, pad_id=0: F.nll_loss(
         lo[:, :-1].reshape(-1, lo.shape[-1]), t[:, 1:].reshape(-1), ignore_index=pad_id)),
]


SHIFTED_CROSS_ENTROPY = Exercise(
    id="shifted_cross_entropy", chapter="03_loss", title="Shifted cross-entropy", points=2,
    cases=_cases_shifted_cross_entropy, hidden="_hidden_shifted_cross_entropy",
    reference=lambda lo, t, pad_id=0: _loss.shifted_cross_entropy(lo, t, pad_id),
    guarded=((_loss, "shifted_cross_entropy"),),
    outputs=("loss",), shapes=("a scalar",), inputs=("logits", "token_ids"), grad_args=(0,),
    mistakes=_CE_MISTAKES)


# -- grounding_loss ----------------------------------------------------------------------------

def _cases_grounding_loss():
    return [Case("a batch with findings", _grounding_inputs(0)),
            Case("a batch with findings", _grounding_inputs(1, B=4, N=9)),
            Case("a single image with a finding (B=1)", _grounding_inputs(2, B=1)),
            Case("a batch in which no image has a finding", _grounding_inputs(3, findings=False))]


def _bce_rows(avg, masks, normalise=True, all_rows=False, reduce_patches="mean", clamp=True):
    """The reference's BCE on (B, T, N) head-averaged attention, with optional mistakes."""
    if not all_rows:
        exists = masks.sum(-1) > 0
        if not exists.any():
            return avg.sum() * 0.0
        avg, masks = avg[exists], masks[exists]
    target = masks / (masks.sum(-1, keepdim=True) + 1e-6) if normalise else masks
    bce = F.binary_cross_entropy(avg.clamp(1e-6, 1 - 1e-6) if clamp else avg, target,
                                 reduction="none")
    return bce.sum(-1).mean() if reduce_patches == "sum" else bce.mean()


_GROUNDING_MISTAKES = [
    ("your target is the raw 0/1 mask: normalise each mask row to sum to 1 "
     "(divide it by its sum)", lambda a, m: _bce_rows(a[-1].mean(1), m, normalise=False)),
    ("you use the first layer's attention: the loss supervises the last layer, "
     "attn_weights[-1]", lambda a, m: _bce_rows(a[0].mean(1), m)),
    ("you take the maximum over heads: average the heads (mean over dim 1)",
     lambda a, m: _bce_rows(a[-1].amax(1), m)),
    ("you sum over heads: average the heads (mean over dim 1)",
     lambda a, m: _bce_rows(a[-1].sum(1), m)),
    ("you compute the loss for each head and average the losses: average the heads' attention "
     "first, then compare it with the mask",
     lambda a, m: torch.stack([_bce_rows(a[-1][:, h], m) for h in range(a[-1].shape[1])]).mean()),
    ("you include the tokens without a finding: use only the rows whose mask has at least one "
     "patch", lambda a, m: _bce_rows(a[-1].mean(1), m, all_rows=True)),
    ("you compute a KL divergence: this exercise asks for the reference's binary cross-entropy "
     "between the head-averaged weights and the normalised mask",
     lambda a, m: _loss.grounding_loss(a, m, "kl")),
    ("you sum the BCE over the patches: average it over every entry (the default reduction)",
     lambda a, m: _bce_rows(a[-1].mean(1), m, reduce_patches="sum")),
    ("on a weight of exactly 0 or 1 your loss differs from the reference's: clamp the weights to "
     "[1e-6, 1 - 1e-6] before the BCE, as the reference does (log 0 is -inf; PyTorch's BCE caps "
     "it at -100)", lambda a, m: _bce_rows(a[-1].mean(1), m, clamp=False)),
]


GROUNDING_LOSS = Exercise(
    id="grounding_loss", chapter="03_loss", title="Grounding loss (BCE)", points=2,
    cases=_cases_grounding_loss, hidden="_hidden_grounding_loss",
    reference=lambda a, m: _loss.grounding_loss(a, m, "bce"),
    guarded=((_loss, "grounding_loss"),),
    outputs=("loss",), shapes=("a scalar",), inputs=("attention weights", "finding masks"),
    grad_args=(0,), mistakes=_GROUNDING_MISTAKES)


# -- attention_entropy -------------------------------------------------------------------------

def _cases_attention_entropy():
    return [Case("a batch of attention maps", _entropy_inputs(0)),
            Case("a batch of attention maps", _entropy_inputs(1, B=4, H=4, N=9)),
            Case("a single image (B=1)", _entropy_inputs(2, B=1))]


def _row_entropy(p, log=torch.log):
    return -(p * log(p + 1e-8)).sum(-1)


_ENTROPY_MISTAKES = [
    ("your entropy has the wrong sign: H = -sum p log p is never negative",
     lambda a: -_loss.attention_entropy(a)),
    ("you average the entropies of the heads: take the entropy of the head-averaged attention "
     "(average the heads first)", lambda a: _row_entropy(a[-1]).mean()),
    ("you use the first layer's attention: use the last layer, attn_weights[-1]",
     lambda a: _row_entropy(a[0].mean(1)).mean()),
    ("you sum the row entropies: take their mean over the batch and the positions",
     lambda a: _row_entropy(a[-1].mean(1)).sum()),
    ("you sum the row entropies: take their mean over the batch and the positions",
     lambda a: _row_entropy(a[-1].mean(1)).sum(-1).mean()),
    ("you average over every layer: the entropy term uses the last layer only, attn_weights[-1]",
     lambda a: torch.stack([_row_entropy(x.mean(1)).mean() for x in a]).mean()),
    ("you use log base 2: use the natural logarithm (entropy in nats)",
     lambda a: _row_entropy(a[-1].mean(1), torch.log2).mean()),
    ("you average -p log p over the patches: a row's entropy sums over its patches, then the "
     "rows are averaged", lambda a: _row_entropy(a[-1].mean(1)).mean() / a[-1].shape[-1]),
]

# compute_loss's entropy term may also be restricted to some rows by mistake.
_ENTROPY_ROW_MISTAKES = [
    ("the entropy is averaged over the tokens with a finding only: it runs over every position",
     lambda lo, t, a, m: _row_entropy(a[-1].mean(1))[m.sum(-1) > 0].mean()),
    ("the entropy is averaged over the non-pad positions only: it runs over every position",
     lambda lo, t, a, m: _row_entropy(a[-1].mean(1))[t != 0].mean()),
]


ATTENTION_ENTROPY = Exercise(
    id="attention_entropy", chapter="03_loss", title="Attention entropy", points=1,
    cases=_cases_attention_entropy, hidden="_hidden_attention_entropy",
    reference=lambda a: _loss.attention_entropy(a),
    guarded=((_loss, "attention_entropy"),),
    outputs=("entropy",), shapes=("a scalar",), inputs=("attention weights",), grad_args=(0,),
    mistakes=_ENTROPY_MISTAKES)


# -- compute_loss ------------------------------------------------------------------------------

def _cases_compute_loss():
    return [Case("a batch with padding and findings", _loss_inputs(0)),
            Case("a batch with padding and findings", _loss_inputs(1, B=4, T=9, N=9)),
            Case("a call with lambda_ground=0.5, lambda_entropy=0.2", _loss_inputs(2),
                 {"lambda_ground": 0.5, "lambda_entropy": 0.2}),
            Case("a batch in which no image has a finding", _loss_inputs(3, findings=False))]


def _diagnose_compute_loss(out, expected, args, kwargs):
    """Which part of (total, ce, ground, entropy) is wrong, and how."""
    if any(o.numel() != 1 for o in out):
        return None                                  # a shape problem, reported as such
    lo, t, a, m = args
    lg, le = kwargs.get("lambda_ground", 0.1), kwargs.get("lambda_entropy", 0.01)
    ce, ground, entropy = (_loss.shifted_cross_entropy(lo, t), _loss.grounding_loss(a, m),
                           _loss.attention_entropy(a))
    expected = (ce + lg * ground + le * entropy, ce, ground, entropy)
    for order in itertools.permutations(range(4)):
        if order != (0, 1, 2, 3) and matches(tuple(out), tuple(expected[i] for i in order)):
            return ("the four values are right but in the wrong order: return "
                    "(total, ce, ground, entropy)")
    if (matches(out[0], expected[0]) and matches(out[1], ce)
            and matches(out[2], lg * ground) and matches(out[3], le * entropy)):
        return ("the total is right, but ground and entropy are returned multiplied by their "
                "lambdas: return them unweighted, as the training log records them")
    parts = [("ce", "the cross-entropy", ce, _CE_MISTAKES, (lo, t)),
             ("ground", "the grounding term", ground, _GROUNDING_MISTAKES, (a, m)),
             ("entropy", "the entropy term", entropy, _ENTROPY_MISTAKES, (a,))]
    for index, (name, what, value, mistakes, part_args) in enumerate(parts, start=1):
        if not matches(out[index], value):
            found = first_mistake(mistakes, out[index], value, part_args)
            if found is None and name == "entropy":
                found = first_mistake(_ENTROPY_ROW_MISTAKES, out[index], value, args)
            return f"{what} ({name}, output {index + 1}) is wrong" + (f": {found}" if found else
                                                                      "")
    totals = [
        ("the total ignores the lambdas: total = ce + lambda_ground * ground "
         "+ lambda_entropy * entropy", ce + ground + entropy),
        ("lambda_ground and lambda_entropy are swapped: lambda_ground weights the grounding term",
         ce + le * ground + lg * entropy),
        ("the entropy term is subtracted: the reference adds lambda_entropy * entropy",
         ce + lg * ground - le * entropy),
        ("the total ignores the lambda arguments (hard-coded weights?): use lambda_ground and "
         "lambda_entropy", ce + 0.1 * ground + 0.01 * entropy),
        ("the total is only the cross-entropy: add lambda_ground * ground "
         "+ lambda_entropy * entropy", ce),
        ("the total leaves out the entropy term (+ lambda_entropy * entropy)", ce + lg * ground),
        ("the total leaves out the grounding term (+ lambda_ground * ground)", ce + le * entropy),
    ]
    for message, value in totals:
        if matches(out[0], value):
            return message
    return "the total is not ce + lambda_ground * ground + lambda_entropy * entropy"


COMPUTE_LOSS = Exercise(
    id="compute_loss", chapter="03_loss", title="The full loss", points=3,
    cases=_cases_compute_loss, hidden="_hidden_compute_loss",
    reference=lambda lo, t, a, m, **kw: _loss.compute_loss(lo, t, a, m, **kw),
    guarded=((_loss, "compute_loss"),),
    outputs=("total", "ce", "ground", "entropy"), shapes=("a scalar",) * 4,
    inputs=("logits", "token_ids", "attention weights", "finding masks"), grad_args=(0, 2),
    diagnose=_diagnose_compute_loss)
