#!/usr/bin/env python
"""Repository hygiene, in nbdev's order; exits non-zero on the first class of problem it finds.

1. `nbdev-clean` leaves every notebook unchanged (notebooks are committed clean, `parameters` tags kept).
2. `nbdev-export` leaves `sagerec/` unchanged (the package is exactly what the notebooks export).
3. Every notebook papermill runs (experiment notebooks: no numeric prefix, not `index`; and any notebook that
   shows a papermill command for itself) has exactly one cell tagged `parameters`; no notebook has more; the next code cell calls
   `sagerec.params.notebook_params(globals(), ...)` (all parameters checked before any work).
4. The jupytext mirrors in `nbs_py/` equal their notebooks.
5. README.md equals what `tools/readme.py` generates from `nbs/index.ipynb`.
"""
from __future__ import annotations
import hashlib, json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snapshot(globs) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for g in globs for p in sorted(ROOT.glob(g)) if p.is_file()}


def changed(before, after):
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def run_and_compare(cmd: list[str], globs, what: str) -> list[str]:
    before = snapshot(globs)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    diff = changed(before, snapshot(globs))
    return [f"{what}: `{Path(cmd[0]).name}` changed {f} (run it and commit the result)" for f in diff]


def parameter_cells() -> list[str]:
    bad = []
    for p in sorted((ROOT / "nbs").glob("*.ipynb")):
        if p.name.startswith(("_", ".")): continue
        nb = json.loads(p.read_text())
        cells = nb.get("cells", [])
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        # Experiment notebooks (no numeric prefix, not the index) are run by papermill, and so is any notebook whose
        # text shows a papermill command for itself (the index can re-render its result tables for another folder of runs).
        src = "".join("".join(c.get("source", "")) for c in cells).lower()
        papermill = (not p.name[0].isdigit() and p.name != "index.ipynb") or f"papermill nbs/{p.name}" in src
        if (papermill and len(tagged) != 1) or len(tagged) > 1:
            bad.append(f"parameters: {p.relative_to(ROOT)} is run by papermill but has {len(tagged)} cells tagged 'parameters' (needs exactly 1)")
        elif tagged:  # papermill injects its values after the parameters cell: the next code cell must check them all
            code = [c for c in cells if c.get("cell_type") == "code"]
            nxt = code[code.index(tagged[0]) + 1] if code.index(tagged[0]) + 1 < len(code) else {}
            if "notebook_params(globals()" not in "".join(nxt.get("source", "")):
                bad.append(f"parameters: in {p.relative_to(ROOT)} the cell after the parameters cell must call "
                           "sagerec.params.notebook_params(globals(), ...) so every parameter is checked before any work")
    return bad


def main() -> int:
    problems: list[str] = []
    problems += run_and_compare([str(BIN / "nbdev-clean")], ["nbs/*.ipynb"], "clean")
    problems += run_and_compare([str(BIN / "nbdev-export")], ["sagerec/**/*.py"], "export")
    problems += parameter_cells()
    for cmd, what in [([sys.executable, "tools/nb.py", "check"], "mirrors"), ([sys.executable, "tools/readme.py", "--check"], "readme")]:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if r.returncode: problems.append(f"{what}: {r.stdout.strip() or r.stderr.strip()}")
    for p in problems: print("FAIL", p)
    if not problems: print("hygiene: notebooks clean, package exported, parameters tags, mirrors and README in sync")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
