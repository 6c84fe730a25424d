"""The student edition: stubs instead of solutions, no hidden tests, nothing of a solution
anywhere, identical bytes on every release, runnable up to the first stub."""

import html
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from medsight_lab.grading import EXERCISES
from medsight_lab.grading.release import (MARKDOWN_STUB, PACKAGE_FILES, ReleaseError,
                                          find_leaks, release, secret_lines, strip_hidden_tests,
                                          stub_source, student_notebook)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "notebooks"
SOURCES = sorted(CHAPTERS.glob("*.ipynb"))


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    return release(CHAPTERS, tmp_path_factory.mktemp("release") / "student", build_html=False)


def cells(path):
    return nbformat.read(path, as_version=4).cells


def is_answer(cell):
    return cell.metadata.get("nbgrader", {}).get("solution", False)


def test_every_chapter_is_released(edition):
    assert sorted(p.name for p in (edition / "notebooks").glob("*.ipynb")) == \
        [p.name for p in SOURCES]
    assert "NotImplementedError" in (edition / "README.md").read_text()
    assert (edition / "LICENSE").read_text().startswith("MIT License")   # what pyproject declares


def test_no_solution_or_hidden_test_survives(edition):
    secrets = [line for path in SOURCES for line in secret_lines(nbformat.read(path, 4))]
    assert find_leaks(edition, secrets, skip=PACKAGE_FILES) == []
    # The package ships its own implementation of each exercise, on purpose (chapters use it).
    assert find_leaks(edition / "medsight_lab", secrets)
    for path in (edition / "notebooks").glob("*.ipynb"):
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
        assert 'suite="hidden"' not in text and "suite='hidden'" not in text
        for cell in json.loads(text)["cells"]:
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None
            assert set(cell["metadata"]) <= {"nbgrader", "tags"}


def test_stubs_raise_not_implemented(edition):
    assert any(is_answer(c) for p in SOURCES for c in cells(p)), "no exercises in the chapters"
    for path in (edition / "notebooks").glob("*.ipynb"):
        for cell in cells(path):
            if is_answer(cell) and cell.cell_type == "code":
                exercise = cell.metadata["nbgrader"]["grade_id"]
                assert f'raise NotImplementedError("{exercise}: your code here")' in cell.source
                assert "hide-input" not in cell.metadata.get("tags", [])   # visible in the book
                namespace = {}
                exec(compile(cell.source, exercise, "exec"), namespace)
                function = namespace[EXERCISES[exercise].function]
                assert function.__doc__                                  # the docstring stays
                with pytest.raises(NotImplementedError, match=exercise):
                    function(*[None] * function.__code__.co_argcount)


def test_the_answer_keys_become_answer_space(edition):
    # Each chapter's written-answer cell (the instructor's answer key) is left to the student.
    for source in SOURCES:
        keys = [c for c in cells(source) if is_answer(c) and c.cell_type == "markdown"]
        assert len(keys) == 1, f"{source.name}: expected one answer key"
        student = {c.get("id"): c for c in cells(edition / "notebooks" / source.name)}
        assert student[keys[0].get("id")].source == MARKDOWN_STUB


def test_locked_cells_are_the_instructors(edition):
    """Code cells as the instructor's (hidden tests removed); prose as the instructor's in plain
    Markdown."""
    from medsight_lab.grading.plain_markdown import Converter, load_bibliography
    bibliography = load_bibliography(ROOT / "book" / "references.bib")
    for source in SOURCES:
        student = cells(edition / "notebooks" / source.name)
        instructor = cells(source)
        plain = Converter(bibliography)
        assert [c.get("id") for c in student] == [c.get("id") for c in instructor]
        for ours, theirs in zip(student, instructor):
            if theirs.cell_type == "markdown" and not is_answer(theirs):
                assert ours.source == plain.cell(theirs.source)
            elif not is_answer(theirs):
                assert ours.source == strip_hidden_tests(theirs.source)
                assert ours.metadata.get("nbgrader") == theirs.metadata.get("nbgrader")


def test_releasing_again_gives_identical_bytes(edition, tmp_path):
    again = release(CHAPTERS, tmp_path / "again", build_html=False)
    files = sorted(p.relative_to(edition) for p in edition.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (edition / name).read_bytes() == (again / name).read_bytes(), name


def test_the_student_edition_runs_up_to_the_first_stub(edition):
    path = edition / "notebooks" / "03_loss.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(CHAPTERS)}}).execute()
    first_stub = next(i for i, c in enumerate(nb.cells) if is_answer(c))
    for cell in nb.cells[:first_stub]:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade"):
            text = "".join(o.get("text", "") for o in cell.outputs)
            assert text.startswith("✘") and "not implemented yet" in text, text


# -- the transformation on a small synthetic notebook ------------------------------------------

def synthetic():
    nb = nbformat.v4.new_notebook(metadata={"medsight_lab": {"chapter": "99_demo"},
                                            "widgets": {"state": "secret_widget_state"}})
    answer = nbformat.v4.new_code_cell(
        'def double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n'
        '    return x * 2  # the_secret\n    ### END SOLUTION', id="ans",
        metadata={"nbgrader": {"solution": True, "grade": False, "grade_id": "double",
                               "locked": False, "checksum": "abc"},
                  "tags": ["hide-input", "keep-me"], "scratch": "the_secret"},
        outputs=[nbformat.v4.new_output("stream", name="stdout", text="the_secret")],
        execution_count=3)
    whole = nbformat.v4.new_code_cell("ANSWER = 42  # the_secret", id="whole",
                                      metadata={"nbgrader": {"solution": True,
                                                             "grade_id": "whole"}})
    essay = nbformat.v4.new_markdown_cell(     # the MyST markup is not secret (the guides quote it)
        ":::{admonition} The instructor's answer\n:class: dropdown\n\nThe answer is the_secret.\n:::",
        id="essay",
                                          metadata={"nbgrader": {"solution": True,
                                                                 "grade_id": "essay"}})
    checking = nbformat.v4.new_code_cell(
        'check("double", double)\n### BEGIN HIDDEN TESTS\nassert double(21) == 42  # the_secret\n'
        '### END HIDDEN TESTS', id="chk",
        metadata={"nbgrader": {"grade": True, "grade_id": "double_check", "locked": True,
                               "points": 1}})
    nb.cells = [answer, whole, essay, checking]
    return nb


def test_synthetic_notebook_is_stubbed():
    student = student_notebook(synthetic())
    answer, whole, essay, checking = student.cells
    assert answer.source == ('def double(x):\n    """Twice x."""\n    # TODO: your code here\n'
                             '    raise NotImplementedError("double: your code here")')
    assert answer.metadata == {"nbgrader": {"solution": True, "grade": False,
                                            "grade_id": "double", "locked": False},
                               "tags": ["keep-me"]}
    assert answer.outputs == [] and answer.execution_count is None
    assert whole.source == ('# TODO: your code here\n'
                            'raise NotImplementedError("whole: your code here")')
    assert essay.source == MARKDOWN_STUB
    assert checking.source == 'check("double", double)'
    text = nbformat.writes(student)
    assert "the_secret" not in text and "secret_widget_state" not in text
    assert secret_lines(synthetic()) == ["ANSWER = 42  # the_secret",
                                         "The answer is the_secret.",
                                         "assert double(21) == 42  # the_secret",
                                         "return x * 2  # the_secret"]


@pytest.mark.parametrize("source", [
    "def f():\n    ### BEGIN SOLUTION\n    return 1",
    "def f():\n    return 1\n    ### END SOLUTION",
    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
])
def test_unbalanced_markers_are_refused(source):
    with pytest.raises(ReleaseError):
        stub_source(source, "f")


def test_release_refuses_to_overwrite_the_source(tmp_path):
    (tmp_path / "notebooks").mkdir()
    nbformat.write(synthetic(), tmp_path / "notebooks" / "99_demo.ipynb")
    with pytest.raises(ReleaseError):
        release(tmp_path / "notebooks", tmp_path, build_html=False)
    for package_place in (ROOT, ROOT.parent, ROOT / "medsight_lab" / "student"):
        with pytest.raises(ReleaseError, match="or the package"):      # nothing deleted first
            release(tmp_path / "notebooks", package_place, build_html=False)
    assert (ROOT / "medsight_lab" / "__init__.py").exists()
    out = release(tmp_path / "notebooks", tmp_path / "student", build_html=False)
    assert "the_secret" not in (out / "notebooks" / "99_demo.ipynb").read_text()


def test_the_edition_carries_the_package_students_install(edition):
    import subprocess
    import sys
    for path in (ROOT / "medsight_lab").rglob("*.py"):
        copy = edition / path.relative_to(ROOT)
        assert copy.read_bytes() == path.read_bytes(), copy
    assert (edition / "pyproject.toml").read_bytes() == (ROOT / "pyproject.toml").read_bytes()
    readme = (edition / "README.md").read_text()
    assert 'pip install -e ".[student]"' in readme
    # What the README promises a student installs is what the extra holds; grading is not in it.
    import tomllib
    extras = tomllib.loads((edition / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    student = {re.match(r"[\w-]+", requirement).group(0) for requirement in extras["student"]}
    assert {"jupyterlab", "jupyterlab-myst"} <= student
    assert not {"pytest", "nbval"} & student
    assert "pytest, nbval" in readme and "are the instructor's" in readme
    # pip can read the edition as a project (offline: no build isolation, nothing installed).
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                           "--no-build-isolation", "--no-index", str(edition)],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "medsight-lab" in done.stdout, done.stdout + done.stderr


def test_the_student_book_links_to_the_student_repository_or_nowhere():
    from medsight_lab.grading.release import student_config
    import yaml
    config = (ROOT / "_config.yml").read_text()
    none = yaml.safe_load(student_config(config))
    assert "repository" not in none and "launch_buttons" not in none
    assert none["html"]["use_repository_button"] is False
    published = yaml.safe_load(student_config(config, "https://github.com/org/course-student"))
    assert published["repository"]["url"] == "https://github.com/org/course-student"
    assert published["launch_buttons"] == yaml.safe_load(config)["launch_buttons"]
    with pytest.raises(ReleaseError, match="GitHub, GitLab or Bitbucket"):
        student_config(config, "https://example.org/course-student")   # the theme would fail


def test_the_student_html_book_holds_no_solution(tmp_path):
    out = release(CHAPTERS, tmp_path / "student", build_html=True)  # it searches itself too
    html = out / "_build" / "html"
    assert (html / "notebooks" / "03_loss.html").exists()
    secrets = [line for path in SOURCES for line in secret_lines(nbformat.read(path, 4))]
    assert secrets and find_leaks(html, secrets) == []
    page = (html / "notebooks" / "03_loss.html").read_text()
    assert "NotImplementedError" in page and "HIDDEN TESTS" not in page
    assert "colab.research.google.com" not in page and "mybinder" not in page   # no buttons


# -- plain Markdown in the student edition -------------------------------------------------------
RAW_MYST = re.compile(r"\{[\w:-]+\}`|^\s*(`{3,}|:{3,})\{[\w-]+\}|^\s*:(label|class|name):",
                      re.M)


def raw_myst_in_html(nb):
    """Raw MyST markup that nbconvert's HTML export of `nb`'s markdown cells shows as text."""
    from nbconvert import HTMLExporter
    markdown_only = nbformat.v4.new_notebook(cells=[c for c in nb.cells
                                                    if c.cell_type == "markdown"])
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(markdown_only)
    text = html.unescape(re.sub(r"<[^>]+>", "", body))
    return [m.group(0).strip() for m in RAW_MYST.finditer(text)]


def test_student_markdown_renders_without_myst(edition):
    """Every markdown cell of the edition, rendered by nbconvert (no MyST), shows no directive,
    role or option; math stays for MathJax; exercises are numbered headings; citations read
    'Author (year)' with their reference below."""
    for path in sorted((edition / "notebooks").glob("*.ipynb")):
        assert raw_myst_in_html(nbformat.read(path, 4)) == [], path.name
    chapter2 = "\n".join(c.source for c in cells(edition / "notebooks" / "02_architecture.ipynb"))
    assert "#### Exercise 1" in chapter2 and "#### Exercise 2" in chapter2
    assert "$D$" in chapter2 and "$$" in chapter2
    # The check can fail: the instructor source, MyST as written, is caught.
    assert raw_myst_in_html(nbformat.read(CHAPTERS / "02_architecture.ipynb", 4))


def test_plain_markdown_conversion():
    from medsight_lab.grading.plain_markdown import (Converter, PlainMarkdownError,
                                                     read_bibtex)
    bib = read_bibtex("@article{a2020,\n author = {Doe, Jane and Roe, R{\\\"o}b},\n"
                      " title = {On {T}hings}, journal = {J}, year = {2020}}\n"
                      "@book{b2019, author = {Uno, A. and Duo, B. and Tres, C.}, year = 2019,"
                      " title = {Three}}")
    convert = Converter(bib)
    source = ("```{exercise} Masks\n:label: ex-m\n\nWrite $f$.\n```\n\n```python\n"
              "{cite:p}`a2020` stays in code\n```\n\n(target)=\nAs {cite:t}`a2020` and "
              "{cite:p}`a2020,b2019` show.\n\n:::{admonition} Note well\n:class: tip\nText\n:::")
    out = convert.cell(source)
    assert out.startswith("#### Exercise 1 — Masks\n\nWrite $f$.\n")
    assert "{cite:p}`a2020` stays in code" in out and "(target)=" not in out
    assert "As Doe and Roe (2020) and (Doe and Roe, 2020; Uno et al., 2019) show." in out
    assert "> **Note well**\n>\n> Text" in out and ":class:" not in out and ":label:" not in out
    assert out.endswith("- Jane Doe, Röb Roe (2020). On Things. *J*.\n"
                        "- A. Uno, B. Duo, C. Tres (2019). Three.")
    assert convert.cell("```{exercise}\nx\n```").startswith("#### Exercise 2\n")
    with pytest.raises(PlainMarkdownError, match="nobody2000"):
        convert.cell("see {cite:p}`nobody2000`")
    with pytest.raises(PlainMarkdownError, match="figure"):
        convert.cell("```{figure} a.png\n```")
    with pytest.raises(PlainMarkdownError, match="role"):
        convert.cell("see {ref}`somewhere`")
    with pytest.raises(PlainMarkdownError, match="not closed"):
        convert.cell(":::{note}\nopen")
