"""The stored chapters are clean: executed in order from a fresh kernel, canonical metadata.
(nbval, run by scripts/test.sh, proves that their outputs are current.)"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_chapters():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert set(nb["metadata"]) <= {"kernelspec", "language_info", "medsight_lab"}, \
        "stray notebook metadata: run scripts/execute_notebooks.py"
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and c["source"]]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), \
        "not executed top to bottom from a fresh kernel: run scripts/execute_notebooks.py"
    for cell in nb["cells"]:
        assert "execution" not in cell["metadata"] and "ExecuteTime" not in cell["metadata"]
        assert "id" in cell, "every cell needs a stable id (nbformat >= 4.5)"
        for out in cell.get("outputs", []):
            assert out.get("name") != "stderr", \
                f"{path.name}: a cell writes to stderr (warnings are not allowed): {out['text'][:200]}"
            assert out.get("output_type") != "error", f"{path.name}: a cell raised an error"
    assert "import medsight_lab" in "".join("".join(c["source"]) for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_markers_are_recognised(path):
    # nbval only honours a comment line that is exactly the marker: "# NBVAL_IGNORE_OUTPUT: why"
    # is silently ignored, and the cell's output is then compared after all. The reason goes on
    # the next comment line.
    from nbval.plugin import comment_markers

    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        for line in "".join(cell["source"]).splitlines():
            comment = line.strip().lstrip("#").strip()
            if line.strip().startswith("#") and "NBVAL" in comment:
                assert comment in comment_markers, \
                    f"{path.name}: nbval does not recognise the marker line {line.strip()!r}"


def numbered_items(markdown):
    """The numbers of a markdown text's top-level numbered list items, in order."""
    return [int(m.group(1)) for m in re.finditer(r"^(\d+)\. ", markdown, re.M)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_question_has_an_answer_in_the_key(path):
    # The chapter ends with its questions, then the instructor's answer key: a folded admonition
    # in the instructor book, an nbgrader written-answer cell (0 points) that the student edition
    # turns into "Write your answer here" (tests/test_release.py).
    nb = json.loads(path.read_text())
    *_, questions, key = nb["cells"]
    questions_text = "".join(questions["source"])
    assert questions["cell_type"] == "markdown" and "\n## Questions\n" in questions_text
    asked = numbered_items(questions_text.split("\n## Questions\n")[1])
    assert asked == list(range(1, len(asked) + 1)) and asked, questions_text
    chapter = nb["metadata"]["medsight_lab"]["chapter"]
    assert key["cell_type"] == "markdown"
    assert key["metadata"] == {"nbgrader": {
        "grade": True, "grade_id": f"{chapter}_questions", "locked": False, "points": 0,
        "schema_version": 3, "solution": True, "task": False}}
    source = "".join(key["source"])
    assert source.startswith(":::{admonition} Answers to the questions (instructor edition)\n"
                             ":class: dropdown\n") and source.rstrip().endswith("\n:::")
    assert numbered_items(source) == asked, f"{path.name}: one answer per question, in order"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_alt_text(path):
    # The book's <img alt> comes from the cell's `mystnb.image.alt`: without it a screen reader
    # reads out a file path (tests/test_book_browser.py checks the built pages).
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if any("image/png" in out.get("data", {}) for out in cell.get("outputs", [])):
            alt = cell["metadata"].get("mystnb", {}).get("image", {}).get("alt", "")
            assert len(alt.split()) >= 8, f"{path.name}, cell {cell['id']}: no alt text for its figure"
