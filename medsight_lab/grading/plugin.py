"""Grade a folder of submitted notebooks with pytest:

    pytest -p medsight_lab.grading.plugin --grade SUBMISSIONS_DIR
        [--grade-reference notebooks] [--grade-output _build/grades] [--grade-timeout 30]
        [--grade-unsafe] [-n auto]

The pieces, in the order they act:

1. intake.py (controller only): the regular top-level `*.ipynb` files of SUBMISSIONS_DIR are
   copied, under safe names, into `<output>/.staging`; anything else gets a row saying why.
   pytest collects only that folder, so nothing from a submission is ever imported.
2. Collection (here): one test item per (submission, exercise) of the submission's chapter, named
   `alice.ipynb::compute_loss`, or one item `::submission` for a file that cannot be graded.
3. running.py: when the first item of a submission runs, its answer cells are judged by ONE
   sandboxed runner (sandbox.py: bubblewrap, no network, no files of the course), each exercise on
   its own, with the reference answers of the chapter's earlier exercises; the grader compares
   the returned data with the references itself (checks.py). Nothing the student's code prints is
   read.
4. gradebook.py (controller only, after every item): each item hands its row over in
   `item.user_properties`, which pytest-xdist carries from its workers to the controller; the
   controller writes one gradebook, sorted, the same bytes whether it ran serially or with `-n`.

With `-n`, the plugin asks xdist to keep a submission's items on one worker (`--dist loadfile`),
so that a submission still starts one sandbox. Without bubblewrap, grading refuses to start (with
the fix), unless `--grade-unsafe` says the machine is disposable; the run log records it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from . import checks, intake, running, sandbox
from .gradebook import NO_EXERCISE, Row
from . import export, gradebook

GRADER = "medsight_lab_grader"
GRADEBOOK_COLUMNS = gradebook.COLUMNS
ROW_PROPERTY = "medsight_lab_row"
WRITTEN_PROPERTY = "medsight_lab_written"
STAGING = ".staging"
LMS_CSV = "lms_grades.csv"       # the same grades, one row per student (grading/export.py)


def pytest_addoption(parser):
    group = parser.getgroup("medsight_lab grading")
    group.addoption("--grade", metavar="SUBMISSIONS_DIR",
                    help="grade every notebook in this folder against the reference chapters")
    group.addoption("--grade-reference", metavar="DIR", default="notebooks",
                    help="the instructor notebooks (default: notebooks)")
    group.addoption("--grade-output", metavar="DIR", default="_build/grades",
                    help="where gradebook.csv, feedback/, answers/ and run_log.txt go "
                         "(default: _build/grades)")
    group.addoption("--grade-timeout", metavar="SECONDS", type=float, default=30.0,
                    help="time limit of one exercise (all its cases) in the sandbox; one call "
                         f"of the student's function gets at most {checks.TIME_LIMIT_S} s "
                         "(default: 30)")
    group.addoption("--grade-no-policy", action="store_true",
                    help="run (in the sandbox) answers that the static answer policy would "
                         "refuse, instead of scoring them zero with the rule")
    group.addoption("--grade-unsafe", action="store_true",
                    help="run students' code WITHOUT the bubblewrap sandbox (only on a "
                         "disposable machine; recorded in the run log)")


def _is_worker(config):
    return hasattr(config, "workerinput")


@pytest.hookimpl(trylast=True)   # after the cache plugin, whose folder is moved below
def pytest_configure(config):
    if not config.option.grade:
        return
    option = config.option
    submissions = Path(option.grade).resolve()
    if not submissions.is_dir():
        raise pytest.UsageError(f"--grade: {submissions} is not a folder")
    reference = Path(option.grade_reference).resolve()
    if not any(reference.glob("*.ipynb")):
        raise pytest.UsageError(f"--grade-reference: no notebooks in {reference}")
    if not checks.hidden_cases_file().is_file():
        raise pytest.UsageError(f"the hidden cases ({checks.hidden_cases_file()}) are missing: "
                                "grade from the instructor's checkout of the course, or set "
                                f"{checks.HIDDEN_CASES_ENV} to the file")
    if option.grade_timeout <= 0:
        raise pytest.UsageError("--grade-timeout must be a positive number of seconds")
    if not option.grade_unsafe and not _is_worker(config) and sandbox.problem():
        raise pytest.UsageError(f"grading refused: {sandbox.problem()}")
    output = Path(option.grade_output).resolve()
    staging = output / STAGING
    grader = Grader(submissions, reference, output, staging, running.Settings(
        exercise_timeout=option.grade_timeout, unsafe=option.grade_unsafe,
        policy=not option.grade_no_policy))
    if not _is_worker(config):
        grader.staged, grader.refused = intake.take_in(submissions, staging)
    config.args[:] = [str(staging)]          # collect the staged copies, nothing else
    if getattr(config, "cache", None) is not None:
        config.cache._cachedir = output / ".pytest_cache"
    # `pytest --nbval ... --grade DIR` must not run the staged notebooks as notebooks.
    for name in ("nbval", "nbval_lax"):
        if hasattr(option, name):
            setattr(option, name, False)
    # pytest-xdist: a submission's items on one worker, so that it starts one sandbox.
    if getattr(option, "dist", "no") == "load":
        option.dist = "loadfile"
    config.pluginmanager.register(grader, GRADER)


class Grader:
    """The plugin's state for one grading run (in the controller and in each xdist worker)."""

    def __init__(self, submissions, reference, output, staging, settings):
        self.submissions, self.reference, self.output = submissions, reference, output
        self.staging, self.settings = staging, settings
        self.chapters = {}
        for path in sorted(reference.glob("*.ipynb")):
            chapter = running.Chapter.read(path)
            self.chapters[chapter.name] = chapter
        self.staged, self.refused = [], []
        self.rows, self.written = {}, {}       # (submission, exercise) -> Row; submission -> ...
        self.expected = set()                  # node ids collected (here or by xdist workers)
        self.started = time.monotonic()

    # -- collection ---------------------------------------------------------------------------

    def pytest_collect_file(self, file_path, parent):
        if file_path.parent == self.staging and file_path.suffix == ".ipynb":
            return Submission.from_parent(parent, path=file_path)
        return None

    def pytest_collection_modifyitems(self, items):
        self.expected |= {item.nodeid for item in items}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self.expected |= set(ids)

    # -- results ------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report):
        for name, value in report.user_properties:
            if name == ROW_PROPERTY:
                row = Row(**json.loads(value))
                self.rows[(row.submission, row.exercise)] = row
            elif name == WRITTEN_PROPERTY:
                submission, chapter, text = json.loads(value)
                self.written[submission] = (chapter, text)

    def _missing_rows(self, exitstatus):
        """A row for every collected item that reported none (an interrupted run, a crashed
        worker): "not graded", never a silent zero or a missing line."""
        why = ("the grading run was interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED
               else "the grading run ended")
        rows = []
        for nodeid in self.expected:
            submission, _, exercise = nodeid.rpartition("::")
            submission = Path(submission).name
            exercise = NO_EXERCISE if exercise == "submission" else exercise
            if (submission, exercise) in self.rows:
                continue
            chapter = next((c for c in self.chapters.values() if exercise in c.exercises), None)
            order = list(chapter.exercises).index(exercise) if chapter else 0
            points = chapter.exercises[exercise] if chapter else 0
            rows.append(Row(submission, exercise, 0, points, f"not graded: {why} before this "
                                                           "exercise was graded; grade again",
                            order))
        return rows

    def pytest_sessionfinish(self, session, exitstatus):
        if _is_worker(session.config):
            return                         # the controller alone writes the gradebook
        rows = list(self.rows.values()) + self._missing_rows(exitstatus)
        rows += [Row(r.name, NO_EXERCISE, 0, 0, r.reason) for r in self.refused]
        mode = ("UNSAFE: --grade-unsafe, students' code ran WITHOUT the sandbox"
                if self.settings.unsafe else "sandbox: bubblewrap (grading/sandbox.py), "
                + ("as root: each submission as a uid of its own" if os.geteuid() == 0
                   else "each submission as uid 65534 of a user namespace of its own"))
        workers = getattr(session.config.option, "numprocesses", None)
        gradebook.write(self.output, rows, self.written,
                        {name: c.questions for name, c in self.chapters.items()},
                        [mode, f"submissions folder: {self.submissions}",
                         f"reference: {self.reference}",
                         f"per-exercise time limit: {self.settings.exercise_timeout:g} s",
                         "answer policy: " + ("on" if self.settings.policy else
                                              "off (--grade-no-policy)"),
                         f"xdist workers: {workers or 'none (serial)'}",
                         f"staged: {len(self.staged)}, refused at intake: {len(self.refused)}",
                         f"wall time: {time.monotonic() - self.started:.1f} s"])
        # The same grades for an LMS, one row per student (grading/export.py).
        export.write_lms_csv([(r.submission, r.exercise, r.points, r.max_points, r.verdict)
                              for r in gradebook.sort_rows(rows)], self.output / LMS_CSV)
        shutil.rmtree(self.staging, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter):
        if self.settings.unsafe:
            terminalreporter.write_sep("!", "graded WITHOUT the sandbox (--grade-unsafe)")
        terminalreporter.write_sep("-", f"gradebook: {self.output / 'gradebook.csv'}")


# ---------------------------------------------------------------------------------------------
# Collection: a submission and its exercises
# ---------------------------------------------------------------------------------------------

class Submission(pytest.File):
    """One staged notebook. Its exercises are judged together, once, by `verdicts()`."""

    _verdicts = None

    def collect(self):
        """The exercises' items; a file that breaks the reading becomes one failing item, so that
        one mangled notebook never stops the grading of the others."""
        try:
            items = list(self._collect())
        except Exception as err:  # any defect of the file itself: report it, grade the rest
            problem = (f"not a gradable notebook ({type(err).__name__}): hand in the notebook as "
                       "Jupyter saved it")
            items = [Unusable.from_parent(self, name="submission", reason=problem)]
        yield from items

    def _collect(self):
        grader = self.config.pluginmanager.get_plugin(GRADER)
        self.grader, name = grader, self.path.name
        nb, problem = intake.read_submission(self.path)
        self.chapter_name = intake.identify_chapter(nb, self.path, grader.chapters)
        if self.chapter_name is None and problem is None:
            problem = ("unknown chapter: the notebook names none of the course's chapters "
                       f"({', '.join(grader.chapters)})")
        if self.chapter_name is None:
            yield Unusable.from_parent(self, name="submission", reason=problem)
            return
        chapter = grader.chapters[self.chapter_name]
        self.written = None if nb is None else intake.written_answers(nb, self.chapter_name)
        if problem:
            self.answers, self.problems = {}, {e: problem for e in chapter.exercises}
        else:
            self.answers, self.problems = intake.answer_sources(nb, chapter.answers)
        for order, exercise in enumerate(chapter.exercises):
            yield ExerciseItem.from_parent(self, name=exercise, order=order,
                                       max_points=chapter.exercises[exercise], submission=name)

    def verdicts(self):
        """{exercise: (points, verdict)}, judged on first use (one sandbox per submission)."""
        if self._verdicts is None:
            chapter = self.grader.chapters[self.chapter_name]
            self._verdicts = running.grade(chapter, self.answers, self.problems,
                                           self.grader.settings)
        return self._verdicts


class GradeFailure(Exception):
    """An exercise that did not earn its points; pytest shows the verdict."""


class ExerciseItem(pytest.Item):
    """One exercise of one submission: its row, and a failure showing the verdict if it lost
    points."""

    def __init__(self, *, order, max_points, submission, **kwargs):
        super().__init__(**kwargs)
        self.order, self.max_points, self.submission = order, max_points, submission

    def runtest(self):
        points, verdict = self.parent.verdicts()[self.name]
        row = Row(self.submission, self.name, points, self.max_points, verdict, self.order)
        self.user_properties.append((ROW_PROPERTY, json.dumps(row.to_json())))
        if self.order == 0 and self.parent.written is not None:
            self.user_properties.append((WRITTEN_PROPERTY, json.dumps(
                [self.submission, self.parent.chapter_name, self.parent.written])))
        if points < self.max_points:
            raise GradeFailure(verdict)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, GradeFailure):
            return str(excinfo.value)      # the grader reads what the student will read
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}::{self.name}"


class Unusable(pytest.Item):
    """Stands for a submission that cannot be graded at all; fails with the reason."""

    def __init__(self, *, reason, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self):
        row = Row(self.path.name, NO_EXERCISE, 0, 0, self.reason)
        self.user_properties.append((ROW_PROPERTY, json.dumps(row.to_json())))
        raise GradeFailure(self.reason)

    def repr_failure(self, excinfo):
        return self.reason

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}::{self.name}"
