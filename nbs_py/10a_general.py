# %% [markdown]
# # General recommenders
# > BPR: matrix factorisation trained with the pairwise BPR objective, behind the model contract (a user vector instead of a sequence encoder).

# %%
#| default_exp general

# %%
#| export
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from sagerec.core import check
from sagerec.model import ModelConfig, SeqRecModel, TrainBatch, register_model, xavier_init_

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import seed_everything
from sagerec.model import build_model


# %% [markdown]
# ## BPR
#
# Rendle, Freudenthaler, Gantner & Schmidt-Thieme, *BPR: Bayesian Personalized Ranking from Implicit Feedback*,
# UAI 2009. The score of item $i$ for user $u$ is $\hat x_{ui} = p_u \cdot q_i$ (matrix factorisation). The
# objective maximises the posterior of the pairwise preferences: for a training item $i$ of $u$ and an item $j$
# $u$ never interacted with, $-\ln \sigma(\hat x_{ui} - \hat x_{uj})$, averaged over the sampled triples, plus an
# L2 term on the factors. The order of the sequence plays no part.
#
# Under the model contract BPR is a model whose "encoder" returns the user's vector at every position
# (`needs_users = True`), so the shared scoring and evaluation work unchanged. Its training triples come from the
# trainer's batch: every training item of the user (the first input and every target, i.e. the user's whole
# training sequence, up to `max_len + 1` items) with the per-position negatives the trainer drew (unseen in
# training). `objective="shared"` trains it with the trainer's loss kind instead (`bce`, `ce`, ...).
#
# What differs from the paper: Adam on mini-batches of users (the project's trainer) instead of SGD on
# bootstrapped triples; Xavier initialisation; the L2 term on the whole factor tables (`l2 * (‖P‖² + ‖Q‖²)`, the
# project's convention). The graph plug-in (`graph_mode`) puts the semantic graph layer in front of $Q$.

# %%
#| export
@dataclass
class BPRConfig(ModelConfig):
    "BPR-MF settings: the shared ModelConfig fields (dim, l2, graph) plus the objective."
    graph_mode: str = "none"  # the graph layer in front of the item factors: off by default ("learned"/"fixed": on)
    objective: str = "bpr"  # "bpr": the paper's pairwise loss (needs the trainer's per-position negatives); "shared": the trainer's loss kind

    def __post_init__(self):
        super().__post_init__()
        check(self.objective in ("bpr", "shared"), f"BPRConfig.objective={self.objective!r}: use 'bpr' or 'shared'.")


@register_model("bpr", paper="Rendle et al., BPR: Bayesian Personalized Ranking from Implicit Feedback, UAI 2009")
class BPR(SeqRecModel):
    "Matrix factorisation x_ui = p_u . q_i, trained with the pairwise BPR objective."
    config_class = BPRConfig
    needs_users = True

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):
        super().__init__(n_items, cfg, graph, n_users)
        self.item_table()  # Q (N+1, D), and the graph layer in front of it when asked
        self.user_emb = nn.Embedding(self.n_users, self.cfg.dim)  # P (U, D)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        xavier_init_(self); self._cache = None

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, D)
        return self.user_emb(users)[:, None].expand(-1, seqs.shape[1], -1)  # the user's vector at every position

    def encode_last(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, D)
        return self.user_emb(users)

    def l2_penalty(self) -> Tensor:  # ()
        return self.cfg.l2 * (self.item_emb.weight.square().sum() + self.user_emb.weight.square().sum())

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        if self.cfg.objective == "shared": return super().training_loss(batch)
        check(batch.kind == "bce" and batch.neg is not None and batch.neg.ndim == 3,
              f"BPR's pairwise objective needs per-position negatives (B, L, K): train with the loss 'bce' (got {batch.kind!r}), "
              "or set objective='shared'.")
        seqs, pos, neg = batch.seqs, batch.pos, batch.neg  # (B, L), (B, L), (B, L, K)
        valid = pos != 0  # (B, L)
        first = valid & ~torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], 1)  # (B, L) the first real column
        users = self._check_users(batch.users, seqs.shape[0])[:, None].expand_as(pos)  # (B, L)
        items = torch.cat([pos[valid], seqs[first]])  # (n,) every training item: the targets and the first input
        negs = torch.cat([neg[valid], neg[first]])  # (n, K)
        u = torch.cat([users[valid], users[first]])  # (n,)
        self._check_ids(items[None], "items", negs, "neg")
        _, out = self.tables(torch.cat([items, negs.reshape(-1)]) if self.restrict_to_batch else None)
        p = self.user_emb(u)  # (n, D)
        x_pos = (p * F.embedding(items, out)).sum(-1)  # (n,)
        x_neg = torch.einsum("nd,nkd->nk", p, F.embedding(negs, out))  # (n, K)
        return -F.logsigmoid(x_pos[:, None] - x_neg).mean() + self.l2_penalty()


# %% [markdown]
# Three users, six items. The scores are the dot products of the user and item vectors; the pairwise loss by
# hand on the same triples equals `training_loss`, and covers every training item of each user (the first
# input too).

# %%
seqs = torch.tensor([[0, 1, 2], [0, 0, 4], [3, 5, 6]])  # (B=3, L=3) inputs
pos = torch.tensor([[0, 2, 3], [0, 0, 5], [5, 6, 1]])  # next items
neg = torch.tensor([[[0], [5], [6]], [[0], [0], [1]], [[2], [4], [4]]])  # (B, L, K=1)
batch = TrainBatch(torch.tensor([0, 1, 2]), seqs, pos, neg)
seed_everything(0)
bpr = build_model("bpr", 6, dict(dim=4, l2=0.0), n_users=3)
with torch.no_grad():
    P, Q = bpr.user_emb.weight, bpr.item_emb.weight
    triples = [(0, 1, 5), (0, 2, 5), (0, 3, 6), (1, 4, 1), (1, 5, 1), (2, 3, 2), (2, 5, 2), (2, 6, 4), (2, 1, 4)]  # (u, i, j)
    by_hand = torch.stack([-F.logsigmoid(P[u] @ Q[i] - P[u] @ Q[j]) for u, i, j in triples]).mean()
    got = bpr.training_loss(batch)
    scores = bpr.eval().score_all(seqs, users=torch.tensor([0, 1, 2]))
got, by_hand, scores.shape

# %%
test_close(got, by_hand, eps=1e-6)
test_close(scores[:, 1:], P @ Q[1:].T, eps=1e-6)
assert torch.isinf(scores[:, 0]).all()
with torch.no_grad():  # the sequence plays no part: another history, same scores
    test_eq(bpr.score_all(seqs.flip(1), users=torch.tensor([0, 1, 2])), scores)
test_fail(lambda: bpr.score_all(seqs), contains="pass users=")
test_fail(lambda: build_model("bpr", 6), contains="pass n_users")
test_fail(lambda: bpr.training_loss(TrainBatch(batch.users, seqs, pos, None, kind="ce")), contains="train with the loss 'bce'")

# %% [markdown]
# A few Adam steps on this batch lower the loss, and with `objective="shared"` the model trains with the
# trainer's loss kind (here the full softmax).

# %%
bpr.train(); opt = torch.optim.Adam(bpr.parameters(), lr=0.05)
losses = []
for _ in range(5):
    l = bpr.training_loss(batch); opt.zero_grad(); l.backward(); opt.step(); losses.append(round(l.item(), 4))
shared = build_model("bpr", 6, dict(dim=4, objective="shared"), n_users=3)
losses, shared.training_loss(TrainBatch(batch.users, seqs, pos, None, kind="ce")).item()

# %%
assert losses[-1] < losses[0]
test_fail(lambda: BPRConfig(objective="top1"), contains="use 'bpr' or 'shared'")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
