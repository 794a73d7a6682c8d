"""Clear the outputs of the notebooks before committing them (tests/analyzer/reports/test_notebooks.py checks
that they are committed without outputs: executed copies would carry prompts and the sample's results).

usage: .venv/bin/python scripts/strip_notebooks.py [NOTEBOOK ...]   (default: notebooks/*.ipynb)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def strip(path: Path) -> bool:
    """Clear outputs and execution counts in place; whether anything changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    for p in [Path(a) for a in sys.argv[1:]] or sorted((REPO / "notebooks").glob("*.ipynb")):
        print(f"{p}: {'stripped' if strip(p) else 'no outputs'}")
