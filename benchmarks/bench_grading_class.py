"""Grading a class at scale: N chapter-3 submissions made from the student edition, 10 % of them
broken (a crash, an infinite loop, a syntax error, a garbage file, a memory hog, a deleted answer
cell), graded by the documented grading command serially and with pytest-xdist (`-n 2`).
Checks that every submission and exercise has its row and every score is the one expected, that
both runs give the same gradebook, and prints both times and the speed-up.

    python benchmarks/bench_grading_class.py [--submissions 200] [--workers 2]
        [--grade-timeout S] [--hog-mib 1024] [--broken-every 10]

Issue 15's goal: >= 1.7x with -n 2, 200 submissions in <= 5 min on this 2-core machine. Exit
status 1 if any check fails. Only the command line is used, so the grader's insides may change.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from medsight_lab.grading import EXERCISES
from medsight_lab.grading.release import release

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "03_loss"
EXERCISE_IDS = [e for e, ex in EXERCISES.items() if ex.chapter == CHAPTER]
FULL = {e: EXERCISES[e].points for e in EXERCISE_IDS}
# Every broken answer and the wrong one are in compute_loss, which no other exercise calls, so
# each costs exactly compute_loss's points, whatever the grader does about dependent exercises.
TARGET = "compute_loss"
BROKEN_KINDS = ["crash", "infinite loop", "syntax error", "garbage file", "memory hog",
                "deleted answer cell"]
WRONG_TOTAL = ("    ce = shifted_cross_entropy(logits, token_ids)\n"
               "    ground = grounding_loss(attn_weights, finding_masks)\n"
               "    entropy = attention_entropy(attn_weights)\n"
               "    return ce + ground + entropy, ce, ground, entropy   # lambdas forgotten\n")


def answers(nb):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}


def solved(student, instructor):
    """The student edition with every answer cell filled with the instructor's solution."""
    nb = nbformat.from_dict(student)
    solutions = answers(instructor)
    for grade_id, cell in answers(nb).items():
        cell.source = solutions[grade_id].source
    return nb


def body_of(source, body):
    """`source` (a def with a docstring) with everything after the docstring replaced."""
    head, quote, rest = source.partition('"""')
    doc, quote2, _ = rest.partition('"""')
    return head + quote + doc + quote2 + "\n" + body


def make_submission(kind, student, instructor, hog_mib):
    """(notebook or raw bytes, expected {exercise: points} or None for "no exercise rows")."""
    nb = solved(student, instructor)
    expected = dict(FULL)
    target = answers(nb)[TARGET]
    if kind == "correct":
        return nb, expected
    if kind == "stub":
        return nbformat.from_dict(student), {e: 0 for e in EXERCISE_IDS}
    expected[TARGET] = 0
    if kind == "wrong":
        target.source = body_of(target.source, WRONG_TOTAL)
    elif kind == "crash":
        target.source = body_of(target.source, "    raise RuntimeError('boom')\n")
    elif kind == "infinite loop":
        target.source = body_of(target.source, "    while True:\n        pass\n")
    elif kind == "syntax error":
        target.source = target.source.replace("return ce +", "return ce +* (", 1)
    elif kind == "memory hog":    # holds hog_mib of memory, and never defines the function
        target.source = (f"hog = b'x' * ({hog_mib} * 2 ** 20)\n"
                         "# the answer was lost while the memory filled up\n")
    elif kind == "deleted answer cell":
        nb.cells.remove(target)
    elif kind == "garbage file":
        return random.Random(0).randbytes(4096), None
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return nb, expected


def write_class(folder, n, hog_mib, broken_every=10):
    """n submissions: one in `broken_every` broken (the kinds in turn), the others correct, wrong
    or left as released, in turn. Returns {file name: (kind, expected)}."""
    student_edition = release(ROOT / "notebooks", folder.parent / "student", build_html=False)
    student = nbformat.read(student_edition / "notebooks" / f"{CHAPTER}.ipynb", as_version=4)
    instructor = nbformat.read(ROOT / "notebooks" / f"{CHAPTER}.ipynb", as_version=4)
    plan = {}
    for i in range(n):
        kind = (BROKEN_KINDS[(i // broken_every) % len(BROKEN_KINDS)]
                if i % broken_every == broken_every - 1 else ["correct", "wrong", "stub"][i % 3])
        content, expected = make_submission(kind, student, instructor, hog_mib)
        name = f"student_{i:03d}.ipynb"
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            nbformat.write(content, folder / name)
        plan[name] = (kind, expected)
    return plan


def grade(submissions, out, workers, grade_timeout):
    command = [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin",
               "--grade", str(submissions), "--grade-output", str(out), "-q"]
    if grade_timeout:
        command += ["--grade-timeout", str(grade_timeout)]
    if workers:
        command += ["-n", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    gradebook = out / "gradebook.csv"
    if not gradebook.exists():
        return seconds, None, done.stdout[-2000:] + done.stderr[-2000:]
    with open(gradebook, newline="", encoding="utf-8") as f:
        return seconds, list(csv.DictReader(f)), ""


def problems_in(rows, plan):
    """Every way the gradebook differs from the plan, in words (empty: all right)."""
    if rows is None:
        return ["no gradebook was written"]
    problems, by_submission = [], {}
    for row in rows:
        by_submission.setdefault(row["submission"], []).append(row)
    for name, (kind, expected) in sorted(plan.items()):
        got = by_submission.pop(name, [])
        if not got:
            problems.append(f"{name} ({kind}): no row")
        elif expected is None:                                  # unusable: zero everywhere
            if any(float(r["points"]) for r in got):
                problems.append(f"{name} ({kind}): points awarded to a garbage file")
        else:
            points = {r["exercise"]: float(r["points"]) for r in got}
            if points != expected:
                verdicts = {r["exercise"]: r["verdict"][:90] for r in got
                            if float(r["points"]) != expected.get(r["exercise"])}
                problems.append(f"{name} ({kind}): {points} != expected {expected} {verdicts}")
    problems += [f"{name}: a row for a submission that was not handed in"
                 for name in by_submission]
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (-n)")
    parser.add_argument("--grade-timeout", type=float, default=None,
                        help="per-cell limit passed to the grading command (default: its own)")
    parser.add_argument("--hog-mib", type=int, default=1024,
                        help="memory the memory-hog submissions take (MiB)")
    parser.add_argument("--broken-every", type=int, default=10,
                        help="one submission in this many is broken (default 10: 10 %%; a "
                             "small trial run with 2 shows every kind)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        submissions = Path(tmp) / "submissions"
        submissions.mkdir()
        plan = write_class(submissions, args.submissions, args.hog_mib, args.broken_every)
        broken = sum(kind in BROKEN_KINDS for kind, _ in plan.values())
        kinds = sorted({kind for kind, _ in plan.values() if kind in BROKEN_KINDS})
        print(f"{args.submissions} submissions of {CHAPTER} ({broken} broken: "
              f"{', '.join(kinds)})", flush=True)
        runs, failed = {}, False
        for label, workers in (("serial", 0), (f"-n {args.workers}", args.workers)):
            seconds, rows, log = grade(submissions, Path(tmp) / label.replace(" ", ""),
                                       workers, args.grade_timeout)
            problems = problems_in(rows, plan)
            runs[label] = (seconds, rows)
            failed |= bool(problems)
            print(f"{label:>8}: {seconds:7.1f} s, {seconds / args.submissions:5.2f} s per "
                  f"submission, {len(rows or [])} rows, "
                  f"{'every row right' if not problems else f'{len(problems)} problems'}",
                  flush=True)
            for problem in problems[:10]:
                print(f"          {problem}")
            if log:
                print("          " + log.replace("\n", "\n          "))
        (serial, serial_rows), (parallel, parallel_rows) = runs.values()
        if serial_rows != parallel_rows:
            failed = True
            print("the two gradebooks differ (they must be identical, in the same order)")
        print(f"speed-up with -n {args.workers}: {serial / parallel:.2f}x "
              "(issue 15's goal: >= 1.7x, and 200 submissions in <= 300 s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
