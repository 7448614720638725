# %% [markdown]
# # SINE
# > Sparse-Interest Network (Tan et al., WSDM 2021): a large pool of concept prototypes, a sparse top-K of them activated per user, one interest embedding per activated concept, and an aggregation that predicts which interest the next item serves.

# %%
#| default_exp sine

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


# %% [markdown]
# ## What the paper does, and how it is read here
#
# Q. Tan, J. Zhang, J. Yao, N. Liu, J. Zhou, H. Yang, X. Hu, *Sparse-Interest Network for Sequential
# Recommendation*, WSDM 2021 (doi 10.1145/3437963.3441811). For a user's item embeddings $X \in \mathbb R^{n\times D}$:
#
# 1. **Concept activation.** Self-attentive pooling $a = \mathrm{softmax}(\tanh(XW_1)W_2)$, $z_u = a^\top X$; scores
#    $s^u = C z_u$ against $L$ concept prototypes $C \in \mathbb R^{L \times D}$; the $K$ best are kept,
#    $\mathrm{idx} = \mathrm{top}_K(s^u)$, gated: $C^u = C_{\mathrm{idx}} \odot \sigma(s^u_{\mathrm{idx}})$. Only $K \ll L$
#    prototypes take part for a user: **the sparse selection**.
# 2. **Intention assignment.** $P_{k|t} = \mathrm{softmax}_k\big(\mathrm{LN}_1(X_tW_3) \cdot \mathrm{LN}_2(C^u_k)\big)$.
# 3. **Attention weighting.** $P_{t|k} = \mathrm{softmax}_t\big(\tanh(X^aW_{k,1})W_{k,2}\big)$ with $X^a$ = items + positional embeddings.
# 4. **Interest embeddings.** $\phi^k = \mathrm{LN}_3\big(\sum_t P_{k|t}P_{t|k}X_t\big)$, $k = 1..K$.
# 5. **Interest aggregation.** $\hat X_t = \sum_k P_{k|t}C^u_k$, $\hat x = \mathrm{LN}_4\big(\mathrm{softmax}(\tanh(\hat XW_5)W_6)^\top\hat X\big)$,
#    $e_u = \sum_k \mathrm{softmax}_k(\hat x\cdot\phi^k/\tau)\,\phi^k$; the score of item $i$ is $e_u \cdot x_i$.
# 6. **Loss.** Sampled softmax of the next item, plus $\lambda L_c$ with $L_c = \tfrac12(\|M\|_F^2 - \|\mathrm{diag}(M)\|_2^2)$,
#    $M$ the covariance of the prototypes (it pushes prototypes apart).
#
# Published settings used as defaults: $K = 4$ interests, $\tau = 0.1$, $\lambda = 0.5$, Adam with lr $10^{-3}$, sampled
# softmax; the concept pool $L$ is a tuned setting in the paper (searched per dataset); 500 here. Width: the paper
# reports $D = 128$ on its (larger) datasets; this project's baselines share $D$ = 50 so that Tables 3-4 compare
# models of one width, and `configs/models/sine.yaml` says which is used.
#
# **Every prefix is a training example.** The paper (like ComiRec, whose data pipeline it uses) trains on pairs
# (history before $t$, item $t$). This implementation computes steps 1-5 for *every* prefix of a left-padded row at
# once, with causal masks in the poolings, so the trainer's per-position targets apply unchanged: the output
# at column $t$ is exactly the model applied to the items up to $t$ (shown below). Positions in $X^a$ count back from
# the end of each prefix, so a prefix gets the same positions whether or not later items follow it.

# %%
#| export
@dataclass
class SINEConfig(ModelConfig):
    "Hyperparameters of SINE (defaults: the paper's where it gives them; see the notebook). Transformer fields are unused."
    dim: int = 50              # D, item embedding width (paper: 128 on its datasets; project baselines: 50)
    graph_mode: str = "none"   # graph plug-in off by default
    n_concepts: int = 500      # L, concept prototypes in the pool (paper: tuned per dataset)
    n_interests: int = 4       # K, prototypes activated per user (paper: 4)
    tau: float = 0.1           # temperature of the interest aggregation (paper: 0.1)
    cov_weight: float = 0.5    # lambda, weight of the prototype covariance regulariser (paper: 0.5)
    max_len: int = 50          # positions (project: 50 Beauty/Toys, 165 ML-1M)
    l2: float = 0.0            # squared-L2 weight on the item table (paper: none)

    def __post_init__(self):
        super().__post_init__()
        check(1 <= self.n_interests <= self.n_concepts,
              f"n_interests={self.n_interests} must be in 1..n_concepts={self.n_concepts}: SINE activates K of the L prototypes.")
        check(self.tau > 0 and self.cov_weight >= 0 and self.l2 >= 0, f"tau={self.tau} must be > 0, cov_weight and l2 >= 0.")


# %%
test_eq(SINEConfig().n_interests, 4)
test_fail(lambda: SINEConfig(n_concepts=3), contains="n_interests=4 must be in 1..n_concepts=3")


# %% [markdown]
# ## Causal pooling
#
# Both poolings of SINE are softmaxes over the positions of a sequence. For the prefix ending at column $t$ they run
# over the real items at columns $s \le t$; `prefix_softmax` gives all of them at once as a (B, T, S) weight tensor.

# %%
#| export
def prefix_mask(valid: Tensor) -> Tensor:  # (B, L) bool -> (B, L, L) bool
    "`m[b, t, s]`: item s belongs to the prefix that ends at t (s <= t and s is real); padding rows see themselves."
    L = valid.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()  # (T, S)
    return causal & (valid[:, None, :] | torch.eye(L, dtype=torch.bool, device=valid.device))  # (B, T, S)

def prefix_softmax(logits: Tensor, mask: Tensor) -> Tensor:  # (B, S[, K]), (B, T, S) -> (B, T, S[, K])
    "Softmax over the positions of every prefix: logits per position (and per interest), masked per prefix."
    x = logits[:, None].expand(-1, mask.shape[1], *logits.shape[1:])  # (B, T, S[, K])
    m = mask if logits.ndim == 2 else mask[..., None]
    return torch.softmax(x.masked_fill(~m, float("-inf")), dim=2)


# %%
v = torch.tensor([[False, True, True, True]])
w = prefix_softmax(torch.zeros(1, 4), prefix_mask(v))
w[0]

# %%
test_close(w[0, 3], torch.tensor([0, 1 / 3, 1 / 3, 1 / 3]), eps=1e-6)  # the last prefix: its three real items equally
test_close(w[0, 1], torch.tensor([0., 1, 0, 0]))  # a one-item prefix
test_eq(w[0, 0], torch.tensor([1., 0, 0, 0]))  # a padding row sees only itself (finite, ignored)


# %% [markdown]
# ## The model

# %%
#| export
@register_model("sine", paper="Tan et al., Sparse-Interest Network for Sequential Recommendation, WSDM 2021")
class SINE(SeqRecModel):
    "SINE (Tan et al., WSDM 2021): sparse top-K concept activation, K interest embeddings, interest aggregation."
    config_class = SINEConfig

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None):
        super().__init__(n_items, cfg, graph, n_users)
        cfg = self.cfg
        D, K = cfg.dim, cfg.n_interests
        self.item_table()  # item_emb (one table in and out), and the graph layer when graph_mode != "none"
        self.pos_emb = nn.Embedding(cfg.max_len, D)
        self.concepts = nn.Parameter(torch.empty(cfg.n_concepts, D))  # C (L, D)
        self.w1, self.w2 = nn.Linear(D, D, bias=False), nn.Linear(D, 1, bias=False)  # concept activation pooling
        self.w3 = nn.Linear(D, D, bias=False)  # intention assignment
        self.wk1, self.wk2 = nn.Linear(D, D, bias=False), nn.Linear(D, K, bias=False)  # attention weighting, one column per interest
        self.w5, self.w6 = nn.Linear(D, D, bias=False), nn.Linear(D, 1, bias=False)  # aggregation pooling
        self.ln1, self.ln2, self.ln3, self.ln4 = (nn.LayerNorm(D) for _ in range(4))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        xavier_init_(self)
        nn.init.xavier_uniform_(self.concepts)
        self._cache = None

    def interests(self, seqs: Tensor, table: Tensor, last_only: bool = False) -> dict[str, Tensor]:
        "Every intermediate of steps 1-5 for every prefix of the batch (`last_only`: the whole rows only, T = 1)."
        valid = seqs != 0  # (B, S)
        B, S = seqs.shape
        dev = seqs.device
        q = torch.arange(S - 1 if last_only else 0, S, device=dev)  # (T,) the columns where prefixes end
        x = F.embedding(seqs, table)  # (B, S, D)
        m = prefix_mask(valid)[:, q]  # (B, T, S)
        a = prefix_softmax(self.w2(torch.tanh(self.w1(x))).squeeze(-1), m)  # (B, T, S) concept-activation pooling
        z = a @ x  # (B, T, D)
        s = z @ self.concepts.T  # (B, T, L)
        top, idx = s.topk(self.cfg.n_interests, dim=-1)  # (B, T, K)
        cu = self.concepts[idx] * torch.sigmoid(top)[..., None]  # (B, T, K, D) gated active prototypes
        p_k_t = torch.softmax(torch.einsum("bsd,btkd->btsk", self.ln1(self.w3(x)), self.ln2(cu)), dim=-1)  # (B, T, S, K)
        rel = (self.cfg.max_len - 1 - (q[:, None] - torch.arange(S, device=dev))).clamp(0, self.cfg.max_len - 1)  # (T, S)
        h = torch.tanh(self.wk1(x)[:, None] + self.wk1(self.pos_emb.weight)[rel])  # (B, T, S, D): X^a W_k1, positions counted from the prefix's end
        p_t_k = torch.softmax(self.wk2(h).masked_fill(~m[..., None], float("-inf")), dim=2)  # (B, T, S, K)
        w = p_k_t * p_t_k * m[..., None]  # (B, T, S, K)
        phi = self.ln3(torch.einsum("btsk,bsd->btkd", w, x))  # (B, T, K, D) interest embeddings
        # X^hat_t = sum_k P_k|t C^u_k is linear in the K prototypes, so X^hat W_5 = P_k|t (C^u W_5) and g^T X^hat = (g^T P_k|t) C^u:
        # the (B, T, S, D) tensor X^hat is never built and W_5 multiplies K rows per prefix instead of S
        xw5 = torch.einsum("btsk,btkd->btsd", p_k_t, self.w5(cu))  # (B, T, S, D) = X^hat W_5
        g = torch.softmax(self.w6(torch.tanh(xw5)).squeeze(-1).masked_fill(~m, float("-inf")), dim=-1)  # (B, T, S)
        xh = self.ln4(torch.einsum("btk,btkd->btd", torch.einsum("bts,btsk->btk", g, p_k_t), cu))  # (B, T, D) predicted intention of the next item
        p_k_u = torch.softmax(torch.einsum("btd,btkd->btk", xh, phi) / self.cfg.tau, dim=-1)  # (B, T, K)
        e = torch.einsum("btk,btkd->btd", p_k_u, phi) * valid[:, q, None]  # (B, T, D), 0 at padding
        return dict(concept_scores=s, active=idx, p_k_t=p_k_t, p_t_k=p_t_k, interests=phi, p_k_u=p_k_u, user=e)

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, D)
        "The aggregated user embedding $e_u$ of every prefix; without gradients, in chunks of rows to bound memory."
        if torch.is_grad_enabled() or seqs.shape[0] <= 64: return self.interests(seqs, table)["user"]
        return torch.cat([self.interests(c, table)["user"] for c in seqs.split(64)])

    def encode_last(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, D)
        "$e_u$ of the whole rows only (what scores use): one prefix per row instead of L."
        return self.interests(seqs, table, last_only=True)["user"][:, 0]

    def covariance_loss(self) -> Tensor:  # ()
        "$L_c = \\frac12(\\|M\\|_F^2 - \\|\\mathrm{diag} M\\|^2)$, M the (L, L) covariance of the prototypes over the D dimensions."
        c = self.concepts - self.concepts.mean(dim=1, keepdim=True)  # (L, D)
        M = c @ c.T / c.shape[1]  # (L, L)
        return 0.5 * (M.square().sum() - M.diagonal().square().sum())

    def l2_penalty(self) -> Tensor:
        return self.cfg.l2 * self.item_emb.weight.square().sum()

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        "The trainer's next-item loss (sampled softmax in the paper's setting) plus `cov_weight * covariance_loss()`."
        return super().training_loss(batch) + self.cfg.cov_weight * self.covariance_loss()


# %% [markdown]
# ## A tiny SINE
#
# Ten items, a pool of 6 prototypes of which 2 are activated per prefix.

# %%
seed_everything(0)
cfg = SINEConfig(dim=8, n_concepts=6, n_interests=2, max_len=5)
model = SINE(10, cfg).eval()
seqs = torch.tensor([[0, 0, 1, 2, 3], [0, 4, 5, 6, 7], [8, 9, 10, 1, 2]])  # (B=3, L=5), left-padded
with torch.no_grad():
    out = model.interests(seqs, model.item_emb.weight)
{k: tuple(v.shape) for k, v in out.items()}

# %% [markdown]
# **Sparse selection.** For every prefix exactly K = 2 of the 6 prototypes are active: the assignment
# probabilities $P_{k|t}$ live on those K, and the other prototypes receive no gradient from that prefix.

# %%
out["active"][:, -1], out["p_k_t"][0, -1, -3:]

# %%
test_eq(out["active"].shape, (3, 5, 2))
assert (out["active"][..., 0] != out["active"][..., 1]).all()  # two distinct prototypes
test_close(out["p_k_t"].sum(-1), torch.ones(3, 5, 5), eps=1e-6)  # a distribution over the K active ones
test_close(out["p_k_u"].sum(-1), torch.ones(3, 5), eps=1e-6)
seqs1 = seqs[:1]
model.train(); model.zero_grad()
e_last = model.interests(seqs1, model.item_emb.weight)["user"][0, -1]
e_last.sum().backward()
touched = (model.concepts.grad.abs().sum(1) > 0).nonzero().squeeze(1)
active_last = model.interests(seqs1, model.item_emb.weight)["active"][0, -1]
touched.tolist(), active_last.tolist()

# %%
test_eq(sorted(touched.tolist()), sorted(active_last.tolist()))  # only the K selected prototypes get a gradient
model.eval();

# %% [markdown]
# **Every column is its own prefix.** The output at column t equals SINE applied to the items up to t alone (padding
# in front), so the trainer's per-position targets train exactly the model the evaluation scores.

# %%
with torch.no_grad():
    full = model.encode_with(seqs, model.item_emb.weight)  # (B, L, D)
    alone = model.encode_with(torch.tensor([[0, 0, 4, 5, 6]]), model.item_emb.weight)  # row 1 cut after item 6
(full[1, 3] - alone[0, -1]).abs().max()

# %%
test_close(full[1, 3], alone[0, -1], eps=1e-5)
with torch.no_grad(): test_close(model.encode_last(seqs, model.item_emb.weight), full[:, -1], eps=1e-5)  # the scoring shortcut
test_eq(full[0, :2], torch.zeros(2, 8))  # padding columns are 0

# %% [markdown]
# **Aggregation without $\hat X$.** Step 5 is written with $\hat X_t = \sum_k P_{k|t}C^u_k$, a (B, T, S, D) tensor; being
# linear in the K prototypes, $\hat X W_5 = P_{k|t}(C^uW_5)$ and $g^\top\hat X = (g^\top P_{k|t})\,C^u$, which is how
# `interests` computes it. Here the formula as written,
# from the returned intermediates, against the model's output:

# %%
with torch.no_grad():
    cu = model.concepts[out["active"]] * torch.sigmoid(out["concept_scores"].gather(-1, out["active"]))[..., None]  # (B, T, K, D)
    xhat = torch.einsum("btsk,btkd->btsd", out["p_k_t"], cu)  # (B, T, S, D), built
    mask = prefix_mask(seqs != 0)
    g = torch.softmax(model.w6(torch.tanh(model.w5(xhat))).squeeze(-1).masked_fill(~mask, float("-inf")), dim=-1)
    xh = model.ln4(torch.einsum("bts,btsd->btd", g, xhat))
    p_k_u = torch.softmax(torch.einsum("btd,btkd->btk", xh, out["interests"]) / cfg.tau, dim=-1)
(p_k_u - out["p_k_u"]).abs().max()

# %%
test_close(p_k_u, out["p_k_u"], eps=1e-5)

# %% [markdown]
# **Scores and loss through the contract.** The covariance regulariser is zero for mutually uncorrelated prototypes
# (six zero-mean rows of a Hadamard matrix), and larger for identical ones than for random ones.

# %%
with torch.no_grad():
    sa = model.score_all(seqs)
    pos = torch.tensor([[0, 0, 2, 3, 4], [0, 5, 6, 7, 8], [9, 10, 1, 2, 3]])
    neg = torch.randint(1, 11, (3, 5, 2)) * (pos != 0)[..., None]
    l = model.training_loss(TrainBatch(torch.arange(3), seqs, pos, neg))
    cov = model.covariance_loss()
sa.shape, l, cov

# %%
test_eq(sa.shape, (3, 11)); test_eq(sa[:, 0], torch.full((3,), float("-inf")))
assert torch.isfinite(l) and cov > 0
h2 = torch.tensor([[1., 1], [1, -1]]); h8 = torch.kron(torch.kron(h2, h2), h2)  # (8, 8) Hadamard
probe = SINE(10, cfg)
with torch.no_grad(): probe.concepts.copy_(h8[1:7])
test_close(probe.covariance_loss(), 0., eps=1e-9)
with torch.no_grad(): probe.concepts.copy_(model.concepts[:1].expand(6, -1))
assert probe.covariance_loss() > cov

# %% [markdown]
# **Training lowers the loss** on the toy batch (a few Adam steps).

# %%
seed_everything(0)
m = SINE(10, cfg); opt = torch.optim.Adam(m.parameters(), lr=1e-2)
b = TrainBatch(torch.arange(3), seqs, pos, neg)
losses = []
for _ in range(30):
    opt.zero_grad(); l = m.training_loss(b); l.backward(); opt.step(); losses.append(l.item())
losses[0], losses[-1]

# %%
assert losses[-1] < 0.7 * losses[0]

# %%
#| hide
import nbdev; nbdev.nbdev_export()
