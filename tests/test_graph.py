"""Mechanism tests for sagerec.graph: the edge rule against a brute-force reading of the paper, layout, bad input."""
import numpy as np
import pytest
import torch

from sagerec.core import SageRecError
from sagerec.graph import (ItemGraph, build_graph, exact_topk, faiss_topk, graph_from_neighbors, graph_stats, knn_recall,
                           random_graph, topk_neighbors)


def _table(n=400, d=32, zero=(), seed=0):
    "Random embeddings (n items + padding row 0), with some rows zeroed (items without text)."
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n + 1, d)).astype(np.float32)
    e[0] = 0
    e[list(zero)] = 0
    return e


def _brute_pairs(e, k, tau, mutual=False):
    "The paper's rule on the dense similarity matrix: {i, j} iff S_ij >= tau and j in TopK(i) (or mutual)."
    norm = np.linalg.norm(e, axis=1)
    has = norm > 0
    u = np.where(has[:, None], e / np.where(has, norm, 1)[:, None], 0)
    s = u @ u.T
    s[~has, :] = -np.inf; s[:, ~has] = -np.inf
    np.fill_diagonal(s, -np.inf)
    chosen = {}
    for i in np.where(has)[0]:
        for j in np.argsort(-s[i], kind="stable")[:k]:
            key = (min(i, j), max(i, j))
            chosen[key] = chosen.get(key, 0) + 1
    return {p for p, c in chosen.items() if (c == 2 or not mutual) and s[p] >= tau}


def _pairs(g: ItemGraph):
    ei = g.edge_index.numpy()
    return {(int(a), int(b)) for a, b in ei.T if a <= b}


@pytest.mark.parametrize("k,tau,mutual", [(1, 0.0, False), (3, 0.0, False), (3, 0.15, False), (5, -1.0, False), (3, 0.0, True)])
def test_edges_follow_the_paper_rule(k, tau, mutual):
    e = _table(zero=(7, 8, 300))
    g = build_graph(e, k=k, tau=tau, mutual=mutual, method="exact")
    assert _pairs(g) == _brute_pairs(e, k, tau, mutual)


@pytest.mark.parametrize("screen", [False, True])
def test_exact_topk_matches_dense(screen):
    x = torch.nn.functional.normalize(torch.randn(1500, 48, generator=torch.Generator().manual_seed(1)), dim=1)
    v, i = exact_topk(x, 4, screen=screen, block=50_000)  # many small blocks
    dense = (x @ x.T).fill_diagonal_(-2).topk(4, dim=1)
    assert torch.equal(i, dense.indices)
    assert torch.allclose(v, dense.values, atol=1e-6)


def test_layout_both_directions_sorted_symmetric_weights():
    e = _table(zero=(5,))
    g = build_graph(e, k=3)
    ei, w = g.edge_index.numpy(), g.edge_weight.numpy()
    assert ei.shape[0] == 2 and ei.shape[1] == len(w) == 2 * g.num_undirected_edges
    assert (ei != 0).all() and (ei[0] != ei[1]).all()  # no padding, no self-loops by default
    assert len({tuple(c) for c in ei.T}) == ei.shape[1]  # no duplicate entries
    order = np.lexsort((ei[1], ei[0]))
    assert (order == np.arange(len(order))).all()
    lookup = {(a, b): x for (a, b), x in zip(ei.T.tolist(), w)}
    assert all(lookup[(b, a)] == x for (a, b), x in lookup.items())  # same weight both ways
    u = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)
    np.testing.assert_allclose(w, (u[ei[0]] * u[ei[1]]).sum(1), atol=1e-5)  # weight = cosine
    assert g.degree()[5] == 0 and g.degree()[0] == 0


def test_self_loops_once_with_weight_one():
    e = _table(n=50, zero=(3,))
    g0, g1 = build_graph(e, k=2), build_graph(e, k=2, self_loops=True)
    loops = g1.edge_index[0] == g1.edge_index[1]
    assert int(loops.sum()) == 49  # every item with an embedding, not item 3, not padding
    assert torch.all(g1.edge_weight[loops] == 1)
    assert g1.num_undirected_edges == g0.num_undirected_edges + 49


def test_every_item_with_text_has_k_neighbours_at_tau_minus_one():
    e = _table(zero=(10, 11))
    g = build_graph(e, k=3, tau=-1.0)
    deg = g.degree().numpy()
    assert deg[0] == 0 and deg[10] == 0 and deg[11] == 0
    assert (np.delete(deg, [0, 10, 11]) >= 3).all()
    assert graph_stats(g)["isolated_items"] == 2


def test_topk_neighbors_marks_rows_without_embedding():
    e = _table(n=30, zero=(4,))
    sims, nbrs, used = topk_neighbors(e, 2)
    assert used == "exact" and nbrs.shape == (31, 2)
    assert (nbrs[[0, 4]] == -1).all() and np.isnan(sims[[0, 4]]).all()
    rest = nbrs[np.r_[1:4, 5:31]]
    assert (rest > 0).all() and not (rest == 4).any()


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_methods_on_clustered_vectors(method):
    gen = torch.Generator().manual_seed(2)
    cent = torch.nn.functional.normalize(torch.randn(20, 32, generator=gen), dim=1)
    x = torch.nn.functional.normalize(cent[torch.randint(0, 20, (2000,), generator=gen)] + torch.randn(2000, 32, generator=gen) / 6, dim=1)
    _, exact = exact_topk(x, 3)
    v, approx = faiss_topk(x, 3, method)
    assert knn_recall(approx, exact) >= 0.95
    assert not (approx == torch.arange(2000)[:, None]).any()  # never itself
    e = np.vstack([np.zeros((1, 32)), x.numpy()]).astype(np.float32)
    g = build_graph(e, k=3, method=method)
    assert g.info["method"] == method and g.info["recall_estimate"] >= 0.95


def test_recall_warning_when_index_is_poor():
    e = _table(n=3000, d=64)  # uniform random vectors: the worst case for an index
    with pytest.warns(UserWarning, match="found only"):
        build_graph(e, k=3, method="ivf", nprobe=1)


@pytest.mark.parametrize("kw,msg", [
    (dict(k=0), "k must be a positive integer"),
    (dict(k=-2), "k must be a positive integer"),
    (dict(k=400), "must be smaller than the number of items with an embedding (400)"),
    (dict(k=1000), "must be smaller than the number of items"),
    (dict(tau=1.01), "is not a cosine threshold"),
    (dict(tau=-1.5), "is not a cosine threshold"),
    (dict(tau="0.5"), "is not a cosine threshold"),
    (dict(method="annoy"), "Unknown method"),
])
def test_bad_parameters(kw, msg):
    with pytest.raises(SageRecError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        build_graph(_table(), **kw)


def test_bad_embeddings():
    e = _table(n=20)
    nan = e.copy(); nan[3, 1] = np.nan
    with pytest.raises(SageRecError, match="NaN or infinite"): build_graph(nan)
    inf = e.copy(); inf[4, 0] = np.inf
    with pytest.raises(SageRecError, match=r"ids \[4\]"): build_graph(inf)
    with pytest.raises(SageRecError, match="Row 0 of the embeddings is the padding item"): build_graph(e[1:])
    with pytest.raises(SageRecError, match="2-D table"): build_graph(e[:, 0])
    few = _table(n=5, zero=(1, 2, 3))
    with pytest.raises(SageRecError, match=r"number of items with an embedding \(2\)"): build_graph(few, k=2)
    g = build_graph(few, k=1)
    assert _pairs(g) == {(4, 5)}


def test_random_graph_is_simple_exact_and_seeded():
    for num_nodes, m in [(11, 45), (11, 7), (5001, 20_000)]:
        g = random_graph(num_nodes, m, seed=3)
        ei = g.edge_index.numpy()
        assert g.num_undirected_edges == m and ei.shape[1] == 2 * m
        assert (ei > 0).all() and (ei[0] != ei[1]).all() and ei.max() < num_nodes
        assert len({tuple(c) for c in ei.T}) == 2 * m
        assert torch.equal(random_graph(num_nodes, m, seed=3).edge_index, g.edge_index)
    assert not torch.equal(random_graph(5001, 20_000, seed=4).edge_index, g.edge_index)
    deg = random_graph(201, 10_000, seed=0).degree()[1:].float()  # near-uniform degrees, mean 100
    assert deg.min() > 60 and deg.max() < 140
    with pytest.raises(SageRecError, match="between 0 and 10"): random_graph(6, 11)
    with pytest.raises(SageRecError, match="at least 2 items"): random_graph(2, 0)


def test_random_graph_same_size_as_semantic_graph():
    e = _table()
    g = build_graph(e, k=3)
    r = random_graph(g.num_nodes, g.num_undirected_edges, seed=0, emb=e)
    assert r.num_undirected_edges == g.num_undirected_edges and r.num_nodes == g.num_nodes
    assert r.edge_weight.abs().max() <= 1 + 1e-6


def test_weights_from_search_equal_recomputed_cosines():
    e = _table(zero=(9,)) * 3.0  # not unit-norm: weights are still cosines
    sims, nbrs, _ = topk_neighbors(e, 3)
    g1, g2 = graph_from_neighbors(e, nbrs, sims), graph_from_neighbors(e, nbrs)
    assert torch.equal(g1.edge_index, g2.edge_index)
    assert torch.allclose(g1.edge_weight, g2.edge_weight, atol=1e-5)
    assert torch.equal(build_graph(e, 3).edge_index, g1.edge_index)


def test_exact_topk_ties_and_duplicates():
    e = _table(n=60)
    e[30] = e[31] = e[32] = e[5]  # identical items: each other's best neighbours, never themselves
    sims, nbrs, _ = topk_neighbors(e, 3)
    for i in (5, 30, 31, 32):
        assert i not in nbrs[i] and set(nbrs[i]) == {5, 30, 31, 32} - {i}
        np.testing.assert_allclose(sims[i], 1.0, atol=1e-5)
