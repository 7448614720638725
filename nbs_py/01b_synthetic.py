# %% [markdown]
# # Synthetic catalogues
# > Datasets of any size with a realistic shape (power-law item popularity, clustered "text" embeddings, sessions that stay on a topic), for scale tests up to 10^6 items and 10^7 interactions.

# %%
#| default_exp synthetic

# %%
#| export
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sagerec.core import check
from sagerec.data import SeqDataset

# %%
#| hide
import time
from fastcore.test import test_eq, test_fail


# %% [markdown]
# ## The generative story
#
# Real catalogues that adopt a semantic-graph recommender are large (Amazon-2023 categories hold 10^5 to 10^6
# items and 10^7 interactions), and no such dataset ships with this project. `synthetic_dataset` draws one with
# the features that matter for cost and for the method:
#
# - **Popularity** follows a power law: item of popularity rank $r$ is drawn with probability $\propto r^{-a}$
#   ($a$ = `zipf`, 1.0 by default). Popularity ranks are a random permutation of the ids.
# - **Topics**: every item belongs to one of $C = \lceil N / \text{cluster\_size}\rceil$ clusters (uniformly).
#   Its "text" embedding is $\text{normalise}(c_z + \text{noise} \cdot g / \sqrt d)$ with centre $c_z$ uniform on the
#   unit sphere and $g \sim \mathcal N(0, I_d)$ (the clustered vectors of `bench_graph`), so the top-K cosine
#   neighbours of an item are mostly items of its topic.
# - **Sequences**: user lengths are `min_len` plus a geometric tail (mean `mean_len`, capped at `max_len`). The
#   first item is drawn by popularity; each next item *stays* on the current topic with probability `stay` (an item
#   of that cluster, drawn by popularity within it) or *jumps* to an item drawn by global popularity, whose topic
#   becomes the current one. So next items are predictable from the semantic graph and from popularity, as in
#   real logs.
#
# Everything is vectorised over all interactions at once (no Python loop over users): 10^7 interactions take seconds.

# %%
#| export
@dataclass
class SyntheticSpec:
    "Shape of a synthetic dataset (defaults: Amazon-like, about 10 interactions per user)."
    n_items: int = 10_000       # N, items are 1..N
    n_users: int | None = None  # None: as many users as items
    mean_len: float = 10.0      # mean interactions per user
    min_len: int = 5            # every user has at least this many (5-core-like; leave-one-out needs 3)
    max_len: int = 200          # longest sequence
    zipf: float = 1.0           # popularity exponent a: p(rank r) ~ r^-a
    cluster_size: int = 100     # mean items per topic cluster
    stay: float = 0.7           # probability that the next item stays on the current topic
    dim: int = 384              # width of the "text" embeddings (all-MiniLM: 384)
    noise: float = 1.0          # spread of items around their topic centre
    seed: int = 0

    def __post_init__(self):
        check(int(self.n_items) >= 2, f"n_items={self.n_items}: a catalogue needs at least 2 items.")
        self.n_users = int(self.n_users if self.n_users is not None else self.n_items)
        check(self.n_users >= 1, f"n_users={self.n_users} must be >= 1.")
        check(3 <= self.min_len <= self.mean_len <= self.max_len,
              f"Need 3 <= min_len ({self.min_len}) <= mean_len ({self.mean_len}) <= max_len ({self.max_len}).")
        check(0 <= self.stay <= 1 and self.zipf >= 0 and self.cluster_size >= 1 and self.dim >= 2 and self.noise >= 0,
              "stay must be in [0, 1]; zipf, noise >= 0; cluster_size >= 1; dim >= 2.")

    @property
    def n_clusters(self) -> int: return max(1, math.ceil(self.n_items / self.cluster_size))


# %% [markdown]
# ## Items: popularity and topics

# %%
#| export
def item_structure(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    "`(popularity (N+1,), cluster (N+1,))`: drawing probability and topic of every item; index 0 (padding) has 0 and -1."
    rng = np.random.default_rng([spec.seed, 1])
    N = spec.n_items
    rank = rng.permutation(N) + 1                                    # popularity rank of items 1..N
    p = np.zeros(N + 1); p[1:] = rank.astype(np.float64) ** -spec.zipf
    p /= p.sum()
    cluster = np.full(N + 1, -1, dtype=np.int64); cluster[1:] = rng.integers(0, spec.n_clusters, size=N)
    return p, cluster


# %% [markdown]
# ## Sequences

# %%
#| export
def _draw(cdf: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    "Inverse-CDF draws: position in `[lo, hi)` of `cdf` (cumulative masses) for uniforms `u`, restricted to each range."
    c0 = np.where(lo > 0, cdf[np.maximum(lo - 1, 0)], 0.0)
    x = c0 + u * (cdf[hi - 1] - c0)
    return np.clip(np.searchsorted(cdf, x, side="right"), lo, hi - 1)

def synthetic_sequences(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    "`(item_seq, user_ptr)`: every user's chronological sequence in CSR form (the layout of `SeqDataset`)."
    rng = np.random.default_rng([spec.seed, 2])
    p, cluster = item_structure(spec)
    U = spec.n_users
    tail = max(spec.mean_len - spec.min_len, 1e-9)
    lens = np.minimum(spec.min_len + rng.geometric(1 / (tail + 1), size=U) - 1, spec.max_len)   # (U,)
    user_ptr = np.zeros(U + 1, dtype=np.int64); np.cumsum(lens, out=user_ptr[1:])
    nnz = int(user_ptr[-1])
    first = np.zeros(nnz, dtype=bool); first[user_ptr[:-1]] = True
    jump = first | (rng.random(nnz) >= spec.stay)                                                # (nnz,) a new topic
    gcdf = np.cumsum(p[1:])                                                                      # items 1..N
    n_jump = int(jump.sum())
    all_items = 1 + _draw(gcdf, np.zeros(n_jump, np.int64), np.full(n_jump, len(gcdf), np.int64), rng.random(n_jump))  # by popularity
    seg = np.cumsum(jump) - 1                                                                    # (nnz,) topic segment
    seg_cluster = cluster[all_items]                                                             # topic of each segment
    order = np.argsort(cluster[1:], kind="stable") + 1                                           # items grouped by topic
    ccdf = np.cumsum(p[order])
    starts = np.searchsorted(cluster[order], np.arange(spec.n_clusters))                         # (C,) first slot of each topic
    ends = np.append(starts[1:], len(order))
    stay_pos = ~jump
    c = seg_cluster[seg[stay_pos]]
    item_seq = np.empty(nnz, dtype=np.int64)
    item_seq[jump] = all_items
    item_seq[stay_pos] = order[_draw(ccdf, starts[c], ends[c], rng.random(int(stay_pos.sum())))]
    return item_seq, user_ptr


# %% [markdown]
# ## "Text" embeddings

# %%
#| export
def synthetic_embeddings(spec: SyntheticSpec,
                         path: Path | str | None = None,  # write a memory-mapped .npy here (None: in memory)
                         chunk: int = 100_000,
                        ) -> np.ndarray:
    "`(N+1, dim)` float32 unit rows, row 0 = zero padding: each item near its topic's centre."
    rng = np.random.default_rng([spec.seed, 3])
    _, cluster = item_structure(spec)
    N, d = spec.n_items, spec.dim
    out = (np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(N + 1, d)) if path is not None
           else np.empty((N + 1, d), dtype=np.float32))
    out[0] = 0
    cent = rng.standard_normal((spec.n_clusters, d), dtype=np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    for s in range(1, N + 1, chunk):
        e = min(s + chunk, N + 1)
        v = cent[cluster[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32) * (spec.noise / math.sqrt(d))
        out[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
    if path is not None: out.flush()
    return out


# %% [markdown]
# ## The dataset
#
# A `SeqDataset` like the real ones (items 1..N, CSR sequences, `split()` for leave-one-out). Items have no text:
# their prompts are empty and the embeddings come from `synthetic_embeddings`, never from Sentence-BERT.

# %%
#| export
def synthetic_dataset(n_items: int = 10_000, **kw) -> SeqDataset:
    "A synthetic `SeqDataset` of `n_items` items (other `SyntheticSpec` fields as keywords); its spec is in `info['spec']`."
    spec = SyntheticSpec(n_items=n_items, **kw)
    item_seq, user_ptr = synthetic_sequences(spec)
    _, cluster = item_structure(spec)
    items = pd.DataFrame({"raw_id": np.arange(1, spec.n_items + 1), "title": None, "category": cluster[1:], "prompt": ""},
                         index=pd.RangeIndex(1, spec.n_items + 1, name="item_id"))
    name = f"synthetic-{spec.n_items}"
    return SeqDataset(name, item_seq, user_ptr, items, np.arange(spec.n_users).astype(str),
                      info=dict(source="synthetic", spec=spec.__dict__.copy()))


# %% [markdown]
# ## A small one, checked
#
# 2,000 items and users. The popularity of items in the log follows the power law (the most popular 1% of items take
# a large share of the interactions, the log-log slope of count against rank is close to $-a$), every user has at
# least `min_len` items, the mean length is close to `mean_len`, and consecutive items share a topic about
# `stay` + (1 - `stay`) x P(jump lands on the same topic) of the time.

# %%
ds = synthetic_dataset(2_000, seed=0)
spec = SyntheticSpec(**ds.info["spec"])
counts = np.sort(np.bincount(ds.item_seq, minlength=ds.n_items + 1)[1:])[::-1]
top = counts[:20].sum() / counts.sum()
r = np.arange(1, 201); slope = np.polyfit(np.log(r), np.log(counts[:200] + 1e-9), 1)[0]
lens = np.diff(ds.user_ptr)
cl = ds.items["category"].to_numpy()
same = np.mean([cl[a - 1] == cl[b - 1] for u in range(ds.n_users) for a, b in zip(ds.sequence(u)[:-1], ds.sequence(u)[1:])])
ds, dict(top1pct_share=round(float(top), 3), loglog_slope=round(float(slope), 2), min_len=int(lens.min()), mean_len=round(float(lens.mean()), 2),
         same_topic_next=round(float(same), 3))

# %%
test_eq(ds.n_users, 2_000); assert lens.min() >= 5 and abs(lens.mean() - 10) < 0.5 and lens.max() <= 200
assert top > 0.1 and -1.3 < slope < -0.6
assert 0.7 <= same < 0.8
sp = ds.split(); test_eq(sp.n_users, 2_000)
test_eq(synthetic_dataset(2_000, seed=0).item_seq, ds.item_seq)            # the seed fixes everything
assert (synthetic_dataset(2_000, seed=1).item_seq[:100] != ds.item_seq[:100]).any()
test_fail(lambda: synthetic_dataset(1), contains="at least 2 items")
test_fail(lambda: synthetic_dataset(100, min_len=2), contains="3 <= min_len")

# %% [markdown]
# The embeddings: unit rows, padding row 0, and an item's nearest neighbours are mostly in its own topic.

# %%
emb = synthetic_embeddings(spec)
x = emb[1:401]; sims = x @ emb[1:].T
np.put_along_axis(sims, np.arange(400)[:, None], -2, 1)                    # not itself
nn_ = sims.argmax(1) + 1
same_topic_nn = float((cl[nn_ - 1] == cl[:400]).mean())
emb.shape, round(float(np.linalg.norm(emb[1:], axis=1).mean()), 4), same_topic_nn

# %%
test_eq(emb.shape, (2_001, 384)); test_eq(emb[0], np.zeros(384, np.float32))
assert np.allclose(np.linalg.norm(emb[1:], axis=1), 1, atol=1e-5) and same_topic_nn > 0.95

# %% [markdown]
# ## Cost at the top end
#
# 10^6 items and users, about 10^7 interactions: the sequences, then the split.

# %%
#| slow
t0 = time.perf_counter(); big = synthetic_dataset(1_000_000); t_gen = time.perf_counter() - t0
t0 = time.perf_counter(); big_split = big.split(); t_split = time.perf_counter() - t0
big, round(t_gen, 1), round(t_split, 1)

# %%
#| slow
assert big.n_interactions > 9_000_000 and big_split.n_users == 1_000_000

# %%
#| hide
import nbdev; nbdev.nbdev_export()
