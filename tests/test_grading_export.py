"""The LMS export (grading/export.py): gradebook rows become one row per student, one column per
exercise and the total; and the grading command writes that file beside gradebook.csv."""

import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from medsight_lab.grading import EXERCISES
from medsight_lab.grading.export import (IDENTITY_COLUMNS, TOTAL_COLUMN, lms_table, safe_cell,
                                         student_of, write_lms_csv)
from medsight_lab.grading.release import stub_source

ROOT = Path(__file__).resolve().parents[1]

ROWS = [  # (submission, exercise, points, max_points, verdict), as the plugin writes them
    ["bob.ipynb", "compute_loss", 3, 3, "✔ compute_loss: correct on 4 cases."],
    ["bob.ipynb", "shifted_cross_entropy", 0, 2, "✘ shifted_cross_entropy: not shifted."],
    ["alice/03_loss.ipynb", "compute_loss", 0, 3, "not implemented yet"],
    ["alice/02_architecture.ipynb", "causal_attention_weights", 1, 1, "✔ causal_attention_weights: correct on 3 cases."],
    ["alice/02_architecture.ipynb", "cross_attention", 2, 2, "✔ cross_attention: correct."],
    ["notes.txt", "-", 0, 0, "not a Jupyter notebook"],
]


def as_dicts(header, rows):
    return [dict(zip(header, row)) for row in rows]


def test_one_row_per_student_one_column_per_exercise_and_the_total():
    header, rows = lms_table(ROWS)
    # the exercises in the course's order (chapter 2 before chapter 3), the total last
    assert header == IDENTITY_COLUMNS + ["cross_attention", "causal_attention_weights",
                                         "shifted_cross_entropy", "compute_loss", TOTAL_COLUMN]
    table = {r["Student"]: r for r in as_dicts(header, rows)}
    assert list(table) == ["alice", "bob", "notes.txt"]
    alice, bob, notes = table["alice"], table["bob"], table["notes.txt"]
    assert alice["SIS Login ID"] == "alice" and alice["ID"] == alice["Section"] == ""
    assert (alice["cross_attention"], alice["causal_attention_weights"], alice["compute_loss"]) == \
        ("2", "1", "0")
    assert alice["shifted_cross_entropy"] == ""       # not graded in this run: empty, not 0
    assert alice[TOTAL_COLUMN] == "3"
    assert (bob["compute_loss"], bob["shifted_cross_entropy"], bob[TOTAL_COLUMN]) == \
        ("3", "0", "3")
    assert bob["cross_attention"] == ""
    # a file that could not be graded at all: the student is listed, with nothing but a 0 total
    assert [notes[c] for c in header[5:]] == ["", "", "", "", "0"]


def test_rows_read_back_from_gradebook_csv_work_too():
    fields = ["submission", "exercise", "points", "max_points", "verdict"]
    as_read = [dict(zip(fields, map(str, row))) for row in ROWS]
    assert lms_table(as_read) == lms_table(ROWS)


def test_half_points_are_kept():
    header, rows = lms_table([["carol.ipynb", "compute_loss", 1.5, 3, "partial"]])
    assert rows[0][header.index("compute_loss")] == "1.5"


@pytest.mark.parametrize("value, cell", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"), ("-1", "'-1"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("alice", "alice"), (3, "3"), (2.5, "2.5")])
def test_no_cell_starts_a_formula(value, cell):
    assert safe_cell(value) == cell


def test_a_student_named_like_a_formula_is_written_as_text():
    header, rows = lms_table([["=cmd|' -C calc'!A0.ipynb", "compute_loss", 3, 3, "ok"],
                              ["@evil/03_loss.ipynb", "compute_loss", 0, 3, "no"]])
    for row in rows:
        for cell in row + header:
            assert not cell.startswith(("=", "+", "-", "@")), cell
    assert [r[0] for r in rows] == ["'=cmd|' -C calc'!A0", "'@evil"]


def test_student_of_a_submission():
    assert student_of("alice.ipynb") == "alice"
    assert student_of("alice/03_loss.ipynb") == "alice"
    assert student_of("notes.txt") == "notes.txt"


@pytest.mark.parametrize("row, words", [
    (["a.ipynb", "compute_loss", 3, 3], "expected (submission, exercise, points"),
    ("a.ipynb,compute_loss,3,3,ok", "expected (submission, exercise, points"),
    ({"submission": "a.ipynb", "exercise": "compute_loss", "points": 3}, "lacks max_points"),
    (["a.ipynb", "compute_loss", "three", 3, "ok"], "must be numbers, got 'three'"),
    (["a.ipynb", "compute_loss", 4, 3, "ok"], "expected 0 <= points <= max_points, got 4 of 3"),
    (["a.ipynb", "compute_loss", -1, 3, "ok"], "expected 0 <= points <= max_points"),
    (["a.ipynb", "compute_loss", float("nan"), 3, "ok"], "expected 0 <= points <= max_points"),
    (["", "compute_loss", 3, 3, "ok"], "the submission is empty"),
])
def test_a_malformed_row_is_refused_with_what_was_expected(row, words):
    with pytest.raises(ValueError) as err:
        lms_table([row])
    assert words in str(err.value)


def test_two_grades_for_one_exercise_of_one_student_are_refused():
    rows = [["alice/03_loss.ipynb", "compute_loss", 3, 3, "ok"],
            ["alice/03_loss_v2.ipynb", "compute_loss", 0, 3, "no"]]
    with pytest.raises(ValueError, match="'alice' has two grades for compute_loss, from "
                                         "alice/03_loss.ipynb and alice/03_loss_v2.ipynb"):
        lms_table(rows)


def test_the_writer_writes_what_the_table_holds(tmp_path):
    path = write_lms_csv(ROWS, tmp_path / "lms.csv")
    with open(path, newline="", encoding="utf-8") as f:
        written = list(csv.reader(f))
    header, rows = lms_table(ROWS)
    assert written == [header, *rows]


# -- end to end: the grading command writes lms_grades.csv ------------------------------------

def chapter(name, solved=True):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    if not solved:
        for cell in nb.cells:
            nbgrader = cell.metadata.get("nbgrader", {})
            if nbgrader.get("solution") and cell.cell_type == "code":
                cell.source = stub_source(cell.source, nbgrader["grade_id"])
    return nb


def test_the_grading_command_writes_the_lms_csv_beside_the_gradebook(tmp_path):
    submissions, out = tmp_path / "submissions", tmp_path / "grades"
    submissions.mkdir()
    nbformat.write(chapter("02_architecture"), submissions / "alice.ipynb")
    nbformat.write(chapter("03_loss", solved=False), submissions / "bob.ipynb")
    (submissions / "=1+1.ipynb").write_text("not a notebook")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin", "--grade",
         str(submissions), "--grade-output", str(out), "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    with open(out / "lms_grades.csv", newline="", encoding="utf-8") as f:
        table = {r["Student"]: r for r in csv.DictReader(f)}
    # intake renames "=1+1.ipynb" to a safe "1_1.ipynb" before anything reads it
    assert set(table) == {"alice", "bob", "1_1"}, run.stdout[-3000:]
    alice, bob = table["alice"], table["bob"]
    chapter_2 = [e for e, ex in EXERCISES.items() if ex.chapter == "02_architecture"]
    chapter_3 = [e for e, ex in EXERCISES.items() if ex.chapter == "03_loss"]
    assert all(alice[e] == str(EXERCISES[e].points) for e in chapter_2), alice
    assert all(alice[e] == "" for e in chapter_3), alice          # not graded: no grade, not 0
    assert all(bob[e] == "0" for e in chapter_3), bob
    assert alice[TOTAL_COLUMN] == str(sum(EXERCISES[e].points for e in chapter_2))
    assert bob[TOTAL_COLUMN] == "0"
    assert table["1_1"][TOTAL_COLUMN] == "0"
