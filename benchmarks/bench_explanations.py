"""Chapter 6 ("Testing explanations") over training seeds: every quantity the chapter checks or
quotes, per seed, then min / median / max and a 95 % bootstrap interval of the mean over seeds,
beside chance and the input-only map (softmax of the patch norms, and the brightest patch).

The recipe is the chapter's: train (1600, seed=0), validation (400, seed=1); the course model
`ml.default_model(train_set)` trained 8 epochs; the wrong-region and the shuffled-report models
3 epochs each; seed s means `ml.set_seed(s)` before building a model and `ml.train(..., seed=s)`.
Randomisation draws 0, 1, 2; explanations and curves on the first 120 validation images with a
lesion (the chapter's `explained` subset), background noise seed 0.

    python benchmarks/bench_explanations.py            # seeds 0-9; about 1 min per seed, 1 thread
    python benchmarks/bench_explanations.py 0 1 2 3 4  # chosen seeds

The output of the run the book quotes is stored in benchmarks/bench_explanations.txt.
"""
import statistics
import sys
import time

import torch
from torch.utils.data import Subset

import medsight_lab as ml
from medsight_lab import sanity
from medsight_lab.baselines import baseline_scores
from medsight_lab.metrics import pointing_game_and_mass

torch.set_num_threads(1)
SEEDS = [int(s) for s in sys.argv[1:]] or list(range(10))
DRAWS = (0, 1, 2)
N_EXPLAINED = 120

train_set = ml.SyntheticRadiologyDataset(1600, seed=0)
val_set = ml.SyntheticRadiologyDataset(400, seed=1)
val = ml.as_batch(val_set, "cpu")
lesion_idx = [i for i in range(len(val_set)) if val["lesion_mask"][i].any()][:N_EXPLAINED]
explained_set = Subset(val_set, lesion_idx)

base = baseline_scores(val["patches"], val["lesion_mask"])
print("model-free maps on the validation images with a lesion (no training, no seed):")
for name, s in base.items():
    print(f"  {name:<24} pointing game {s['pointing_game']:.3f}  attention mass "
          f"{s['attention_mass']:.3f}")

rows = {}                      # quantity -> list over seeds


def put(key, value):
    rows.setdefault(key, []).append(float(value))


def trained(seed, data, epochs):
    ml.set_seed(seed)
    model = ml.default_model(train_set)
    ml.train(model, data, epochs=epochs, seed=seed, progress=False)
    return model.eval()


start = time.perf_counter()
for seed in SEEDS:
    t0, c0 = time.perf_counter(), time.process_time()
    course = trained(seed, train_set, 8)
    m = ml.evaluate(course, val_set)
    put("course: finding accuracy", m["finding_accuracy"])
    put("course: pointing game (generated words)", m["pointing_game"])
    put("course: attention mass (generated words)", m["attention_mass"])

    # model randomisation, both variants, three draws each
    for mode in ("cascading", "independent"):
        draws = [sanity.model_randomisation(course, val_set, mode=mode, seed=d) for d in DRAWS]
        put(f"{mode}: rho of maps of unrelated images", draws[0]["unrelated_images"])
        for i, step in enumerate(draws[0]["steps"]):
            label = step["randomised"]
            for key in ("rank_correlation", "attention_mass", "pointing_game"):
                put(f"{mode}: {label}: {key} (mean of draws)",
                    statistics.mean(d["steps"][i][key] for d in draws))
            put(f"{mode}: {label}: rank_correlation (max of draws)",
                max(d["steps"][i]["rank_correlation"] for d in draws))
            put(f"{mode}: {label}: attention_mass (max of draws)",
                max(d["steps"][i]["attention_mass"] for d in draws))

    # which row decides the word
    for layer in (-1, 0):
        rg = sanity.row_grounding(course, val_set, layer=layer)
        for kind in sanity.ROWS:
            put(f"rows, layer {layer % 2}: {kind}: attention mass", rg[kind]["attention_mass"])
            put(f"rows, layer {layer % 2}: {kind}: pointing game", rg[kind]["pointing_game"])

    # attention against gradients, and the curves
    ex = sanity.explanation_maps(course, explained_set, seed=0)
    maps = ex["maps"]
    for name in ("gradient x input", "integrated gradients", "input only",
                 "attention (predicting row)", "random"):
        put(f"rho(attention, {name})",
            sanity.rank_correlation(maps["attention"], maps[name]).nanmean())
    for finding in ("nodule", "effusion", "cardiomegaly", "pneumothorax"):
        keep = torch.tensor([f == finding for f in ex["finding_name"]])
        for name in ("gradient x input", "integrated gradients"):
            put(f"rho(attention, {name}), {finding}",
                sanity.rank_correlation(maps["attention"][keep], maps[name][keep]).nanmean())
    for name in ("gradient x input", "integrated gradients"):
        hit, _ = pointing_game_and_mass(maps[name], ex["lesion_mask"])
        put(f"pointing game of {name}", hit)
    curves = sanity.faithfulness(course, ex)
    for name, c in curves.items():
        put(f"deletion area: {name}", c["deletion_area"].mean())
        put(f"insertion area: {name}", c["insertion_area"].mean())
    for name in ("random", "input only", "gradient x input", "integrated gradients"):
        put(f"deletion area: attention - {name}",
            (curves["attention"]["deletion_area"] - curves[name]["deletion_area"]).mean())

    # attention trained onto the wrong region
    misled = trained(seed, sanity.wrong_region_dataset(train_set), 3)
    mm = ml.evaluate(misled, val_set)
    region = sanity.teacher_forced_grounding(misled, val_set, region_shift=8)
    md = sanity.deletion_test(misled, val_set)
    put("wrong region: finding accuracy", mm["finding_accuracy"])
    put("wrong region: pointing game vs the lesion", mm["pointing_game"])
    put("wrong region: pointing game chance", mm["pointing_game_chance"])
    put("wrong region: pointing game vs its trained region", region["pointing_game"])
    put("wrong region: finding accuracy, attended patches deleted", md["attended"])
    put("wrong region: finding accuracy, lesion deleted", md["lesion"])

    # label randomisation
    shuffled = trained(seed, sanity.shuffle_reports(train_set), 3)
    sm = ml.evaluate(shuffled, val_set)
    put("shuffled reports: finding accuracy", sm["finding_accuracy"])
    put("shuffled reports: pointing game", sm["pointing_game"])
    put("shuffled reports: attention mass", sm["attention_mass"])

    print(f"seed {seed}: {time.perf_counter() - t0:.0f} s wall, "
          f"{time.process_time() - c0:.0f} s CPU", flush=True)

print(f"\n{len(SEEDS)} training seeds {SEEDS}; total {time.perf_counter() - start:.0f} s wall")
print(f"{'quantity':<72} {'min':>6} {'median':>6} {'max':>6}   95 % bootstrap CI of the mean")
for key, values in rows.items():
    low, high = sanity.bootstrap_ci(values) if len(values) > 1 else (values[0], values[0])
    print(f"{key:<72} {min(values):6.3f} {statistics.median(values):6.3f} {max(values):6.3f}"
          f"   [{low:.3f}, {high:.3f}]")
