# %% [markdown]
# # Benchmark: a million-item catalogue end to end
# > Graph build, SAGERec training and full-ranking evaluation on synthetic catalogues of 10^4, 10^5 and 10^6 items: time and peak memory of each stage, how they grow, and DDP on 2 processes against 1.
#
# ```
# papermill nbs/bench_scale.ipynb runs/bench_scale.ipynb                             # the full benchmark (about an hour on 2 busy cores)
# papermill nbs/bench_scale.ipynb runs/bench_scale_small.ipynb -y "sizes: [10000, 100000]"
# ```
#
# The catalogues come from `sagerec.synthetic` (power-law popularity, clustered 384-d "text" embeddings, topic-following
# sessions; as many users as items, about 10 interactions each, so 10^7 interactions at 10^6 items). Each size runs in
# a fresh subprocess, one stage after the other; before each stage the process resets the kernel's high-water mark of
# its resident memory (`/proc/self/clear_refs`, as in `bench_graph`) and reads it back after (`VmHWM`), so each stage's
# peak is its own. Stages:
#
# 1. **data**: draw the sequences, split them (leave-one-out).
# 2. **embeddings**: the (N+1, 384) float32 table.
# 3. **graph**: `build_graph(emb, k=3)`, as the train notebook calls it (exact search up to 10^5 items, FAISS IVF above).
# 4. **training**: the one trainer (`sagerec.training.train`) on SAGERec with the paper's model settings, batch 128;
#    it is stopped after `warmup_steps + train_steps` steps; **s/step** is the median of the timed steps and
#    **s/epoch is extrapolated** as s/step x batches per epoch (labelled as such: full epochs at 10^6 items take
#    an hour here). The trainer's set-up (training examples, negative sampler, validation negatives) is timed apart.
# 5. **evaluation**: full ranking with the history masked (the default protocol) of `eval_users` users drawn at random,
#    through `sagerec.evaluate.evaluate`, which walks the catalogue in blocks of items when a `(B, N+1)` block would be
#    too large; the dense `(users, N)` score matrix is never formed.
#
# Wall times on this machine are shared with other jobs (the load average is recorded per stage); CPU seconds are
# given too.

# %% tags=["parameters"]
sizes: list = [10_000, 100_000, 1_000_000]  # catalogue sizes (items; users = items)
eval_users: int = 10_000                     # users ranked against the full catalogue
train_steps: int = 20                        # timed training steps per size
warmup_steps: int = 3                        # untimed first steps (>= 1)
batch_size: int = 128                        # users per step (the paper)
threads: int = 1                             # torch (and FAISS) threads in every stage
seed: int = 0                                # generator and model seed
smoke_n: int = 2_000                         # the fast (CI) cells: catalogue size
ddp_items: int = 10_000                      # the DDP comparison: catalogue size (0: skip)
ddp_epochs: int = 2                          # the DDP comparison: epochs per run
run_name: str = "bench_scale"                # results go to runs/<run_name>/metrics.json

# %%
from sagerec.params import notebook_params  # every parameter checked (names, types, ranges) before any work
globals().update(notebook_params(globals()))

# %%
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sagerec.core import RunRecorder, environment_info, project_root

# %%
rec = RunRecorder(run_name)
rec.log_params(sizes=sizes, eval_users=eval_users, train_steps=train_steps, warmup_steps=warmup_steps, batch_size=batch_size,
               threads=threads, seed=seed, smoke_n=smoke_n, ddp_items=ddp_items, ddp_epochs=ddp_epochs)
root = project_root() or Path.cwd().parent
results: dict = {}
dict(cpus=os.cpu_count(), load_avg_1min=round(os.getloadavg()[0], 2))

# %% [markdown]
# ## One catalogue, in its own process

# %%
CHILD = r'''
import json, os, resource, sys, time
a = json.loads(sys.argv[1])
os.environ["OMP_NUM_THREADS"] = str(a["threads"])
import numpy as np, torch
torch.set_num_threads(a["threads"])
try:
    import faiss; faiss.omp_set_num_threads(a["threads"])
except ImportError: pass
from types import SimpleNamespace
from sagerec.core import seed_everything
from sagerec.evaluate import evaluate
from sagerec.graph import build_graph
from sagerec.model import ModelConfig, build_model
from sagerec.synthetic import SyntheticSpec, synthetic_dataset, synthetic_embeddings
from sagerec.training import TrainConfig, train

def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":")) / 1024
def reset():  # peak := current resident size (Linux); returns the current size
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
    except OSError: pass
    return status("VmRSS")
def peak():
    try: return status("VmHWM")
    except (OSError, StopIteration): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
out = dict(items=a["n"])
def stage(name, fn):
    base = reset(); c0, t0 = cpu(), time.perf_counter()
    res = fn()
    out[name] = dict(wall_s=time.perf_counter() - t0, cpu_s=cpu() - c0, rss_before_mib=base, rss_peak_mib=peak(),
                     load_avg=os.getloadavg()[0])
    out[name]["extra_mib"] = out[name]["rss_peak_mib"] - base
    print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    return res

ds, sp = stage("data", lambda: (lambda d: (d, d.split()))(synthetic_dataset(a["n"], seed=a["seed"])))
out["users"], out["interactions"] = ds.n_users, ds.n_interactions
emb = stage("embeddings", lambda: synthetic_embeddings(SyntheticSpec(**ds.info["spec"])))
graph = stage("graph", lambda: build_graph(emb, k=3))
out["graph"].update(method=graph.info.get("method"), undirected_edges=graph.num_undirected_edges,
                    recall_estimate=graph.info.get("recall_estimate"))
del emb

class Stop(Exception): pass
stamps, cpu_stamps = [], []
def on_step(epoch, step, loss):
    stamps.append(time.perf_counter()); cpu_stamps.append(time.process_time())
    if step >= a["warmup"] + a["steps"]: raise Stop
seed_everything(a["seed"])
model = build_model("sagerec", ds.n_items, ModelConfig(), graph)
cfg = TrainConfig(epochs=1, batch_size=a["batch_size"], lr=1e-3, seed=a["seed"], device="cpu", progress=False)
def fit():
    t0 = time.perf_counter()
    try: train(model, sp, cfg, on_step=on_step)
    except Stop: pass
    return t0
t_call = stage("training", fit)
d = np.diff(stamps)[a["warmup"] - 1:]  # stamps[i] ends step i+1: the durations of steps warmup+1 .. warmup+steps
dc = np.diff(cpu_stamps)[a["warmup"] - 1:]
n_batches = -(-sum(len(t) >= 2 for t in sp.train) // a["batch_size"])
out["training"].update(s_per_step=float(np.median(d)), s_per_step_mean=float(d.mean()), cpu_s_per_step=float(np.median(dc)), timed_steps=len(d), batches_per_epoch=n_batches,
                       s_per_epoch_extrapolated=float(np.median(d)) * n_batches, setup_s=stamps[0] - t_call - float(np.median(d)),
                       params=sum(p.numel() for p in model.parameters()))

rng = np.random.default_rng(a["seed"])
users = np.sort(rng.choice(sp.n_users, size=min(a["eval_users"], sp.n_users), replace=False))
sub = SimpleNamespace(n_items=sp.n_items, test_input=[sp.test_input[u] for u in users], test_target=sp.test_target[users],
                      valid_input=[sp.valid_input[u] for u in users], valid_target=sp.valid_target[users])
m = stage("evaluation", lambda: evaluate(model, sub, "test"))
out["evaluation"].update(users=len(users), **{k: m[k] for k in ("ndcg@10", "recall@10")}, dense_matrix_gib=len(users) * (sp.n_items + 1) * 4 / 2**30)
print("RESULT " + json.dumps(out), flush=True)
'''

def run_size(n: int, steps: int = train_steps, timeout: int = 7200) -> dict:
    "All stages for a catalogue of `n` items in a fresh process; returns (and stores) its measurements."
    args = dict(n=n, seed=seed, threads=threads, steps=steps, warmup=warmup_steps, batch_size=batch_size, eval_users=eval_users)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, timeout=timeout, env=env)
    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode or not line: raise RuntimeError(f"size {n} failed:\n{p.stderr[-3000:]}")
    results[n] = json.loads(line[0][7:])
    return results[n]

STAGES = ("data", "embeddings", "graph", "training", "evaluation")
def table(res: dict) -> pd.DataFrame:
    "One row per catalogue size: the main numbers of every stage."
    rows = []
    for n, r in sorted(res.items()):
        t, e, g = r["training"], r["evaluation"], r["graph"]
        rows.append({"items": r["items"], "users": r["users"], "interactions": r["interactions"],
                     "graph s": g["wall_s"], "graph peak MiB": g["rss_peak_mib"], "graph extra MiB": g["extra_mib"], "graph method": g["method"],
                     "edges": g["undirected_edges"], "train s/step": t["s_per_step"], "train cpu s/step": t["cpu_s_per_step"],
                     "batches/epoch": t["batches_per_epoch"],
                     "train s/epoch (extrapolated)": t["s_per_epoch_extrapolated"], "train setup s": t["setup_s"],
                     "train peak MiB": t["rss_peak_mib"], "eval users": e["users"], "eval s": e["wall_s"], "eval cpu s": e["cpu_s"],
                     "eval peak MiB": e["rss_peak_mib"], "eval extra MiB": e["extra_mib"], "dense (U, N) GiB avoided": e["dense_matrix_gib"],
                     "load avg": np.mean([r[s]["load_avg"] for s in STAGES])})
    return pd.DataFrame(rows).set_index("items").round(3)


# %% [markdown]
# ## Smoke run (fast)
#
# The whole procedure on a small catalogue, a few training steps.

# %%
smoke = run_size(smoke_n, steps=3)
table({smoke_n: smoke}).T

# %%
assert smoke["interactions"] > 5 * smoke_n and smoke["graph"]["undirected_edges"] >= 3 * smoke_n / 2
assert smoke["training"]["timed_steps"] == 3 and smoke["training"]["s_per_step"] > 0
assert smoke["evaluation"]["users"] == min(eval_users, smoke_n) and 0 <= smoke["evaluation"]["ndcg@10"] <= 1
results.pop(smoke_n)

# %% [markdown]
# ## 10^4, 10^5 and 10^6 items

# %%
#| slow
for n in sizes:
    run_size(n)
    print(f"{n:,} items done, load average {os.getloadavg()[0]:.1f}", flush=True)
bench = table(results)
rec.log_metrics(sizes=results, environment=environment_info())
bench.T

# %%
#| slow
for n in sizes:
    r = results[n]
    assert r["graph"]["undirected_edges"] >= 1.5 * n and r["training"]["timed_steps"] == train_steps
    assert r["evaluation"]["users"] == min(eval_users, n)


# %% [markdown]
# ## How each stage grows with the catalogue
#
# The exponent $b$ in time $\propto N^b$ (or memory), fitted between consecutive sizes: $b = 1$ is linear growth,
# $b = 2$ would be quadratic. Memory is the stage's own peak minus what the process held before it (`extra`), the
# part the stage itself needs.

# %%
#| slow
def growth(res: dict) -> pd.DataFrame:
    ns = sorted(res)
    metric = {"graph time": lambda r: r["graph"]["wall_s"], "graph memory": lambda r: r["graph"]["extra_mib"],
              "train s/step": lambda r: r["training"]["s_per_step"], "train s/epoch (extrap.)": lambda r: r["training"]["s_per_epoch_extrapolated"],
              "train memory": lambda r: r["training"]["rss_peak_mib"],
              "eval time (fixed users)": lambda r: r["evaluation"]["wall_s"], "eval memory": lambda r: r["evaluation"]["extra_mib"]}
    rows = {}
    for name, f in metric.items():
        rows[name] = {f"{a:,} -> {b:,}": np.log(max(f(res[b]), 1e-9) / max(f(res[a]), 1e-9)) / np.log(b / a) for a, b in zip(ns, ns[1:])}
    return pd.DataFrame(rows).T.round(2)
slopes = growth(results)
rec.log_metrics(growth_exponents=slopes.to_dict())
slopes

# %%
#| slow
assert (slopes.loc["eval memory"] < 1.5).all() and (slopes.loc["graph memory"] < 1.5).all()  # nothing quadratic in memory

# %% [markdown]
# ## DDP: 2 processes against 1 on this machine
#
# The launch entry point (`python -m sagerec.distributed`) on the synthetic catalogue of `ddp_items` items, SAGERec,
# `ddp_epochs` epochs, one torch thread per process: alone, and under `torchrun --nproc_per_node 2` (gloo). This
# machine has 2 cores shared with other jobs, so no speed-up is expected; the point is that the launch path works and
# what the all-reduce costs. s/epoch is the trainer's own (training only, validation excluded), mean over the epochs.

# %%
#| slow
ddp = {}
if ddp_items:
    out_dir = Path(tempfile.mkdtemp())
    common = ["-m", "sagerec.distributed", "-p", "dataset", f"synthetic-{ddp_items}", "-p", "epochs", str(ddp_epochs),
              "-p", "progress", "false", "-p", "num_threads", "1", "-p", "output_dir", str(out_dir), "-p", "seed", str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    for procs in (1, 2):
        cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)] if procs > 1 else [])
        t0 = time.perf_counter()
        p = subprocess.run(cmd + common + ["-p", "run_name", f"p{procs}"], capture_output=True, text=True, timeout=7200, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        m = json.loads((out_dir / f"p{procs}" / "metrics.json").read_text())
        ddp[procs] = {"processes": procs, "backend": m["backend"], "s/epoch (training)": m["seconds_per_epoch"],
                      "valid s/epoch": float(np.mean([h["valid_seconds"] for h in m["history"]])),
                      "test ndcg@10 (full, masked)": m["test"]["full-masked"]["ndcg@10"], "wall s (whole run)": time.perf_counter() - t0,
                      "load avg": os.getloadavg()[0]}
    rec.log_metrics(ddp=ddp)
pd.DataFrame(ddp).T

# %%
#| slow
if ddp_items: assert ddp[2]["backend"] == "gloo" and ddp[1]["backend"] is None

# %%
#| slow
rec.dir / "metrics.json"
