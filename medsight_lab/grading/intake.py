"""Taking submissions in: what the grader accepts from the submissions folder, and reading it.

`take_in(submissions, staging)` copies every regular top-level `*.ipynb` file (never a symbolic
link, a folder or anything inside one) into `staging` under a safe name, and returns a refusal,
as a gradebook row, for everything else. pytest collects only the staging folder, which holds
nothing but those copies: no `conftest.py`, no module of a student's is ever imported.

The readers below parse a staged notebook as data (nbformat, no code runs): its chapter, its answer
cells (matched to the reference's by nbgrader grade_id, else by cell id) and its written answers.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import cells
from .checks import EXERCISES
from .release import MARKDOWN_STUB

MAX_NOTEBOOK_BYTES = 20 << 20
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Refused:
    name: str              # the entry's name, made safe
    reason: str


def safe_name(name, suffix=".ipynb"):
    """`name` with only letters, digits, '.', '_' and '-', starting with a letter or digit, at
    most 100 characters, ending in `suffix` (a name like `=cmd|' /C calc'!A0.ipynb` becomes
    `cmd___C_calc__A0.ipynb`)."""
    stem = name[:-len(suffix)] if suffix and name.endswith(suffix) else name
    stem = SAFE_NAME.sub("_", stem).lstrip("._-")[:100] or "submission"
    return stem + (suffix or "")


def take_in(submissions, staging):
    """Copy the gradable notebooks of `submissions` into a fresh `staging` folder; returns
    ([staged file names], [Refused])."""
    submissions, staging = Path(submissions), Path(staging)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    staged, refused, taken = [], [], set()
    for entry in sorted(os.scandir(submissions), key=lambda e: e.name):
        if entry.name.startswith("."):                 # .ipynb_checkpoints, .DS_Store, ...
            continue
        info = entry.stat(follow_symlinks=False)
        is_notebook = entry.name.endswith(".ipynb")
        name = safe_name(entry.name, ".ipynb" if is_notebook else "")
        if stat.S_ISLNK(info.st_mode):
            refused.append(Refused(name, "refused: a symbolic link, not a notebook file: hand "
                                         "in the .ipynb file itself"))
        elif stat.S_ISDIR(info.st_mode):
            refused.append(Refused(name, "refused: a folder: hand in the notebook file (.ipynb) "
                                         "itself; folders are not graded"))
        elif not stat.S_ISREG(info.st_mode):
            refused.append(Refused(name, "refused: not a regular file"))
        elif not is_notebook:
            refused.append(Refused(name, "not a Jupyter notebook (no .ipynb file): hand in the "
                                         ".ipynb file itself"))
        elif info.st_size > MAX_NOTEBOOK_BYTES:
            refused.append(Refused(name, f"refused: larger than {MAX_NOTEBOOK_BYTES >> 20} MB "
                                         "(clear the outputs and hand it in again)"))
        else:
            while name in taken:                       # two names that became the same
                name = name[:-len(".ipynb")] + "_2.ipynb"
            taken.add(name)
            try:
                _copy_regular_file(entry.path, staging / name)
            except OSError as err:                     # unreadable, or swapped for a link
                refused.append(Refused(name, f"refused: could not be read ({err.strerror})"))
                continue
            staged.append(name)
    return staged, refused


def _copy_regular_file(source, target):
    """Copy without following a link swapped in after the check (O_NOFOLLOW), at most the size
    limit."""
    fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{source} is not a regular file")
        data = f.read(MAX_NOTEBOOK_BYTES + 1)[:MAX_NOTEBOOK_BYTES]
    with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# Reading a staged notebook (as data)
# ---------------------------------------------------------------------------------------------

def read_submission(path):
    """(notebook, None) or (None, why it is not a notebook we can grade)."""
    if Path(path).stat().st_size == 0:
        return None, "empty file: no notebook was submitted"
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # any parse failure means "not a notebook"
        return None, (f"not a Jupyter notebook ({type(err).__name__}): hand in the .ipynb file "
                      "itself")
    if not isinstance(nb.get("cells"), list) or not isinstance(nb.get("metadata"), dict):
        return None, ("not a gradable notebook (its cells are not a list): hand in the notebook "
                      "as Jupyter saved it")
    nb.cells = [c for c in nb.cells if isinstance(c, dict)]
    return nb, None


def identify_chapter(nb, path, chapters):
    """The submission's chapter: notebook metadata, else the exercises it contains, else its file
    name. None if none of them names a reference chapter."""
    if nb is not None:
        course = nb.metadata.get("medsight_lab")
        chapter = course.get("chapter") if isinstance(course, dict) else None
        if isinstance(chapter, str) and chapter in chapters:
            return chapter
        for cell in nb.cells:
            exercise = EXERCISES.get((cells.grade_id(cell) or "").removesuffix("_check"))
            if exercise and exercise.chapter in chapters:
                return exercise.chapter
    return next((c for c in sorted(chapters, key=len, reverse=True) if c in Path(path).stem),
                None)


def answer_sources(nb, reference_answers):
    """The submission's answer cells for the exercises of `reference_answers` ({exercise id: the
    reference's answer cell}): ({exercise: source}, {exercise: why there is none})."""
    by_grade_id, by_cell_id = {}, {}
    for cell in nb.cells:
        if cell.get("cell_type") != "code" or cells.source(cell) is None:
            continue                       # not a cell we can take (a mangled file)
        if cells.grade_id(cell):
            by_grade_id.setdefault(cells.grade_id(cell), []).append(cell)
        elif isinstance(cell.get("id"), str):
            by_cell_id.setdefault(cell["id"], []).append(cell)
    sources, problems = {}, {}
    for exercise, reference in reference_answers.items():
        found = by_grade_id.get(exercise) or by_cell_id.get(reference.get("id"), [])
        if not found:
            problems[exercise] = (f"your answer cell for {exercise} is missing (deleted, or its "
                                  "cell metadata lost?): nothing to grade")
        elif len(found) > 1:
            problems[exercise] = (f"your notebook has {len(found)} answer cells for {exercise} "
                                  "(a duplicated cell?): keep exactly one")
        else:
            sources[exercise] = cells.source(found[0])
    return sources, problems


def written_answers(nb, chapter):
    """The submission's answers to the chapter's questions: the text of its written-answer cell
    (nbgrader grade_id "<chapter>_questions"), or a note saying why there is none."""
    all_cells = nb.get("cells")
    found = [c for c in (all_cells if isinstance(all_cells, list) else [])
             if isinstance(c, dict) and c.get("cell_type") == "markdown"
             and cells.grade_id(c) == f"{chapter}_questions"]
    texts = [cells.source(c).strip() for c in found if cells.source(c) is not None]
    if not found:
        return "(no written answers: the cell under the questions is missing)"
    if all(t in ("", MARKDOWN_STUB) for t in texts):
        return "(no written answers: the cell still reads \"Write your answer here.\")"
    return "\n\n".join(t for t in texts if t not in ("", MARKDOWN_STUB))
