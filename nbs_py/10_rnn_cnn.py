# %% [markdown]
# # RNN and CNN recommenders
# > GRU4Rec (a GRU over the sequence) and Caser (horizontal and vertical convolutions over the last L items, plus a user vector), behind the model contract.

# %%
#| default_exp rnn_cnn

# %%
#| export
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sagerec.core import check
from sagerec.model import ModelConfig, SeqRecModel, TrainBatch, register_model, xavier_init_

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import seed_everything
from sagerec.model import build_model

# %%
#| hide
torch.set_num_threads(1)  # tiny fixtures: one thread is faster and immune to a busy shared CPU


# %% [markdown]
# ## GRU4Rec
#
# Hidasi, Karatzoglou, Baltrunas & Tikk, *Session-based Recommendations with Recurrent Neural Networks*,
# ICLR 2016. A GRU reads the items one by one; its hidden state after item $t$ scores the next item. The paper
# uses one GRU layer of 100 units, an embedding (or one-hot) input, a feed-forward output layer, dropout, and
# ranking losses (TOP1, BPR) over the other items of the mini-batch; its follow-up (Hidasi & Karatzoglou,
# CIKM 2018) adds sampled negatives and cross-entropy-style losses, which work best. Here: item embedding (width
# `dim`, the graph plug-in in front of it) -> dropout -> GRU (`hidden` units, `n_layers`) -> a linear map back
# to `dim`, scored against the same item table. Objectives (`objective`): the paper's ranking losses over the
# trainer's per-position negatives (the paper samples them from the other sessions of the mini-batch), **TOP1**
# $\frac1K\sum_j \sigma(r_j - r_i) + \sigma(r_j^2)$ and **BPR** $-\frac1K\sum_j \log\sigma(r_i - r_j)$, or `"shared"`: the
# trainer's loss kind (`ce`, a softmax over every item, is what RecBole's GRU4Rec uses and what the follow-up
# paper found best among its losses; its BPR-max is not implemented).
#
# **Left padding and the GRU.** A GRU started on padding would carry a state that depends on how much padding
# the batch has, so a sequence would score differently in different batches. The batch is realigned to the left,
# packed with its true lengths, run, and realigned to the right: the state of every real item depends only on
# the items before it.

# %%
#| export
@dataclass
class GRU4RecConfig(ModelConfig):
    "GRU4Rec settings: the shared ModelConfig fields plus the GRU's size."
    graph_mode: str = "none"  # graph plug-in off by default
    hidden: int = 100  # GRU units (paper: 100)
    n_layers: int = 1  # GRU layers (paper: 1)
    dropout: float = 0.25  # dropout on the input embeddings (paper: 0-0.5 by dataset; RecBole: 0.3)
    objective: str = "shared"  # "top1" or "bpr": the paper's ranking losses over the per-position negatives; "shared": the trainer's loss kind

    def __post_init__(self):
        super().__post_init__()
        check(self.hidden >= 1 and self.n_layers >= 1, f"GRU4RecConfig: hidden={self.hidden} and n_layers={self.n_layers} must be >= 1.")
        check(self.objective in ("shared", "top1", "bpr"), f"GRU4RecConfig.objective={self.objective!r}: use 'shared', 'top1' or 'bpr'.")


def realign(x: Tensor,  # (B, L, C) rows aligned to one side
            lengths: Tensor,  # (B,) real items per row
            to_left: bool,  # True: left-padded -> items first; False: items first -> left-padded
           ) -> Tensor:  # (B, L, C), zeros where the result has no item
    "Move each row's `lengths` items from the right end to the left end (or back), filling with zeros."
    B, L = x.shape[:2]
    col = torch.arange(L, device=x.device)[None]  # (1, L)
    shift = (L - lengths)[:, None]  # (B, 1)
    src = col + shift if to_left else col - shift  # (B, L) source column of each output column
    ok = (src >= 0) & (src < L) & ((col < lengths[:, None]) if to_left else (col >= shift))
    out = x.gather(1, src.clamp(0, L - 1)[..., None].expand(-1, -1, x.shape[-1]))
    return out * ok[..., None]


@register_model("gru4rec", paper="Hidasi et al., Session-based Recommendations with Recurrent Neural Networks, ICLR 2016")
class GRU4Rec(SeqRecModel):
    "A GRU over the item embeddings; the state after each item, mapped to the embedding width, scores the next item."
    config_class = GRU4RecConfig

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):
        super().__init__(n_items, cfg, graph, n_users)
        c = self.cfg
        self.item_table()
        self.drop = nn.Dropout(c.dropout)
        self.gru = nn.GRU(c.dim, c.hidden, num_layers=c.n_layers, batch_first=True)
        self.out = nn.Linear(c.hidden, c.dim)  # the feed-forward output layer, into the item table's space
        self.reset_parameters()

    @property
    def max_len(self) -> int: return self.cfg.max_len

    def reset_parameters(self) -> None:
        xavier_init_(self)
        for n, p in self.gru.named_parameters():
            if n.startswith("weight"): nn.init.xavier_uniform_(p)
            else: nn.init.zeros_(p)
        self._cache = None

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, D)
        check(seqs.shape[1] <= self.cfg.max_len, f"Sequences of width {seqs.shape[1]} exceed max_len={self.cfg.max_len}.")
        lengths = (seqs != 0).sum(1)  # (B,)
        x = self.drop(F.embedding(seqs, table))  # (B, L, D)
        x = realign(x, lengths, to_left=True)  # (B, L, D) items first
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=seqs.shape[1])  # (B, L, H)
        h = realign(h, lengths, to_left=False)  # (B, L, H) left-padded again, 0 at padding
        return self.out(h) * (seqs != 0)[..., None]  # (B, L, D)

    def l2_penalty(self) -> Tensor:  # ()
        return self.cfg.l2 * self.item_emb.weight.square().sum()

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        obj = self.cfg.objective
        if obj == "shared": return super().training_loss(batch)
        check(batch.kind == "bce" and batch.neg is not None, f"GRU4Rec's {obj.upper()} loss needs per-position negatives: train with "
              f"the loss 'bce' (got {batch.kind!r}) and n_neg > 1, or set objective='shared'.")
        seqs, pos, neg = batch.seqs, batch.pos, batch.neg
        if neg.ndim == 2: neg = neg[..., None]  # (B, L, 1)
        ids = self._check_ids(seqs, "seqs", pos, "pos", neg, "neg")
        inp, out = self.tables(ids if self.restrict_to_batch else None)
        h = self.encode_with(seqs, inp)  # (B, L, D)
        valid = pos != 0
        hv = h[valid]  # (n, D)
        r_i = (hv * F.embedding(pos[valid], out)).sum(-1, keepdim=True)  # (n, 1) the next item's score
        r_j = torch.einsum("nd,nkd->nk", hv, F.embedding(neg[valid], out))  # (n, K) the negatives'
        if obj == "top1": loss = (torch.sigmoid(r_j - r_i) + torch.sigmoid(r_j.square())).mean()
        else: loss = -F.logsigmoid(r_i - r_j).mean()
        return loss + self.l2_penalty()


# %% [markdown]
# `realign` moves the items of a left-padded row to its start and back:

# %%
x = torch.tensor([[0, 0, 3, 4], [5, 6, 7, 8], [0, 0, 0, 9]])[..., None].float()  # (B=3, L=4, 1)
lens = torch.tensor([2, 4, 1])
left = realign(x, lens, to_left=True)
left.squeeze(-1), realign(left, lens, to_left=False).squeeze(-1)

# %%
test_eq(left.squeeze(-1), torch.tensor([[3., 4, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]]))
test_eq(realign(left, lens, to_left=False), x)

# %% [markdown]
# **The state depends only on the items, not on the padding**: a sequence scores the same alone, in a wider batch,
# and with extra leading padding; and the state after item $t$ does not change when a later item changes (the GRU
# reads left to right).

# %%
seed_everything(0)
gru = build_model("gru4rec", 9, dict(dim=8, hidden=12, max_len=6)).eval()
a = torch.tensor([[0, 0, 1, 2, 3]]); wide = torch.tensor([[0, 0, 0, 1, 2, 3], [4, 5, 6, 7, 8, 9]])
with torch.no_grad():
    s_alone, s_wide = gru.score_all(a), gru.score_all(wide)[:1]
    h1, h2 = gru.encode(torch.tensor([[0, 1, 2, 3]])), gru.encode(torch.tensor([[0, 1, 2, 8]]))
(s_alone - s_wide)[:, 1:].abs().max(), (h1[:, :3] - h2[:, :3]).abs().max(), (h1[:, 3] - h2[:, 3]).abs().max()

# %%
test_close(s_alone[:, 1:], s_wide[:, 1:], eps=1e-6)
test_close(h1[:, :3], h2[:, :3], eps=1e-7); assert (h1[:, 3] - h2[:, 3]).abs().max() > 1e-4
test_eq(h1[0, 0], torch.zeros(8))  # padding positions are 0

# %% [markdown]
# **The paper's losses by hand** on a batch of two sequences with two negatives per position:

# %%
seqs = torch.tensor([[0, 1, 2], [3, 4, 5]]); pos = torch.tensor([[0, 2, 3], [4, 5, 6]])
neg = torch.tensor([[[0, 0], [7, 8], [9, 1]], [[1, 2], [6, 7], [8, 9]]]); b = TrainBatch(torch.arange(2), seqs, pos, neg)
with torch.no_grad():
    h = gru.encode(seqs); E = gru.output_embeddings(); v = pos != 0
    ri = (h[v] * E[pos[v]]).sum(-1, keepdim=True); rj = torch.einsum("nd,nkd->nk", h[v], E[neg[v]])
    by_hand = {"top1": (torch.sigmoid(rj - ri) + torch.sigmoid(rj ** 2)).mean(), "bpr": -F.logsigmoid(ri - rj).mean()}
    got = {}
    for o in by_hand: gru.cfg.objective = o; got[o] = gru.training_loss(b)
    gru.cfg.objective = "shared"
got, by_hand

# %%
for o in by_hand: test_close(got[o], by_hand[o] + gru.l2_penalty(), eps=1e-6)
gru.cfg.objective = "top1"
test_fail(lambda: gru.training_loss(TrainBatch(b.users, seqs, pos, None, kind="ce")), contains="train with the loss 'bce'")
gru.cfg.objective = "shared"


# %% [markdown]
# ## Caser
#
# Tang & Wang, *Personalized Top-N Sequential Recommendation via Convolutional Sequence Embedding*, WSDM 2018.
# The last $L$ items form an $L \times d$ "image" $E$. **Horizontal** filters of heights $h = 1..L$ ($n_h$ each,
# width $d$) slide over its rows, ReLU, and are max-pooled over time: union-level and point-level sequential
# patterns. **Vertical** filters ($n_v$ of them, $L \times 1$) take weighted sums of the rows. Their outputs,
# concatenated, pass dropout and a fully connected layer with ReLU to $z \in \mathbb{R}^d$; with the user vector
# $P_u$, $y = W'[z; P_u] + b'$ scores every item, with its own output table $W' \in \mathbb{R}^{N \times 2d}$ and bias
# $b'$. Training: every window of $L$ items predicts the next $T$ items against sampled negatives with the binary
# cross-entropy.
#
# Here every position $t$ of the trainer's batch is a window (the $L$ items up to $t$, zero rows before the
# sequence starts, as the authors' code pads), so one batch holds every window of its users. With the loss
# `bce`, position $t$ predicts its next `n_targets` items ($T$) against the position's negatives; with the other
# shared loss kinds, the next item only. The bias is the last column of the output table against a constant 1
# in the hidden state, so the shared scoring works unchanged. The graph plug-in acts on the input table $E$.
# Values from the paper and the authors' code (`graytowne/caser_pytorch`): $d = 50$, $L = 5$, $T = 3$,
# $n_v = 4$, $n_h = 16$, ReLU, dropout 0.5, 3 negatives, Adam lr 1e-3, L2 1e-6.

# %%
#| export
@dataclass
class CaserConfig(ModelConfig):
    "Caser settings: the shared ModelConfig fields plus the convolutions'."
    graph_mode: str = "none"  # graph plug-in off by default
    window: int = 5  # L: items each window sees (paper: 5)
    n_targets: int = 3  # T: next items a window predicts with the 'bce' loss (paper: 3)
    n_v: int = 4  # vertical filters (paper: 4)
    n_h: int = 16  # horizontal filters per height 1..L (paper: 16)
    l2: float = 1e-6  # L2 weight (the authors' code: 1e-6)

    def __post_init__(self):
        super().__post_init__()
        check(min(self.window, self.n_targets, self.n_v, self.n_h) >= 1,
              f"CaserConfig: window, n_targets, n_v, n_h must be >= 1; got {self.window}, {self.n_targets}, {self.n_v}, {self.n_h}.")


@register_model("caser", paper="Tang & Wang, Personalized Top-N Sequential Recommendation via Convolutional Sequence Embedding, WSDM 2018")
class Caser(SeqRecModel):
    "Convolutions over the last L items, concatenated with a user vector, scored by a separate output table with bias."
    config_class = CaserConfig
    needs_users = True

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):
        super().__init__(n_items, cfg, graph, n_users)
        c = self.cfg; d, L = c.dim, c.window
        self.item_table()  # E (N+1, d)
        self.user_emb = nn.Embedding(self.n_users, d)  # P (U, d)
        self.vertical = nn.Linear(L, c.n_v)  # n_v filters of shape (L, 1): weighted sums of the L rows
        self.horizontal = nn.ModuleList(nn.Linear(h * d, c.n_h) for h in range(1, L + 1))  # n_h filters of shape (h, d)
        self.drop = nn.Dropout(c.dropout)
        self.fc = nn.Linear(c.n_v * d + c.n_h * L, d)
        self.out_emb = nn.Embedding(n_items + 1, 2 * d, padding_idx=0)  # W' (N+1, 2d)
        self.out_bias = nn.Embedding(n_items + 1, 1, padding_idx=0)  # b' (N+1, 1)
        self.reset_parameters()

    @property
    def max_len(self) -> int: return self.cfg.max_len

    def reset_parameters(self) -> None:
        xavier_init_(self)
        nn.init.zeros_(self.out_bias.weight)
        self._cache = None

    def output_table(self) -> Tensor:  # (N+1, 2d + 1): [W', b']
        return torch.cat([self.out_emb.weight, self.out_bias.weight], 1)

    def _windows(self, seqs: Tensor, table: Tensor, where: Tensor) -> Tensor:  # -> (n, L, d)
        "The L x d window ending at each position selected by the (B, L_s) mask `where`."
        L = self.cfg.window
        ids = F.pad(seqs, (L - 1, 0))  # (B, L_s + L - 1)
        w = ids.unfold(1, L, 1)[where]  # (n, L) item ids of each window, 0 = before the sequence
        return F.embedding(w, table) * (w != 0)[..., None]  # (n, L, d)

    def _state(self, E: Tensor, users: Tensor) -> Tensor:  # (n, L, d), (n,) -> (n, 2d + 1)
        n, L, d = E.shape
        o_v = self.vertical(E.transpose(1, 2)).transpose(1, 2).reshape(n, -1)  # (n, n_v * d)
        o_h = [F.relu(conv(E.unfold(1, h, 1).transpose(2, 3).reshape(n, L - h + 1, h * d))).amax(1)  # (n, n_h)
               for h, conv in enumerate(self.horizontal, 1)]
        z = F.relu(self.fc(self.drop(torch.cat([o_v, *o_h], 1))))  # (n, d)
        return torch.cat([z, self.user_emb(users), z.new_ones(n, 1)], 1)  # (n, 2d + 1)

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L_s) -> (B, L_s, 2d + 1)
        valid = seqs != 0  # (B, L_s)
        h = self._state(self._windows(seqs, table, valid), users[:, None].expand_as(seqs)[valid])  # (n, 2d + 1)
        return h.new_zeros(*seqs.shape, h.shape[-1]).masked_scatter(valid[..., None], h)

    def encode_last(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, 2d + 1)
        last = torch.zeros_like(seqs, dtype=torch.bool); last[:, -1] = True
        return self._state(self._windows(seqs, table, last), users)

    def l2_penalty(self) -> Tensor:  # ()
        sq = sum(t.weight.square().sum() for t in (self.item_emb, self.user_emb, self.out_emb, self.out_bias))
        return self.cfg.l2 * sq

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        T = self.cfg.n_targets
        if batch.kind != "bce" or T == 1: return super().training_loss(batch)
        seqs, pos, neg = batch.seqs, batch.pos, batch.neg  # (B, L), (B, L), (B, L, K)
        if neg.ndim == 2: neg = neg[..., None]
        tgt = torch.stack([F.pad(pos[:, j:], (0, j)) for j in range(T)], -1)  # (B, L, T): the next T items, 0 past the end
        ids = self._check_ids(seqs, "seqs", tgt, "pos", neg, "neg")
        inp, out = self.tables(ids if self.restrict_to_batch else None)
        h = self.encode_with(seqs, inp, self._check_users(batch.users, seqs.shape[0]))  # (B, L, 2d + 1)
        valid = pos != 0
        hv, tv, nv = h[valid], tgt[valid], neg[valid]  # (n, D'), (n, T), (n, K)
        pos_logit = torch.einsum("nd,ntd->nt", hv, F.embedding(tv, out))  # (n, T)
        neg_logit = torch.einsum("nd,nkd->nk", hv, F.embedding(nv, out))  # (n, K)
        has = tv != 0
        return (-F.logsigmoid(pos_logit[has]).mean() - F.logsigmoid(-neg_logit).mean()) + self.l2_penalty()


# %% [markdown]
# **Windows**: with $L = 3$, the windows at the positions of `[0, 4, 5, 6]` hold the items up to each position,
# zero rows before the sequence starts.

# %%
seed_everything(0)
caser = build_model("caser", 9, dict(dim=4, window=3, n_targets=2, max_len=6), n_users=2)
seqs = torch.tensor([[0, 4, 5, 6], [1, 2, 3, 7]])
ids = F.pad(seqs, (2, 0)).unfold(1, 3, 1)  # what _windows looks up
ids[0]

# %%
test_eq(ids[0].tolist(), [[0, 0, 0], [0, 0, 4], [0, 4, 5], [4, 5, 6]])
test_eq(caser._windows(seqs, caser.item_emb.weight, seqs != 0).shape, (7, 3, 4))

# %% [markdown]
# **Only the last L items and the user matter**: changing an item more than $L$ positions back changes no score;
# changing the user does. The bias column of the output table is the learned $b'$. `encode_last` (one window
# per row) equals the last position of `encode`.

# %%
u = torch.tensor([0, 1])
caser.eval()
with torch.no_grad():
    s = caser.score_all(seqs, users=u)
    s_old = caser.score_all(torch.tensor([[0, 4, 5, 6], [8, 2, 3, 7]]), users=u)  # item 1 is 4 positions back
    s_user = caser.score_all(seqs, users=torch.tensor([1, 1]))
    full = caser.encode(seqs, users=u)[:, -1]; last = caser.encode_last(seqs, caser.item_embeddings(), u)
(s - s_old)[:, 1:].abs().max(), (s - s_user)[0, 1:].abs().max(), caser.output_embeddings().shape

# %%
test_eq(s, s_old); assert (s - s_user)[0, 1:].abs().max() > 1e-4
test_close(full, last, eps=1e-6); test_eq(caser.output_embeddings().shape, (10, 9))

# %% [markdown]
# **The multi-target loss by hand**: position $t$ predicts its next $T = 2$ items (the ones that exist) against
# its negatives.

# %%
pos = torch.tensor([[0, 5, 6, 8], [2, 3, 7, 9]]); neg = torch.tensor([[[0], [1], [2], [3]], [[4], [5], [6], [8]]])
batch = TrainBatch(u, seqs, pos, neg)
with torch.no_grad():
    h = caser.encode(seqs, users=u); W = caser.output_embeddings(); v = pos != 0
    tg = torch.stack([pos, F.pad(pos[:, 1:], (0, 1))], -1)
    lp = torch.einsum("nd,ntd->nt", h[v], W[tg[v]]); ln = torch.einsum("nd,nkd->nk", h[v], W[neg[v]])
    by_hand = -F.logsigmoid(lp[tg[v] != 0]).mean() - F.logsigmoid(-ln).mean() + caser.l2_penalty()
    got = caser.training_loss(batch)
got, by_hand

# %%
test_close(got, by_hand, eps=1e-6)
test_eq(int((tg[v] != 0).sum()), (3 * 2 - 1) + (4 * 2 - 1))  # 3 and 4 positions; the last of each row has one target
test_fail(lambda: caser.score_all(seqs), contains="pass users=")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
