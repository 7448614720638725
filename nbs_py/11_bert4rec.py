# %% [markdown]
# # BERT4Rec
# > A bidirectional Transformer trained with the cloze objective (predict randomly masked items from both sides), scored by appending a mask token to the sequence.

# %%
#| default_exp bert4rec

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
from sagerec.model import ModelConfig, SeqRecModel, TrainBatch, register_model

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import seed_everything
from sagerec.model import build_model, xavier_init_

# %%
#| hide
torch.set_num_threads(1)  # tiny fixtures: one thread is faster and immune to a busy shared CPU


# %% [markdown]
# ## The model
#
# Sun, Liu, Wu, Pei, Lin, Ou & Jiang, *BERT4Rec: Sequential Recommendation with Bidirectional Encoder
# Representations from Transformer*, CIKM 2019.
#
# - **Encoder**: item embedding + learned positional embedding, LayerNorm and dropout, then $L$ post-LayerNorm
#   Transformer layers (multi-head attention, GELU feed-forward of width $4d$) with **no causal mask**: every
#   position attends to every real item of the sequence, before and after it.
# - **Output**: $P(v) = \mathrm{softmax}(\mathrm{GELU}(h W^P + b^P) E^\top + b^O)$, with the input item table $E$
#   shared and a bias per item. Here the bias is the last column of the output table against a constant 1 in
#   the hidden state, so the shared scoring works unchanged.
# - **Cloze objective**: each item of a training sequence is replaced by the `[mask]` token with probability
#   $\rho$ and predicted from the rest (negative log-likelihood of the softmax over all items: the shared loss
#   `ce`; `bce` and the other shared kinds score the masked items against the trainer's negatives instead). The
#   paper also trains on sequences whose **last item only** is masked, to match prediction: a share
#   `last_mask_share` of the rows are such (the paper does not give the share; ours: 0.1).
# - **Prediction**: the `[mask]` token is appended to the sequence (dropping its oldest item when it is
#   already `max_len` long); its output scores the next item.
#
# Paper values (§4.3-4.4): $d = 64$, 2 layers, 2 heads, dropout 0.1, max length 50 on Beauty, $\rho = 0.6$ on
# Beauty, Adam lr 1e-4 with linear decay, L2 0.01, batch 256, truncated-normal initialisation in $[-0.02, 0.02]$.
# The trainer here has no LR warm-up/decay and its L2 is a loss term on the embedding tables (`l2`), not the
# paper's decoupled weight decay: `configs/models/bert4rec.yaml` records what it uses. The `[mask]` token is a
# learned vector outside the item table, so the graph plug-in acts on the item table alone.

# %%
#| export
@dataclass
class BERT4RecConfig(ModelConfig):
    "BERT4Rec settings (defaults: the paper's for Beauty) on top of the shared ModelConfig fields."
    graph_mode: str = "none"  # graph plug-in off by default
    dim: int = 64  # d (paper: 64)
    n_blocks: int = 2  # Transformer layers (paper: 2)
    n_heads: int = 2  # heads (paper: 2)
    dropout: float = 0.1  # (paper: 0.1)
    l2: float = 0.0  # L2 on the embedding tables (the paper's 0.01 is a decoupled weight decay, not available here)
    mask_prob: float = 0.6  # rho: share of the items masked in training (paper: 0.6 on Beauty)
    last_mask_share: float = 0.1  # share of rows with only their last item masked (paper: used, share not given; ours)
    ffn_mult: int = 4  # feed-forward width = ffn_mult * d (paper: 4)

    def __post_init__(self):
        super().__post_init__()
        check(0 < self.mask_prob < 1 and 0 <= self.last_mask_share <= 1 and self.ffn_mult >= 1,
              f"BERT4RecConfig: mask_prob={self.mask_prob} must be in (0, 1), last_mask_share={self.last_mask_share} in [0, 1], ffn_mult >= 1.")


@register_model("bert4rec", paper="Sun et al., BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations from Transformer, CIKM 2019")
class BERT4Rec(SeqRecModel):
    "Bidirectional Transformer with a [mask] token, trained by the cloze objective."
    config_class = BERT4RecConfig

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):
        super().__init__(n_items, cfg, graph, n_users)
        c = self.cfg; d = c.dim
        self.item_table()  # E (N+1, d)
        self.mask_emb = nn.Parameter(torch.zeros(d))  # the [mask] token, item id N+1
        self.pos_emb = nn.Embedding(c.max_len, d)
        self.ln_in, self.drop = nn.LayerNorm(d), nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(d, c.n_heads, c.ffn_mult * d, c.dropout, activation="gelu", batch_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.n_blocks, enable_nested_tensor=False)
        self.head = nn.Linear(d, d)  # W^P, b^P
        self.out_bias = nn.Embedding(n_items + 1, 1, padding_idx=0)  # b^O
        self.reset_parameters()

    @property
    def mask_id(self) -> int: return self.n_items + 1
    @property
    def max_len(self) -> int: return self.cfg.max_len

    def reset_parameters(self) -> None:
        "Truncated normal in [-0.02, 0.02] for every weight (the paper), zero biases, LayerNorm at (1, 0)."
        for name, p in self.named_parameters():
            if p.ndim >= 2 or name == "mask_emb": nn.init.trunc_normal_(p, std=0.02, a=-0.02, b=0.02)
            else: nn.init.zeros_(p)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm): m.reset_parameters()
        with torch.no_grad(): self.item_emb.weight[0].zero_(); self.out_bias.weight.zero_()
        self._cache = None

    def compute_tables(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (N+1, d), (N+1, d + 1)
        inp, out = super().compute_tables(rows)
        return inp, torch.cat([out, self.out_bias.weight], 1)  # [E, b^O]

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, d + 1)
        "Bidirectional encoding; id N+1 is the [mask] token."
        L, M = seqs.shape[1], self.cfg.max_len
        check(L <= M, f"The batch has {L} positions but the model has max_len={M}: keep only the last {M} items.")
        valid = seqs != 0  # (B, L)
        x = F.embedding(seqs, torch.cat([table, self.mask_emb[None]]))  # (B, L, d)
        x = self.drop(self.ln_in(x + self.pos_emb.weight[M - L:]))  # right-aligned positions
        h = self.blocks(x, src_key_padding_mask=~valid)  # (B, L, d), attends to every real item
        z = F.gelu(self.head(h))  # (B, L, d)
        return torch.cat([z, torch.ones_like(z[..., :1])], -1) * valid[..., None]  # (B, L, d + 1), 0 at padding

    def encode_last(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, d + 1)
        "Append [mask] (dropping the oldest item at max_len) and read its output."
        x = torch.cat([seqs, torch.full_like(seqs[:, :1], self.mask_id)], 1)[:, -self.cfg.max_len:]  # (B, L')
        return self.encode_with(x, table)[:, -1]

    def l2_penalty(self) -> Tensor:  # ()
        return self.cfg.l2 * (self.item_emb.weight.square().sum() + self.pos_emb.weight.square().sum())

    def cloze(self, seqs: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # (B, L') each
        "The training sequences (inputs + last target, last max_len items), their masked version and the labels (0 = not masked)."
        full = torch.cat([seqs, pos[:, -1:]], 1)[:, -self.cfg.max_len:]  # (B, L') every training item of the row
        valid = full != 0
        masked = valid & (torch.rand(full.shape, device=full.device) < self.cfg.mask_prob)  # (B, L')
        last_only = torch.rand(full.shape[0], device=full.device) < self.cfg.last_mask_share  # (B,)
        masked[last_only] = False
        masked[:, -1] |= last_only | ~masked.any(1)  # last-item rows, and rows that drew no mask at all
        return full, full.masked_fill(masked, self.mask_id), full * masked

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        "The cloze objective: the shared loss kind at the masked positions."
        full, inp_seq, labels = self.cloze(batch.seqs, batch.pos)
        neg = batch.neg
        if batch.kind == "bce":  # per-position negatives follow the shift by one
            if neg.ndim == 2: neg = neg[..., None]
            neg = torch.cat([neg, neg[:, -1:]], 1)[:, -full.shape[1]:]  # (B, L', K), non-zero at real items
        ids = torch.cat([full.reshape(-1)] + ([neg.reshape(-1)] if neg is not None else []))
        inp, out = self.tables(ids if self.restrict_to_batch and batch.kind != "ce" else None)
        h = self.encode_with(inp_seq, inp)  # (B, L', d + 1)
        return self.objective(h, out, labels, neg, batch.kind, batch.logq) + self.l2_penalty()


# %% [markdown]
# ## The cloze batch
#
# Two training rows (inputs and targets as the trainer gives them). The training sequence of each row is its
# inputs plus its last target; about $\rho$ of its items become `[mask]` (id $N + 1 = 10$) and are the labels;
# every row has at least one mask.

# %%
seed_everything(0)
bert = build_model("bert4rec", 9, dict(dim=8, n_heads=2, max_len=6, last_mask_share=0.0))
seqs = torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]]); pos = torch.tensor([[0, 0, 2, 3, 4], [5, 6, 7, 8, 9]])
full, inp_seq, labels = bert.cloze(seqs, pos)
full, inp_seq, labels

# %%
test_eq(full.tolist(), [[0, 0, 1, 2, 3, 4], [4, 5, 6, 7, 8, 9]])
test_eq(inp_seq[labels != 0], torch.full((int((labels != 0).sum()),), 10))  # masked positions hold [mask]...
test_eq(labels[labels != 0], full[labels != 0]); test_eq(inp_seq[labels == 0], full[labels == 0])  # ...and their items are the labels
assert (labels != 0).any(1).all() and (labels[full == 0] == 0).all()

# %% [markdown]
# Over many rows the masked share is $\rho$, and with `last_mask_share = 1` only the last item is masked:

# %%
many = torch.randint(1, 10, (2000, 5))
share = (bert.cloze(many, many)[2] != 0).float().mean().item()
bert.cfg.last_mask_share = 1.0; last = bert.cloze(many, many)[2]; bert.cfg.last_mask_share = 0.0
share, (last[:, :-1] != 0).sum().item(), (last[:, -1] != 0).all().item()

# %%
assert abs(share - 0.6) < 0.02
test_eq((last[:, :-1] != 0).sum().item(), 0); assert (last[:, -1] != 0).all()

# %% [markdown]
# ## Bidirectional attention sees the future; SASRec's causal attention does not
#
# Change the last item of a sequence and look at the hidden states of the earlier positions: BERT4Rec's move,
# SASRec's (the causal no-graph model of `sagerec.model`) stay exactly the same. (Both get Xavier-scale random
# weights here: with the paper's initialisation, of size 0.02, the change is real but tiny.) The shown number is
# the largest change at positions 1-3, relative to the largest hidden value there.

# %%
a, b = torch.tensor([[0, 1, 2, 3, 4]]), torch.tensor([[0, 1, 2, 3, 9]])
seed_everything(0)
pair = {"bert4rec": build_model("bert4rec", 9, dict(dim=8, n_heads=2, max_len=6)), "sasrec": build_model("sasrec", 9, dict(dim=8, n_heads=2, max_len=6))}
moved = {}
for name, m in pair.items():
    xavier_init_(m); m.eval()
    with torch.no_grad(): ha, hb = m.encode(a)[0, 1:4], m.encode(b)[0, 1:4]
    moved[name] = ((ha - hb).abs().max() / ha.abs().max()).item()
moved

# %%
assert moved["bert4rec"] > 0.01
test_eq(moved["sasrec"], 0.0)

# %% [markdown]
# ## Scores
#
# `score_all` appends `[mask]` and reads its output: the same as encoding the sequence with the mask by hand. A
# full-length sequence drops its oldest item to make room. The output table is the item table plus the bias column.

# %%
bert.eval()
with torch.no_grad():
    s = bert.score_all(seqs)  # (B, N+1)
    by_hand = bert.encode_with(torch.cat([seqs, torch.full((2, 1), 10)], 1), bert.item_embeddings())[:, -1] @ bert.output_embeddings().T
    full_len = torch.tensor([[1, 2, 3, 4, 5, 6]])
    s_full = bert.score_all(full_len); s_cut = bert.score_all(full_len[:, 1:])
s.shape, bert.output_embeddings().shape, (s - by_hand)[:, 1:].abs().max()

# %%
test_close(s[:, 1:], by_hand[:, 1:], eps=1e-5); assert torch.isinf(s[:, 0]).all()
test_close(s_full[:, 1:], s_cut[:, 1:], eps=1e-5)
test_eq(bert.output_embeddings().shape, (10, 9))

# %% [markdown]
# ## Training
#
# The loss with every shared kind on one batch, then a few Adam steps on the full-softmax cloze loss (the same
# masks each step) lower it.

# %%
neg = torch.randint(1, 10, (2, 5, 2)) * (pos != 0)[..., None]
batch = TrainBatch(torch.tensor([0, 1]), seqs, pos, neg, kind="ce")
bert.train(); seed_everything(0)
negs = {"bce": neg, "ce": None, "sampled_softmax": torch.tensor([1, 3, 5, 7])}  # per position, none, a shared pool
kinds = {k: bert.training_loss(TrainBatch(batch.users, seqs, pos, n, kind=k)).item() for k, n in negs.items()}
opt = torch.optim.Adam(bert.parameters(), lr=1e-2); losses = []
for _ in range(6):
    seed_everything(1); l = bert.training_loss(batch); opt.zero_grad(); l.backward(); opt.step(); losses.append(round(l.item(), 4))
kinds, losses

# %%
assert all(torch.isfinite(torch.tensor(v)) for v in kinds.values())
assert losses[-1] < losses[0]
test_fail(lambda: BERT4RecConfig(mask_prob=1.0), contains="mask_prob=1.0")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
