# %% [markdown]
# # Train one model
# > Data → semantic embeddings → item graph → model → training with early stopping → test metrics under every protocol, all recorded in a run folder. Run it with papermill.
#
# ```
# papermill nbs/train.ipynb runs/quickstart.ipynb                                      # CI-sized: beauty-mini, a few epochs
# papermill nbs/train.ipynb runs/beauty.ipynb -p dataset beauty -f configs/beauty.yaml  # the paper's settings
# papermill nbs/train.ipynb runs/beauty-sasrec.ipynb -f configs/beauty.yaml -p variant sasrec
# papermill nbs/train.ipynb runs/gpu.ipynb -p device cuda
# papermill nbs/train.ipynb runs/beauty-gru4rec.ipynb -f configs/beauty.yaml -f configs/models/gru4rec.yaml   # a baseline
# papermill nbs/train.ipynb runs/beauty-gru4rec-graph.ipynb -f configs/beauty.yaml -f configs/models/gru4rec.yaml -p graph true
# papermill nbs/train.ipynb runs/beauty-gru4rec-fixed.ipynb -f configs/beauty.yaml -f configs/models/gru4rec.yaml -p graph true -p graph_weights fixed
# ```
#
# `model` names any registered model (`sagerec.model.registered_models()`); `variant` names SAGERec's ablations
# (Table 5) and is used only when `model` is not given. A run's method label (the `variant` recorded in
# `params.json`, which the reports read) is then the model's name, with `+graph` when the graph plug-in is on
# for a model that has none by default, and `+fixed_graph` when the graph's edges keep their cosine weights
# (`-p graph_weights fixed`, Table 5 (B)'s weighting, instead of the learned edge MLP).
#
# Everything lands in `runs/<run_name>/`: `params.json` (resolved parameters + environment), `metrics.json`
# (validation curve, best epoch, test metrics per protocol, seconds per epoch, peak memory, device),
# `learning_curve.png`, and the checkpoints `best.pt` / `last.pt`. Starting the same run again continues
# from `last.pt` (e.g. after a crash or a kill).
#
# The parameters are checked together before any work (`sagerec.params`): an unknown name (`-p epoch 1`), a wrong
# type (`-p dim abc`, `-p epochs 2.5`) or a value out of range (`-p lr -1`) stops the run in its first seconds with
# one line naming every problem, and nothing is written. `params.json` is written once, when training starts; a
# run folder that holds a run with other settings is refused, untouched (`-p resume False` replaces it).
#
# `python -m sagerec.run` takes the same arguments as `papermill` (`nbs/00c_run.ipynb`; `make train` uses it) and stops
# quietly on Ctrl-C: the running cell is interrupted, the kernel shut down cleanly, and one line names the run folder
# (the same command continues from its `last.pt`); exit code 130. Plain papermill runs the notebook just the same,
# but prints some 40 lines on Ctrl-C, the kernel's tracebacks among them.
#
# ```
# python -m sagerec.run nbs/train.ipynb runs/beauty.ipynb -p dataset beauty -f configs/beauty.yaml
# ```

# %% [markdown]
# **Several processes or GPUs (PyTorch DDP).** This notebook is the single-process entry point. The same pipeline runs
# under `torchrun` through the module `sagerec.distributed`, with this notebook's parameter names and flags (variants
# `sagerec`, `sasrec`, `fixed_edges`, `no_position`); `nccl` is used on GPUs and `gloo` on CPUs, rank 0 writes the
# same run folder, and the same command resumes (see `nbs/17_distributed.ipynb`):
#
# ```
# torchrun --standalone --nproc_per_node 4 -m sagerec.distributed -p dataset beauty -f configs/beauty.yaml      # one machine, 4 GPUs
# torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \
#          -m sagerec.distributed -p dataset beauty -f configs/beauty.yaml                                      # machine 0 of 2 (machine 1: --node_rank 1)
# ```

# %%
from typing import Optional  # papermill reads the types of the parameters below; it cannot parse `str | None`

# %% tags=["parameters"]
# --- what to run
dataset: str = "beauty-mini"        # 'beauty-mini' (embedded, needs no data), 'beauty', 'toys', 'ml-1m'
variant: str = "sagerec"            # 'sagerec' (A), 'sasrec' (no graph, C), 'fixed_edges' (B), 'random_graph' (D), 'no_position' (E); beyond the paper: 'gated', 'text', 'text_graph', 'text_gated', 'text_fixed' 
# >>> models (issue 10)
model: Optional[str] = None         # a registered model ('bpr', 'gru4rec', 'caser', 'sasrec', 'bert4rec', 'cl4srec', 'sagerec', ...); None -> `variant`
graph: Optional[bool] = None        # the semantic graph layer in front of the model's item table; None -> the model's default (on: sagerec only)
graph_weights: Optional[str] = None # with `model` and the graph on: 'learned' edge MLP (paper) or 'fixed' cosine weights (Table 5 (B)); None -> learned
model_params: dict = {}             # the model's own settings (fields of its config class, e.g. {'mask_prob': 0.6}); see configs/models/
# <<< models
seed: int = 0                       # seeds Python, NumPy and torch; recorded
device: str = "auto"                # 'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'
data_dir: Optional[str] = None      # folder holding beauty/, toys/, ml-1m/; None -> $SAGEREC_DATA
run_name: Optional[str] = None      # run folder name; None -> '<dataset>-<variant>-s<seed>'
output_dir: Optional[str] = None    # parent folder of runs; None -> runs/ at the project root ($SAGEREC_RUNS)
resume: bool = True                 # continue from the run folder's last.pt; False: start afresh, replacing it
# --- semantic embeddings and graph (SAGERec variants only)
text_model: Optional[str] = None    # sentence-transformers name or folder; None -> packaged all-MiniLM-L6-v2 (paper: MiniLM-L12-v2)
text_max_length: int = 128          # tokens kept per item prompt (paper: 128)
k: int = 3                          # neighbours per item in the semantic graph (paper: 3)
tau: Optional[float] = None         # cosine threshold for an edge (paper: unspecified); None -> build_graph's default
self_loops: bool = False            # add self-loops to the graph
# --- model
dim: int = 50                       # embedding / hidden width (paper: 50)
n_blocks: int = 2                   # Transformer blocks (paper: 2)
n_heads: int = 1                    # attention heads (paper: unspecified; SASRec: 1)
dropout: float = 0.5                # Transformer dropout (SASRec: 0.5 Amazon, 0.2 ML-1M)
max_len: int = 50                   # longest input (paper: 50 Beauty/Toys, 165 ML-1M)
n_graph_layers: int = 1             # propagation layers (paper: 1)
edge_dropout: float = 0.2           # share of edges dropped per step (paper: 0.2)
node_dropout: float = 0.5           # share of nodes dropped per step (paper: 0.5)
node_dropout_mode: str = "messages" # 'messages' (dropped nodes send nothing) or 'rows' (row dropout)
output_embedding: str = "graph"     # score with the 'graph'-enhanced or the 'raw' item table
l2: float = 1e-5                    # L2 weight on the embedding tables (paper: 1e-5)
ffn_mult: int = 1                   # FFN width / d (SASRec: 1; S3-Rec family: 4)
activation: str = "relu"            # FFN activation: 'relu' (SASRec) or 'gelu' (S3-Rec family)
attn_out_dropout: bool = True       # dropout on the attention output (SASRec's code: none)
ffn_inner_dropout: bool = True      # dropout after the FFN activation (S3-Rec family: none)
norm: str = "pre"                   # 'pre'-LayerNorm blocks (paper) or 'post' (S3-Rec/ICLRec code)
init: str = "xavier"                # 'xavier' (paper) or 'normal' (N(0, 0.02), S3-Rec family)
scale_input: bool = True            # multiply item embeddings by sqrt(d) (SASRec's code)
text_dim: int = 64                  # text variants: principal components of the Sentence-BERT vectors fed to the model
# --- training
epochs: int = 8                     # upper bound (paper: ~150 on Beauty with early stopping); CI-sized here
batch_size: int = 128               # users per step (paper: 128)
lr: float = 1e-3                    # Adam learning rate (paper: 1e-3)
loss: str = "bce"                   # 'bce' (paper), 'ce' (full softmax), 'sampled_softmax' (shared pool of n_neg)
n_neg: int = 1                      # bce: negatives per position (SASRec: 1; the paper's "100" reading: 100); sampled_softmax: pool size
pool: str = "uniform"               # sampled_softmax pool: 'uniform' or 'popularity'
logq: bool = False                  # sampled_softmax: logQ correction
loss_norm: str = "batch"            # 'batch': mean per batch (paper); 'position': every target position weighs the same
bucket: int = 50                    # length-sorted batches from chunks of bucket*batch_size users (0: plain shuffle)
adam_beta2: float = 0.999           # Adam beta2 (paper: 0.999; SASRec's code: 0.98)
pretrain_epochs: int = 0            # epochs of the model's own pre-training stage before training (S3-Rec: configs/models/s3rec.yaml); 0: none
lr_signal: str = "valid_loss"       # LR decay watches 'valid_loss' (paper) or 'metric' (validation NDCG@10)
patience: int = 20                  # early stopping: validations without a better valid NDCG@10 (0: never)
lr_patience: int = 5                # LR x0.1 after this many validations without a lower validation loss (paper: 5; 0: constant LR)
eval_every: int = 1                 # validate every this many epochs
num_threads: Optional[int] = None   # torch CPU threads; None -> torch's default (all cores); 1 was fastest on 2 cores (nbs/bench_train.ipynb)
eval_batch_size: int = 1024         # users per forward pass when evaluating
sampled_seed: int = 0               # seed of the sampled-100 candidates
progress: bool = True               # tqdm progress bars
# --- cold start (paper §5.8; sagerec.paper.cold_split)
cold_items: int = 0                 # >0: this many test-target items lose every training interaction (the cold-start study); 0: the standard split
cold_seed: int = 0                  # seed of the cold-item draw

# %%
# --- parameter check (sagerec.params): every parameter above, and any unknown one given with -p / -f, checked together
#     against the parameters cell and the ModelConfig / TrainConfig fields, before any work; nothing is written before it passes
from sagerec.params import check_run_folder, notebook_params, one_of, start_run  # first: sagerec.core sets up torch's threads
from sagerec.model import ModelConfig, registered_models
from sagerec.training import TrainConfig
VARIANTS = {  # variant -> (model name, graph, ModelConfig overrides)
    "sagerec":      ("sagerec", "semantic", dict(graph_mode="learned")),
    "sasrec":       ("sasrec",  None,       dict(graph_mode="none")),
    "fixed_edges":  ("sagerec", "semantic", dict(graph_mode="fixed")),
    "random_graph": ("sagerec", "random",   dict(graph_mode="learned")),
    "no_position":  ("sagerec", "semantic", dict(graph_mode="learned", use_position=False)),
    # beyond the paper (nbs/06_model.ipynb, "Beyond the paper"): the gate on the propagated term, the text as input
    "gated":        ("sagerec", "semantic", dict(graph_mode="learned", graph_gate=True)),
    "text":         ("sasrec",  "semantic", dict(graph_mode="none", text_input=True)),
    "text_graph":   ("sagerec", "semantic", dict(graph_mode="learned", text_input=True)),
    "text_gated":   ("sagerec", "semantic", dict(graph_mode="learned", text_input=True, graph_gate=True)),
    "text_fixed":   ("sagerec", "semantic", dict(graph_mode="fixed", text_input=True)),  # the text feature + (B)'s fixed cosine weights
}
globals().update(notebook_params(globals(), configs=(ModelConfig, TrainConfig),
                                 checks={"variant": one_of(*VARIANTS), "model": one_of(None, *registered_models()),
                                         "graph_weights": one_of(None, "learned", "fixed")}))
# --- end of the parameter check

# %%
import os
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: idle threads sleep instead of spinning,
                                                  # which keeps a shared CPU from slowing training many times over
import json, resource, time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from sagerec.core import SageRecError, check, data_dir as resolve_data_dir, pick_device, project_root, rel_path, runs_dir, seed_everything
from sagerec.data import load_dataset
from sagerec.evaluate import evaluate
from sagerec.model import ModelConfig, build_model, registered_models
from sagerec.report import metrics_by_group, popularity_groups
from sagerec.training import load_checkpoint, train

# %% [markdown]
# ## Resolve the parameters
#
# Relative paths are taken from the project root, so the notebook runs the same from the root or from `nbs/`.

# %%
# >>> models (issue 10): `model` picks any registered model; `graph` switches the graph plug-in; `variant` becomes the method label
if model is None:
    check(graph is None and graph_weights is None and not model_params,
          "graph, graph_weights and model_params apply to a registered model: pass -p model <name> too (variant selects "
          "SAGERec's ablations; 'fixed_edges' and 'text_fixed' have the fixed cosine weights).")
    model_name, graph_kind, overrides = VARIANTS[variant]
else:
    specs = registered_models()
    check(model in specs, f"Unknown model {model!r}: use one of {sorted(specs)}.")
    check(variant == "sagerec", f"variant={variant!r} selects an ablation of SAGERec; with model={model!r} leave variant unset "
                                "and switch the graph with -p graph true/false.")
    spec = specs[model]
    use_graph = spec.graph_by_default if graph is None else bool(graph)
    check(spec.cls.graph_plugin or not use_graph, f"{model!r} is defined by having no graph: use model 'sagerec' for it with the graph.")
    check(use_graph or not spec.graph_by_default, f"{model!r} without its graph is another model: use model 'sasrec'.")
    model_name, graph_kind = model, ("semantic" if use_graph else None)
    check(use_graph or graph_weights is None, f"graph_weights={graph_weights!r} weighs the graph's edges, and {model!r} runs "
                                              "without the graph here: add -p graph true, or drop graph_weights.")
    graph_mode = (graph_weights or "learned") if use_graph else "none"
    overrides = {**model_params, "graph_mode": graph_mode}
    # the method label the reports read: '+graph' for the plug-in, '+fixed_graph' for either graph with fixed weights
    variant = model + ("+fixed_graph" if graph_mode == "fixed" else "+graph" if use_graph and not spec.graph_by_default else "")
# <<< models
root = project_root() or Path.cwd()
def from_root(p):
    p = Path(p).expanduser()
    return p if p.is_absolute() or p.exists() else root / p
run_name = run_name or f"{dataset}-{variant}-s{seed}" + (f"-cold{cold_items}" if cold_items else "")
run_folder = (from_root(output_dir) if output_dir else runs_dir()) / run_name
params = {k: globals()[k] for k in __annotations__}  # the checked parameters, as params.json records them
run_state = check_run_folder(run_folder, params, resume)  # 'new', 'resume' or 'replace'; another run's folder is refused, untouched
dev = pick_device(device)
if num_threads: torch.set_num_threads(num_threads)
if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
print(f"run folder: {rel_path(run_folder)} ({run_state})  device: {dev}")

# %% [markdown]
# ## Data and split

# %%
t_start = time.perf_counter()
ds = load_dataset(dataset, data_dir=resolve_data_dir(from_root(data_dir)) if data_dir else None)
split = ds.split()
# cold start (paper §5.8): the chosen items leave every model input; they stay test targets and keep their text and graph edges
cold, cold_info = None, {}
if cold_items:
    from sagerec.paper import COLD_RULE, cold_split, pick_cold_items
    cold = pick_cold_items(split, cold_items, seed=cold_seed)
    split = cold_split(split, cold)
    cold_info = {"cold": {"items": cold.tolist(), "rule": COLD_RULE, "seed": cold_seed}}
ds, split

# %% [markdown]
# ## Semantic embeddings and the item graph
#
# Only the graph variants need them. The random-graph ablation (D) draws as many undirected edges as the
# semantic graph has, uniformly at random.

# %%
graph, graph_info = None, {}
if graph_kind is not None:
    from sagerec.embed import item_embeddings
    from sagerec.graph import build_graph, graph_stats, random_graph
    emb = item_embeddings(ds, model=text_model, max_length=text_max_length, progress=progress)
    graph = build_graph(emb, k=k, self_loops=self_loops, **({} if tau is None else dict(tau=tau)))
    if graph_kind == "random":  # same number of undirected edges, endpoints uniform; weights = cosine of the endpoints
        graph = random_graph(ds.n_items + 1, graph.num_undirected_edges, seed=seed, emb=emb)
    graph = graph.with_features(emb)  # the text variants also take the vectors as input
    graph_info = {"kind": graph_kind, **{k_: v for k_, v in graph.info.items() if isinstance(v, (int, float, str))}, **graph_stats(graph)}
graph_info

# %% [markdown]
# ## Model

# %%
mcfg = {**dict(dim=dim, n_blocks=n_blocks, n_heads=n_heads, dropout=dropout, max_len=max_len, n_graph_layers=n_graph_layers,
               edge_dropout=edge_dropout, node_dropout=node_dropout, node_dropout_mode=node_dropout_mode,
               output_embedding=output_embedding, l2=l2, ffn_mult=ffn_mult, activation=activation,
               attn_out_dropout=attn_out_dropout, ffn_inner_dropout=ffn_inner_dropout, norm=norm, init=init, scale_input=scale_input,
               text_dim=text_dim),
        **overrides}  # overrides (the variant's, or model_params + the graph switch) win
seed_everything(seed)
model = build_model(model_name, ds.n_items, mcfg, graph, n_users=split.n_users, items=ds.items)
mcfg = model.cfg  # the model's own config class, resolved
n_params = sum(p.numel() for p in model.parameters())
print(type(model).__name__, f"{n_params:,} parameters")

# %% [markdown]
# ## Training
#
# Early stopping on validation NDCG@10 (full ranking, history masked); the LR drops x0.1 after `lr_patience`
# validations without a lower validation loss; `best.pt` and `last.pt` are written to the run folder every epoch.

# %%
tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, betas=(0.9, adam_beta2), loss=loss, n_neg=n_neg, pool=pool,
                   logq=logq, loss_norm=loss_norm, bucket=bucket, lr_signal=lr_signal, max_len=max_len, eval_every=eval_every,
                   patience=patience, lr_patience=lr_patience, seed=seed, device=str(dev), num_threads=num_threads,
                   eval_batch_size=eval_batch_size, progress=progress, pretrain_epochs=pretrain_epochs)
rec = start_run(run_folder, run_state, params, resolved_device=str(dev), torch_threads=torch.get_num_threads(),  # params.json, once
                model_config=mcfg, model_class=type(model).__name__, n_params=n_params, train_config=tcfg, **cold_info)
def log_epoch(row, history):  # partial runs keep their curve in metrics.json (and in last.pt)
    rec.log_metrics(history=history, epochs_run=len(history))
    if not progress: print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
result = train(model, split, tcfg, run_dir=run_folder, resume=resume, on_epoch=log_epoch)
hist = pd.DataFrame(result.history)
rec.log_metrics(history=result.history, best_epoch=result.best_epoch, best_valid=result.best_metrics,
                stop_reason=result.stop_reason, epochs_run=len(result.history),
                seconds_per_epoch=result.seconds_per_epoch, device=result.device,
                **({"pretrain_history": result.pretrain_history} if result.pretrain_history else {}))
hist.tail(5).round(4)

# %%
assert result.best_epoch >= 1 and len(hist) >= 1 and np.isfinite(hist["train_loss"]).all()

# %% [markdown]
# ## Learning curve

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
a1.plot(hist.epoch, hist.train_loss, label="train loss")
if "valid_loss" in hist: a1.plot(hist.epoch, hist.valid_loss, label="validation loss")
a1.set_xlabel("epoch"); a1.set_title("BCE loss (dotted: learning rate)")
lr_ax = a1.twinx(); lr_ax.semilogy(hist.epoch, hist.lr, "k:", label="learning rate"); lr_ax.set_ylabel("learning rate")
a1.legend(loc="upper right")
if "valid/ndcg@10" in hist:
    v = hist.dropna(subset=["valid/ndcg@10"])
    a2.plot(v.epoch, v["valid/ndcg@10"], label="NDCG@10"); a2.plot(v.epoch, v["valid/recall@10"], label="Recall@10")
    a2.axvline(result.best_epoch, ls="--", c="grey", label=f"best epoch {result.best_epoch}")
a2.set_xlabel("epoch"); a2.legend(); a2.set_title("validation (full ranking, masked)")
fig.suptitle(f"{dataset} / {variant} / seed {seed}"); fig.tight_layout()
fig.savefig(run_folder / "learning_curve.png", dpi=120, bbox_inches="tight")  # the run's curve stays in its folder

# %% [markdown]
# ## Test metrics of the best checkpoint
#
# The weights of the best validation epoch are evaluated on the test targets under the three protocols.
# Full ranking with the history masked is the headline number; every table must say which one it shows.

# %%
load_checkpoint(run_folder / "best.pt", model, map_location=dev)
protocols = {"full-masked": dict(protocol="full", mask_history=True),
             "full-unmasked": dict(protocol="full", mask_history=False),
             "sampled100": dict(protocol="sampled100", seed=sampled_seed)}
test, eval_seconds = {}, {}
for name, kw in protocols.items():
    t0 = time.perf_counter()
    test[name] = {k: v for k, v in evaluate(model, split, "test", max_len=max_len, batch_size=eval_batch_size, **kw).items()
                  if k not in ("protocol", "stage")}
    eval_seconds[name] = time.perf_counter() - t0
valid_best = evaluate(model, split, "valid", max_len=max_len, batch_size=eval_batch_size)
# the headline protocol by target popularity (head / torso / tail thirds of the test users), and the per-user ranks
ranks = evaluate(model, split, "test", max_len=max_len, batch_size=eval_batch_size, return_ranks=True)["ranks"]
groups, group_rule = popularity_groups(split.train, split.test_target, split.n_items)
by_popularity = {"rule": group_rule, **metrics_by_group(ranks, groups)}
np.savez_compressed(run_folder / "test_ranks.npz", full_masked=ranks.astype(np.int32))
# cold start: the users whose test target is cold, as trained, and with the cold rows rebuilt from their text neighbours
# after training (the "new item enters after training" path: no retraining; models whose table is `item_emb` only)
test_cold = {}
if cold is not None:
    from sagerec.evaluate import metrics_from_ranks
    from sagerec.paper import cold_metrics, cold_users, text_rows
    cold_mask = cold_users(split, cold)
    test_cold = {"as_trained": {**metrics_from_ranks(ranks[cold_mask]), "n_users": int(cold_mask.sum())}}
    if hasattr(model, "item_emb") and getattr(model, "text_proj", None) is None:
        if graph_kind is None:  # the graph variants have the vectors already (`emb`, from the graph cell)
            from sagerec.embed import item_embeddings
            emb = item_embeddings(ds, model=text_model, max_length=text_max_length, progress=False)
        text_rows(model, cold, emb, k=k)
        test_cold["text_rows"] = cold_metrics(model, split, cold, max_len=max_len, batch_size=eval_batch_size)
        load_checkpoint(run_folder / "best.pt", model, map_location=dev)  # the trained weights again
    test_cold = {"test_cold": test_cold}
table = pd.DataFrame(test).T[["recall@10", "recall@20", "ndcg@10", "ndcg@20", "n_users"]]
table

# %%
for m in test.values():
    assert 0 <= m["ndcg@10"] <= m["recall@10"] <= m["recall@20"] <= 1 and m["ndcg@10"] <= m["ndcg@20"]
assert abs(valid_best["ndcg@10"] - result.best_metrics["valid/ndcg@10"]) < 1e-6  # best.pt is the best epoch's weights
assert sum(g["n_users"] for k, g in by_popularity.items() if k != "rule") == len(ranks) == test["full-masked"]["n_users"]
assert abs(sum(m["recall@10"] * m["n_users"] for k, m in by_popularity.items() if k != "rule") / len(ranks) - test["full-masked"]["recall@10"]) < 1e-9
assert test["sampled100"]["recall@10"] >= test["full-masked"]["recall@10"]

# %% [markdown]
# ## Record

# %%
peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
# what the best checkpoint's graph layer does with its edges (sagerec.paper.edge_weight_summary): kept with the metrics,
# so the comparison of learned and fixed edge weights (nbs/paper.ipynb) needs no checkpoint
edge_weights, has_graph_layer = {}, getattr(model, "graph", None) is not None and hasattr(model, "item_emb")
if has_graph_layer:
    from sagerec.paper import edge_weight_summary
    edge_weights = {"edge_weights": edge_weight_summary(model)}
if dev.type == "cuda": peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
# `total_seconds` and the peak memory are this process's: a resumed run (`run_state` "resume") spent earlier epochs in
# earlier processes, whose per-epoch seconds are in `history` (what the efficiency table reads)
rec.log_metrics(test=test, test_by_popularity=by_popularity, eval_seconds=eval_seconds, valid_at_best=valid_best, graph=graph_info, n_params=n_params, **test_cold, **edge_weights,
                total_seconds=time.perf_counter() - t_start, run_state=run_state, **peak, device=str(dev),
                device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                torch_threads=torch.get_num_threads())
summary = {"run": run_name, "best_epoch": result.best_epoch, "epochs_run": len(hist), "stop": result.stop_reason,
           "s/epoch": round(result.seconds_per_epoch, 2), **{f"test {k}": round(v, 4) for k, v in test["full-masked"].items() if "@" in k},
           **peak}
summary

# %%
saved = json.loads((run_folder / "metrics.json").read_text())
assert set(saved["test"]) == set(protocols) and (run_folder / "best.pt").exists() and (run_folder / "learning_curve.png").exists()
assert saved["run_state"] == run_state and ("edge_weights" in saved) == has_graph_layer  # every run with a graph layer records its edge weights
