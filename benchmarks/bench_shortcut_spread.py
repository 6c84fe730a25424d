"""How much do chapter 8's checked quantities vary with the training seed?

    nice -n 5 python benchmarks/bench_shortcut_spread.py [--seeds 0 1 ... 9] [--load runs_*.json]

Chapter 8 stores one training run per model (seed 0) and prints checks (`... >= 0.2: True`), so
that the same notebook passes for another training run (another seed, a GPU's floating-point
path). This script trains the chapter's two models (`shortcuts.ARMS["no grounding"]` and the
course default, `"grounding (row holds word)"`) with the chapter's recipe and data for each
training seed and prints, per quantity the chapter checks, its check, the minimum, median and
maximum over the seeds and the seeds that would fail it, as `bench_seed_spread.py` does for
chapters 4 and 5. Quantities without a check ("-") are the ones the chapter's text describes.

`--load` reuses runs that `bench_shortcuts.py --save` stored (the same recipe, data and seeds:
on CPU a training run is repeatable), and trains only the seeds missing from them.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_seed_spread import print_spread  # noqa: E402
from bench_shortcuts import run_one  # noqa: E402

import medsight_lab as ml  # noqa: E402
from medsight_lab import shortcuts as sc  # noqa: E402

MODELS = {"no grounding": "no grounding", "grounding": "grounding (row holds word)"}

UNIFORM = 1 / 64        # uniform attention's mass on the mark's one patch of the 8 x 8 grid

# (quantity, the chapter's printed check as (op, bound), or (None, None): described, not checked).
# Each lower bound is at most two thirds of the smallest value measured over training seeds 0-9,
# rounded down to 0.05 (the first-layer bound: twice uniform attention); the upper bound is
# uniform attention, far above the largest value measured.
CHECKS = [
    ("no grounding: F1 drop kept -> inverted", (">=", 0.15)),
    ("grounding: F1 drop kept -> inverted", (">=", 0.45)),
    ("no grounding: F1 kept", (None, None)),
    ("grounding: F1 kept", (None, None)),
    ("no grounding: F1 inverted", (None, None)),
    ("grounding: F1 inverted", (None, None)),
    ("no grounding: marked films whose call flips without the mark", (">", 0.1)),
    ("grounding: marked films whose call flips without the mark", (">", 0.4)),
    ("grounding: right, precise calls that vanish without the mark", (">", 0.3)),
    ("grounding: number of such calls", (None, None)),
    ("no grounding: right, precise calls that vanish without the mark", (None, None)),
    ("no grounding: attention on the mark, last layer, words' rows", (None, None)),
    ("grounding: attention on the mark, last layer, words' rows", ("<", UNIFORM)),
    ("no grounding: attention on the mark, first layer, rows before", (None, None)),
    ("grounding: attention on the mark, first layer, rows before", (">", 2 * UNIFORM)),
]


def quantities(runs):
    """runs {model: run of bench_shortcuts.run_one} -> {quantity: value} for CHECKS."""
    out = {}
    for model, run in runs.items():
        kept, inverted, decides = run["kept"], run["inverted"], run["mark decides"]
        out[f"{model}: F1 drop kept -> inverted"] = kept["f1"] - inverted["f1"]
        out[f"{model}: F1 kept"] = kept["f1"]
        out[f"{model}: F1 inverted"] = inverted["f1"]
        out[f"{model}: marked films whose call flips without the mark"] = decides["flipped"]
        out[f"{model}: right, precise calls that vanish without the mark"] = \
            decides["looks_right_but_mark"]
        out[f"{model}: number of such calls"] = decides["n_looks_right_but_mark"]
        out[f"{model}: attention on the mark, last layer, words' rows"] = kept["mark_words"][-1]
        out[f"{model}: attention on the mark, first layer, rows before"] = kept["mark_before"][0]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--load", nargs="+", default=[],
                        help="runs stored by bench_shortcuts.py --save (reused where present)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    stored = {}
    for path in args.load:
        for arm, runs in json.loads(open(path).read()).items():
            for run in runs:
                stored[arm, run["seed"]] = run
    recipe = sc.SHORTCUT_RECIPE
    train_set = ml.RenderedChestXrayDataset(recipe["n_train"], seed=0, shortcut=sc.SHORTCUT)
    test_sets = sc.test_sets(500, seed=1000)
    assert UNIFORM == 1 / train_set.n_patches, "UNIFORM assumes the 8 x 8 patch grid"
    print(f"recipe {recipe}; models {MODELS}")

    results = {}
    for seed in args.seeds:
        start = time.perf_counter()
        runs, reused = {}, []
        for model, arm in MODELS.items():
            if (arm, seed) in stored:
                runs[model] = stored[arm, seed]
                reused.append(model)
            else:
                runs[model] = run_one(arm, seed, train_set, test_sets)
        results[seed] = quantities(runs)
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s"
              + (f" (stored runs reused: {', '.join(reused)})" if reused else ""), flush=True)

    print_spread(results, CHECKS, stored="the notebook stores seed 0", digits=4)

if __name__ == "__main__":
    main()
