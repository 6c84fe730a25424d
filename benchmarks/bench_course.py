"""How long the course takes on this machine: each chapter, the nbval suite, the book build.

    python benchmarks/bench_course.py [--skip-nbval] [--skip-book]

Targets (2-core machine): each chapter <= 60 s from a fresh kernel, the whole nbval suite <= 5 min,
the book build <= 5 min. Beside them, measured in the same run, the reference notebook's own
pipeline (its dataset and its 15-epoch training loop), the one piece of work every chapter that
trains is compared with.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import numpy as np
import torch
from nbclient import NotebookClient
from torch.utils.data import DataLoader, Subset

from medsight_lab import reference as ref

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_chapter(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()


def reference_pipeline():
    torch.set_num_threads(1)
    np.random.seed(42)
    torch.manual_seed(42)
    dataset = ref.SyntheticRadiologyDataset(n_samples=2000)
    loader = DataLoader(Subset(dataset, range(1600)), batch_size=32, shuffle=True,
                        collate_fn=ref.collate)
    ref.train(ref.GroundedReportVLM(64, 64, 4, 2, dataset.vocab_size, dataset.max_len), loader)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-nbval", action="store_true")
    parser.add_argument("--skip-book", action="store_true")
    args = parser.parse_args()

    print(f"reference notebook pipeline (dataset + 15 epochs, 1 thread): "
          f"{timed(reference_pipeline):6.1f} s\n")
    print(f"{'chapter (fresh kernel)':<32}{'seconds':>8}   target <= 60")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        print(f"{path.name:<32}{timed(lambda: run_chapter(path)):>8.1f}", flush=True)

    if not args.skip_nbval:
        command = [sys.executable, "-m", "pytest", "-q", "--nbval", "notebooks/",
                   "--nbval-sanitize-with", "notebooks/nbval_sanitize.cfg"]
        seconds = timed(lambda: subprocess.run(command, cwd=ROOT, check=True,
                                               capture_output=True))
        print(f"\nnbval suite, every chapter:      {seconds:6.1f} s   target <= 300")

    if not args.skip_book:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("_config.yml", "_toc.yml"):
                shutil.copy2(ROOT / name, tmp)
            for folder in ("book", "notebooks"):
                shutil.copytree(ROOT / folder, Path(tmp) / folder)
            command = [str(Path(sys.executable).with_name("jupyter-book")), "build", tmp,
                       "-W", "-n", "--keep-going"]
            seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True))
        print(f"book build (-W -n, from scratch): {seconds:6.1f} s   target <= 300")


if __name__ == "__main__":
    main()
