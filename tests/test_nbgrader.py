"""The chapters in a stock nbgrader course, run with nbgrader's own commands: the instructor
notebooks are the source, `generate_assignment` releases them, `validate` passes the source and
fails every test of the release (`--invert`), and `autograde` gives a blank submission 0 and a
solved one full marks. nbgrader scores a grade cell by whether it raises, so this holds only
because `check` raises under nbgrader's NBGRADER_EXECUTION (grading/checks.py).

nbgrader is a test-only dependency (requirements.txt, pyproject's `test` extra)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from medsight_lab.grading import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["02_architecture", "03_loss"]          # the chapters with exercises that run fast
ASSIGNMENT = "ps1"
MAX_SCORE = sum(e.points for e in EXERCISES.values() if e.chapter in CHAPTERS)


def nbgrader(course, *args):
    """Run `nbgrader ARGS` in the course folder, as an instructor does; (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("MEDSIGHT_CHECKS_RAISE", "NBGRADER_EXECUTION"):
        env.pop(name, None)                     # nbgrader sets its own; nothing set by hand
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def notebooks(folder):
    return [str(folder / ASSIGNMENT / f"{chapter}.ipynb") for chapter in CHAPTERS]


def answer_cells(nb):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """An nbgrader course folder with the two chapters as one assignment, released."""
    course = tmp_path_factory.mktemp("nbgrader_course")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'medsight'\n"
        "c.Execute.timeout = 120\n")
    source = course / "source" / ASSIGNMENT
    source.mkdir(parents=True)
    for chapter in CHAPTERS:
        shutil.copy(ROOT / "notebooks" / f"{chapter}.ipynb", source)
    code, out = nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    assert code == 0, out
    return course


def test_the_release_has_stubs_and_no_hidden_tests(course):
    for chapter in CHAPTERS:
        text = (course / "release" / ASSIGNMENT / f"{chapter}.ipynb").read_text()
        assert "NotImplementedError" in text
        for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", 'suite="hidden"'):
            assert marker not in text, (chapter, marker)


def test_validate_passes_the_source(course):
    code, out = nbgrader(course, "validate", *notebooks(course / "source"))
    assert code == 0 and out.count("Success! Your notebook passes all the tests.") == \
        len(CHAPTERS), out


def test_validate_invert_fails_every_test_of_the_release(course):
    """Before checks raised under nbgrader, the stubs 'passed' every test here. The only cell
    nbgrader counts as passed is each chapter's blank written-answer cell: it is worth 0 points,
    and nbgrader takes 0 of 0 for a pass."""
    code, out = nbgrader(course, "validate", "--invert", *notebooks(course / "release"))
    assert code == 0, out
    assert out.count("NOTEBOOK PASSED ON 1 CELL(S)!") == out.count("YOUR ANSWER HERE") == \
        len(CHAPTERS), out
    assert "check(" not in out, out          # no check cell passed


def test_autograde_gives_a_stub_zero_and_a_solution_full_marks(course):
    for student, solved in (("blank", False), ("solver", True)):
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        for chapter in CHAPTERS:
            nb = nbformat.read(course / "release" / ASSIGNMENT / f"{chapter}.ipynb", 4)
            if solved:          # the student fills the released answer cells, nothing else
                answers = answer_cells(nbformat.read(course / "source" / ASSIGNMENT /
                                                     f"{chapter}.ipynb", 4))
                for grade_id, cell in answer_cells(nb).items():
                    cell.source = answers[grade_id].source
            nbformat.write(nb, folder / f"{chapter}.ipynb")
    code, out = nbgrader(course, "autograde", ASSIGNMENT, "--force")
    assert code == 0, out
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        blank = gradebook.find_submission(ASSIGNMENT, "blank")
        solver = gradebook.find_submission(ASSIGNMENT, "solver")
        assert blank.max_score == solver.max_score == MAX_SCORE
        assert blank.score == 0, out
        assert solver.score == MAX_SCORE, out
    # autograde put the hidden tests back (they are the instructor's, from the source)
    graded = (course / "autograded" / "solver" / ASSIGNMENT / "03_loss.ipynb").read_text()
    assert "✔ compute_loss (hidden tests)" in graded
