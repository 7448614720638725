# %% [markdown]
# # S3-Rec
# > Self-supervised pre-training on item attributes (Zhou et al., CIKM 2020): four mutual-information objectives (AAP, MIP, MAP, SP) over a bidirectional Transformer, then next-item fine-tuning of the same weights; plus the item attributes every attribute-aware model reads.

# %%
#| default_exp s3rec

# %%
#| export
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from sagerec.core import check
from sagerec.encoder import Packing
from sagerec.model import ModelConfig, SAGERec, TrainBatch, register_model

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import seed_everything
from sagerec.data import load_dataset

# %% [markdown]
# ## Item attributes
#
# S3-Rec's attributes of an Amazon item are its categories and its brand (ML-1M: the genres). This project keeps
# them in each item's prompt (`sagerec.data`: `"Title: ... Categories: a; b. Brand: X."`), so `prompt_fields` reads
# the fields back (the keys are the data stage's fixed keys; a title that itself contained `". Brand: "` would be
# misread, which no Beauty title does), and `ItemAttributes` numbers the values. As in S3-Rec's preprocessed data,
# values that fewer than `min_items` items share are dropped (S3-Rec's Beauty attributes are exactly those shared
# by at least 5 items; see the data folder's README). Brands get a `brand:` prefix so that a brand and a category
# of the same name stay apart.

# %%
#| export
_KEYS = ("Title", "Description", "Categories", "Brand", "Genres")
_FIELD = re.compile(r"(?:^|(?<=[.!?]) )(" + "|".join(_KEYS) + r"): ")

def prompt_fields(prompt: str) -> dict[str, str]:
    "The `key: value.` fields of an item prompt (`sagerec.data.kv_prompt`'s format), final period removed."
    cuts = list(_FIELD.finditer(prompt or ""))
    out = {}
    for m, nxt in zip(cuts, cuts[1:] + [None]):
        v = prompt[m.end():nxt.start() if nxt else len(prompt)].strip()
        out[m.group(1)] = v[:-1] if v.endswith(".") else v
    return out

@dataclass
class ItemAttributes:
    "Attribute ids per item, in CSR form over items 0..N (item 0, padding, has none)."
    names: list[str]       # attribute id a -> its name
    ptr: np.ndarray        # (N+2,) item i's attributes are ids[ptr[i]:ptr[i+1]]
    ids: np.ndarray        # (nnz,) attribute ids

    @property
    def n_attributes(self) -> int: return len(self.names)
    @property
    def n_items(self) -> int: return len(self.ptr) - 2

    def of(self, item: int) -> list[str]:
        "The attribute names of `item`."
        return [self.names[a] for a in self.ids[self.ptr[item]:self.ptr[item + 1]]]

    def multi_hot(self) -> Tensor:  # (N+1, A) bool
        "The item x attribute matrix."
        m = torch.zeros(self.n_items + 1, self.n_attributes, dtype=torch.bool)
        rows = np.repeat(np.arange(self.n_items + 1), np.diff(self.ptr))
        m[torch.from_numpy(rows), torch.from_numpy(self.ids)] = True
        return m

    @classmethod
    def from_lists(cls, per_item: list[list[str]], min_items: int = 1) -> ItemAttributes:
        "From attribute names per item 1..N (`per_item[0]` is item 1), keeping names shared by >= `min_items` items."
        counts: dict[str, int] = {}
        for names in per_item:
            for n in dict.fromkeys(names): counts[n] = counts.get(n, 0) + 1
        names = [n for n, c in counts.items() if c >= min_items]
        index = {n: a for a, n in enumerate(names)}
        rows = [[]] + [[index[n] for n in dict.fromkeys(item) if n in index] for item in per_item]
        ptr = np.zeros(len(rows) + 1, np.int64); np.cumsum([len(r) for r in rows], out=ptr[1:])
        return cls(names, ptr, np.array([a for r in rows for a in r], dtype=np.int64))

def item_attributes(ds, min_items: int = 5) -> ItemAttributes:
    "Categories and brand (Amazon) or genres (ML-1M) of every item of `ds` (a SeqDataset or its `items` table), as S3-Rec's attributes."
    items = ds if isinstance(ds, pd.DataFrame) else ds.items
    per_item = []
    for p in items["prompt"]:
        f = prompt_fields(p)
        cats = [c for c in (f.get("Categories") or f.get("Genres") or "").split("; ") if c]
        per_item.append(cats + ([f"brand:{f['Brand']}"] if f.get("Brand") else []))
    attrs = ItemAttributes.from_lists(per_item, min_items)
    check(attrs.n_attributes > 0, f"No attribute is shared by {min_items} or more items; lower min_items.")
    return attrs


# %%
prompt_fields("Title: Nail File, 2 pack. Categories: Tools & Accessories; Nail Tools. Brand: Revlon.")

# %%
test_eq(prompt_fields("Title: Wow! Brand: Acme Inc."), {"Title": "Wow!", "Brand": "Acme Inc"})
test_eq(prompt_fields("Title: The Matrix (1999). Genres: Action; Sci-Fi."), {"Title": "The Matrix (1999)", "Genres": "Action; Sci-Fi"})
test_eq(prompt_fields(""), {})
toy_attrs = ItemAttributes.from_lists([["Makeup", "brand:OPI"], ["Makeup", "Nails"], ["Skin"]], min_items=2)
test_eq(toy_attrs.names, ["Makeup"]); test_eq(toy_attrs.of(2), ["Makeup"]); test_eq(toy_attrs.of(3), [])
test_eq(toy_attrs.multi_hot().tolist(), [[False], [True], [True], [False]])

# %% [markdown]
# On `beauty-mini` (1,848 items), with S3-Rec's threshold of 5 items per attribute:

# %%
mini = load_dataset("beauty-mini")
attrs = item_attributes(mini)
per_item = np.diff(attrs.ptr)[1:]
pd.Series({"attributes": attrs.n_attributes, "brands": sum(n.startswith("brand:") for n in attrs.names),
           "items with none": int((per_item == 0).sum()), "mean per item": round(float(per_item.mean()), 2)}), attrs.of(2)

# %%
test_eq(attrs.of(2)[:2], ["Tools & Accessories", "Makeup Brushes & Tools"])
assert attrs.n_attributes > 50 and per_item.mean() > 2
test_fail(lambda: item_attributes(mini, min_items=10**6), contains="lower min_items")


# %% [markdown]
# ## What S3-Rec does, and how it is read here
#
# K. Zhou, H. Wang, W. X. Zhao, Y. Zhu, S. Wang, F. Zhang, Z. Wang, J.-R. Wen, *S3-Rec: Self-Supervised Learning for
# Sequential Recommendation with Mutual Information Maximization*, CIKM 2020 (doi 10.1145/3340531.3411954); official
# code `aHuiWang/CIKM2020-S3Rec` (read, not copied). Pre-training runs a **bidirectional** Transformer over a
# user's sequence in which items are masked with probability 0.2, and maximises four mutual informations, each
# through a bilinear score $\sigma(W h \cdot e)$:
#
# | objective | positions | predicts | loss |
# |---|---|---|---|
# | AAP, associated attribute prediction | unmasked items | the item's own attributes | BCE over all attributes |
# | MIP, masked item prediction | masked items | the hidden item vs a sampled one | $-\log\sigma(s^+ - s^-)$ |
# | MAP, masked attribute prediction | masked items | the hidden item's attributes | BCE over all attributes |
# | SP, segment prediction | a masked stretch | the stretch vs another user's stretch | $-\log\sigma(s^+ - s^-)$ |
#
# Pre-training loss $0.2\,\mathrm{AAP} + \mathrm{MIP} + \mathrm{MAP} + 0.5\,\mathrm{SP}$ (the official weights). Then the
# same item table, positions and Transformer are fine-tuned with a causal mask on next-item BCE with one negative
# per position, which is this project's contract loss. Attribute BCE is summed over attributes and averaged over
# positions; the pair losses are averaged over positions.
#
# **What differs here.** (1) The project's pre-LayerNorm Transformer (`sagerec.encoder`), set to S3-Rec's block recipe
# (FFN of width 4d with GELU, no dropout after the activation, N(0, 0.02) initialisation), where S3-Rec's BERT block
# puts LayerNorm after each residual; every Transformer baseline shares one encoder. (2) One pre-training
# example per user and epoch (the whole training sequence, `seq[:-2]`), where the official code adds every prefix of
# it as a further example, so one epoch here is fewer pre-training steps than one of theirs. (3) Each objective is
# averaged over its positions where the official code sums over them (and over the batch). (4) MIP negatives and the negative segment are
# drawn from the batch (uniform items; another row's items at the same columns) rather than from the whole data.

# %%
#| export
@dataclass
class S3RecConfig(ModelConfig):
    "S3-Rec: the shared Transformer fields at S3-Rec's values, plus the pre-training settings (the official code's)."
    dim: int = 64             # hidden size (S3-Rec: 64)
    n_heads: int = 2          # attention heads (S3-Rec: 2)
    dropout: float = 0.5      # hidden and attention dropout (S3-Rec: 0.5)
    ffn_mult: int = 4         # FFN width as a multiple of dim (S3-Rec: 4)
    activation: str = "gelu"  # FFN activation (S3-Rec: GELU)
    ffn_inner_dropout: bool = False  # no dropout after the FFN activation (BERT-style block)
    init: str = "normal"      # N(0, 0.02) initialisation (S3-Rec)
    scale_input: bool = False # item + position embeddings are not scaled by sqrt(d) (S3-Rec)
    l2: float = 0.0           # (S3-Rec: none)
    graph_mode: str = "none"  # graph plug-in off by default
    mask_p: float = 0.2       # share of items masked in pre-training (S3-Rec: 0.2)
    aap_weight: float = 0.2   # (S3-Rec: 0.2)
    mip_weight: float = 1.0   # (S3-Rec: 1.0)
    map_weight: float = 1.0   # (S3-Rec: 1.0)
    sp_weight: float = 0.5    # (S3-Rec: 0.5)
    attr_min_items: int = 5   # attributes shared by fewer items are dropped (S3-Rec's Beauty attributes: 5)

    def __post_init__(self):
        super().__post_init__()
        check(0 < self.mask_p < 1, f"mask_p={self.mask_p} must be in (0, 1).")
        check(min(self.aap_weight, self.mip_weight, self.map_weight, self.sp_weight) >= 0, "the pre-training loss weights must be >= 0.")
        check(self.attr_min_items >= 1, f"attr_min_items={self.attr_min_items} must be >= 1.")


# %% [markdown]
# ## Whole training sequences from a batch
#
# A training row holds the user's training sequence as inputs `seqs` and next items `pos`; the whole sequence is
# `seqs` followed by the last target. Self-supervised objectives (here and in `sagerec.dssrec`) work on it.

# %%
#| export
def full_sequences(seqs: Tensor, pos: Tensor, max_len: int) -> Tensor:  # (B, L), (B, L) -> (B, <= max_len)
    "The rows' whole training sequences (inputs + last target), left-padded, keeping the last `max_len` items."
    full = torch.cat([seqs, pos[:, -1:]], dim=1)  # (B, L+1)
    return full[:, -max_len:]


# %%
test_eq(full_sequences(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 3]]), max_len=3), torch.tensor([[1, 2, 3]]))


# %% [markdown]
# ## Bidirectional attention for pre-training
#
# Fine-tuning uses the encoder's causal mask. Pre-training lets every real item attend to every real item of its row:
# the same encoder weights, run on a `Packing` whose attention mask is the key-padding mask only.

# %%
#| export
def bidirectional_packing(valid: Tensor) -> Packing:  # (B, L) bool
    "A one-group `Packing` whose attention mask lets every position see every real item of its row (and itself)."
    pk = Packing(valid, bucketed=False)
    eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
    pk.groups = [(None, pk.flat, pk.B, pk.L, valid[:, None, None, :] | eye)]  # (B, 1, L, L)
    return pk


# %%
vb = torch.tensor([[False, True, True]])
bidirectional_packing(vb).groups[0][4][0, 0].int()

# %%
test_eq(bidirectional_packing(vb).groups[0][4][0, 0].int().tolist(), [[1, 1, 1], [0, 1, 1], [0, 1, 1]])


# %% [markdown]
# ## The model

# %%
#| export
@register_model("s3rec", paper="Zhou et al., S3-Rec: Self-Supervised Learning for Sequential Recommendation with Mutual Information Maximization, CIKM 2020")
class S3Rec(SAGERec):
    "S3-Rec (Zhou et al., CIKM 2020): attribute-aware self-supervised pre-training (`pretrain_loss`), then next-item fine-tuning."
    config_class = S3RecConfig
    needs_items = True  # reads the items' attributes

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None,
                 items: Any = None,  # the dataset's item table (`ds.items`) or ready `ItemAttributes`
                ):
        check(items is not None, "S3-Rec pre-trains on item attributes: pass the item table, build_model(..., items=ds.items).")
        super().__init__(n_items, cfg, graph, n_users)  # item table (+ graph plug-in) and the shared Transformer
        attributes = items if isinstance(items, ItemAttributes) else item_attributes(items, self.cfg.attr_min_items)
        check(attributes.n_items == n_items, f"The attributes cover {attributes.n_items} items, the model {n_items}: "
                                             "build them from this dataset (items=ds.items).")
        D = self.cfg.dim
        self.mask_emb = nn.Embedding(1, D)  # the [mask] item of pre-training
        self.attr_emb = nn.Embedding(attributes.n_attributes, D)
        self.aap, self.mip, self.map, self.sp = (nn.Linear(D, D) for _ in range(4))
        self.register_buffer("item_attr", attributes.multi_hot(), persistent=False)  # (N+1, A) bool
        self.reset_parameters()

    def encode_masked(self, seqs: Tensor, masked: Tensor, table: Tensor) -> Tensor:  # (B, L), (B, L) bool -> (B, L, D)
        "Pre-training encoder: items at `masked` replaced by the [mask] vector, every real item sees its whole row."
        pk = bidirectional_packing(seqs != 0)
        x = torch.where(masked[..., None], self.mask_emb.weight[0], F.embedding(seqs, table))  # (B, L, D)
        return pk.unpack(self.encoder.forward_packed(pk.pack(x), pk))

    def _attr_bce(self, head: nn.Linear, h: Tensor, items: Tensor) -> Tensor:  # (n, D), (n,) -> ()
        logits = head(h) @ self.attr_emb.weight.T  # (n, A)
        return F.binary_cross_entropy_with_logits(logits, self.item_attr[items].float(), reduction="none").sum(-1).mean()

    def pretrain_losses(self, seqs: Tensor, pos: Tensor) -> dict[str, Tensor]:
        "The four pre-training losses on the rows' whole training sequences (random masks from torch's RNG)."
        full = full_sequences(seqs, pos, self.cfg.max_len)  # (B, L)
        valid = full != 0
        B, L = full.shape
        table = self.tables()[0]  # (N+1, D) graph-enhanced when the plug-in is on
        # --- item masking: AAP on unmasked items, MIP and MAP on masked ones
        masked = valid & (torch.rand(B, L, device=full.device) < self.cfg.mask_p)  # (B, L)
        h = self.encode_masked(full, masked, table)  # (B, L, D)
        keep = valid & ~masked
        out = {"aap": self._attr_bce(self.aap, h[keep], full[keep])}
        if masked.any():
            hm, tgt = h[masked], full[masked]  # (m, D), (m,)
            neg = torch.randint(1, self.n_items + 1, tgt.shape, device=full.device)  # (m,)
            q = self.mip(hm)  # (m, D)
            out["mip"] = F.softplus(-((q * table[tgt]).sum(-1) - (q * table[neg]).sum(-1))).mean()
            out["map"] = self._attr_bce(self.map, hm, tgt)
        else: out["mip"] = out["map"] = h.sum() * 0
        # --- segment prediction: a random stretch of each row is masked; its items vs another row's at the same columns
        n = valid.sum(1)  # (B,)
        seg_len = 1 + (torch.rand(B, device=full.device) * torch.clamp(n // 2, min=1)).long()  # (B,) 1..max(1, n//2)
        start = (L - n) + (torch.rand(B, device=full.device) * (n - seg_len + 1)).long()  # (B,) first column of the stretch
        cols = torch.arange(L, device=full.device)[None]
        in_seg = (cols >= start[:, None]) & (cols < (start + seg_len)[:, None]) & valid  # (B, L)
        other = full.roll(1, dims=0)  # another row of the batch
        neg_seg = torch.where(in_seg & (other != 0), other, full)  # another user's items where there are any
        ctx = self.encode_masked(full, in_seg, table)[:, -1]  # (B, D) the sequence with the stretch masked
        seg_pos = self.encode_masked(torch.where(valid, full, 0), valid & ~in_seg, table)[:, -1]  # (B, D) only the stretch shown
        seg_neg = self.encode_masked(torch.where(valid, neg_seg, 0), valid & ~in_seg, table)[:, -1]  # (B, D)
        q = self.sp(ctx)
        out["sp"] = F.softplus(-((q * seg_pos).sum(-1) - (q * seg_neg).sum(-1))).mean()
        return out

    def pretrain_loss(self, batch: TrainBatch) -> Tensor:  # ()
        "The weighted pre-training loss (the trainer's pre-training stage calls this)."
        d, c = self.pretrain_losses(batch.seqs, batch.pos), self.cfg
        return c.aap_weight * d["aap"] + c.mip_weight * d["mip"] + c.map_weight * d["map"] + c.sp_weight * d["sp"]


# %% [markdown]
# ## A tiny S3-Rec: the pre-training objectives decrease
#
# Twelve items with three attributes in a pattern the objectives can learn (items 1-4 share attribute 0, 5-8
# attribute 1, 9-12 attribute 2, and every row stays within one group). A few dozen Adam steps on `pretrain_loss`
# lower each of the four objectives, measured on fixed masks (same seed before and after).

# %%
seed_everything(0)
toy = ItemAttributes.from_lists([["a"]] * 4 + [["b"]] * 4 + [["c"]] * 4)
cfg = S3RecConfig(dim=16, n_blocks=1, n_heads=2, dropout=0.0, max_len=8)
model = S3Rec(12, cfg, items=toy)
groups = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
rows = torch.tensor([[0] + [groups[g][j % 4] for j in range(r, r + 6)] for r in range(6) for g in range(3)])  # (18, 7)
batch = TrainBatch(torch.arange(18), rows[:, :-1], rows[:, 1:], None)
def measured():
    torch.manual_seed(123)
    with torch.no_grad(): return {k: round(v.item(), 4) for k, v in model.pretrain_losses(batch.seqs, batch.pos).items()}
before = measured()
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(60):
    opt.zero_grad(); model.pretrain_loss(batch).backward(); opt.step()
after = measured()
pd.DataFrame({"before": before, "after": after})

# %%
for k in ("aap", "mip", "map", "sp"): assert after[k] < before[k], (k, before[k], after[k])

# %% [markdown]
# Fine-tuning and scoring go through the contract: the same weights, a causal mask.

# %%
with torch.no_grad():
    sa = model.score_all(batch.seqs)
    l = model.loss(batch.seqs, batch.pos, torch.randint(1, 13, batch.pos.shape) * (batch.pos != 0))
sa.shape, l

# %%
test_eq(sa.shape, (18, 13)); assert torch.isfinite(l)
test_fail(lambda: S3Rec(11, cfg, items=toy), contains="The attributes cover 12 items, the model 11")
test_fail(lambda: S3Rec(12, cfg), contains="pass the item table")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
