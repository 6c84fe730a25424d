"""How long the course takes on this machine: each chapter, the nbval suite, the book build.

    python benchmarks/bench_course.py [--skip-nbval] [--skip-book] [--skip-reference] [--busy]
                                      [--chapters 04 05]

Targets (2-core machine): each chapter <= 60 s from a fresh kernel, with no cell silent for more
than 10 s, the whole nbval suite <= 5 min, the book build <= 5 min. `--busy` keeps a CPU-bound
process running on the other core meanwhile (issue 16's condition). Per chapter: wall seconds
(kernel start included), the kernel's CPU seconds (time.process_time: the figure that other load
does not inflate much), and the longest silent stretch: the longest time inside one cell without
anything new on the page, i.e. between the cell's start, each of its outputs (a printed line, a
figure, an update of ml.train's progress line) and its end, by the kernel's message timestamps.
Beside them, measured in the same run, the reference notebook's own pipeline (its dataset and its
15-epoch training loop), the one piece of work every chapter that trains is compared with.
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


class _TimedClient(NotebookClient):
    """Records, per cell, the kernel's timestamp of every message that changes what the page shows
    (the cell's start, each output or display update, its end)."""

    SHOWN = {"execute_input", "stream", "display_data", "update_display_data", "execute_result",
             "error"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stamps = {}

    def process_message(self, msg, cell, cell_index):
        kind = msg["msg_type"]
        if kind in self.SHOWN or (kind == "status"
                                  and msg["content"]["execution_state"] == "idle"):
            self.stamps.setdefault(cell_index, []).append(_stamp(msg["header"]["date"]))
        return super().process_message(msg, cell, cell_index)


def run_chapter(path):
    """(wall s, kernel CPU s, (index of the cell with the longest silent stretch, its s)) of a
    fresh-kernel run."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import time; print(time.process_time())"))
    client = _TimedClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    cpu = float(nb.cells.pop().outputs[0]["text"])
    client.stamps.pop(len(nb.cells), None)
    silent = (None, 0.0)
    for i, stamps in client.stamps.items():
        stamps = sorted(stamps)
        gap = max(((b - a).total_seconds() for a, b in zip(stamps, stamps[1:])), default=0.0)
        silent = max(silent, (i, gap), key=lambda x: x[1])
    return wall, cpu, silent


def _stamp(value):
    from datetime import datetime, timezone
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def busy_loop():
    while True:
        sum(i * i for i in range(10 ** 6))


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
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--busy", action="store_true", help="keep the other core busy")
    parser.add_argument("--chapters", nargs="*", help="chapter prefixes, e.g. 04 05 (all)")
    args = parser.parse_args()
    busy = None
    if args.busy:
        import multiprocessing
        busy = multiprocessing.get_context("spawn").Process(target=busy_loop, daemon=True)
        busy.start()

    if not args.skip_reference:
        print(f"reference notebook pipeline (dataset + 15 epochs, 1 thread): "
              f"{timed(reference_pipeline):6.1f} s\n")
    print(f"{'chapter (fresh kernel)':<28}{'wall s':>8}{'CPU s':>8}  longest silent stretch "
          f"targets: <= 60 s, silent <= 10 s{' (other core busy)' if busy else ''}")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if args.chapters and not path.name.startswith(tuple(args.chapters)):
            continue
        wall, cpu, (cell, silent) = run_chapter(path)
        print(f"{path.name:<28}{wall:>8.1f}{cpu:>8.1f}  cell {cell}: {silent:.1f} s", flush=True)
    if busy is not None:
        busy.terminate()

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
