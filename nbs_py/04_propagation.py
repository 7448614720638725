# %% [markdown]
# # Adaptive graph propagation
# > One residual graph layer over the item catalogue, $E^{(l+1)} = E^{(l)} + \hat A E^{(l)}$, with edge weights learned by a small MLP, and edge and node dropout.

# %%
#| default_exp propagation

# %%
#| export
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from sagerec.core import check

# %%
#| hide
from types import SimpleNamespace

import numpy as np
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import SageRecError, seed_everything
from sagerec.graph import ItemGraph


# %% [markdown]
# ## The graph as edge tensors
#
# The item graph (built in the graph stage) arrives in the PyG form: `edge_index (2, E)` holds every undirected
# edge in **both** directions, `edge_weight (E,)` its cosine similarity, `num_nodes = n_items + 1` (node 0 is
# padding and never has edges). Edge $k$ carries a message from `src = edge_index[0, k]` to
# `dst = edge_index[1, k]`; in matrix terms it is the entry $A_{\text{dst},\text{src}}$, and $(\hat A E)_i = \sum_j \hat A_{ij} E_j$
# sums the rows of $i$'s in-neighbours. Any object with those three attributes will do (`sagerec.graph.ItemGraph`
# is one); the lessons below use hand-made `ItemGraph`s.

# %%
def toy_graph(pairs, weights, num_nodes):
    "A hand-made graph in the graph stage's layout: each undirected pair (i, j) stored as i->j and j->i."
    pairs = torch.tensor(pairs).T  # (2, M)
    ei = torch.cat([pairs, pairs.flip(0)], 1)  # (2, 2M)
    w = torch.tensor(weights, dtype=torch.float32).repeat(2)  # (2M,)
    return ItemGraph(ei, w, num_nodes)

# Five nodes: 0 = padding, a triangle 1-2-3 with weights 0.5, 1.0, 0.25, and item 4 with no neighbour.
g5 = toy_graph([(1, 2), (2, 3), (1, 3)], [0.5, 1.0, 0.25], num_nodes=5)
g5.edge_index


# %% [markdown]
# ## Symmetric normalisation from the weighted degrees, in log space
#
# $\hat A = D^{-1/2} A D^{-1/2}$ with $D_{ii} = \sum_j A_{ij}$ taken from the **weighted** adjacency, so a
# learned edge weight moves the degrees too and receives gradient through them (as PyG's `gcn_norm`).
#
# The values are computed from the **log** weights: $\hat A_{ij} = \exp\big(\log w_{ij} - \tfrac12 \log d_i - \tfrac12 \log d_j\big)$,
# with $\log d_i = \operatorname{logsumexp}_{j \to i} \log w_{ij}$ over the edges into $i$ (`scatter_logsumexp`: the
# per-node maximum, then a sum of exponentials relative to it). The learned weights arrive as logits $s$, and
# $\log w = \log\sigma(s)$ (`F.logsigmoid`) never underflows, so $\hat A$ and its gradient stay finite however far the
# logits drift, which they may, since $\hat A$ does not change when every weight is scaled alike (shown below).
# The direct formula $d^{-1/2}$ overflows in the backward pass once the weights are tiny (shown below too).
# A node with no edge never appears on an edge, so it simply has no value; no $+\varepsilon$ is added anywhere.

# %%
#| export
def scatter_logsumexp(x: Tensor,  # (E,) values, -inf allowed
                      index: Tensor,  # (E,) group of each value (node id)
                      num_nodes: int,  # N, groups are 0..N-1
                     ) -> Tensor:  # (N,) log(sum(exp(x))) per group; 0 for a group without a finite value (never gathered)
    "Stable per-group logsumexp: the group maximum (no gradient needed, it cancels), then the log of the shifted sum."
    mx = x.detach().new_full((num_nodes,), float("-inf")).scatter_reduce_(0, index, x.detach(), "amax")  # (N,)
    mx = mx.masked_fill_(mx == float("-inf"), 0.0)  # empty groups (or all -inf): any finite shift
    s = x.new_zeros(num_nodes).index_add(0, index, (x - mx[index]).exp())  # (N,) in [1, E_i] where a finite value exists
    return s.masked_fill(s == 0, 1.0).log() + mx  # (N,)

def sym_norm_log(edge_index: Tensor,  # (2, E) message src -> dst
                 log_weight: Tensor,  # (E,) log of each edge's non-negative weight (-inf for a zero weight)
                 num_nodes: int,  # N, nodes are 0..N-1
                 at: Tensor | None = None,  # (S,) positions of the edges whose value is wanted (None: all E)
                ) -> Tensor:  # (E,) or (S,) the entries of D^-1/2 A D^-1/2
    "Per-edge values of $\\hat A = D^{-1/2} A D^{-1/2}$ computed in log space; degrees from all E weighted edges."
    src, dst = edge_index
    logdeg = scatter_logsumexp(log_weight, dst, num_nodes)  # (N,) log weighted degree
    if at is not None: src, dst, log_weight = src[at], dst[at], log_weight[at]
    return torch.exp(log_weight - 0.5 * logdeg[dst] - 0.5 * logdeg[src])  # (E,) or (S,); logdeg is finite, so w = 0 gives 0

def sym_norm(edge_index: Tensor,  # (2, E) message src -> dst
             edge_weight: Tensor,  # (E,) non-negative weight of each edge
             num_nodes: int,  # N, nodes are 0..N-1
            ) -> Tensor:  # (E,) the entries of D^-1/2 A D^-1/2, one per edge
    "Per-edge values of $\\hat A = D^{-1/2} A D^{-1/2}$ from the weights (`sym_norm_log` of their log); isolated nodes -> 0."
    return sym_norm_log(edge_index, edge_weight.log(), num_nodes)


# %% [markdown]
# The same matrix written out densely by hand for the five-node graph: degrees $d_1 = 0.5 + 0.25 = 0.75$,
# $d_2 = 0.5 + 1 = 1.5$, $d_3 = 1 + 0.25 = 1.25$, $d_0 = d_4 = 0$; then $\hat A_{ij} = A_{ij} / \sqrt{d_i d_j}$.

# %%
A = torch.tensor([[0, 0,    0,    0,    0],
                  [0, 0,    0.5,  0.25, 0],
                  [0, 0.5,  0,    1.0,  0],
                  [0, 0.25, 1.0,  0,    0],
                  [0, 0,    0,    0,    0]])
d = torch.tensor([0, 0.75, 1.5, 1.25, 0])
A_hat_ref = torch.zeros(5, 5)
for i in range(5):
    for j in range(5):
        if A[i, j] > 0: A_hat_ref[i, j] = A[i, j] / (d[i] * d[j]) ** 0.5

norm = sym_norm(g5.edge_index, g5.edge_weight, 5)
A_hat = torch.zeros(5, 5).index_put((g5.edge_index[1], g5.edge_index[0]), norm)  # dense, for display only
A_hat

# %%
test_close(A_hat, A_hat_ref, eps=1e-6)
test_close(A_hat[1, 2], 0.5 / (0.75 * 1.5) ** 0.5, eps=1e-6)
test_close(A_hat, A_hat.T, eps=1e-7)  # symmetric weights give a symmetric Â
assert torch.isfinite(norm).all()

# %% [markdown]
# A consequence worth knowing: $\hat A$ only sees weights *relative* to each node's other edges. Scaling every
# weight by the same factor changes nothing, so the edge MLP can only re-balance a node's neighbours against
# each other (for a pair of nodes linked only to each other, $\hat A_{ij} = 1$ whatever $w_{ij}$ is).

# %%
norm_scaled = sym_norm(g5.edge_index, 7.0 * g5.edge_weight, 5)
(norm_scaled - norm).abs().max()

# %%
test_close(norm_scaled, norm, eps=1e-6)


# %% [markdown]
# Nothing therefore holds the learned logits in place: in long training runs they can drift down together,
# and the weights become tiny. With logits of $-80$ ($w \approx 10^{-35}$), the direct formula
# $w_{ij}\, d_i^{-1/2} d_j^{-1/2}$ still gives the right values, but its gradient overflows (the derivative of $d^{-1/2}$
# is $-\tfrac12 d^{-3/2} \approx 10^{52}$, beyond float32); the log-space computation gives finite values and
# gradients, and the values equal those of equal logits of 0 (the same weights up to a common factor).

# %%
def naive_sym_norm(edge_index, edge_weight, num_nodes):
    "The direct formula, for comparison only."
    src, dst = edge_index
    dinv = edge_weight.new_zeros(num_nodes).index_add(0, dst, edge_weight).pow(-0.5)  # (N,)
    dinv = dinv.masked_fill(torch.isinf(dinv), 0.0)
    return dinv[dst] * edge_weight * dinv[src]

seed_everything(0)
probe = torch.randn(g5.edge_index.shape[1])  # a loss that weighs the entries differently
tiny = {}
for name in ("naive", "log space"):
    logits = torch.full((g5.edge_index.shape[1],), -80.0).index_add(0, torch.arange(6), 0.5 * torch.rand(6)).requires_grad_(True)
    vals = (naive_sym_norm(g5.edge_index, torch.sigmoid(logits), 5) if name == "naive"
            else sym_norm_log(g5.edge_index, F.logsigmoid(logits), 5))
    (vals * probe).sum().backward()
    tiny[name] = dict(values_finite=bool(torch.isfinite(vals).all()), grad=logits.grad)
tiny

# %%
assert tiny["naive"]["values_finite"] and not torch.isfinite(tiny["naive"]["grad"]).all()  # the old formula's gradient is inf/nan
assert tiny["log space"]["values_finite"] and torch.isfinite(tiny["log space"]["grad"]).all()
assert tiny["log space"]["grad"].abs().sum() > 0
flat = torch.full((g5.edge_index.shape[1],), -80.0)
test_close(sym_norm_log(g5.edge_index, F.logsigmoid(flat), 5), sym_norm(g5.edge_index, torch.full_like(flat, 0.5), 5), eps=1e-6)
test_close(sym_norm_log(g5.edge_index, g5.edge_weight.log(), 5), naive_sym_norm(g5.edge_index, g5.edge_weight, 5), eps=1e-6)
test_close(sym_norm_log(g5.edge_index, g5.edge_weight.log(), 5, at=torch.tensor([4, 1])), norm[[4, 1]], eps=1e-7)


# %% [markdown]
# ## One residual layer
#
# $E^{(l+1)} = E^{(l)} + \hat A E^{(l)}$: each item keeps its own row and adds its normalised neighbours'.
# The sum is a gather (`index_select`) and a scatter-add (`index_add`) over the E edges, never an N x N matrix.

# %%
#| export
def graph_layer(x: Tensor,  # (N, D) node features E^(l)
                edge_index: Tensor,  # (2, E) message src -> dst
                norm: Tensor,  # (E,) normalised edge values from `sym_norm`
               ) -> Tensor:  # (N, D) E^(l+1)
    "One residual propagation step $E + \\hat A E$ with sparse gather/scatter ops."
    src, dst = edge_index
    msg = norm[:, None] * x.index_select(0, src)  # (E, D)
    return x.index_add(0, dst, msg)  # (N, D)


# %%
seed_everything(0)
E0 = torch.randn(5, 3); E0[0] = 0  # row 0 = padding
E1 = graph_layer(E0, g5.edge_index, norm)
E1

# %%
test_close(E1, E0 + A_hat_ref @ E0, eps=1e-6)
test_eq(E1[4], E0[4])  # item 4 has no neighbour: unchanged, and finite
test_eq(E1[0], torch.zeros(3))  # padding stays zero


# %% [markdown]
# ## The edge-weight MLP
#
# $w_{ij} = \sigma\big(W_2\,\mathrm{ReLU}(W_1[e_i \Vert e_j] + b_1) + b_2\big)$, $W_1 \in \mathbb R^{h \times 2d}$, $h = d$,
# no dropout inside (the paper tried it and dropped it). Since $W_1[e_i \Vert e_j] = W_1^{(a)} e_i + W_1^{(b)} e_j$,
# the two halves are applied once per **node** (N x d x h) and only added per edge, so no (E, 2d) concatenation
# is built. `EdgeMLP` returns the logit (the value inside $\sigma$); both halves come from one matrix product.
#
# **One weight per undirected edge (default).** The formula is not symmetric in $i, j$, but the graph is
# undirected. The rule used here: average the logits of both orders, $w_{ij} = w_{ji} = \sigma\big((s_{ij} + s_{ji})/2\big)$
# with $s_{ij}$ the MLP's logit for $[e_i \Vert e_j]$. `symmetric=False` gives the other reading: each direction
# gets its own weight, the message $j \to i$ weighted by $\sigma(s_{ij})$ (receiver first).

# %%
#| export
class EdgeMLP(nn.Module):
    "Edge logits $s_{ij} = W_2\\,\\mathrm{ReLU}(W_1[e_i \\Vert e_j] + b_1) + b_2$ (the sigmoid is applied by the caller)."
    def __init__(self,
                 dim: int,  # d, width of the item embeddings
                 hidden: int | None = None,  # h, hidden width (paper: h = d)
                ):
        super().__init__()
        self.dim = dim
        self.lin1 = nn.Linear(2 * dim, hidden or dim)  # W1 (h, 2d), b1 (h,)
        self.lin2 = nn.Linear(hidden or dim, 1)  # W2 (1, h), b2 (1,)

    def forward(self,
                x: Tensor,  # (N, d) node embeddings
                i: Tensor,  # (M,) first node of each pair
                j: Tensor,  # (M,) second node of each pair
                symmetric: bool = False,  # average the logits of (i, j) and (j, i)
               ) -> Tensor:  # (M,) logits
        w1, h = self.lin1.weight, self.lin1.out_features  # (h, 2d)
        pq = F.linear(x, torch.cat([w1[:, :self.dim], w1[:, self.dim:]]), F.pad(self.lin1.bias, (0, h)))  # (N, 2h) [W1a e + b1 | W1b e]
        if not symmetric:
            return self.lin2(F.relu(pq[:, :h].index_select(0, i) + pq[:, h:].index_select(0, j))).squeeze(-1)  # (M,)
        pre = pq.index_select(0, i) + pq.roll(h, 1).index_select(0, j)  # (M, 2h) [p_i + q_j | q_i + p_j], both orders at once
        return self.lin2(F.relu(pre).view(-1, 2, h)).squeeze(-1).mean(1)  # (M,) (s_ij + s_ji) / 2


# %% [markdown]
# The split form is the paper's formula: compare with the literal concatenation on random pairs.

# %%
seed_everything(0)
mlp, x = EdgeMLP(4), torch.randn(6, 4)
i, j = torch.tensor([1, 2, 5, 3]), torch.tensor([2, 1, 3, 5])
literal = mlp.lin2(F.relu(mlp.lin1(torch.cat([x[i], x[j]], -1)))).squeeze(-1)
mlp(x, i, j), literal

# %%
test_close(mlp(x, i, j), literal, eps=1e-6)
test_eq([p.shape for p in mlp.parameters()], [(4, 8), (4,), (1, 4), (1,)])  # h = d
sym = mlp(x, i, j, symmetric=True)
test_close(sym[0], sym[1], eps=1e-6)  # (1,2) and (2,1) share one logit
test_close(sym[0], (literal[0] + literal[1]) / 2, eps=1e-6)


# %% [markdown]
# ## Undirected edge ids
#
# Edge dropout removes an undirected edge in both directions at once, and the symmetric rule computes one
# weight per undirected edge. Both need the map from each directed edge to its undirected pair $(u \le v)$;
# it is computed once, when the layer is built.

# %%
#| export
def undirected_pairs(edge_index: Tensor,  # (2, E) directed edges (both directions of each undirected edge)
                     num_nodes: int,  # N
                    ) -> tuple[Tensor, Tensor]:  # pairs (2, M) with u <= v, and inverse (E,) -> pair id
    "The undirected pairs of a directed edge list, and which pair each directed edge belongs to."
    lo, hi = edge_index.min(0).values, edge_index.max(0).values  # (E,), (E,)
    key, inverse = torch.unique(lo * num_nodes + hi, return_inverse=True)  # (M,), (E,)
    return torch.stack([key // num_nodes, key % num_nodes]), inverse


# %%
pairs, inv = undirected_pairs(g5.edge_index, 5)
pairs, inv

# %%
test_eq(pairs.T.tolist(), [[1, 2], [1, 3], [2, 3]])
test_eq(pairs[:, inv].sort(0).values, g5.edge_index.sort(0).values)  # every directed edge maps to its own pair

# %% [markdown]
# ## The layer: weights, dropout, propagation
#
# `GraphPropagation` holds the fixed graph as buffers and, per forward pass over the item table:
#
# 1. edge weights: `mode="learned"` (SAGERec, ablation A): from `EdgeMLP` on the current embeddings (one weight
#    per undirected edge unless `symmetric=False`); `mode="fixed"` (ablation B): the graph's cosine weights,
#    no parameters. The random-graph ablation (D) is this layer on a graph from `sagerec.graph.random_graph`;
#    self-loops, when wanted, are edges $(i, i)$ added when the graph is built.
# 2. in training only: **edge dropout** (`edge_dropout=0.2`) keeps each undirected edge with probability 0.8,
#    a fresh subset every call, both directions together; $\hat A$ is normalised on the edges kept.
#    **Node dropout** (`node_dropout=0.5`), three readings:
#    - `"messages"` (default, SPEC.md): a dropped node sends no message in this step. $\hat A$ stays the one of
#      the edge-dropped graph; the messages of dropped senders are removed and the others scaled by 1/(1-p),
#      so a row's expected aggregate equals its evaluation-time value (inverted dropout, as `F.dropout`).
#    - `"rows"` (SPEC.md's other reading): dropout on whole rows of the embedding table before propagation
#      (the node's own row too), scaled by 1/(1-p).
#    - `"nodes"` (SGL's node dropout, the augmentation the paper's term comes from): a dropped node loses all
#      its edges, both directions, before $\hat A$ is normalised.
# 3. `sym_norm_log` on the log weights of the kept graph, then `n_layers` residual layers (default 1). With several
#    layers the same $\hat A$ (weights from $E^{(0)}$) is used at every layer.
#
# The dropout masks are drawn first, so in training the edge MLP only runs on the undirected edges that are
# still in the graph (80% at the paper's rates), and projects only the nodes at their ends.
#
# **Only the rows a step uses.** A training step reads a few thousand rows of the propagated table (the items of
# its batch and its negatives), not all N. With `rows=` (one layer), the layer sends only the messages into
# those rows, and computes edge weights only where a degree they need depends on them: the edges into the
# wanted rows and into their senders. The wanted rows come out exactly as in the full computation (same
# dropout masks); the other rows are left as the input and must not be used.
#
# After each call, `work` holds what it computed: `weighted_edges` (directed edges whose weight entered a degree),
# `messages` (directed edges that carried a message), `mlp_pairs` (pairs the edge MLP scored) and `projected_nodes`
# (rows of the table the MLP's first layer projected). The training benchmark turns these into a cost account.

# %%
#| export
GRAPH_MODES = ("learned", "fixed")
NODE_DROPOUT_MODES = ("messages", "rows", "nodes")

class GraphPropagation(nn.Module):
    "Adaptive graph layer(s) $E^{(l+1)} = E^{(l)} + \\hat A E^{(l)}$ over a fixed item graph (learned or fixed weights)."
    def __init__(self,
                 graph: Any,  # has edge_index (2, E), edge_weight (E,), num_nodes (node 0 = padding, no edges)
                 dim: int,  # d, width of the item embeddings
                 mode: str = "learned",  # "learned": edge MLP weights (A); "fixed": cosine weights (ablation B)
                 n_layers: int = 1,  # propagation layers (paper: 1)
                 edge_dropout: float = 0.2,  # share of undirected edges dropped per training step
                 node_dropout: float = 0.5,  # share of nodes dropped per training step
                 node_dropout_mode: str = "messages",  # "messages": dropped nodes send nothing; "rows": row dropout; "nodes": SGL
                 symmetric: bool = True,  # one weight per undirected edge (mean of both orders' logits)
                ):
        super().__init__()
        check(mode in GRAPH_MODES, f"Unknown graph mode {mode!r}: use one of {GRAPH_MODES} (or build the model with graph_mode='none').")
        check(node_dropout_mode in NODE_DROPOUT_MODES, f"Unknown node_dropout_mode {node_dropout_mode!r}: use one of {NODE_DROPOUT_MODES}.")
        check(n_layers >= 1, f"n_layers={n_layers}: use at least 1 propagation layer (or graph_mode='none' for no graph).")
        for name, p in (("edge_dropout", edge_dropout), ("node_dropout", node_dropout)):
            check(0 <= p < 1, f"{name}={p} must be in [0, 1).")
        for a in ("edge_index", "edge_weight", "num_nodes"):
            check(hasattr(graph, a), f"The graph has no attribute {a!r}: pass an ItemGraph from sagerec.graph.build_graph "
                                     "(edge_index (2, E), edge_weight (E,), num_nodes).")
        ei, w, n = torch.as_tensor(graph.edge_index).long(), torch.as_tensor(graph.edge_weight).float(), int(graph.num_nodes)
        check(ei.ndim == 2 and ei.shape[0] == 2, f"edge_index has shape {tuple(ei.shape)}; it must be (2, E).")
        check(w.shape == (ei.shape[1],), f"edge_weight has shape {tuple(w.shape)}; it must be (E,) = ({ei.shape[1]},).")
        if ei.numel():
            check(int(ei.min()) >= 0 and int(ei.max()) < n, f"edge_index holds node ids outside 0..{n - 1} (num_nodes={n}).")
            check(not bool((ei == 0).any()), "The graph has edges at node 0, which is padding: rebuild it from an "
                                             "embedding array whose row 0 is the padding row (build_graph does this).")
        check(mode != "fixed" or not bool((w < 0).any()), "graph_mode='fixed' uses the cosine weights as edge weights, and "
              "some are negative: rebuild the graph with tau >= 0 or use graph_mode='learned'.")
        self.dim, self.num_nodes, self.mode, self.n_layers = dim, n, mode, n_layers
        self.edge_dropout, self.node_dropout, self.node_dropout_mode, self.symmetric = edge_dropout, node_dropout, node_dropout_mode, symmetric
        pairs, inverse = undirected_pairs(ei, n)
        self.register_buffer("edge_index", ei, persistent=False)  # (2, E)
        self.register_buffer("edge_weight", w, persistent=False)  # (E,) cosine
        self.register_buffer("log_edge_weight", w.log(), persistent=False)  # (E,) log cosine (fixed mode; -inf for 0)
        self.register_buffer("pairs", pairs, persistent=False)  # (2, M)
        self.register_buffer("pair_of_edge", inverse, persistent=False)  # (E,)
        self.edge_mlp = EdgeMLP(dim) if mode == "learned" else None
        self.work: dict[str, int] = {}  # sizes of the last forward pass (see `forward`), for cost accounting

    @property
    def num_edges(self) -> int: return self.edge_index.shape[1]

    def extra_repr(self) -> str:
        return (f"mode={self.mode!r}, nodes={self.num_nodes}, edges={self.num_edges}, layers={self.n_layers}, "
                f"edge_dropout={self.edge_dropout}, node_dropout={self.node_dropout} ({self.node_dropout_mode}), symmetric={self.symmetric}")

    def log_edge_weights(self,
                         x: Tensor,  # (N, d) node embeddings
                         idx: Tensor | None = None,  # (E',) positions of the directed edges wanted (None: all)
                        ) -> Tensor:  # (E',) log weight of each wanted directed edge
        "Log edge weights for this step: $\\log\\sigma$ of the edge MLP's logits on `x`, or the log cosine weights."
        if self.edge_mlp is None: return self.log_edge_weight if idx is None else self.log_edge_weight[idx]
        if not self.symmetric:
            src, dst = self.edge_index if idx is None else self.edge_index[:, idx]
            self.work.update(mlp_pairs=src.shape[0], projected_nodes=x.shape[0])
            return F.logsigmoid(self.edge_mlp(x, dst, src))  # receiver first: w_ij for the message j -> i
        if idx is None:
            self.work.update(mlp_pairs=self.pairs.shape[1], projected_nodes=x.shape[0])
            return F.logsigmoid(self.edge_mlp(x, self.pairs[0], self.pairs[1], symmetric=True))[self.pair_of_edge]  # (E,)
        pid = self.pair_of_edge[idx]  # (E',) pair of each wanted edge
        M, N, dev = self.pairs.shape[1], self.num_nodes, x.device
        sel = torch.zeros(M, dtype=torch.bool, device=dev).index_fill_(0, pid, True).nonzero().squeeze(1)  # (m,) pairs needed
        ends = self.pairs[:, sel]  # (2, m)
        nodes = torch.zeros(N, dtype=torch.bool, device=dev).index_fill_(0, ends.reshape(-1), True).nonzero().squeeze(1)  # (U,) their nodes
        slot = torch.empty(N, dtype=torch.long, device=dev)
        slot.index_copy_(0, nodes, torch.arange(len(nodes), device=dev))  # node id -> row of x[nodes]
        loc = slot[ends]  # (2, m)
        self.work.update(mlp_pairs=sel.shape[0], projected_nodes=nodes.shape[0])
        s = self.edge_mlp(x.index_select(0, nodes), loc[0], loc[1], symmetric=True)  # (m,) node projections only for the U nodes
        pslot = torch.empty(M, dtype=torch.long, device=dev).index_copy_(0, sel, torch.arange(len(sel), device=dev))  # pair -> row of s
        return F.logsigmoid(s).index_select(0, pslot[pid])  # (E',)

    def edge_weights(self,
                     x: Tensor,  # (N, d) node embeddings
                     keep: Tensor | None = None,  # (E,) bool, the directed edges wanted (None: all)
                    ) -> Tensor:  # (E',) weight of each wanted directed edge
        "Edge weights for this step: the edge MLP's on `x`, or the fixed cosine weights; only for the edges in `keep`."
        if self.edge_mlp is None: return self.edge_weight if keep is None else self.edge_weight[keep]
        return self.log_edge_weights(x, None if keep is None else keep.nonzero().squeeze(1)).exp()

    def dropout_masks(self) -> tuple[Tensor | None, Tensor | None]:  # keep (E,) bool or None, alive (N,) bool or None
        "Fresh training-time masks: which directed edges stay in the graph, which nodes are alive (None: no dropout)."
        if not self.training: return None, None
        dev, keep, alive = self.edge_index.device, None, None
        if self.edge_dropout > 0:
            keep = (torch.rand(self.pairs.shape[1], device=dev) >= self.edge_dropout)[self.pair_of_edge]  # (E,) both directions together
        if self.node_dropout > 0:
            alive = torch.rand(self.num_nodes, device=dev) >= self.node_dropout  # (N,)
            if self.node_dropout_mode == "nodes":  # SGL: a dropped node takes all its edges with it
                both = alive[self.edge_index[0]] & alive[self.edge_index[1]]  # (E,)
                keep = both if keep is None else keep & both
        return keep, alive

    def forward(self,
                x: Tensor,  # (N, d) item table E^(0)
                rows: Tensor | None = None,  # ids of the rows that will be used (None: all); honoured with 1 layer
               ) -> Tensor:  # (N, d) propagated table; with `rows`, the other rows are left as in `x`
        "Propagate the item table `x` through `n_layers` residual graph layers (only the rows in `rows`, if given)."
        check(x.shape[0] == self.num_nodes, f"The item table has {x.shape[0]} rows but the graph has {self.num_nodes} nodes "
                                           "(n_items + 1): build the graph for this dataset.")
        keep, alive = self.dropout_masks()  # keep: edges of this step's graph (degrees come from them)
        src, dst = self.edge_index
        drop_msgs = alive is not None and self.node_dropout_mode == "messages"
        send = keep  # (E,) bool or None: the edges that carry a message
        if drop_msgs: send = alive[src] if keep is None else keep & alive[src]
        use = keep  # (E,) bool or None: the edges whose weight is needed
        if rows is not None and self.n_layers == 1:
            out_rows = torch.zeros(self.num_nodes, dtype=torch.bool, device=x.device).index_fill_(0, rows, True)  # (N,)
            send = out_rows[dst] if send is None else send & out_rows[dst]  # (E,) messages into the wanted rows
            deg_rows = out_rows.index_fill(0, src.masked_select(send), True)  # (N,) wanted rows and their senders need full degrees
            use = deg_rows[dst] if keep is None else keep & deg_rows[dst]  # (E,) every kept edge into those
        use_idx = None if use is None else use.nonzero().squeeze(1)  # (E',) positions of the weighted edges
        self.work = dict(weighted_edges=self.num_edges if use_idx is None else use_idx.shape[0], mlp_pairs=0, projected_nodes=0)
        logw = self.log_edge_weights(x, use_idx)  # (E',) the MLP runs only on pairs whose weight is needed
        if alive is not None and self.node_dropout_mode == "rows":
            x = x * (alive[:, None].to(x.dtype) / (1 - self.node_dropout))  # (N, d) row dropout
        ei = self.edge_index if use_idx is None else self.edge_index.index_select(1, use_idx)  # (2, E')
        at = None  # positions (in ei) of the edges that send a message; None: all of them
        if send is not None and send is not use:
            at = (send if use_idx is None else send.index_select(0, use_idx)).nonzero().squeeze(1)  # (S,)
        norm = sym_norm_log(ei, logw, self.num_nodes, at)  # (S,) degrees from all E' edges
        if at is not None: ei = ei.index_select(1, at)  # (2, S)
        self.work["messages"] = ei.shape[1]
        if drop_msgs: norm = norm / (1 - self.node_dropout)  # inverted dropout on the messages
        for _ in range(self.n_layers): x = graph_layer(x, ei, norm)  # (N, d)
        return x


# %% [markdown]
# In evaluation mode the layer is deterministic and equals the dense formula; the fixed mode has no
# parameters and uses the cosine weights.

# %%
seed_everything(0)
E0 = torch.randn(5, 3); E0[0] = 0
fixed = GraphPropagation(g5, dim=3, mode="fixed").eval()
learned = GraphPropagation(g5, dim=3, mode="learned").eval()
fixed, [n for n, _ in learned.named_parameters()]

# %%
test_close(fixed(E0), E0 + A_hat_ref @ E0, eps=1e-6)
test_eq(list(fixed.parameters()), [])
test_eq([n for n, _ in learned.named_parameters()], ["edge_mlp.lin1.weight", "edge_mlp.lin1.bias", "edge_mlp.lin2.weight", "edge_mlp.lin2.bias"])
with torch.no_grad():
    test_eq(learned(E0)[4], E0[4])  # the isolated item is unchanged in learned mode too
    test_eq(learned(E0), learned(E0))  # no randomness in eval mode


# %% [markdown]
# **Symmetric weights.** With the default rule every undirected edge has one weight, so $\hat A$ is symmetric;
# `symmetric=False` gives each direction its own.

# %%
def dense_A_hat(layer, x):
    "Â of `layer` in eval mode as a dense matrix (for small lessons only)."
    n = layer.num_nodes
    return torch.zeros(n, n).index_put((layer.edge_index[1], layer.edge_index[0]), sym_norm_log(layer.edge_index, layer.log_edge_weights(x), n))

with torch.no_grad():
    Ah_sym = dense_A_hat(learned, E0)
    directed = GraphPropagation(g5, dim=3, symmetric=False).eval(); directed.load_state_dict(learned.state_dict())
    Ah_dir = dense_A_hat(directed, E0)
Ah_sym[1:4, 1:4], (Ah_dir - Ah_dir.T).abs().max()

# %%
test_close(Ah_sym, Ah_sym.T, eps=1e-7)
assert (Ah_dir - Ah_dir.T).abs().max() > 1e-4  # the directed reading really differs
test_close(learned(E0).detach(), E0 + Ah_sym @ E0, eps=1e-6)  # the layer's output is E + Â E with the learned Â

# %% [markdown]
# **Gradients reach the edge MLP**, through the edge weights and through the weighted degrees:

# %%
seed_everything(0)
layer = GraphPropagation(g5, dim=3).train()
layer.edge_dropout = layer.node_dropout = 0.0  # keep every edge so the check is deterministic
E0 = torch.randn(5, 3, requires_grad=True)
layer(E0).square().sum().backward()
grads = {n: p.grad.abs().sum().item() for n, p in layer.named_parameters()}
grads

# %%
assert all(v > 0 for v in grads.values()), grads
assert torch.isfinite(E0.grad).all() and E0.grad[1:4].abs().sum() > 0

# %% [markdown]
# **Dropout only in training.** On a larger random graph: in training each call keeps a fresh ~80% of the
# undirected edges (both directions together), about half the nodes are alive, SGL-style node dropout
# (`"nodes"`) removes exactly the edges with a dropped end, and in evaluation nothing is dropped.

# %%
seed_everything(0)
n, m = 2001, 20000
u = torch.randint(1, n, (m,)); v = torch.randint(1, n, (m,))
ok = u != v
pr = torch.stack([torch.minimum(u, v), torch.maximum(u, v)])[:, ok].unique(dim=1)  # (2, M) distinct pairs
big = ItemGraph(torch.cat([pr, pr.flip(0)], 1), torch.ones(2 * pr.shape[1]), n)
lay = GraphPropagation(big, dim=4, mode="fixed", node_dropout=0.0).train()
k1, _ = lay.dropout_masks(); k2, _ = lay.dropout_masks()
kept_pairs = torch.zeros(lay.pairs.shape[1], dtype=torch.long).index_add(0, lay.pair_of_edge, k1.long())  # 0 or 2 per pair
lay_nodes = GraphPropagation(big, dim=4, mode="fixed", edge_dropout=0.0, node_dropout_mode="nodes").train()
k3, alive = lay_nodes.dropout_masks()
summary = dict(kept=k1.float().mean().item(), overlap_of_two_calls=(k1 & k2).float().mean().item(),
               nodes_alive=alive.float().mean().item(), eval_masks=lay.eval().dropout_masks())
summary

# %%
test_close(summary["kept"], 0.8, eps=0.02)
test_close(summary["overlap_of_two_calls"], 0.64, eps=0.02)  # independent fresh subsets
assert set(kept_pairs.tolist()) <= {0, 2}  # an undirected edge is kept or dropped in both directions
test_close(summary["nodes_alive"], 0.5, eps=0.05)
test_eq(k3, alive[big.edge_index[0]] & alive[big.edge_index[1]])  # nodes mode: an edge stays iff both ends are alive
test_eq(summary["eval_masks"], (None, None))
x = torch.randn(n, 4)
lay.train(); assert not torch.equal(lay(x), lay(x))  # a fresh subset every call
lay.eval(); test_eq(lay(x), lay(x))

# %% [markdown]
# In training the learned layer evaluates its MLP only on the pairs still in the graph; the weights it gets are
# exactly those of the full computation, restricted to the kept edges.

# %%
seed_everything(0)
lay_learned = GraphPropagation(big, dim=4).train()
k_both, _ = lay_learned.dropout_masks()
with torch.no_grad():
    w_part, w_full = lay_learned.edge_weights(x, k_both), lay_learned.edge_weights(x)[k_both]
k_both.float().mean().item(), (w_part - w_full).abs().max().item()

# %%
test_close(w_part, w_full, eps=1e-6)
test_close(k_both.float().mean().item(), 0.8, eps=0.03)  # messages mode: node dropout leaves the graph alone


# %% [markdown]
# **Restricting to the used rows is exact**: with the same dropout masks (same seed), the wanted rows and the
# gradients of a loss on them match the full computation.

# %%
def rows_vs_full(layer, x, rows, seed=0):
    "Outputs at `rows` and gradients (input, edge MLP) of a loss on them, computed fully and restricted."
    res = []
    for r in (None, rows):
        xx = x.clone().requires_grad_(True)
        layer.zero_grad(); seed_everything(seed)
        y = layer(xx, r)[rows]  # (R, d)
        (y * torch.linspace(-1, 1, y.shape[1])).square().sum().backward()
        res.append((y.detach(), xx.grad, [p.grad.clone() for p in layer.parameters()]))
    return res

wanted = torch.randint(1, n, (300,))
full, part = rows_vs_full(lay_learned.train(), x, wanted)
(full[0] - part[0]).abs().max(), (full[1] - part[1]).abs().max(), max((a - b).abs().max() for a, b in zip(full[2], part[2])), lay_learned.work

# %%
test_close(part[0], full[0], eps=1e-5)
assert 0 < lay_learned.work["messages"] <= lay_learned.work["weighted_edges"] < lay_learned.num_edges  # the restricted pass did less
assert lay_learned.work["mlp_pairs"] <= lay_learned.pairs.shape[1] and lay_learned.work["projected_nodes"] < n
test_close(part[1], full[1], eps=1e-5)
for a, b in zip(full[2], part[2]): test_close(a, b, eps=1e-4)

# %% [markdown]
# **Message-node dropout against the dense formula** (the default): with the same seed, the layer computes
# $E + \hat A\,\mathrm{diag}(m / (1-p))\,E$ where $\hat A$ is the normalised adjacency of the (here complete)
# graph and $m$ marks the alive senders. So a dropped item still receives, but sends nothing.

# %%
msgs = GraphPropagation(g5, dim=3, mode="fixed", edge_dropout=0.0, node_dropout=0.5).train()
E0 = torch.randn(5, 3)
draws = []
for seed in range(8):
    seed_everything(seed); _, alive5 = msgs.dropout_masks()
    seed_everything(seed); out_msgs = msgs(E0)
    draws.append((alive5[1:4].int().tolist(), (out_msgs - (E0 + A_hat_ref @ (alive5[:, None] * E0 / 0.5))).abs().max().item()))
draws  # (alive senders among items 1-3, max deviation from the dense formula)

# %%
assert all(dev < 1e-6 for _, dev in draws)
assert any(0 < sum(a) < 3 for a, _ in draws)  # some draws mix alive and dropped senders

# %% [markdown]
# The `"rows"` reading drops whole rows of the table (scaled by 1/(1-p)) before propagating; an isolated
# node then comes out either zero or doubled.

# %%
seed_everything(1)
rows = GraphPropagation(g5, dim=3, mode="fixed", edge_dropout=0.0, node_dropout=0.5, node_dropout_mode="rows").train()
E0 = torch.randn(5, 3)
outs = torch.stack([rows(E0)[4] for _ in range(40)])  # item 4 is isolated
ratios = (outs / E0[4]).mean(1).unique()
ratios

# %%
test_close(ratios, torch.tensor([0.0, 2.0]), eps=1e-6)

# %% [markdown]
# **Self-loops** are edges $(i, i)$ in the graph (one entry each, PyG's convention), added when the graph is
# built; the layer then computes $D^{-1/2}(A + I)D^{-1/2}$ with the degrees of $A + I$:

# %%
loops = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
g5_loops = ItemGraph(torch.cat([g5.edge_index, loops], 1), torch.cat([g5.edge_weight, torch.ones(4)]), 5)
AI = A + torch.diag(torch.tensor([0., 1, 1, 1, 1]))
dI_inv = AI.sum(1).pow(-0.5); dI_inv[0] = 0  # node 0: degree 0
ref_loops = dI_inv[:, None] * AI * dI_inv[None, :]
E0 = torch.randn(5, 3); E0[0] = 0
out_loops = GraphPropagation(g5_loops, dim=3, mode="fixed").eval()(E0)
out_loops[4], 2 * E0[4]

# %%
test_close(out_loops, E0 + ref_loops @ E0, eps=1e-6)
test_close(out_loops[4], 2 * E0[4], eps=1e-6)  # an isolated item with only its self-loop doubles
test_eq(undirected_pairs(g5_loops.edge_index, 5)[0].shape[1], 3 + 4)  # a loop is its own undirected edge

# %% [markdown]
# ## Errors a user can act on

# %%
bad0 = toy_graph([(0, 1), (1, 2)], [1.0, 1.0], 3)
test_fail(lambda: GraphPropagation(bad0, 4), contains="node 0, which is padding")
test_fail(lambda: GraphPropagation(toy_graph([(1, 2)], [-0.1], 3), 4, mode="fixed"), contains="negative")
test_fail(lambda: GraphPropagation(g5, 4, mode="cosine"), contains="Unknown graph mode")
test_fail(lambda: GraphPropagation(g5, 4, node_dropout_mode="senders"), contains="Unknown node_dropout_mode")
test_fail(lambda: GraphPropagation(SimpleNamespace(edge_index=g5.edge_index), 4), contains="no attribute 'edge_weight'")
test_fail(lambda: GraphPropagation(g5, 3).eval()(torch.randn(7, 3)), contains="build the graph for this dataset")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
