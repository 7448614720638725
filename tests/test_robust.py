"""A user's mistake never loses or falsifies a run, and fails at once with one clear line (issue 13).

The bad inputs run through `nbs/train.ipynb` itself: its cells up to the run-folder check are executed in-process
after a cell of injected parameters, built exactly as papermill builds it (papermill's own `-p` type parsing and
translator; `-f` YAML through `yaml.safe_load`). That is the code papermill runs, minus the kernel start; a few real
papermill runs check the command line end to end. `python tests/test_robust.py` prints every bad input with the
message it now gives.
"""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "nbs" / "train.ipynb"

# ------------------------------------------------------------------------------------------ the bad inputs
# (how, input, text the one-line message must contain). how: "p" = papermill -p NAME VALUE pairs (strings, as typed),
# "f" = a -f YAML file's text, "api" = Python values (papermill.execute_notebook(parameters=...)).
BAD = [
    ("p", "epoch 1", "unknown parameter 'epoch' (did you mean 'epochs'?)"),
    ("p", "EPOCHS 3", "unknown parameter 'EPOCHS' (did you mean 'epochs'?)"),
    ("p", "learning_rate 0.01", "unknown parameter 'learning_rate'"),
    ("f", "batchsize: 64\n", "unknown parameter 'batchsize' (did you mean 'batch_size'?)"),
    ("f", "epochs: 3\nn_layers: 2\n", "unknown parameter 'n_layers'"),
    ("p", "lr -1", "TrainConfig.lr must be a positive number, got -1.0"),
    ("p", "lr 0", "TrainConfig.lr must be a positive number, got 0.0"),
    ("p", "lr inf", "TrainConfig.lr must be a positive number, got inf"),
    ("p", "lr nan", "lr=nan must be a number, not NaN"),
    ("p", "lr abc", "lr='abc' must be a number"),
    ("f", "lr: [0.001]\n", "lr=[0.001] must be a number"),
    ("p", "batch_size 0", "TrainConfig.batch_size must be >= 1, got 0"),
    ("p", "batch_size 12.5", "batch_size=12.5 must be a whole number"),
    ("p", "epochs 0", "epochs=0 must be >= 1"),
    ("p", "epochs -3", "epochs=-3 must be >= 1"),
    ("p", "epochs 2.5", "epochs=2.5 must be a whole number, not a fraction"),
    ("p", "dim abc", "dim='abc' must be a whole number"),
    ("f", "dim: 64.5\n", "dim=64.5 must be a whole number"),
    ("api", {"dim": None}, "dim=None must be a whole number"),
    ("p", "dim 0", "dim=0 must be a positive multiple of n_heads=1"),
    ("p", "n_heads 3", "dim=50 must be a positive multiple of n_heads=3"),
    ("p", "n_heads 0", "must be a positive multiple of n_heads=0"),
    ("p", "n_blocks -1", "n_blocks=-1"),
    ("p", "max_len 0", "max_len=0"),
    ("p", "n_graph_layers 0", "n_graph_layers=0"),
    ("p", "dropout 1.0", "dropout=1.0 must be in [0, 1)"),
    ("p", "dropout -0.1", "dropout=-0.1 must be in [0, 1)"),
    ("p", "edge_dropout 1.5", "edge_dropout=1.5 must be in [0, 1)"),
    ("p", "node_dropout_mode drop", "node_dropout_mode='drop': use one of"),
    ("p", "output_embedding both", "output_embedding='both': use one of"),
    ("p", "l2 -1", "l2=-1.0 must be >= 0"),
    ("p", "n_neg 0", "TrainConfig.n_neg must be >= 1"),
    ("p", "patience -1", "patience and lr_patience must be >= 0"),
    ("p", "lr_patience -2", "patience and lr_patience must be >= 0"),
    ("p", "eval_every 0", "TrainConfig.eval_every must be >= 1"),
    ("p", "eval_batch_size 0", "TrainConfig.eval_batch_size must be >= 1, got 0"),
    ("p", "num_threads -2", "num_threads=-2 must be >= 1 (or None)"),
    ("p", "num_threads 0", "num_threads=0 must be >= 1 (or None)"),
    ("p", "seed abc", "seed='abc' must be a whole number"),
    ("p", "seed -1", "seed=-1 must be between 0 and 4294967295"),
    ("p", "sampled_seed 1.5", "sampled_seed=1.5 must be a whole number"),
    ("p", "k 0", "k=0 must be >= 1"),
    ("p", "tau 2", "tau=2.0 must be between -1.0 and 1.0 (or None)"),
    ("p", "text_max_length 0", "text_max_length=0 must be >= 1"),
    ("api", {"text_model": " "}, "text_model=' ' must be a sentence-transformers model name or folder"),
    ("p", "dataset beuty", "dataset='beuty' is not a dataset; use one of 'beauty', 'toys', 'ml-1m', 'beauty-mini' (did you mean 'beauty'?)"),
    ("p", "variant sasrek", "variant='sasrek' must be one of 'sagerec', 'sasrec'"),
    ("p", "graph_weights cosine", "graph_weights='cosine' must be one of None, 'learned', 'fixed'"),
    ("p", "graph_weights fixed", "graph, graph_weights and model_params apply to a registered model"),
    ("p", "model gru4rec graph_weights fixed", "graph_weights='fixed' weighs the graph's edges, and 'gru4rec' runs without the graph"),
    ("p", "device tpu", "device='tpu' cannot be used: Unknown device 'tpu'"),
    ("p", "run_name .", "run_name='.' must be a plain folder name"),
    ("p", "run_name ..", "run_name='..' must be a plain folder name"),
    ("p", "run_name a/b", "run_name='a/b' must be a plain folder name"),
    ("p", "resume maybe", "resume='maybe' must be True or False"),
    ("p", "progress 2", "progress=2 must be True or False"),
    ("p", "self_loops yes", "self_loops='yes' must be True or False"),
    ("p", "epoch 1 lr -1 dim abc", "Bad parameters: unknown parameter 'epoch' (did you mean 'epochs'?); dim='abc' must be a whole number; TrainConfig.lr must be a positive number, got -1.0"),
]
if not __import__("torch").cuda.is_available():
    BAD.append(("p", "device cuda", "CUDA is not available here"))


def _values(how, given) -> dict:
    "The parameters papermill would inject for this input."
    if how == "api": return dict(given)
    if how == "f":
        import yaml
        return yaml.safe_load(given)
    from papermill.cli import _resolve_type
    words = given.split()
    return {k: _resolve_type(v) for k, v in zip(words[::2], words[1::2])}


def _cells():
    import nbformat
    nb = nbformat.read(TRAIN, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"]


def dry_run(values: dict):
    "Run train.ipynb's cells up to its run-folder check, with `values` injected after the parameters cell as papermill does."
    from papermill.translators import translate_parameters
    cells = _cells()
    i_par = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    i_end = next(i for i, c in enumerate(cells) if "check_run_folder(run_folder" in c.source)
    srcs = [c.source for c in cells[:i_par + 1]] + [translate_parameters("python3", "python", values, "Parameters")]
    srcs += [c.source for c in cells[i_par + 1:i_end + 1]]
    ns = {"__name__": "__main__"}
    for s in srcs: exec(compile(s, "<train.ipynb cell>", "exec", dont_inherit=True), ns)  # not this file's __future__ flags
    return ns


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    "Runs and figures in a temporary folder; torch's thread count restored."
    import torch
    monkeypatch.setenv("SAGEREC_RUNS", str(tmp_path / "runs")); monkeypatch.setenv("SAGEREC_FIGURES", str(tmp_path / "figures"))
    n = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(n)


def test_the_check_comes_before_any_work():
    srcs = [c.source for c in _cells()]
    i_check = next(i for i, s in enumerate(srcs) if "notebook_params(globals()" in s)
    i_par = next(i for i, c in enumerate(_cells()) if "parameters" in c.metadata.get("tags", []))
    i_data = next(i for i, s in enumerate(srcs) if "load_dataset(" in s)
    i_write = next(i for i, s in enumerate(srcs) if "start_run(" in s)
    assert i_par < i_check < i_data < i_write  # checked right after papermill's injected cell; written only at training
    assert not any("log_params(" in s or "RunRecorder(" in s for s in srcs)  # params.json has one writer: start_run


@pytest.mark.parametrize("how,given,expect", BAD, ids=[f"{h}:{g if isinstance(g, str) else g}".replace("\n", " ")[:40] for h, g, _ in BAD])
def test_bad_parameter_fails_before_any_work_with_one_line(sandbox, how, given, expect):
    from sagerec.core import SageRecError
    values = {"run_name": "victim", **_values(how, given)}
    with pytest.raises(SageRecError) as e: dry_run(values)
    msg = str(e.value)
    assert expect in msg and "\n" not in msg, msg
    assert not (sandbox / "runs" / "victim").exists()  # nothing written for a run that never started


def test_good_yaml_spellings_are_converted(sandbox):
    "What YAML and -p make of sensible values is accepted and converted: `lr: 1e-3` is text in YAML, `epochs: 2.0` a float."
    ns = dry_run({**_values("f", "lr: 1e-3\nepochs: 2.0\nnum_threads: 1\ntau: null\n"), "run_name": "ok"})
    assert (ns["lr"], ns["epochs"], type(ns["epochs"]), ns["tau"], ns["run_state"]) == (0.001, 2, int, None, "new")
    assert ns["params"]["epochs"] == 2


@pytest.mark.parametrize("given,variant,mode", [
    ("model gru4rec graph true", "gru4rec+graph", "learned"),
    ("model gru4rec graph true graph_weights fixed", "gru4rec+fixed_graph", "fixed"),
    ("model gru4rec graph true graph_weights learned", "gru4rec+graph", "learned"),
    ("model sagerec graph_weights fixed", "sagerec+fixed_graph", "fixed"),
    ("model gru4rec", "gru4rec", "none")])
def test_graph_switches_set_the_label_and_the_edge_weights(sandbox, given, variant, mode):
    "The plug-in's switches reach the model config and the method label the reports group by."
    ns = dry_run({**_values("p", given), "run_name": "plug"})
    assert (ns["variant"], ns["overrides"]["graph_mode"]) == (variant, mode)


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_pass_the_check(sandbox, config):
    ns = dry_run({**_values("f", config.read_text()), "run_name": "cfg"})
    assert ns["run_state"] == "new"


def test_every_grid_run_passes_the_check(sandbox):
    "The experiment queue's runs (tools/grid.py) use only parameters the notebook has, with valid values."
    import importlib.util, yaml
    spec = importlib.util.spec_from_file_location("sagerec_grid_tool", ROOT / "tools" / "grid.py")
    grid = importlib.util.module_from_spec(spec); sys.modules[spec.name] = grid; spec.loader.exec_module(grid)
    for path in sorted((ROOT / "configs" / "grids").glob("*.yaml")):
        g = grid.load_grid(path) if hasattr(grid, "load_grid") else yaml.safe_load(path.read_text())
        base = yaml.safe_load((ROOT / g["config"]).read_text()) if g.get("config") else {}
        for job in grid.expand(g):
            own = {k: v for c in job.get("configs", []) for k, v in (yaml.safe_load((ROOT / c).read_text()) or {}).items()}
            dry_run({**base, **own, **job["params"]})  # the queue's order: grid config, the run's own configs, its params


# ------------------------------------------------------------------------------------------ real papermill runs
def _papermill(tmp: Path, *args, name="out"):
    env = {**os.environ, "SAGEREC_RUNS": str(tmp / "runs"), "SAGEREC_FIGURES": str(tmp / "figures"), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "papermill", str(TRAIN), str(tmp / f"{name}.ipynb"), "--no-progress-bar", *args],
                       cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    return r, time.time() - t0


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    "One tiny finished papermill run (no-graph variant, 1 epoch) in a temporary runs/ folder."
    tmp = tmp_path_factory.mktemp("pm")
    r, _ = _papermill(tmp, "-p", "variant", "sasrec", "-p", "epochs", "1", "-p", "progress", "False", "-p", "num_threads", "1",
                      "-p", "run_name", "quickstart", name="ok")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, tmp / "runs" / "quickstart"


def _snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_learning_curves_stay_in_the_run_folder(finished_run):
    tmp, run = finished_run
    assert (run / "learning_curve.png").exists() and (run / "params.json").exists()
    assert not (tmp / "figures").exists() or not any((tmp / "figures").iterdir())  # the figures folder is the project's
    assert not list((ROOT / "figures").glob("learning_curve_*")), "figures/ holds runs' learning curves"


def test_a_failed_run_never_rewrites_a_finished_runs_record(finished_run):
    "Case 1 (issue 13): `-p run_name quickstart -p lr -1`, and `-p dim 64` on a finished dim-50 run, leave the folder untouched."
    tmp, run = finished_run
    before = _snapshot(run)
    r, secs = _papermill(tmp, "-p", "run_name", "quickstart", "-p", "lr", "-1", name="bad_lr")
    assert r.returncode != 0 and "SageRecError: Bad parameter: TrainConfig.lr must be a positive number, got -1.0" in r.stderr
    r2, _ = _papermill(tmp, "-p", "run_name", "quickstart", "-p", "variant", "sasrec", "-p", "epochs", "1", "-p", "dim", "64", name="bad_dim")
    assert r2.returncode != 0 and "holds a run with other settings (dim 50 -> 64; saved -> now)" in r2.stderr, r2.stderr[-2000:]
    assert _snapshot(run) == before
    assert secs < 120  # no data, embeddings or graph were built first (the kernel start is most of it)


def test_unknown_names_from_p_and_f_are_rejected_and_nothing_is_written(finished_run):
    "Case 2: `-p epoch 1` and a -f config with `batchsize: 64` stop the run, with the names papermill only warned about."
    tmp, _ = finished_run
    (tmp / "cfg.yaml").write_text("batchsize: 64\n")
    r, _ = _papermill(tmp, "-p", "epoch", "1", "-f", str(tmp / "cfg.yaml"), "-p", "run_name", "typo", name="typo")
    assert r.returncode != 0
    assert ("unknown parameter 'epoch' (did you mean 'epochs'?); unknown parameter 'batchsize' (did you mean 'batch_size'?)" in r.stderr
            or "unknown parameter 'batchsize' (did you mean 'batch_size'?); unknown parameter 'epoch' (did you mean 'epochs'?)" in r.stderr), r.stderr[-2000:]
    assert not (tmp / "runs" / "typo").exists()


# ------------------------------------------------------------------------------------------ run folders
FOLDER_CASES = [  # (what is done to a copy of the finished run, parameters of the rerun, message)
    ("nothing", {"dim": 64}, "holds a run with other settings (dim 50 -> 64; saved -> now): use another run_name, pass resume=False"),
    ("nothing", {"lr": 0.01, "n_neg": 2}, "other settings (lr 0.001 -> 0.01; n_neg 1 -> 2; saved -> now)"),
    ("truncate last.pt", {}, "last.pt is damaged (OSError: [Errno 22] Invalid argument)"),
    ("garbage last.pt", {}, "last.pt is damaged"),
    ("damage metrics.json", {}, "metrics.json is damaged (not valid JSON"),
    ("damage params.json", {}, "params.json is damaged (not valid JSON"),
    ("remove params.json", {}, "holds a run but no params.json, so its settings are unknown"),
]


@pytest.mark.parametrize("damage,extra,expect", FOLDER_CASES, ids=[c[0] + str(sorted(c[1])) for c in FOLDER_CASES])
def test_a_run_folder_holding_another_or_damaged_run_is_refused_untouched(finished_run, sandbox, damage, extra, expect):
    from sagerec.core import SageRecError
    _, run = finished_run
    copy = sandbox / "runs" / "quickstart"; shutil.copytree(run, copy)
    if damage == "truncate last.pt": (copy / "last.pt").write_bytes((copy / "last.pt").read_bytes()[:5000])
    if damage == "garbage last.pt": (copy / "last.pt").write_bytes(b"\0" * 100)
    if damage == "damage metrics.json": (copy / "metrics.json").write_text('{"history": [{"epoch": 1,')
    if damage == "damage params.json": (copy / "params.json").write_text("{")
    if damage == "remove params.json": (copy / "params.json").unlink()
    before = _snapshot(copy)
    with pytest.raises(SageRecError) as e:
        dry_run({"run_name": "quickstart", "variant": "sasrec", "epochs": 1, **extra})
    msg = str(e.value)
    assert expect in msg and "\n" not in msg, msg
    if "last.pt" in damage: assert "resume from best.pt" in msg and "resume=False" in msg and "delete the run folder" in msg
    assert _snapshot(copy) == before


def test_same_settings_continue_and_more_epochs_are_allowed(finished_run, sandbox):
    _, run = finished_run
    shutil.copytree(run, sandbox / "runs" / "quickstart")
    ns = dry_run({"run_name": "quickstart", "variant": "sasrec", "epochs": 5, "num_threads": 1})
    assert ns["run_state"] == "resume"
    assert dry_run({"run_name": "quickstart", "variant": "sasrec", "dim": 64, "resume": False})["run_state"] == "replace"


def test_damaged_checkpoint_and_changed_model_in_train(tmp_path):
    "Case 4 through the Python API: a truncated last.pt names the file and the ways on; a changed dim is not 'a different model'."
    import torch
    from sagerec.core import SageRecError, seed_everything
    from sagerec.data import load_dataset
    from sagerec.model import ModelConfig, build_model
    from sagerec.training import TrainConfig, train
    torch.set_num_threads(1)
    ds = load_dataset("beauty-mini"); sp = ds.split()
    cfg = TrainConfig(epochs=1, max_len=10, progress=False)
    seed_everything(0); train(build_model("sasrec", ds.n_items, ModelConfig(dim=8, max_len=10)), sp, cfg, run_dir=tmp_path)
    with pytest.raises(SageRecError) as e:
        train(build_model("sasrec", ds.n_items, ModelConfig(dim=16, max_len=10)), sp, cfg, run_dir=tmp_path)
    assert "other model settings (dim 8 -> 16; saved -> now)" in str(e.value) and "different model" not in str(e.value)
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:3000])
    with pytest.raises(SageRecError) as e:
        train(build_model("sasrec", ds.n_items, ModelConfig(dim=8, max_len=10)), sp, cfg, run_dir=tmp_path)
    msg = str(e.value)
    assert "last.pt is damaged" in msg and "resume from best.pt" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------ the Python API alike
@pytest.mark.parametrize("cls,kw,expect", [
    ("TrainConfig", dict(epochs=2.5), "TrainConfig: epochs=2.5 must be a whole number"),
    ("TrainConfig", dict(seed="abc"), "TrainConfig: seed='abc' must be a whole number"),
    ("TrainConfig", dict(num_threads=-2), "TrainConfig.num_threads must be >= 1 or None"),
    ("TrainConfig", dict(eval_batch_size=0), "TrainConfig.eval_batch_size must be >= 1"),
    ("TrainConfig", dict(betas=(0.9,)), "betas=(0.9,) must be a list of 2 values"),
    ("ModelConfig", dict(dim="abc"), "ModelConfig: dim='abc' must be a whole number"),
    ("ModelConfig", dict(dropout="high"), "ModelConfig: dropout='high' must be a number"),
])
def test_python_api_checks_types_too(cls, kw, expect):
    from sagerec.core import SageRecError
    from sagerec.model import ModelConfig
    from sagerec.training import TrainConfig
    with pytest.raises(SageRecError, match=None) as e: {"TrainConfig": TrainConfig, "ModelConfig": ModelConfig}[cls](**kw)
    assert expect in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------ cases 5-9
def test_make_install_stamp_ignores_a_rewrite_with_the_same_content(tmp_path):
    "Case 5: nbdev-export rewrites pyproject.toml unchanged; `make` must not plan a reinstall, but must after a real change."
    if not shutil.which("make"): pytest.skip("make is not installed")
    for f in ("Makefile", "pyproject.toml", "tools/deps_hash.py"):
        (tmp_path / f).parent.mkdir(exist_ok=True); shutil.copy(ROOT / f, tmp_path / f)
    py = sys.executable
    h = subprocess.run([py, "tools/deps_hash.py", "torch==2.13.0"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / ".venv").mkdir(); (tmp_path / ".venv" / f".installed-{h}").touch()
    time.sleep(0.05); text = (tmp_path / "pyproject.toml").read_text(); (tmp_path / "pyproject.toml").write_text(text)  # newer mtime
    dry = lambda: subprocess.run(["make", "-n", "install", f"PYTHON={py}"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "pip install" not in dry()
    (tmp_path / "pyproject.toml").write_text(text.replace('"scipy>=1.10",', '"scipy>=1.10",\n    "rich>=13",'))
    assert "pip install" in dry()


def test_unusable_cache_runs_uncached_with_a_warning(tmp_path, monkeypatch):
    "Case 7: SAGEREC_CACHE pointing somewhere unwritable no longer blocks even the embedded dataset."
    import sagerec.core as core
    from sagerec.data import load_dataset
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("SAGEREC_CACHE", str(tmp_path / "file" / "cache")); monkeypatch.setattr(core, "_NO_CACHE", {})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = load_dataset("beauty-mini")
    assert ds.n_items > 0 and any("running without a cache" in str(x.message) for x in w)


def test_full_disk_while_saving_a_checkpoint_says_so(tmp_path, monkeypatch):
    "Case 7: torch's 'unexpected pos' on a full disk becomes a line about the disk; the old checkpoint stays."
    import torch
    from sagerec.core import SageRecError
    from sagerec.training import save_checkpoint
    save_checkpoint(tmp_path / "last.pt", {"v": 1})
    def full(obj, f): raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1114432 vs 1114320")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(SageRecError) as e: save_checkpoint(tmp_path / "last.pt", {"v": 2})
    assert "disk, which is probably full" in str(e.value) and "unexpected pos" in str(e.value)
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.pt")["v"] == 1


def test_damaged_metrics_json_in_a_report(tmp_path):
    "Case 7: a damaged metrics.json read by the report names the file."
    from sagerec.core import SageRecError
    from sagerec.report import load_run
    (tmp_path / "params.json").write_text("{}"); (tmp_path / "metrics.json").write_text('{"test": ')
    with pytest.raises(SageRecError, match="metrics.json is damaged"): load_run(tmp_path)


def test_missing_fields_are_all_named(tmp_path):
    "Case 6: a record missing two fields names both."
    import gzip
    from sagerec.core import SageRecError
    from sagerec.raw import read_amazon_reviews
    p = tmp_path / "reviews_Beauty_5.json.gz"
    with gzip.open(p, "wt") as f: f.write('{"reviewerID": "U1", "asin": "B1", "unixReviewTime": 1}\n{"overall": 5.0, "asin": "B2"}\n')
    with pytest.raises(SageRecError) as e: read_amazon_reviews(p)
    assert "line 2: not a complete review record (missing reviewerID, unixReviewTime)" in str(e.value)


def _prepared(tmp: Path, items: list[dict]):
    import gzip
    d = tmp / "beauty"; d.mkdir(parents=True)
    with gzip.open(d / "interactions.tsv.gz", "wt") as f:
        f.write("user_id\titem_id\tseq_pos\tuser_idx\n" + "".join(f"U{u}\tI{i}\t{p}\t{u}\n" for u in range(6) for p, i in enumerate(range(1, 7))))
    with gzip.open(d / "items.jsonl.gz", "wt") as f: f.write("".join(json.dumps(r) + "\n" for r in items))
    return d


def test_duplicate_and_missing_item_records(tmp_path):
    "Case 9: a conflicting duplicate item record is an error naming both lines; missing records are counted in a warning."
    from sagerec.core import SageRecError
    from sagerec.data import amazon_items, read_prepared_amazon
    d = _prepared(tmp_path / "a", [{"item_id": "I1", "title": "Red lipstick"}, {"item_id": "I1", "title": "Blue drill"}])
    with pytest.raises(SageRecError) as e: read_prepared_amazon(d / "interactions.tsv.gz", d / "items.jsonl.gz")
    assert "line 2: a second, different record for item 'I1' (the first is on line 1)" in str(e.value)
    d = _prepared(tmp_path / "b", [{"item_id": "I1", "title": "Red lipstick"}, {"item_id": "I1", "title": "Red lipstick"}])
    log, meta = read_prepared_amazon(d / "interactions.tsv.gz", d / "items.jsonl.gz")  # an identical repeat is harmless
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        items = amazon_items(log.item.unique(), meta)
    assert len(items) == 6 and any("5 of 6 items of the log have no record" in str(x.message) and "dataset rule" in str(x.message) for x in w)


def test_stored_outputs_carry_no_developer_paths():
    "Case 8: no stored output (and so no docs page) shows the project's absolute path, site-packages or kernel temp files."
    import re
    import nbformat
    bad = re.compile(re.escape(str(ROOT)) + r"|/[^\s'\"]*site-packages/|/tmp/ipykernel_|/[^\s'\"]+/(?:runs|figures)/[\w.-]+|IProgress not found")
    found = []
    for p in sorted((ROOT / "nbs").glob("*.ipynb")):
        for i, c in enumerate(nbformat.read(p, as_version=4).cells):
            for o in c.get("outputs", []):
                text = json.dumps(o)
                if m := bad.search(text): found.append(f"{p.name} cell {i}: {m.group(0)}")
    assert not found, "stored outputs with developer paths or noise (python tools/nb.py scrub):\n" + "\n".join(found)


def test_docs_merge_split_progress_bars_and_hide_author_notes():
    "Case 8: a progress bar split over two stream outputs shows once; author lint notes are not printed by default."
    import importlib.util
    spec = importlib.util.spec_from_file_location("sagerec_docs_tool_r", ROOT / "tools" / "docs.py")
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    outs = [{"output_type": "stream", "name": "stderr", "text": "epochs:   0%|  | 0/8\r"},
            {"output_type": "stream", "name": "stderr", "text": "epochs:  50%|# | 4/8\repochs: 100%|##| 8/8\n"}]
    merged = mod.merge_streams(outs)
    assert len(merged) == 1 and mod.collapse_cr(merged[0]["text"]) == "epochs: 100%|##| 8/8\n"
    logged = []
    mod.SHOW_NOTES = False; mod._note(logged.append, "cell 15 mixes imports")
    assert logged == []
    css = (ROOT / "docs" / "_static" / "sagerec.css").read_text()
    assert re.search(r"table\.dataframe \{[^}]*overflow-x: auto", css)


def test_results_say_threads_matter():
    "Case 9: where results are published, the README says bit-identical results need the same thread count."
    assert "same number of CPU threads" in (ROOT / "README.md").read_text()


if __name__ == "__main__":  # the closing note's table: every bad input and the message it now gives
    import tempfile
    from sagerec.core import SageRecError
    os.environ["SAGEREC_RUNS"] = tempfile.mkdtemp(); os.environ["SAGEREC_FIGURES"] = tempfile.mkdtemp()
    for how, given, _ in BAD:
        try: dry_run({"run_name": "victim", **_values(how, given)}); msg = "(accepted!)"
        except SageRecError as e: msg = str(e)
        shown = {"p": lambda g: " ".join(f"-p {a} {b}" for a, b in zip(g.split()[::2], g.split()[1::2])),
                 "f": lambda g: f"-f config.yaml ({g.strip()!r})", "api": lambda g: f"parameters={g!r}"}[how](given)
        print(f"| `{shown}` | {msg} |")
