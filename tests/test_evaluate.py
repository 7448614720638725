"Evaluation checked against a brute-force NumPy reference on random scores, and on CPU vs GPU."
import math

import numpy as np
import pytest
import torch
from torch import nn

from sagerec.core import SageRecError
from sagerec.evaluate import (UnseenSampler, evaluate, left_pad, metrics_from_ranks, rank_users, sampled_candidates,
                              target_ranks)


class TableModel(nn.Module):
    "Scores come from a fixed table; the row is chosen by the last input item (user u's input ends with item u+1)."
    def __init__(self, table: np.ndarray, max_len: int = 50):
        super().__init__()
        self.table = nn.Parameter(torch.as_tensor(table, dtype=torch.float32), requires_grad=False)  # (U, N+1)
        self.max_len = max_len
    def score_all(self, seqs, users=None):
        s = self.table[seqs[:, -1] - 1].clone(); s[:, 0] = float("-inf"); return s  # (B, N+1)
    def score_candidates(self, seqs, cand, users=None): return self.table[seqs[:, -1] - 1].gather(1, cand)  # (B, C)


def random_case(seed, U=60, N=90, ties=True):
    "Random scores (rounded, so ties are common), histories ending with item u+1, targets sometimes in the history."
    rng = np.random.default_rng(seed)
    scores = rng.random((U, N + 1))
    if ties: scores = np.round(scores, 1)
    hist, tgt = [], np.empty(U, dtype=np.int64)
    for u in range(U):
        h = rng.choice(np.arange(1, N + 1), size=rng.integers(0, 30), replace=True)
        h = np.append(h[h != u + 1], u + 1)
        hist.append(h)
        tgt[u] = rng.choice(h) if rng.random() < 0.3 else rng.integers(1, N + 1)  # 30% repeats of a history item
    return scores.astype(np.float32), hist, tgt


def brute_rank(row, hist, target, mask, ties):
    "The reference: loop over items, compare with the target's score."
    s = row.astype(np.float64).copy(); s[0] = -np.inf
    if mask:
        for i in hist:
            if i != target: s[i] = -np.inf
    t = s[target]
    r = 0
    for i in range(1, len(s)):
        if i == target: continue
        if s[i] > t or (ties == "pessimistic" and s[i] == t): r += 1
    return r


def brute_metrics(ranks, k):
    return (np.mean([1.0 if r < k else 0.0 for r in ranks]),
            np.mean([1 / math.log2(r + 2) if r < k else 0.0 for r in ranks]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_full_ranking_matches_brute_force(seed, mask, ties):
    scores, hist, tgt = random_case(seed)
    m = TableModel(scores)
    ref = np.array([brute_rank(scores[u], hist[u], tgt[u], mask, ties) for u in range(len(tgt))])
    for bs in (1, 7, 1024):  # batching (and the length-sorted order) must not change anything
        ranks, _ = rank_users(m, hist, tgt, mask_history=mask, ties=ties, batch_size=bs)
        np.testing.assert_array_equal(ranks, ref)
    got = metrics_from_ranks(ref, ks=(1, 5, 10, 20))
    for k in (1, 5, 10, 20):
        rec, ndcg = brute_metrics(ref, k)
        assert got[f"recall@{k}"] == pytest.approx(rec) and got[f"ndcg@{k}"] == pytest.approx(ndcg)


def test_target_is_never_masked():
    scores, hist, tgt = random_case(5, ties=False)
    tgt = np.array([h[0] for h in hist])  # every target is in the history
    ranks, _ = rank_users(TableModel(scores), hist, tgt, mask_history=True)
    ref = np.array([brute_rank(scores[u], hist[u], tgt[u], True, "pessimistic") for u in range(len(tgt))])
    np.testing.assert_array_equal(ranks, ref)
    assert ranks.max() < scores.shape[1] - 1  # a masked target would rank behind everything


def test_sampled_protocol_matches_brute_force():
    scores, hist, tgt = random_case(3)
    full = [np.append(h, t) for h, t in zip(hist, tgt)]
    cand = sampled_candidates(full, tgt, n_items=scores.shape[1] - 1, n=20, seed=0)
    for u, row in enumerate(cand):
        assert row[0] == tgt[u] and len(set(row[1:])) == 20 and not set(row[1:]) & set(full[u])
    ranks, _ = rank_users(TableModel(scores), hist, tgt, candidates=cand, batch_size=5)
    ref = [sum(scores[u, c] >= scores[u, tgt[u]] for c in cand[u, 1:]) for u in range(len(tgt))]
    np.testing.assert_array_equal(ranks, ref)


def test_gather_returns_raw_unmasked_scores():
    scores, hist, tgt = random_case(4)
    g = np.stack([tgt, np.array([h[0] for h in hist])], 1)  # the second column is a history item
    _, got = rank_users(TableModel(scores), hist, tgt, mask_history=True, gather=g, batch_size=8)
    np.testing.assert_allclose(got, np.take_along_axis(scores, g, 1))


def test_unseen_sampler_is_uniform_over_unseen_items():
    seen = [np.array([1, 2, 3]), np.array([4, 5])]
    s = UnseenSampler(seen, n_items=6).sample(np.array([0, 1] * 3000), 1, np.random.default_rng(0))[:, 0]
    u0, u1 = s[0::2], s[1::2]
    assert set(u0) == {4, 5, 6} and set(u1) == {1, 2, 3, 6}
    assert np.allclose(np.bincount(u0, minlength=7)[4:] / len(u0), 1 / 3, atol=0.03)
    assert np.allclose(np.bincount(u1, minlength=7)[[1, 2, 3, 6]] / len(u1), 1 / 4, atol=0.03)


def test_user_errors():
    scores, hist, tgt = random_case(0)
    m = TableModel(scores)
    with pytest.raises(SageRecError, match="empty input"):
        rank_users(m, [np.array([], dtype=np.int64)] + hist[1:], tgt)
    with pytest.raises(SageRecError, match="targets"):
        rank_users(m, hist, tgt[:-1])
    with pytest.raises(SageRecError, match="maximum sequence length"):
        rank_users(nn.Linear(1, 1), hist, tgt)
    bad = scores.copy(); bad[3, 7] = np.nan
    with pytest.raises(SageRecError, match="NaN scores"):
        rank_users(TableModel(bad), hist, tgt)


def test_left_pad_keeps_the_last_items():
    np.testing.assert_array_equal(left_pad([np.arange(1, 10), np.array([4])], max_len=3), [[7, 8, 9], [0, 0, 4]])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_gpu_agree():
    scores, hist, tgt = random_case(7, ties=False)
    cpu, _ = rank_users(TableModel(scores), hist, tgt)
    gpu, _ = rank_users(TableModel(scores).cuda(), hist, tgt)
    np.testing.assert_array_equal(cpu, gpu)
    from sagerec.evaluate import LastItemModel
    from types import SimpleNamespace
    torch.manual_seed(0); m = LastItemModel(90, 16); m.reset_parameters()
    sp = SimpleNamespace(n_items=90, valid_input=hist, valid_target=tgt, test_input=hist, test_target=tgt)
    a = evaluate(m, sp, "test"); b = evaluate(m.cuda(), sp, "test")
    for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"): assert a[k] == pytest.approx(b[k], abs=1e-4)


class BlockTableModel(TableModel):
    "TableModel that can also score a range of items (the blocked full-ranking path): the state is the table row."
    def __init__(self, table, max_len=50):
        super().__init__(table, max_len); self.n_items = table.shape[1] - 1
    def user_states(self, seqs, users=None): return self.table[seqs[:, -1] - 1]  # (B, N+1)
    def score_items(self, z, lo, hi):
        s = z[:, lo:hi].clone()
        if lo == 0: s[:, 0] = float("-inf")
        return s


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_blocked_full_ranking_matches_brute_force(seed, mask, ties):
    "Walking the items in blocks gives exactly the brute-force ranks (rounded scores: many exact ties), and the raw gathered scores."
    scores, hist, tgt = random_case(seed)
    m = BlockTableModel(scores)
    ref = np.array([brute_rank(scores[u], hist[u], tgt[u], mask, ties) for u in range(len(tgt))])
    g = np.stack([tgt, np.array([h[0] for h in hist]), np.zeros_like(tgt)], 1)
    for block in (1, 2, 13, 90, 91):
        for bs in (7, 1024):
            ranks, got = rank_users(m, hist, tgt, mask_history=mask, ties=ties, batch_size=bs, item_block=block, gather=g)
            np.testing.assert_array_equal(ranks, ref)
            np.testing.assert_array_equal(got[:, :2], np.take_along_axis(scores, g, 1)[:, :2]); assert np.isneginf(got[:, 2]).all()


def test_blocked_equals_unblocked_for_sagerec():
    "The real model (graph layer and Transformer): blocks of items give exactly the one-block ranks and metrics."
    from types import SimpleNamespace
    from sagerec.graph import random_graph
    from sagerec.model import ModelConfig, build_model
    torch.manual_seed(0); rng = np.random.default_rng(0); N = 300
    m = build_model("sagerec", N, ModelConfig(dim=16, max_len=10), random_graph(N + 1, 600, seed=0))
    seqs = [rng.integers(1, N + 1, size=rng.integers(3, 15)) for _ in range(200)]
    sp = SimpleNamespace(n_items=N, valid_input=[s[:-2] for s in seqs], valid_target=np.array([s[-2] for s in seqs]),
                         test_input=[s[:-1] for s in seqs], test_target=np.array([s[-1] for s in seqs]))
    for mask in (True, False):
        ref = evaluate(m, sp, "test", mask_history=mask, return_ranks=True)
        for block in (1, 64, 299):
            got = evaluate(m, sp, "test", mask_history=mask, return_ranks=True, item_block=block)
            np.testing.assert_array_equal(got["ranks"], ref["ranks"])
            assert {k: v for k, v in got.items() if k != "ranks"} == {k: v for k, v in ref.items() if k != "ranks"}


def test_blocked_needs_score_items():
    scores, hist, tgt = random_case(0)
    with pytest.raises(SageRecError, match="needs a model whose user_states"):
        rank_users(TableModel(scores), hist, tgt, item_block=10)


def test_a_model_that_overrides_score_all_alone_is_never_blocked(monkeypatch):
    "Its own score_all decides the ranks, even when the catalogue is big enough for blocks."
    import sagerec.evaluate as ev
    scores, hist, tgt = random_case(1)
    class Flipped(BlockTableModel):  # score_all differs from what user_states/score_items give
        def score_all(self, seqs, users=None): s = -super().score_all(seqs); s[:, 0] = float("-inf"); return s
    ref = np.array([brute_rank(-scores[u], hist[u], tgt[u], True, "pessimistic") for u in range(len(tgt))])
    monkeypatch.setattr(ev, "MAX_BLOCK", 50)  # any batch exceeds it: blocks would be used if allowed
    np.testing.assert_array_equal(rank_users(Flipped(scores), hist, tgt, batch_size=8)[0], ref)
    with pytest.raises(SageRecError, match="overrides it alone"):
        rank_users(Flipped(scores), hist, tgt, item_block=10)
