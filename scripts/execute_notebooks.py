"""Execute chapter notebooks top to bottom in a fresh kernel and store them in canonical form.

    python scripts/execute_notebooks.py                      # every notebooks/*.ipynb
    python scripts/execute_notebooks.py notebooks/03_loss.ipynb

Canonical form (what tests/test_notebooks_clean.py checks and nbval relies on): execution counts
1..N, kernelspec python3, no per-cell execution timings or widget state, 1-space JSON indent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def canonical(nb):
    """Strip what changes from run to run but carries no content."""
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info",
                                                                 "medsight_lab")}
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.get("language_info", {}).pop("version", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
    return nb


def execute(path: Path, timeout=300):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:                       # a clean slate: no stale outputs survive
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(canonical(nb), path)


def main(paths):
    paths = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in paths:
        print(f"executing {path}", flush=True)
        execute(path)


if __name__ == "__main__":
    main(sys.argv[1:])
