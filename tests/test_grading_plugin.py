"""The grading plugin end to end: one pytest run (in a subprocess) over a folder of submissions
made from the real chapters — right, released, wrong and broken ones — then its gradebook; the
same folder graded again with pytest-xdist (-n 2) gives the same bytes."""

import copy
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from medsight_lab.grading import EXERCISES
from medsight_lab.grading.intake import answer_sources
from medsight_lab.grading.plugin import GRADEBOOK_COLUMNS
from medsight_lab.grading.policy import answer_problem
from medsight_lab.grading.release import MARKDOWN_STUB, release
from medsight_lab.grading.running import Chapter, package_names

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "notebooks"
LOSS, ARCHITECTURE = CHAPTERS / "03_loss.ipynb", CHAPTERS / "02_architecture.ipynb"
TIMEOUT_S = 4      # per exercise in the sandbox (--grade-timeout); one call gets as much

def answer(nb, exercise):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == exercise)


def with_answers(path, answers):
    """A copy of chapter `path` whose answer cells get the given sources."""
    nb = nbformat.read(path, as_version=4)
    for exercise, source in answers.items():
        answer(nb, exercise).source = source
    return nb


def write_submissions(folder):
    nbformat.write(nbformat.read(LOSS, as_version=4), folder / "reference_03.ipynb")
    nbformat.write(nbformat.read(ARCHITECTURE, as_version=4), folder / "reference_02.ipynb")
    student = release(CHAPTERS, folder.parent / "student", build_html=False)
    (folder / "student_03.ipynb").write_bytes((student / "notebooks" / LOSS.name).read_bytes())

    wrong = with_answers(LOSS, {
        "shifted_cross_entropy": (
            "def shifted_cross_entropy(logits, token_ids, pad_id=0):\n"
            "    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),\n"
            "                           token_ids.reshape(-1), ignore_index=pad_id)"),
        "grounding_loss": (
            "def grounding_loss(attn_weights, finding_masks):\n"
            "    avg = attn_weights[-1].mean(1)\n"
            "    rows = finding_masks.sum(-1) > 0\n"
            "    if not rows.any():\n"
            "        return avg.sum() * 0\n"
            "    return F.binary_cross_entropy(avg[rows].clamp(1e-6, 1 - 1e-6),\n"
            "                                  finding_masks[rows])"),
        "attention_entropy": (
            "def attention_entropy(attn_weights):\n"
            "    p = attn_weights[-1].mean(1)\n"
            "    return (p * (p + 1e-8).log()).sum(-1).mean()"),
        "compute_loss": (
            "def compute_loss(logits, token_ids, attn_weights, finding_masks,\n"
            "                 lambda_ground=0.1, lambda_entropy=0.01):\n"
            "    ce = shifted_cross_entropy(logits, token_ids)\n"
            "    ground = grounding_loss(attn_weights, finding_masks)\n"
            "    entropy = attention_entropy(attn_weights)\n"
            "    return ce + ground + entropy, ce, ground, entropy"),
    })
    questions = next(c for c in wrong.cells
                     if c.metadata.get("nbgrader", {}).get("grade_id") == "03_loss_questions")
    questions.source = "1. Padding is ignored, so WRITTEN_BY_WRONG counts only real words."
    for cell in wrong.cells:      # stored outputs claiming success prove nothing
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            exercise = cell.metadata["nbgrader"]["grade_id"].removesuffix("_check")
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                   text=f"✔ {exercise}: correct on 4 cases.\n")]
    nbformat.write(wrong, folder / "wrong.ipynb")

    broken = nbformat.read(LOSS, as_version=4)
    broken.cells.remove(answer(broken, "shifted_cross_entropy"))           # deleted
    duplicate = copy.deepcopy(answer(broken, "grounding_loss"))
    duplicate["id"] = "a-copy"
    broken.cells.insert(broken.cells.index(answer(broken, "grounding_loss")), duplicate)
    entropy = answer(broken, "attention_entropy")                          # renamed
    entropy.source = entropy.source.replace("def attention_entropy", "def entropy_of_attention")
    compute = answer(broken, "compute_loss")                               # touches the grader
    compute.source = "from medsight_lab.grading import checks\n" + compute.source
    nbformat.write(broken, folder / "broken.ipynb")

    noisy = with_answers(LOSS, {
        "shifted_cross_entropy": "while True:\n    pass",
        "grounding_loss": "def grounding_loss(attn_weights, finding_masks):\n    return (",
        "compute_loss": "compute_loss = ml.compute_loss",
    })
    entropy = answer(noisy, "attention_entropy")       # right, but chatty on stdout and stderr
    entropy.source = ("import sys, warnings\nwarnings.warn('mind the log of zero')\n"
                      "print('a debug line', file=sys.stderr)\n"
                      + entropy.source.replace('"""\n', '"""\n    print("debugging")\n', 1))
    del entropy.metadata["nbgrader"]                   # matched by its cell id instead
    del noisy.metadata["medsight_lab"]                 # chapter found from its exercises
    nbformat.write(noisy, folder / "noisy.ipynb")

    # A correct notebook whose course metadata became a string: its exercises name the chapter.
    mangled = nbformat.read(LOSS, as_version=4)
    mangled.metadata["medsight_lab"] = "03_loss"
    nbformat.write(mangled, folder / "mangled_metadata.ipynb")
    # JSON that nbformat parses but that is no notebook: one verdict, the others still graded.
    (folder / "cells_not_a_list.ipynb").write_text(json.dumps(
        {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {"a": 1}}))
    raw = json.loads(LOSS.read_text(encoding="utf-8"))
    for cell in raw["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "grounding_loss":
            cell["source"] = None
    (folder / "null_source.ipynb").write_text(json.dumps(raw), encoding="utf-8")
    # Ignores the interrupt that ends a timed-out cell and keeps printing: the grader must stop
    # it hard and grade the other exercises.
    stubborn = with_answers(LOSS, {"shifted_cross_entropy": (
        "while True:\n"
        "    try:\n"
        "        while True:\n"
        "            print('still working', flush=True)\n"
        "            sum(range(10 ** 6))\n"
        "    except KeyboardInterrupt:\n"
        "        pass")})
    nbformat.write(stubborn, folder / "stubborn.ipynb")

    # A refused answer costs its own marks only: compute_loss, which calls it, is judged with
    # the reference's grounding_loss; a local variable that happens to be called `check` is fine.
    refused = nbformat.read(LOSS, as_version=4)
    ground = answer(refused, "grounding_loss")
    ground.source = "import os\n" + ground.source
    entropy = answer(refused, "attention_entropy")
    entropy.source = entropy.source.replace('"""\n', '"""\n    check = attn_weights[-1]\n', 1)
    nbformat.write(refused, folder / "refused.ipynb")

    (folder / "notes.txt").write_text("I could not open Jupyter, sorry.")
    (folder / "eve_03_loss.ipynb").write_bytes(b"")   # the chapter is in the file name
    unknown = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    nbformat.write(unknown, folder / "my_homework.ipynb")
    # Chapter 5 trains models as it runs; grading runs only the answer, not the chapter.
    nbformat.write(with_answers(CHAPTERS / "05_evaluation.ipynb", {"pointing_game_and_mass": (
        "def pointing_game_and_mass(rows, lesions):\n"
        "    inside = lesions.bool()\n"
        "    hit = inside[torch.arange(len(rows)), rows.argmax(-1)].float()\n"
        "    return hit.mean(), rows.masked_fill(~inside, 0).sum(-1).mean()")}),
        folder / "alice_05.ipynb")
    # Chapter 7 trains a model on rendered films as it runs; again only the answer is graded.
    sentences = (
        "def spatial_precision(rows, masks, sentence, threshold=0.5):\n"
        "    precise = []\n"
        "    for s in range(int(sentence.max()) + 1):\n"
        "        mass = (rows[sentence == s] * masks[sentence == s]).sum(-1).{reduce}()\n"
        "        precise.append(float(mass > threshold))\n"
        "    return torch.tensor(precise).mean()")
    for name, reduce in (("bob_07.ipynb", "mean"), ("carol_07.ipynb", "max")):
        nbformat.write(with_answers(CHAPTERS / "07_harder_world.ipynb", {
            "spatial_precision": sentences.format(reduce=reduce)}), folder / name)


def grade_folder(submissions, out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin", "--grade",
         str(submissions), "--grade-output", str(out), "--grade-timeout", str(TIMEOUT_S),
         "-q", "-rA", "-p", "no:cacheprovider", *extra], cwd=ROOT, capture_output=True,
        text=True, timeout=600)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    submissions = base / "submissions"
    submissions.mkdir()
    write_submissions(submissions)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in submissions.iterdir()}
    out = base / "grades"
    run = grade_folder(submissions, out)
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in submissions.iterdir()}
    return {"run": run, "out": out, "rows": rows, "unchanged": before == after,
            "submissions": submissions, "base": base,
            "grades": {(r["submission"], r["exercise"]): r for r in rows}}


def grade(graded, submission, exercise):
    row = graded["grades"][(submission, exercise)]
    return int(row["points"]), row["verdict"]


LOSS_EXERCISES = [e for e, ex in EXERCISES.items() if ex.chapter == "03_loss"]


def test_gradebook_columns_and_rows(graded):
    with open(graded["out"] / "gradebook.csv", encoding="utf-8") as f:
        assert f.readline().strip() == ",".join(GRADEBOOK_COLUMNS)
    per_submission = {}
    for row in graded["rows"]:
        per_submission.setdefault(row["submission"], []).append(row["exercise"])
    for name in ("reference_03.ipynb", "student_03.ipynb", "wrong.ipynb", "broken.ipynb",
                 "noisy.ipynb", "eve_03_loss.ipynb"):
        assert per_submission[name] == LOSS_EXERCISES, name
    assert per_submission["reference_02.ipynb"] == ["cross_attention", "causal_attention_weights"]
    assert per_submission["alice_05.ipynb"] == ["pointing_game_and_mass"]
    assert [(r["submission"], r["exercise"]) for r in graded["rows"]] == sorted(
        [(r["submission"], r["exercise"]) for r in graded["rows"]],
        key=lambda k: (k[0], list(EXERCISES).index(k[1]) if k[1] in EXERCISES else -1))


def test_the_instructor_source_earns_full_marks(graded):
    for submission, chapter in (("reference_03.ipynb", "03_loss"),
                                ("reference_02.ipynb", "02_architecture")):
        for exercise, ex in EXERCISES.items():
            if ex.chapter == chapter:
                points, verdict = grade(graded, submission, exercise)
                assert points == ex.points, verdict
                assert verdict.startswith(f"✔ {exercise}: correct on ")
                assert f"✔ {exercise} (hidden tests): correct on " in verdict


def test_pytest_reports_each_exercise(graded):
    output = graded["run"].stdout
    assert "PASSED" in output and "reference_03.ipynb::compute_loss" in output
    assert "FAILED" in output and "wrong.ipynb::shifted_cross_entropy" in output


def test_the_student_edition_earns_zero(graded):
    for exercise in LOSS_EXERCISES:
        points, verdict = grade(graded, "student_03.ipynb", exercise)
        assert points == 0 and "not implemented yet" in verdict


def test_wrong_answers_lose_their_marks_whatever_their_stored_outputs(graded):
    expected = {"shifted_cross_entropy": "not shifted by one position",
                "grounding_loss": "normalise each mask row",
                "attention_entropy": "wrong sign",
                # judged with the reference helpers: only its own mistake counts
                "compute_loss": "the total ignores the lambdas"}
    for exercise, words in expected.items():
        points, verdict = grade(graded, "wrong.ipynb", exercise)
        assert points == 0 and verdict.startswith(f"✘ {exercise}") and words in verdict, verdict


def test_broken_cells_get_a_clear_verdict(graded):
    expected = {"shifted_cross_entropy": "is missing",
                "grounding_loss": "2 answer cells for grounding_loss",
                "attention_entropy": "was the function `attention_entropy` renamed",
                "compute_loss": "refused: answer cells must not import medsight_lab"}
    for exercise, words in expected.items():
        points, verdict = grade(graded, "broken.ipynb", exercise)
        assert points == 0 and words in verdict, verdict


def test_loops_syntax_errors_and_the_package_score_zero_but_warnings_cost_nothing(graded):
    points, verdict = grade(graded, "noisy.ipynb", "shifted_cross_entropy")
    assert points == 0 and f"did not finish within {TIMEOUT_S} s" in verdict
    points, verdict = grade(graded, "noisy.ipynb", "grounding_loss")
    assert points == 0 and verdict.startswith("syntax error in your answer")
    points, verdict = grade(graded, "noisy.ipynb", "compute_loss")
    assert points == 0 and verdict.startswith("refused: ") and "must not use `ml`" in verdict
    points, verdict = grade(graded, "noisy.ipynb", "attention_entropy")
    assert points == 1, verdict


def test_unusable_files_get_a_verdict(graded):
    for exercise in LOSS_EXERCISES:
        assert grade(graded, "eve_03_loss.ipynb", exercise) == (0, "empty file: no notebook "
                                                                   "was submitted")
    points, verdict = grade(graded, "notes.txt", "-")
    assert points == 0 and "not a Jupyter notebook" in verdict
    points, verdict = grade(graded, "my_homework.ipynb", "-")
    assert points == 0 and "unknown chapter" in verdict


def test_mangled_files_never_stop_the_run(graded):
    assert graded["run"].returncode == 1, graded["run"].stdout[-3000:]   # failures, not errors
    for exercise in LOSS_EXERCISES:
        points, verdict = grade(graded, "mangled_metadata.ipynb", exercise)
        assert points == EXERCISES[exercise].points, verdict
    points, verdict = grade(graded, "cells_not_a_list.ipynb", "-")
    assert points == 0 and "not a" in verdict, verdict
    points, verdict = grade(graded, "null_source.ipynb", "grounding_loss")
    assert points == 0 and "is missing" in verdict, verdict
    assert grade(graded, "null_source.ipynb", "attention_entropy")[0] == 1


def test_a_refused_answer_costs_only_its_own_marks(graded):
    points, verdict = grade(graded, "refused.ipynb", "grounding_loss")
    assert points == 0 and verdict.startswith("refused: ") and "yours imports os" in verdict
    points, verdict = grade(graded, "refused.ipynb", "compute_loss")    # uses grounding_loss
    assert points == 3, verdict
    assert grade(graded, "refused.ipynb", "attention_entropy")[0] == 1
    assert grade(graded, "refused.ipynb", "shifted_cross_entropy")[0] == 2


def test_a_cell_that_ignores_the_interrupt_is_stopped_hard(graded):
    points, verdict = grade(graded, "stubborn.ipynb", "shifted_cross_entropy")
    assert points == 0 and f"did not finish within {TIMEOUT_S} s" in verdict, verdict
    assert grade(graded, "stubborn.ipynb", "grounding_loss")[0] == 2
    assert grade(graded, "stubborn.ipynb", "attention_entropy")[0] == 1


def test_feedback_files_and_untouched_submissions(graded):
    feedback = (graded["out"] / "feedback" / "wrong.md").read_text(encoding="utf-8")
    assert "Total: **0 / 8 points**" in feedback and "not shifted by one position" in feedback
    assert "BEGIN HIDDEN TESTS" not in feedback and "suite=" not in feedback
    assert (graded["out"] / "feedback" / "reference_03.md").exists()
    assert graded["unchanged"], "grading modified a submission file"
    assert not (graded["out"] / ".staging").exists()
    assert "sandbox: bubblewrap" in (graded["out"] / "run_log.txt").read_text()


def test_written_answers_are_collected_for_the_marker(graded):
    answers = graded["out"] / "answers"
    wrong = (answers / "wrong.md").read_text(encoding="utf-8")
    assert "WRITTEN_BY_WRONG" in wrong and "Chapter: `03_loss`" in wrong
    assert "What does `ignore_index` change" in wrong          # the question beside the answer
    assert "Write your answer here" in (answers / "student_03.md").read_text(encoding="utf-8")
    assert "WRITTEN_BY_WRONG" not in (graded["out"] / "feedback" / "wrong.md").read_text()
    assert not (answers / "notes.md").exists()                   # not a notebook: nothing to read


def test_written_answers_of_a_submission():
    from medsight_lab.grading.intake import written_answers
    nb = nbformat.read(LOSS, as_version=4)
    key = next(c for c in nb.cells
               if c.metadata.get("nbgrader", {}).get("grade_id") == "03_loss_questions")
    key.source = "My answer."
    assert written_answers(nb, "03_loss") == "My answer."
    key.source = MARKDOWN_STUB
    assert "still reads" in written_answers(nb, "03_loss")
    nb.cells.remove(key)
    assert "missing" in written_answers(nb, "03_loss")
    nb.cells = "not a list"                                      # a mangled file: no crash
    assert "missing" in written_answers(nb, "03_loss")


def test_a_chapter_5_submission_is_graded_without_running_the_chapter(graded):
    points, verdict = grade(graded, "alice_05.ipynb", "pointing_game_and_mass")
    assert points == 2, verdict


def test_a_chapter_7_submission_is_graded_and_its_mistake_named(graded):
    points, verdict = grade(graded, "bob_07.ipynb", "spatial_precision")
    assert points == 2, verdict
    points, verdict = grade(graded, "carol_07.ipynb", "spatial_precision")
    assert points == 0 and "best word" in verdict, verdict


def test_serial_and_xdist_gradebooks_are_identical(graded):
    out = graded["base"] / "grades_xdist"
    run = grade_folder(graded["submissions"], out, "-n", "2")
    assert run.returncode == 1, run.stdout[-3000:]
    assert (out / "gradebook.csv").read_bytes() == \
        (graded["out"] / "gradebook.csv").read_bytes()
    assert "xdist workers: 2" in (out / "run_log.txt").read_text()
    for name in ("wrong.md", "refused.md"):
        assert (out / "feedback" / name).read_bytes() == \
            (graded["out"] / "feedback" / name).read_bytes()


# -- taking the answers, in process -----------------------------------------------------------

def test_only_the_answer_cells_are_taken():
    reference = Chapter.read(LOSS)
    submission = with_answers(LOSS, {"compute_loss": "def compute_loss(*args):\n    return 0"})
    for cell in submission.cells:
        if not cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = "raise SystemExit('a student edited a locked cell')"
    sources, problems = answer_sources(submission, reference.answers)
    assert problems == {}
    assert sources["compute_loss"] == "def compute_loss(*args):\n    return 0"
    assert set(sources) == set(reference.exercises)
    assert all("SystemExit" not in s for s in sources.values())


def test_the_chapter_imports_an_answer_may_rely_on():
    assert Chapter.read(LOSS).imports == "import torch\nimport torch.nn.functional as F"
    assert Chapter.read(ARCHITECTURE).imports == "import torch"


PACKAGE = {"medsight_lab", "ml"}       # what the chapters bind to the package (`check` aside)


@pytest.mark.parametrize("source, words", [
    # the grader and the package
    ("from medsight_lab.grading import check", "must not import medsight_lab"),
    ("import medsight_lab.grading.checks as c", "must not import medsight_lab"),
    ("from medsight_lab.reference import compute_loss", "must not import medsight_lab"),
    # the package's name where it still means the package (a local elsewhere does not help)
    ("x = ml.metrics", "must not use `ml`"),
    ("def f(x):\n    return ml.loss.compute_loss(x)", "must not use `ml`"),
    ("def f(x):\n    global ml\n    return ml.loss", "must not use `ml`"),
    ("def f(x):\n    ml = x\n    def g():\n        global ml\n        return ml\n    return g()",
     "must not use `ml`"),
    ("def f(x, m=ml):\n    return m", "must not use `ml`"),
    ("def f(x: ml.Tensor):\n    return x", "must not use `ml`"),
    ("g = [lambda ml: ml, lambda: ml]", "must not use `ml`"),
    ("ml.grading.checks.TIME_LIMIT_S = 1e9", "must not set or delete attributes"),
    ("def f(q, k, v, h):\n    return ml.model.attention(q, k, v)", "must not use `ml`"),
    ("__import__('medsight_lab.grading')", "must not use `__import__`"),
    # the checker's or torch's internals
    ("check.__globals__['_judge'] = lambda *a: None", "attribute `.__globals__`"),
    ("torch.allclose = lambda *a, **k: True", "must not set or delete attributes"),
    ("import types\nf = types.FunctionType(g.__code__, {})", "yours imports types"),
    ("def f(x):\n    return getattr(torch, 'allclose')(x, x)", "must not use `getattr`"),
    ("class Always(torch.Tensor):\n    pass", "functions, not classes"),
    # the process and the files
    ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)", "yours imports signal"),
    ("import os\nos.kill(os.getppid(), 2)", "yours imports os"),
    ("x = torch.serialization.os", "attribute `.os`"),
    ("import sys\nsys.modules['torch'] = None", "attribute `.modules`"),
    ("open('nbval_sanitize.cfg', 'w')", "must not use `open`"),
    # routes found by a second review: builtins through frames, patching through functools,
    # eval through type hints, files through numpy, the shell through IPython
    ("B = (i for i in ()).gi_frame.f_builtins", "attribute `.f_builtins`"),
    ("import sys\nframe = sys.exc_info()[2].tb_frame.f_back", "attribute `.f_back`"),
    ("import functools\nfunctools.update_wrapper(check, f, assigned=('__code__',))",
     "attribute `.update_wrapper`"),
    ("from functools import update_wrapper", "must not import `update_wrapper`"),
    ("import functools\nfunctools.wraps(f, assigned=('__code__',))(check)", "attribute `.wraps`"),
    ("import einops", "yours imports einops"),
    ("import typing\ntyping.get_type_hints(f)", "attribute `.get_type_hints`"),
    ("import numpy\nnumpy.frombuffer(b'x', dtype=numpy.uint8).tofile('startup.py')",
     "attribute `.tofile`"),
    ("shell = get_ipython()", "must not use `get_ipython`"),
    ("!echo hacked > file.txt", "magics or shell commands"),
    ("%%bash\necho hacked", "magics or shell commands"),
])
def test_answer_cells_that_reach_the_grader_package_or_process_are_refused(source, words):
    problem = answer_problem(source, PACKAGE)
    assert problem is not None and words in problem, problem


@pytest.mark.parametrize("source", [
    "def compute_loss(a, b):\n    return a  # check this",
    "def f(x):\n    return check_value(x)",
    "import math\nimport torch.nn.functional as F\nfrom typing import List",
    "import sys, warnings\nprint('debug', file=sys.stderr)\nwarnings.warn('log of zero')",
    "def f(x):\n    y = x.clone()\n    y[0] = 1.0\n    return y.softmax(-1)",
    "def broken(:",                         # reported as a syntax error when it runs
    "check = print",                        # the check cells import `check` afresh
    "def f(m):\n    check = m.sum(-1) > 0\n    return m[check]",
    # ordinary code that an earlier, broader rule set refused
    "def f(logits, t):\n    input = logits[:, :-1]\n    return F.cross_entropy(input, t)",
    "def f(x):\n    dims = [0, 1, 2]\n    dims.remove(1)\n    return x.sum(dims)",
    "from __future__ import annotations",
    "def f(x):\n    assert isinstance(x, torch.Tensor), type(x)\n    return x",
    "def f(q, k):\n    return torch.einsum('bhtd,bhnd->bhtn', q, k).softmax(-1) * math.sqrt(2)",
    # a local variable or parameter that shares a name the chapter binds to the package
    "def f(rows, lesions):\n    ml = rows.argmax(-1)\n    return ml",
    "def f(ml):\n    return ml.sum()",
    "def f(x):\n    ml = x\n    inner = lambda: ml * 2\n    return inner()",
])
def test_ordinary_answer_cells_are_accepted(source):
    assert answer_problem(source, PACKAGE) is None


def test_the_forbidden_names_come_from_the_chapter():
    assert package_names(nbformat.read(LOSS, as_version=4)) == PACKAGE
    for path in (LOSS, ARCHITECTURE):                        # the reference answers pass
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code":
                assert answer_problem(cell.source, package_names(nb)) is None, cell.source


def test_with_nbval_too_only_the_exercises_are_collected(tmp_path):
    """`pytest --nbval ... --grade DIR` must not run the staged notebooks as notebooks."""
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    nbformat.write(nbformat.read(LOSS, as_version=4), submissions / "alice.ipynb")

    def collected(*extra):
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "medsight_lab.grading.plugin", "--grade",
             str(submissions), "--grade-output", str(tmp_path / "grades"), "--co", "-q", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        # node ids, without the folder part (the rootdir pytest picks may differ)
        return [line.rsplit("/", 1)[-1] for line in run.stdout.splitlines() if "::" in line]

    plain = collected()
    assert any(line.endswith("::compute_loss") for line in plain)
    assert collected("--nbval") == plain


def test_an_interrupted_run_says_which_checks_were_not_graded(tmp_path):
    from types import SimpleNamespace

    from medsight_lab.grading.plugin import Grader
    from medsight_lab.grading.running import Settings
    grader = Grader(tmp_path, CHAPTERS, tmp_path / "grades", tmp_path / "staging", Settings())
    grader.expected = {"staging/alice.ipynb::compute_loss", "staging/alice.ipynb::grounding_loss"}
    grader.pytest_runtest_logreport(SimpleNamespace(user_properties=[(
        "medsight_lab_row", json.dumps({"submission": "alice.ipynb", "exercise": "grounding_loss",
                                        "points": 2, "max_points": 2, "verdict": "✔", "order": 1})
    )]))
    session = SimpleNamespace(config=SimpleNamespace(option=SimpleNamespace()))
    grader.pytest_sessionfinish(session, pytest.ExitCode.INTERRUPTED)
    with open(tmp_path / "grades" / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = {r["exercise"]: r for r in csv.DictReader(f)}
    assert rows["grounding_loss"]["points"] == "2"
    assert rows["compute_loss"]["points"] == "0"
    assert rows["compute_loss"]["verdict"].startswith("not graded: the grading run was "
                                                      "interrupted")
