"""Quality and speed of `medsight_lab` beside the reference notebook, measured in one run.

    python benchmarks/bench_package.py [--threads N] [--images 1000]

1. Reference budget (2,000 samples, 1,600 for training, 15 epochs, batch 32), evaluated by
   free-running greedy generation on a held-out set made with a different seed: the reference as
   written, the reference with a causal mask added, and the package.
2. Training wall time of the package's `train` vs the reference's 15-epoch loop (ratio <= 1 wanted).
3. Reports with attention for N images: batched, cached `generate` vs a per-image greedy loop that
   re-runs the whole prefix at every step (>= 50x wanted), with peak memory.
"""

import argparse
import resource
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

import medsight_lab as ml
from medsight_lab import reference as ref


def reference_run(causal, seed=42):
    """The notebook's pipeline: global seeds, its dataset, its model, its loop."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    dataset = ref.SyntheticRadiologyDataset(n_samples=2000)
    train_set = Subset(dataset, range(1600))
    loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=ref.collate)
    model = ref.GroundedReportVLM(64, 64, 4, 2, dataset.vocab_size, dataset.max_len, causal=causal)
    start = time.perf_counter()
    ref.train(model, loader)
    return model, time.perf_counter() - start


def reference_quality(model, n=400, seed=1):
    """Free-running greedy generation on a held-out reference dataset (another global seed)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    held_out = ref.SyntheticRadiologyDataset(n_samples=n)
    exact = finding = 0
    for item in held_out:
        out = ref.greedy_generate(model, item["patches"])
        target = item["token_ids"][:len(out)]
        exact += len(out) <= len(item["token_ids"]) and torch.equal(out, target) \
            and out[-1].item() == 2
        words = " ".join(held_out.VOCAB[i] for i in out.tolist())
        finding += ml.label_report(words) == {item["finding_name"]}
    return {"exact_match": exact / n, "finding_accuracy": finding / n}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads for both sides (default: all cores)")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU\n")

    rows = []
    for name, causal in (("reference as written", False),
                         ("reference + causal mask only", True)):
        model, seconds = reference_run(causal)
        rows.append((name, seconds, reference_quality(model)))

    ml.set_seed(0)
    train_set = Subset(ml.SyntheticRadiologyDataset(2000, seed=0), range(1600))
    model = ml.default_model(train_set)
    start = time.perf_counter()
    ml.train(model, train_set, progress=False)
    seconds = time.perf_counter() - start
    ours = ml.evaluate(model, ml.SyntheticRadiologyDataset(400, seed=1))
    rows.append(("medsight_lab", seconds, ours))

    print("1. Free-running greedy quality on 400 held-out images (another seed)")
    print(f"{'':<30}{'train s':>9}{'exact match':>13}{'finding acc':>13}")
    for name, seconds, q in rows:
        print(f"{name:<30}{seconds:>9.1f}{q['exact_match']:>13.3f}{q['finding_accuracy']:>13.3f}")
    print(f"medsight_lab grounding on generated finding words: pointing game "
          f"{ours['pointing_game']:.3f} (chance {ours['pointing_game_chance']:.3f}), attention "
          f"mass in lesion {ours['attention_mass']:.3f} (chance "
          f"{ours['attention_mass_chance']:.3f}), AUROC {ours['auroc']:.3f}")
    print("targets: finding acc >= 0.995, exact match >= 0.99, pointing game >= 0.98, "
          "mass >= 0.9\n")

    print(f"2. Training wall time, medsight_lab / reference as written: "
          f"{rows[2][1] / rows[0][1]:.2f} (target <= 1.0)\n")

    images = ml.SyntheticRadiologyDataset(args.images, seed=2).patches
    model.eval()
    print(f"3. Reports with attention for {args.images} images (target: batched >= 50x faster)")
    print(f"{'threads':>9}{'per-image loop s':>18}{'batched s':>11}{'speed-up':>10}")
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        out = model.generate(images)
        batched = time.perf_counter() - start
        rss_batched = peak_rss_mb()
        start = time.perf_counter()
        for patches in images:
            ref.greedy_generate(model, patches)   # re-runs the whole prefix at every step
        loop = time.perf_counter() - start
        print(f"{threads:>9}{loop:>18.2f}{batched:>11.3f}{loop / batched:>9.0f}x")
    attn_mb = sum(a.numel() * a.element_size() for a in out.cross_attention) / 2**20
    print(f"attention returned: {attn_mb:.1f} MB; process peak RSS {rss_batched:.0f} MB "
          f"(+{rss_batched - rss_before:.0f} MB during batched generation)")

if __name__ == "__main__":
    main()
