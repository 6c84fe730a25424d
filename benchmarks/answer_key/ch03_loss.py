"""Chapter 3, question 3: entropy vs a multi-patch grounding mask, with the reference's weights.

The reference's loss (ml.compute_loss defaults): CE + 0.1 * BCE grounding + 0.01 * entropy.
The BCE is a mean over (finding rows x 16 patches); the entropy is a mean over *every* row of the
batch (B x T, padding included). So per finding row, in units of 1/(B*T), the two terms weigh
    0.1 * c * BCE_row_mean(a)   and   0.01 * H(a),   with c = B*T / M (M = finding rows).

Part A (instant): c on the training set; the per-row objective along p : 1-p on a two-patch
lesion; the curvature of the objective at the even split for 2, 3 and 4 patch lesions; and a
direct minimisation of the per-row objective from a lopsided start.
Part B (about 15 s per run on one CPU thread): trains the course model with the reference's loss
(grounding="bce", lambda_ground=0.1, lambda_entropy=0.01), the same without the entropy term,
and with only the entropy term (lambda_ground=0), 3 training seeds each, chapter 4's data and 15
epochs, then measures how evenly the last layer's head-averaged attention of the finding words
is spread over the lesion's patches (teacher-forced rows, validation set).

    python benchmarks/answer_key/ch03_loss.py [--seeds 0 1 2] [--no-train]
"""

import argparse
import math
import statistics

import torch

import medsight_lab as ml

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--no-train", action="store_true")
args = parser.parse_args()
torch.set_num_threads(1)
N = 16
LG, LE = 0.1, 0.01          # the reference's weights (compute_loss defaults)

train_set = ml.SyntheticRadiologyDataset(1600, seed=0)
val_set = ml.SyntheticRadiologyDataset(400, seed=1)

# ---- Part A -----------------------------------------------------------------------------------
share = (train_set.finding_mask.sum(-1) > 0).float().mean().item()
c = 1 / share
print(f"finding rows / all rows (B*T) on the training set: {share:.4f}  ->  c = B*T/M = {c:.2f}")


def row_objective(a, k, lam_e=LE, cc=c):
    """Per-row reference objective (units of 1/(B*T)) for attention row a (16,), lesion = first k
    patches. Uses the package's own grounding_loss and attention_entropy on a single row."""
    mask = torch.zeros(1, 1, N)
    mask[0, 0, :k] = 1
    attn = [a.view(1, 1, 1, N)]
    return (LG * cc * ml.grounding_loss(attn, mask, "bce") + lam_e * ml.attention_entropy(attn))


print("\nTwo-patch lesion, attention p and 1-p on its two patches, 0 elsewhere:")
print(f"{'p':>5} | {'BCE':>6} | {'H':>6} | {'0.1*c*BCE':>9} | {'0.01*H':>7} | {'per-row total':>13}")
for p in (0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0):
    a = torch.zeros(N)
    a[0], a[1] = p, 1 - p
    mask = torch.zeros(1, 1, N)
    mask[0, 0, :2] = 1
    bce = ml.grounding_loss([a.view(1, 1, 1, N)], mask, "bce").item()
    h = ml.attention_entropy([a.view(1, 1, 1, N)]).item()
    print(f"{p:>5.2f} | {bce:6.3f} | {h:6.3f} | {LG * c * bce:9.4f} | {LE * h:7.4f} | "
          f"{LG * c * bce + LE * h:13.4f}")

print("\nCurvature at the even split, along a shift of weight between lesion patches")
print("(per unit squared shift; > 0 means the even split is a minimum, i.e. grounding wins):")
for k in (2, 3, 4):
    ground = LG * c / N * (k + k / (k - 1))     # BCE: m/a^2 + (1-m)/(1-a)^2 at a = m = 1/k
    ent = LE * k                                # entropy: -1/a at a = 1/k
    lam_break = LG * c / N * (1 + 1 / (k - 1))
    print(f"  {k}-patch lesion: grounding +{ground:.3f}, entropy -{ent:.3f}, net {ground - ent:+.3f};"
          f"  entropy weight that would flip it: {lam_break:.3f} ({lam_break / LE:.1f} x 0.01)")

print("\nMinimising the per-row objective over 16 free scores from a lopsided start "
      "(lesion patch 0 given 80% of the weight):")
for lam_e in (LE, 0.1):
    for k in (2, 3, 4):
        scores = torch.full((N,), -2.0)
        scores[:k] = 2.0
        scores[0] = 2.0 + math.log(0.8 / 0.2 * (k - 1))   # 80% of the lesion's weight on patch 0
        scores.requires_grad_(True)
        opt = torch.optim.Adam([scores], lr=0.05)
        for _ in range(4000):
            opt.zero_grad()
            row_objective(scores.softmax(-1), k, lam_e).backward()
            opt.step()
        a = scores.softmax(-1).detach()
        print(f"  entropy weight {lam_e}: {k}-patch lesion -> lesion weights "
              f"{[round(x, 3) for x in a[:k].tolist()]}, mass outside {a[k:].sum():.4f}")

if args.no_train:
    raise SystemExit

# ---- Part B -----------------------------------------------------------------------------------
val = ml.as_batch(val_set)


@torch.no_grad()
def spread_stats(model):
    """Finding-word rows (teacher forced) of the last layer, heads averaged, per lesion size."""
    _, attn = model(val["patches"], val["token_ids"])
    rows_ok = val["finding_mask"].sum(-1) > 0
    a = attn[-1].mean(1)[rows_ok]                                  # (M, N)
    lesion = val["finding_mask"][rows_ok]                          # (M, N)
    k = lesion.sum(-1)
    inside = a * lesion
    mass = inside.sum(-1)
    q = inside / mass[:, None]                                     # split within the lesion
    h_in = -(q * (q + 1e-12).log()).sum(-1) / k.log()              # 1 = even split
    top = q.max(-1).values                                         # share of the top patch
    h = -(a * (a + 1e-8).log()).sum(-1)
    out = {}
    for size in (2, 3, 4):
        s = k == size
        out[size] = (mass[s].mean().item(), top[s].mean().item(), h_in[s].mean().item(),
                     h[s].mean().item())
    return out


configs = {"reference: BCE 0.1 + entropy 0.01": dict(grounding="bce", lambda_ground=0.1,
                                                     lambda_entropy=0.01),
           "BCE 0.1, no entropy term":          dict(grounding="bce", lambda_ground=0.1,
                                                     lambda_entropy=0.0),
           "entropy 0.01 only, no grounding":   dict(grounding="bce", lambda_ground=0.0,
                                                     lambda_entropy=0.01)}
print("\nTrained models (validation, teacher-forced finding-word rows, last layer, heads averaged).")
print("mass = attention inside the lesion; top = share of the lesion's attention on its most-")
print("attended patch (even split: 1/k); evenness = within-lesion entropy / log k (even: 1).")
for name, kw in configs.items():
    per_seed = []
    for seed in args.seeds:
        ml.set_seed(seed)
        model = ml.default_model(train_set)
        hist = ml.train(model, train_set, epochs=15, seed=seed, progress=False, **kw)
        st = spread_stats(model)
        ex = ml.evaluate(model, val_set)["exact_match"]
        per_seed.append(st)
        print(f"{name} | seed {seed} | exact match {ex:.3f} | final raw BCE {hist['ground'][-1]:.4f}"
              f" entropy {hist['entropy'][-1]:.3f} | " +
              "  ".join(f"k={k}: mass {m:.3f} top {t:.3f} evenness {e:.3f} H {h:.3f}"
                        for k, (m, t, e, h) in st.items()), flush=True)
    for k in (2, 3, 4):
        tops = [s[k][1] for s in per_seed]
        evens = [s[k][2] for s in per_seed]
        print(f"   {k}-patch lesions over seeds: top share {min(tops):.3f}-{max(tops):.3f} "
              f"(even {1 / k:.3f}), evenness {min(evens):.3f}-{max(evens):.3f}")
