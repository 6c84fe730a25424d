"""How hard the synthetic task is at each `lesion_scale`: what an instructor can expect when
making the data harder for an assignment (chapter 4's recipe, a few training seeds).

    python benchmarks/bench_difficulty.py [--scales 1 0.1 0.05 0.03 0.02] [--seeds 0 1 2]

`SyntheticRadiologyDataset(..., lesion_scale=s)` multiplies each lesion's brightening by `s`
against the same background noise. For every scale, with and without the grounding loss, the
course model is trained as in chapter 4 (1,600 images, seed 0; 15 epochs; `ml.train` defaults)
and scored on 400 held-out images (seed 1) of the same scale. Prints min / median / max over the
training seeds of finding accuracy (chance: the majority baseline) and attention mass (chance:
uniform attention). About 10 s per run on one CPU thread.
"""

import argparse
import statistics

import torch

import medsight_lab as ml
from medsight_lab.metrics import majority_baseline


def spread(values):
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.1, 0.05, 0.03, 0.02])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'lesion_scale':>12} | {'grounding':>9} | {'finding accuracy (chance)':>31} | "
          f"{'attention mass (chance)':>29}")
    print(f"{'':>12} | {'':>9} | {'min / median / max':>31} | {'min / median / max':>29}")
    for scale in args.scales:
        train_set = ml.SyntheticRadiologyDataset(1600, seed=0, lesion_scale=scale)
        val_set = ml.SyntheticRadiologyDataset(400, seed=1, lesion_scale=scale)
        chance_finding = majority_baseline(val_set)["finding_accuracy"]
        for lambda_ground in (1.0, 0.0):
            finding, mass, mass_chance = [], [], []
            for seed in args.seeds:
                ml.set_seed(seed)
                model = ml.default_model(train_set)
                ml.train(model, train_set, epochs=15, seed=seed, progress=False,
                         lambda_ground=lambda_ground)
                scores = ml.evaluate(model, val_set)
                finding.append(scores["finding_accuracy"])
                mass.append(scores["attention_mass"])
                mass_chance.append(scores["attention_mass_chance"])
            label = "KL 1.0" if lambda_ground else "none"
            print(f"{scale:>12g} | {label:>9} | {spread(finding):>22} ({chance_finding:.2f}) | "
                  f"{spread(mass):>22} ({statistics.mean(mass_chance):.2f})", flush=True)


if __name__ == "__main__":
    main()
