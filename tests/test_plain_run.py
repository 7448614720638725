"tools/plain_run.py: a papermill notebook's code in plain Python (the GPU machine has no Jupyter) gives the papermill run's results."
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import plain_run  # noqa: E402


def notebook(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": t}, "source": s, "outputs": [], "execution_count": None} for s, t in cells],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb)); return path


def plain(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "plain_run.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_parameters_are_injected_after_the_tagged_cell(tmp_path):
    nb = notebook(tmp_path / "t.ipynb", [("a: int = 1\nb: str = 'x'", ["parameters"]),
                                         ("from pathlib import Path\nPath('out.json').write_text(repr((a, b, __annotations__['a'].__name__)))", [])])
    (tmp_path / "p.yaml").write_text("a: 5\n")
    r = plain(nb, "-f", tmp_path / "p.yaml", "-p", "b", "hello")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.json").read_text() == "(5, 'hello', 'int')"  # the file's value, the pair's value; cwd = the notebook's folder


@pytest.mark.parametrize("cells,msg", [
    ([("a = 1", ["parameters"]), ("%time a", [])], "cell 1 of t.ipynb uses IPython syntax"),
    ([("a = 1", [])], "has no cell tagged 'parameters'"),
])
def test_refusals_are_one_line(tmp_path, cells, msg):
    r = plain(notebook(tmp_path / "t.ipynb", cells), "-p", "a", "2")
    assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr


def test_trusted_model_identity_finds_the_cached_embeddings(monkeypatch):
    import sagerec.embed as embed
    from sagerec.data import load_dataset
    ident = embed.model_identity()
    monkeypatch.setattr(embed, "model_identity", embed.model_identity)  # restored after the test
    def no_model(model=None): raise AssertionError("the model was needed")
    monkeypatch.setattr(embed, "resolve_model", no_model)  # as on a machine without the packaged model
    with pytest.raises(AssertionError): embed.item_embeddings(load_dataset("beauty-mini"), progress=False)
    plain_run.trust_text_model(ident)
    emb = embed.item_embeddings(load_dataset("beauty-mini"), progress=False, cache=False)  # the packaged copy, keyed by `ident`
    assert emb.shape[0] == load_dataset("beauty-mini").n_items + 1


def test_train_notebook_matches_papermill(tmp_path):
    "The same run of nbs/train.ipynb through papermill and through plain_run: identical test metrics."
    env = {**os.environ, "SAGEREC_RUNS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    params = ["-p", "dataset", "beauty-mini", "-p", "variant", "sasrec", "-p", "epochs", "1", "-p", "dim", "16",
              "-p", "num_threads", "1", "-p", "progress", "False"]
    r = plain(ROOT / "nbs" / "train.ipynb", *params, "-p", "run_name", "plain", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    pm = subprocess.run([str(Path(sys.executable).parent / "papermill"), str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "pm.ipynb"),
                         "--cwd", str(ROOT / "nbs"), *params, "-p", "run_name", "pm"], capture_output=True, text=True, env=env, timeout=600)
    assert pm.returncode == 0, pm.stderr[-2000:]
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text())["test"] for n in ("plain", "pm"))
    assert a == b and a["full-masked"]["n_users"] > 0
