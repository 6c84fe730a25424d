"""What a grading run writes, all of it by the trusted grader after every sandbox has ended, to
the output folder (which no sandbox can see):

- `gradebook.csv`: submission, exercise, points, max_points, verdict; one row per submission and
  exercise, sorted by submission and then the chapter's order of exercises, so that a serial run
  and a pytest-xdist run write the same bytes. No cell starts a spreadsheet formula.
- `feedback/<submission>.md`: the student's points and verdicts.
- `answers/<submission>.md`: the written answers beside the chapter's questions (for a marker).
- `run_log.txt`: when, how (sandbox or `--grade-unsafe`), and how many.
"""

from __future__ import annotations

import csv
import datetime
from dataclasses import asdict, dataclass
from pathlib import Path

COLUMNS = ["submission", "exercise", "points", "max_points", "verdict"]
NO_EXERCISE = "-"           # the exercise column of a row about the whole submission
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Row:
    submission: str
    exercise: str
    points: int
    max_points: int
    verdict: str
    order: int = 0          # the exercise's place in its chapter

    def cells(self):
        return [csv_cell(v) for v in (self.submission, self.exercise, self.points,
                                      self.max_points, self.verdict)]

    def to_json(self):
        return asdict(self)


def csv_cell(value):
    """A spreadsheet reads a cell that starts with = + - @ (or a tab or carriage return) as a
    formula: such a cell gets a leading apostrophe (OWASP's advice). A lone "-" stays as it is."""
    text = str(value)
    if isinstance(value, str) and text.startswith(FORMULA_START) and text != NO_EXERCISE:
        return "'" + text
    return text


def sort_rows(rows):
    return sorted(rows, key=lambda r: (r.submission, r.order, r.exercise))


def feedback(submission, rows, chapter=None):
    total, available = sum(r.points for r in rows), sum(r.max_points for r in rows)
    lines = [f"# Feedback on {submission}", ""]
    if chapter:
        lines.append(f"Chapter: `{chapter}`")
    lines += [f"Total: **{total} / {available} points**", ""]
    for row in rows:
        lines += [f"## {row.exercise}: {row.points} / {row.max_points}", "", row.verdict, ""]
    return "\n".join(lines)


def write(output, rows, written=None, questions=None, log_lines=()):
    """Write the gradebook, the feedback and answers files and the run log to `output`.
    `written`: {submission: (chapter, text)}; `questions`: {chapter: its questions}."""
    output = Path(output)
    rows = sort_rows(rows)
    (output / "feedback").mkdir(parents=True, exist_ok=True)
    with open(output / "gradebook.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(row.cells() for row in rows)
    by_submission = {}
    for row in rows:
        by_submission.setdefault(row.submission, []).append(row)
    written = written or {}
    for submission, its_rows in by_submission.items():
        chapter = written.get(submission, (None, None))[0]
        (output / "feedback" / Path(submission).with_suffix(".md").name).write_text(
            feedback(submission, its_rows, chapter), encoding="utf-8")
    for submission, (chapter, text) in written.items():
        answers = output / "answers" / Path(submission).with_suffix(".md").name
        answers.parent.mkdir(parents=True, exist_ok=True)
        answers.write_text(
            f"# Written answers in {submission}\n\nChapter: `{chapter}` (the answer key ends the "
            "chapter in the instructor book)\n\n## Questions\n\n"
            f"{(questions or {}).get(chapter, '')}\n\n## Answers\n\n{text}\n", encoding="utf-8")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    (output / "run_log.txt").write_text(
        "\n".join([f"graded at {stamp}", *log_lines, f"rows: {len(rows)}, submissions: "
                   f"{len(by_submission)}"]) + "\n", encoding="utf-8")
