"""The course's exercises: checks with a verdict line, the student edition, the grader.

- `check(exercise_id, fn, suite="visible")` — what the chapters' check cells call (checks.py);
- `release(source, out)` (release.py) — writes the student edition, solutions removed;
- `pytest -p medsight_lab.grading.plugin --grade DIR` (plugin.py) — grades submissions: intake.py
  takes them in, running.py runs each in the sandbox (sandbox.py, runner.py) and judges the data
  with checks.py, gradebook.py writes the results.

`EXERCISES` is the one table of the exercises, in course order: one record each (id, chapter,
points, visible cases, reference, known mistakes), written in its chapter's module under
`exercises/`; the hidden cases live outside the package (`instructor/hidden_cases.py`). Nothing
else in the package imports this subpackage.
"""

from .checks import EXERCISES, CheckResult, check, run_check

__all__ = ["EXERCISES", "CheckResult", "check", "run_check"]
