"""How much do the chapters' training results vary with the training seed?

    python benchmarks/bench_seed_spread.py [--seeds 0 1 2 ...] [--jobs 2]

The notebooks store one run (seed 0) and print only checks (`exact match >= 0.95: True`), so that
the same notebook passes on a GPU, whose training takes another floating-point path. A check is
only safe if it holds for other training runs too. This script repeats the training recipes of
chapters 4 and 5 for several seeds (model initialisation and batch order; the datasets
keep their seeds) and prints, per quantity, the check the chapter prints ("-": a quantity the
prose quotes, with no printed check), then the minimum, median and maximum over the seeds and the
seeds that would fail the check. The reference decoder of chapter 5 (no causal mask, no patch
positions, BCE at 0.1) is the reference's figure, measured in the same run. Above the table: the
model-free maps (uniform attention, the brightest patch, the softmax of the patch norms) scored
like the models' attention, the level that "far above chance" is read against.

Chapter 6's quantities are in `benchmarks/bench_explanations.py` (output stored in
`bench_explanations.txt`); the output of the run the book quotes for chapters 4-5 is stored in
`benchmarks/bench_seed_spread.txt`. `scripts/check_seed_robustness.py` runs the notebooks
themselves under shifted seeds; this script shows how wide the margins are.
"""

import argparse
import concurrent.futures
import multiprocessing
import statistics
import time

import torch

import medsight_lab as ml
from medsight_lab.baselines import baseline_scores

CH4_EPOCHS = 10         # chapter 4's runs (its EPOCHS): three runs fit its minute
ABNORMAL = ("nodule", "effusion", "cardiomegaly", "pneumothorax")

# (quantity, the chapter's printed check as (op, bound), or (None, None) when the chapter prints
# no check but its prose quotes the quantity)
CHECKS = [
    ("ch4 KL 1.0: exact match", (">=", 0.95)),
    ("ch4 KL 1.0: pointing game", (None, None)),
    ("ch4 KL 1.0: pointing game / chance", (">=", 2)),
    ("ch4 KL 1.0: attention mass", (">=", 0.9)),
    ("ch4 no grounding: exact match", (">=", 0.8)),
    ("ch4 no grounding: finding accuracy", (">=", 0.8)),
    ("ch4 no grounding: pointing game", (None, None)),
    ("ch4 no grounding: pointing game / chance", (">=", 2)),
    ("ch4 no grounding: attention mass", ("<", 0.9)),
    ("ch4 KL mass - no-grounding mass", (">=", 0.15)),
    ("ch4 (KL - no grounding): mass gap - pointing game gap", (None, None)),
    ("ch4 BCE 0.1: exact match", (">=", 0.95)),
    ("ch4 BCE 0.1: pointing game", (">=", 0.9)),
    ("ch4 BCE 0.1: attention mass", (">=", 0.8)),
    ("ch4 BCE 0.1 mass - no-grounding mass", (">", 0)),
    ("ch4 KL mass - BCE mass", (">", 0)),
    ("ch5 reference decoder: final training CE", ("<", 0.05)),
    ("ch5 reference decoder: teacher-forced token accuracy", (">=", 0.99)),
    ("ch5 reference decoder: exact match", ("<", 0.95)),
    ("ch5 reference decoder: finding accuracy", ("<", 0.7)),
    ("ch5 reference decoder: F1 of normal", (">=", 0.9)),
    ("ch5 reference decoder: best F1 of an abnormal finding", ("<", 0.9)),
    ("ch5 reference decoder: pointing game", (None, None)),
    ("ch5 reference decoder: attention mass", (None, None)),
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
    ("ch5 course model: attention mass", (">=", 0.9)),
    ("ch5 course model: AUROC", (">=", 0.95)),
    ("ch5 course model: share of reports that 4 beams leave unchanged", (">=", 1)),
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
        "ch4 KL 1.0: pointing game": kl["pointing_game"],
        "ch4 KL 1.0: pointing game / chance": ratio(kl),
        "ch4 KL 1.0: attention mass": kl["attention_mass"],
        "ch4 no grounding: exact match": free["exact_match"],
        "ch4 no grounding: finding accuracy": free["finding_accuracy"],
        "ch4 no grounding: pointing game": free["pointing_game"],
        "ch4 no grounding: pointing game / chance": ratio(free),
        "ch4 no grounding: attention mass": free["attention_mass"],
        "ch4 KL mass - no-grounding mass": kl["attention_mass"] - free["attention_mass"],
        "ch4 (KL - no grounding): mass gap - pointing game gap":
            (kl["attention_mass"] - free["attention_mass"])
            - (kl["pointing_game"] - free["pointing_game"]),
        "ch4 BCE 0.1: exact match": bce["exact_match"],
        "ch4 BCE 0.1: pointing game": bce["pointing_game"],
        "ch4 BCE 0.1: attention mass": bce["attention_mass"],
        "ch4 BCE 0.1 mass - no-grounding mass": bce["attention_mass"] - free["attention_mass"],
        "ch4 KL mass - BCE mass": kl["attention_mass"] - bce["attention_mass"],
    }


def chapter5(seed):
    """Chapter 5's runs: the reference decoder (15 epochs), the course model with and without its
    mask (8 epochs each), greedy against 4-beam search."""
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
    patches = ml.as_batch(val_set, next(course.parameters()).device)["patches"]
    greedy = [val_set.decode(ids) for ids in course.generate(patches).token_ids.cpu()]
    beam = [val_set.decode(ids) for ids in course.generate(patches, num_beams=4).token_ids.cpu()]
    return {
        "ch5 reference decoder: final training CE": leaky_history["ce"][-1],
        "ch5 reference decoder: teacher-forced token accuracy":
            leaky_m["teacher_forced_token_accuracy"],
        "ch5 reference decoder: exact match": leaky_m["exact_match"],
        "ch5 reference decoder: finding accuracy": leaky_m["finding_accuracy"],
        "ch5 reference decoder: F1 of normal": leaky_m["per_finding"]["normal"]["f1"],
        "ch5 reference decoder: best F1 of an abnormal finding":
            max(leaky_m["per_finding"][name]["f1"] for name in ABNORMAL),
        "ch5 reference decoder: pointing game": leaky_m["pointing_game"],
        "ch5 reference decoder: attention mass": leaky_m["attention_mass"],
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
        "ch5 course model: attention mass": course_m["attention_mass"],
        "ch5 course model: AUROC": course_m["auroc"],
        "ch5 course model: share of reports that 4 beams leave unchanged":
            sum(g == b for g, b in zip(greedy, beam)) / len(greedy),
    }


def one_seed(seed):
    torch.set_num_threads(1)   # as in the chapters; with --jobs 2 each worker has its own core
    start, cpu = time.perf_counter(), time.process_time()
    values = {**chapter4(seed), **chapter5(seed)}
    return seed, values, time.perf_counter() - start, time.process_time() - cpu


def passes(value, check):
    op, bound = check
    return {">=": value >= bound, ">": value > bound, "<": value < bound}[op]


def print_spread(results, checks, stored="the notebooks store seed 0", digits=3):
    """The table of every quantity over the seeds of `results` ({seed: {name: value}}): its
    check from `checks` ((name, (op, bound)) pairs; (None, None) for none), min, median, max and
    the seeds that fail, then every seed's values. Returns the number of failures. Shared by
    bench_shortcut_spread.py."""
    seeds = sorted(results)
    width = digits + 4
    print(f"\n{len(seeds)} training seeds: {seeds}; {stored}\n")
    print(f"{'quantity':<66} {'check':>{width}} {'min':>{width}} {'median':>{width}} "
          f"{'max':>{width}}  fails")
    failures = 0
    for name, check in checks:
        values = [results[s][name] for s in seeds]
        failing = [s for s in seeds if check[0] and not passes(results[s][name], check)]
        failures += len(failing)
        shown = f"{check[0]} {check[1]:.3g}" if check[0] else "-"
        print(f"{name:<66} {shown:>{width}} {min(values):{width}.{digits}f} "
              f"{statistics.median(values):{width}.{digits}f} {max(values):{width}.{digits}f}  "
              f"{failing if failing else ''}")
    print(f"\nchecks failed over all seeds: {failures}")
    print(f"\nper seed ({', '.join(map(str, seeds))}):")
    for name, _ in checks:
        print(f"{name:<66} " + " ".join(f"{results[s][name]:.{digits}f}" for s in seeds))
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--jobs", type=int, default=1, help="processes, one torch thread each")
    args = parser.parse_args()

    val = ml.as_batch(ml.SyntheticRadiologyDataset(400, seed=1), "cpu")
    print("model-free maps on the validation images with a lesion (no training, no seed):")
    for name, score in baseline_scores(val["patches"], val["lesion_mask"]).items():
        print(f"  {name:<24} pointing game {score['pointing_game']:.3f}  "
              f"attention mass {score['attention_mass']:.3f}")
    print(flush=True)

    results = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        for seed, values, seconds, cpu in pool.map(one_seed, args.seeds):
            results[seed] = values
            print(f"seed {seed}: {seconds:.0f} s wall, {cpu:.0f} s CPU", flush=True)

    print_spread(results, CHECKS)

if __name__ == "__main__":
    main()
