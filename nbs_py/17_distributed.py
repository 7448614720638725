# %% [markdown]
# # Distributed training
# > PyTorch DDP under `torchrun`: one process per device, each batch's users split across ranks, gradients all-reduced, negatives and dropout seeded per rank, rank 0 writes; `gloo` on CPUs, `nccl` on GPUs, picked automatically.

# %%
#| default_exp distributed

# %%
#| export
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sagerec.core import SageRecError, check, pick_device

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

# %%
#| hide
torch.set_num_threads(1)  # tiny fixtures: one thread is faster and immune to a busy shared CPU


# %% [markdown]
# ## How a run is spread over processes
#
# `torchrun --nproc_per_node N ...` starts N copies of the same program and tells each its `RANK`, `LOCAL_RANK`
# and `WORLD_SIZE` (plus where rank 0 listens, `MASTER_ADDR`/`MASTER_PORT`). Every process runs **the one
# trainer** (`sagerec.training.train`) with the `DistEnv` below; nothing else changes:
#
# | what | how |
# |---|---|
# | batches | every rank draws the same epoch order (the trainer's generator, same seed on every rank) and keeps the users `idx[rank::world]` of each batch: a distributed sampler over the single-process batch order; batches are length-sorted, so the interleaved halves are balanced |
# | gradients | the model is wrapped in `DistributedDataParallel`; because the trainer calls `model.training_loss(batch)`, not `forward()`, the wrapper's `forward` routes to that method, so DDP's hooks all-reduce every gradient the loss reaches (graph layer and encoder alike) |
# | the loss | each rank's loss is a mean over its target positions; DDP averages gradients over ranks, so each rank's loss is first weighted by `world x (its target positions) / (the batch's)`, which makes the averaged gradient exactly the whole batch's (for a mean over target positions plus a term that does not depend on the batch, such as L2) |
# | randomness | negatives from a per-rank generator (`[seed, rank]`), dropout from a per-rank torch seed; the batch order from the shared one |
# | validation and test | users sharded by rank (`evaluate(..., shard=env)`), ranks summed: exactly the single-process metrics |
# | files | only rank 0 writes checkpoints, `metrics.json`, figures; every rank's RNG state goes into the checkpoint, so a resumed run continues exactly |
# | backend | `nccl` when the processes use CUDA devices (one per `LOCAL_RANK`), `gloo` on CPUs |

# %% [markdown]
# ## The process environment

# %%
#| export
def pick_backend(device: torch.device | str) -> str:
    "The collective backend for a device: 'nccl' for CUDA, 'gloo' otherwise."
    return "nccl" if torch.device(device).type == "cuda" else "gloo"

@dataclass
class DistEnv:
    "Where this process sits in a distributed run (the defaults: a single process, no process group)."
    rank: int = 0                 # global rank (0 = the one that writes)
    world_size: int = 1           # number of processes
    local_rank: int = 0           # rank on this machine (picks the GPU)
    backend: str | None = None    # 'gloo', 'nccl', or None when there is no process group
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool: return self.rank == 0
    @property
    def active(self) -> bool: return self.backend is not None  # a process group exists (torchrun, even with one process)
    @property
    def comm_device(self) -> torch.device: return self.device if self.backend == "nccl" else torch.device("cpu")

    def all_sum(self, a: np.ndarray) -> np.ndarray:
        "Element-wise sum of `a` over all ranks (the array itself in a single process)."
        if not self.active: return a
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.comm_device)
        tdist.all_reduce(t)
        return t.cpu().numpy()

    def barrier(self) -> None:
        if self.active: tdist.barrier()

    def broadcast_object(self, obj=None):
        "Rank 0's `obj`, on every rank (pickled)."
        if not self.active: return obj
        box = [obj if self.is_main else None]
        tdist.broadcast_object_list(box, src=0, device=self.comm_device)
        return box[0]

    def all_gather_object(self, obj) -> list:
        "Every rank's `obj`, in rank order, on every rank."
        if not self.active: return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

def init_distributed(device: str = "auto",   # 'auto': the GPU of LOCAL_RANK when CUDA is available, else CPU
                     backend: str = "auto",  # 'auto' (pick_backend), 'gloo' or 'nccl'
                     timeout_min: float = 30,
                    ) -> DistEnv:
    "Join the process group described by torchrun's environment; a plain `python` run gets a single-process `DistEnv`."
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ  # torchrun (even --nproc_per_node 1) sets both
    if not launched and not (tdist.is_available() and tdist.is_initialized()):
        return DistEnv(device=pick_device(device))
    check(tdist.is_available(), "This torch build has no torch.distributed; install a standard PyTorch build to run on several processes.")
    if tdist.is_initialized():  # a group made by the caller
        rank, world = tdist.get_rank(), tdist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        be = tdist.get_backend()
        dev = torch.device("cuda", local) if be == "nccl" else pick_device(device)
        return DistEnv(rank, world, local, be, dev)
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    check(not missing, f"WORLD_SIZE={world} but {missing} are not set: launch with torchrun "
                       "(torchrun --nproc_per_node N -m sagerec.distributed ...), which sets them.")
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    dev = pick_device(device)
    if dev.type == "cuda":
        check(local < torch.cuda.device_count(), f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPUs: "
                                                 "start at most one process per GPU (--nproc_per_node).")
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    be = pick_backend(dev) if backend == "auto" else backend
    check(be in ("gloo", "nccl"), f"backend={backend!r}: use 'auto', 'gloo' or 'nccl'.")
    check(be != "nccl" or (dev.type == "cuda" and tdist.is_nccl_available()), "backend 'nccl' needs CUDA devices and an NCCL build of torch; use 'gloo' on CPUs.")
    tdist.init_process_group(be, init_method="env://", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=timeout_min))
    return DistEnv(rank, world, local, be, dev)

def close_distributed(env: DistEnv) -> None:
    "Leave the process group (no-op in a single process)."
    if env.active and tdist.is_initialized(): tdist.destroy_process_group()


# %% [markdown]
# A plain process (no torchrun variables) gets the single-process environment: every collective is the identity.

# %%
env1 = init_distributed("cpu")
env1, env1.all_sum(np.array([1, 2])), pick_backend("cpu"), pick_backend("cuda:0")

# %%
test_eq((env1.rank, env1.world_size, env1.active, env1.is_main), (0, 1, False, True))
test_eq(env1.broadcast_object({"a": 1}), {"a": 1}); test_eq(env1.all_gather_object(3), [3])
test_eq((pick_backend("cpu"), pick_backend("cuda:1")), ("gloo", "nccl"))


# %% [markdown]
# ## Per-rank randomness and the share of a batch

# %%
#| export
def rank_seed(seed: int, rank: int) -> int:
    "The torch seed of `rank` (dropout and every other torch draw): distinct per rank, fixed by `seed`."
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint32)[0])

def rank_generator(seed: int, rank: int) -> np.random.Generator:
    "The NumPy generator of `rank` for training negatives (independent of the shared batch-order generator `default_rng(seed)`)."
    return np.random.default_rng([seed, rank])

def shard(idx: np.ndarray, env: DistEnv) -> np.ndarray:
    "This rank's users of one batch: every `world_size`-th, starting at `rank` (the batch itself in one process)."
    return idx[env.rank::env.world_size]


# %%
batch = np.array([7, 3, 9, 1, 4])
parts = [shard(batch, DistEnv(rank=r, world_size=2)) for r in range(2)]
parts, [rank_seed(0, r) for r in range(2)]

# %%
test_eq(np.sort(np.concatenate(parts)), np.sort(batch)); test_eq([len(p) for p in parts], [3, 2])
assert rank_seed(0, 0) != rank_seed(0, 1) and rank_seed(0, 1) == rank_seed(0, 1) != rank_seed(1, 1)
assert rank_generator(0, 1).integers(1 << 30) != np.random.default_rng(0).integers(1 << 30)


# %% [markdown]
# ## DDP around a loss method
#
# `DistributedDataParallel` synchronises gradients for the outputs of its own `forward()`. The trainer calls the
# model's loss method (`training_loss(batch)`), so `ddp_wrap` puts the model inside a small module whose `forward`
# calls that method.
# `find_unused_parameters=True` lets a step leave some parameters out (e.g. the edge MLP when a batch touches no
# edge); `broadcast_buffers=False` because the graph buffers never change. `ddp_loss` applies the weighting
# described above with one small all-reduce, and returns the whole batch's loss for logging (the same on every rank).

# %%
#| export
class _LossForward(nn.Module):
    "Routes `forward(...)` to `model.<method>(...)`, so DDP sees the loss as its output."
    def __init__(self, model: nn.Module, method: str = "loss"):
        super().__init__()
        check(callable(getattr(model, method, None)), f"{type(model).__name__} has no method {method!r} to train with.")
        self.model, self.method = model, method
    def forward(self, *args, **kw): return getattr(self.model, self.method)(*args, **kw)

def ddp_wrap(model: nn.Module, env: DistEnv, method: str = "training_loss") -> nn.Module:
    "The model, wrapped for DDP (calling it runs `model.<method>`); in a single process, the same routing without DDP."
    m = _LossForward(model, method)
    if not env.active: return m
    import inspect  # torch >= 2.13 renames broadcast_buffers; the graph's buffers never change, so no per-step sync either way
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else {"broadcast_buffers": False})
    return DistributedDataParallel(m, device_ids=[env.device] if env.device.type == "cuda" else None,
                                   find_unused_parameters=True, **no_sync)

def ddp_loss(loss: torch.Tensor,   # () this rank's loss: a mean over its `n_local` target positions (+ batch-independent terms)
             n_local: int,         # this rank's target positions (0 for a rank with no users in this batch)
             env: DistEnv,
            ) -> tuple[torch.Tensor, float]:
    "(the loss to backpropagate, the whole batch's loss): weighted so that DDP's gradient average is the whole batch's gradient."
    if not env.active: return loss, float(loss.detach())
    s = torch.tensor([float(n_local), float(n_local) * float(loss.detach())], dtype=torch.float64, device=env.comm_device)
    tdist.all_reduce(s)
    total = float(s[0])
    check(total > 0, "No rank had a target position in this batch: every training example needs at least one target.")
    return loss * (env.world_size * n_local / total), float(s[1]) / total


# %% [markdown]
# Why the weighting: on one process, the gradient of the whole batch's loss equals the weighted mean of the two
# half-batches' gradients, and not their plain mean (which is what DDP would compute from unweighted losses),
# because the halves hold different numbers of target positions. A tiny SAGERec with its dropouts off:

# %%
from sagerec.graph import random_graph
from sagerec.model import ModelConfig, build_model
from sagerec.core import seed_everything


# %%
def grads(m, seqs, pos, neg, scale=1.0):
    m.zero_grad(); (m.loss(seqs, pos, neg) * scale).backward()
    return torch.cat([p.grad.reshape(-1) for p in m.parameters() if p.grad is not None])

seed_everything(0)
tiny = build_model("sagerec", 30, ModelConfig(dim=8, max_len=6, dropout=0, edge_dropout=0, node_dropout=0), random_graph(31, 40, seed=0))
seqs = torch.tensor([[0, 0, 0, 1, 2, 3], [4, 5, 6, 7, 8, 9], [0, 0, 10, 11, 12, 13], [0, 0, 0, 0, 14, 15]])
pos = torch.cat([seqs[:, 1:], torch.tensor([[4], [10], [14], [16]])], 1) * (seqs != 0)
neg = torch.randint(1, 31, pos.shape) * (pos != 0)
halves = [slice(0, 4, 2), slice(1, 4, 2)]
n = [int((pos[h] != 0).sum()) for h in halves]
whole = grads(tiny, seqs, pos, neg)
plain = sum(grads(tiny, seqs[h], pos[h], neg[h]) for h in halves) / 2
weighted = sum(grads(tiny, seqs[h], pos[h], neg[h], scale=2 * k / sum(n)) for h, k in zip(halves, n)) / 2
n, (plain - whole).abs().max().item(), (weighted - whole).abs().max().item()

# %%
assert n[0] != n[1] and (plain - whole).abs().max() > 1e-4
test_close(weighted, whole, eps=1e-6)

# %% [markdown]
# The real thing, two processes with `gloo`, is `tests/test_distributed.py`: (a) one DDP step on two half-batches
# gives the parameters of one single-process step on the whole batch, (b) sharded evaluation gives exactly the
# single-process metrics, (c) a two-process run killed in its second epoch and started again ends with the weights
# and history of an uninterrupted one.

# %% [markdown]
# ## The launch entry point
#
# `python -m sagerec.distributed` (under `torchrun`, or alone for one process) runs the train notebook's pipeline
# for the SAGERec variants: data, item embeddings, graph (built on rank 0 and broadcast), model, `train` with the
# `DistEnv`, test metrics under the three protocols (sharded), and rank 0 records `params.json`/`metrics.json` and
# the checkpoints in `runs/<run_name>/` (the same command resumes). Parameters use the train notebook's names, given
# with the same flags as for the train notebook (`-p name value`, `-f config.yaml`); a dataset named `synthetic-<N>` is drawn by
# `sagerec.synthetic` (with its embeddings), with no download or text model.
#
# ```bash
# # one machine, 4 GPUs (nccl) -- or 4 CPU processes (gloo) on a machine without GPUs
# torchrun --standalone --nproc_per_node 4 -m sagerec.distributed -p dataset beauty -f configs/beauty.yaml
# # two machines, 8 GPUs each: the same command on both, with node_rank 0 and 1, rank 0's address and a free port
# torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr 10.0.0.1 --master_port 29500 -m sagerec.distributed -p dataset beauty -f configs/beauty.yaml
# ```
#
# With several machines the run folder must be on a shared file system (rank 0 writes it; every rank gets the
# checkpoint it resumes from by broadcast, but the dataset, embedding cache and configs must exist on each machine).

# %%
#| export
VARIANTS = {  # the train notebook's variants that the entry point runs: model name, graph, ModelConfig overrides
    "sagerec": ("sagerec", True, dict(graph_mode="learned")),
    "sasrec": ("sasrec", False, dict(graph_mode="none")),
    "fixed_edges": ("sagerec", True, dict(graph_mode="fixed")),
    "no_position": ("sagerec", True, dict(graph_mode="learned", use_position=False)),
}
RUN_PARAMS = dict(dataset="beauty-mini", variant="sagerec", seed=0, device="auto", data_dir=None, run_name=None,
                  output_dir=None, resume=True, text_model=None, text_max_length=128, k=3, tau=None, self_loops=False,
                  backend="auto", sampled_seed=0)

def _params(argv) -> dict:
    "Parameters from `-f yaml` files and `-p name value` pairs (values parsed as YAML, like the train notebook's)."
    import yaml
    from sagerec.model import ModelConfig
    from sagerec.training import TrainConfig
    ap = argparse.ArgumentParser(prog="python -m sagerec.distributed", description="Train one model (DDP under torchrun).")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    ap.add_argument("-f", "--parameters-file", action="append", default=[], metavar="YAML")
    a = ap.parse_args(argv)
    out = dict(RUN_PARAMS)
    for f in a.parameters_file:
        check(Path(f).exists(), f"No parameters file {f!r}.")
        out.update(yaml.safe_load(Path(f).read_text()) or {})
    for k, v in a.parameter: out[k] = yaml.safe_load(v)
    from sagerec.params import RUN_CHECKS, Param, config_params, one_of, validate  # the train notebook's check, in one line
    schema = {**config_params(TrainConfig), **config_params(ModelConfig)}
    schema.update({k: Param(k, schema[k].type if k in schema else (type(v) if v is not None else typing.Any), v,
                            check=RUN_CHECKS.get(k)) for k, v in RUN_PARAMS.items()})
    schema["variant"].check = one_of(*VARIANTS)  # the entry point runs these
    return {**out, **validate(out, schema, configs=(ModelConfig, TrainConfig))}

def _load(p: dict, env: DistEnv):
    "(dataset, item embeddings or None): a synthetic catalogue or a named dataset."
    from sagerec.core import data_dir as resolve
    from sagerec.data import load_dataset
    name, needs_graph = p["dataset"], VARIANTS[p["variant"]][1]
    if str(name).startswith("synthetic-"):
        from sagerec.synthetic import SyntheticSpec, synthetic_dataset, synthetic_embeddings
        ds = synthetic_dataset(int(name.split("-", 1)[1]), seed=p["seed"])
        return ds, (synthetic_embeddings(SyntheticSpec(**ds.info["spec"])) if needs_graph and env.is_main else None)
    ds = load_dataset(name, data_dir=resolve(p["data_dir"]) if p["data_dir"] else None)
    if not needs_graph: return ds, None
    from sagerec.embed import item_embeddings
    emb = item_embeddings(ds, model=p["text_model"], max_length=p["text_max_length"], progress=False) if env.is_main else None
    return ds, emb

def run(argv=None) -> dict | None:
    "The entry point: train and test one model; rank 0 returns the summary (other ranks None)."
    from sagerec.core import RunRecorder, runs_dir, seed_everything
    from sagerec.evaluate import evaluate
    from sagerec.model import ModelConfig, build_model
    from sagerec.training import TrainConfig, load_checkpoint, train
    p = _params(sys.argv[1:] if argv is None else argv)
    env = init_distributed(p["device"], p["backend"])
    try:
        if p.get("num_threads"): torch.set_num_threads(int(p["num_threads"]))
        run_name = p["run_name"] or f"{p['dataset']}-{p['variant']}-s{p['seed']}"
        folder = (Path(p["output_dir"]) if p["output_dir"] else runs_dir()) / run_name
        rec = RunRecorder(run_name, folder=folder) if env.is_main else None
        t0 = time.perf_counter()
        ds, emb = _load(p, env)
        split = ds.split()
        model_name, needs_graph, over = VARIANTS[p["variant"]]
        graph = None
        if needs_graph:
            if env.is_main:
                from sagerec.graph import build_graph
                graph = build_graph(emb, k=p["k"], self_loops=p["self_loops"], **({} if p["tau"] is None else dict(tau=p["tau"])))
            graph = env.broadcast_object(graph)
        mkw = {f.name: p[f.name] for f in fields(ModelConfig) if f.name in p}
        tkw = {f.name: p[f.name] for f in fields(TrainConfig) if f.name in p}
        mcfg = ModelConfig(**{**mkw, **over})
        tcfg = TrainConfig(**{**tkw, "seed": p["seed"], "device": str(env.device), "progress": env.is_main and tkw.get("progress", True)})
        seed_everything(p["seed"])
        model = build_model(model_name, ds.n_items, mcfg, graph)
        if rec: rec.log_params(**p, world_size=env.world_size, resolved_backend=env.backend, resolved_device=str(env.device),
                               torch_threads=torch.get_num_threads(), model_config=mcfg, train_config=tcfg)
        def log_epoch(row, history):
            if rec: rec.log_metrics(history=history, epochs_run=len(history))
        res = train(model, split, tcfg, run_dir=folder, resume=p["resume"], on_epoch=log_epoch, dist=env)
        best = env.broadcast_object(torch.load(folder / "best.pt", map_location="cpu", weights_only=False)["model"] if env.is_main else None)
        model.load_state_dict(best)
        protocols = {"full-masked": dict(protocol="full", mask_history=True), "full-unmasked": dict(protocol="full", mask_history=False),
                     "sampled100": dict(protocol="sampled100", seed=p["sampled_seed"])}
        test, secs = {}, {}
        for name, kw in protocols.items():
            t1 = time.perf_counter()
            m = evaluate(model, split, "test", max_len=tcfg.max_len, batch_size=tcfg.eval_batch_size, shard=env, **kw)
            test[name] = {k: v for k, v in m.items() if k not in ("protocol", "stage")}; secs[name] = time.perf_counter() - t1
        summary = dict(best_epoch=res.best_epoch, best_valid=res.best_metrics, stop_reason=res.stop_reason, epochs_run=len(res.history),
                       seconds_per_epoch=res.seconds_per_epoch, test=test, eval_seconds=secs, world_size=env.world_size,
                       backend=env.backend, device=str(env.device), total_seconds=time.perf_counter() - t0)
        if rec:
            rec.log_metrics(history=res.history, **summary)
            print(json.dumps({k: summary[k] for k in ("best_epoch", "epochs_run", "seconds_per_epoch", "world_size", "backend")}
                             | {"test full-masked": test["full-masked"]}, default=float), flush=True)
        return summary if env.is_main else None
    finally:
        close_distributed(env)

if __name__ == "__main__" and "__file__" in globals(): run()  # python -m sagerec.distributed (not when a notebook runs this cell)

# %% [markdown]
# A two-process run on CPUs (`gloo`) of SASRec on `beauty-mini`, three epochs, against the same run in one process:
# the two runs see the same users in each step but draw their own negatives and dropout per rank, so the numbers
# differ a little; what must hold is that both train, and that the two-process run recorded what rank 0 saw.

# %%
import subprocess, tempfile

# %%
#| slow
out_dir = Path(tempfile.mkdtemp())
common = ["-p", "variant", "sasrec", "-p", "epochs", "3", "-p", "dim", "16", "-p", "max_len", "20", "-p", "progress", "false",
          "-p", "num_threads", "1", "-p", "output_dir", str(out_dir)]
launch = {"1 process": [sys.executable, "-m", "sagerec.distributed", "-p", "run_name", "one"] + common,
          "2 processes": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "sagerec.distributed", "-p", "run_name", "two"] + common}
runs = {}
for k, cmd in launch.items():
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    runs[k] = json.loads((out_dir / ("one" if k == "1 process" else "two") / "metrics.json").read_text())
{k: dict(world_size=m["world_size"], backend=m["backend"], s_per_epoch=round(m["seconds_per_epoch"], 2),
         valid_ndcg10=round(m["best_valid"]["valid/ndcg@10"], 4), test_ndcg10=round(m["test"]["full-masked"]["ndcg@10"], 4))
 for k, m in runs.items()}

# %%
#| slow
test_eq((runs["2 processes"]["world_size"], runs["2 processes"]["backend"]), (2, "gloo"))
for m in runs.values(): assert m["history"][-1]["train_loss"] < m["history"][0]["train_loss"] and m["test"]["full-masked"]["n_users"] == 1000

# %%
#| hide
import nbdev; nbdev.nbdev_export()
