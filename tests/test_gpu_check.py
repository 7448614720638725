"""tools/gpu_check.py, the prepared GPU check, run end to end on the CPU with the embedded slice."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.py"


def gpu_check(*args, check=True):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, check=check, cwd=ROOT)


def test_prepare_then_run_on_cpu(tmp_path):
    prep, out = tmp_path / "prep", tmp_path / "out"
    gpu_check("prepare", "--dataset", "beauty-mini", "--prep", prep)
    assert (prep / "beauty-mini_embeddings.npy").exists()
    gpu_check("run", "--dataset", "beauty-mini", "--device", "cpu", "--epochs", "2", "--prep", prep, "--out", out)
    res = json.loads((out / "gpu_check.json").read_text())
    assert res["device"] == "cpu" and res["dataset"] == "beauty-mini"
    for v in ("sagerec", "sasrec"):
        assert len(res[v]["s_per_epoch_all"]) == 2 and res[v]["s_per_epoch"] > 0
    assert res["graph_overhead"] > -1 and res["eval_full_masked_s"] > 0
    assert set(res["eval_metrics_device"]) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    assert res["eval_max_abs_diff_vs_cpu"] == 0.0  # the same device twice: the comparison itself must not add noise


def test_run_without_prepare_says_what_to_do(tmp_path):
    r = gpu_check("run", "--dataset", "beauty-mini", "--device", "cpu", "--prep", tmp_path / "empty", check=False)
    assert r.returncode != 0 and "gpu_check.py prepare --dataset beauty-mini" in r.stderr
