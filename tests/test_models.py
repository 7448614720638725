"""Every registered model (`sagerec.model.registered_models()`), trained and evaluated through the common path on
the embedded `beauty-mini` slice: one epoch of the real trainer, a falling loss, scores of the right shape,
save -> load -> identical scores, evaluation, and the graph plug-in. A model registered later is covered with no edit."""
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sagerec.core import seed_everything
from sagerec.data import load_dataset
from sagerec.evaluate import evaluate, left_pad
from sagerec.graph import random_graph
from sagerec.model import SeqRecModel, TrainBatch, build_model, coerce_config, registered_models
from sagerec.training import TrainConfig, TrainingData, load_checkpoint, train

MODELS = sorted(registered_models())
TINY = dict(dim=16, max_len=20, n_blocks=1, n_heads=1)  # shared ModelConfig fields: a tiny model of every kind
MINI = load_dataset("beauty-mini")
SPLIT = MINI.split()
GRAPH = random_graph(MINI.n_items + 1, 2 * MINI.n_items, seed=0)  # any graph will do for the plug-in


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(name, graph=False, **overrides):
    "A tiny `name` for beauty-mini, seeded; `graph=True` switches the graph plug-in on."
    spec = registered_models()[name]
    cfg = {**TINY, **overrides, **({"graph_mode": "learned"} if graph else {})}
    seed_everything(0)
    return build_model(name, MINI.n_items, cfg, GRAPH if graph or spec.graph_by_default else None, n_users=SPLIT.n_users, items=MINI.items)


def test_registry_lists_the_paper_models():
    assert {"sagerec", "sasrec", "bpr"} <= set(MODELS)
    for name, spec in registered_models().items():
        assert spec.name == name and issubclass(spec.cls, SeqRecModel) and spec.paper, name


@pytest.mark.parametrize("name", MODELS)
def test_one_epoch_through_the_common_path(name, tmp_path):
    model = make(name)
    res = train(model, SPLIT, TrainConfig(epochs=1, max_len=TINY["max_len"], progress=False), run_dir=tmp_path / name)
    assert np.isfinite(res.history[0]["train_loss"]) and res.history[0]["steps"] > 0
    # scores: right shapes, padding -inf, candidates agree with the full row
    users = np.arange(0, SPLIT.n_users, 97)
    seqs = torch.from_numpy(left_pad([SPLIT.test_input[u] for u in users], TINY["max_len"]))
    u = torch.from_numpy(users)
    model.eval()
    with torch.no_grad():
        s = model.score_all(seqs, users=u)
        cand = torch.from_numpy(np.stack([np.arange(1, 6) + 5 * i for i in range(len(users))]))
        c = model.score_candidates(seqs, cand, users=u)
    assert s.shape == (len(users), MINI.n_items + 1) and torch.isfinite(s[:, 1:]).all()
    torch.testing.assert_close(c, s.gather(1, cand))
    # save -> load into a freshly built model -> identical scores
    fresh = make(name)
    load_checkpoint(tmp_path / name / "best.pt", fresh)
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh.score_all(seqs, users=u), s, rtol=0, atol=0)
    # evaluation through the one path
    m = evaluate(model, SPLIT, "test")
    assert m["n_users"] == SPLIT.n_users and 0 <= m["ndcg@10"] <= m["recall@10"] <= m["recall@20"] <= 1


def _fixed_batch(n=64, n_neg=2, seed=0):
    data = TrainingData(SPLIT.train, SPLIT.n_items, TINY["max_len"])
    b = data.make_batch(np.arange(n), n_neg, np.random.default_rng(seed))
    return TrainBatch(*(torch.from_numpy(a) for a in (b.users, b.seqs, b.pos, b.neg)), kind="bce")


@pytest.mark.parametrize("name", MODELS)
def test_loss_falls(name):
    "Adam steps on one batch (no dropout, the same random draws each step) lower the training loss."
    model = make(name, dropout=0.0, edge_dropout=0.0, node_dropout=0.0).train()
    batch = _fixed_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        seed_everything(1)  # the same augmentations / masks each step: a deterministic objective
        loss = model.training_loss(batch)
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
    assert losses[-1] < losses[0], losses


PLUGGABLE = [n for n in MODELS if registered_models()[n].cls.graph_plugin]


@pytest.mark.parametrize("name", PLUGGABLE)
def test_graph_plugin(name):
    "The one switch puts the graph layer in front of the model's item table: the edge MLP learns from the model's loss."
    model = make(name, graph=True).train()
    assert model.graph is not None and model.graph.edge_mlp is not None
    batch = _fixed_batch()
    model.restrict_to_batch = False
    seed_everything(1)
    loss = model.training_loss(batch)
    loss.backward()
    grads = [p.grad for p in model.graph.edge_mlp.parameters()]
    assert torch.isfinite(loss) and all(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.item_embeddings()).all()


ROOT = Path(__file__).resolve().parents[1]


def _train_parameters() -> set[str]:
    "The names defined in nbs/train.ipynb's `parameters` cell."
    nb = json.loads((ROOT / "nbs" / "train.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return {m.group(1) for m in re.finditer(r"^(\w+)\s*:", "".join(cell["source"]), re.M)}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_has_its_config_file(name):
    "configs/models/<name>.yaml exists, names its model, and uses only train.ipynb's parameters and the config's fields."
    path = ROOT / "configs" / "models" / f"{name}.yaml"
    assert path.exists(), f"{name} is registered but has no {path.relative_to(ROOT)}"
    conf = yaml.safe_load(path.read_text())
    assert conf["model"] == name
    unknown = set(conf) - _train_parameters()
    assert not unknown, f"{path.name}: {sorted(unknown)} are not parameters of nbs/train.ipynb"
    cls = registered_models()[name].config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    cfg = coerce_config(cls, {**{k: v for k, v in conf.items() if k in fields}, **conf.get("model_params", {})})
    assert isinstance(cfg, cls)
