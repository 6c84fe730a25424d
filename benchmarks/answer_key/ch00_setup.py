"""Measurements behind the chapter 0 answer key (MedSight Lab).

Run with the course's environment, from the repository root:
    python benchmarks/answer_key/ch00_setup.py
One CPU thread, about 1.5 minutes on a shared 2-core machine. Everything is seeded; the printed results are what the answers cite.

Q1  (a) two CPU runs with the same seed give bit-identical loss histories;
    (b) a rounding-sized change (every initial weight moved by one float32 step, as a different
        summation order might do) changes the loss history, and training does not shrink the gap;
    (c) in this course no random number is drawn on the accelerator: weights are initialised on
        the CPU and the shuffle uses a CPU generator (checked by reading the code, not here).
Q2  how big one training step's operations are: a profile of one step at batch size 32.
Q3  the course dataset leaves the global generator alone; the reference's dataset does not.
"""

import time

import numpy as np
import torch

import medsight_lab as ml
from medsight_lab import reference

torch.set_num_threads(1)
train_set = ml.SyntheticRadiologyDataset(1600, seed=0)


def run(nudge=False, epochs=2):
    ml.set_seed(0)
    model = ml.default_model(train_set)
    if nudge:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    history = ml.train(model, train_set, epochs=epochs, seed=0, progress=False)
    return model, history


print("== Q1: repeatability and rounding ==")
val_set = ml.SyntheticRadiologyDataset(400, seed=1)
t0 = time.time()
m_a, h_a = run(epochs=15)
m_b, h_b = run(epochs=2)
print("two CPU runs, seed 0: the 2-epoch run's loss history equals the first 2 epochs of the "
      "15-epoch run, bit for bit:", all(h_b[k] == h_a[k][:2] for k in h_b))
m_c, h_c = run(nudge=True, epochs=15)
for key in ("loss", "ce", "ground"):
    diffs = [abs(x - y) for x, y in zip(h_a[key], h_c[key])]
    print(f"one-ulp nudge of every initial weight: |delta {key}| at epochs 1, 2, 5, 10, 15:",
          ", ".join(f"{diffs[e - 1]:.1e}" for e in (1, 2, 5, 10, 15)))
print(f"final training loss, run A: {h_a['loss'][-1]:.7f}, nudged run: {h_c['loss'][-1]:.7f}")
wdiff = max((x - y).abs().max().item() for x, y in
            zip(m_a.state_dict().values(), m_c.state_dict().values()))
print(f"largest weight difference after 15 epochs: {wdiff:.2e} "
      f"(the nudge itself: one float32 step, about 1e-8 to 1e-7 per weight)")
ev_a, ev_c = ml.evaluate(m_a, val_set), ml.evaluate(m_c, val_set)
for key in ("exact_match", "finding_accuracy", "pointing_game", "attention_mass"):
    print(f"  held-out {key:17s} run A {ev_a[key]:.6f}   nudged run {ev_c[key]:.6f}")
gen_a = m_a.generate(val_set.patches).token_ids
gen_c = m_c.generate(val_set.patches).token_ids
print("  same generated reports for all 400 held-out images:", torch.equal(gen_a, gen_c))
# The same numbers added in another order.
gen = torch.Generator().manual_seed(0)
x = torch.randn(100_000, generator=gen)
print(f"float32 sum of 100,000 numbers, forwards minus backwards: "
      f"{(x.sum() - x.flip(0).sum()).item():.2e}; "
      f"sequential float32 loop vs torch.sum: {(np.add.accumulate(x.numpy())[-1] - x.sum().item()):.2e}")
print(f"(Q1 took {time.time() - t0:.1f} s)")

print("\n== Q2: the size of one training step's operations ==")
ml.set_seed(0)
model = ml.default_model(train_set)
batch = ml.as_batch(torch.utils.data.Subset(train_set, range(32)))
opt = torch.optim.Adam(model.parameters(), lr=3e-4, fused=True)


def step():
    logits, attn = model(batch["patches"], batch["token_ids"])
    loss = ml.compute_loss(logits, batch["token_ids"], attn, batch["finding_mask"],
                           lambda_ground=1.0, grounding="kl")[0]
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


for _ in range(20):          # warm-up
    step()
n = 200
t0 = time.perf_counter()
for _ in range(n):
    step()
per_step = (time.perf_counter() - t0) / n
print(f"one training step (batch 32, forward + backward + Adam), 1 thread: {per_step * 1e3:.2f} ms "
      f"(mean over {n} steps)")

from torch.profiler import ProfilerActivity, profile  # noqa: E402

with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(5):
        step()
events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
calls = sum(e.count for e in events)
top = sorted(events, key=lambda e: e.self_cpu_time_total / e.count, reverse=True)[:5]
total_self = sum(e.self_cpu_time_total for e in events)
print(f"aten operator calls per step (nested calls included): about {calls // 5}; "
      f"mean self time per call: {total_self / calls:.1f} us")
short = sum(e.count for e in events if e.self_cpu_time_total / e.count < 20)
print(f"share of calls whose operator averages under 20 us: {short / calls:.2f}")
print("slowest operators by mean self time per call:")
for e in top:
    print(f"  {e.key:32s} {e.self_cpu_time_total / e.count:8.1f} us/call  ({e.count // 5} calls/step)")
mm = torch.randn(640, 64)
w = torch.randn(64, 256)
for _ in range(50):
    mm @ w
t0 = time.perf_counter()
for _ in range(2000):
    mm @ w
print(f"the largest matrix product of the forward pass, (640 x 64) @ (64 x 256): "
      f"{(time.perf_counter() - t0) / 2000 * 1e6:.1f} us")

print("\n== Q3: own generator versus the global one ==")
ml.set_seed(0)
w_plain = [p.clone() for p in ml.default_model().parameters()]
ml.set_seed(0)
_ = ml.SyntheticRadiologyDataset(1600, seed=0)
w_after_ds = [p.clone() for p in ml.default_model().parameters()]
print("course dataset: model initialised after building it has the same weights as without it:",
      all(torch.equal(a, b) for a, b in zip(w_plain, w_after_ds)))

ml.set_seed(0)
ref_once = reference.SyntheticRadiologyDataset(1600)
ml.set_seed(0)
torch.randn(3)                       # a cell above, run one extra time, that draws from torch
ref_torch = reference.SyntheticRadiologyDataset(1600)
ml.set_seed(0)
np.random.rand()                     # a cell above, run one extra time, that draws from NumPy
ref_numpy = reference.SyntheticRadiologyDataset(1600)


def summary(ds):
    idx = torch.tensor([d["finding_idx"] for d in ds.data])
    patches = torch.stack([d["patches"] for d in ds.data])
    return idx, patches


i1, p1 = summary(ref_once)
i2, p2 = summary(ref_torch)
i3, p3 = summary(ref_numpy)
print("reference dataset, seeded the same way:")
print("  finding counts, cell run once:            ", torch.bincount(i1, minlength=5).tolist())
print("  extra torch.randn(3) before it: same findings:", torch.equal(i1, i2),
      "| same patches:", torch.equal(p1, p2),
      f"| images whose patches differ: {int((p1 != p2).flatten(1).any(1).sum())}/1600")
print("  extra np.random.rand() before it: counts", torch.bincount(i3, minlength=5).tolist(),
      f"| images whose finding changed: {int((i1 != i3).sum())}/1600")
ml.set_seed(0)
w_ref_plain = [p.clone() for p in reference.GroundedReportVLM(64, 64, 4, 2, 33, 20).parameters()]
ml.set_seed(0)
_ = reference.SyntheticRadiologyDataset(8)
w_ref_after = [p.clone() for p in reference.GroundedReportVLM(64, 64, 4, 2, 33, 20).parameters()]
print("reference: model initialised after building an 8-sample dataset has the same weights:",
      all(torch.equal(a, b) for a, b in zip(w_ref_plain, w_ref_after)))
