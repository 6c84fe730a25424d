"""The Gradescope autograder (grading/autograder.py): gradebook rows -> results.json, and the
bundle built by `python -m medsight_lab autograder`, run as Gradescope runs it in a local copy of
its /autograder layout."""

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from medsight_lab.grading import EXERCISES
from medsight_lab.grading.autograder import HIDDEN, VISIBLE, results_json

ROOT = Path(__file__).resolve().parents[1]


def by_name(results):
    return {t["name"]: t for t in results["tests"]}


# -- results.json from gradebook rows ----------------------------------------------------------

def test_one_test_per_exercise_with_the_verdict_and_the_total():
    rows = [["alice.ipynb", "shifted_cross_entropy", 2, 2, "✔ shifted_cross_entropy: correct."],
            ["alice.ipynb", "grounding_loss", 0, 2,
             "✘ grounding_loss (hidden tests): wrong value on fresh random inputs."],
            ["alice.ipynb", "attention_entropy", 0, 1,
             "✘ attention_entropy: your entropy has the wrong sign."],
            ["alice.ipynb", "compute_loss", 1.5, 3, "partial credit"],
            ["alice.ipynb", "cross_attention", 0, 2,
             "the check did not finish within 60 s (an infinite loop in your function?)"],
            ["alice.ipynb", "causal_attention_weights", 0, 1, "syntax error in your answer: invalid syntax"]]
    results = results_json(rows, execution_time=12.7)
    tests = by_name(results)
    assert list(tests) == ["shifted_cross_entropy", "grounding_loss", "attention_entropy",
                           "compute_loss", "cross_attention", "causal_attention_weights"]
    assert results["score"] == 3.5 and results["execution_time"] == 12
    assert [t["max_score"] for t in results["tests"]] == [2, 2, 1, 3, 2, 1]
    assert all(t["output"] == row[4] for t, row in zip(results["tests"], rows))
    assert [t["status"] for t in results["tests"]] == ["passed"] + ["failed"] * 5
    # scores the hidden tests decided wait for publication; a visible check's failure (which
    # the student's notebook shows too) is shown at once
    assert tests["shifted_cross_entropy"]["visibility"] == HIDDEN
    assert tests["grounding_loss"]["visibility"] == HIDDEN
    assert tests["attention_entropy"]["visibility"] == VISIBLE
    assert tests["compute_loss"]["visibility"] == HIDDEN
    assert tests["cross_attention"]["visibility"] == HIDDEN     # the loop may be a hidden case's
    assert tests["causal_attention_weights"]["visibility"] == VISIBLE
    assert results["stdout_visibility"] == "hidden"
    json.dumps(results)                                     # it is JSON


def test_a_broken_submission_scores_zero_and_says_why_at_once():
    results = results_json([{"submission": "03_loss.ipynb", "exercise": "-", "points": "0",
                             "max_points": "0", "verdict": "not a Jupyter notebook"}])
    assert results["score"] == 0
    [test] = results["tests"]
    assert test == {"name": "submission", "score": 0, "max_score": 0, "status": "failed",
                    "output": "not a Jupyter notebook", "visibility": VISIBLE}


def test_no_notebook_at_all_scores_zero_with_a_message():
    results = results_json([])
    assert results["score"] == 0
    assert "no notebook (.ipynb)" in results["tests"][0]["output"]


def test_several_notebooks_name_their_tests_by_file():
    rows = [["02_architecture.ipynb", "causal_attention_weights", 1, 1, "✔"],
            ["03_loss.ipynb", "compute_loss", 0, 3, "✘ compute_loss: wrong."]]
    assert list(by_name(results_json(rows))) == ["02_architecture.ipynb: causal_attention_weights",
                                                 "03_loss.ipynb: compute_loss"]


def test_a_malformed_row_is_refused():
    with pytest.raises(ValueError, match="expected 0 <= points <= max_points"):
        results_json([["a.ipynb", "compute_loss", 5, 3, "?"]])


# -- the bundle, run as Gradescope runs it -----------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    done = subprocess.run([sys.executable, "-m", "medsight_lab", "autograder", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def test_the_bundle_follows_gradescopes_layout(bundle):
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        requirements = z.read("requirements.txt").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt"} <= names
    assert modes["setup.sh"] & stat.S_IXUSR and modes["run_autograder"] & stat.S_IXUSR
    assert "course/medsight_lab/grading/plugin.py" in names
    for chapter in ("02_architecture", "03_loss", "05_evaluation"):
        assert f"course/notebooks/{chapter}.ipynb" in names     # hidden tests travel with them
    assert not any("__pycache__" in n for n in names)
    for package in ("torch", "nbval", "pytest", "nbformat"):
        assert package in requirements


def unpack(bundle, root):
    """What Gradescope's image build does: the zip in root/source, run_autograder copied up."""
    with zipfile.ZipFile(bundle) as z:
        z.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    return root


def run_autograder(root):
    env = {**os.environ, "MEDSIGHT_AUTOGRADER_ROOT": str(root),
           "MEDSIGHT_AUTOGRADER_PYTHON": sys.executable, "PYTHONPATH": ""}
    done = subprocess.run(["bash", str(root / "run_autograder")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    results = json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))
    return results, done.stdout + done.stderr


def test_run_autograder_grades_the_submission(bundle, tmp_path):
    root = unpack(bundle, tmp_path / "autograder")
    nb = nbformat.read(ROOT / "notebooks" / "02_architecture.ipynb", as_version=4)
    nbformat.write(nb, root / "submission" / "02_architecture.ipynb")
    (root / "submission" / "03_loss.ipynb").write_text("{ this is not json")
    (root / "submission" / "notes.txt").write_text("not collected")
    results, log = run_autograder(root)
    tests = by_name(results)
    chapter_2 = [e for e, ex in EXERCISES.items() if ex.chapter == "02_architecture"]
    chapter_3 = [e for e, ex in EXERCISES.items() if ex.chapter == "03_loss"]
    # the broken file is named like chapter 3, so it gets chapter 3's exercises, each at zero
    assert set(tests) == {f"02_architecture.ipynb: {e}" for e in chapter_2} | \
        {f"03_loss.ipynb: {e}" for e in chapter_3}, log
    for exercise in chapter_2:
        test = tests[f"02_architecture.ipynb: {exercise}"]
        assert test["score"] == test["max_score"] == EXERCISES[exercise].points, log
        assert "(hidden tests)" in test["output"] and test["visibility"] == HIDDEN
    for exercise in chapter_3:
        broken = tests[f"03_loss.ipynb: {exercise}"]
        assert broken["score"] == 0 and broken["max_score"] == EXERCISES[exercise].points
        assert "not a Jupyter notebook" in broken["output"] and broken["visibility"] == VISIBLE
    assert results["score"] == sum(EXERCISES[e].points for e in chapter_2)


def test_run_autograder_with_no_notebook(bundle, tmp_path):
    root = unpack(bundle, tmp_path / "autograder")
    (root / "submission" / "answers.py").write_text("print('hi')")
    results, log = run_autograder(root)
    assert results["score"] == 0 and "no notebook" in results["tests"][0]["output"], log


def test_run_autograder_when_grading_itself_fails(bundle, tmp_path):
    root = unpack(bundle, tmp_path / "autograder")
    shutil.rmtree(root / "source" / "course" / "notebooks")      # a broken bundle
    nbformat.write(nbformat.read(ROOT / "notebooks" / "03_loss.ipynb", as_version=4),
                   root / "submission" / "03_loss.ipynb")
    results, log = run_autograder(root)
    assert results["score"] == 0, log
    assert results["tests"][0]["output"].startswith("not graded: the grading command stopped")


def test_the_bundle_needs_the_instructor_notebooks(tmp_path, capsys):
    from medsight_lab.cli import main
    with pytest.raises(SystemExit) as stopped:
        main(["autograder", "--reference", str(tmp_path), "--out", str(tmp_path / "a.zip")])
    assert stopped.value.code == 2
    assert f"no instructor notebooks (*.ipynb) in {tmp_path}" in capsys.readouterr().err
    assert not (tmp_path / "a.zip").exists()
