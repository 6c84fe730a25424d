"""How much do the chapters' training results vary with the training seed?

    python benchmarks/bench_seed_spread.py [--seeds 0 1 2 ...] [--jobs 2]

The notebooks store one run (seed 0) and print only checks (`exact match >= 0.95: True`), so that
the same notebook passes on a GPU, whose training takes another floating-point path. A check is
only safe if it holds for other training runs too. This script repeats the training recipes of
chapters 4 and 5 for several seeds (model initialisation and batch order; the datasets
keep their seeds) and prints, per quantity, the check the chapter prints, then the minimum, median
and maximum over the seeds and the seeds that would fail the check. The reference decoder of
chapter 5 (no causal mask, no patch positions, BCE at 0.1) is the reference's figure, measured in
the same run.

`scripts/check_seed_robustness.py` runs the notebooks themselves under shifted seeds; this script
shows how wide the margins are.
"""

import argparse
import concurrent.futures
import multiprocessing
import statistics
import time

import torch

import medsight_lab as ml
from medsight_lab import sanity

CH4_EPOCHS = 10         # chapter 4's runs (its EPOCHS): three runs fit its minute
RANDOM_DRAWS = 5        # chapter 5 averages model randomisation over this many random draws
ABNORMAL = ("nodule", "effusion", "cardiomegaly", "pneumothorax")

# (quantity, the chapter's printed check as (op, bound) or None when the chapter prints no check)
CHECKS = [
    ("ch4 KL 1.0: exact match", (">=", 0.95)),
    ("ch4 KL 1.0: pointing game / chance", (">=", 2)),
    ("ch4 KL 1.0: attention mass", (">=", 0.9)),
    ("ch4 no grounding: exact match", (">=", 0.8)),
    ("ch4 no grounding: finding accuracy", (">=", 0.8)),
    ("ch4 no grounding: pointing game / chance", (">=", 2)),
    ("ch4 no grounding: attention mass", ("<", 0.9)),
    ("ch4 KL mass - no-grounding mass", (">=", 0.15)),
    ("ch4 BCE 0.1: exact match", (">=", 0.95)),
    ("ch4 BCE 0.1: pointing game", (">=", 0.9)),
    ("ch4 BCE 0.1: attention mass", (">=", 0.8)),
    ("ch4 KL mass - BCE mass", (">", 0)),
    ("ch5 reference decoder: final training CE", ("<", 0.05)),
    ("ch5 reference decoder: teacher-forced token accuracy", (">=", 0.99)),
    ("ch5 reference decoder: exact match", ("<", 0.95)),
    ("ch5 reference decoder: finding accuracy", ("<", 0.7)),
    ("ch5 reference decoder: best F1 of an abnormal finding", ("<", 0.9)),
    ("ch5 reference decoder: exact match, 4 beams", ("<", 0.7)),
    ("ch5 reference decoder: |4 beams - greedy| exact match", ("<", 0.15)),
    ("ch5 course model, no mask: final training CE", ("<", 0.05)),
    ("ch5 course model, no mask: teacher-forced token accuracy", (">=", 0.99)),
    ("ch5 course model, no mask: exact match", (None, None)),
    ("ch5 course model, no mask: finding accuracy", (None, None)),
    ("ch5 course model exact match - no-mask exact match", (">", 0)),
    ("ch5 course model: final training CE", ("<", 0.05)),
    ("ch5 course model: teacher-forced token accuracy", (">=", 0.99)),
    ("ch5 course model: exact match", (">=", 0.95)),
    ("ch5 course model: finding accuracy", (">=", 0.95)),
    ("ch5 course model: lowest F1 of a finding", (">=", 0.9)),
    ("ch5 course model: pointing game", (">=", 0.95)),
    ("ch5 course model: AUROC", (">=", 0.95)),
    ("ch5 top layer randomised: pointing game / chance, mean of draws", (">=", 2)),
    ("ch5 both layers randomised: pointing game / chance, mean of draws", (">=", 2)),
    ("ch5 randomised: pointing game / chance, lowest single draw", (None, None)),
    ("ch5 randomised: attention mass, highest single draw", ("<", 0.5)),
    ("ch5 top layer randomised: finding accuracy, mean of draws", (None, None)),
    ("ch5 both layers randomised: finding accuracy, mean of draws", ("<", 0.4)),
    ("ch5 shuffled reports: finding accuracy", ("<", 0.4)),
    ("ch5 shuffled reports: pointing game", (">=", 0.95)),
    ("ch5 shuffled reports: attention mass", (">=", 0.9)),
    ("ch5 deletion: finding accuracy, images unchanged", (">=", 0.95)),
    ("ch5 deletion: finding accuracy, attended patches deleted", ("<", 0.2)),
    ("ch5 deletion: finding accuracy, random patches deleted", (">=", 0.95)),
    ("ch5 deletion: attended patches inside the lesion", (">=", 0.95)),
    ("ch5 wrong region: finding accuracy", (">=", 0.95)),
    ("ch5 wrong region: pointing game / chance", ("<", 1)),
    ("ch5 wrong region: pointing game on the trained region", (">=", 0.95)),
    ("ch5 wrong region: finding accuracy, attended patches deleted", (">=", 0.95)),
    ("ch5 wrong region: finding accuracy, lesion deleted", ("<", 0.2)),
]


def chapter4(seed):
    """Chapter 4's three runs of CH4_EPOCHS epochs: KL at 1.0, no grounding loss, BCE at 0.1."""
    train_set = ml.SyntheticRadiologyDataset(1600, seed=0)
    val_set = ml.SyntheticRadiologyDataset(400, seed=1)
    scores = {}
    for name, kwargs in (("KL", {}), ("none", {"lambda_ground": 0.0}),
                         ("BCE", {"grounding": "bce", "lambda_ground": 0.1})):
        ml.set_seed(seed)
        model = ml.default_model(train_set)
        ml.train(model, train_set, epochs=CH4_EPOCHS, seed=seed, progress=False, **kwargs)
        scores[name] = ml.evaluate(model, val_set)
    kl, free, bce = scores["KL"], scores["none"], scores["BCE"]
    ratio = lambda m: m["pointing_game"] / m["pointing_game_chance"]  # noqa: E731
    return {
        "ch4 KL 1.0: exact match": kl["exact_match"],
        "ch4 KL 1.0: pointing game / chance": ratio(kl),
        "ch4 KL 1.0: attention mass": kl["attention_mass"],
        "ch4 no grounding: exact match": free["exact_match"],
        "ch4 no grounding: finding accuracy": free["finding_accuracy"],
        "ch4 no grounding: pointing game / chance": ratio(free),
        "ch4 no grounding: attention mass": free["attention_mass"],
        "ch4 KL mass - no-grounding mass": kl["attention_mass"] - free["attention_mass"],
        "ch4 BCE 0.1: exact match": bce["exact_match"],
        "ch4 BCE 0.1: pointing game": bce["pointing_game"],
        "ch4 BCE 0.1: attention mass": bce["attention_mass"],
        "ch4 KL mass - BCE mass": kl["attention_mass"] - bce["attention_mass"],
    }


def chapter5(seed):
    """Chapter 5's runs: the reference decoder, the course model with and without its mask
    (8 epochs), its sanity checks, and the models trained on shuffled reports and onto the wrong
    region (5 epochs each)."""
    train_set = ml.SyntheticRadiologyDataset(1600, seed=0)
    val_set = ml.SyntheticRadiologyDataset(400, seed=1)
    ml.set_seed(seed)
    leaky = ml.default_model(train_set, causal=False, patch_positions=False)
    leaky_history = ml.train(leaky, train_set, epochs=15, grounding="bce", lambda_ground=0.1,
                             seed=seed, progress=False)
    ml.set_seed(seed)
    no_mask = ml.default_model(train_set, causal=False)
    no_mask_history = ml.train(no_mask, train_set, epochs=8, seed=seed, progress=False)
    ml.set_seed(seed)
    course = ml.default_model(train_set)
    course_history = ml.train(course, train_set, epochs=8, seed=seed, progress=False)
    leaky_m, course_m = ml.evaluate(leaky, val_set), ml.evaluate(course, val_set)
    no_mask_m = ml.evaluate(no_mask, val_set)
    leaky_beam = ml.evaluate(leaky, val_set, num_beams=4)

    draws = [sanity.cascading_randomisation(course, val_set, seed=r) for r in range(RANDOM_DRAWS)]
    ratio = lambda step: [d[step]["pointing_game"] / d[step]["chance"] for d in draws]  # noqa: E731
    accuracy = lambda step: [d[step]["finding_accuracy"] for d in draws]  # noqa: E731
    deletion = sanity.deletion_test(course, val_set)

    ml.set_seed(seed)
    shuffled = ml.default_model(train_set)
    ml.train(shuffled, sanity.shuffle_reports(train_set), epochs=5, seed=seed, progress=False)
    shuffled_m = ml.evaluate(shuffled, val_set)

    ml.set_seed(seed)
    misled = ml.default_model(train_set)
    ml.train(misled, sanity.wrong_region_dataset(train_set), epochs=5, seed=seed, progress=False)
    misled_m = ml.evaluate(misled, val_set)
    misled_region = sanity.teacher_forced_grounding(misled, val_set, region_shift=8)
    misled_deletion = sanity.deletion_test(misled, val_set)
    return {
        "ch5 reference decoder: final training CE": leaky_history["ce"][-1],
        "ch5 reference decoder: teacher-forced token accuracy":
            leaky_m["teacher_forced_token_accuracy"],
        "ch5 reference decoder: exact match": leaky_m["exact_match"],
        "ch5 reference decoder: finding accuracy": leaky_m["finding_accuracy"],
        "ch5 reference decoder: best F1 of an abnormal finding":
            max(leaky_m["per_finding"][name]["f1"] for name in ABNORMAL),
        "ch5 reference decoder: exact match, 4 beams": leaky_beam["exact_match"],
        "ch5 reference decoder: |4 beams - greedy| exact match":
            abs(leaky_beam["exact_match"] - leaky_m["exact_match"]),
        "ch5 course model, no mask: final training CE": no_mask_history["ce"][-1],
        "ch5 course model, no mask: teacher-forced token accuracy":
            no_mask_m["teacher_forced_token_accuracy"],
        "ch5 course model, no mask: exact match": no_mask_m["exact_match"],
        "ch5 course model, no mask: finding accuracy": no_mask_m["finding_accuracy"],
        "ch5 course model exact match - no-mask exact match":
            course_m["exact_match"] - no_mask_m["exact_match"],
        "ch5 course model: final training CE": course_history["ce"][-1],
        "ch5 course model: teacher-forced token accuracy": course_m["teacher_forced_token_accuracy"],
        "ch5 course model: exact match": course_m["exact_match"],
        "ch5 course model: finding accuracy": course_m["finding_accuracy"],
        "ch5 course model: lowest F1 of a finding":
            min(v["f1"] for v in course_m["per_finding"].values()),
        "ch5 course model: pointing game": course_m["pointing_game"],
        "ch5 course model: AUROC": course_m["auroc"],
        "ch5 top layer randomised: pointing game / chance, mean of draws":
            statistics.mean(ratio(1)),
        "ch5 both layers randomised: pointing game / chance, mean of draws":
            statistics.mean(ratio(2)),
        "ch5 randomised: pointing game / chance, lowest single draw": min(ratio(1) + ratio(2)),
        "ch5 randomised: attention mass, highest single draw":
            max(d[step]["attention_mass"] for d in draws for step in (1, 2)),
        "ch5 top layer randomised: finding accuracy, mean of draws": statistics.mean(accuracy(1)),
        "ch5 both layers randomised: finding accuracy, mean of draws": statistics.mean(accuracy(2)),
        "ch5 shuffled reports: finding accuracy": shuffled_m["finding_accuracy"],
        "ch5 shuffled reports: pointing game": shuffled_m["pointing_game"],
        "ch5 shuffled reports: attention mass": shuffled_m["attention_mass"],
        "ch5 deletion: finding accuracy, images unchanged": deletion["original"],
        "ch5 deletion: finding accuracy, attended patches deleted": deletion["attended"],
        "ch5 deletion: finding accuracy, random patches deleted": deletion["random"],
        "ch5 deletion: attended patches inside the lesion": deletion["attended_in_lesion"],
        "ch5 wrong region: finding accuracy": misled_m["finding_accuracy"],
        "ch5 wrong region: pointing game / chance":
            misled_m["pointing_game"] / misled_m["pointing_game_chance"],
        "ch5 wrong region: pointing game on the trained region": misled_region["pointing_game"],
        "ch5 wrong region: finding accuracy, attended patches deleted":
            misled_deletion["attended"],
        "ch5 wrong region: finding accuracy, lesion deleted": misled_deletion["lesion"],
    }


def one_seed(seed):
    torch.set_num_threads(1)   # as in the chapters; with --jobs 2 each worker has its own core
    start = time.perf_counter()
    values = {**chapter4(seed), **chapter5(seed)}
    return seed, values, time.perf_counter() - start


def passes(value, check):
    op, bound = check
    return {">=": value >= bound, ">": value > bound, "<": value < bound}[op]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--jobs", type=int, default=1, help="processes, one torch thread each")
    args = parser.parse_args()

    results = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        for seed, values, seconds in pool.map(one_seed, args.seeds):
            results[seed] = values
            print(f"seed {seed}: {seconds:.0f} s", flush=True)

    seeds = sorted(results)
    print(f"\n{len(seeds)} training seeds: {seeds}; the notebooks store seed 0\n")
    print(f"{'quantity':<66} {'check':>7} {'min':>7} {'median':>7} {'max':>7}  fails")
    failures = 0
    for name, check in CHECKS:
        values = [results[s][name] for s in seeds]
        failing = [s for s in seeds if check[0] and not passes(results[s][name], check)]
        failures += len(failing)
        shown = f"{check[0]} {check[1]:g}" if check[0] else "-"
        print(f"{name:<66} {shown:>7} {min(values):7.3f} {statistics.median(values):7.3f} "
              f"{max(values):7.3f}  {failing if failing else ''}")
    print(f"\nchecks failed over all seeds: {failures}")


if __name__ == "__main__":
    main()
