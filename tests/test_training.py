"Training mechanics: resuming after a SIGKILL mid-epoch gives the uninterrupted history; no leakage of held-out items."
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sagerec.training import TrainingData

ROOT = Path(__file__).resolve().parents[1]

# A child process: a small model WITH dropout (so torch's RNG matters) on a synthetic split, trained for 3 epochs.
# With a marker path it announces epoch 2 step 3 and then hangs, waiting to be killed.
CHILD = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    from types import SimpleNamespace
    import numpy as np, torch
    from torch import nn
    from sagerec.core import seed_everything
    from sagerec.evaluate import LastItemModel
    from sagerec.training import TrainConfig, train
    torch.set_num_threads(1)
    run_dir, marker, out = sys.argv[1], sys.argv[2], sys.argv[3]

    class DropoutModel(LastItemModel):
        def __init__(self, *a, **k): super().__init__(*a, **k); self.drop = nn.Dropout(0.3)
        def encode(self, seqs): return self.drop(self.emb(seqs))

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 41, size=rng.integers(5, 15)) for _ in range(120)]
    split = SimpleNamespace(n_items=40, train=[s[:-2] for s in seqs], valid_input=[s[:-2] for s in seqs],
                            valid_target=np.array([s[-2] for s in seqs]), test_input=[s[:-1] for s in seqs],
                            test_target=np.array([s[-1] for s in seqs]))
    def hang(epoch, step, loss):
        if marker != "-" and epoch == 2 and step == 3:
            Path(marker).write_text("epoch 2 step 3"); time.sleep(600)
    seed_everything(0); m = DropoutModel(40, 8, max_len=6); m.reset_parameters()
    res = train(m, split, TrainConfig(epochs=3, batch_size=16, max_len=6, lr=1e-2, progress=False), run_dir=run_dir, on_step=hang)
    hist = [{k: v for k, v in r.items() if "seconds" not in k} for r in res.history]
    Path(out).write_text(json.dumps(dict(history=hist, best_epoch=res.best_epoch)))
''')


def _child(tmp, run, marker="-", out="out.json"):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(tmp / run), str(marker), str(tmp / out)], cwd=ROOT)


def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(tmp_path):
    straight = _child(tmp_path, "straight", out="straight.json")
    assert straight.wait(timeout=300) == 0
    marker = tmp_path / "marker"
    victim = _child(tmp_path, "killed", marker=marker, out="never.json")
    t0 = time.time()
    while not marker.exists():
        assert victim.poll() is None and time.time() - t0 < 300, "child ended before reaching epoch 2"
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL); victim.wait(timeout=30)
    assert not (tmp_path / "never.json").exists()
    import torch
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=False)
    assert saved["state"]["epoch"] == 1  # killed in epoch 2: the last checkpoint is the end of epoch 1
    resumed = _child(tmp_path, "killed", out="resumed.json")
    assert resumed.wait(timeout=300) == 0
    a = json.loads((tmp_path / "straight.json").read_text()); b = json.loads((tmp_path / "resumed.json").read_text())
    assert len(a["history"]) == 3 and a == b


@pytest.fixture(scope="module")
def mini_split():
    from sagerec.data import load_dataset
    ds = load_dataset("beauty-mini")
    return ds, ds.split()


def test_no_leakage_into_training_batches(mini_split):
    "Over a whole epoch, training inputs and targets come only from seq[:-2]; test and valid items never appear."
    ds, sp = mini_split
    data = TrainingData(sp.train, sp.n_items, max_len=50)
    seen_in, seen_tgt = {}, {}
    for b in data.batches(64, 2, np.random.default_rng(0)):
        for u, s, p, n in zip(b.users, b.seqs, b.pos, b.neg):
            seen_in[u] = s[s > 0]; seen_tgt[u] = p[p > 0]
            assert not set(n[p > 0].ravel()) & set(sp.train[u])  # negatives avoid the training items
    repeats_test = repeats_valid = 0
    for u in range(ds.n_users):
        seq = ds.sequence(u)
        np.testing.assert_array_equal(sp.train[u], seq[:-2]); np.testing.assert_array_equal(sp.test_input[u], seq[:-1])
        assert sp.test_target[u] == seq[-1] and sp.valid_target[u] == seq[-2]
        if u not in seen_in: assert len(seq[:-2]) < 2; continue
        np.testing.assert_array_equal(seen_in[u], seq[:-3][-50:])   # inputs: seq[:-2][:-1]
        np.testing.assert_array_equal(seen_tgt[u], seq[1:-2][-50:])  # targets: seq[:-2][1:]
        if sp.test_target[u] in seq[:-2]: repeats_test += 1          # an earlier interaction with the same item
        else: assert sp.test_target[u] not in seen_in[u] and sp.test_target[u] not in seen_tgt[u]
        if sp.valid_target[u] in seq[:-2]: repeats_valid += 1
        else: assert sp.valid_target[u] not in seen_tgt[u]
    assert repeats_test == 0 and repeats_valid == 0  # 5-core Amazon data holds no repeated (user, item) pair
    assert len(seen_in) == sum(len(t) >= 2 for t in sp.train)
