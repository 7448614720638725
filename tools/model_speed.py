#!/usr/bin/env python
"""Seconds per training epoch of registered models on one dataset, with their configs/models/<model>.yaml settings.

    python tools/model_speed.py beauty bpr gru4rec caser sasrec bert4rec cl4srec sagerec [--epochs 4] [--graph]
    python tools/model_speed.py beauty bert4rec --steps 20   # estimate: CPU seconds of 20 random batches x batches per epoch

Runs the real trainer for `--epochs` epochs on one thread (validation only after the last) and prints, per model,
the wall and the CPU seconds of each epoch after the first (the first includes building the training data). CPU
seconds are what the process itself used, so they stay meaningful on a machine shared with other jobs; wall
seconds do not. The dataset file configs/<dataset>.yaml is read first and the model's file second, as with papermill.
With `--steps N`, no epoch is run: N batches drawn at random from one epoch's batches (the trainer's own, with its
negatives) each take one training step, and their mean CPU seconds times the number of batches estimate an epoch.
"""
from __future__ import annotations
import argparse, dataclasses, json, os, time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
import yaml

from sagerec.core import seed_everything
from sagerec.data import load_dataset
from sagerec.model import registered_models, build_model
from sagerec.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def settings(dataset: str, name: str) -> dict:
    f = ROOT / "configs" / f"{dataset}.yaml"
    conf = (yaml.safe_load(f.read_text()) or {}) if f.exists() else {}  # beauty-mini has none: the model's file alone
    conf.update(yaml.safe_load((ROOT / "configs" / "models" / f"{name}.yaml").read_text()) or {})
    return conf


def build(ds, split, name: str, graph: bool, epochs: int):
    "The model and TrainConfig that train.ipynb would use with configs/<dataset>.yaml and configs/models/<name>.yaml."
    spec = registered_models()[name]
    conf = settings(ds.name, name)
    fields = {f.name for f in dataclasses.fields(spec.config_class)}
    use_graph = graph or spec.graph_by_default
    mcfg = {**{k: v for k, v in conf.items() if k in fields}, **conf.get("model_params", {}), "graph_mode": "learned" if use_graph else "none"}
    g = None
    if use_graph:
        from sagerec.embed import item_embeddings
        from sagerec.graph import build_graph
        g = build_graph(item_embeddings(ds, progress=False), k=conf.get("k", 3), **({"tau": conf["tau"]} if conf.get("tau") is not None else {}))
    tfields = {f.name for f in dataclasses.fields(TrainConfig)}
    tcfg = TrainConfig(**{k: v for k, v in conf.items() if k in tfields and k not in ("epochs", "eval_every", "patience", "progress", "pretrain_epochs")},
                       epochs=epochs, eval_every=epochs, patience=0, num_threads=1, progress=False)
    seed_everything(0)
    return build_model(name, ds.n_items, mcfg, g, n_users=split.n_users, items=ds.items), tcfg, use_graph and not spec.graph_by_default


def estimate(ds, split, name: str, steps: int, graph: bool) -> dict:
    "CPU seconds per epoch estimated from `steps` random batches of one epoch."
    import numpy as np
    from sagerec.model import TrainBatch
    from sagerec.training import TrainingData
    model, tcfg, plus = build(ds, split, name, graph, 1)
    data = TrainingData(split.train, split.n_items, tcfg.max_len)
    rng = np.random.default_rng(0)
    order = data.batch_order(tcfg.batch_size, rng, tcfg.bucket)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    model.train(); cpu = []
    for i in rng.choice(len(order), size=min(steps, len(order)), replace=False):
        b = data.make_batch(order[i], tcfg.n_neg, rng, tcfg.loss, tcfg.pool)
        tb = TrainBatch(*(torch.from_numpy(a) if a is not None else None for a in (b.users, b.seqs, b.pos, b.neg)), kind=tcfg.loss)
        c = time.process_time(); loss = model.training_loss(tb); opt.zero_grad(); loss.backward(); opt.step(); cpu.append(time.process_time() - c)
    return {"model": name + ("+graph" if plus else ""), "loss": tcfg.loss, "batch_size": tcfg.batch_size, "batches_per_epoch": len(order),
            "steps_sampled": len(cpu), "cpu_s_per_epoch_estimate": round(float(np.mean(cpu)) * len(order), 2),
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def measure(ds, split, name: str, epochs: int, graph: bool) -> dict:
    "Wall and CPU seconds of the epochs after the first, with no validation in them."
    model, tcfg, plus = build(ds, split, name, graph, epochs)
    marks = []
    def on_epoch(row, history): marks.append((time.perf_counter(), time.process_time(), "valid_loss" in row))
    t0 = (time.perf_counter(), time.process_time())
    res = train(model, split, tcfg, on_epoch=on_epoch)
    prev = [t0] + [m[:2] for m in marks]
    per = [(m[0] - p[0], m[1] - p[1]) for p, m in zip(prev, marks)]
    clean = [w_c for w_c, m in zip(per, marks) if not m[2]][1:]  # drop epoch 1 and the epoch that validated
    return {"model": name + ("+graph" if plus else ""), "loss": tcfg.loss, "batch_size": tcfg.batch_size,
            "wall_s_per_epoch": round(sum(w for w, _ in clean) / len(clean), 2), "cpu_s_per_epoch": round(sum(c for _, c in clean) / len(clean), 2),
            "epochs_timed": len(clean), "train_loss": [round(h["train_loss"], 4) for h in res.history],
            "load_avg_1min": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset"); ap.add_argument("models", nargs="+")
    ap.add_argument("--epochs", type=int, default=4); ap.add_argument("--graph", action="store_true", help="switch the graph plug-in on")
    ap.add_argument("--steps", type=int, default=0, help="estimate from this many random batches instead of running epochs")
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset(a.dataset); split = ds.split()
    for name in a.models:
        print(json.dumps(estimate(ds, split, name, a.steps, a.graph) if a.steps else measure(ds, split, name, a.epochs, a.graph)), flush=True)
