"The experiment queue (tools/grid.py): expansion, skip / resume / publish, and clear errors for a bad grid file."
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "tools" / "grid.py"


def grid(*args, env=None, check=True):
    r = subprocess.run([sys.executable, str(GRID), *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check: assert r.returncode == 0, r.stderr + r.stdout
    return r


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "grid.yaml"; p.write_text(text); return p


def test_expand_orders_by_seed_and_names_runs(tmp_path):
    g = write(tmp_path, "common: {epochs: 1}\nseeds: [0, 1]\nruns:\n  - {name: a, params: {lr: 0.01}}\n  - {name: 'b-s{seed}-x'}\n")
    lines = grid("list", g).stdout.splitlines()
    assert [l.split()[0] for l in lines] == ["a-s0", "b-s0-x", "a-s1", "b-s1-x"]
    first = json.loads(lines[0].split(" ", 1)[1])
    assert first == {"num_threads": 1, "progress": False, "epochs": 1, "lr": 0.01, "seed": 0}


def test_run_config_files_and_labels(tmp_path):
    g = write(tmp_path, "config: configs/beauty.yaml\nruns:\n  - {name: a, label: GRU4Rec, config: configs/models/gru4rec.yaml}\n  - {name: b}\n")
    lines = grid("list", g).stdout.splitlines()
    assert lines[0].endswith("-f configs/models/gru4rec.yaml") and "-f" not in lines[1]
    sys.path.insert(0, str(ROOT / "tools"))
    import grid as G
    job = G.expand(G.load_grid(g))[0]
    cmd = G.papermill_cmd(job["grid"], job)
    fs = [cmd[i + 1] for i, c in enumerate(cmd) if c == "-f"]
    assert [Path(f).relative_to(ROOT).as_posix() for f in fs] == ["configs/beauty.yaml", "configs/models/gru4rec.yaml"]  # dataset first, the model's values override


@pytest.mark.parametrize("text, msg", [
    ("runs: [{name: a, config: configs/nope.yaml}]\n", "does not exist"),
    ("runs: []\n", "lists no runs"),
    ("runz: [{name: a}]\n", "unknown keys ['runz']"),
    ("runs: [{params: {}}]\n", "every run needs a name"),
    ("runs: [{name: a, parms: {}}]\n", "unknown keys ['parms']"),
    ("runs: [{name: a}, {name: a}]\n", "run names repeat"),
    ("order: random\nruns: [{name: a}]\n", "order must be"),
])
def test_bad_grid_files_fail_with_one_line(tmp_path, text, msg):
    r = grid("list", write(tmp_path, text), check=False)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_run_publishes_then_skips(tmp_path):
    g = write(tmp_path, "common: {dataset: beauty-mini, epochs: 1, dim: 16}\nruns:\n  - {name: mini, params: {variant: sasrec}}\n")
    env = {**os.environ, "SAGEREC_RUNS": str(tmp_path / "runs"), "SAGEREC_FIGURES": str(tmp_path / "figs")}
    out = grid("run", g, "--jobs", "1", "--poll", "0.5", "--results", tmp_path / "results", env=env).stdout
    assert "finished mini-s0: published" in out
    metrics = json.loads((tmp_path / "results" / "mini-s0" / "metrics.json").read_text())
    assert "full-masked" in metrics["test"] and (tmp_path / "results" / "mini-s0" / "test_ranks.npz").exists()
    again = grid("run", g, "--jobs", "1", "--poll", "0.5", "--results", tmp_path / "results", env=env).stdout
    assert "started" not in again and "0 runs finished" in again
    status = grid("status", g, "--results", tmp_path / "results", env=env).stdout
    assert "mini-s0" in status and "published" in status


def test_queues_take_free_slots_one_at_a_time(tmp_path, monkeypatch):
    "Two queues on one runs folder never both take the last free slot: a queue starts runs only under the admission lock."
    import importlib.util, time
    monkeypatch.setenv("SAGEREC_RUNS", str(tmp_path / "runs"))
    spec = importlib.util.spec_from_file_location("sagerec_grid_admission", GRID)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    g = write(tmp_path, "common: {dataset: beauty-mini, epochs: 1, dim: 16}\nruns:\n  - {name: mini, params: {variant: sasrec}}\n")
    env = {**os.environ, "SAGEREC_RUNS": str(tmp_path / "runs"), "SAGEREC_FIGURES": str(tmp_path / "figs")}
    with mod.admission():  # another queue is counting and starting
        p = subprocess.Popen([sys.executable, str(GRID), "run", str(g), "--jobs", "1", "--poll", "0.2", "--results", str(tmp_path / "res")],
                             env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert p.poll() is None and not (tmp_path / "runs" / "mini-s0").exists()  # it waits for the lock
    for _ in range(100):
        if (tmp_path / "runs" / "mini-s0" / ".grid.lock").exists(): break
        time.sleep(0.1)
    p.terminate(); p.communicate(timeout=60)
    assert (tmp_path / "runs" / "mini-s0" / ".grid.lock").exists()  # and starts once the lock is free


def test_killed_queue_run_resumes_at_once_but_hand_run_waits(tmp_path, monkeypatch):
    "A run folder with a fresh last.pt is 'partial' when its queue lock is free (the queue died), 'running' when started by hand."
    import importlib.util
    monkeypatch.setenv("SAGEREC_RUNS", str(tmp_path / "runs"))
    spec = importlib.util.spec_from_file_location("sagerec_grid_state", GRID)
    mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
    job = {"name": "r-s0"}
    f = tmp_path / "runs" / "r-s0"; f.mkdir(parents=True); (f / "last.pt").write_bytes(b"x")
    assert mod.state(job, tmp_path / "results")[0] == "running"      # by hand, written just now
    (f / ".grid.lock").touch()
    assert mod.state(job, tmp_path / "results")[0] == "partial"      # a queue's run whose process is gone
    import fcntl
    with open(f / ".grid.lock") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        assert mod.state(job, tmp_path / "results")[0] == "running"  # a live queue holds the lock


def test_finished_run_is_published_while_every_slot_is_busy(tmp_path):
    "A queue publishes a run that finished outside it at once, without waiting for a free slot."
    import fcntl, time
    from sagerec.paper import fake_run
    runs = tmp_path / "runs"
    fake_run(runs, "done-s0")  # finished (it has test metrics), not published yet
    (runs / "busy").mkdir(parents=True)
    g = write(tmp_path, "runs:\n  - {name: done}\n")
    env = {**os.environ, "SAGEREC_RUNS": str(runs)}
    with open(runs / "busy" / ".grid.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)  # another queue's run holds the only slot
        t0 = time.time()
        out = grid("run", g, "--jobs", "1", "--poll", "0.2", "--results", tmp_path / "results", env=env).stdout
    assert "done-s0 was finished: published" in out and time.time() - t0 < 60
    assert (tmp_path / "results" / "done-s0" / "metrics.json").exists()
