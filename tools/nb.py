#!/usr/bin/env python
"""Build, execute and check the literate notebooks.

The `.ipynb` files in `nbs/` are the source of the package. Their text mirrors in `nbs_py/` (jupytext
`py:percent`) exist for review and diffs; CI checks that every mirror equals its notebook.

    python tools/nb.py build 03_graph            # nbs_py/03_graph.py -> nbs/03_graph.ipynb, execute, clean, export, mirror
    python tools/nb.py build 03_graph --skip-slow  # keep the stored outputs of `#| slow` cells instead of re-running them
    python tools/nb.py build 03_graph --no-exec    # convert only (outputs of unchanged cells are kept)
    python tools/nb.py mirror [NAME...]           # rewrite mirrors from the notebooks (after editing an .ipynb directly)
    python tools/nb.py check                      # fail if any mirror differs from its notebook
    python tools/nb.py scrub [NAME...]            # drop absolute paths from stored outputs (build does it after executing)
"""
from __future__ import annotations
import argparse, os, re, subprocess, sys, time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
NBS, MIRRORS = ROOT / "nbs", ROOT / "nbs_py"
FMT = "py:percent"
SLOW = re.compile(r"^\s*#\|\s*slow\b", re.M)


def _names(names):
    return names or sorted(p.stem for p in NBS.glob("*.ipynb"))


def mirror_text(nb_path: Path) -> str:
    nb = jupytext.read(nb_path)
    return jupytext.writes(nb, fmt=FMT)


def mirror(names):
    for n in _names(names):
        (MIRRORS / f"{n}.py").write_text(mirror_text(NBS / f"{n}.ipynb"))


def check(names) -> int:
    bad = []
    for n in _names(names):
        m = MIRRORS / f"{n}.py"
        if not m.exists() or m.read_text() != mirror_text(NBS / f"{n}.ipynb"): bad.append(n)
    orphans = sorted(p.stem for p in MIRRORS.glob("*.py") if not (NBS / f"{p.stem}.ipynb").exists())
    for n in bad: print(f"mirror out of sync: nbs_py/{n}.py (run: python tools/nb.py mirror {n})")
    for n in orphans: print(f"mirror without a notebook: nbs_py/{n}.py")
    if not bad and not orphans: print(f"mirrors in sync: {len(_names(names))} notebooks")
    return 1 if bad or orphans else 0


_SCRUB = [  # stored outputs are published (docs site): no developer's folders in them
    (re.compile(r"(?:/[^\s'\"<>:]+)*/site-packages/"), "site-packages/"),
    (re.compile(r"/tmp/ipykernel_\d+/\d+\.py"), "<cell>"),
    (re.compile(r"(?:/[^\s'\"<>:/]+)+?/(?=(?:runs|figures|results|nbs|sagerec|tests)/)"), ""),
    (re.compile(r"/tmp/tmp[\w-]{6,}"), "<tmp>"),
]


def scrub_text(text: str) -> str:
    "`text` with absolute paths replaced: the project root dropped, site-packages and temporary folders shortened."
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    for pat, rep in _SCRUB: text = pat.sub(rep, text)
    return text


def _merge_bars(outputs: list) -> list:
    "Consecutive outputs of one stream as one, carriage returns resolved: a progress bar is stored (and shown) once."
    merged = []
    for o in outputs:
        if o.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream" and merged[-1].get("name") == o.get("name"):
            merged[-1]["text"] = "".join(merged[-1]["text"]) + "".join(o["text"])
        else: merged.append(o)
    for o in merged:
        if o.get("output_type") == "stream" and "\r" in "".join(o["text"]):
            o["text"] = "\n".join(l.rstrip("\r").rsplit("\r", 1)[-1] for l in "".join(o["text"]).split("\n"))
    return merged


def scrub(nb) -> int:
    "Scrub every stored output of notebook `nb` in place (paths, split progress bars); return how many outputs changed."
    n = 0
    for c in nb.cells:
        if c.get("outputs"):
            merged = _merge_bars(c.outputs)
            n += len(merged) != len(c.outputs); c.outputs = merged
    def fix(v):
        if isinstance(v, str): return scrub_text(v)
        if isinstance(v, list) and all(isinstance(x, str) for x in v): return [scrub_text(x) for x in v]
        return v
    for c in nb.cells:
        for o in c.get("outputs", []):
            before = repr(o)
            for k in ("text", "evalue", "traceback"):
                if k in o: o[k] = fix(o[k])
            for mime in [m for m in o.get("data", {}) if m.startswith("text/")]: o["data"][mime] = fix(o["data"][mime])
            n += repr(o) != before
    return n


def scrub_files(names):
    for n in _names(names):
        p = NBS / f"{n}.ipynb"
        nb = nbformat.read(p, as_version=4)
        if scrub(nb): nbformat.write(nb, p); print(f"scrubbed paths in {p.name}")


def execute(nb_path: Path, skip_slow: bool, timeout: int):
    from nbclient import NotebookClient
    nb = nbformat.read(nb_path, as_version=4)
    stash = {}
    if skip_slow:
        for i, c in enumerate(nb.cells):
            if c.cell_type == "code" and SLOW.search(c.source):
                stash[i] = (c.source, c.get("outputs", []))
                c.source = ""
    env_kernel = "python3"
    client = NotebookClient(nb, timeout=timeout, kernel_name=env_kernel, resources={"metadata": {"path": str(NBS)}})
    t = time.time()
    client.execute()
    for i, (src, outs) in stash.items():
        nb.cells[i].source, nb.cells[i].outputs = src, outs
    scrub(nb)
    nbformat.write(nb, nb_path)
    print(f"executed {nb_path.name} in {time.time() - t:.1f}s" + (f" ({len(stash)} slow cells kept)" if stash else ""))


def build(name: str, no_exec: bool, skip_slow: bool, timeout: int):
    src, dst = MIRRORS / f"{name}.py", NBS / f"{name}.ipynb"
    text_nb = jupytext.read(src, fmt=FMT)
    if dst.exists():  # keep the ids of unchanged cells (quiet diffs) and the outputs of unchanged code cells
        old = nbformat.read(dst, as_version=4)
        outs = {c.source: c.get("outputs", []) for c in old.cells if c.cell_type == "code"}
        ids = {(c.cell_type, c.source): c.get("id") for c in old.cells}
        used = set()
        for c in text_nb.cells:
            if c.cell_type == "code" and c.source in outs: c.outputs = outs[c.source]
            cid = ids.get((c.cell_type, c.source))
            if cid and cid not in used: c.id = cid; used.add(cid)
    text_nb.metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    nbformat.write(text_nb, dst)
    if not no_exec: execute(dst, skip_slow, timeout)
    bin_ = Path(sys.executable).parent
    subprocess.run([str(bin_ / "nbdev-clean"), "--fname", str(dst)], check=True, cwd=ROOT)
    subprocess.run([str(bin_ / "nbdev-export")], check=True, cwd=ROOT)
    mirror([name])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["build", "mirror", "check", "scrub"])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--no-exec", action="store_true")
    ap.add_argument("--skip-slow", action="store_true")
    ap.add_argument("--timeout", type=int, default=3600)
    a = ap.parse_args()
    if a.cmd == "build":
        for n in a.names: build(n, a.no_exec, a.skip_slow, a.timeout)
    elif a.cmd == "mirror": mirror(a.names)
    elif a.cmd == "scrub": scrub_files(a.names)
    else: sys.exit(check(a.names))
