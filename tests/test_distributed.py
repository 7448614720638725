"""DDP with 2 CPU processes (gloo, launched by torchrun): (a) one step on two half-batches equals one single-process step
on the whole batch, (b) sharded evaluation equals single-process evaluation exactly, (c) a killed 2-process run resumes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def torchrun(*args, procs: int = 2, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                             str(WORKER), *map(str, args)], cwd=ROOT, env=env, start_new_session=True, **kw)


def run2(*args, procs: int = 2) -> None:
    p = torchrun(*args, procs=procs, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-4000:]


def test_ddp_step_equals_single_process_step(tmp_path):
    run2("step", tmp_path / "step.json")
    r = json.loads((tmp_path / "step.json").read_text())
    assert r["n_per_rank"][0] != r["n_per_rank"][1]           # unequal halves: the weighting is what makes this exact
    assert r["loss_ddp"] == pytest.approx(r["loss_single"], rel=1e-6)
    assert r["grad_diff"] < 1e-6 * max(1.0, r["grad_scale"]) and r["grad_scale"] > 1e-3
    assert r["param_diff"] < 1e-6 and r["param_moved"] > 1e-3 and r["ranks_agree"] == 0.0 and (r["world_size"], r["backend"]) == (2, "gloo")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_ddp_step_one_process(tmp_path):
    "torchrun with one process on the GPU (nccl): the DDP step equals the plain step there, and the CPU's to float tolerance."
    run2("step", tmp_path / "step.json", "cuda", procs=1)
    r = json.loads((tmp_path / "step.json").read_text())
    assert (r["world_size"], r["backend"]) == (1, "nccl") and r["loss_ddp"] == pytest.approx(r["loss_single"], rel=1e-5)
    assert r["param_diff"] < 1e-6 and r["param_moved"] > 1e-3 and r["cpu_param_diff"] < 1e-4


def test_sharded_evaluation_equals_single_process(tmp_path):
    run2("eval", tmp_path / "eval.json")
    got = json.loads((tmp_path / "eval.json").read_text())
    from sagerec.core import seed_everything
    from sagerec.data import load_dataset
    from sagerec.evaluate import evaluate
    from sagerec.graph import random_graph
    from sagerec.model import ModelConfig, build_model
    from sagerec.training import validate, validation_negatives
    torch.set_num_threads(1)
    ds = load_dataset("beauty-mini"); sp = ds.split()
    seed_everything(0)
    model = build_model("sagerec", ds.n_items, ModelConfig(dim=16, max_len=20), random_graph(ds.n_items + 1, 3000, seed=0)).eval()
    for name, kw in {"full-masked": {}, "full-unmasked": dict(mask_history=False), "sampled100": dict(protocol="sampled100"),
                     "full-masked-blocked": dict(item_block=500)}.items():
        ref = evaluate(model, sp, "test", batch_size=128, return_ranks=True, **kw)
        np.testing.assert_array_equal(np.array(got[name].pop("ranks")), ref.pop("ranks"))
        assert got[name] == ref, name                         # exactly the same floats
    assert got["valid"] == validate(model, sp, validation_negatives(sp, 1, seed=1), max_len=20, batch_size=128)


def _kill_workers_of(tag: str, timeout: float = 30) -> None:
    "SIGKILL every process whose command line holds `tag`, and wait until they are gone (Linux /proc)."
    def pids(): 
        out = []
        for p in Path("/proc").glob("[0-9]*"):
            try: cmd = (p / "cmdline").read_bytes().decode(errors="ignore")
            except OSError: continue
            if tag in cmd and int(p.name) != os.getpid(): out.append(int(p.name))
        return out
    t0 = time.time()
    while (left := pids()) and time.time() - t0 < timeout:
        for pid in left:
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass
        time.sleep(0.2)
    assert not pids(), f"workers of {tag} still running"


def test_killed_two_process_run_resumes(tmp_path):
    run2("train", tmp_path / "straight.json", tmp_path / "straight", "-")
    marker = tmp_path / "marker"
    victim = torchrun("train", tmp_path / "never.json", tmp_path / "killed", marker)
    t0 = time.time()
    while not marker.exists():
        assert victim.poll() is None and time.time() - t0 < 300, "the run ended before reaching epoch 2"
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL); victim.wait(timeout=60)
    _kill_workers_of(str(marker))  # torchrun's workers live in their own sessions: the whole job dies, as after a crash
    assert not (tmp_path / "never.json").exists()
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=False)["state"]["epoch"] == 1
    run2("train", tmp_path / "resumed.json", tmp_path / "killed", "-")
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("straight.json", "resumed.json"))
    assert len(a["history"]) == 3 and a["ranks_same"] and b["ranks_same"]
    assert a == b                                              # same history, same final weights (sha256 of the state dict)
