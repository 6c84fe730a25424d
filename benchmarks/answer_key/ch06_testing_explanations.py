"""Chapter 6, question 3 (chapter 5's question 3 before the split): label randomisation on a
model trained WITHOUT the grounding loss.

Run as chapter 6 runs label randomisation (section "Label randomisation":
`ml.set_seed(s)`, `ml.default_model(train_set)`, `ml.train(model, sanity.shuffle_reports(train_set),
epochs=..., ...)`, `ml.evaluate(model, val_set)`), but for 5 epochs (the chapter trains 3) and with
`lambda_ground=0.0`, for training seeds
0, 1, 2 (seed s: `ml.set_seed(s)` and `ml.train(..., seed=s)`, as benchmarks/bench_seed_spread.py
does; the datasets and the report permutation keep their seeds: train (1600, seed=0), val
(400, seed=1), shuffle_reports(seed=0)).

Controls, same seeds:
  - "shuffled, KL 1.0": the chapter's run (grounding loss on), trained 5 epochs like the others;
  - "unshuffled, lambda 0, 5 ep": the true reports, no grounding loss, same 5 epochs;
  - "unshuffled, lambda 0, 15 ep": chapter 4's model without the grounding loss (15 epochs).

Prints, per run: finding accuracy (chance: majority baseline), exact match, pointing game and
attention mass in lesion (chance: metrics' pointing_game_chance / attention_mass_chance), AUROC,
number of scored words, and which findings the labeler reads in the generated reports (per true
finding of the image). Also, for reference: the teacher-forced grounding of the finding words of the
TRUE validation reports (`sanity.teacher_forced_grounding`), for every run and for the untrained
model of each seed (`ml.set_seed(s)`, `ml.default_model(train_set)`, no training).

    python benchmarks/answer_key/ch06_testing_explanations.py      # about 1-2 min on 1 CPU thread
"""
import statistics
import time
from collections import Counter

import torch

import medsight_lab as ml
from medsight_lab import sanity
from medsight_lab.metrics import free_running, majority_baseline

torch.set_num_threads(1)
SEEDS = (0, 1, 2)

train_set = ml.SyntheticRadiologyDataset(1600, seed=0)
val_set = ml.SyntheticRadiologyDataset(400, seed=1)
shuffled_set = sanity.shuffle_reports(train_set)
baseline = majority_baseline(val_set)
print(f"majority baseline (chance of the report scores): finding accuracy "
      f"{baseline['finding_accuracy']:.3f}, exact match {baseline['exact_match']:.3f} "
      f"({baseline['finding_name']})")

RUNS = {
    "shuffled, lambda_ground=0, 5 ep": (shuffled_set, 5, {"lambda_ground": 0.0}),
    "shuffled, KL 1.0, 5 ep": (shuffled_set, 5, {}),
    "unshuffled, lambda_ground=0, 5 ep": (train_set, 5, {"lambda_ground": 0.0}),
    "unshuffled, lambda_ground=0, 15 ep (ch4)": (train_set, 15, {"lambda_ground": 0.0}),
}
KEYS = ("finding_accuracy", "exact_match", "pointing_game", "pointing_game_chance",
        "attention_mass", "attention_mass_chance", "auroc", "n_grounded_words")

NAMES = [name for name, _ in ml.FINDINGS.values()]


def tf_line(model):
    tf = sanity.teacher_forced_grounding(model, val_set)
    return (f"teacher-forced (true reports): pointing game {tf['pointing_game']:.3f}, attention mass "
            f"{tf['attention_mass']:.3f}, chance {tf['pointing_game_chance']:.3f}")


results = {name: {} for name in RUNS}
start_all = time.perf_counter()
for seed in SEEDS:
    ml.set_seed(seed)
    untrained = ml.default_model(train_set).eval()
    print(f"seed {seed} | untrained model | {tf_line(untrained)}")
    for name, (data, epochs, kwargs) in RUNS.items():
        t0 = time.perf_counter()
        ml.set_seed(seed)
        model = ml.default_model(train_set)
        ml.train(model, data, epochs=epochs, seed=seed, progress=False, **kwargs)
        m = ml.evaluate(model, val_set)
        batch = ml.as_batch(val_set, next(model.parameters()).device)
        labels = free_running(model, batch["patches"])[2]
        read = Counter("+".join(sorted(s)) or "(none)" for s in labels)
        per_truth = {t: dict(Counter("+".join(sorted(s)) or "(none)" for s, f in
                                     zip(labels, batch["finding_name"]) if f == t).most_common())
                     for t in NAMES}
        results[name][seed] = m
        print(f"seed {seed} | {name:<42} | " +
              "  ".join(f"{k}={m[k]:.3f}" if isinstance(m[k], float) else f"{k}={m[k]}"
                        for k in KEYS) +
              f" | labeler reads: {dict(read.most_common())} | {time.perf_counter() - t0:.1f} s",
              flush=True)
        print(f"        {tf_line(model)}")
        if name.startswith("shuffled"):
            for t in NAMES:
                print(f"        true {t:<13} -> labeler reads {per_truth[t]}")

print("\nsummary over seeds", SEEDS, "(min / median / max)")
for name in RUNS:
    print(name)
    for k in KEYS:
        v = [results[name][s][k] for s in SEEDS]
        print(f"   {k:<24} " + " ".join(f"{x:.3f}" for x in v) +
              f"   (min {min(v):.3f}, median {statistics.median(v):.3f}, max {max(v):.3f})")
print(f"\ntotal {time.perf_counter() - start_all:.0f} s")
