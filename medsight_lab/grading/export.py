"""Grades for a learning-management system: the gradebook's rows, one per (submission, exercise),
turned into one row per student and one column per exercise plus the total, in the layout of
Canvas's gradebook CSV (`Student, ID, SIS User ID, SIS Login ID, Section, <assignments>...`),
which Moodle's CSV grade import also reads (book/grader_guide.md, "Importing grades into an LMS").

    write_lms_csv(gradebook_rows, path)      # what the grading plugin calls beside gradebook.csv

A student is the submission's file name without `.ipynb` (`alice.ipynb` is "alice"; the grader
takes only the notebooks at the top of the submissions folder, so one run grades one file per
student: grade each chapter in a run of its own, and import each run's file). The student's name goes in `Student` and `SIS Login ID` (Canvas's login, Moodle's
username); Canvas's own ids stay empty. An exercise the student was not graded on in this run is
left empty, which both systems read as "no grade", never as a zero.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import PurePosixPath

from .checks import EXERCISES
from .gradebook import COLUMNS as GRADEBOOK_FIELDS
from .gradebook import NO_EXERCISE, csv_cell
IDENTITY_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
# Canvas computes this column itself and does not import it (it is in every Canvas export);
# Moodle lets the instructor map it to a grade item or ignore it.
TOTAL_COLUMN = "Final Points"


def safe_cell(value):
    """A CSV cell a spreadsheet will not run as a formula (gradebook.csv_cell); numbers written
    without a needless ".0"."""
    return csv_cell(value if isinstance(value, str) else _number(value))


def _number(points):
    return str(int(points)) if float(points).is_integer() else f"{points:g}"


def student_of(submission):
    """The student a submission belongs to: its path's first part, without `.ipynb`."""
    first = PurePosixPath(str(submission).replace("\\", "/")).parts[0]
    return first[:-len(".ipynb")] if first.endswith(".ipynb") else first


def gradebook_record(row):
    """(submission, exercise, points, max_points, verdict) of a gradebook row: a sequence in
    GRADEBOOK_FIELDS order or a mapping with those keys (a row of gradebook.csv read back);
    points as floats. Raises ValueError naming what was expected."""
    if isinstance(row, Mapping):
        missing = [f for f in GRADEBOOK_FIELDS if f not in row]
        if missing:
            raise ValueError(f"gradebook row {dict(row)!r} lacks {', '.join(missing)}; expected "
                             f"the columns {', '.join(GRADEBOOK_FIELDS)}")
        values = [row[f] for f in GRADEBOOK_FIELDS]
    elif isinstance(row, (list, tuple)) and len(row) == len(GRADEBOOK_FIELDS):
        values = list(row)
    else:
        raise ValueError(f"gradebook row {row!r}: expected ({', '.join(GRADEBOOK_FIELDS)})")
    submission, exercise, verdict = str(values[0]), str(values[1]), str(values[4])
    try:
        points, max_points = float(values[2]), float(values[3])
    except (TypeError, ValueError):
        raise ValueError(f"gradebook row for {submission}, {exercise}: points and max_points "
                         f"must be numbers, got {values[2]!r} and {values[3]!r}") from None
    if not (math.isfinite(points) and math.isfinite(max_points)
            and 0 <= points <= max_points):
        raise ValueError(f"gradebook row for {submission}, {exercise}: expected 0 <= points <= "
                         f"max_points, got {values[2]!r} of {values[3]!r}")
    if not submission:
        raise ValueError(f"gradebook row {row!r}: the submission is empty")
    return submission, exercise, points, max_points, verdict


def lms_table(gradebook_rows):
    """(header, rows) of the LMS CSV: one row per student (sorted), the exercises in the course's
    order, the total last. Raises ValueError on a malformed row, or when two submissions of one
    student were both graded on the same exercise (which one counts is the instructor's call)."""
    grades, where = {}, {}                      # student -> {exercise: points}; who gave it
    for row in gradebook_rows:
        submission, exercise, points, _, _ = gradebook_record(row)
        student = student_of(submission)
        scores = grades.setdefault(student, {})
        if exercise == NO_EXERCISE:
            continue
        if exercise in scores:
            raise ValueError(f"student {student!r} has two grades for {exercise}, from "
                             f"{where[student, exercise]} and {submission}: keep one "
                             "submission per chapter and student")
        scores[exercise], where[student, exercise] = points, submission
    graded = {exercise for scores in grades.values() for exercise in scores}
    exercises = [e for e in EXERCISES if e in graded] + sorted(graded - set(EXERCISES))
    header = IDENTITY_COLUMNS + exercises + [TOTAL_COLUMN]
    rows = []
    for student in sorted(grades):
        scores = grades[student]
        identity = {"Student": student, "SIS Login ID": student}
        rows.append([safe_cell(identity.get(c, "")) for c in IDENTITY_COLUMNS]
                    + [safe_cell(scores[e]) if e in scores else "" for e in exercises]
                    + [safe_cell(sum(scores.values()))])
    return [safe_cell(c) for c in header], rows


def write_lms_csv(gradebook_rows, path):
    """Write the LMS CSV (UTF-8, comma-separated, one header row) of `gradebook_rows` to `path`;
    returns `path`."""
    header, rows = lms_table(gradebook_rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
