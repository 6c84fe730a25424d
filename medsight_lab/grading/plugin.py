"""Grade a folder of submitted notebooks with pytest and nbval:

    pytest -p medsight_lab.grading.plugin --grade SUBMISSIONS_DIR
        [--grade-reference notebooks] [--grade-output _build/grades] [--grade-timeout 60]

For each submission the grader builds a *merged* notebook: the chapter's reference notebook from
`--grade-reference` (locked cells, check cells with their hidden tests, and stored outputs), with
only the answer cells taken from the submission (matched by nbgrader `grade_id`, else by cell id).
nbval runs it in a fresh kernel and compares every output with the reference's; the outputs
stored in the submission are never read. pytest reports one item per cell, check cells named
after their exercise (`alice.ipynb::compute_loss`). At the end it writes `gradebook.csv`
(submission,exercise,points,max_points,verdict), `feedback/<submission>.md` and
`answers/<submission>.md` (the chapter's questions with the student's written answers, which the
grader does not mark: they are for whoever does) to `--grade-output`.

An exercise earns its points iff its answer cell ran without error and its check cell printed only
✔ lines that match the reference's output. Anything else — a stub, an exception, a syntax error,
an infinite loop (per-cell timeout), a deleted, duplicated or renamed answer — scores zero for
that exercise only, with a verdict saying why, and grading goes on. Answer cells are read before
they run (`policy.answer_problem`): one that imports the package, patches other objects or reaches the
process is refused. Each kernel works in an empty temporary folder, and the package and reference
files are fingerprinted after each submission. None of this is a sandbox: grade untrusted work in
a disposable container (book/grader_guide.md, "Trust").
"""

from __future__ import annotations

import ast
import contextlib
import copy
import csv
import hashlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

import nbformat
import pytest
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, RunningKernel
from nbval.plugin import IPyNbCell, IPyNbFile, NbCellError, get_sanitize_patterns

from .checks import EXERCISES, RAISE_ENVS
from .export import write_lms_csv
from .policy import answer_problem
from .release import MARKDOWN_STUB, stub_source

PACKAGE_DIR = Path(__file__).resolve().parents[1]

GRADER = "medsight_lab_grader"
GRADEBOOK_COLUMNS = ["submission", "exercise", "points", "max_points", "verdict"]
LMS_CSV = "lms_grades.csv"       # the same grades, one row per student (grading/export.py)


def pytest_addoption(parser):
    group = parser.getgroup("medsight_lab grading")
    group.addoption("--grade", metavar="SUBMISSIONS_DIR",
                    help="grade every notebook in this folder against the reference chapters")
    group.addoption("--grade-reference", metavar="DIR", default="notebooks",
                    help="the instructor notebooks (default: notebooks)")
    group.addoption("--grade-output", metavar="DIR", default="_build/grades",
                    help="where gradebook.csv, feedback/, answers/ and merged/ go "
                         "(default: _build/grades)")
    group.addoption("--grade-timeout", metavar="SECONDS", type=float, default=60.0,
                    help="per-cell time limit (default: 60)")


@pytest.hookimpl(trylast=True)   # after the cache plugin, whose folder is moved below
def pytest_configure(config):
    if not config.option.grade:
        return
    submissions = Path(config.option.grade).resolve()
    if not submissions.is_dir():
        raise pytest.UsageError(f"--grade: {submissions} is not a folder")
    reference = Path(config.option.grade_reference).resolve()
    if not any(reference.glob("*.ipynb")):
        raise pytest.UsageError(f"--grade-reference: no notebooks in {reference}")
    output = Path(config.option.grade_output).resolve()
    config.args[:] = [str(submissions)]          # grade the submissions, not the test suite
    if getattr(config, "cache", None) is not None:
        # pytest takes the submissions folder for its rootdir and would write its cache there.
        config.cache._cachedir = output / ".pytest_cache"
    config.option.nbval_cell_timeout = config.option.grade_timeout
    # `pytest --nbval ... --grade DIR` must not also run each submission as it was handed in
    # (that would compare the student's own stored outputs): only merged notebooks are graded.
    config.option.nbval = config.option.nbval_lax = False
    if config.option.nbval_sanitize_with is None and (reference / "nbval_sanitize.cfg").exists():
        config.option.nbval_sanitize_with = str(reference / "nbval_sanitize.cfg")
    config.pluginmanager.register(Grader(submissions, reference, output,
                                         config.option.nbval_sanitize_with), GRADER)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass
class ExerciseResult:
    exercise: str
    max_points: int
    problem: str | None = None       # set when the submission's answer cell could not be used
    answer_error: str | None = None
    check_ran: bool = False
    check_error: str | None = None
    check_lines: list = field(default_factory=list)
    check_matches_reference: bool = False

    def verdict(self):
        """(points, verdict line)."""
        reason = self.problem or self.answer_error or self.check_error
        if reason:
            return 0, reason
        if not self.check_ran:
            return 0, "the check did not run"
        crosses = [line for line in self.check_lines if line.startswith("✘")]
        if crosses:
            return 0, crosses[0]
        if not self.check_lines or not all(line.startswith("✔") for line in self.check_lines):
            return 0, "the check printed no verdict (did your code print or change `check`?)"
        if not self.check_matches_reference:
            return 0, "the check's output differs from the reference's"
        return self.max_points, " ".join(self.check_lines)


@dataclass
class SubmissionResult:
    name: str                          # path relative to the submissions folder
    chapter: str | None = None
    exercises: dict = field(default_factory=dict)
    problem: str | None = None         # the whole submission could not be graded
    written: str | None = None         # its answers to the chapter's questions (not graded)

    def rows(self):
        if self.problem and not self.exercises:
            return [[self.name, "-", 0, 0, self.problem]]
        rows = []
        for result in self.exercises.values():
            points, verdict = (0, self.problem) if self.problem else result.verdict()
            rows.append([self.name, result.exercise, points, result.max_points, verdict])
        return rows

    def feedback(self):
        rows = self.rows()
        total, available = sum(r[2] for r in rows), sum(r[3] for r in rows)
        lines = [f"# Feedback on {self.name}", ""]
        if self.chapter:
            lines.append(f"Chapter: `{self.chapter}`")
        lines += [f"Total: **{total} / {available} points**", ""]
        for _, exercise, points, max_points, verdict in rows:
            lines += [f"## {exercise}: {points} / {max_points}", "", verdict, ""]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Merging a submission into the reference notebook
# ---------------------------------------------------------------------------------------------

def _nbgrader(cell):
    """A cell's nbgrader metadata; {} when a submission mangled it into something else."""
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return nbgrader if isinstance(nbgrader, dict) else {}


def _grade_id(cell):
    grade_id = _nbgrader(cell).get("grade_id")
    return grade_id if isinstance(grade_id, str) else None


def _is_answer(cell):
    return bool(_nbgrader(cell).get("solution")) and cell.cell_type == "code"


def _check_of(cell):
    """The exercise id of a check cell, else None."""
    nbgrader = _nbgrader(cell)
    grade_id = _grade_id(cell) or ""
    return grade_id[:-len("_check")] if nbgrader.get("grade") and grade_id.endswith("_check") \
        else None


def package_names(notebook):
    """Names a chapter's locked cells bind to medsight_lab (`ml`, ...). `check` is left out: the
    check cells import it afresh, so an answer that rebinds the name changes nothing, and the
    routes that would change the function itself (its `__code__`, `functools.wraps`) are refused
    by the attribute rules."""
    names = {"medsight_lab"}
    for cell in notebook.cells:
        if cell.cell_type != "code" or _is_answer(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names
                          if a.name.split(".")[0] == "medsight_lab"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medsight_lab"):
                names |= {a.asname or a.name for a in node.names}
    return names - {"check"}


def merge(reference, submission):
    """The reference notebook with the submission's answer cells, and {exercise: problem} for
    answers that could not be taken (missing, duplicated, touching the grader)."""
    merged = copy.deepcopy(reference)
    by_grade_id, by_cell_id = {}, {}
    for cell in submission.cells:
        if cell.cell_type == "code":
            if not isinstance(cell.get("source"), str):
                continue                  # not a cell we can take (a mangled file)
            if _grade_id(cell):
                by_grade_id.setdefault(_grade_id(cell), []).append(cell)
            elif isinstance(cell.get("id"), str):
                by_cell_id.setdefault(cell["id"], []).append(cell)
    problems, forbidden = {}, package_names(reference)
    for cell in merged.cells:
        if _check_of(cell):
            # Re-import `check` right before using it: whatever an answer did to the name.
            cell.source = "from medsight_lab.grading import check\n" + cell.source
        if not _is_answer(cell):
            continue
        exercise = _grade_id(cell) or cell.get("id")
        answers = by_grade_id.get(exercise) or by_cell_id.get(cell.get("id"), [])
        if not answers:
            problems[exercise] = (f"your answer cell for {exercise} is missing (deleted, or its "
                                  "cell metadata lost?): nothing to grade")
        elif len(answers) > 1:
            problems[exercise] = (f"your notebook has {len(answers)} answer cells for {exercise} "
                                  "(a duplicated cell?): keep exactly one")
        elif problem := answer_problem(answers[0].source, forbidden):
            problems[exercise] = problem
        else:
            cell.source = answers[0].source
            continue
        # The student edition's stub: the function exists, so an exercise that calls it is told
        # "calls X, which is not implemented yet" instead of a NameError.
        cell.source = stub_source(cell.source, exercise)
    return merged, problems


def chapter_questions(nb):
    """A reference chapter's questions (its "## Questions" section), or ""."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "\n## Questions\n" in cell.source:
            return cell.source.split("\n## Questions\n", 1)[1].strip()
    return ""


def written_answers(nb, chapter):
    """The submission's answers to the chapter's questions: the text of its written-answer cell
    (nbgrader grade_id "<chapter>_questions"), or a note saying why there is none."""
    all_cells = nb.get("cells")
    cells = [c for c in (all_cells if isinstance(all_cells, list) else [])
             if isinstance(c, dict) and c.get("cell_type") == "markdown"
             and _grade_id(c) == f"{chapter}_questions"]
    texts = [c.source.strip() for c in cells if isinstance(c.get("source"), str)]
    if not cells:
        return "(no written answers: the cell under the questions is missing)"
    if all(t in ("", MARKDOWN_STUB) for t in texts):
        return "(no written answers: the cell still reads \"Write your answer here.\")"
    return "\n\n".join(t for t in texts if t not in ("", MARKDOWN_STUB))


def identify_chapter(nb, path, chapters):
    """The submission's chapter: notebook metadata, else the exercises it contains, else its file
    name. None if none of them names a reference chapter."""
    if nb is not None:
        course = nb.metadata.get("medsight_lab")
        chapter = course.get("chapter") if isinstance(course, dict) else None
        if isinstance(chapter, str) and chapter in chapters:
            return chapter
        for cell in nb.cells:
            exercise = EXERCISES.get((_grade_id(cell) or "").removesuffix("_check"))
            if exercise and exercise.chapter in chapters:
                return exercise.chapter
    return next((c for c in sorted(chapters, key=len, reverse=True) if c in path.stem), None)


def read_submission(path):
    """(notebook, None) or (None, why it is not a notebook we can grade)."""
    if path.stat().st_size == 0:
        return None, "empty file: no notebook was submitted"
    try:
        return nbformat.read(path, as_version=4), None
    except Exception as err:  # any parse failure means "not a notebook"
        return None, (f"not a Jupyter notebook ({type(err).__name__}): hand in the .ipynb file "
                      "itself")


# ---------------------------------------------------------------------------------------------
# pytest collection and execution
# ---------------------------------------------------------------------------------------------

class Grader:
    """The plugin's state for one grading run: reference chapters and every submission's result."""

    def __init__(self, submissions, reference, output, sanitize_file=None):
        self.submissions, self.reference, self.output = submissions, reference, output
        self.chapters, self.questions = {}, {}      # chapter -> its file, its questions' text
        for path in sorted(reference.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            chapter = nb.metadata.get("medsight_lab", {}).get("chapter", path.stem)
            self.chapters[chapter], self.questions[chapter] = path, chapter_questions(nb)
        self.results = {}
        # Read once: nothing a submission does to the file later changes how others are compared.
        self.sanitize_patterns = (get_sanitize_patterns(Path(sanitize_file).read_text())
                                  if sanitize_file else {})
        self.fingerprint = self.files_fingerprint()
        self.tampered_by = None          # the submission after which the fingerprint changed

    def files_fingerprint(self):
        """A hash of what grading trusts: the package's source and the reference chapters."""
        digest = hashlib.sha256()
        for path in sorted([*PACKAGE_DIR.rglob("*.py"), *self.reference.glob("*.ipynb"),
                            *self.reference.glob("*.cfg")]):
            digest.update(str(path).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makemodule(self, module_path, parent):
        if module_path.is_relative_to(self.submissions):
            return Ignored.from_parent(parent, path=module_path)   # never import a submission
        return None

    def pytest_collect_file(self, file_path, parent):
        if file_path.is_relative_to(self.submissions) and not file_path.name.startswith("."):
            return Submission.from_parent(parent, path=file_path)
        return None

    def pytest_sessionfinish(self, session, exitstatus):
        results = [self.results[k] for k in sorted(self.results)]
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            for result in results:
                for exercise in result.exercises.values():
                    if not exercise.check_ran and not exercise.problem:
                        exercise.problem = ("not graded: the grading run was interrupted "
                                            "before this check ran; grade again")
        (self.output / "feedback").mkdir(parents=True, exist_ok=True)
        rows = [row for result in results for row in result.rows()]
        with open(self.output / "gradebook.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(GRADEBOOK_COLUMNS)
            writer.writerows(rows)
        write_lms_csv(rows, self.output / LMS_CSV)
        for result in results:
            feedback = self.output / "feedback" / Path(result.name).with_suffix(".md")
            feedback.parent.mkdir(parents=True, exist_ok=True)
            feedback.write_text(result.feedback(), encoding="utf-8")
            if result.written is not None:
                answers = self.output / "answers" / Path(result.name).with_suffix(".md")
                answers.parent.mkdir(parents=True, exist_ok=True)
                answers.write_text(
                    f"# Written answers in {result.name}\n\nChapter: `{result.chapter}` (the "
                    "answer key ends the chapter in the instructor book)\n\n## Questions\n\n"
                    f"{self.questions[result.chapter]}\n\n## Answers\n\n{result.written}\n",
                    encoding="utf-8")

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_sep("-", f"gradebook: {self.output / 'gradebook.csv'}")


class Ignored(pytest.File):
    def collect(self):
        return []


class Unusable(pytest.Item):
    """Stands for a submission that cannot be run at all; fails with the reason."""

    def __init__(self, *, reason, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self):
        raise NbCellError(0, self.reason, "")

    def repr_failure(self, excinfo):
        return self.reason

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}::{self.name}"


@contextlib.contextmanager
def _kernel_environment(ipython_dir):
    """The environment a kernel starts with (it copies it when it is spawned), for that moment
    only: an IPython folder of its own, so that no startup file one submission leaves behind runs
    in the kernel of the next; and checks that print their verdict rather than raise, whatever
    the grader's shell exported for nbgrader."""
    saved = {key: os.environ.get(key) for key in ("IPYTHONDIR", *RAISE_ENVS)}
    os.environ["IPYTHONDIR"] = str(ipython_dir)
    for key in RAISE_ENVS:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Submission(IPyNbFile):
    """One submitted file: collected as the cells of its merged notebook."""

    scratch = None        # the kernel's working folder, while the submission runs
    deadline = None       # time.monotonic() past which the running cell's output is not awaited

    def collect(self):
        """The cells to run; a file that breaks the merge becomes one failing item, so that one
        mangled notebook never stops the grading of the others."""
        try:
            items = list(self._collect())
        except Exception as err:  # any defect of the file itself: report it, grade the rest
            self.nb = None
            problem = (f"not a gradable notebook ({type(err).__name__}: "
                       f"{str(err).splitlines()[0][:120] if str(err) else 'no details'}): "
                       "hand in the notebook as Jupyter saved it")
            self.result.problem = problem
            items = [Unusable.from_parent(self, name="submission", reason=problem)]
        yield from items

    def _collect(self):
        grader = self.config.pluginmanager.get_plugin(GRADER)
        self.grader = grader
        name = self.path.relative_to(grader.submissions).as_posix()
        self.result = result = grader.results[name] = SubmissionResult(name)
        self.nb, self.replay = None, []
        submission, problem = read_submission(self.path)
        result.chapter = identify_chapter(submission, self.path, grader.chapters)
        if submission is not None and result.chapter is not None:
            result.written = written_answers(submission, result.chapter)
        if result.chapter is None:
            result.problem = problem or ("unknown chapter: the notebook names none of the course's "
                                         f"chapters ({', '.join(grader.chapters)})")
            yield Unusable.from_parent(self, name="submission", reason=result.problem)
            return
        reference = nbformat.read(grader.chapters[result.chapter], as_version=4)
        for cell in reference.cells:
            exercise = _check_of(cell)
            if exercise:
                points = _nbgrader(cell).get("points", 0)
                result.exercises[exercise] = ExerciseResult(exercise, points)
        if problem:
            result.problem = problem
            yield Unusable.from_parent(self, name="submission", reason=problem)
            return
        self.nb, problems = merge(reference, submission)
        for exercise, text in problems.items():
            if exercise in result.exercises:
                result.exercises[exercise].problem = text
        merged = grader.output / "merged" / Path(name).with_suffix(".ipynb")
        merged.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(self.nb, merged)
        code_cells = [c for c in self.nb.cells if c.cell_type == "code"]
        for number, cell in enumerate(code_cells):
            exercise = _check_of(cell) or (_grade_id(cell) if _is_answer(cell) else None)
            role = "check" if _check_of(cell) else "answer" if _is_answer(cell) else "other"
            options = {"check": role != "answer", "skip": False, "check_exception": False}
            yield Cell.from_parent(self, name=exercise if role == "check" else f"Cell {number}",
                                   cell_num=number, cell=cell, options=options, role=role,
                                   exercise=exercise)

    def setup(self):
        if self.nb is None:
            return
        if self.grader.tampered_by is not None:
            self.result.problem = (f"not graded: the course package or the reference chapters "
                                   f"changed on disk while {self.grader.tampered_by} was graded; "
                                   "restore them (git checkout -- medsight_lab notebooks) and "
                                   "grade again")
            return
        # Each kernel works in an empty folder of its own: nothing it writes there reaches the
        # reference chapters or the next submission.
        self.scratch = tempfile.mkdtemp(prefix="medsight-grade-")
        self.start_kernel()
        self.setup_sanitize_files()

    def setup_sanitize_files(self):
        self.sanitize_patterns.update(self.grader.sanitize_patterns)

    def start_kernel(self):
        option = self.config.option
        with _kernel_environment(Path(self.scratch) / "ipython"):
            self.kernel = RunningKernel(option.nbval_kernel_name or CURRENT_ENV_KERNEL_NAME,
                                        cwd=self.scratch,
                                        startup_timeout=option.nbval_kernel_startup_timeout)

    def teardown(self):
        super().teardown()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self.scratch is not None and self.grader.tampered_by is None \
                and self.grader.files_fingerprint() != self.grader.fingerprint:
            self.grader.tampered_by = self.result.name
            self.result.problem = ("not graded: while this submission ran, the course package or "
                                   "the reference chapters changed on disk")

    def get_kernel_message(self, timeout=None, stream="iopub"):
        """nbval keeps reading output after a timeout until the kernel falls silent; a cell that
        ignores the interrupt and keeps printing would hold it forever. Past the cell's hard
        deadline the read fails as if the kernel were silent, and nbval stops the kernel."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Empty
        return super().get_kernel_message(timeout=timeout, stream=stream)

    def revive_kernel(self):
        """A cell killed the kernel (or nbval stopped it after a timeout): start a new one and
        re-run the cells that had run, so that only the exercise at fault is lost."""
        if self.kernel is not None and self.kernel.is_alive():
            self.kernel.stop()
        self.start_kernel()
        for source in self.replay:
            msg_id = self.kernel.execute_cell_input(source, allow_stdin=False)
            self.kernel.await_reply(msg_id, timeout=self.config.option.nbval_cell_timeout)

    def exercise(self, exercise):
        return self.result.exercises.get(exercise)


def _error_words(item, failure):
    """(kind, text) of what went wrong in a cell: "timeout", an exception's name, or None."""
    if failure is not None and "Timeout" in str(failure):
        return "timeout", ""
    error = next((o for o in item.test_outputs or [] if o.output_type == "error"), None)
    if error is not None:
        lines = (error.get("evalue") or "").strip().splitlines()
        # "(3348183891.py, line 2)": the kernel's file name changes from run to run.
        text = re.sub(r"\((?:\S+\.py|<[^>]*>), (line \d+)\)", r"(\1)", lines[0] if lines else "")
        return error.get("ename", "Error"), text[:200]
    return None, ""


class Cell(IPyNbCell):
    def __init__(self, *, role, exercise, **kwargs):
        super().__init__(**kwargs)
        self.role, self.exercise = role, exercise

    def setup(self):
        """nbval xfails every cell after a timeout; here each cell is graded on its own."""

    def reportinfo(self):
        return self.path, 0, f"{self.path.name}::{self.name}"

    def repr_failure(self, excinfo):
        result = self.parent.exercise(self.exercise)
        if self.role == "check" and result is not None:
            return result.verdict()[1]          # the grader reads what the student will read
        return super().repr_failure(excinfo)

    def compare_outputs(self, test, ref, skip_compare=None):
        """Compare without stderr: warnings never cost marks."""
        def keep(outputs):
            return [o for o in outputs if not (o.output_type == "stream" and o.name == "stderr")]
        return super().compare_outputs(keep(test), keep(ref), skip_compare)

    def runtest(self):
        submission = self.parent
        if submission.result.problem:
            pytest.skip(submission.result.problem)
        if not submission.kernel.is_alive():
            submission.revive_kernel()
        timeout = self.config.option.nbval_cell_timeout
        # The cell's time, then the time nbval gives an interrupted cell to fall silent.
        submission.deadline = time.monotonic() + timeout + 2 * self.output_timeout
        try:
            super().runtest()
        except Exception as failure:
            self.record(failure)
            raise
        finally:
            submission.deadline = None
        self.record(None)
        result = submission.exercise(self.exercise)
        if self.role == "check" and result is not None and result.verdict()[0] == 0:
            raise NbCellError(self.cell_num, result.verdict()[1], self.cell.source)

    def record(self, failure):
        submission, result = self.parent, self.parent.exercise(self.exercise)
        if failure is None:
            submission.replay.append(self.cell.source)
        if result is None or self.role == "other":
            return
        kind, text = _error_words(self, failure)
        timeout = self.config.option.nbval_cell_timeout
        if self.role == "answer":
            if kind == "timeout":
                result.answer_error = (f"your answer cell did not finish within {timeout:g} s "
                                       "(an infinite loop, or code that stopped the kernel?)")
            elif kind in ("SyntaxError", "IndentationError", "TabError"):
                result.answer_error = f"syntax error in your answer: {text}"
            elif kind == "NotImplementedError":
                result.answer_error = "not implemented yet"
            elif kind:
                result.answer_error = f"your answer cell raised {kind}: {text}"
            elif failure is not None:
                result.answer_error = f"your answer cell failed: {str(failure).splitlines()[0]}"
            return
        result.check_ran = True
        stdout = "".join(o.text for o in self.test_outputs or []
                         if o.output_type == "stream" and o.name == "stdout")
        result.check_lines = [line for line in stdout.splitlines() if line.strip()]
        result.check_matches_reference = failure is None
        function = EXERCISES[self.exercise].function if self.exercise in EXERCISES else "function"
        if kind == "NameError":
            result.check_error = (f"{text}: was the function `{function}` renamed or its cell "
                                  "deleted?")
        elif kind == "timeout":
            result.check_error = (f"the check did not finish within {timeout:g} s (an infinite "
                                  "loop in your function?)")
        elif kind:
            result.check_error = f"the check cell raised {kind}: {text}"
