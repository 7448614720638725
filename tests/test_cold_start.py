"The cold-start study (paper §5.8) through the train notebook: `-p cold_items N` makes N test-target items cold."
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from sagerec.data import load_dataset
from sagerec.paper import cold_split, cold_users, pick_cold_items

ROOT = Path(__file__).resolve().parents[1]


def test_cold_items_run_records_the_draw_and_the_cold_users_metrics(tmp_path):
    env = {**os.environ, "SAGEREC_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"), "--no-progress-bar",
                        "-p", "cold_items", "10", "-p", "cold_seed", "3", "-p", "epochs", "1", "-p", "progress", "False", "-p", "num_threads", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "beauty-mini-sagerec-s0-cold10"  # the default name says the run is a cold-start one
    params, metrics = (json.loads((run / f).read_text()) for f in ("params.json", "metrics.json"))
    split = load_dataset("beauty-mini").split()
    expected = pick_cold_items(split, 10, seed=3)
    assert params["cold"]["items"] == expected.tolist() and params["cold"]["seed"] == 3 and params["cold_items"] == 10
    n_cold_users = int(cold_users(split, expected).sum())
    assert n_cold_users > 0
    for kind in ("as_trained", "text_rows"):  # both scorings of the cold users are recorded
        m = metrics["test_cold"][kind]
        assert m["n_users"] == n_cold_users and 0 <= m["ndcg@10"] <= m["recall@10"] <= 1
    # the cold items left every model input, and stayed test targets
    cs = cold_split(split, expected)
    assert not np.isin(np.concatenate(cs.train), expected).any() and (cs.test_target == split.test_target).all()
