"""The student edition: the instructor notebooks with every solution and hidden test removed.

    python -m medsight_lab release [--repository-url URL]
    # -> _build/student/{README.md, notebooks/, medsight_lab/, pyproject.toml, LICENSE, _build/html}

In each notebook an answer cell keeps its signature and docstring and the region between
`### BEGIN SOLUTION` and `### END SOLUTION` becomes `raise NotImplementedError(...)`; check cells
lose their `### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS` region (the hidden cases
themselves live in the instructor's `instructor/hidden_cases.py`, which is never copied); every
output is cleared and only metadata that cannot hold solution text is kept; MyST-only markup in
the markdown cells becomes plain Markdown (`plain_markdown.py`), since students read the notebooks
in Jupyter front-ends that may not render MyST (the HTML book is built from the MyST cells).
Running it twice gives identical bytes. Before returning, the notebooks and the HTML are searched
for the solution lines, and the whole edition (package included) for the lines of the hidden
cases.

The edition also carries the course package (`medsight_lab/` and `pyproject.toml`), so that
students can install it from the edition alone. The package holds the course's implementation of
each exercise, on purpose: later chapters use it, so a student stuck on one exercise can go on.
The HTML book gets launch buttons only when `repository_url` names where the edition is published;
otherwise they would open the instructor repository, solutions included.
"""

from __future__ import annotations

import copy
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

from .cells import HIDDEN_TESTS, SOLUTION, is_answer_cell
from .checks import hidden_cases_file
from .plain_markdown import load_bibliography, plain_notebook

MARKDOWN_STUB = "*Write your answer here.*"
# nbgrader keys that say what a cell is; anything else (e.g. a checksum of the source) is dropped.
NBGRADER_KEYS = ("grade", "grade_id", "locked", "points", "schema_version", "solution", "task")
# Tags that fold a cell in the book: the instructor book folds solutions, a stub stays visible.
FOLDING_TAGS = {"hide-input", "hide-output", "hide-cell", "remove-input", "remove-output",
                "remove-cell"}
NOTEBOOK_METADATA = ("kernelspec", "language_info", "medsight_lab")
# Solution lines shorter than this are too common ("return x") to prove a leak when searched for.
MIN_SECRET_LENGTH = 12
# MyST markup in a written answer (`:::{admonition} ...`, `:class: dropdown`) is not its content,
# and the guides quote it.
MARKUP_LINE = re.compile(r"^(:{3,}|`{3,}|:[\w-]+:)")

PACKAGE_FILES = ("medsight_lab", "pyproject.toml", "LICENSE")     # copied as they are

README = """\
# MedSight Lab — student edition

The chapters of the course, ready for you to work in. Start with `notebooks/00_setup.ipynb`.

## Install

With Python 3.10 or newer, from this folder:

```bash
python -m venv .venv
. .venv/bin/activate                 # on Windows: .venv\\Scripts\\activate
pip install -e ".[student]"          # medsight_lab, JupyterLab and jupyterlab-myst
jupyter lab notebooks/
```

That is all a student installs: `medsight_lab` (with PyTorch, NumPy, Matplotlib, ipywidgets),
JupyterLab, and `jupyterlab-myst`, which renders the course's exercise boxes, formulas and
citations in JupyterLab. (The notebooks also read cleanly without it, e.g. in Notebook 7, VS Code
or Colab: this edition writes them in plain Markdown.) Grading tools (pytest, nbval, the grading
plugin) are the instructor's; you do not need them.

On a machine without a GPU, install the CPU build of PyTorch first, so that pip does not fetch a
large CUDA build: `pip install torch --index-url https://download.pytorch.org/whl/cpu`.

`medsight_lab/` is the course's own code: the dataset, the model, the training loop, the metrics
and the checks. It also holds the course's implementation of each exercise, which later chapters
use so that you can go on when you are stuck; an answer that calls it earns no marks.

## Exercises

- Each exercise is a function whose body reads `raise NotImplementedError(...)`: replace those
  lines with your code, keeping the function's name and signature.
- Run the check cell below it: it prints one line, `✔` when your answer is right, or `✘` and
  what to fix. It runs the visible tests only: at grading time further (hidden) tests, which
  exist only on your instructor's machine, run on your answers.
- Hand in the notebooks themselves (`.ipynb`). Do not delete, split or duplicate the answer
  cells: grading takes only your answer cells and runs each exercise on its own, in an isolated
  process, without the rest of the chapter.
- Each chapter ends with questions: write your answers in the cell below them (*Write your
  answer here.*). The check cells do not mark them; your instructor says whether they count.
- The book's HTML version is in `_build/html/index.html` (when it was built).
"""


class ReleaseError(ValueError):
    """The instructor source cannot be turned into a student edition safely."""


def _regions(source, markers, where):
    """Yield (begin, end) line indices of each marked region; unbalanced markers are an error,
    since guessing could leak a solution."""
    begin, end = markers
    lines = source.splitlines()
    start = None
    for i, line in enumerate(lines):
        if begin in line:
            if start is not None:
                raise ReleaseError(f"{where}: '{begin}' twice without '{end}'")
            start = i
        elif end in line:
            if start is None:
                raise ReleaseError(f"{where}: '{end}' without '{begin}'")
            yield start, i
            start = None
    if start is not None:
        raise ReleaseError(f"{where}: '{begin}' without '{end}'")


def stub_source(source, exercise_id, where="cell"):
    """The answer cell's source with each solution region replaced by a NotImplementedError."""
    lines = source.splitlines()
    regions = list(_regions(source, SOLUTION, where))
    if not regions:                                   # nbgrader: the whole cell is the answer
        return (f'# TODO: your code here\n'
                f'raise NotImplementedError("{exercise_id}: your code here")')
    for begin, end in reversed(regions):
        indent = re.match(r"\s*", lines[begin]).group()
        lines[begin:end + 1] = [
            f"{indent}# TODO: your code here",
            f'{indent}raise NotImplementedError("{exercise_id}: your code here")']
    return "\n".join(lines)


def strip_hidden_tests(source, where="cell"):
    lines = source.splitlines()
    for begin, end in reversed(list(_regions(source, HIDDEN_TESTS, where))):
        del lines[begin:end + 1]
    return "\n".join(lines).rstrip()


def secret_lines(nb):
    """The lines of an instructor notebook that must not reach students: solution and hidden-test
    regions (markers excluded), and whole solution cells without markers."""
    secrets = []
    for cell in nb.cells:
        lines = cell.source.splitlines()
        regions = [r for markers in (SOLUTION, HIDDEN_TESTS)
                   for r in _regions(cell.source, markers, f"cell {cell.get('id')}")]
        if is_answer_cell(cell) and not regions:
            regions = [(-1, len(lines))]
        for begin, end in regions:
            secrets += [line.strip() for line in lines[begin + 1:end]]
    return sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH and not s.startswith("#")
                   and not MARKUP_LINE.match(s)})


def hidden_case_lines(path):
    """The lines of the instructor's hidden-cases file that define a case (`Case(...`): none of
    them may reach the student edition, package included."""
    if not Path(path).is_file():
        return []
    return sorted({line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
                   if "Case(" in line and len(line.strip()) >= MIN_SECRET_LENGTH})


def student_cell(cell, where):
    """The student's version of one cell (a new cell; the instructor's is left alone)."""
    cell = copy.deepcopy(cell)
    nbgrader = {k: v for k, v in cell.metadata.get("nbgrader", {}).items() if k in NBGRADER_KEYS}
    tags = list(cell.metadata.get("tags", []))
    if is_answer_cell(cell):
        if cell.cell_type == "code":
            cell.source = stub_source(cell.source, nbgrader.get("grade_id", cell.get("id")), where)
        else:
            cell.source = MARKDOWN_STUB
            cell.pop("attachments", None)
        tags = [t for t in tags if t not in FOLDING_TAGS]
    if cell.cell_type == "code":      # prose keeps its text (a hidden test in it: a leak)
        cell.source = strip_hidden_tests(cell.source, where)
    cell.metadata = {}
    if nbgrader:
        cell.metadata["nbgrader"] = nbgrader
    if tags:
        cell.metadata["tags"] = tags
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    return cell


def student_notebook(nb, name="notebook"):
    """The student edition of an instructor notebook (a new notebook)."""
    student = nbformat.v4.new_notebook()
    student.metadata = {k: nb.metadata[k] for k in NOTEBOOK_METADATA if k in nb.metadata}
    student.cells = [student_cell(cell, f"{name}, cell {cell.get('id', i)}")
                     for i, cell in enumerate(nb.cells)]
    nbformat.validate(student)
    return student


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def _visible_text(path):
    """What a reader of `path` can see: HTML without its tags (syntax highlighting splits code
    into spans) and entities; notebooks and JSON as their decoded strings; other text as is."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix in (".html", ".htm"):
        return html.unescape(re.sub(r"<[^>]+>", "", text))
    if path.suffix in (".ipynb", ".json"):
        try:
            return "\n".join(_strings(json.loads(text)))
        except json.JSONDecodeError:
            return text
    return text


def find_leaks(folder, secrets, skip=()):
    """[(file, secret line)] for every secret line found in a text file under `folder`, except
    under the folders `skip` (relative to `folder`)."""
    leaks = []
    skipped = [Path(folder) / s for s in skip]
    for path in sorted(Path(folder).rglob("*")):
        if any(path.is_relative_to(s) for s in skipped):
            continue
        if path.is_file() and path.suffix in (".ipynb", ".html", ".htm", ".md", ".txt", ".js",
                                               ".json", ".py", ".yml"):
            text = _visible_text(path)
            leaks += [(path, s) for s in secrets if s in text]
    return leaks


def _student_toc(toc_file, out):
    """The book's table of contents without entries whose files the student edition lacks."""
    def keep(entry):
        if "file" in entry and not any((out / (entry["file"] + ext)).exists()
                                       for ext in ("", ".md", ".ipynb")):
            return False
        for key in ("chapters", "sections", "parts"):
            if key in entry:
                entry[key] = [e for e in entry[key] if keep(e)]
        return True

    toc = yaml.safe_load(toc_file.read_text())
    keep(toc)
    toc["parts"] = [p for p in toc.get("parts", []) if p.get("chapters")]
    return yaml.safe_dump(toc, sort_keys=False)


REPOSITORY_URL = re.compile(r"https://(github\.com|gitlab\.com|bitbucket\.org)/[^/\s]+/[^/\s]+")


def _check_repository_url(url):
    if url is not None and not REPOSITORY_URL.match(url):
        raise ReleaseError("--repository-url must be a GitHub, GitLab or Bitbucket repository, "
                           "e.g. https://github.com/ORG/REPO (the book theme's launch buttons "
                           f"know only these), got {url!r}")


def student_config(config_text, repository_url=None):
    """The book configuration of the student edition: the instructor's, with the repository (and
    so the launch and repository buttons) pointing at `repository_url`, or dropped without one."""
    _check_repository_url(repository_url)
    config = yaml.safe_load(config_text)
    if repository_url:
        config.setdefault("repository", {})["url"] = repository_url
    else:
        config.pop("repository", None)
        config.pop("launch_buttons", None)
        config.setdefault("html", {})["use_repository_button"] = False
    return yaml.safe_dump(config, sort_keys=False)


def _build_html(project, out, repository_url=None):
    (out / "_config.yml").write_text(student_config((project / "_config.yml").read_text(),
                                                    repository_url))
    shutil.copytree(project / "book", out / "book")
    (out / "_toc.yml").write_text(_student_toc(project / "_toc.yml", out))
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(out),
               "-W", "-n", "--keep-going"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        log = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
        problems = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
        raise RuntimeError(f"the student book did not build ({' '.join(command)}):\n"
                           + "\n".join(dict.fromkeys(problems) or [log[-4000:]]))


def release(source="notebooks", out="_build/student", build_html=True,
            repository_url=None) -> Path:
    """Write the student edition of the notebooks in `source` to `out` and return `out`.
    With `build_html`, also build its HTML book (`out/_build/html`) with jupyter-book; its launch
    buttons point at `repository_url` (where the edition is published), or are left out."""
    source, out = Path(source).resolve(), Path(out).resolve()
    _check_repository_url(repository_url)
    notebooks = sorted(source.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks (*.ipynb) in {source}")
    project = source.parent
    # The package that is running, with the pyproject.toml beside it (a source checkout).
    package_root = Path(__file__).resolve().parents[2]
    for name in PACKAGE_FILES:
        if not (package_root / name).exists():
            raise ReleaseError(f"{package_root / name} not found: release from a checkout of the "
                               "course, where medsight_lab/, pyproject.toml and LICENSE sit "
                               "side by side")
    if (out in (project, source, package_root) or source.is_relative_to(out)
            or package_root.is_relative_to(out)
            or out.is_relative_to(package_root / "medsight_lab")):
        raise ReleaseError(f"--out {out} would overwrite the instructor source or the package: "
                           "choose a folder of its own, e.g. _build/student")
    # Start from a clean slate, removing only what a release writes.
    for old in ("notebooks", "book", "_build", "medsight_lab"):
        shutil.rmtree(out / old, ignore_errors=True)
    (out / "notebooks").mkdir(parents=True)
    secrets, editions = [], {}
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        secrets += secret_lines(nb)
        editions[path.name] = student_notebook(nb, path.name)
        nbformat.write(editions[path.name], out / "notebooks" / path.name)
    (out / "README.md").write_text(README)
    for name in PACKAGE_FILES:
        if (package_root / name).is_dir():
            shutil.copytree(package_root / name, out / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(package_root / name, out / name)
    if build_html:
        # The book is built from the MyST cells: Sphinx renders them (numbered exercise boxes,
        # linked citations, the bibliography page), which plain Markdown would lose.
        _build_html(project, out, repository_url)
    # The notebooks students open are plain Markdown, readable wherever MyST is not rendered.
    bib = project / "book" / "references.bib"
    bibliography = load_bibliography(bib) if bib.is_file() else {}
    for name, nb in editions.items():
        nbformat.write(plain_notebook(nb, bibliography), out / "notebooks" / name)
    leaks = find_leaks(out, secrets, skip=PACKAGE_FILES)
    leaks += find_leaks(out, hidden_case_lines(hidden_cases_file()))     # package included
    if leaks:
        raise ReleaseError("solution text in the student edition: " + "; ".join(
            f"{p.relative_to(out)}: {s!r}" for p, s in leaks[:5]))
    return out
