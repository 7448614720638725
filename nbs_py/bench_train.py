# %% [markdown]
# # Benchmark: training and evaluation speed
# > Seconds per epoch of SAGERec and its no-graph variant (SASRec) in the same trainer, on Beauty, Toys and ML-1M, and the time to rank every Beauty user.
#
# ```
# papermill nbs/bench_train.ipynb runs/bench_train.ipynb                  # the full benchmark (needs SAGEREC_DATA)
# papermill nbs/bench_train.ipynb runs/bench_gpu.ipynb -p device cuda -p run_name bench_train_gpu
# ```
#
# One epoch here is exactly what `sagerec.training.train` does per epoch: length-bucketed batches of 128
# users trimmed to their longest sequence, negatives drawn, forward, BCE, backward, Adam. Validation (full
# ranking of every user, history masked) is timed separately. The variants alternate epoch by epoch and the
# fastest epoch after the first is reported, so one-time start-up costs are not counted. Timings depend on what else the
# machine runs: the load average is recorded next to them.

# %% tags=["parameters"]
datasets: str = "beauty,toys,ml-1m"  # comma-separated datasets for the full benchmark (slow cells)
variants: str = "sagerec,sasrec"     # SAGERec and the no-graph variant, same code
threads: int = 2                     # torch CPU threads (the target: Beauty < 10 s/epoch on 2 cores)
epochs: int = 4                      # epochs per variant (alternating); the fastest after the first is reported
device: str = "cpu"                  # 'cpu', 'cuda', 'auto'
data_dir: str | None = None          # None -> $SAGEREC_DATA
run_name: str = "bench_train"        # run folder under runs/

# %%
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: idle threads sleep instead of spinning,
                                                  # which keeps a shared CPU from slowing training many times over
import time

import numpy as np
import pandas as pd
import torch

from sagerec.core import RunRecorder, pick_device, seed_everything
from sagerec.data import load_dataset
from sagerec.evaluate import evaluate
from sagerec.model import ModelConfig, build_model
from sagerec.training import TrainConfig, TrainingData, train

# %% [markdown]
# ## One measurement
#
# `bench_dataset` builds each variant with the paper's settings for the dataset (max length 50 / 50 / 165,
# dropout 0.5 / 0.5 / 0.2) and trains them one epoch at a time, alternating (A B A B ...), for `epochs` rounds,
# each epoch followed by validation. It reports the fastest epoch after the first (the usual way to time on a
# shared machine: other jobs only ever add time), the median, and how much of the padded batches is real items.

# %%
MAX_LEN = {"beauty": 50, "toys": 50, "ml-1m": 165, "beauty-mini": 50}
DROPOUT = {"ml-1m": 0.2}
_graphs = {}

def semantic_graph(ds):
    "The dataset's semantic item graph (K = 3, default tau), built once per dataset."
    if ds.name not in _graphs:
        from sagerec.embed import item_embeddings
        from sagerec.graph import build_graph
        _graphs[ds.name] = build_graph(item_embeddings(ds, progress=False), k=3)
    return _graphs[ds.name]

def bench_dataset(ds, variants=("sagerec", "sasrec"), epochs: int = 3, threads: int = 2, device: str = "cpu") -> list[dict]:
    "Train each variant one epoch at a time, alternating, `epochs` rounds; report the fastest epoch after the first."
    torch.set_num_threads(threads)
    max_len = MAX_LEN.get(ds.name, 50); split = ds.split()
    cfg = TrainConfig(epochs=1, max_len=max_len, device=device, num_threads=threads, progress=False)
    models, times = {}, {v: [] for v in variants}
    for v in variants:
        seed_everything(0)
        models[v] = build_model(v, ds.n_items, ModelConfig(max_len=max_len, dropout=DROPOUT.get(ds.name, 0.5)),
                                semantic_graph(ds) if v != "sasrec" else None)
    for _ in range(epochs):  # A B A B ...: load changes hit both variants alike
        for v in variants:
            res = train(models[v], split, cfg)   # one epoch (continuing from the weights so far) + validation
            times[v].append((res.history[0]["train_seconds"], res.history[0]["valid_seconds"], res.history[0]["steps"], os.getloadavg()[0]))
    td = TrainingData(split.train, split.n_items, max_len)
    order = td.batch_order(128, np.random.default_rng(0), 50)
    real = td.lengths.sum(); padded = sum(len(i) * td.lengths[i].max() for i in order)
    rows = []
    for v in variants:
        t = times[v][1:] or times[v]
        g = getattr(models[v], "graph", None)
        rows.append(dict(dataset=ds.name, variant=v, max_len=max_len, users=ds.n_users, items=ds.n_items,
                         edges=g.num_edges // 2 if g is not None else 0, steps=t[0][2],
                         s_per_epoch=min(x[0] for x in t), s_per_epoch_median=float(np.median([x[0] for x in t])),
                         valid_s=min(x[1] for x in t), real_share=float(real / padded),
                         real_share_unbucketed=float(real / (len(td) * max_len)), threads=threads, device=res.device,
                         load_avg=float(np.mean([x[3] for x in t]))))
    return rows

def table(rows) -> pd.DataFrame:
    "One row per dataset: s/epoch of each variant and the graph overhead."
    df = pd.DataFrame(rows)
    wide = df.pivot(index="dataset", columns="variant", values="s_per_epoch")
    out = df[df.variant == "sasrec"].set_index("dataset")[["users", "items", "max_len", "steps", "real_share", "real_share_unbucketed"]]
    out = out.join(wide.add_prefix("s/epoch ")).join(df[df.variant == "sagerec"].set_index("dataset")[["edges", "valid_s", "load_avg"]])
    out["graph overhead"] = out["s/epoch sagerec"] / out["s/epoch sasrec"] - 1
    return out


# %% [markdown]
# ## The embedded slice (runs in the tests)
#
# The same measurement on `beauty-mini`, one epoch each, as a check that the benchmark runs; its numbers
# are too small to mean much.

# %%
mini = load_dataset("beauty-mini")
mini_rows = bench_dataset(mini, epochs=1, threads=min(threads, 2))
table(mini_rows).round(3)

# %%
n_examples = len(TrainingData(mini.split().train, mini.n_items))
assert all(r["s_per_epoch"] > 0 and r["steps"] == -(-n_examples // 128) for r in mini_rows)
assert all(r["real_share"] > r["real_share_unbucketed"] for r in mini_rows)

# %% [markdown]
# ## Full datasets

# %%
#| slow
rec = RunRecorder(run_name)
dev = str(pick_device(device))
rec.log_params(datasets=datasets, variants=variants, threads=threads, epochs=epochs, device=dev)
rows = []
for name in datasets.split(","):
    ds = load_dataset(name.strip(), data_dir=data_dir)
    rows += bench_dataset(ds, [v.strip() for v in variants.split(",")], epochs=epochs, threads=threads, device=dev)
    print(rows[-2:], flush=True)
rec.log_metrics(rows=rows)
bench = table(rows)
bench.round(3)

# %% [markdown]
# `real_share` is the share of real items in the padded training batches (length bucketing on);
# `real_share_unbucketed` is the share if every batch were padded to `max_len`.

# %%
#| slow
assert (bench["s/epoch sagerec"] > 0).all() and (bench["s/epoch sasrec"] > 0).all()
rec.log_metrics(table=bench.reset_index().to_dict("records"))
{d: {"overhead": round(float(bench.loc[d, "graph overhead"]), 3), "sagerec s/epoch": round(float(bench.loc[d, "s/epoch sagerec"]), 2)} for d in bench.index}

# %% [markdown]
# ## Full ranking of every Beauty user
#
# The test stage of all 22,363 Beauty users under each protocol with a freshly built SAGERec (the weights do
# not change the cost), three repetitions, median reported. Target: under 10 s for the masked full ranking.

# %%
#| slow
beauty = load_dataset("beauty", data_dir=data_dir); bsplit = beauty.split()
torch.set_num_threads(threads); seed_everything(0)
bmodel = build_model("sagerec", beauty.n_items, ModelConfig(), semantic_graph(beauty)).to(dev)
eval_times = {}
for lbl, kw in {"full-masked": dict(), "full-unmasked": dict(mask_history=False), "sampled100": dict(protocol="sampled100")}.items():
    ts = []
    for _ in range(3):
        t0 = time.perf_counter(); r = evaluate(bmodel, bsplit, "test", **kw); ts.append(time.perf_counter() - t0)
    eval_times[lbl] = float(np.median(ts))
rec.log_metrics(eval_seconds_all_beauty_users=eval_times, eval_users=r["n_users"], eval_load_avg=os.getloadavg()[0])
pd.Series(eval_times, name="seconds (median of 3)").round(2)

# %%
#| slow
assert r["n_users"] == 22363 and all(t > 0 for t in eval_times.values())
