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

# %%
from typing import Optional  # papermill reads the types of the parameters below; it cannot parse `str | None`

# %% tags=["parameters"]
datasets: str = "beauty,toys,ml-1m"  # comma-separated datasets for the full benchmark (slow cells)
variants: str = "sagerec,sasrec"     # SAGERec and the no-graph variant, same code
threads: str = "1,2"                 # comma-separated torch CPU thread counts to time (the target: Beauty < 10 s/epoch on 2 cores)
epochs: int = 4                      # epochs per variant (alternating); the fastest after the first is reported
device: str = "cpu"                  # 'cpu', 'cuda', 'auto'
data_dir: Optional[str] = None       # None -> $SAGEREC_DATA
run_name: str = "bench_train"        # run folder under runs/

# %%
from sagerec.params import notebook_params  # every parameter checked (names, types, ranges) before any work
globals().update(notebook_params(globals()))

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
    "One row per dataset and thread count: s/epoch of each variant and the graph overhead."
    df = pd.DataFrame(rows)
    key = ["dataset", "threads"]
    wide = df.pivot(index=key, columns="variant", values="s_per_epoch")
    out = df[df.variant == "sasrec"].set_index(key)[["users", "items", "max_len", "steps", "real_share", "real_share_unbucketed"]]
    out = out.join(wide.add_prefix("s/epoch ")).join(df[df.variant == "sagerec"].set_index(key)[["edges", "valid_s", "load_avg"]])
    out["graph overhead"] = out["s/epoch sagerec"] / out["s/epoch sasrec"] - 1
    out["graph ms/step"] = 1e3 * (out["s/epoch sagerec"] - out["s/epoch sasrec"]) / out["steps"]
    return out


# %% [markdown]
# ## The embedded slice (runs in the tests)
#
# The same measurement on `beauty-mini`, one epoch each, as a check that the benchmark runs; its numbers
# are too small to mean much.

# %%
mini = load_dataset("beauty-mini")
mini_rows = bench_dataset(mini, epochs=1, threads=1)
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
rec.log_params(datasets=datasets, variants=variants, threads=threads, epochs=epochs, device=dev,
               omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), cpus=os.cpu_count())
thread_counts = [int(t) for t in str(threads).split(",")] if dev == "cpu" else [1]
rows, loaded = [], {}
for name in datasets.split(","):
    loaded[name.strip()] = ds = load_dataset(name.strip(), data_dir=data_dir)
    for t in thread_counts:
        rows += bench_dataset(ds, [v.strip() for v in variants.split(",")], epochs=epochs, threads=t, device=dev)
        print({r["variant"]: round(r["s_per_epoch"], 2) for r in rows[-2:]}, name, t, "threads", flush=True)
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
best_threads = int(bench.groupby("threads")["s/epoch sasrec"].sum().idxmin())  # the faster setting here, used below
{f"{d} x{t}": {"overhead": round(float(r["graph overhead"]), 3), "sagerec s/epoch": round(float(r["s/epoch sagerec"]), 2)}
 for (d, t), r in bench.iterrows()} | {"fastest thread count": best_threads}


# %% [markdown]
# ## Where the graph's time goes: a cost account
#
# The graph layer's cost per step does not shrink with the batch the way the Transformer's does. To score an item
# it needs the degrees of that item and of every neighbour that sends it a message, so the edge MLP scores every
# kept pair touching those (two hops out), and its first layer projects every row at their ends: on Beauty a few
# thousand rows of the table per step, against about a thousand real items in the batch. Counting the multiply-adds
# of the dense layers (forward + backward = 3 x forward) from the sizes the layer itself records (`work`) and from
# the real tokens of the batches gives the floor that no implementation of the exact layer goes under, relative
# to the Transformer:
#
# - edge MLP: $3 \cdot 2 \cdot (U \cdot d \cdot 2h + 2m \cdot 2h)$ FLOPs per step for $U$ projected rows, $m$ pairs (both orders), $h = d$;
# - Transformer: $3 \cdot 2 \cdot \text{blocks} \cdot (T \cdot 6d^2 + 2 d \sum_g r_g w_g^2)$ for $T$ real tokens (the Q, K, V, output and
#   two FFN matrices) and attention in each of the encoder's length groups, $r_g$ rows padded to width $w_g$.
#
# One epoch of each dataset's batches (the training dropout masks, no training) is enough to count.

# %%
def cost_account(ds, max_len: int, batch_size: int = 128, seed: int = 0) -> dict:
    "Mean per-step sizes and dense-layer FLOPs of the graph layer and of the Transformer over one epoch's batches."
    seed_everything(seed); cfg = ModelConfig(max_len=max_len)
    model = build_model("sagerec", ds.n_items, cfg, semantic_graph(ds)).train()
    td = TrainingData(ds.split().train, ds.n_items, max_len)
    d, blocks, acc = cfg.dim, cfg.n_blocks, []
    with torch.no_grad():
        for b in td.batches(batch_size, 1, np.random.default_rng(seed)):
            seqs, pos, neg = (torch.as_tensor(a) for a in (b.seqs, b.pos, b.neg))
            model.loss(seqs, pos, neg)  # runs the graph layer on the batch's rows, as in training
            w = model.graph.work
            lens = (b.seqs != 0).sum(1)
            attn = sum(rows * width * width for _, _, rows, width, _ in model.encoder.packing(seqs != 0).groups)  # the encoder's own length groups
            graph_f = 6 * (w["projected_nodes"] * d * 2 * d + 2 * w["mlp_pairs"] * 2 * d)
            tf_f = 6 * blocks * (lens.sum() * 6 * d * d + 2 * d * attn)
            acc.append(dict(batch_items=int(lens.sum()), rows_used=len(np.unique(np.concatenate([b.seqs.ravel(), b.pos.ravel(), b.neg.ravel()]))) - 1,
                            projected_nodes=w["projected_nodes"], mlp_pairs=w["mlp_pairs"], weighted_edges=w["weighted_edges"],
                            messages=w["messages"], graph_mflop=graph_f / 1e6, transformer_mflop=tf_f / 1e6))
    out = pd.DataFrame(acc).mean().to_dict()
    out["flop_ratio"] = out["graph_mflop"] / out["transformer_mflop"]
    return {"dataset": ds.name, **out}

mini_cost = cost_account(mini, 50)
{k: (round(v, 3) if isinstance(v, float) else v) for k, v in mini_cost.items()}

# %%
assert mini_cost["projected_nodes"] > mini_cost["rows_used"] > 0 and mini_cost["messages"] <= mini_cost["weighted_edges"]
assert mini_cost["graph_mflop"] > 0 and mini_cost["transformer_mflop"] > 0

# %%
#| slow
costs = pd.DataFrame([cost_account(ds, MAX_LEN.get(n, 50)) for n, ds in loaded.items()]).set_index("dataset")
t_best = bench.xs(best_threads, level="threads")
costs["graph ms/step (measured)"] = t_best["graph ms/step"]
costs["overhead (measured)"] = t_best["graph overhead"]
costs["graph GFLOP/s"] = costs["graph_mflop"] / costs["graph ms/step (measured)"]
costs["transformer GFLOP/s"] = costs["transformer_mflop"] / (1e3 * t_best["s/epoch sasrec"] / t_best["steps"])
rec.log_metrics(cost_account=costs.reset_index().to_dict("records"), cost_account_threads=best_threads)
costs.round(3).T

# %% [markdown]
# `flop_ratio` is the overhead the exact layer would have if its dense work ran exactly as efficiently as the
# Transformer's; `overhead (measured)` is what it has. On the Amazon datasets (about nine items per user) the
# two-hop edge MLP does more dense arithmetic per step than the whole Transformer (`flop_ratio` above 1), and the
# measured overhead is already below that ratio because the MLP's few large matrix products run at a higher FLOP
# rate than the Transformer's many small ones. So a graph overhead of 15% per epoch on Beauty or Toys cannot be
# reached on a CPU by computing the paper's layer exactly. On ML-1M (sequences of up to 165 items) the Transformer
# dominates and the overhead is a few percent. The ways under the floor all change the model: degrees from stale
# weights, no gradient through the degrees, or an edge MLP narrower than the paper's $h = d$. None is done here.
#
# Threads: the package sets `OMP_WAIT_POLICY=PASSIVE` before torch loads (idle OpenMP threads sleep), because
# spinning threads slowed two trainings sharing this 2-core machine several times over. With that policy the
# many small operations of a training step pay a wake-up per parallel region, and in the table above one thread
# is faster than two on Beauty and Toys; `num_threads=1` is the setting to use on a small CPU.

# %%
#| slow
assert (costs["projected_nodes"] > costs["rows_used"]).all()  # two hops: more rows projected than the batch uses
assert (costs["flop_ratio"] > 0).all() and (costs["graph GFLOP/s"] > 0).all()
amazon = [d for d in ("beauty", "toys") if d in costs.index]
assert (costs.loc[amazon, "flop_ratio"] > 1).all()  # the exact layer out-computes the Transformer on short sequences
assert (costs.loc[amazon, "overhead (measured)"] < costs.loc[amazon, "flop_ratio"]).all()
if "ml-1m" in costs.index: assert costs.loc["ml-1m", "flop_ratio"] < 0.1

# %% [markdown]
# ## Full ranking of every Beauty user
#
# The test stage of all 22,363 Beauty users under each protocol with a freshly built SAGERec (the weights do
# not change the cost), three repetitions, median reported. Target: under 10 s for the masked full ranking.

# %%
#| slow
beauty = load_dataset("beauty", data_dir=data_dir); bsplit = beauty.split()
torch.set_num_threads(best_threads); seed_everything(0)
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
