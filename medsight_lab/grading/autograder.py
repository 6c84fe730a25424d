"""Gradescope: an autograder bundle that grades one submission with the course's grading command.

    python -m medsight_lab autograder [--out _build/autograder.zip]      # build the bundle
    python -m medsight_lab.grading.autograder run                        # what run_autograder runs

The zip follows Gradescope's autograder specification: `setup.sh` and `run_autograder` at its
root, and beside them the course (`course/`: the package, the instructor notebooks with their
hidden tests, `pyproject.toml`) and `requirements.txt`. Gradescope unpacks it to
/autograder/source, runs `setup.sh` once when it builds the image, then `run_autograder` for each
submission: it grades the notebooks in /autograder/submission with the grading command
(`python -m pytest -p medsight_lab.grading.plugin --grade ...`, so it follows whatever the plugin
does inside) and turns the gradebook into /autograder/results/results.json (`results_json`).
MEDSIGHT_AUTOGRADER_ROOT replaces /autograder, so a test can run the same script in a folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from .export import NO_EXERCISE, gradebook_record

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ROOT_ENV = "MEDSIGHT_AUTOGRADER_ROOT"
PYTHON_ENV = "MEDSIGHT_AUTOGRADER_PYTHON"      # the interpreter run_autograder uses
DEFAULT_ROOT = "/autograder"
# Grading needs these beside the package's own dependencies (read from pyproject.toml).
GRADING_REQUIREMENTS = ["nbformat", "nbclient", "nbval>=0.11,<0.12", "ipykernel", "pytest"]
# What a student sees when: a score that hidden tests decided waits until the instructor
# publishes grades, so that resubmitting cannot probe the hidden tests; a zero the student's own
# notebook already explains (a failed visible check, a file that is no notebook) is shown at once.
HIDDEN = "after_published"
VISIBLE = "visible"

SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
apt-get install -y python3 python3-venv python3-pip bubblewrap
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
# PyTorch's CPU build: the graders' containers have no GPU.
/autograder/venv/bin/pip install -r /autograder/source/requirements.txt \\
    --extra-index-url https://download.pytorch.org/whl/cpu
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for each submission. It grades /autograder/submission with the course's
# grading command and writes /autograder/results/results.json. MEDSIGHT_AUTOGRADER_ROOT replaces
# /autograder and MEDSIGHT_AUTOGRADER_PYTHON the interpreter (for a local test of the bundle).
set -uo pipefail
ROOT="${MEDSIGHT_AUTOGRADER_ROOT:-/autograder}"
PYTHON="${MEDSIGHT_AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
export MEDSIGHT_AUTOGRADER_ROOT="$ROOT"
export PYTHONPATH="$ROOT/source/course${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
cd "$ROOT/source/course"
exec "$PYTHON" -m medsight_lab.grading.autograder run
"""


# ---------------------------------------------------------------------------------------------
# Gradebook rows -> results.json (pure)
# ---------------------------------------------------------------------------------------------

def _visibility(exercise, points, verdict):
    """VISIBLE for a zero that the hidden tests did not decide (an unusable file, a broken or
    missing answer, a failed visible check: all things the student's own notebook shows), else
    HIDDEN. A check cell's timeout or mismatch may come from its hidden tests: HIDDEN."""
    if exercise == NO_EXERCISE:
        return VISIBLE
    hidden_tests_decided = (points > 0 or "hidden test" in verdict
                            or verdict.startswith("the check"))
    return HIDDEN if hidden_tests_decided else VISIBLE


def results_json(gradebook_rows, execution_time=None):
    """Gradescope's results.json (a dict) for one student's gradebook rows (submission, exercise,
    points, max_points, verdict): one test per exercise with its score, max_score, status and
    the verdict as output, the total as `score`. Raises ValueError on a malformed row."""
    records = [gradebook_record(row) for row in gradebook_rows]
    several = len({r[0] for r in records}) > 1
    tests = []
    for submission, exercise, points, max_points, verdict in records:
        name = "submission" if exercise == NO_EXERCISE else exercise
        tests.append({
            "name": f"{submission}: {name}" if several else name,
            "score": points, "max_score": max_points,
            "status": "passed" if points == max_points and exercise != NO_EXERCISE else "failed",
            "output": verdict,
            "visibility": _visibility(exercise, points, verdict)})
    if not tests:
        tests.append({"name": "submission", "score": 0, "max_score": 0, "status": "failed",
                      "output": "no notebook (.ipynb) in the submission: upload the chapter's "
                                "notebook itself", "visibility": VISIBLE})
    results = {
        "score": sum(t["score"] for t in tests),
        "output": ("Each exercise's score waits until your instructor publishes the grades "
                   "(hidden tests decide it); a failed visible check or an unusable file is "
                   "shown at once."),
        "stdout_visibility": "hidden",       # the grader's log, for the instructor
        "tests": tests,
    }
    if execution_time is not None:
        results["execution_time"] = int(execution_time)
    return results


def grading_failed(why):
    """results.json when the grading command produced no gradebook: zero, and the reason."""
    return {"score": 0, "stdout_visibility": "hidden",
            "output": f"not graded: {why}. Your instructor has been told (see the autograder "
                      "output).",
            "tests": [{"name": "grading", "score": 0, "max_score": 0, "status": "failed",
                       "output": f"not graded: {why}", "visibility": VISIBLE}]}


# ---------------------------------------------------------------------------------------------
# run_autograder
# ---------------------------------------------------------------------------------------------

def stage_submission(submission, staging):
    """Copy the submission's regular .ipynb files (no links, nothing else) into `staging`, flat;
    returns how many."""
    staging.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(submission.rglob("*.ipynb")) if submission.is_dir() else []:
        if path.is_symlink() or not path.is_file() or ".ipynb_checkpoints" in path.parts:
            continue
        target = staging / path.name
        if target.exists():
            target = staging / "__".join(path.relative_to(submission).parts)
        shutil.copyfile(path, target)
        count += 1
    return count


def run(root=None):
    """Grade root/submission, write root/results/results.json; returns the results dict."""
    root = Path(root or os.environ.get(ROOT_ENV, DEFAULT_ROOT))
    course = root / "source" / "course"
    results_path = root / "results" / "results.json"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="medsight-gradescope-") as scratch:
        staging, output = Path(scratch) / "submission", Path(scratch) / "grades"
        if stage_submission(root / "submission", staging) == 0:
            results = results_json([])
        else:
            command = [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin",
                       "--grade", str(staging), "--grade-reference", str(course / "notebooks"),
                       "--grade-output", str(output), "-q"]
            print("$", " ".join(command), flush=True)
            done = subprocess.run(command, cwd=course)   # its output goes to Gradescope's stdout
            gradebook = output / "gradebook.csv"
            if gradebook.exists():
                with open(gradebook, newline="", encoding="utf-8") as f:
                    results = results_json(list(csv.DictReader(f)),
                                           time.monotonic() - started)
            else:
                results = grading_failed(f"the grading command stopped (exit {done.returncode}) "
                                         "without a gradebook")
    results_path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    print(f"score {results['score']}: {results_path}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# Building the bundle
# ---------------------------------------------------------------------------------------------

def _dependencies():
    """The package's dependencies, from the pyproject.toml beside it (a source checkout), else
    from the installed distribution's metadata."""
    pyproject = PACKAGE_DIR.parent / "pyproject.toml"
    if pyproject.exists():
        import tomllib
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    from importlib.metadata import requires
    return [r for r in requires("medsight-lab") or [] if "extra ==" not in r]


def _add_tree(bundle, folder, arcname):
    for path in sorted(folder.rglob("*")):
        skip = {"__pycache__", ".ipynb_checkpoints"} & set(path.relative_to(folder).parts)
        if path.is_file() and not skip and path.suffix != ".pyc":
            bundle.write(path, f"{arcname}/{path.relative_to(folder).as_posix()}")


def _add_script(bundle, name, text):
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFREG | 0o755) << 16          # executable once unpacked
    info.compress_type = zipfile.ZIP_DEFLATED
    bundle.writestr(info, text)


def build_bundle(out, reference="notebooks"):
    """Write the Gradescope autograder zip to `out`; returns its path. `reference` is the folder
    of instructor notebooks (with their hidden tests)."""
    reference, out = Path(reference), Path(out)
    if not any(reference.glob("*.ipynb")):
        raise FileNotFoundError(f"no instructor notebooks (*.ipynb) in {reference}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        _add_script(bundle, "setup.sh", SETUP_SH)
        _add_script(bundle, "run_autograder", RUN_AUTOGRADER)
        bundle.writestr("requirements.txt",
                        "\n".join([*_dependencies(), *GRADING_REQUIREMENTS]) + "\n")
        _add_tree(bundle, PACKAGE_DIR, "course/medsight_lab")
        for path in sorted(reference.iterdir()):
            if path.suffix in (".ipynb", ".cfg") and path.is_file():
                bundle.write(path, f"course/notebooks/{path.name}")
        # The hidden cases sit beside the package, where checks.HIDDEN_CASES_FILE looks.
        hidden = PACKAGE_DIR.parent / "instructor"
        if hidden.is_dir():
            _add_tree(bundle, hidden, "course/instructor")
        for name in ("pyproject.toml", "LICENSE"):
            if (PACKAGE_DIR.parent / name).is_file():
                bundle.write(PACKAGE_DIR.parent / name, f"course/{name}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m medsight_lab.grading.autograder",
                                     description="Run inside Gradescope's container (run).")
    parser.add_argument("command", choices=["run"])
    parser.parse_args(argv)
    run()


if __name__ == "__main__":
    main()
