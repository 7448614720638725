#!/usr/bin/env python
"""Print a short hash of what `make install` installs: the install-relevant parts of pyproject.toml plus the
torch requirement given on the command line. The Makefile names its install stamp after this hash, so a
rewrite of pyproject.toml with the same content (as `nbdev-export` does, touching only the mtime) reinstalls
nothing, while a changed dependency list, Python range or build backend does.

    python tools/deps_hash.py "torch==2.13.0"   # -> e.g. 3f2a9c1d0b7e
"""
from __future__ import annotations
import hashlib, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_inputs(text: str) -> object:
    "The parts of pyproject.toml that change what pip installs (the whole text when tomllib is missing)."
    try: import tomllib
    except ModuleNotFoundError: return text
    d = tomllib.loads(text)
    p = d.get("project", {})
    return {"build-system": d.get("build-system"), "requires-python": p.get("requires-python"),
            "dependencies": p.get("dependencies"), "optional-dependencies": p.get("optional-dependencies"),
            "entry-points": p.get("entry-points"), "scripts": p.get("scripts"), "setuptools": d.get("tool", {}).get("setuptools")}


def deps_hash(pyproject: Path, extra: list[str]) -> str:
    blob = json.dumps([install_inputs(pyproject.read_text(encoding="utf-8")), extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


if __name__ == "__main__":
    print(deps_hash(ROOT / "pyproject.toml", sys.argv[1:]))
