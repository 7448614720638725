#!/usr/bin/env python
"""Run a papermill notebook's code in a plain Python process, for machines without Jupyter or papermill.

    python tools/plain_run.py nbs/train.ipynb -f configs/beauty.yaml -p variant sasrec -p seed 1
    python tools/grid.py run GRID --runner plain          # the queue, with this runner instead of papermill

The notebook's code cells run in order in one namespace, as papermill runs them: the cell tagged `parameters`
first, then the given values (papermill's injected cell), then the rest, with the notebook folder as the working
directory. `-f` reads a YAML file of parameters, `-p NAME VALUE` one value (read as YAML, like papermill's
`-y`/`-p`), `-y "NAME: VALUE"` YAML text. Nothing is written besides what the notebook writes itself (no output
notebook). A cell that uses IPython syntax (`%magic`, `!shell`) is refused with its number.

On a machine that lacks the packaged Sentence-BERT model but holds its cached item embeddings (`SAGEREC_CACHE`,
as `tools/gpu_check.py prepare` writes them), `--text-model-identity DIGEST` (or the variable
`SAGEREC_TEXT_MODEL_IDENTITY`) names the default model's identity (`sagerec.embed.model_identity()` here), so the
cache is found instead of the model being loaded.
"""
from __future__ import annotations

import argparse, json, os, sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def code_cells(nb_path: Path) -> list[tuple[str, list[str]]]:
    "The notebook's code cells as (source, tags)."
    nb = json.loads(nb_path.read_text())
    return [("".join(c["source"]) if isinstance(c["source"], list) else c["source"], c.get("metadata", {}).get("tags", []))
            for c in nb["cells"] if c["cell_type"] == "code"]


def parse_params(files: list[str], pairs: list[list[str]], yamls: list[str]) -> dict:
    "Parameters from YAML files, then `-y` texts, then `-p` pairs (later ones win), as papermill merges them."
    params: dict = {}
    for f in files:
        loaded = yaml.safe_load(Path(f).read_text()) or {}
        if not isinstance(loaded, dict): sys.exit(f"plain_run: {f} does not hold a mapping of parameters")
        params.update(loaded)
    for y in yamls:
        loaded = yaml.safe_load(y)
        if not isinstance(loaded, dict): sys.exit(f"plain_run: -y {y!r} is not 'name: value' YAML")
        params.update(loaded)
    for name, value in pairs: params[name] = yaml.safe_load(value)
    return params


def trust_text_model(identity: str) -> None:
    "Take `identity` as the default Sentence-BERT model's identity (its cached embeddings are used; the model is not needed)."
    import sagerec.embed as embed
    original = embed.model_identity
    def model_identity(model=None, **kw):
        return identity if model in embed._DEFAULT_ALIASES else original(model, **kw)
    embed.model_identity = model_identity


def run(nb_path: Path, params: dict) -> None:
    cells = code_cells(nb_path)
    tagged = [i for i, (_, tags) in enumerate(cells) if "parameters" in tags]
    if not tagged and params: sys.exit(f"plain_run: {nb_path} has no cell tagged 'parameters' to take {sorted(params)}")
    os.chdir(nb_path.parent)
    g: dict = {"__name__": "__main__"}
    for i, (src, tags) in enumerate(cells):
        if any(line.lstrip().startswith(("%", "!")) for line in src.splitlines()):
            sys.exit(f"plain_run: code cell {i} of {nb_path.name} uses IPython syntax; run it with papermill")
        exec(compile(src, f"<{nb_path.name} cell {i}>", "exec", dont_inherit=True), g)  # not this file's __future__ flags
        if tagged and i == tagged[0]: g.update(params)  # papermill's injected-parameters cell


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook")
    ap.add_argument("-f", "--parameters_file", action="append", default=[], help="YAML file of parameters")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("-y", "--parameters_yaml", action="append", default=[], help="YAML text 'name: value'")
    ap.add_argument("--text-model-identity", default=os.environ.get("SAGEREC_TEXT_MODEL_IDENTITY"))
    a = ap.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, str(ROOT))
    nb = Path(a.notebook).resolve()
    if not nb.is_file(): sys.exit(f"plain_run: no notebook {a.notebook}")
    params = parse_params(a.parameters_file, a.parameters, a.parameters_yaml)
    if a.text_model_identity: trust_text_model(a.text_model_identity)
    run(nb, params)


if __name__ == "__main__":
    main()
