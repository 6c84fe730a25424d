"""Chapter 8's table: does grounding supervision keep the model off a shortcut?

    nice -n 5 python benchmarks/bench_shortcuts.py [--seeds 0 1 2 3 4] [--arms ...] [--n-test 500]
    # or one process per arm, then the table of all of them:
    ... --arms "no grounding" --save runs_a.json;  ... --load runs_*.json
    # the stored table (benchmarks/bench_shortcuts.txt) from the stored runs, seeds 0-4:
    ... --load benchmarks/bench_shortcuts_runs.json

With --load, the runs of all files are merged by arm and seed and the table shows the --seeds
asked for (default 0-4; the stored runs hold seeds 5-9 of the chapter's two arms too).

Trains the course model with chapter 8's recipe (`shortcuts.SHORTCUT_RECIPE`) on a
RenderedChestXrayDataset of seed 0 whose mark travels with pneumothorax (`shortcuts.SHORTCUT`),
once per training seed and supervision arm (`shortcuts.ARMS`), and evaluates every model on the
kept / removed / inverted test sets (seed 1000, the same films, only the marks differ). Prints per
arm and test set the mean over seeds of the pneumothorax F1, hallucination and omission rates,
with percentile-bootstrap 95 % intervals over the seeds, the drop of F1 from kept to inverted, the
attention on the mark (last and first layer, words and the rows before them), and the share of
marked films whose call changes when the mark is taken away. Beside them: chance (a reader who
calls pneumothorax at its prevalence, whatever the image) and a reader of the mark alone (calls
it exactly when the mark is there: the pure shortcut). Then the bootstrap interval of the
difference in F1 drop between each grounded arm and the ungrounded one.

Timing: training CPU time per run (`time.process_time`, one thread; load-independent, unlike
wall time on the shared machine).
"""

import argparse
import json
import time

import numpy as np
import torch

import medsight_lab as ml
from medsight_lab import shortcuts as sc

SETS = ("kept", "removed", "inverted")


def fmt(ci):
    mean, lo, hi = ci
    return f"{mean:5.2f} [{lo:4.2f}, {hi:4.2f}]"


def reference_readers(test_sets):
    """Chance and the mark-only reader on each test set (no training)."""
    rows = {}
    for name, ds in test_sets.items():
        has = sc.has_finding(ds)
        prevalence = has.mean()
        # chance: expected scores of calling at the prevalence, independently of the film
        tp, fp, fn = prevalence * prevalence, prevalence * (1 - prevalence), prevalence * (1 - prevalence)
        chance = {"f1": 2 * tp / (2 * tp + fp + fn), "hallucination_rate": 1 - prevalence,
                  "omission_rate": 1 - prevalence}
        rows[name] = {"chance": chance, "mark only": sc.call_scores(ds.has_mark, has)}
    return rows


def run_one(arm, seed, train_set, test_sets):
    """One training run of `arm` with training seed `seed`, scored on the three test sets, and the
    same kept films without the mark. A dict that JSON can store (the seed and CPU times in it)."""
    start = time.process_time()
    model = sc.train_arm(train_set, seed, progress=False, **sc.ARMS[arm])
    cpu = time.process_time() - start
    run = {name: sc.shortcut_scores(model, ds) for name, ds in test_sets.items()}
    for scores in run.values():
        scores.pop("read")
    run["mark decides"] = sc.mark_decides(model, test_sets["kept"])
    run.update(seed=seed, cpu=cpu, cpu_eval=time.process_time() - start - cpu)
    return run


def describe(arm, run):
    decides = run["mark decides"]
    return (f"  {arm} seed {run['seed']}: {run['cpu']:.0f} s CPU training, {run['cpu_eval']:.0f} s "
            f"CPU evaluation; F1 kept {run['kept']['f1']:.3f} "
            f"inverted {run['inverted']['f1']:.3f}; flipped {decides['flipped']:.2f}; "
            f"looks right but mark {decides['n_looks_right_but_mark']}/{decides['n_candidates']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(sc.ARMS))
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--save", help="write the runs to this JSON file")
    parser.add_argument("--load", nargs="+", help="print the table of runs saved by --save")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = sc.SHORTCUT_RECIPE
    train_set = ml.RenderedChestXrayDataset(recipe["n_train"], seed=0, shortcut=sc.SHORTCUT)
    test_sets = sc.test_sets(args.n_test, seed=1000)
    print(f"recipe {recipe}; training correlation {sc.mark_correlation(train_set)}")
    for name, ds in test_sets.items():
        print(f"  test set {name:8s} {sc.mark_correlation(ds)}")
    results = {}
    for path in args.load or []:
        for arm, runs in json.loads(open(path).read()).items():
            have = {r["seed"] for r in results.get(arm, [])}
            results.setdefault(arm, []).extend(r for r in runs if r["seed"] not in have)
    if args.load:                  # the seeds asked for, in seed order; the arms in ARMS's order
        order = [arm for arm in sc.ARMS if arm in results] + \
            [arm for arm in results if arm not in sc.ARMS]
        results = {arm: sorted((r for r in results[arm] if r["seed"] in args.seeds),
                               key=lambda r: r["seed"]) for arm in order}
        results = {arm: runs for arm, runs in results.items() if runs}
        print("runs loaded:")
        for arm, runs in results.items():
            for run in runs:
                print(describe(arm, run))
    for arm in [] if args.load else args.arms:
        results[arm] = []
        for seed in args.seeds:
            run = run_one(arm, seed, train_set, test_sets)
            results[arm].append(run)
            print(describe(arm, run), flush=True)
            if args.save:                 # after every run: a stopped sweep keeps what it measured
                with open(args.save, "w") as f:
                    json.dump(results, f)
    table(results, test_sets, train_set)


def table(results, test_sets, train_set):
    seeds = sorted({r["seed"] for runs in results.values() for r in runs})
    counts = sorted({len(runs) for runs in results.values()})
    print(f"\npneumothorax, mean over the training seeds {seeds} ({' or '.join(map(str, counts))} "
          f"per arm) [percentile-bootstrap 95 % interval over the seeds]")
    print(f"{'arm':34s} {'set':9s} {'F1':>19s} {'hallucination':>19s} {'omission':>19s} "
          f"{'mark: words L2':>14s} {'before L2':>10s} {'before L1':>10s}")
    for arm, runs in results.items():
        for name in SETS:
            col = lambda key: sc.bootstrap_ci([r[name][key] for r in runs])  # noqa: E731
            layer = lambda key, i: np.nanmean([r[name][key][i] for r in runs])  # noqa: E731
            print(f"{arm:34s} {name:9s} {fmt(col('f1'))} {fmt(col('hallucination_rate'))} "
                  f"{fmt(col('omission_rate'))} {layer('mark_words', -1):14.3f} "
                  f"{layer('mark_before', -1):10.3f} {layer('mark_before', 0):10.3f}")
    print("\nreaders without a model (the same test sets):")
    for name, readers in reference_readers(test_sets).items():
        for reader, s in readers.items():
            print(f"  {reader:10s} {name:9s} F1 {s['f1']:.2f} hallucination "
                  f"{s['hallucination_rate']:.2f} omission {s['omission_rate']:.2f}")
    print(f"  uniform attention on a one-patch mark: {1 / train_set.n_patches:.3f}")

    print("\nF1 drop kept -> inverted [bootstrap 95 %]; marked films whose call flips without the "
          "mark; 'looks right, reads the mark' (kept set)")
    drops = {arm: [r["kept"]["f1"] - r["inverted"]["f1"] for r in runs]
             for arm, runs in results.items()}
    for arm, runs in results.items():
        flips = sc.bootstrap_ci([r["mark decides"]["flipped"] for r in runs])
        looks = [r["mark decides"]["n_looks_right_but_mark"] for r in runs]
        cands = [r["mark decides"]["n_candidates"] for r in runs]
        print(f"  {arm:34s} drop {fmt(sc.bootstrap_ci(drops[arm]))}  flipped {fmt(flips)}  "
              f"looks right but mark {sum(looks)}/{sum(cands)}")
    if "no grounding" in drops:
        print("\ndifference in drop, arm minus no grounding [bootstrap 95 %]:")
        for arm in drops:
            if arm != "no grounding":
                print(f"  {arm:34s} {fmt(sc.bootstrap_diff(drops[arm], drops['no grounding']))}")
    chance = reference_readers(test_sets)["kept"]["chance"]["f1"]
    within = [arm for arm in drops if arm != "no grounding" and np.mean(drops[arm]) <= 0.05]
    calling = [arm for arm in within
               if np.mean([r["kept"]["f1"] for r in results[arm]]) > chance]
    print(f"\nissue 13's goal (grounded arm keeps F1 within 0.05 on the inverted set while the "
          f"ungrounded loses >= 0.2): ungrounded drop "
          f"{np.mean(drops.get('no grounding', [float('nan')])):.2f}; grounded arms whose mean "
          f"drop "
          f"is within 0.05: {within or 'none'}; of those, arms whose kept F1 is above the chance "
          f"reader's {chance:.2f} (that still call pneumothorax where the mark agrees): "
          f"{calling or 'none'}")

if __name__ == "__main__":
    main()
