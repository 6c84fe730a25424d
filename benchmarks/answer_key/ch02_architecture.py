"""Chapter 2, question 3: what goes wrong without the text position embedding?

Trains the course model as chapter 4 does (train set SyntheticRadiologyDataset(1600, seed=0),
validation (400, seed=1), 15 epochs, ml.train defaults: KL grounding at 1.0, entropy 0.01) for
several training seeds, once normally and once with the text position embedding
(`model.pos_embedding`) zeroed and frozen, and compares free-running scores (ml.evaluate).

    python benchmarks/answer_key/ch02_architecture.py [--seeds 0 1 2]

About 13 s per training run on one CPU thread.
"""

import argparse
import statistics
import time
from collections import Counter

import torch

import medsight_lab as ml

parser = argparse.ArgumentParser()
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
args = parser.parse_args()

torch.set_num_threads(1)
train_set = ml.SyntheticRadiologyDataset(1600, seed=0)
val_set = ml.SyntheticRadiologyDataset(400, seed=1)
tok = ml.Tokenizer()


def run(seed, text_positions):
    ml.set_seed(seed)
    model = ml.default_model(train_set)
    if not text_positions:
        with torch.no_grad():
            model.pos_embedding.weight.zero_()
        model.pos_embedding.weight.requires_grad_(False)   # Adam skips it (grad stays None)
    t0 = time.time()
    history = ml.train(model, train_set, epochs=15, seed=seed, val_dataset=val_set,
                       progress=False)
    if not text_positions:
        assert model.pos_embedding.weight.abs().max().item() == 0.0, "embedding moved"
    m = ml.evaluate(model, val_set)
    # the wrong reports, to see *how* it fails
    out = model.generate(val_set.patches).token_ids
    wrong = Counter()
    for i in range(len(val_set)):
        got, want = tok.decode(out[i]), tok.decode(val_set.token_ids[i])
        if got != want:
            wrong[(want, got)] += 1
    first_perfect = next((e + 1 for e, x in enumerate(history["val_exact_match"]) if x == 1.0),
                         None)
    return {"exact": m["exact_match"], "finding": m["finding_accuracy"],
            "tf_acc": m["teacher_forced_token_accuracy"], "ce": history["ce"][-1],
            "mass": m["attention_mass"], "pg": m["pointing_game"],
            "curve": history["val_exact_match"], "first_perfect": first_perfect,
            "wrong": wrong, "secs": time.time() - t0}


results = {True: [], False: []}
for seed in args.seeds:
    for text_positions in (True, False):
        r = run(seed, text_positions)
        results[text_positions].append(r)
        label = "with text positions   " if text_positions else "without text positions"
        print(f"seed {seed} {label}: exact match {r['exact']:.4f}  finding acc {r['finding']:.4f}  "
              f"teacher-forced token acc {r['tf_acc']:.4f}  final train CE {r['ce']:.4f}  "
              f"attention mass {r['mass']:.3f}  pointing game {r['pg']:.3f}  "
              f"first epoch with exact match 1.0: {r['first_perfect']}  ({r['secs']:.0f} s)",
              flush=True)
        print("   val exact match per epoch:", " ".join(f"{x:.3f}" for x in r["curve"]))
        for (want, got), n in r["wrong"].most_common(4):
            print(f"   {n:3d} x  true: {want!r}\n          got:  {got!r}")

print()
for text_positions in (True, False):
    rs = results[text_positions]
    ex = [r["exact"] for r in rs]
    label = "with text positions   " if text_positions else "without text positions"
    print(f"{label}: exact match min {min(ex):.4f} median {statistics.median(ex):.4f} "
          f"max {max(ex):.4f};  epochs to exact match 1.0: {[r['first_perfect'] for r in rs]}")
