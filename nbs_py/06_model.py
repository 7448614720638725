# %% [markdown]
# # The model
# > SAGERec and its no-graph variant (SASRec) behind one model contract: item tables, encoding, BCE loss, full-catalogue and candidate scores.

# %%
#| default_exp model

# %%
#| export
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_post_hook

from sagerec.core import SageRecError, check
from sagerec.params import check_fields
from sagerec.encoder import ACTIVATIONS, NORMS, SASRecEncoder
from sagerec.propagation import NODE_DROPOUT_MODES, GraphPropagation

# %%
#| hide
import time

from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import SageRecError, seed_everything
from sagerec.graph import ItemGraph, random_graph

# %% [markdown]
# ## Configuration
#
# One dataclass holds every model hyperparameter, with the paper's values as defaults (SPEC.md). The ablations
# of Table 5 are settings of it: (A) `graph_mode="learned"`, (B) `graph_mode="fixed"`, (C) `graph_mode="none"`
# (or `build_model("sasrec", ...)`), (D) `graph_mode="learned"` on a graph from `sagerec.graph.random_graph`,
# (E) `use_position=False`. Self-loops are edges of the graph (`build_graph(self_loops=True)`), not a model setting.
#
# **Output embeddings** (`output_embedding`): the paper scores $r_i = z_T \cdot e_i$ with "the learnable embedding
# of item $v_i$", which can be read as the raw table or the graph-enhanced one. The default here is `"graph"`:
# the same propagated table is used for the input items and for scoring, so an item with few interactions is
# scored through its graph neighbours too (what the paper's cold-start analysis describes). `"raw"` scores with
# the raw table. Record the value with every run.
#
# **L2** (`l2=1e-5`): added to the loss as `l2 * (‖item table‖² + ‖position table‖²)`, the squared norms of the
# whole embedding tables (the paper: "L2 regularisation on the embedding parameters"), not only the rows a batch
# touches. Other parameters (edge MLP, Transformer) get none.

# %%
#| export
GRAPH_MODES = ("learned", "fixed", "none")
OUTPUT_EMBEDDINGS = ("graph", "raw")
INITS = ("xavier", "normal")

@dataclass
class ModelConfig:
    "Hyperparameters of SAGERec and its ablations (defaults: the paper's, for the sparse Amazon datasets)."
    dim: int = 50  # d, width of item embeddings and hidden states (paper: 50)
    n_blocks: int = 2  # Transformer blocks (paper: 2)
    n_heads: int = 1  # attention heads (paper: unspecified; SASRec: 1)
    dropout: float = 0.5  # Transformer dropout (unspecified; SASRec: 0.5 sparse Amazon, 0.2 ML-1M)
    max_len: int = 50  # positions (paper: 50 Beauty/Toys, 165 ML-1M)
    use_position: bool = True  # learned positional embedding (False: ablation E)
    scale_input: bool = True  # scale item embeddings by sqrt(d) before adding positions (SASRec's code)
    graph_mode: str = "learned"  # "learned" edge MLP (A), "fixed" cosine weights (B), "none" no graph (C)
    n_graph_layers: int = 1  # propagation layers (paper: 1)
    edge_dropout: float = 0.2  # share of undirected edges dropped per training step (paper: 0.2)
    node_dropout: float = 0.5  # share of nodes dropped per training step (paper: 0.5)
    node_dropout_mode: str = "messages"  # "messages": dropped nodes send nothing; "rows": row dropout; "nodes": SGL
    symmetric_edges: bool = True  # one learned weight per undirected edge (mean of both orders' logits)
    output_embedding: str = "graph"  # score items with the "graph"-enhanced table or the "raw" table
    l2: float = 1e-5  # weight of the squared L2 norm of the embedding tables (paper: 1e-5)
    # --- where the reference implementations differ (each measured in nbs/recipe.ipynb)
    ffn_mult: int = 1  # FFN width as a multiple of d (SASRec: 1; S3-Rec/ICLRec family: 4)
    activation: str = "relu"  # FFN activation: "relu" (SASRec) or "gelu" (S3-Rec family)
    attn_out_dropout: bool = True  # dropout on the attention output (SASRec's code: none)
    ffn_inner_dropout: bool = True  # dropout after the FFN activation (S3-Rec family: none)
    norm: str = "pre"  # "pre"-LayerNorm blocks (paper) or "post" (S3-Rec/ICLRec code: LayerNorm after each residual)
    init: str = "xavier"  # "xavier": Xavier-uniform (paper); "normal": N(0, 0.02) (S3-Rec family, BERT)
    # --- beyond the paper: make the semantics count (named variants in nbs/train.ipynb; the paper's model has both off)
    graph_gate: bool = False  # E' = E + a * (propagated - E), a learned scalar starting at 0 (the paper: a = 1, fixed)
    text_input: bool = False  # add a learned projection of the item's Sentence-BERT vector to its ID embedding
    text_dim: int = 64  # the Sentence-BERT vectors are first reduced to this many principal components (fixed)

    def __post_init__(self):
        check_fields(self)  # types first (sagerec.params): 'abc' or 2.5 for a width names the field
        check(self.graph_mode in GRAPH_MODES, f"graph_mode={self.graph_mode!r}: use one of {GRAPH_MODES}.")
        check(self.output_embedding in OUTPUT_EMBEDDINGS, f"output_embedding={self.output_embedding!r}: use one of {OUTPUT_EMBEDDINGS}.")
        check(self.node_dropout_mode in NODE_DROPOUT_MODES, f"node_dropout_mode={self.node_dropout_mode!r}: use one of {NODE_DROPOUT_MODES}.")
        check(self.norm in NORMS, f"norm={self.norm!r}: use one of {NORMS}.")
        check(self.dim > 0 and self.n_heads > 0 and self.dim % self.n_heads == 0,
              f"dim={self.dim} must be a positive multiple of n_heads={self.n_heads}.")
        check(self.max_len > 0 and self.n_blocks >= 0 and self.n_graph_layers >= 1,
              f"max_len={self.max_len}, n_blocks={self.n_blocks}, n_graph_layers={self.n_graph_layers}: need max_len >= 1, n_blocks >= 0, n_graph_layers >= 1.")
        for k in ("dropout", "edge_dropout", "node_dropout"):
            check(0 <= getattr(self, k) < 1, f"{k}={getattr(self, k)} must be in [0, 1).")
        check(self.l2 >= 0, f"l2={self.l2} must be >= 0.")
        check(self.init in INITS, f"init={self.init!r}: use one of {INITS}.")
        check(self.text_dim >= 1, f"text_dim={self.text_dim} must be >= 1.")
        check(self.activation in ACTIVATIONS, f"activation={self.activation!r}: use one of {tuple(ACTIVATIONS)}.")
        check(self.ffn_mult >= 1, f"ffn_mult={self.ffn_mult} must be >= 1 (the FFN's width is ffn_mult * dim).")


# %%
ModelConfig()

# %%
test_eq((ModelConfig().dim, ModelConfig().graph_mode, ModelConfig().output_embedding), (50, "learned", "graph"))
test_fail(lambda: ModelConfig(graph_mode="random"), contains="graph_mode='random'")
test_fail(lambda: ModelConfig(dim=50, n_heads=3), contains="multiple of n_heads=3")
test_fail(lambda: ModelConfig(dropout=1.0), contains="dropout=1.0 must be in [0, 1)")
test_fail(lambda: ModelConfig(dim="abc", n_blocks=2.5), contains="ModelConfig: dim='abc' must be a whole number; n_blocks=2.5 must be a whole number")

# %% [markdown]
# ## The model contract
#
# Every recommender in this project (SAGERec, its ablations, every baseline) is a `SeqRecModel`, built as
# `Model(n_items, cfg, graph, n_users)`. A subclass registers its item table with `self.item_table()` (which also puts
# the graph layer in front of it when `cfg.graph_mode != "none"`: the graph plug-in, no code in the model), and says
# how to encode a batch given the input table (`encode_with`), its regulariser (`l2_penalty`) and its
# initialisation (`reset_parameters`). It may override: `output_table()` (a separate output table, e.g. Caser's),
# `encode_last()` (the state scores are taken from, e.g. BERT4Rec's appended mask), `training_loss(batch)` (to add a
# term or replace the objective) and `compute_tables()` (a model without an item table). The base class provides
# what the trainer and the evaluator call:
#
# | call | shapes | meaning |
# |---|---|---|
# | `item_embeddings()` | (N+1, D) | input item table of this step (graph-enhanced when the graph is on) |
# | `output_embeddings()` | (N+1, D') | the table scores are taken against |
# | `encode(seqs, users=None)` | (B, L) -> (B, L, D') | hidden state per position of a left-padded batch, L <= max_len |
# | `training_loss(batch)` | `TrainBatch` -> () | what the trainer minimises; default: `loss(...)` |
# | `loss(seqs, pos, neg, kind, logq, users)` | (B, L), (B, L), negatives -> () | the objective `kind` on every position with `pos != 0`, plus L2 |
# | `score_all(seqs, users=None)` | (B, L) -> (B, N+1) | scores of every item after the last position; column 0 is `-inf` |
# | `user_states(seqs, users=None)`, `score_items(states, lo, hi)` | (B, L) -> (B, D') -> (B, hi-lo) | the same scores for items lo..hi-1 only (full ranking over large catalogues, in blocks) |
# | `score_candidates(seqs, cand, users=None)` | (B, L), (B, C) -> (B, C) | scores of given items (id 0 -> `-inf`) |
#
# **Users.** `users` are row indices of the split (`0..n_users-1`, as in `TrainBatch.users` and in evaluation). Most
# models ignore them; a model whose scores depend on the user (BPR, Caser) sets `needs_users = True`, gets `n_users`
# from `build_model(..., n_users=split.n_users)` and receives `users` in `encode_with`. The evaluator always passes them.
#
# **Items.** A model built from the items' text or attributes (S3-Rec's attribute objectives, the TransRec substitute's
# identifiers) sets `needs_items = True` and receives the dataset's item table, `build_model(..., items=ds.items)`, as
# the keyword argument `items` of its constructor; other models are built without it.
#
# **Loss** (`kind="bce"`). At every position $t$ with a target (`pos[b, t] != 0`), with hidden state $z_t$ and output table $e$:
# $-\log\sigma(z_t \cdot e_{pos}) - \frac1K\sum_k \log(1 - \sigma(z_t \cdot e_{neg_k}))$, averaged over those positions
# (SASRec's loss; with one negative it is exactly SASRec's two BCE means). Any number K of negatives per position
# works; the trainer draws them. Negatives at positions without a target are ignored.
#
# Two objectives beyond the paper share the same call (`kind`, the trainer's `loss` setting):
# - `"ce"`: cross-entropy over the whole catalogue, $-z_t\cdot e_{pos} + \log\sum_{j=1}^N \exp(z_t\cdot e_j)$
#   (the padding item is excluded); `neg` is not used.
# - `"sampled_softmax"`: the same softmax over the target and a pool of P negatives shared by every position of
#   the step (`neg` of shape (P,)); a pool item equal to a position's target is removed from that position's
#   softmax (an "accidental hit"). With `logq` (the log-probability with which the pool sampler draws each item),
#   every logit, the target's included, is corrected by $-\log q$ (the logQ correction; a constant, so a no-op,
#   for a uniform pool).
#
# **Extending the contract.** A model whose objective is not one of these (BERT4Rec's cloze task, a contrastive
# term, BPR's pairs) overrides `training_loss(batch)`, which receives the whole `TrainBatch` (users included);
# the trainer calls nothing else, so it stays one loop for every model.
#
# **Cost.** The tables are computed once per `loss` call, so the graph propagation runs once per training step.
# `loss` asks only for the rows its batch uses (inputs, targets, negatives: a few thousand of the N items), which
# the graph layer computes exactly (same values and gradients as the whole table, shown below);
# `restrict_to_batch = False` switches this off. In evaluation (`model.eval()` and `torch.no_grad()`), the tables are computed once
# and cached: the cache is keyed by the count of optimiser steps taken in the process (torch's global step
# hook), and by every parameter's storage and version counter (bumped by in-place writes such as
# `load_state_dict`), and dropped by `train()` / `eval()`, so it cannot go stale. The version counter alone is not
# enough: a fused Adam step (torch 2.13, CPU) updates parameters without bumping it (shown below). With gradients enabled
# nothing is cached. (Writing to a parameter through `p.data` bypasses torch's version counter: call
# `model.clear_cache()` after doing that.)

# %%
#| export
LOSSES = ("bce", "ce", "sampled_softmax")

@dataclass
class TrainBatch:
    "One training step's tensors, on the model's device (built by the trainer)."
    users: Tensor  # (B,) user indices (row indices of the split)
    seqs: Tensor  # (B, L) input items, left-padded with 0
    pos: Tensor  # (B, L) next item per position, 0 = no target
    neg: Tensor | None  # 'bce': (B, L, K) per-position negatives; 'sampled_softmax': (P,) shared pool; 'ce': None
    kind: str = "bce"  # the objective, one of LOSSES
    logq: Tensor | None = None  # (N+1,) log-probability with which the pool sampler draws each item (logQ correction), or None


# %%
#| export
_optimizer_steps = [0]  # steps taken by any torch optimizer in this process

def _count_optimizer_step(optimizer, args, kwargs): _optimizer_steps[0] += 1

# Fused optimizers (e.g. Adam(fused=True)) update parameters without bumping
# their version counters, so every optimiser step is also counted here, through torch's global step hook.
_step_hook = register_optimizer_step_post_hook(_count_optimizer_step)

def coerce_config(config_class: type, cfg: Any = None) -> ModelConfig:
    "`cfg` as an instance of `config_class`: None -> defaults; a dict -> overrides; another `ModelConfig` -> its shared fields."
    if isinstance(cfg, config_class): return cfg
    names = {f.name for f in fields(config_class)}
    if cfg is None: kw = {}
    elif isinstance(cfg, dict): kw = dict(cfg)
    elif isinstance(cfg, ModelConfig): kw = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in names}
    else: raise SageRecError(f"cfg must be a {config_class.__name__}, a ModelConfig or a dict of overrides; got {type(cfg).__name__}.")
    bad = sorted(set(kw) - names)
    check(not bad, f"Unknown setting(s) {bad} for {config_class.__name__}: use some of {sorted(names)}.")
    return config_class(**kw)


def principal_components(x: Tensor,  # (N+1, F) item vectors, row 0 = padding
                         k: int,  # components kept
                        ) -> Tensor:  # (N+1, min(k, F)) float32, row 0 and all-zero rows stay 0
    "The rows of `x` expressed in their top-`k` principal directions (uncentred, so zero rows stay zero), scaled to unit mean norm."
    x = torch.as_tensor(x, dtype=torch.float32)
    k = min(k, x.shape[1])
    _, _, vh = torch.linalg.svd(x[1:], full_matrices=False)  # (F, F), padding row excluded
    z = x @ vh[:k].T  # (N+1, k)
    return z / z[1:].norm(dim=1).mean().clamp_min(1e-12)


class SeqRecModel(nn.Module):
    "Base class of every recommender: the model contract used by training and evaluation, and the graph plug-in."
    config_class: type = ModelConfig  # the model's configuration dataclass (a ModelConfig subclass for model-specific settings)
    needs_users: bool = False  # True: scores depend on the user (needs n_users; receives `users` in encode_with)
    needs_items: bool = False  # True: built from the dataset's item table (titles, attributes): cls(..., items=ds.items)
    graph_plugin: bool = True  # accepts the graph layer in front of its item table (False: a model defined by having none)

    def __init__(self,
                 n_items: int,  # items are 1..n_items, 0 = padding
                 cfg: Any = None,  # a `config_class` instance, a ModelConfig (shared fields), a dict of overrides, or None
                 graph: Any = None,  # ItemGraph with N + 1 nodes; used when cfg.graph_mode != "none"
                 n_users: int | None = None,  # users are 0..n_users-1; needed when `needs_users`
                ):
        super().__init__()
        check(int(n_items) >= 1, f"n_items={n_items}: a model needs at least one item.")
        self.n_items = int(n_items)
        self.cfg = coerce_config(type(self).config_class, cfg)
        check(not self.needs_users or (n_users is not None and int(n_users) >= 1),
              f"{type(self).__name__} learns a vector per user: pass n_users (e.g. build_model(..., n_users=split.n_users)).")
        self.n_users = int(n_users) if n_users is not None else None
        self._graph_data, self.graph = graph, None
        self._cache: tuple | None = None

    # --- what a subclass defines
    def item_table(self, dim: int | None = None) -> nn.Embedding:
        "Register `self.item_emb` (N+1, dim), row 0 = padding, and the graph layer in front of it unless `cfg.graph_mode == 'none'`."
        cfg, graph, n = self.cfg, self._graph_data, self.n_items
        dim = dim or cfg.dim
        self.item_emb = nn.Embedding(n + 1, dim, padding_idx=0)  # E^(0)
        self.text_proj = self.gate = None
        if getattr(cfg, "text_input", False):
            feats = getattr(graph, "features", None)
            check(feats is not None and feats.shape[0] == n + 1, "text_input=True needs the items' Sentence-BERT vectors: pass "
                  "graph=build_graph(emb, ...).with_features(emb) (one row per item, row 0 = padding).")
            self.register_buffer("text_feats", principal_components(feats, cfg.text_dim))  # (N+1, text_dim), fixed
            self.text_proj = nn.Linear(self.text_feats.shape[1], dim, bias=False)
        if cfg.graph_mode != "none":
            check(graph is not None, f"graph_mode={cfg.graph_mode!r} needs the item graph: pass graph=build_graph(...) from "
                                     "sagerec.graph, or use graph_mode='none' (build_model('sasrec', ...) for SAGERec without graph).")
            check(int(graph.num_nodes) == n + 1, f"The graph has {int(graph.num_nodes)} nodes but the model has "
                  f"{n} items (+1 padding = {n + 1}): build the graph from this dataset's item embeddings.")
            self.graph = GraphPropagation(graph, dim, mode=cfg.graph_mode, n_layers=cfg.n_graph_layers,
                                          edge_dropout=cfg.edge_dropout, node_dropout=cfg.node_dropout,
                                          node_dropout_mode=cfg.node_dropout_mode, symmetric=cfg.symmetric_edges)
            if getattr(cfg, "graph_gate", False): self.gate = nn.Parameter(torch.zeros(()))  # a = 0: starts as the raw table
        return self.item_emb

    def output_table(self) -> Tensor | None:  # (N+1, D') or None
        "A separate output table (default None: scores use the item table, graph-enhanced or raw per `cfg.output_embedding`)."
        return None

    def compute_tables(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:  # input (N+1, D), output (N+1, D')
        "The input and output item tables for this step (no caching); only the ids in `rows` must be right, if given."
        raw = self.item_emb.weight  # (N+1, D)
        if self.text_proj is not None: raw = raw + self.text_proj(self.text_feats)  # (N+1, D), row 0 stays 0
        inp = raw if self.graph is None else self.graph(raw, rows)  # (N+1, D), exact at `rows`
        if self.gate is not None: inp = raw + self.gate * (inp - raw)  # the propagated term, gated
        out = self.output_table()
        if out is not None: return inp, out
        return inp, (inp if self.cfg.output_embedding == "graph" else raw)

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, D')
        "Hidden states of a left-padded batch, looking items up in `table` (`users`: (B,) row indices, for models that need them)."
        raise NotImplementedError

    def encode_last(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, D')
        "The state scores are taken from: by default the hidden state at the last position."
        return self.encode_with(seqs, table, users)[:, -1]

    def l2_penalty(self) -> Tensor:  # ()
        "The regulariser added to the loss (default: none)."
        return torch.zeros((), device=next(self.parameters()).device)

    def reset_parameters(self) -> None:
        "Re-initialise every parameter."
        raise NotImplementedError

    # --- the contract
    def _state_key(self) -> tuple:
        return _optimizer_steps[0], tuple((p.data_ptr(), p._version) for p in self.parameters())

    restrict_to_batch: bool = True  # loss(): compute only the table rows the batch uses (exact; False: whole tables)

    def tables(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:  # input (N+1, D), output (N+1, D')
        "`compute_tables(rows)`; in eval mode without gradients, the whole tables, cached until a parameter changes."
        if self.training or torch.is_grad_enabled(): return self.compute_tables(rows)
        key = self._state_key()
        if self._cache is None or self._cache[0] != key: self._cache = (key, self.compute_tables())
        return self._cache[1]

    def clear_cache(self) -> None:
        "Drop the cached eval tables (needed only after writing to parameters through `.data`, which torch does not version)."
        self._cache = None

    def train(self, mode: bool = True):
        self.clear_cache()
        return super().train(mode)

    def item_embeddings(self) -> Tensor: return self.tables()[0]  # (N+1, D)
    def output_embeddings(self) -> Tensor: return self.tables()[1]  # (N+1, D')

    def _check_users(self, users: Tensor | None, B: int) -> Tensor | None:
        if not self.needs_users: return users
        check(users is not None, f"{type(self).__name__} scores depend on the user: pass users=(B,) row indices of the split.")
        check(users.shape == (B,) and not users.is_floating_point(), f"users must be a (B,) = ({B},) integer tensor; got {users.dtype} {tuple(users.shape)}.")
        check(int(users.min()) >= 0 and int(users.max()) < self.n_users, f"User indices must be in 0..{self.n_users - 1}; "
              f"got {int(users.min())}..{int(users.max())}. Was the model built for this split?")
        return users

    def encode(self, seqs: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, D')
        "Hidden state per position of a left-padded batch of item ids."
        self._check_ids(seqs, "seqs")
        return self.encode_with(seqs, self.item_embeddings(), self._check_users(users, seqs.shape[0]))

    def _check_ids(self, *named) -> Tensor:  # all the ids, flattened
        for t, name in zip(named[::2], named[1::2]):
            check(not t.is_floating_point() and t.ndim >= 2, f"{name} must be an integer tensor of shape (B, L[, K]); got {t.dtype} {tuple(t.shape)}.")
        ids = torch.cat([t.reshape(-1) for t in named[::2]])
        lo, hi = ids.aminmax()
        check(int(lo) >= 0 and int(hi) <= self.n_items, f"Item ids must be in 0..{self.n_items} (0 = padding); got {int(lo)}..{int(hi)}. "
                                                         "Was the model built for this dataset?")
        return ids

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        "What the trainer minimises (default: the shared `loss`); override to add a term or replace the objective."
        return self.loss(batch.seqs, batch.pos, batch.neg, kind=batch.kind, logq=batch.logq, users=batch.users)

    def loss(self,
             seqs: Tensor,  # (B, L) input items, left-padded with 0
             pos: Tensor,  # (B, L) next item at each position, 0 = no target (ignored)
             neg: Tensor | None = None,  # 'bce': (B, L, K) or (B, L) per position; 'sampled_softmax': (P,) pool; 'ce': unused
             kind: str = "bce",  # the objective: 'bce' (paper), 'ce' (full softmax), 'sampled_softmax'
             logq: Tensor | None = None,  # 'sampled_softmax': (N+1,) log-probability of each item under the pool sampler (logQ)
             users: Tensor | None = None,  # (B,) row indices of the split, for models whose scores depend on the user
            ) -> Tensor:  # () the objective over positions with a target, plus the L2 term
        "The objective `kind` on every position that has a target, plus `l2_penalty()`."
        check(kind in LOSSES, f"loss kind={kind!r}: use one of {LOSSES}.")
        check(seqs.ndim == 2 and pos.shape == seqs.shape, f"loss needs seqs (B, L) and pos (B, L); got {tuple(seqs.shape)}, {tuple(pos.shape)}.")
        if kind == "bce":
            check(neg is not None, "loss kind='bce' needs negatives per position: neg of shape (B, L, K) or (B, L).")
            if neg.ndim == 2: neg = neg[..., None]  # (B, L, 1)
            check(neg.ndim == 3 and neg.shape[:2] == seqs.shape, f"loss needs seqs (B, L), pos (B, L), neg (B, L, K) for kind='bce'; "
                                                                 f"got {tuple(seqs.shape)}, {tuple(pos.shape)}, {tuple(neg.shape)}.")
        elif kind == "sampled_softmax":
            check(neg is not None and neg.ndim == 1 and neg.numel() > 0, "loss kind='sampled_softmax' needs a pool of negatives: neg of shape (P,).")
            check(logq is None or logq.shape == (self.n_items + 1,), f"logq must hold one value per item (N+1 = {self.n_items + 1},).")
        named = (seqs, "seqs", pos, "pos") + ((neg.reshape(1, -1) if kind == "sampled_softmax" else neg, "neg") if kind != "ce" else ())
        ids = self._check_ids(*named)
        inp, out = self.tables(ids if self.restrict_to_batch and kind != "ce" else None)
        h = self.encode_with(seqs, inp, self._check_users(users, seqs.shape[0]))  # (B, L, D')
        return self.objective(h, out, pos, neg, kind, logq) + self.l2_penalty()

    def objective(self,
                  h: Tensor,  # (B, L, D') hidden states
                  out: Tensor,  # (N+1, D') output table
                  pos: Tensor,  # (B, L) target per position, 0 = none
                  neg: Tensor | None,  # as in `loss`
                  kind: str = "bce",  # as in `loss`
                  logq: Tensor | None = None,  # as in `loss`
                 ) -> Tensor:  # ()
        "The objective `kind` of hidden states `h` against the table `out` at the positions where `pos != 0` (no L2)."
        valid = pos != 0  # (B, L)
        hv, target = h[valid], pos[valid]  # (n, D), (n,)
        check(hv.shape[0] > 0, "The batch has no position with a target (pos is all 0): each row needs at least one target.")
        pos_logit = (hv * F.embedding(target, out, padding_idx=0)).sum(-1)  # (n,)
        if kind == "bce":
            if neg.ndim == 2: neg = neg[..., None]  # (B, L, 1)
            neg_logit = torch.einsum("nd,nkd->nk", hv, F.embedding(neg[valid], out, padding_idx=0))  # (n, K)
            return (F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit))
                    + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit)))
        if kind == "ce":
            logits = hv @ out.T  # (n, N+1)
            logits[:, 0] = float("-inf")  # padding is no class
            return F.cross_entropy(logits, target)
        neg_logit = hv @ F.embedding(neg, out).T  # (n, P)
        if logq is not None: pos_logit, neg_logit = pos_logit - logq[target], neg_logit - logq[neg]  # logQ correction
        neg_logit = neg_logit.masked_fill(neg[None, :] == target[:, None], float("-inf"))  # accidental hits
        logits = torch.cat([pos_logit[:, None], neg_logit], 1)  # (n, 1 + P), the target in column 0
        return F.cross_entropy(logits, torch.zeros_like(target))

    def user_states(self, seqs: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, D')
        "The state after the last position of each sequence (`encode_last`): what `score_items` scores items against."
        self._check_ids(seqs, "seqs")
        return self.encode_last(seqs, self.tables()[0], self._check_users(users, seqs.shape[0]))

    def score_items(self, states: Tensor, lo: int, hi: int) -> Tensor:  # (B, D') -> (B, hi - lo)
        "Scores of items lo..hi-1 for `user_states`; column 0 (padding) is -inf. Full ranking walks large catalogues in blocks with it."
        s = states @ self.tables()[1][lo:hi].T  # (B, hi - lo)
        if lo == 0: s[:, 0] = float("-inf")
        return s

    def score_all(self, seqs: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, N+1)
        "Scores of every item after the last position of each sequence; column 0 (padding) is -inf."
        return self.score_items(self.user_states(seqs, users), 0, self.n_items + 1)

    def score_candidates(self, seqs: Tensor, cand: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L), (B, C) -> (B, C)
        "Scores of the candidate items `cand` after the last position; candidate id 0 gets -inf."
        self._check_ids(seqs, "seqs", cand, "cand")
        inp, out = self.tables()
        z = self.encode_last(seqs, inp, self._check_users(users, seqs.shape[0]))  # (B, D')
        s = torch.einsum("bd,bcd->bc", z, F.embedding(cand, out))  # (B, C)
        return s.masked_fill(cand == 0, float("-inf"))


# %% [markdown]
# ## The model registry
#
# The registry is the single source of model names: `build_model`, `nbs/train.ipynb -p model <name>`,
# `configs/models/<name>.yaml`, the one-epoch test of every model (`tests/test_models.py`) and the reports all
# read it. A model joins it with one decorator in its own notebook, `@register_model("name", paper="...")`;
# `registered_models()` imports every module of the package whose source registers a model (a text scan for the
# decorator, so heavy modules such as `sagerec.embed` are never imported), so a new notebook needs no other edit.

# %%
#| export
@dataclass(frozen=True)
class ModelSpec:
    "A registered model: its name, class and the paper it follows."
    name: str  # what build_model, train.ipynb's `model` and configs/models/<name>.yaml use
    cls: type  # a SeqRecModel subclass, built as cls(n_items, cfg, graph, n_users)
    paper: str = ""  # the paper whose objective and hyperparameters it follows

    @property
    def config_class(self) -> type: return self.cls.config_class  # its configuration dataclass
    @property
    def graph_by_default(self) -> bool: return self.cls.graph_plugin and self.config_class().graph_mode != "none"  # graph on unless asked otherwise
    @property
    def needs_users(self) -> bool: return self.cls.needs_users
    @property
    def needs_items(self) -> bool: return self.cls.needs_items

_REGISTRY: dict[str, ModelSpec] = {}

def register_model(name: str,  # the model's name (lower case)
                   paper: str = "",  # citation of the paper it follows
                  ):
    "Class decorator: make a `SeqRecModel` subclass buildable by `build_model(name, ...)`."
    def deco(cls):
        check(isinstance(cls, type) and issubclass(cls, SeqRecModel), f"register_model({name!r}) decorates SeqRecModel subclasses, not {cls!r}.")
        old = _REGISTRY.get(name)
        if old is not None and old.cls.__qualname__ != cls.__qualname__:  # the same class again (a re-run cell, a reload) is fine
            raise SageRecError(f"Model name {name!r} is already taken by {old.cls.__module__}.{old.cls.__qualname__}: pick another name.")
        if old is not None and not old.cls.__module__.startswith("sagerec.") and cls.__module__.startswith("sagerec."):
            return cls  # a notebook's own definition wins over the package's (possibly older) export of it
        _REGISTRY[name] = ModelSpec(name, cls, paper)
        return cls
    return deco

def _import_model_modules() -> None:
    "Import the package's modules that register models (found by a text scan of their source)."
    here = globals().get("__file__")
    if here is None: return  # running inside a notebook: its own definitions are registered already
    for f in sorted(Path(here).resolve().parent.glob("*.py")):
        if f.stem not in ("model", "__init__") and not f.stem.startswith("_") and "@register_model(" in f.read_text():
            importlib.import_module(f"sagerec.{f.stem}")

def registered_models() -> dict[str, ModelSpec]:
    "Every registered model by name (imports the modules that define them)."
    _import_model_modules()
    return dict(sorted(_REGISTRY.items()))

def build_model(name: str,  # a registered name: see `registered_models()`
                n_items: int,  # N, items are 1..N
                cfg: Any = None,  # the model's config, a ModelConfig (its shared fields), a dict of overrides, or None (defaults)
                graph: Any = None,  # ItemGraph (sagerec.graph): used when the config's graph_mode != "none"
                n_users: int | None = None,  # users of the split: needed by models whose scores depend on the user (BPR, Caser)
                items: Any = None,  # the dataset's item table (`ds.items`): needed by models built from item text (S3-Rec, transrec_sub)
               ) -> SeqRecModel:
    "Build a registered model by name."
    models = registered_models()
    check(name in models, f"Unknown model {name!r}: use one of {sorted(models)}.")
    spec = models[name]
    if not spec.needs_items: return spec.cls(n_items, cfg, graph, n_users)
    check(items is not None, f"{name!r} is built from the items' text and attributes: pass items=ds.items to build_model.")
    return spec.cls(n_items, cfg, graph, n_users, items=items)


# %% [markdown]
# ## SAGERec
#
# Raw item table $E^{(0)}$ (`nn.Embedding`, row 0 = padding, kept at zero) -> adaptive graph layer (when a
# graph is used; both registered by `item_table()`) -> the encoder looks the sequence up in the propagated table.
# Xavier-uniform initialisation of every weight matrix and embedding table (the paper), zero biases, LayerNorm at
# (1, 0). `SASRec` is the same class with `graph_mode="none"`.

# %%
#| export
def xavier_init_(module: nn.Module) -> None:
    "Xavier-uniform weights for Linear and Embedding, zero biases, LayerNorm reset; padding rows set to zero."
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None: nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.xavier_uniform_(m.weight)
            if m.padding_idx is not None:
                with torch.no_grad(): m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm): m.reset_parameters()

def normal_init_(module: nn.Module, std: float = 0.02) -> None:
    "N(0, std) weights for Linear and Embedding (the S3-Rec family's and BERT's), zero biases, LayerNorm reset; padding rows zero."
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None: nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad(): m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm): m.reset_parameters()


@register_model("sagerec", paper="Cui & Lam, SAGERec, Electronics 14(24) 4844, 2025")
class SAGERec(SeqRecModel):
    "SAGERec: adaptive graph propagation over the item table, then a SASRec-style causal Transformer."
    def __init__(self,
                 n_items: int,  # N, items are 1..N
                 cfg: Any = None,  # ModelConfig (default: the paper's), or a dict of overrides
                 graph: Any = None,  # ItemGraph with num_nodes = N + 1; required unless cfg.graph_mode == "none"
                 n_users: int | None = None,  # unused
                ):
        super().__init__(n_items, cfg, graph, n_users)
        cfg = self.cfg
        self.item_table()  # item_emb, and the graph layer unless graph_mode == "none"
        self.encoder = SASRecEncoder(cfg.dim, cfg.n_blocks, cfg.n_heads, cfg.dropout, cfg.max_len,
                                     use_position=cfg.use_position, scale_input=cfg.scale_input, ffn_mult=cfg.ffn_mult,
                                     activation=cfg.activation, attn_out_dropout=cfg.attn_out_dropout,
                                     ffn_inner_dropout=cfg.ffn_inner_dropout, norm=cfg.norm)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        (xavier_init_ if self.cfg.init == "xavier" else normal_init_)(self)
        if self.gate is not None: nn.init.zeros_(self.gate)
        self._cache = None

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, D)
        pk = self.encoder.packing(seqs != 0)  # only real items are looked up and encoded
        xp = F.embedding(seqs.reshape(-1).index_select(0, pk.flat), table)  # (n, D)
        return pk.unpack(self.encoder.forward_packed(xp, pk))  # (B, L, D), 0 at padding

    def l2_penalty(self) -> Tensor:  # ()
        sq = self.item_emb.weight.square().sum()
        if self.encoder.pos_emb is not None: sq = sq + self.encoder.pos_emb.weight.square().sum()
        return self.cfg.l2 * sq


@register_model("sasrec", paper="Kang & McAuley, Self-Attentive Sequential Recommendation, ICDM 2018")
class SASRec(SAGERec):
    "The no-graph variant (ablation C): SAGERec with `graph_mode='none'`, i.e. SASRec with pre-LayerNorm blocks."
    graph_plugin = False  # SASRec with the graph layer is SAGERec
    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):  # graph is ignored
        super().__init__(n_items, replace(coerce_config(ModelConfig, cfg), graph_mode="none"), graph)  # graph: only its features, for text_input


# %% [markdown]
# Every registered model, by name (this notebook's own; `registered_models()` from the package lists the baselines too):

# %%
{name: (spec.cls.__name__, spec.graph_by_default, spec.paper) for name, spec in registered_models().items()}

# %%
assert {"sagerec", "sasrec"} <= set(registered_models())
assert registered_models()["sagerec"].graph_by_default and not registered_models()["sasrec"].graph_by_default
test_fail(lambda: register_model("sasrec")(SAGERec), contains="already taken")


# %% [markdown]
# ## A tiny model on a hand-made graph
#
# Eight items; items 1-4 and 5-7 form two groups in the graph, item 8 has no neighbour.

# %%
def toy_graph(pairs, num_nodes):
    "Undirected pairs stored in both directions, cosine weight 0.9 each (the graph stage's layout)."
    p = torch.tensor(pairs).T  # (2, M)
    return ItemGraph(torch.cat([p, p.flip(0)], 1), torch.full((2 * p.shape[1],), 0.9), num_nodes)

g = toy_graph([(1, 2), (2, 3), (3, 4), (1, 4), (5, 6), (6, 7)], num_nodes=9)
cfg = ModelConfig(dim=8, n_blocks=2, n_heads=2, dropout=0.2, max_len=5)
seed_everything(0)
model = build_model("sagerec", 8, cfg, g)
seqs = torch.tensor([[0, 0, 1, 2, 3], [0, 0, 0, 5, 6], [4, 3, 2, 1, 8]])  # (B=3, L=5), left-padded
pos = torch.tensor([[0, 0, 2, 3, 4], [0, 0, 0, 6, 7], [3, 2, 1, 8, 5]])  # next items, 0 = no target
neg = torch.tensor([[[0, 0], [0, 0], [7, 8], [5, 6], [8, 7]],
                    [[0, 0], [0, 0], [0, 0], [1, 2], [3, 4]],
                    [[5, 6], [7, 8], [6, 5], [2, 3], [1, 4]]])  # (B, L, K=2)
model.eval()
with torch.no_grad():
    shapes = dict(item_embeddings=model.item_embeddings().shape, encode=model.encode(seqs).shape,
                  score_all=model.score_all(seqs).shape, score_candidates=model.score_candidates(seqs, pos[:, -2:]).shape,
                  loss=model.loss(seqs, pos, neg))
shapes

# %%
test_eq(shapes["item_embeddings"], (9, 8)); test_eq(shapes["encode"], (3, 5, 8))
test_eq(shapes["score_all"], (3, 9)); test_eq(shapes["score_candidates"], (3, 2))
assert shapes["loss"].ndim == 0 and torch.isfinite(shapes["loss"])
test_eq(model.item_emb.weight[0].detach(), torch.zeros(8))  # padding row starts at zero

# %% [markdown]
# **Xavier-uniform initialisation**: every table lies within $\pm\sqrt{6/(\text{fan}_\text{in} + \text{fan}_\text{out})}$.

# %%
bound = (6 / (9 + 8)) ** 0.5
model.item_emb.weight.abs().max().item(), bound

# %%
assert model.item_emb.weight.abs().max() <= bound and model.item_emb.weight[1:].abs().max() > bound / 2
test_eq(model.graph.edge_mlp.lin1.bias.detach(), torch.zeros(8))

# %% [markdown]
# **The loss by hand**: the BCE terms recomputed from the tables and hidden states, plus the L2 term. The
# negatives at positions with no target (`pos == 0`) do not count: changing them leaves the loss unchanged.

# %%
with torch.no_grad():
    inp, out = model.tables()
    h = model.encode(seqs)  # (B, L, D)
    v = pos != 0
    lp = (h[v] * out[pos[v]]).sum(-1); ln = torch.einsum("nd,nkd->nk", h[v], out[neg[v]])
    by_hand = -F.logsigmoid(lp).mean() - F.logsigmoid(-ln).mean() + 1e-5 * (model.item_emb.weight.square().sum() + model.encoder.pos_emb.weight.square().sum())
    neg2 = neg.clone(); neg2[~v] = torch.randint(1, 9, (int((~v).sum()), 2))  # other negatives where pos == 0
    losses = model.loss(seqs, pos, neg), by_hand, model.loss(seqs, pos, neg2)
losses

# %%
test_close(losses[0], losses[1], eps=1e-6)
test_eq(losses[0], losses[2])
with torch.no_grad():  # a single negative per position may be given as (B, L)
    test_close(model.loss(seqs, pos, neg[..., 0]), -F.logsigmoid(lp).mean() - F.logsigmoid(-ln[:, 0]).mean() + model.l2_penalty(), eps=1e-6)

# %% [markdown]
# **The other objectives by hand**: full cross-entropy is a softmax over items 1..N; sampled softmax over the
# target and a shared pool, where a pool item equal to the target is dropped from that position's softmax; with
# the logQ correction and a uniform sampler it is unchanged (every logit moves by the same constant).

# %%
with torch.no_grad():
    t = pos[v]  # (n,) targets
    full = h[v] @ out.T; full[:, 0] = float("-inf")  # (n, N+1)
    ce_by_hand = (torch.logsumexp(full, 1) - full.gather(1, t[:, None])[:, 0]).mean() + model.l2_penalty()
    pool = torch.tensor([2, 5, 8])  # (P,) shared negatives
    pl = h[v] @ out[pool].T  # (n, P)
    pl = pl.masked_fill(pool[None] == t[:, None], float("-inf"))
    ss_by_hand = (torch.logsumexp(torch.cat([lp[:, None], pl], 1), 1) - lp).mean() + model.l2_penalty()
    uniform = torch.full((9,), -torch.log(torch.tensor(8.0)))
    objs = (model.loss(seqs, pos, kind="ce"), ce_by_hand, model.loss(seqs, pos, pool, kind="sampled_softmax"), ss_by_hand,
            model.loss(seqs, pos, pool, kind="sampled_softmax", logq=uniform))
objs

# %%
test_close(objs[0], objs[1], eps=1e-5); test_close(objs[2], objs[3], eps=1e-5); test_close(objs[4], objs[2], eps=1e-5)
assert objs[2] < objs[0]  # 3 negatives are easier than all 8 items
test_fail(lambda: model.loss(seqs, pos, kind="bce"), contains="needs negatives")
test_fail(lambda: model.loss(seqs, pos, neg, kind="softmax"), contains="kind='softmax'")
tb = TrainBatch(torch.arange(3), seqs, pos, pool, kind="sampled_softmax")
with torch.no_grad(): test_close(model.training_loss(tb), objs[2], eps=1e-6)  # the trainer's entry point

# %% [markdown]
# **Scores**: `score_all` and `score_candidates` agree, and padding can never be recommended.

# %%
with torch.no_grad():
    sa = model.score_all(seqs)  # (B, N+1)
    cand = torch.tensor([[2, 3, 0, 8], [7, 1, 5, 5], [1, 2, 3, 4]])
    sc = model.score_candidates(seqs, cand)
sa[:, :4], sc

# %%
test_eq(sa[:, 0], torch.full((3,), float("-inf")))
test_close(sc[cand != 0], sa.gather(1, cand)[cand != 0], eps=1e-6)
test_eq(sc[0, 2], float("-inf"))
with torch.no_grad(): blocks = torch.cat([model.score_items(model.user_states(seqs), lo, min(lo + 4, 9)) for lo in (0, 4, 8)], 1)
test_eq(blocks[:, 0], sa[:, 0]); test_close(blocks[:, 1:], sa[:, 1:], eps=1e-6)  # items in blocks: the same scores

# %% [markdown]
# **Trimming leading padding** (what the trainer does) changes no score, since positions are right-aligned.

# %%
with torch.no_grad():
    trimmed = model.score_all(seqs[:2, 2:])  # rows 0 and 1 only use the last 3 columns
(trimmed - sa[:2])[:, 1:].abs().max()

# %%
test_close(trimmed[:, 1:], sa[:2, 1:], eps=1e-5)


# %% [markdown]
# **Graph modes give the expected parameter sets**: the fixed-weight variant has no edge MLP, the no-graph
# variant no graph module at all, ablation E no positional table.

# %%
def param_groups(m):
    "Parameter counts per owning module (the graph's by submodule)."
    groups = {}
    for n, p in m.named_parameters():
        key = ".".join(n.split(".")[:2]) if n.startswith("graph.") else n.split(".")[0]
        groups[key] = groups.get(key, 0) + p.numel()
    return groups

variants = {"A learned": build_model("sagerec", 8, cfg, g), "B fixed": build_model("sagerec", 8, replace(cfg, graph_mode="fixed"), g),
            "C sasrec": build_model("sasrec", 8, cfg), "E no position": build_model("sagerec", 8, replace(cfg, use_position=False), g)}
{k: param_groups(m) for k, m in variants.items()}

# %%
test_eq(param_groups(variants["A learned"])["graph.edge_mlp"], (16 * 8 + 8) + (8 + 1))  # W1 (h, 2d), b1, W2 (1, h), b2 with h = d
assert "graph.edge_mlp" not in param_groups(variants["B fixed"]) and variants["B fixed"].graph is not None
assert variants["C sasrec"].graph is None and variants["C sasrec"].cfg.graph_mode == "none"
test_eq(variants["E no position"].encoder.pos_emb, None)
test_eq(sum(p.numel() for p in variants["C sasrec"].parameters()) + 16 * 8 + 8 + 8 + 1,
        sum(p.numel() for p in variants["A learned"].parameters()))  # the graph adds only the edge MLP

# %% [markdown]
# **Gradients reach the edge MLP from the recommendation loss**, and one Adam step lowers the loss on a toy
# batch (dropouts off so the comparison is exact).

# %%
seed_everything(0)
m = build_model("sagerec", 8, replace(cfg, dropout=0.0, edge_dropout=0.0, node_dropout=0.0), g)
opt = torch.optim.Adam(m.parameters(), lr=1e-2)
m.train()
l0 = m.loss(seqs, pos, neg)
opt.zero_grad(); l0.backward()
edge_grads = {n: p.grad.abs().sum().item() for n, p in m.graph.named_parameters()}
opt.step()
l1 = m.loss(seqs, pos, neg)
edge_grads, (l0.item(), l1.item())

# %%
assert all(v > 0 for v in edge_grads.values()), edge_grads
assert l1 < l0
test_eq(m.item_emb.weight.grad[0], torch.zeros(8))  # the padding row gets no gradient

# %% [markdown]
# **Computing only the batch's rows is exact**: on a batch that uses items 1, 2, 3, 5 and 6 (item 4 and 7 only
# send messages to them, item 8 is not involved), with the paper's dropouts on and the same seed, the loss and
# every gradient are the same as with the whole propagated table.

# %%
seqs_s, pos_s = torch.tensor([[0, 1, 2], [0, 0, 3]]), torch.tensor([[0, 2, 3], [0, 0, 2]])
neg_s = torch.tensor([[0, 5, 5], [0, 0, 6]])

def loss_and_grads(m, restrict: bool, seed: int = 0):
    "Training-mode loss and gradients with or without the batch-rows restriction."
    m.train(); m.zero_grad(); m.restrict_to_batch = restrict
    seed_everything(seed)
    loss = m.loss(seqs_s, pos_s, neg_s); loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in m.named_parameters()}

seed_everything(0)
m_rows = build_model("sagerec", 8, replace(cfg, edge_dropout=0.2, node_dropout=0.5), g)
cmp = []
for seed in range(6):  # six draws of the dropout masks
    (l_all, g_all), (l_rows, g_rows) = loss_and_grads(m_rows, False, seed), loss_and_grads(m_rows, True, seed)
    cmp.append(dict(loss_all=round(l_all, 6), loss_rows=round(l_rows, 6), max_grad_diff=max((g_all[n] - g_rows[n]).abs().max().item() for n in g_all),
                    edge_mlp_grad=g_all["graph.edge_mlp.lin1.weight"].abs().sum().item()))
cmp

# %%
for c in cmp: test_close(c["loss_rows"], c["loss_all"], eps=1e-6); assert c["max_grad_diff"] < 1e-5
assert sum(c["edge_mlp_grad"] > 0 for c in cmp) >= 3  # the edge MLP is in play in most draws


# %% [markdown]
# **Eval-time cache**: under `eval()` + `no_grad`, the propagated table is computed once and reused; an
# optimiser step (Adam in each of its implementations: for-loop, `foreach`, `fused`), `load_state_dict` and
# `train()` invalidate it. With gradients enabled it is never cached.

# %%
def cache_report(impl: str) -> dict:
    "Whether the eval cache is reused, and refreshed after each kind of parameter change."
    seed_everything(0)
    m = build_model("sagerec", 8, cfg, g)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2, **{impl: True} if impl != "for-loop" else dict(foreach=False))
    r = {}
    m.eval()
    with torch.no_grad(): t1, t2 = m.item_embeddings(), m.item_embeddings()
    r["reused"] = t1 is t2
    m.train(); m.loss(seqs, pos, neg).backward(); opt.step(); m.eval()  # train() already drops the cache...
    with torch.no_grad(): t3 = m.item_embeddings()
    with torch.no_grad(): r["reused_again"] = m.item_embeddings() is t3
    m.loss(seqs, pos, neg).backward()  # gradients in eval mode: computed fresh, the cache is left alone
    v0 = m.item_emb.weight._version
    opt.step()  # ...but the optimiser step must invalidate it
    r["step bumped the version counter"] = m.item_emb.weight._version != v0  # information only: False for fused
    with torch.no_grad(): t4 = m.item_embeddings(); fresh = m.compute_tables()[0]
    r["after_step"] = (t4 is not t3) and torch.equal(t4, fresh) and not torch.equal(t4, t3)
    sd = {k: v.clone() for k, v in m.state_dict().items()}; sd["item_emb.weight"][1] += 1.0
    m.load_state_dict(sd)
    with torch.no_grad(): t5 = m.item_embeddings()
    r["after_load"] = torch.equal(t5, m.compute_tables()[0]) and not torch.equal(t5, t4)
    r["grad_enabled_not_cached"] = m.item_embeddings() is not m.item_embeddings()
    return r

reports = {impl: cache_report(impl) for impl in ("for-loop", "foreach", "fused")}
reports

# %%
for r in reports.values(): assert all(v for k, v in r.items() if k != "step bumped the version counter"), r

# %% [markdown]
# **Output embedding switch**: with `"raw"` the scores use the raw table, with `"graph"` the propagated one.

# %%
seed_everything(0)
m_graph = build_model("sagerec", 8, cfg, g).eval()
m_raw = build_model("sagerec", 8, replace(cfg, output_embedding="raw"), g).eval(); m_raw.load_state_dict(m_graph.state_dict())
with torch.no_grad():
    same_inputs = torch.equal(m_graph.item_embeddings(), m_raw.item_embeddings())
    out_is_raw = torch.equal(m_raw.output_embeddings(), m_raw.item_emb.weight)
    diff = (m_graph.score_all(seqs) - m_raw.score_all(seqs))[:, 1:].abs().max()
same_inputs, out_is_raw, diff

# %%
assert same_inputs and out_is_raw and diff > 1e-4


# %% [markdown]
# ## The smallest contract model, and the graph plug-in
#
# A model that registers its table with `item_table()` and says how to encode gets the loss, the scores and the
# graph layer from the base class. Here the state after a sequence is its last item's (graph-enhanced) embedding.
# With `graph_mode="learned"` the same class propagates its table over the graph and the edge MLP learns from its
# loss; with `"none"` its tables are the raw embedding.

# %%
class LastItem(SeqRecModel):
    "The state after each position is the embedding of the item there."
    def __init__(self, n_items, cfg=None, graph=None, n_users=None):
        super().__init__(n_items, cfg, graph, n_users)
        self.item_table(); self.reset_parameters()
    def reset_parameters(self): xavier_init_(self)
    def encode_with(self, seqs, table, users=None): return F.embedding(seqs, table)  # (B, L, D)

seed_everything(0)
plain = LastItem(8, dict(dim=8, graph_mode="none"))
plugged = LastItem(8, dict(dim=8, graph_mode="learned", edge_dropout=0.0, node_dropout=0.0), g)
plugged.load_state_dict(plain.state_dict(), strict=False)  # the same item table
plugged.train(); plugged.loss(seqs, pos, neg).backward()
plain.eval(); plugged.eval()
with torch.no_grad(): moved = (plugged.item_embeddings() - plain.item_embeddings()).abs().amax(1)  # (N+1,) per item
plain.graph, type(plugged.graph).__name__, moved, plugged.graph.edge_mlp.lin1.weight.grad.abs().sum().item()

# %%
assert plain.graph is None and plugged.graph is not None
with torch.no_grad(): test_eq(plain.item_embeddings(), plain.item_emb.weight)
assert (moved[1:8] > 0).all() and moved[8] == 0  # items 1-7 have neighbours; item 8 has none
assert plugged.graph.edge_mlp.lin1.weight.grad.abs().sum() > 0

# %% [markdown]
# ## Errors a user can act on

# %%
test_fail(lambda: build_model("sagerec", 8, cfg), contains="needs the item graph")
test_fail(lambda: build_model("sagerec", 7, cfg, g), contains="build the graph from this dataset")
test_fail(lambda: build_model("nosuchmodel", 8, cfg), contains="Unknown model 'nosuchmodel'")
test_fail(lambda: model.score_all(torch.tensor([[0, 9]])), contains="Item ids must be in 0..8")
test_fail(lambda: model.loss(seqs, pos, neg[:2]), contains="loss needs seqs (B, L)")
test_fail(lambda: model.loss(seqs, torch.zeros_like(pos), neg), contains="no position with a target")
test_fail(lambda: model.score_all(seqs.float()), contains="must be an integer tensor")
test_fail(lambda: model.encode(torch.zeros(1, 6, dtype=torch.long)), contains="max_len=5")

# %% [markdown]
# ## Beyond the paper: a gate on the graph, and the text as input
#
# With the propagation applied to the free ID table, $E' = (I + \hat A)E$ is an invertible reparameterisation
# of $E$: the layer changes how neighbours' updates couple, but cannot express a table that $E$ alone could
# not. Two switches, each a named variant of the train notebook and off in the paper's model, let the
# semantics count in other ways (measured in `nbs/accuracy.ipynb`):
#
# - `graph_gate=True`: $E' = E + a\,(\mathrm{prop}(E) - E)$ with a learned scalar $a$ that starts at 0, so the
#   model starts as its no-graph counterpart and takes in as much propagation as helps (the paper fixes $a = 1$).
# - `text_input=True`: every item's ID embedding gets a learned linear projection of its Sentence-BERT vector
#   added, $e_i = z_i + W s_i$, where $s_i$ are the vectors' top `text_dim` principal components (fixed; zero rows
#   stay zero, so the padding and text-less items add nothing). The vectors come with the graph:
#   `build_graph(emb).with_features(emb)`. An item seen rarely in training is then placed by its text.

# %%
feats = torch.randn(9, 12); feats[0] = 0  # (N+1, F) item vectors, padding row zero
gt = g.with_features(feats)
seed_everything(0)
plain = build_model("sagerec", 8, cfg, g)
seed_everything(0)
gated = build_model("sagerec", 8, replace(cfg, graph_mode="learned", graph_gate=True), g)
texty = build_model("sasrec", 8, replace(cfg, text_input=True, text_dim=4), gt)
with torch.no_grad():
    raw_g, (inp_g, out_g) = gated.item_emb.weight.detach(), gated.tables()
float(gated.gate), (inp_g - raw_g).abs().max(), texty.text_feats.shape, texty.text_feats[0].abs().max()

# %%
test_eq(float(gated.gate), 0.0); test_eq(inp_g, raw_g)  # a = 0: exactly the raw table
test_eq(texty.text_feats.shape, (9, 4)); test_eq(texty.text_feats[0], torch.zeros(4))
test_close(texty.text_feats[1:].norm(dim=1).mean(), 1.0, eps=1e-5)
texty.train(); l = texty.loss(seqs, pos, neg); l.backward()
assert texty.text_proj.weight.grad.abs().sum() > 0 and texty.graph is None  # the text reaches the loss; no propagation
gated.train(); gated.loss(seqs, pos, neg).backward()
assert gated.gate.grad.abs() > 0  # the gate learns from its first step
test_fail(lambda: build_model("sasrec", 8, replace(cfg, text_input=True), g), contains="needs the items' Sentence-BERT vectors")


# %% [markdown]
# ## Cost of one training step at Beauty size
#
# One forward + backward + Adam step of a Beauty-sized batch on a synthetic catalogue: N = 12,101 items, a
# random graph of 35,000 undirected (70,000 directed) edges, B = 128 sequences with Beauty-like lengths
# (mostly short, a long tail up to 50), one negative per position, the batch trimmed to its longest sequence as
# the trainer does. SASRec and SAGERec steps alternate so that both see the same machine load; the cell
# reports the median wall time and CPU time per step, the threads used and the load average (this machine is
# shared, so wall times vary with what else runs).

# %%
#| slow
def beauty_like_batch(n_items: int = 12101, B: int = 128, L: int = 50, seed: int = 0):
    "Synthetic (seqs, pos, neg) with ~9 interactions per user (geometric tail), trimmed to the longest row."
    g = torch.Generator().manual_seed(seed)
    lengths = torch.clamp(torch.distributions.Geometric(probs=torch.tensor(1 / 7.0)).sample((B,)).long() + 3, max=L + 1)
    seqs, pos = torch.zeros(B, L, dtype=torch.long), torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate(lengths.tolist()):
        s = torch.randint(1, n_items + 1, (n,), generator=g)
        seqs[b, L - (n - 1):], pos[b, L - (n - 1):] = s[:-1], s[1:]
    width = int((seqs != 0).sum(1).max())
    seqs, pos = seqs[:, -width:], pos[:, -width:]
    return seqs, pos, torch.randint(1, n_items + 1, pos.shape, generator=g) * (pos != 0)

def step_times(names=("sasrec", "sagerec"), n_items: int = 12101, n_und: int = 35000, reps: int = 20, seed: int = 0) -> dict:
    "Median wall and CPU milliseconds of one training step (loss, backward, Adam) per model, steps interleaved."
    import os
    seed_everything(seed)
    graph = random_graph(n_items + 1, n_und, seed=seed)
    seqs, pos, neg = beauty_like_batch(n_items, seed=seed)
    models = {n: build_model(n, n_items, ModelConfig(), graph).train() for n in names}
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    wall, cpu = {n: [] for n in names}, {n: [] for n in names}
    for r in range(reps + 3):
        for n in names:
            t, c = time.perf_counter(), time.process_time()
            opts[n].zero_grad(); models[n].loss(seqs, pos, neg).backward(); opts[n].step()
            if r >= 3: wall[n].append(time.perf_counter() - t); cpu[n].append(time.process_time() - c)
    med = lambda v: round(1000 * sorted(v)[len(v) // 2], 1)
    out = {n: dict(wall_ms=med(wall[n]), cpu_ms=med(cpu[n])) for n in names}
    m = models["sagerec"].eval()
    with torch.no_grad():
        t = time.perf_counter(); m.item_embeddings(); out["sagerec"]["eval_table_ms"] = round(1000 * (time.perf_counter() - t), 1)
    out["batch"] = dict(rows=seqs.shape[0], width=seqs.shape[1], items=int((seqs != 0).sum()), directed_edges=graph.edge_index.shape[1])
    out["threads"], out["load_avg_1min"] = torch.get_num_threads(), round(os.getloadavg()[0], 2)
    return out

timings = {}
for threads in (1, 2):
    torch.set_num_threads(threads)
    timings[threads] = step_times()
torch.set_num_threads(2)
timings

# %%
#| slow
for t in timings.values():
    assert t["batch"]["directed_edges"] == 70000 and t["sasrec"]["wall_ms"] > 0 and t["sagerec"]["cpu_ms"] > 0
    assert t["batch"]["items"] < 0.5 * t["batch"]["rows"] * t["batch"]["width"]  # most of the trimmed batch is padding

# %%
#| hide
import nbdev; nbdev.nbdev_export()
