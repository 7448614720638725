#!/usr/bin/env python
"""Generate README.md from nbs/index.ipynb, offline (nbdev-readme needs Quarto, which cannot be installed here).

    python tools/readme.py           # write README.md
    python tools/readme.py --check   # exit 1 if README.md differs from what the notebook generates
"""
from __future__ import annotations
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC, DST = ROOT / "nbs" / "index.ipynb", ROOT / "README.md"
DIRECTIVE = re.compile(r"^\s*#\|\s*(.*)$")
HEADER = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, then run `python tools/readme.py`. -->\n\n"


def _src(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _directives(code: str) -> tuple[set[str], str]:
    flags, kept = set(), []
    for line in code.splitlines():
        m = DIRECTIVE.match(line)
        if m: flags.add(m.group(1).split(":")[0].strip()); flags.add(m.group(1).strip())
        else: kept.append(line)
    return flags, "\n".join(kept).strip("\n")


def _output(o) -> str:
    if o.get("output_type") == "stream": return f"```\n{''.join(o.get('text', '')).rstrip()}\n```"
    data = o.get("data", {})
    if "text/markdown" in data: return "".join(data["text/markdown"]).strip()
    if "text/plain" in data: return f"```\n{''.join(data['text/plain']).rstrip()}\n```"
    return ""


def render() -> str:
    nb = json.loads(SRC.read_text())
    parts = []
    for c in nb["cells"]:
        if c["cell_type"] == "markdown": parts.append(_src(c).strip()); continue
        if c["cell_type"] != "code": continue
        flags, code = _directives(_src(c))
        if "hide" in flags: continue
        if code and "echo: false" not in flags and "hide_input" not in flags: parts.append(f"```python\n{code}\n```")
        parts += [t for t in map(_output, c.get("outputs", [])) if t]
    return HEADER + "\n\n".join(p for p in parts if p) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        ok = DST.exists() and DST.read_text() == text
        print("README.md in sync with nbs/index.ipynb" if ok else "README.md differs from nbs/index.ipynb: run `python tools/readme.py`")
        sys.exit(0 if ok else 1)
    DST.write_text(text); print(f"wrote {DST.relative_to(ROOT)}")
