"""The course's exercises: checks with a verdict line, the student edition, the grading plugin.

- `check(exercise_id, fn, suite="visible")` — what the chapters' check cells call;
- `release(source, out)` (in `release.py`) — writes the student edition, solutions removed;
- `pytest -p medsight_lab.grading.plugin --grade DIR` (in `plugin.py`) — grades submissions.

`EXERCISES` is the one table of exercise ids, function names, points and chapters.
Nothing else in the package imports this subpackage.
"""

from .checks import EXERCISES, CheckResult, check, run_check

__all__ = ["EXERCISES", "CheckResult", "check", "run_check"]
