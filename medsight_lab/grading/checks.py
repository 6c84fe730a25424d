"""The judge of the exercises, and `check`, the chapters' check cells.

`check(exercise_id, fn)` (the chapters' check cells) runs the student's function here, on the
visible cases, and prints one verdict line a student can act on. The grader runs the same cases
(and the hidden ones) in a sandbox instead (grading/runner.py), gets the outputs back as data, and
judges them with the same `judge_suite`: one judge, two ways of calling the student's function.

What is judged comes from the exercise's record (grading/exercises/: one module per chapter, one
record per exercise): its visible cases, its reference (the package's implementation) and its
known mistakes. The judge compares an output with the reference on the same inputs, with a
tolerance, so the verdict is the same on CPU and GPU and never shows a number. When the answer is
wrong it recomputes the record's known mistakes on the same inputs (unshifted cross-entropy,
unnormalised target, missing scale, ...) and names the one the student's output matches. The
hidden suite (fresh random inputs, edge cases, gradients equal the reference's) lives outside the
package, in the instructor's `instructor/hidden_cases.py`; inputs changed in place fail every
suite.

While check() runs the student's function in the student's own kernel, the package's own
implementations of the exercises (each record's `guarded` functions) are switched off (their code
swapped for a stub that records the call), so that `compute_loss = ml.compute_loss` fails there
too; in the grader's sandbox there is no package at all.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import io
import os
import re
import signal
import textwrap
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .exercises import EXERCISES, Case, Exercise  # noqa: F401 (Case, Exercise: importable here)
from .exercises.record import matches, same_shape
from .policy import answer_problem
from .runner import Opaque, PatchScore, projected_gradients, tensors

TIME_LIMIT_S = 10          # per call of the student's function


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    message: str           # the verdict line, as printed


# ---------------------------------------------------------------------------------------------
# Cases: the visible ones in the exercises' records, the hidden ones in the instructor's tree
# ---------------------------------------------------------------------------------------------

# Beside the package in the instructor's checkout (the package is installed from it in editable
# mode); absent from the student edition and from the grading sandbox.
HIDDEN_CASES_FILE = Path(__file__).resolve().parents[2] / "instructor" / "hidden_cases.py"
HIDDEN_CASES_ENV = "MEDSIGHT_HIDDEN_CASES"      # another location, e.g. for a grading server


class HiddenCasesMissing(LookupError):
    """The hidden cases are not on this machine (e.g. in the student edition)."""


def hidden_cases_file():
    return Path(os.environ.get(HIDDEN_CASES_ENV) or HIDDEN_CASES_FILE)


def hidden_cases(exercise_id):
    """The exercise's hidden cases, read from the instructor's `hidden_cases.py`: what the
    function its record names (`hidden`) returns."""
    path = hidden_cases_file()
    if not path.is_file():
        raise HiddenCasesMissing(f"the hidden cases are not on this machine ({path} is missing): "
                                 "they exist only in the instructor's copy of the course")
    module = _load_hidden_module(str(path), path.stat().st_mtime_ns)
    make = getattr(module, EXERCISES[exercise_id].hidden, None)
    if make is None:
        raise HiddenCasesMissing(f"{path} has no hidden cases for {exercise_id}")
    return make()


@functools.lru_cache(maxsize=4)
def _load_hidden_module(path, mtime):
    spec = importlib.util.spec_from_file_location("medsight_hidden_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(exercise_id, suite):
    """The cases of one suite ("visible" or "hidden") of an exercise."""
    return EXERCISES[exercise_id].cases() if suite == "visible" else hidden_cases(exercise_id)


# ---------------------------------------------------------------------------------------------
# What one call of the student's function gave: in this process (check) or from the sandbox
# ---------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """One call of the student's function on one case, as data. `problem` (in words) when the
    call did not return; else the output, the arguments as they are after the call, and, for a
    gradient case, the gradients of `projection(expected)` w.r.t. the `record.grad_args` tensors
    (None where no gradient flowed)."""
    problem: str | None = None
    out: object = None
    args_after: tuple = ()
    grads: list | None = None


def projection(expected):
    """The fixed random weights, one per output, whose weighted sum's gradient is compared."""
    g = torch.Generator().manual_seed(1234)
    outs = expected if isinstance(expected, (tuple, list)) else (expected,)
    return [torch.randn(o.numel(), generator=g) for o in outs]


def grad_inputs(record, args):
    """The tensors whose gradients are compared: the float tensors of the `grad_args`."""
    return [t for i in record.grad_args for t in tensors(args[i]) if t.is_floating_point()]


def timeout_problem(seconds, label):
    return f"did not finish within {seconds:g} s on {label}: an infinite loop?"


def raised_problem(kind, message, label):
    return f"your function raised {kind} on {label}: {message}"


NOT_IMPLEMENTED = "not implemented yet: replace `raise NotImplementedError` with your code"


def _not_implemented(err, fn):
    """The stub message, or which other exercise's stub the answer called."""
    stub = re.fullmatch(r"(\w+): your code here", str(err))
    other = next((e for i, e in EXERCISES.items() if stub and stub.group(1) in (i, e.function)),
                 None)
    if other is not None and other.function != getattr(fn, "__name__", None):
        return (f"your function calls {other.function}, which is not implemented yet: "
                "do that exercise first")
    return NOT_IMPLEMENTED


# -- in this process: the student's own check() ------------------------------------------------

class ReferenceCalled(Exception):
    """Raised by the package's exercise functions while a student's answer is being checked."""


class _TimeUp(BaseException):
    """A BaseException, so that a student's `except Exception` cannot swallow it."""


# The package's implementations of the exercises (each record's `guarded`): switched off while
# check() runs an answer in the student's own kernel. (The grader needs no such thing: its sandbox
# has no package.)
_GUARDED = [guarded for exercise in EXERCISES.values() for guarded in exercise.guarded]
_called_references: list = []


def _tripwire(*args, **kwargs):
    # This code runs as the body of a guarded package function, i.e. with that module's globals,
    # so it reaches this module through the import system rather than by name.
    checks = __import__("medsight_lab.grading.checks", fromlist=["ReferenceCalled"])
    name = __import__("sys")._getframe().f_code.co_name
    checks._called_references.append(name)
    raise checks.ReferenceCalled(f"medsight_lab's {name} is switched off while your answer "
                                 "is checked")


@contextlib.contextmanager
def _references_switched_off():
    """Swap the code of the package's exercise functions for the tripwire. Swapping `__code__`
    (not the module attribute) catches every alias: `f = ml.compute_loss`, `from ... import`."""
    saved = []
    try:
        for module, name in _GUARDED:
            fn = getattr(module, name)
            saved.append((fn, fn.__code__))
            fn.__code__ = _tripwire.__code__.replace(co_name=name)
        yield
    finally:
        for fn, code in saved:
            fn.__code__ = code


@contextlib.contextmanager
def _time_limit(seconds):
    """Interrupt the block after `seconds` (SIGALRM; only possible on the main thread)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() != threading.main_thread():
        yield
        return

    def time_up(signum, frame):
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, time_up)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@torch.enable_grad()   # whatever the notebook did to autograd, the gradient checks must see it
def call_in_process(record, fn, case):
    """Run the student's function on `case` here, printing silenced and the package's exercise
    functions switched off; the `Outcome`."""
    args = _clone(case.args)
    inputs = grad_inputs(record, args) if case.grad else []
    for t in inputs:
        t.requires_grad_()
    del _called_references[:]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings(), _references_switched_off(), _time_limit(TIME_LIMIT_S):
            warnings.simplefilter("ignore")
            out = fn(*args, **case.kwargs)
    except _TimeUp:
        return Outcome(timeout_problem(TIME_LIMIT_S, case.label))
    except (Exception, SystemExit) as err:  # the student's error is the verdict, never a crash
        if not _called_references:
            if isinstance(err, NotImplementedError):
                return Outcome(_not_implemented(err, fn))
            return Outcome(raised_problem(type(err).__name__, _first_line(err), case.label))
    if _called_references:
        return Outcome(f"your answer calls medsight_lab's own {_called_references[0]} — write it "
                       "yourself")
    grads = None
    if case.grad:
        expected = record.reference(*_clone(case.args), **case.kwargs)
        grads = projected_gradients(out, inputs, projection(expected))
    return Outcome(None, out, args, grads)


# ---------------------------------------------------------------------------------------------
# Judging one outcome: the same code for check() and for the grader
# ---------------------------------------------------------------------------------------------

def _clone(x, requires_grad=False):
    if isinstance(x, PatchScore):     # a copy, so that a change the answer makes to it shows
        return PatchScore(*(t.detach().clone() for t in tensors(x)), x.square)
    if isinstance(x, torch.Tensor):
        x = x.detach().clone()
        return x.requires_grad_() if requires_grad and x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(item, requires_grad) for item in x)
    return x


def _describe(x):
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    name = x.type_name if isinstance(x, Opaque) else type(x).__name__
    return "None" if x is None else f"{'an' if name[:1] in tuple('aeiou') else 'a'} {name}"


def _first_line(err):
    text = str(err).strip().splitlines()
    return (text[0][:200] if text else "").strip()


def _structure_problem(out, record):
    """Wrong type or number of returned values, in words."""
    names = record.outputs
    if len(names) > 1:
        if not isinstance(out, (tuple, list)):
            return f"returned {_describe(out)}, expected a tuple ({', '.join(names)})"
        if len(out) != len(names):
            return (f"returned a {type(out).__name__} of {len(out)}, expected "
                    f"({', '.join(names)})")
    for name, item in zip(names, out if len(names) > 1 else (out,)):
        if not isinstance(item, torch.Tensor):
            what = ("your function returned " + _describe(item) if len(names) == 1
                    else f"you return {_describe(item)} as the {name}")
            why = " (keep the result a tensor, so that gradients can flow)" if record.grad_args \
                else " (e.g. x.mean(), not x.mean().item())"
            return f"{what}, expected a torch tensor{why}"
    return None


def _shape_problem(out, expected, record):
    items, wanted = (out, expected) if len(record.outputs) > 1 else ((out,), (expected,))
    shapes = [tuple(i.shape) for i in items]
    if len(items) == 2 and shapes == [tuple(w.shape) for w in reversed(wanted)] \
            and shapes[0] != shapes[1]:
        names = record.outputs
        return f"returned ({', '.join(reversed(names))}): return ({', '.join(names)})"
    for name, item, want, spelt in zip(record.outputs, items, wanted, record.shapes):
        if not same_shape(item, want):
            wanted_shape = ("a single number (a 0-dim tensor)" if spelt == "a scalar"
                            else f"{spelt} = {tuple(want.shape)}")
            return f"shape of the {name}: {tuple(item.shape)}, expected {wanted_shape}"
    return None


def _value_problem(record, out, expected, case):
    """Why `out` differs from `expected`: a known mistake if one matches, else what and where."""
    found = record.known_mistake(out, expected, _clone(case.args), case.kwargs)
    if found:
        return found
    problem = _shape_problem(out, expected, record)
    if problem:
        return f"{problem} (on {case.label})"
    if not all(torch.isfinite(t).all() for t in tensors(out)):
        return f"returned NaN or inf on {case.label}: a log of 0 or a division by 0?"
    if len(record.outputs) > 1:
        wrong = next(n for n, o, e in zip(record.outputs, out, expected) if not matches(o, e))
        return f"wrong {wrong} on {case.label}"
    return f"wrong value on {case.label}"


def _gradient_problem(record, grads, case):
    """Compare the student's gradients (of the projection) with the reference's."""
    ref_args = _clone(case.args)
    inputs = grad_inputs(record, ref_args)
    for t in inputs:
        t.requires_grad_()
    expected = record.reference(*ref_args, **case.kwargs)
    wanted = projected_gradients(expected, inputs, projection(expected))
    names = [record.inputs[i] for i in record.grad_args for t in tensors(case.args[i])
             if t.is_floating_point()]
    grads = list(grads or []) + [None] * (len(wanted) - len(grads or []))
    for name, grad, want in zip(names, grads, wanted):
        if want is None:                     # e.g. a layer the loss does not read
            continue
        if grad is None:
            return (f"no gradient flows back to the {name}: avoid .item(), .detach(), .numpy() "
                    f"and new tensors built with torch.tensor(...) (on {case.label})")
        if name == "attention weights":
            # Each row is a distribution: moving along a row (adding the same amount to every
            # weight) leaves the simplex, so an answer may treat that direction differently
            # (e.g. renormalise). Only the part of the gradient along the simplex is compared.
            grad, want = grad - grad.mean(-1, keepdim=True), want - want.mean(-1, keepdim=True)
        if not matches(grad, want):
            return (f"the value is right but its gradient with respect to the {name} is not: is "
                    f"part of the computation detached? (on {case.label})")
    return None


@torch.enable_grad()   # the reference's gradients, whatever the notebook did to autograd
def judge(record, case, outcome):
    """None if `outcome` is right on `case`, else the problem in words."""
    if outcome.problem:
        return outcome.problem
    out = outcome.out
    problem = _structure_problem(out, record)
    if problem:
        return problem
    expected = record.reference(*_clone(case.args), **case.kwargs)
    if not matches(out, expected):
        return _value_problem(record, out, expected, case)
    after = outcome.args_after
    for name, given, original in zip(record.inputs, after, case.args):
        given, original = tensors(given), tensors(original)
        if len(given) != len(original) or not all(
                isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and torch.equal(a, b) for a, b in zip(given, original)):
            return (f"your function changes its input ({name}) in place: use out-of-place "
                    "operations (masked_fill, not masked_fill_; x = x + y, not x += y)")
    return _gradient_problem(record, outcome.grads, case) if case.grad else None


def suite_title(exercise_id, suite):
    return exercise_id + (" (hidden tests)" if suite == "hidden" else "")


def judge_suite(exercise_id, suite, suite_cases, outcome_of):
    """The verdict on one suite: the first case whose outcome (`outcome_of(case)`, asked for
    lazily, in order) is wrong, or a pass."""
    record, title = EXERCISES[exercise_id], suite_title(exercise_id, suite)
    for case in suite_cases:
        try:
            problem = judge(record, case, outcome_of(case))
        except (Exception, SystemExit) as err:  # e.g. a returned object that breaks torch
            problem = f"your result could not be checked ({type(err).__name__}: " \
                      f"{_first_line(err)}) (on {case.label})"
        if problem:
            end = "" if problem.endswith(("?", ".")) else "."
            return CheckResult(False, f"✘ {title}: {problem}{end}")
    return CheckResult(True, f"✔ {title}: correct on {len(suite_cases)} cases.")


# ---------------------------------------------------------------------------------------------
# The public face
# ---------------------------------------------------------------------------------------------

def run_check(exercise_id, fn, suite="visible") -> CheckResult:
    """Check `fn` against exercise `exercise_id`; never raises (except KeyboardInterrupt)."""
    if exercise_id not in EXERCISES:
        return CheckResult(False, f"✘ {exercise_id}: unknown exercise (known: "
                                  f"{', '.join(EXERCISES)})")
    if suite not in ("visible", "hidden"):
        return CheckResult(False, f"✘ {exercise_id}: unknown suite {suite!r} "
                                  "(visible or hidden)")
    title = suite_title(exercise_id, suite)
    if not callable(fn):
        return CheckResult(False, f"✘ {title}: expected a function, got {_describe(fn)} — did "
                                  "you run the cell that defines it?")
    try:
        suite_cases = cases(exercise_id, suite)
    except HiddenCasesMissing as err:
        return CheckResult(False, f"✘ {title}: {err}")
    record = EXERCISES[exercise_id]
    return judge_suite(exercise_id, suite, suite_cases,
                       lambda case: call_in_process(record, fn, case))


RAISE_ENV = "MEDSIGHT_CHECKS_RAISE"
NBGRADER_ENV = "NBGRADER_EXECUTION"      # set by nbgrader in the kernels of validate and autograde
RAISE_ENVS = (RAISE_ENV, NBGRADER_ENV)   # what a grader that reads verdict lines must unset


def _raises_on_failure():
    """nbgrader scores a grade cell by whether it raises, not by what it prints: a failed check
    raises when nbgrader runs the notebook, or when MEDSIGHT_CHECKS_RAISE=1 asks for it."""
    return os.environ.get(RAISE_ENV) == "1" or bool(os.environ.get(NBGRADER_ENV))


def check(exercise_id, fn, suite="visible"):
    """Print the verdict line for `fn` on exercise `exercise_id`. Returns None, so that a
    notebook cell shows only the printed line. Under nbgrader (its NBGRADER_EXECUTION variable)
    or with MEDSIGHT_CHECKS_RAISE=1, a failed check also raises AssertionError: nbgrader scores a
    grade cell by whether it raises, not by what it prints. `suite="hidden"` works only where the
    instructor's hidden cases are (HIDDEN_CASES_FILE)."""
    result = run_check(exercise_id, fn, suite)
    refused = _refusal(fn) if result.passed else None
    if refused:
        result = CheckResult(False, f"✘ {suite_title(exercise_id, suite)}: right, but the grader "
                                    f"will refuse this answer: {refused}.")
    print(result.message, flush=True)
    if not result.passed and _raises_on_failure():
        raise AssertionError(result.message)


def _refusal(fn):
    """What the grader's answer policy says of the function's own source (None when it has no
    objection, or when the source cannot be read). The rest of the answer cell is not seen here:
    the grader reads the whole cell."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return None
    return answer_problem(source)
