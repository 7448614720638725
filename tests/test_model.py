"""One training step of every model variant on a tiny synthetic catalogue, through the public API only."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from sagerec.core import SageRecError, seed_everything
from sagerec.graph import build_graph, random_graph
from sagerec.model import ModelConfig, SASRec, SAGERec, SeqRecModel, build_model

N_ITEMS, DIM = 40, 16
CFG = ModelConfig(dim=DIM, n_blocks=2, n_heads=2, dropout=0.2, max_len=12)


def _emb(seed=0):
    "Clustered unit-norm item embeddings, row 0 = padding (zero)."
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 8))
    e = centres[np.arange(N_ITEMS + 1) % 4] + 0.3 * rng.normal(size=(N_ITEMS + 1, 8))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    e[0] = 0
    return e.astype(np.float32)


def _batch(B=6, L=10, n_neg=3, seed=0):
    "Left-padded inputs, next-item targets and negatives, in the trainer's layout."
    g = torch.Generator().manual_seed(seed)
    seqs, pos = torch.zeros(B, L, dtype=torch.long), torch.zeros(B, L, dtype=torch.long)
    for b in range(B):
        n = int(torch.randint(2, L + 2, (1,), generator=g))
        s = torch.randint(1, N_ITEMS + 1, (n,), generator=g)
        seqs[b, L - (n - 1):], pos[b, L - (n - 1):] = s[:-1], s[1:]
    neg = torch.randint(1, N_ITEMS + 1, (B, L, n_neg), generator=g) * (pos != 0)[..., None]
    return seqs, pos, neg


SEMANTIC = build_graph(_emb(), k=3, tau=0.0, method="exact", device="cpu")
VARIANTS = {
    "sagerec-learned": lambda: build_model("sagerec", N_ITEMS, CFG, SEMANTIC),
    "sagerec-fixed": lambda: build_model("sagerec", N_ITEMS, replace(CFG, graph_mode="fixed"), SEMANTIC),
    "sasrec": lambda: build_model("sasrec", N_ITEMS, CFG),
    "random-graph": lambda: build_model("sagerec", N_ITEMS, CFG, random_graph(N_ITEMS + 1, SEMANTIC.num_undirected_edges, seed=1)),
    "no-position": lambda: build_model("sagerec", N_ITEMS, replace(CFG, use_position=False), SEMANTIC),
    "self-loops": lambda: build_model("sagerec", N_ITEMS, CFG, build_graph(_emb(), k=3, tau=0.0, self_loops=True, method="exact", device="cpu")),
    "directed-edges": lambda: build_model("sagerec", N_ITEMS, replace(CFG, symmetric_edges=False), SEMANTIC),
    "row-node-dropout": lambda: build_model("sagerec", N_ITEMS, replace(CFG, node_dropout_mode="rows"), SEMANTIC),
    "raw-output": lambda: build_model("sagerec", N_ITEMS, replace(CFG, output_embedding="raw"), SEMANTIC),
    "two-graph-layers": lambda: build_model("sagerec", N_ITEMS, replace(CFG, n_graph_layers=2), SEMANTIC),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_step(variant):
    seed_everything(0)
    model = VARIANTS[variant]()
    assert isinstance(model, SeqRecModel)
    seqs, pos, neg = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model.loss(seqs, pos, neg)
    assert loss.ndim == 0 and torch.isfinite(loss)
    opt.zero_grad(); loss.backward(); opt.step()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert "item_emb.weight" in changed and any(n.startswith("encoder.blocks") for n in changed)
    if variant in ("sagerec-learned", "random-graph", "directed-edges", "two-graph-layers", "self-loops"):
        assert any(n.startswith("graph.edge_mlp") for n in changed), changed
    assert torch.equal(model.item_emb.weight[0].detach(), torch.zeros(DIM))  # padding row stays zero
    model.eval()
    with torch.no_grad():
        s = model.score_all(seqs)
        c = model.score_candidates(seqs, pos[:, -3:])
    assert s.shape == (6, N_ITEMS + 1) and torch.isinf(s[:, 0]).all() and torch.isfinite(s[:, 1:]).all()
    torch.testing.assert_close(c, s.gather(1, pos[:, -3:]))


def test_variant_structure():
    learned, fixed, sasrec = VARIANTS["sagerec-learned"](), VARIANTS["sagerec-fixed"](), VARIANTS["sasrec"]()
    assert isinstance(sasrec, SASRec) and isinstance(learned, SAGERec) and sasrec.graph is None
    assert fixed.graph.edge_mlp is None and learned.graph.edge_mlp is not None
    assert VARIANTS["no-position"]().encoder.pos_emb is None
    n_mlp = sum(p.numel() for p in learned.graph.edge_mlp.parameters())
    assert n_mlp == (2 * DIM * DIM + DIM) + (DIM + 1)  # h = d
    assert sum(p.numel() for p in learned.parameters()) == sum(p.numel() for p in sasrec.parameters()) + n_mlp


def test_training_reduces_loss():
    "A few Adam steps on one batch lower its (dropout-free) loss, for the graph model."
    seed_everything(0)
    model = build_model("sagerec", N_ITEMS, replace(CFG, dropout=0.0, edge_dropout=0.0, node_dropout=0.0), SEMANTIC)
    seqs, pos, neg = _batch(n_neg=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model.loss(seqs, pos, neg[..., 0]); losses.append(loss.item())
        opt.zero_grad(); loss.backward(); opt.step()
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("node_mode", ["messages", "rows", "nodes"])
@pytest.mark.parametrize("graph_mode,symmetric", [("learned", True), ("learned", False), ("fixed", True)])
def test_batch_rows_restriction_is_exact(node_mode, graph_mode, symmetric):
    "loss() propagates only the rows its batch uses: same loss and gradients as with the whole table, same masks."
    cfg = replace(CFG, graph_mode=graph_mode, symmetric_edges=symmetric, node_dropout_mode=node_mode)
    seed_everything(0)
    model = build_model("sagerec", N_ITEMS, cfg, SEMANTIC).train()
    seqs, pos, neg = _batch(B=2, L=5, n_neg=1, seed=3)
    assert len(torch.cat([seqs.flatten(), pos.flatten(), neg.flatten()]).unique()) < N_ITEMS // 2  # a real restriction
    res = []
    for restrict in (False, True):
        model.restrict_to_batch = restrict
        model.zero_grad(); seed_everything(5)
        loss = model.loss(seqs, pos, neg); loss.backward()
        res.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert res[1][0] == pytest.approx(res[0][0], abs=1e-6)
    for n, g in res[0][1].items():
        torch.testing.assert_close(res[1][1][n], g, atol=1e-5, rtol=1e-4)


def test_train_mode_is_random_eval_is_not():
    seed_everything(0)
    model = VARIANTS["sagerec-learned"]()
    seqs, pos, neg = _batch()
    model.train()
    assert model.loss(seqs, pos, neg).item() != model.loss(seqs, pos, neg).item()
    model.eval()
    with torch.no_grad():
        assert model.loss(seqs, pos, neg).item() == model.loss(seqs, pos, neg).item()


def test_user_errors():
    with pytest.raises(SageRecError, match="needs the item graph"):
        build_model("sagerec", N_ITEMS, CFG)
    with pytest.raises(SageRecError, match="nodes but the model has"):
        build_model("sagerec", N_ITEMS + 1, CFG, SEMANTIC)
    with pytest.raises(SageRecError, match="Unknown model"):
        build_model("nosuchmodel", N_ITEMS, CFG)
    with pytest.raises(SageRecError, match="negative"):
        build_model("sagerec", N_ITEMS, replace(CFG, graph_mode="fixed"),
                    random_graph(N_ITEMS + 1, 30, seed=0, emb=np.random.default_rng(0).normal(size=(N_ITEMS + 1, 4))))
    model = VARIANTS["sasrec"]()
    with pytest.raises(SageRecError, match="max_len=12"):
        model.encode(torch.ones(2, 13, dtype=torch.long))
    with pytest.raises(SageRecError, match=r"Item ids must be in 0\.\.40"):
        model.score_all(torch.full((1, 3), N_ITEMS + 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree():
    seed_everything(0)
    model = VARIANTS["sagerec-learned"]().eval()
    seqs, pos, neg = _batch()
    with torch.no_grad():
        cpu = model.score_all(seqs), model.loss(seqs, pos, neg)
        model.cuda()
        gpu = model.score_all(seqs.cuda()), model.loss(seqs.cuda(), pos.cuda(), neg.cuda())
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-5, rtol=1e-5)
