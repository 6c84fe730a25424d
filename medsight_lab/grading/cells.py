"""What the cells of a chapter are, read from their nbgrader metadata: one definition for the
release (which stubs answer cells) and the grader (which takes them from a submission).

- An *answer cell* is one whose nbgrader metadata says `solution: true`, or a code cell holding
  `### BEGIN SOLUTION` (a marker without metadata is still an answer: the release must stub it).
  A code answer cell's `grade_id` is its exercise id; a Markdown one holds written answers.
- A *check cell* has `grade: true` and `grade_id: "<exercise id>_check"`.

Submitted notebooks may have mangled metadata: every reader here returns "not that kind of cell"
rather than raising.
"""

SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_TESTS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def nbgrader(cell):
    """A cell's nbgrader metadata; {} when absent or mangled into something else."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    found = metadata.get("nbgrader", {}) if isinstance(metadata, dict) else {}
    return found if isinstance(found, dict) else {}


def grade_id(cell):
    found = nbgrader(cell).get("grade_id")
    return found if isinstance(found, str) else None


def source(cell):
    """The cell's source as one string (nbformat joins lists; a mangled one gives None)."""
    text = cell.get("source") if isinstance(cell, dict) else None
    if isinstance(text, list) and all(isinstance(line, str) for line in text):
        return "".join(text)
    return text if isinstance(text, str) else None


def is_answer_cell(cell):
    return bool(nbgrader(cell).get("solution")) or (
        cell.get("cell_type") == "code" and SOLUTION[0] in (source(cell) or ""))


def is_code_answer(cell):
    """An exercise's answer cell (code)."""
    return cell.get("cell_type") == "code" and is_answer_cell(cell)


def check_of(cell):
    """The exercise id of a check cell, else None."""
    found = grade_id(cell) or ""
    return found[:-len("_check")] if nbgrader(cell).get("grade") and found.endswith("_check") \
        else None
