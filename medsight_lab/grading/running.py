"""Running and judging one submission: the reference chapters, the sandbox job, the verdicts.

`Chapter.read(path)` reads what grading needs from an instructor notebook: its exercises (check
cells, in order, with their points), their reference answer cells, the chapter's imports that an
answer may rely on (`import torch.nn.functional as F`) and the names it binds to the package.

`grade(chapter, answers, problems, settings)` judges one submission's answers: a missing answer,
or one the static answer policy refuses (policy.py: a first filter that names a rule; the sandbox,
not the policy, is what contains an answer), gets its verdict without running; the others go to
ONE sandboxed runner (sandbox.py, runner.py), one exercise at a time. The runner execs each answer
cell in a fresh namespace, with the chapter's imports and the *reference* answers of the
chapter's earlier exercises (so compute_loss is judged on its own, whatever the student's
shifted_cross_entropy does), and calls the student's function on the visible and hidden cases.
The grader sends the inputs, computes the expected values itself, and judges the returned data
with checks.judge_suite: the verdicts of check(), never a line the student's code printed.
"""

from __future__ import annotations

import ast
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import cells, checks, runner, sandbox
from .policy import ALLOWED_IMPORTS, answer_problem

STARTUP_S = 60           # the runner's own start (Python, torch) before the first exercise


@dataclass
class Chapter:
    name: str
    exercises: dict                  # exercise id -> points, in the chapter's order
    answers: dict                    # exercise id -> the reference answer cell
    imports: str                     # the chapter's imports of allowed modules, as code
    package_names: set               # names the chapter binds to medsight_lab
    questions: str = ""              # its "## Questions" section

    @classmethod
    def read(cls, path):
        nb = nbformat.read(path, as_version=4)
        course = nb.metadata.get("medsight_lab", {})
        exercises = {cells.check_of(c): cells.nbgrader(c).get("points", 0)
                     for c in nb.cells if cells.check_of(c)}
        answers = {cells.grade_id(c): c for c in nb.cells
                   if cells.is_code_answer(c) and cells.grade_id(c) in exercises}
        return cls(course.get("chapter", Path(path).stem), exercises, answers,
                   chapter_imports(nb), package_names(nb), chapter_questions(nb))


def _locked_code(nb):
    """The parsed source of each of the chapter's code cells that is not an answer cell."""
    for cell in nb.cells:
        if cell.cell_type == "code" and not cells.is_answer_cell(cell):
            try:
                yield ast.parse(cell.source)
            except SyntaxError:
                continue


def chapter_imports(nb):
    """The import statements of the chapter's locked code cells that an answer may use (modules
    in the policy's ALLOWED_IMPORTS), one per line."""
    lines = []
    for tree in _locked_code(nb):
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [a for a in node.names if a.name.split(".")[0] in ALLOWED_IMPORTS]
                lines += [ast.unparse(ast.Import([a])) for a in names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 \
                    and (node.module or "").split(".")[0] in ALLOWED_IMPORTS:
                lines.append(ast.unparse(node))
    return "\n".join(dict.fromkeys(lines))


def package_names(nb):
    """Names a chapter's locked cells bind to medsight_lab (`ml`, ...). `check` is left out: an
    answer that defines a variable called `check` changes nothing the grader uses."""
    names = {"medsight_lab"}
    for tree in _locked_code(nb):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names
                          if a.name.split(".")[0] == "medsight_lab"}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medsight_lab"):
                names |= {a.asname or a.name for a in node.names}
    return names - {"check"}


def chapter_questions(nb):
    """A reference chapter's questions (its "## Questions" section), or ""."""
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "\n## Questions\n" in cell.source:
            return cell.source.split("\n## Questions\n", 1)[1].strip()
    return ""


@dataclass(frozen=True)
class Settings:
    exercise_timeout: float = 30.0          # one exercise, all its cases, in the sandbox
    unsafe: bool = False                    # --grade-unsafe: no sandbox
    policy: bool = True                     # refuse what policy.answer_problem refuses
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)

    @property
    def call_limit(self):
        """One call of the student's function (and the answer cell's own code)."""
        return min(checks.TIME_LIMIT_S, self.exercise_timeout)


# ---------------------------------------------------------------------------------------------
# The job for the runner
# ---------------------------------------------------------------------------------------------

def _message(chapter, exercise, source, suites, settings):
    """The runner's job for one exercise (bytes): its answer cell, the reference answers of the
    chapter's earlier exercises, the chapter's imports, its cases (visible, then hidden)."""
    record, arrays, encoded = checks.EXERCISES[exercise], {}, []
    for number, case in enumerate(c for _, group in suites for c in group):
        prefix = f"c{number}"
        projection_keys = None
        if case.grad:
            expected = record.reference(*checks._clone(case.args), **case.kwargs)
            projection_keys = []
            for weights in checks.projection(expected):
                projection_keys.append(f"{prefix}_p{len(projection_keys)}")
                arrays[projection_keys[-1]] = weights.numpy()
        encoded.append({
            "args": runner.encode(list(case.args), arrays, f"{prefix}_a"),
            "kwarg_names": list(case.kwargs),
            "kwargs": runner.encode(list(case.kwargs.values()), arrays, f"{prefix}_k"),
            "grad_args": list(record.grad_args) if case.grad else [],
            "projection": projection_keys})
    order = list(chapter.exercises)
    earlier = order[:order.index(exercise)]
    job = {"function": checks.EXERCISES[exercise].function, "answer": source,
           "helpers": [cells.source(chapter.answers[e]) for e in earlier if e in chapter.answers],
           "preamble": chapter.imports, "cases": encoded, "call_limit": settings.call_limit,
           "exercise_limit": settings.exercise_timeout}
    return runner.pack(job, arrays)


UNREADABLE = ("its results could not be read back (did your code write to the runner's result "
              "channel?)")


def verdict_of(exercise, answer, suites, settings):
    """(passed, verdict) from the runner's answer (bytes) for one exercise. Bytes that a
    student's code slipped into, or forged as, its own result spoil that result only: whatever
    they are, they fail."""
    try:
        tree, arrays = runner.unpack(answer)
        return _verdict(exercise, checks.EXERCISES[exercise].function, tree, arrays, suites,
                        settings)
    except Exception:  # noqa: BLE001 - a result the grader cannot read is no result
        return False, f"✘ {exercise}: {UNREADABLE}."


# ---------------------------------------------------------------------------------------------
# From the runner's data to a verdict
# ---------------------------------------------------------------------------------------------

def _outcome(entry, arrays, case, settings):
    status = entry.get("status")
    if status == "ok":
        grads = entry.get("grads")
        return checks.Outcome(
            None, runner.decode(entry["out"], arrays), tuple(runner.decode(entry["args_after"],
                                                                           arrays)),
            None if grads is None else [None if g is None else runner.decode(g, arrays)
                                        for g in grads])
    if status == "timeout":
        return checks.Outcome(checks.timeout_problem(settings.call_limit, case.label))
    error = entry.get("error") or {}
    if error.get("type") == "NotImplementedError":
        return checks.Outcome(checks.NOT_IMPLEMENTED)
    return checks.Outcome(checks.raised_problem(error.get("type", "an error"),
                                                error.get("message", ""), case.label))


def _verdict(exercise, function, tree, arrays, suites, settings):
    """(passed, verdict) from one exercise's result tree."""
    if tree.get("setup_error"):
        error = tree["setup_error"]
        return False, (f"not graded: the course's own code for this exercise failed in the "
                       f"sandbox ({error.get('type')}: {error.get('message')}); tell the course's "
                       "maintainers, and grade again once it is fixed")
    if tree.get("exercise_timeout"):
        return False, (f"✘ {exercise}: did not finish within {settings.exercise_timeout:g} s (an "
                       "infinite loop, or an answer that ignores the time limit?).")
    if tree.get("runner_error"):
        error = tree["runner_error"]
        return False, (f"✘ {exercise}: your code stopped the process that ran it "
                       f"({error.get('type')}: {error.get('message')}).")
    if tree.get("cell_timeout"):
        return False, (f"your answer cell did not finish within {settings.call_limit:g} s (an "
                       "infinite loop outside your function?)")
    if not tree.get("defined"):
        error = tree.get("cell_error")
        if error is None:
            return False, (f"your answer cell does not define `{function}`: was the function "
                           f"`{function}` renamed or its cell deleted?")
        kind, text = error.get("type"), error.get("message", "")
        if kind == "NotImplementedError":
            return False, "not implemented yet"
        if kind in ("SyntaxError", "IndentationError", "TabError"):
            return False, f"syntax error in your answer: {text}"
        return False, f"your answer cell raised {kind}: {text}"
    entries, lines, number = tree.get("cases", []), [], 0
    for suite, suite_cases in suites:
        start, number = number, number + len(suite_cases)

        positions = {id(case): start + i for i, case in enumerate(suite_cases)}

        def outcome_of(case, positions=positions):
            index = positions[id(case)]
            if index >= len(entries):
                return checks.Outcome(f"no result for {case.label} (the process that ran your "
                                      "code stopped, or its results were tampered with)")
            return _outcome(entries[index], arrays, case, settings)
        result = checks.judge_suite(exercise, suite, suite_cases, outcome_of)
        if not result.passed:
            return False, result.message
        lines.append(result.message)
    return True, " ".join(lines)


@functools.lru_cache(maxsize=None)
def _cases(exercise, suite):
    """An exercise's cases, built once per grading process rather than once per submission
    (about a second for a chapter's). Nothing changes them: every use takes a copy of a case's
    tensors (checks._clone) or encodes them."""
    return tuple(checks.cases(exercise, suite))


def grade(chapter, answers, problems, settings=Settings()):
    """{exercise: (points, verdict)} for one submission. `answers`: {exercise: answer cell
    source}; `problems`: {exercise: why the submission has no usable answer cell}."""
    verdicts, to_run = {}, {}
    for exercise, points in chapter.exercises.items():
        if exercise in problems:
            verdicts[exercise] = (0, problems[exercise])
        elif settings.policy and (refused := answer_problem(answers[exercise],
                                                            chapter.package_names)):
            verdicts[exercise] = (0, f"refused: {refused}")
        else:
            to_run[exercise] = answers[exercise]
    if not to_run:
        return verdicts
    suites = {e: [(suite, _cases(e, suite)) for suite in ("visible", "hidden")] for e in to_run}
    messages = [_message(chapter, e, source, suites[e], settings) for e, source in to_run.items()]
    budget = STARTUP_S + len(to_run) * (settings.exercise_timeout + 5)
    started = time.monotonic()
    run = sandbox.run(messages, budget, settings.limits, unsafe=settings.unsafe)
    for number, exercise in enumerate(to_run):
        if number < len(run.answers):
            passed, verdict = verdict_of(exercise, run.answers[number], suites[exercise],
                                         settings)
            verdicts[exercise] = (chapter.exercises[exercise] if passed else 0, verdict)
            continue
        if run.too_large:
            why = "your code wrote too much to the runner's output"
        elif run.timed_out:
            why = f"the sandbox ran past its {time.monotonic() - started:.0f} s limit"
        else:
            why = (f"the sandbox ended early (exit status {run.returncode}; "
                   f"{(run.stderr.strip().splitlines() or ['no message'])[-1][:160]})")
        verdicts[exercise] = (0, f"not graded: {why} before this exercise ran; grade this "
                                 "submission again, alone, to see why")
    return {exercise: verdicts[exercise] for exercise in chapter.exercises}
