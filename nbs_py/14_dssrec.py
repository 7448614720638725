# %% [markdown]
# # DSSRec
# > Disentangled self-supervision (Ma et al., KDD 2020): besides predicting the next item, the representation of a sequence's past must find the representation of its future among the batch's, in the latent space and per intention, keeping only the intentions the two halves share.

# %%
#| default_exp dssrec

# %%
#| export
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from sagerec.core import check
from sagerec.model import ModelConfig, SAGERec, TrainBatch, register_model
from sagerec.s3rec import full_sequences

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import seed_everything


# %% [markdown]
# ## What the paper does, and how it is read here
#
# J. Ma, C. Zhou, H. Yang, P. Cui, X. Wang, W. Zhu, *Disentangled Self-Supervision in Sequential Recommenders*,
# KDD 2020 (doi 10.1145/3394486.3403091). (The issue calls it a NeurIPS 2020 paper; it appeared at KDD 2020.)
# No code from the authors is public; `abis330/DSSRec` is a third-party PyTorch reading that was consulted.
#
# * **seq2item**: the usual next-item objective on the sequence encoder's output (here the contract's loss on a
#   SASRec-style causal Transformer, as every baseline of this project).
# * **seq2seq in the latent space**: a training sequence is cut at a random point $t$ into a past $x_{1:t}$ and a
#   future $x_{t+1:n}$, both encoded by the same encoder. Instead of generating the future's items, the past's
#   representation must identify the future's *representation* among those of the other sequences in the batch
#   (InfoNCE).
# * **Disentangled intentions**: each encoded subsequence $z_{1..S}$ is summarised into K intention vectors with K
#   learned prototypes $p_k$: $P(k|i) = \mathrm{softmax}_k(\mathrm{LN}(z_i)\cdot\mathrm{LN}(p_k)/\sqrt D)$ says which
#   intention position $i$ serves, $P(i) = \mathrm{softmax}_i(\kappa_i\cdot q/\sqrt D)$ how much it matters (keys
#   $\kappa_i$ from $z_i$ plus a positional term, query $q$ from the last position), and
#   $u_k = \mathrm{LN}(\beta_k + \sum_i P(k|i)P(i)z_i)$ (separate $\beta$ for pasts and futures).
#   The seq2seq loss of intention k of sequence b is $-\log\frac{\exp(u_{bk}\cdot v_{bk}/\sqrt D)}{\sum_{b',k'}\exp(u_{bk}\cdot v_{b'k'}/\sqrt D)}$,
#   and **only the fraction `keep` of (sequence, intention) pairs with the lowest loss is trained**: a future may
#   hold intentions its past cannot predict, and those pairs are left out.
# * Total: seq2item + `seq2seq_weight` × seq2seq, trained jointly. Recommendations score with the encoder's last
#   state, exactly as the seq2item head is trained.
#
# Settings: K = 4 intentions, keep = 0.5 and the seq2seq weight 0.1 are this project's choices (the paper tunes
# them per dataset); encoder sizes are the project's shared baseline sizes (`configs/models/dssrec.yaml`).

# %%
#| export
@dataclass
class DSSRecConfig(ModelConfig):
    "Hyperparameters of DSSRec: the shared Transformer fields (SASRec's sizes for sparse Amazon data) plus the DSS settings."
    graph_mode: str = "none"    # graph plug-in off by default
    l2: float = 0.0             # squared-L2 weight on the item and position tables
    n_intents: int = 4          # K, latent intentions (prototypes)
    keep: float = 0.5           # share of (sequence, intention) pairs with the lowest seq2seq loss that are trained
    seq2seq_weight: float = 0.1 # weight of the seq2seq term next to the seq2item loss

    def __post_init__(self):
        super().__post_init__()
        check(self.n_intents >= 1 and 0 < self.keep <= 1, f"n_intents={self.n_intents} must be >= 1 and keep={self.keep} in (0, 1].")
        check(self.seq2seq_weight >= 0, f"seq2seq_weight={self.seq2seq_weight} must be >= 0.")


# %% [markdown]
# ## Cutting sequences into a past and a future
#
# `full_sequences` (from `sagerec.s3rec`) gives each row's whole training sequence; `split_past_future` cuts each
# row at a uniform random point (at least one item on each side) and returns both halves left-padded, in the row's width.

# %%
#| export
def split_past_future(full: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:  # (B, L) -> 2 x (B, L)
    "Cut every left-padded row (>= 2 items) at a random point: (past, future), both left-padded."
    B, L = full.shape
    n = (full != 0).sum(1)  # (B,)
    check(bool((n >= 2).all()), "split_past_future needs at least 2 items per row.")
    t = 1 + (torch.rand(B, generator=generator, device=full.device) * (n - 1)).long().clamp(max=n - 2)  # (B,) past length in 1..n-1
    cols = torch.arange(L, device=full.device)[None]  # (1, L)
    src = cols - (n - t)[:, None]  # (B, L) past item shown at each column
    past = full.gather(1, src.clamp(min=0)) * (src >= 0)
    future = full * (cols >= (L - (n - t))[:, None])
    return past, future


# %%
full = torch.tensor([[0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]])
past, future = split_past_future(full, torch.Generator().manual_seed(0))
past, future

# %%
for b in range(2):
    p, f = past[b][past[b] != 0].tolist(), future[b][future[b] != 0].tolist()
    test_eq(p + f, full[b][full[b] != 0].tolist()); assert p and f


# %% [markdown]
# ## The intention layer

# %%
#| export
class IntentionLayer(nn.Module):
    "K intention vectors of an encoded subsequence: prototype clustering P(k|i) x position weighting P(i)."
    def __init__(self, dim: int, n_intents: int, max_len: int):
        super().__init__()
        self.prototypes = nn.Parameter(torch.empty(n_intents, dim))  # (K, D)
        self.alpha = nn.Parameter(torch.zeros(max_len, dim))  # positional term of keys and query (right-aligned)
        self.w = nn.Linear(dim, dim)
        self.b_query = nn.Parameter(torch.zeros(dim))
        self.beta = nn.Parameter(torch.zeros(2, n_intents, dim))  # intention biases: [0] pasts, [1] futures
        self.ln_z, self.ln_p, self.ln_k, self.ln_q, self.ln_out = (nn.LayerNorm(dim) for _ in range(5))

    def forward(self, z: Tensor, valid: Tensor, future: bool) -> tuple[Tensor, Tensor]:  # (B, S, D), (B, S) -> (B, K, D), (B, S, K)
        D, S = z.shape[-1], z.shape[1]
        p_k_i = torch.softmax(self.ln_z(z) @ self.ln_p(self.prototypes).T / math.sqrt(D), dim=-1)  # (B, S, K)
        a = self.alpha[self.alpha.shape[0] - S:]  # (S, D)
        kt = self.ln_k(z + a)  # (B, S, D)
        keys = kt + F.relu(self.w(kt))  # (B, S, D)
        q = self.ln_q(self.b_query + a[-1] + z[:, -1])  # (B, D) the last column is always a real item
        p_i = torch.softmax(((keys @ q[..., None]).squeeze(-1) / math.sqrt(D)).masked_fill(~valid, float("-inf")), dim=-1)  # (B, S)
        u = self.ln_out(self.beta[int(future)] + torch.einsum("bsk,bs,bsd->bkd", p_k_i, p_i, z))  # (B, K, D)
        return u, p_k_i


# %%
#| export
def seq2seq_loss(u: Tensor, v: Tensor, keep: float) -> tuple[Tensor, Tensor]:  # (B, K, D), (B, K, D) -> (), (B, K) bool
    "InfoNCE of each (past b, intention k) against all B*K future intention vectors; mean over the `keep` lowest."
    B, K, D = u.shape
    logits = torch.einsum("bkd,cjd->bkcj", u, v).reshape(B, K, B * K) / math.sqrt(D)  # (B, K, B*K)
    target = (torch.arange(B, device=u.device)[:, None] * K + torch.arange(K, device=u.device)).reshape(-1)  # (B*K,)
    per = F.cross_entropy(logits.reshape(B * K, B * K), target, reduction="none").reshape(B, K)  # (B, K)
    n_keep = max(1, int(math.floor(keep * B * K)))
    kept = torch.zeros(B * K, dtype=torch.bool, device=u.device)
    kept[per.detach().reshape(-1).topk(n_keep, largest=False).indices] = True
    return per.reshape(-1)[kept].mean(), kept.reshape(B, K)


# %% [markdown]
# With matching past and future vectors the loss is low; `keep` trains only the best-matched pairs:

# %%
g = torch.Generator().manual_seed(0)
u = F.normalize(torch.randn(3, 2, 16, generator=g), dim=-1) * 8
v = u.clone(); v[0, 1] = -v[0, 1]  # sequence 0's second intention does not carry over to its future
loss_all, kept_all = seq2seq_loss(u, v, keep=1.0)
loss_half, kept_half = seq2seq_loss(u, v, keep=0.5)
loss_all, loss_half, kept_half

# %%
assert loss_half < loss_all and not kept_half[0, 1]  # the unpredictable intention is left out
test_eq(int(kept_half.sum()), 3); test_eq(int(kept_all.sum()), 6)


# %% [markdown]
# ## The model

# %%
#| export
@register_model("dssrec", paper="Ma et al., Disentangled Self-Supervision in Sequential Recommenders, KDD 2020")
class DSSRec(SAGERec):
    "DSSRec (Ma et al., KDD 2020): a causal Transformer trained with seq2item plus disentangled latent seq2seq."
    config_class = DSSRecConfig

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):
        super().__init__(n_items, cfg, graph, n_users)  # item table (+ graph plug-in) and the shared Transformer
        self.intentions = IntentionLayer(self.cfg.dim, self.cfg.n_intents, self.cfg.max_len)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "intentions"):
            nn.init.xavier_uniform_(self.intentions.prototypes)
            for p in (self.intentions.alpha, self.intentions.b_query, self.intentions.beta): nn.init.zeros_(p)

    def seq2seq(self, seqs: Tensor, pos: Tensor) -> tuple[Tensor, dict]:
        "The disentangled seq2seq loss of a batch (a random cut per row) and what it used."
        full = full_sequences(seqs, pos, self.cfg.max_len)  # (B, L')
        past, future = split_past_future(full)
        table = self.tables()[0]  # (N+1, D) graph-enhanced when the plug-in is on
        u, pu = self.intentions(self.encode_with(past, table), past != 0, future=False)  # (B, K, D)
        v, pv = self.intentions(self.encode_with(future, table), future != 0, future=True)  # (B, K, D)
        loss, kept = seq2seq_loss(u, v, self.cfg.keep)
        return loss, dict(past=past, future=future, u=u, v=v, kept=kept)

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        "seq2item (the trainer's next-item loss) + `seq2seq_weight` x disentangled seq2seq."
        rec = super().training_loss(batch)
        if self.cfg.seq2seq_weight == 0 or batch.seqs.shape[0] < 2: return rec
        return rec + self.cfg.seq2seq_weight * self.seq2seq(batch.seqs, batch.pos)[0]


# %% [markdown]
# ## A tiny DSSRec

# %%
seed_everything(0)
cfg = DSSRecConfig(dim=8, n_blocks=1, n_heads=2, dropout=0.0, max_len=6, n_intents=2)
model = DSSRec(12, cfg)
seqs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8], [0, 9, 10, 11, 12], [0, 0, 0, 1, 3]])
pos = torch.tensor([[0, 0, 2, 3, 4], [5, 6, 7, 8, 9], [0, 10, 11, 12, 1], [0, 0, 0, 3, 5]])
neg = torch.randint(1, 13, pos.shape) * (pos != 0)
batch = TrainBatch(torch.arange(4), seqs, pos, neg)
s2s, info = model.seq2seq(seqs, pos)
info["u"].shape, info["kept"], s2s

# %%
test_eq(info["u"].shape, (4, 2, 8)); test_eq(int(info["kept"].sum()), 4)  # keep = 0.5 of 4 x 2 pairs
test_eq(info["past"].shape[1], 6)  # 5 inputs + the last target, within max_len
with torch.no_grad(): test_eq(model.score_all(seqs).shape, (4, 13))

# %% [markdown]
# **Training lowers both terms** on the toy batch.

# %%
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
torch.manual_seed(0)
hist = []
for _ in range(40):
    opt.zero_grad(); l = model.training_loss(batch); l.backward(); opt.step()
    with torch.no_grad(): torch.manual_seed(1); hist.append((model.loss(seqs, pos, neg).item(), model.seq2seq(seqs, pos)[0].item()))
hist[0], hist[-1]

# %%
assert hist[-1][0] < hist[0][0] and hist[-1][1] < hist[0][1]
test_fail(lambda: DSSRecConfig(keep=0), contains="keep=0")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
