"""How long grading a class takes: 60 submissions of the loss chapter, a third right, a third
wrong, a third as released (stubs), graded by the documented command.

    python benchmarks/bench_grading.py [--submissions 60]

Target (issue 4): at most 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from medsight_lab.grading.release import release

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "03_loss.ipynb"
WRONG_ENTROPY = ("def attention_entropy(attn_weights):\n"
                 "    p = attn_weights[-1].mean(1)\n"
                 "    return (p * (p + 1e-8).log()).sum(-1).mean()   # wrong sign\n")


def write_class(folder: Path, n: int):
    stub = release(ROOT / "notebooks", folder.parent / "student", build_html=False)
    variants = [nbformat.read(CHAPTER, as_version=4),
                nbformat.read(stub / "notebooks" / CHAPTER.name, as_version=4),
                nbformat.read(CHAPTER, as_version=4)]
    for cell in variants[2].cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "attention_entropy":
            cell.source = WRONG_ENTROPY
    for i in range(n):
        nbformat.write(variants[i % 3], folder / f"student_{i:02d}.ipynb")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=60)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        submissions, out = Path(tmp) / "submissions", Path(tmp) / "grades"
        submissions.mkdir()
        write_class(submissions, args.submissions)
        command = [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin",
                   "--grade", str(submissions), "--grade-output", str(out), "-q"]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    total = sum(int(r["points"]) for r in rows)
    print(f"graded {args.submissions} submissions of {CHAPTER.stem} ({len(rows)} gradebook rows, "
          f"{total} points awarded) in {seconds:.0f} s: {seconds / args.submissions:.1f} s per "
          f"submission (target: 600 s in all)")


if __name__ == "__main__":
    main()
