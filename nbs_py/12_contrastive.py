# %% [markdown]
# # Contrastive sequential recommendation
# > CL4SRec: SASRec plus a contrastive term between two random augmentations (crop, mask, reorder) of each user's sequence.

# %%
#| default_exp contrastive

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
from sagerec.model import ModelConfig, SAGERec, TrainBatch, register_model

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import seed_everything
from sagerec.model import build_model

# %%
#| hide
torch.set_num_threads(1)  # tiny fixtures: one thread is faster and immune to a busy shared CPU


# %% [markdown]
# ## Augmentations
#
# Xie, Sun, Liu, Wu, Gao, Ding, Cui & Zhang, *Contrastive Learning for Sequential Recommendation*, ICDE 2022
# (CL4SRec). Three augmentations of a user's sequence $s = [v_1, \dots, v_n]$:
#
# - **crop** ($\eta$): a random contiguous sub-sequence of length $\lfloor \eta n \rfloor$ (at least 1);
# - **mask** ($\gamma$): $\lfloor \gamma n \rfloor$ random items replaced by the `[mask]` token (a learned vector, id $N + 1$);
# - **reorder** ($\beta$): a random contiguous sub-sequence of length $\lfloor \beta n \rfloor$ shuffled.
#
# They act on a left-padded batch at once (no loop over users) and keep the result left-padded. Each view of
# a sequence applies one augmentation drawn uniformly from the three.

# %%
#| export
def _lengths(seqs: Tensor) -> Tensor: return (seqs != 0).sum(1)  # (B,)

def crop(seqs: Tensor,  # (B, L) left-padded item ids
         ratio: float,  # eta: share of each sequence kept
        ) -> Tensor:  # (B, L) a random contiguous sub-sequence of floor(eta * n) items (>= 1), left-padded
    "Keep a random contiguous sub-sequence of each row."
    B, L = seqs.shape
    n = _lengths(seqs)
    c = (ratio * n).floor().long().clamp(min=1)  # (B,) items kept
    start = (torch.rand(B, device=seqs.device) * (n - c + 1).clamp(min=1)).floor().long()  # (B,) first kept item, 0..n-c
    j = torch.arange(L, device=seqs.device)[None] - (L - c)[:, None]  # (B, L) index in the crop, < 0 = padding
    src = (L - n + start)[:, None] + j  # (B, L) source column
    return seqs.gather(1, src.clamp(0, L - 1)).masked_fill(j < 0, 0)

def mask_items(seqs: Tensor,  # (B, L) left-padded item ids
               ratio: float,  # gamma: share of each sequence masked
               mask_id: int,  # id of the [mask] token (N + 1)
              ) -> Tensor:  # (B, L) floor(gamma * n) random items set to mask_id
    "Replace a random share of each row's items by the [mask] token."
    valid = seqs != 0
    m = (ratio * valid.sum(1)).floor().long()  # (B,)
    keys = torch.rand(seqs.shape, device=seqs.device).masked_fill(~valid, 2.0)  # padding sorts last
    rank = keys.argsort(1).argsort(1)  # (B, L) rank of each position among the row's random keys
    return seqs.masked_fill(valid & (rank < m[:, None]), mask_id)

def reorder(seqs: Tensor,  # (B, L) left-padded item ids
            ratio: float,  # beta: share of each sequence shuffled
           ) -> Tensor:  # (B, L) a random contiguous sub-sequence of floor(beta * n) items shuffled
    "Shuffle a random contiguous sub-sequence of each row."
    B, L = seqs.shape
    n = _lengths(seqs)
    r = (ratio * n).floor().long()  # (B,) items shuffled
    a = L - n + (torch.rand(B, device=seqs.device) * (n - r + 1).clamp(min=1)).floor().long()  # (B,) first column of the segment
    col = torch.arange(L, device=seqs.device)[None].float()  # (1, L)
    inside = (col >= a[:, None]) & (col < (a + r)[:, None])  # (B, L)
    keys = torch.where(inside, a[:, None] + torch.rand(B, L, device=seqs.device) * r[:, None], col)  # inside: random in [a, a + r)
    return seqs.gather(1, keys.argsort(1))

AUGMENTATIONS = ("crop", "mask", "reorder")

# %% [markdown]
# Two users, with 8 and 3 items:

# %%
seqs = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 9, 10, 11]])
seed_everything(0)
views = {"crop 0.5": crop(seqs, 0.5), "mask 0.5": mask_items(seqs, 0.5, mask_id=99), "reorder 0.7": reorder(seqs, 0.7)}
views

# %%
c = views["crop 0.5"]
test_eq((c != 0).sum(1).tolist(), [4, 1])  # floor(0.5 * 8) = 4, floor(0.5 * 3) = 1
s0 = c[0, -4:].tolist(); assert s0 == list(range(s0[0], s0[0] + 4))  # contiguous
test_eq(((views["mask 0.5"] == 99).sum(1)).tolist(), [4, 1])
assert ((views["mask 0.5"] == seqs) | (views["mask 0.5"] == 99)).all()

# %% [markdown]
# **Reorder keeps the item multiset** (and the padding in place), and moves only a contiguous segment of
# $\lfloor \beta n \rfloor$ items; crop keeps a contiguous run of the original items, in order. Checked on 500
# random rows of random lengths:

# %%
B, L = 500, 12
n = torch.randint(1, L + 1, (B,))
rows = torch.randint(1, 50, (B, L)) * (torch.arange(L)[None] >= (L - n)[:, None])
seed_everything(1)
re, cr = reorder(rows, 0.6), crop(rows, 0.4)
same_multiset = (re.sort(1).values == rows.sort(1).values).all(1)
moved = (re != rows).sum(1)
same_multiset.all().item(), int(moved.max()), int((0.6 * n).floor().max())

# %%
assert same_multiset.all() and ((re == 0) == (rows == 0)).all()
assert (moved <= (0.6 * n).floor().long()).all()  # only the segment moves
assert (re != rows).any()  # something was shuffled
for b in range(50):  # crop: the kept items appear in the row, contiguous and in order
    k = cr[b][cr[b] != 0].tolist(); r = rows[b][rows[b] != 0].tolist()
    assert any(r[i:i + len(k)] == k for i in range(len(r) - len(k) + 1)) and len(k) == max(1, int(0.4 * len(r)))


# %% [markdown]
# ## CL4SRec
#
# The encoder is SASRec's (this project's: `SAGERec` with no graph by default, so the graph plug-in works
# unchanged). For each user sequence two views $\tilde s^1, \tilde s^2$ are drawn; their representations
# $z^1, z^2$ are contrasted with the NT-Xent loss over the batch: for $2B$ views, each view's positive is the
# other view of the same sequence and its negatives are the other $2B - 2$ views,
# $\ell = -\log \frac{\exp(\mathrm{sim}(z^1_u, z^2_u)/\tau)}{\sum_{w \neq z^1_u} \exp(\mathrm{sim}(z^1_u, w)/\tau)}$, with
# $\mathrm{sim}$ the inner product. The training loss is the recommendation loss (the shared objective chosen by
# the trainer) plus $\lambda$ times the contrastive one.
#
# The representation of a view (`cl_repr`): `"last"`, the hidden state at its last position (the state the model
# scores with), or `"flatten"`, every position's state concatenated, as in the implementation of the ICLRec
# authors (Chen et al., WWW 2022), whose CL4SRec numbers the issue quotes. Paper values: $\lambda = 0.1$,
# $\tau = 1$, $d = 64$, 2 layers, 2 heads, batch 256; augmentation ratios as run by the ICLRec authors: crop
# $\eta = 0.2$, mask $\gamma = 0.7$, reorder $\beta = 0.2$. CL4SRec's Transformer is this project's SASRec encoder;
# `configs/models/cl4srec.yaml` runs it as the ICLRec code does (post-LayerNorm blocks, `norm="post"`; no √d
# scaling; random users per batch; `cl_repr="flatten"`), which puts it level with its published row on Beauty
# (the README's "Baselines"). This class's defaults (`cl_repr="last"`) are the first reading.

# %%
#| export
@dataclass
class CL4SRecConfig(ModelConfig):
    "CL4SRec settings: the shared ModelConfig fields (SASRec's encoder) plus the contrastive term's."
    graph_mode: str = "none"  # graph plug-in off by default
    cl_weight: float = 0.1  # lambda, weight of the contrastive loss (paper: 0.1)
    temperature: float = 1.0  # tau (paper: 1.0)
    crop: float = 0.2  # eta: share kept by crop (ICLRec authors' runs: 0.2)
    mask: float = 0.7  # gamma: share masked (ICLRec authors' runs: 0.7)
    reorder: float = 0.2  # beta: share reordered (ICLRec authors' runs: 0.2)
    cl_repr: str = "last"  # view representation: "last" position or "flatten" (every position)

    def __post_init__(self):
        super().__post_init__()
        check(self.cl_weight >= 0 and self.temperature > 0, f"CL4SRecConfig: cl_weight={self.cl_weight} must be >= 0 and temperature={self.temperature} > 0.")
        for k in ("crop", "mask", "reorder"): check(0 < getattr(self, k) <= 1, f"CL4SRecConfig.{k}={getattr(self, k)} must be in (0, 1].")
        check(self.cl_repr in ("last", "flatten"), f"CL4SRecConfig.cl_repr={self.cl_repr!r}: use 'last' or 'flatten'.")


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 1.0) -> Tensor:  # (B, D), (B, D) -> ()
    "NT-Xent: each view against the other view of its sequence, with the other 2B - 2 views of the batch as negatives."
    B = z1.shape[0]
    z = torch.cat([z1, z2])  # (2B, D)
    sim = (z @ z.T) / temperature  # (2B, 2B), inner product
    sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool, device=z.device), float("-inf"))  # a view is not its own negative
    target = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(z.device)  # (2B,)
    return F.cross_entropy(sim, target)


@register_model("cl4srec", paper="Xie et al., Contrastive Learning for Sequential Recommendation, ICDE 2022")
class CL4SRec(SAGERec):
    "SASRec's encoder and loss, plus lambda x NT-Xent between two augmented views of each sequence."
    config_class = CL4SRecConfig

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):
        super().__init__(n_items, cfg, graph, n_users)
        self.mask_emb = nn.Parameter(torch.empty(self.cfg.dim))  # the [mask] token of the mask augmentation, id N+1
        self.reset_parameters()

    @property
    def mask_id(self) -> int: return self.n_items + 1

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "mask_emb"): nn.init.normal_(self.mask_emb, std=self.cfg.dim ** -0.5)

    def augment(self, seqs: Tensor) -> Tensor:  # (B, L) -> (B, L)
        "One view per row: crop, mask or reorder, drawn uniformly per row."
        c = self.cfg
        which = torch.randint(0, 3, (seqs.shape[0], 1), device=seqs.device)  # (B, 1)
        views = (crop(seqs, c.crop), mask_items(seqs, c.mask, self.mask_id), reorder(seqs, c.reorder))
        return torch.where(which == 0, views[0], torch.where(which == 1, views[1], views[2]))

    def represent(self, views: Tensor, table: Tensor) -> Tensor:  # (B, L) -> (B, D) or (B, L * D)
        h = self.encode_with(views, torch.cat([table, self.mask_emb[None]]))  # (B, L, D)
        return h[:, -1] if self.cfg.cl_repr == "last" else h.flatten(1)

    def contrastive_loss(self, seqs: Tensor) -> Tensor:  # ()
        "NT-Xent between two random views of each row of `seqs`."
        inp, _ = self.tables(seqs.reshape(-1) if self.restrict_to_batch else None)
        return nt_xent(self.represent(self.augment(seqs), inp), self.represent(self.augment(seqs), inp), self.cfg.temperature)

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        main = super().training_loss(batch)
        return main + self.cfg.cl_weight * self.contrastive_loss(batch.seqs) if self.cfg.cl_weight else main


# %% [markdown]
# **NT-Xent by hand** on three pairs of 2-d views: each row's loss is the softmax cross-entropy of its partner
# among the other five views.

# %%
z1 = torch.tensor([[1., 0.], [0., 1.], [1., 1.]]); z2 = torch.tensor([[1., 0.2], [0.1, 1.], [0.5, 0.5]])
z = torch.cat([z1, z2]); S = z @ z.T
by_hand = torch.stack([-(S[i, (i + 3) % 6] - torch.logsumexp(S[i][torch.arange(6) != i], 0)) for i in range(6)]).mean()
nt_xent(z1, z2), by_hand

# %%
test_close(nt_xent(z1, z2), by_hand, eps=1e-6)
assert nt_xent(z1, z1 * 5) < nt_xent(z1, z1.flip(0) * 5)  # matching views give a lower loss

# %% [markdown]
# **The training loss is SASRec's plus $\lambda$ times the contrastive term**: with the same random draws, the
# difference between CL4SRec's loss and the plain SASRec loss of the same weights is $\lambda \cdot$ NT-Xent;
# with $\lambda = 0$ they are equal.

# %%
seqs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [0, 0, 8, 9]]); pos = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8], [0, 0, 9, 1]])
neg = torch.randint(1, 10, (3, 4, 1)) * (pos != 0)[..., None]
batch = TrainBatch(torch.arange(3), seqs, pos, neg)
seed_everything(0)
cl = build_model("cl4srec", 9, dict(dim=8, n_heads=2, max_len=5, dropout=0.0)).train()
sas = build_model("sasrec", 9, dict(dim=8, n_heads=2, max_len=5, dropout=0.0)); sas.load_state_dict(cl.state_dict(), strict=False)
seed_everything(3); total = cl.training_loss(batch)
seed_everything(3); main = sas.training_loss(batch); term = cl.contrastive_loss(seqs)
cl.cfg.cl_weight = 0.0; no_cl = cl.training_loss(batch); cl.cfg.cl_weight = 0.1
total.item(), main.item(), term.item(), no_cl.item()

# %%
test_close(total, main + 0.1 * term, eps=1e-5)
test_close(no_cl, main, eps=1e-6)
test_fail(lambda: CL4SRecConfig(cl_repr="mean"), contains="use 'last' or 'flatten'")

# %% [markdown]
# A few Adam steps (the same augmentations each step) lower the loss, with either view representation:

# %%
curves = {}
for rep in ("last", "flatten"):
    seed_everything(0); m = build_model("cl4srec", 9, dict(dim=8, n_heads=2, max_len=5, dropout=0.0, cl_repr=rep, cl_weight=1.0)).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2); curves[rep] = []
    for _ in range(6):
        seed_everything(1); l = m.training_loss(batch); opt.zero_grad(); l.backward(); opt.step(); curves[rep].append(round(l.item(), 4))
curves

# %%
for c in curves.values(): assert c[-1] < c[0]

# %%
#| hide
import nbdev; nbdev.nbdev_export()
