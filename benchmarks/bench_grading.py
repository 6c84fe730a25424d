"""Grading time per submission, chapter by chapter: for every chapter with exercises, N
submissions made from the student edition (half with every answer filled in from the instructor's
solutions, half left as released), graded by the documented grading command, one run per chapter.
Checks that every right submission earns full marks and every stub zero, and prints the seconds per
submission of each chapter.

    python benchmarks/bench_grading.py [--submissions 4] [--chapters 03_loss 06_testing_explanations]

Serial grading (no -n): a lab server's speed-up with pytest-xdist is what bench_grading_class.py
measures. Exit status 1 if any score is wrong.
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

from bench_grading_class import solved
from medsight_lab.grading import EXERCISES
from medsight_lab.grading.release import release

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = list(dict.fromkeys(ex.chapter for ex in EXERCISES.values()))


def grade_chapter(chapter, student_edition, n, tmp):
    """(seconds, problems) for grading n submissions of `chapter`."""
    student = nbformat.read(student_edition / "notebooks" / f"{chapter}.ipynb", as_version=4)
    instructor = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    full = {e: ex.points for e, ex in EXERCISES.items() if ex.chapter == chapter}
    submissions, out = tmp / chapter / "submissions", tmp / chapter / "grades"
    submissions.mkdir(parents=True)
    expected = {}
    for i in range(n):
        right = i % 2 == 0
        name = f"{'right' if right else 'stub'}_{i:02d}.ipynb"
        nbformat.write(solved(student, instructor) if right else student, submissions / name)
        expected[name] = full if right else dict.fromkeys(full, 0)
    command = [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin",
               "--grade", str(submissions), "--grade-output", str(out), "-q"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    gradebook = out / "gradebook.csv"
    if not gradebook.exists():
        return seconds, ["no gradebook: " + (done.stdout + done.stderr)[-1000:]]
    with open(gradebook, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    got = {}
    for row in rows:
        got.setdefault(row["submission"], {})[row["exercise"]] = int(row["points"])
    problems = [f"{name}: {got.get(name)} != expected {points}"
                for name, points in expected.items() if got.get(name) != points]
    return seconds, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=4, help="per chapter (default 4)")
    parser.add_argument("--chapters", nargs="+", default=CHAPTERS, choices=CHAPTERS)
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        student_edition = release(ROOT / "notebooks", Path(tmp) / "student", build_html=False)
        print(f"{'chapter':<26} {'exercises':>9} {'submissions':>11} {'seconds':>8} "
              f"{'per submission':>14}  scores")
        for chapter in args.chapters:
            seconds, problems = grade_chapter(chapter, student_edition, args.submissions,
                                              Path(tmp))
            failed |= bool(problems)
            exercises = sum(ex.chapter == chapter for ex in EXERCISES.values())
            print(f"{chapter:<26} {exercises:>9} {args.submissions:>11} {seconds:8.1f} "
                  f"{seconds / args.submissions:13.1f}s  "
                  f"{'all right' if not problems else '; '.join(problems)[:300]}", flush=True)
    print("(each chapter's time includes one start of the grading command, a few seconds)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
