"""Run every notebook's lesson cells (all but `#| slow`) with nbdev's own test runner, one test per notebook."""
from pathlib import Path

import pytest
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect nbdev's function itself

NBS = Path(__file__).resolve().parents[1] / "nbs"
NOTEBOOKS = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith(("_", ".")))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb: Path):
    ok, secs = run_notebook(nb, skip_flags=["slow"], basepath=NBS.parent, cell_timeout=900)
    assert ok, f"{nb.name} failed (the cell's traceback is printed above)"
