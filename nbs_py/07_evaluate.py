# %% [markdown]
# # Evaluation
# > Leave-one-out ranking metrics, implemented once: full-catalogue ranking with the history masked (default) or not, and a labelled sampled-100 protocol.

# %%
#| default_exp evaluate

# %%
#| export
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from sagerec.core import SageRecError, check

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail

# %%
#| hide
torch.set_num_threads(1)  # tiny fixtures: one thread is faster and immune to a busy shared CPU


# %% [markdown]
# ## The protocol in one paragraph
#
# Every user has exactly one held-out target (leave-one-out). For the **validation** stage the model reads
# `valid_input` (= `seq[:-2]`) and must rank `valid_target` (= `seq[-2]`); for the **test** stage it reads
# `test_input` (= `seq[:-1]`, which includes the validation item) and must rank `test_target` (= `seq[-1]`).
# The input is cut to its last `max_len` items, but the *history* that gets masked is the whole input.
#
# The target's **rank** is the number of candidates that beat it (0 = first place). With one relevant item,
# `Recall@k = 1[rank < k]` (a hit) and `NDCG@k = 1[rank < k] / log2(rank + 2)`; both are averaged over users.
#
# | protocol | candidates | label in tables |
# |---|---|---|
# | full ranking, history masked (**default**) | all items `1..N`; items of the user's history are removed, the target never is | `full-masked` |
# | full ranking, unmasked (RecBole default) | all items `1..N` | `full-unmasked` |
# | sampled-100 | the target + 100 distinct items drawn uniformly (fixed seed) from the items the user never interacted with (whole sequence) | `sampled100` |
#
# Rules that matter for comparing numbers:
# - **The target is never masked**, even when the user interacted with it earlier (a repeat): its score is
#   restored after masking, so a repeated item stays rankable.
# - **Ties count against the target** (pessimistic, default): an item whose score equals the target's ranks
#   ahead of it. `ties="optimistic"` counts only strictly greater scores.
# - **Padding is never a candidate**: the evaluator sets column 0 (and any candidate id 0) to `-inf` itself, whatever
#   the model scores it.
# - The rank is a *count of comparisons*, not a sort, so the same scores give the same rank on CPU and GPU.

# %% [markdown]
# ## Padding a batch of sequences
#
# Sequences are left-padded with item 0 and trimmed to the longest sequence *in the batch*: the models put
# the last item at the last position, so the leading all-padding columns carry no information and are
# never computed. Users are grouped by length so that a batch wastes little on padding.

# %%
#| export
def left_pad(seqs: Sequence[np.ndarray],  # item-id sequences (any lengths, may be empty)
             max_len: int,                # keep at most the last `max_len` items of each
             length: int | None = None,   # width of the result; default: the longest kept sequence
            ) -> np.ndarray:
    "Left-pad the last `max_len` items of each sequence with 0 into a `(B, L)` int64 array."
    check(max_len >= 1, f"max_len must be >= 1, got {max_len}.")
    kept = [np.asarray(s, dtype=np.int64)[-max_len:] for s in seqs]
    L = length if length is not None else max([len(s) for s in kept] + [1])
    out = np.zeros((len(kept), L), dtype=np.int64)
    for i, s in enumerate(kept):
        if len(s): out[i, L - len(s):] = s[-L:]
    return out

def length_batches(lengths: np.ndarray,  # (U,) sequence length per user
                   batch_size: int,      # users per batch
                  ) -> list[np.ndarray]:
    "Split user indices into batches of similar length (sorted by length, stable)."
    check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}.")
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# %%
left_pad([np.array([3, 4, 5]), np.array([7]), np.array([1, 2, 3, 4, 5, 6])], max_len=4)

# %%
test_eq(left_pad([np.array([3, 4, 5]), np.array([7])], max_len=4), np.array([[3, 4, 5], [0, 0, 7]]))
test_eq(left_pad([np.arange(1, 7)], max_len=4), np.array([[3, 4, 5, 6]]))  # the last max_len items are kept
test_eq([b.tolist() for b in length_batches(np.array([5, 1, 3, 1]), 2)], [[1, 3], [2, 0]])
test_fail(lambda: left_pad([np.array([1])], max_len=0), contains="max_len must be")


# %% [markdown]
# ## Ranks and metrics from a block of scores
#
# `mask_history_` removes the history from a `(B, N+1)` score block in place and puts the target's own score
# back; `target_ranks` counts the candidates that beat the target. Both are plain tensor operations, so the
# whole evaluation runs on the model's device.

# %%
#| export
def mask_history_(scores: torch.Tensor,   # (B, N+1) scores, column 0 = padding
                  history: torch.Tensor,  # (B, H) item ids to remove, padded with 0
                  target: torch.Tensor,   # (B,) target item per row: never removed
                 ) -> torch.Tensor:
    "Set the history items' scores to -inf in place, except the target's; return `scores`."
    t = target.view(-1, 1)                              # (B, 1)
    keep = scores.gather(1, t)                          # (B, 1) the target's own score
    scores.scatter_(1, history, float("-inf"))          # (B, N+1)
    scores.scatter_(1, t, keep)                         # a repeated target stays rankable
    return scores

def target_ranks(scores: torch.Tensor,        # (B, C) candidate scores
                 target_col: torch.Tensor,    # (B,) column of the target in each row
                 ties: str = "pessimistic",   # "pessimistic": equal scores rank ahead of the target; "optimistic": only greater ones
                ) -> torch.Tensor:
    "0-based rank of the target in each row: the number of candidates that beat it (a count, not a sort)."
    check(ties in ("pessimistic", "optimistic"), f"ties must be 'pessimistic' or 'optimistic', got {ties!r}.")
    if torch.isnan(scores.amax(1)).any():              # amax propagates NaN: one cheap pass
        raise SageRecError("The model produced NaN scores, so ranks are undefined. The weights have diverged: "
                           "retrain with a lower learning rate, or check the checkpoint you loaded.")
    t = scores.gather(1, target_col.view(-1, 1))        # (B, 1)
    if ties == "pessimistic": rank = (scores >= t).sum(1, dtype=torch.int32) - 1  # the target equals itself once
    else: rank = (scores > t).sum(1, dtype=torch.int32)
    return rank

def metrics_from_ranks(ranks: np.ndarray | torch.Tensor,  # (U,) 0-based rank of each user's target
                       ks: Sequence[int] = (10, 20),      # cut-offs
                      ) -> dict[str, float]:
    "Recall@k (= hit@k) and NDCG@k averaged over users, for one relevant item per user."
    r = torch.as_tensor(ranks, dtype=torch.float64).cpu()  # (U,)
    check(r.numel() > 0, "No users to evaluate: the rank array is empty.")
    out = {}
    for k in ks:
        hit = (r < k).double()                          # (U,)
        out[f"recall@{k}"] = hit.mean().item()
        out[f"ndcg@{k}"] = (hit / torch.log2(r + 2)).mean().item()
    return out


# %% [markdown]
# A hand-made block of 2 users over 6 items (column 0 is padding). User 0's target is item 2 and their
# history is {1, 2, 3}: item 2 stays in play, items 1 and 3 drop out, and the tie with item 5 counts against
# the target. User 1's target is item 4 with score 0.5; items 1, 3 and 5 score higher.

# %%
S = torch.tensor([[-np.inf, 0.9, 0.5, 0.8, 0.1, 0.5],
                  [-np.inf, 0.7, 0.2, 0.6, 0.5, 0.9]])
hist = torch.tensor([[1, 2, 3], [0, 0, 2]])
tgt = torch.tensor([2, 4])
masked = mask_history_(S.clone(), hist, tgt)
r_pess, r_opt = target_ranks(masked, tgt), target_ranks(masked, tgt, ties="optimistic")
masked, r_pess, r_opt, metrics_from_ranks(r_pess, ks=(1, 4))

# %%
test_eq(masked[0], torch.tensor([-np.inf, -np.inf, 0.5, -np.inf, 0.1, 0.5]))
test_eq(r_pess.tolist(), [1, 3]); test_eq(r_opt.tolist(), [0, 3])
test_eq(target_ranks(S, tgt).tolist(), [3, 3])   # unmasked: items 1, 3 and the tie 5 beat user 0's target
m = metrics_from_ranks(r_pess, ks=(1, 4))
test_close(m["recall@4"], 1.0); test_close(m["ndcg@4"], (1 / math.log2(3) + 1 / math.log2(5)) / 2)
test_eq(m["recall@1"], 0.0)
test_fail(lambda: target_ranks(torch.tensor([[0.1, float("nan")]]), torch.tensor([0])), contains="NaN scores")
test_fail(lambda: target_ranks(S, tgt, ties="random"), contains="ties must be")


# %% [markdown]
# ## Sampled-100 candidates
#
# Each user gets the target in column 0 followed by `n` **distinct** items drawn uniformly from the items
# the user never interacted with anywhere in their sequence. The draw is vectorised rejection sampling with
# a fixed seed, so the same split gives the same candidates on every run and device. `UnseenSampler` does the
# drawing (the trainer uses it for its negatives too): all (user, item) pairs are kept as sorted integer keys,
# so checking a whole block of draws is one `searchsorted`.

# %%
#| export
def _interaction_keys(seqs: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    "Sorted unique keys `u * (n_items + 1) + item` of every (user, item) pair in `seqs`."
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    users = np.repeat(np.arange(len(seqs), dtype=np.int64), lens)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]) if len(seqs) else np.zeros(0, np.int64)
    return np.unique(users * (n_items + 1) + items)

def _is_seen(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    "Whether each (user, item) pair (broadcast) occurs in the sorted `keys`."
    q = users * (n_items + 1) + items
    pos = np.searchsorted(keys, q).clip(max=max(len(keys) - 1, 0))
    return keys[pos] == q if len(keys) else np.zeros(q.shape, bool)

class UnseenSampler:
    "Draws items uniformly from those each user never interacted with (vectorised rejection sampling)."
    def __init__(self, seen: Sequence[np.ndarray],  # per user: every item they interacted with
                 n_items: int):                     # items are 1..n_items
        self.n_items = n_items
        self.keys = _interaction_keys(seen, n_items)                   # sorted (user, item) keys
        self.n_seen = np.array([len(np.unique(s)) for s in seen], dtype=np.int64)

    def sample(self, users: np.ndarray,        # (U,) user indices
               n: int,                         # items per user
               rng: np.random.Generator,       # source of randomness
               distinct: bool = False,         # no repeats within a user's row
              ) -> np.ndarray:
        "`(U, n)` int64 items, each unseen by its row's user."
        users = np.asarray(users, dtype=np.int64); N = self.n_items
        if len(users):
            worst = int(self.n_seen[users].max())
            need = n if distinct else 1
            check(N - worst >= need, f"Cannot draw {n}{' distinct' if distinct else ''} unseen items: a user has seen "
                                     f"{worst} of the {N} items. Use fewer candidates or a larger catalogue.")
        uu = np.broadcast_to(users[:, None], (len(users), n))             # (U, n)
        out = rng.integers(1, N + 1, size=(len(users), n))                # (U, n)
        bad = _is_seen(self.keys, uu, out, N)
        while True:
            if distinct:                                                   # later copies of a repeated item are redrawn
                order = np.argsort(out, axis=1, kind="stable")
                srt = np.take_along_axis(out, order, 1)
                dup = np.zeros_like(bad); np.put_along_axis(dup, order[:, 1:], srt[:, 1:] == srt[:, :-1], 1)
                bad |= dup
            if not bad.any(): return out
            out[bad] = rng.integers(1, N + 1, size=int(bad.sum()))
            bad = _is_seen(self.keys, uu, out, N)

def sampled_candidates(full_seqs: Sequence[np.ndarray],  # per user: the whole sequence (inputs + targets)
                       targets: np.ndarray,              # (U,) target per user
                       n_items: int,                     # catalogue size
                       n: int = 100,                     # sampled negatives per user
                       seed: int = 0,                    # fixed seed: same candidates on every run
                      ) -> np.ndarray:
    "Candidates for the sampled protocol: `(U, 1 + n)` with the target in column 0."
    negs = UnseenSampler(full_seqs, n_items).sample(np.arange(len(full_seqs)), n, np.random.default_rng(seed), distinct=True)
    return np.concatenate([np.asarray(targets, dtype=np.int64)[:, None], negs], axis=1)


# %%
full = [np.array([1, 2, 3, 4]), np.array([5, 6, 7])]
cand = sampled_candidates(full, np.array([4, 7]), n_items=12, n=6, seed=0)
cand

# %%
test_eq(cand.shape, (2, 7)); test_eq(cand[:, 0].tolist(), [4, 7])
for row, s in zip(cand, full):
    assert not set(row[1:]) & set(s) and len(set(row[1:])) == 6 and row[1:].min() >= 1 and row[1:].max() <= 12
test_eq(sampled_candidates(full, np.array([4, 7]), 12, 6, seed=0), cand)        # fixed seed, same draw
assert (sampled_candidates(full, np.array([4, 7]), 12, 6, seed=1) != cand).any()
test_fail(lambda: sampled_candidates(full, np.array([4, 7]), n_items=12, n=9), contains="Cannot draw 9 distinct")


# %% [markdown]
# ## Ranking every user with a model
#
# `rank_users` runs any model that follows the model contract (`score_all`, `score_candidates`) over users
# in length-sorted batches with no gradients and in eval mode, and returns each user's rank. Every call passes
# `users=` (the batch's row indices of the split, `(B,)`), so models whose scores depend on the user (BPR, Caser)
# need no special case; other models ignore it. `gather` optionally returns the raw (unmasked) scores of chosen
# items in the same pass: the trainer uses it for the validation loss.
#
# **Large catalogues: blocks of items.** A `(B, N+1)` score block is 4 GB for 1,024 users and 10^6 items. When
# `B * (N+1)` exceeds `max_block` scores, and the model can score a range of items (`user_states(seqs)` ->
# `(B, D)` and `score_items(states, lo, hi)` -> `(B, hi-lo)`, which `SeqRecModel` provides), the catalogue is
# walked in blocks of items and the target's rank is **counted**, never sorted: a first walk takes each target's
# score from the block that holds it, a second walk counts, per block, the items scoring at or above it (or above
# it, with optimistic ties), after setting the history (masked protocol), the padding column and the target itself
# out of play. Both walks make the same calls, so the target is compared with scores computed exactly as its own;
# the price is computing the scores twice. Nothing `(B, N)` is ever held; memory is `B x block`.
#
# **Sharding users.** With `shard` (an object with `rank`, `world_size` and `all_sum(array)`, e.g.
# `sagerec.distributed.DistEnv`), each process ranks every `world_size`-th length batch, starting at its
# `rank`, and the ranks are summed across processes (each user is filled by exactly one; the others add 0). The
# batches are the ones a single process forms, so every user's scores are computed in the same batch as
# without sharding, and the gathered ranks are those of one process.

# %%
#| export
def model_max_len(model: nn.Module) -> int:
    "The longest input a model accepts (`model.max_len` or `model.cfg.max_len`)."
    for m in (getattr(model, "max_len", None), getattr(getattr(model, "cfg", None), "max_len", None)):
        if isinstance(m, int) and m > 0: return m
    raise SageRecError(f"Cannot tell the maximum sequence length of {type(model).__name__}: pass max_len=... explicitly.")

def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")

MAX_BLOCK = 2**25  # scores held at once during full ranking (128 MiB of float32); above it, items are walked in blocks

def _defined_in(cls: type, name: str) -> type:
    return next(k for k in cls.__mro__ if name in vars(k))

def _blocked(model: nn.Module, n_cols: int, batch_size: int, item_block: int | None) -> int | None:
    "Items per block for full ranking, or None for one `score_all` call."
    can = hasattr(model, "user_states") and hasattr(model, "score_items") and hasattr(model, "n_items")
    if can:  # a class that overrides score_all below the one that defines score_items scores differently: use its score_all
        a, b = _defined_in(type(model), "score_all"), _defined_in(type(model), "score_items")
        can = a is b or not issubclass(a, b)
    if item_block is not None:
        check(int(item_block) >= 1, f"item_block must be >= 1, got {item_block}.")
        check(can, f"item_block={item_block} needs a model whose user_states() and score_items() give its scores "
                   f"(SeqRecModel's do); {type(model).__name__} only has score_all() (or overrides it alone): override those two too.")
        return None if item_block >= n_cols else int(item_block)
    if not can or batch_size * n_cols <= MAX_BLOCK: return None  # one (B, N+1) block
    return max(1, MAX_BLOCK // batch_size)

def _block_ranks(model: nn.Module, seqs: torch.Tensor, tgt: torch.Tensor, hist: torch.Tensor | None,
                 gather: torch.Tensor | None, block: int, ties: str, users: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    "Ranks (and raw gathered scores) of one user batch, walking the items in blocks of `block` (see above)."
    z = model.user_states(seqs, users=users)                            # (B, D)
    n_cols, B, dev = model.n_items + 1, seqs.shape[0], seqs.device
    rows = torch.arange(B, device=dev)
    t = torch.empty(B, device=dev)                                       # (B,) each target's own score
    got = torch.empty(gather.shape, device=dev) if gather is not None else None
    for lo in range(0, n_cols, block):                                   # walk 1: target (and gathered) scores
        hi = min(lo + block, n_cols)
        s = model.score_items(z, lo, hi).float()                         # (B, C)
        if torch.isnan(s.amax(1)).any():
            raise SageRecError("The model produced NaN scores, so ranks are undefined. The weights have diverged: "
                               "retrain with a lower learning rate, or check the checkpoint you loaded.")
        inb = (tgt >= lo) & (tgt < hi)                                   # (B,)
        t[inb] = s[rows[inb], tgt[inb] - lo]
        if gather is not None:
            r, c = ((gather >= lo) & (gather < hi)).nonzero(as_tuple=True)
            got[r, c] = s[r, gather[r, c] - lo]
    rank = torch.zeros(B, dtype=torch.int64, device=dev)
    for lo in range(0, n_cols, block):                                   # walk 2: count what beats each target
        hi = min(lo + block, n_cols)
        s = model.score_items(z, lo, hi).float()                         # (B, C), the same call as in walk 1
        if hist is not None:                                             # the user's history is out of play
            r, c = ((hist >= lo) & (hist < hi)).nonzero(as_tuple=True)
            s[r, hist[r, c] - lo] = float("-inf")
        if lo == 0: s[:, 0] = float("-inf")                              # padding never counts
        inb = (tgt >= lo) & (tgt < hi)
        s[rows[inb], tgt[inb] - lo] = float("-inf")                      # the target does not beat itself
        beats = s >= t[:, None] if ties == "pessimistic" else s > t[:, None]
        rank += beats.sum(1)
    return rank, got

@torch.no_grad()
def rank_users(model: nn.Module,                          # follows the model contract
               inputs: Sequence[np.ndarray],              # per user: the input sequence (= the history)
               targets: np.ndarray,                       # (U,) target item per user
               mask_history: bool = True,                 # remove the user's input items from the ranking (target excepted)
               candidates: np.ndarray | None = None,      # (U, C) candidate items, target in column 0: sampled protocol
               gather: np.ndarray | None = None,          # (U, G) items whose raw scores to return as well
               users: np.ndarray | None = None,           # (U,) row index of each user in the split (default 0..U-1)
               ties: str = "pessimistic",                 # tie rule, see `target_ranks`
               max_len: int | None = None,                # input cut; default: the model's max_len
               batch_size: int = 1024,                    # users per forward pass
               device: torch.device | str | None = None,  # default: the model's device
               item_block: int | None = None,             # full ranking: items per block (None: blocks only when B x (N+1) > MAX_BLOCK)
               shard=None,                                # rank this process's share of the users and sum across processes (see above)
              ) -> tuple[np.ndarray, np.ndarray | None]:
    "0-based rank of each user's target (and the gathered raw scores, if asked)."
    U = len(inputs); targets = np.asarray(targets, dtype=np.int64)
    check(len(targets) == U, f"{U} input sequences but {len(targets)} targets: pass one target per user.")
    check(U > 0, "No users to evaluate.")
    check(ties in ("pessimistic", "optimistic"), f"ties must be 'pessimistic' or 'optimistic', got {ties!r}.")
    lens = np.fromiter((len(s) for s in inputs), dtype=np.int64, count=U)
    check(lens.min() > 0, f"{int((lens == 0).sum())} users have an empty input sequence; leave-one-out needs at "
                          "least one item before the target (filter users with fewer than 3 interactions).")
    users = np.arange(U, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64)
    check(users.shape == (U,), f"users must hold one row index per input sequence ({U}); got shape {users.shape}.")
    if candidates is not None:
        check(candidates.shape[0] == U and (candidates[:, 0] == targets).all(),
              "candidates must have one row per user with the target in column 0 (see sampled_candidates).")
    max_len = max_len or model_max_len(model)
    dev = torch.device(device) if device is not None else _device_of(model)
    block = None if candidates is not None else _blocked(model, int(getattr(model, "n_items", 0)) + 1, min(batch_size, U), item_block)
    was_training = model.training; model.eval()
    ranks = np.zeros(U, dtype=np.int64)
    got = np.zeros(gather.shape, dtype=np.float32) if gather is not None else None
    batches = length_batches(np.minimum(lens, max_len), batch_size)
    if shard is not None: batches = batches[shard.rank::shard.world_size]
    try:
        for idx in batches:
            seqs = torch.from_numpy(left_pad([inputs[i] for i in idx], max_len)).to(dev)   # (B, L)
            tgt = torch.from_numpy(targets[idx]).to(dev)                                  # (B,)
            hist = (torch.from_numpy(left_pad([inputs[i] for i in idx], max_len=int(lens[idx].max()))).to(dev)  # (B, H) whole history
                    if mask_history and candidates is None else None)
            u = torch.from_numpy(users[idx]).to(dev)                                      # (B,)
            if candidates is not None:
                cand = torch.from_numpy(candidates[idx]).to(dev)                          # (B, C)
                sc = model.score_candidates(seqs, cand, users=u).float().masked_fill(cand == 0, float("-inf"))  # (B, C)
                r = target_ranks(sc, torch.zeros_like(tgt), ties)
                if gather is not None: got[idx] = model.score_candidates(seqs, torch.from_numpy(gather[idx]).to(dev), users=u).float().cpu().numpy()
            elif block is not None:
                g = torch.from_numpy(gather[idx]).to(dev) if gather is not None else None
                r, gb = _block_ranks(model, seqs, tgt, hist, g, block, ties, users=u)
                if gather is not None: got[idx] = gb.cpu().numpy()
            else:
                sc = model.score_all(seqs, users=u).float()                              # (B, N+1)
                sc[:, 0] = float("-inf")                                                 # padding is never a candidate
                if gather is not None: got[idx] = sc.gather(1, torch.from_numpy(gather[idx]).to(dev)).cpu().numpy()
                if hist is not None: mask_history_(sc, hist, tgt)
                r = target_ranks(sc, tgt, ties)
            ranks[idx] = r.cpu().numpy()
    finally:
        model.train(was_training)
    if shard is not None:  # every user was ranked by exactly one process; the others contribute 0
        ranks = shard.all_sum(ranks)
        if got is not None: got = shard.all_sum(got)
    return ranks, got


# %% [markdown]
# `evaluate` is the one entry point used everywhere (trainer, `train` notebook, benchmarks): it picks the
# stage's inputs and targets from a `LeaveOneOut` split, applies the protocol and returns the metrics with
# the protocol's label.

# %%
#| export
PROTOCOLS = ("full", "sampled100")

def protocol_label(protocol: str = "full", mask_history: bool = True) -> str:
    "The name tables use for a protocol: 'full-masked', 'full-unmasked' or 'sampled100'."
    check(protocol in PROTOCOLS, f"Unknown evaluation protocol {protocol!r}: use one of {PROTOCOLS}.")
    return "sampled100" if protocol == "sampled100" else ("full-masked" if mask_history else "full-unmasked")

def stage_data(split, stage: str = "test") -> tuple[list[np.ndarray], np.ndarray]:
    "(inputs, targets) of a `LeaveOneOut` split for stage 'valid' (inputs = seq[:-2]) or 'test' (inputs = seq[:-1])."
    check(stage in ("valid", "test"), f"Unknown stage {stage!r}: use 'valid' or 'test'.")
    return (split.valid_input, split.valid_target) if stage == "valid" else (split.test_input, split.test_target)

def evaluate(model: nn.Module,               # follows the model contract
             split,                          # a `LeaveOneOut` split (sagerec.data)
             stage: str = "test",            # 'valid' or 'test'
             protocol: str = "full",         # 'full' (all items) or 'sampled100' (target + 100 unseen items)
             mask_history: bool = True,      # full protocol: remove the user's history items (target excepted)
             ks: Sequence[int] = (10, 20),   # cut-offs
             ties: str = "pessimistic",      # tie rule
             n_candidates: int = 100,        # sampled protocol: negatives per user
             seed: int = 0,                  # sampled protocol: fixed seed of the candidate draw
             max_len: int | None = None,     # input cut; default: the model's max_len
             batch_size: int = 1024,         # users per forward pass
             device=None,                    # default: the model's device
             return_ranks: bool = False,     # also return the per-user ranks (for paired tests)
             item_block: int | None = None,  # full ranking: items per block (None: automatic, see `rank_users`)
             shard=None,                     # a `sagerec.distributed.DistEnv`: rank this process's users, gather all
            ) -> dict:
    "Recall@k and NDCG@k of `model` on one stage of `split` under one protocol, averaged over users."
    label = protocol_label(protocol, mask_history)
    inputs, targets = stage_data(split, stage)
    cand = None
    if protocol == "sampled100":
        full = [np.append(s, t) for s, t in zip(split.test_input, split.test_target)]  # every item the user touched
        cand = sampled_candidates(full, targets, split.n_items, n_candidates, seed)
    ranks, _ = rank_users(model, inputs, targets, mask_history=mask_history, candidates=cand, ties=ties,
                          max_len=max_len, batch_size=batch_size, device=device, item_block=item_block, shard=shard)
    out = {**metrics_from_ranks(ranks, ks), "n_users": int(len(ranks)), "protocol": label, "stage": stage}
    if return_ranks: out["ranks"] = ranks
    return out


# %% [markdown]
# ## A worked example with a stand-in model
#
# `LastItemModel` is a tiny model that follows the contract: it scores items by their dot product with the
# embedding of the last item of the sequence. Its item table is hand-set so the expected ranks can be
# worked out by eye. The split is written out in full: 3 users, 8 items.

# %%
#| export
class LastItemModel(nn.Module):
    "A minimal contract-following model for examples and tests: score = e(last item) . e(item)."
    def __init__(self, n_items: int, dim: int = 8, max_len: int = 50):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
    def item_embeddings(self) -> torch.Tensor: return self.emb.weight                           # (N+1, D)
    def encode(self, seqs: torch.Tensor) -> torch.Tensor: return self.emb(seqs)                # (B, L, D)
    def user_states(self, seqs: torch.Tensor, users=None) -> torch.Tensor: return self.encode(seqs)[:, -1]  # (B, D)
    def score_items(self, z: torch.Tensor, lo: int, hi: int) -> torch.Tensor:                   # (B, hi-lo) items lo..hi-1
        return z @ self.item_embeddings()[lo:hi].T                                              # padding included: the evaluator excludes it
    def score_all(self, seqs: torch.Tensor, users=None) -> torch.Tensor: return self.score_items(self.user_states(seqs), 0, self.n_items + 1)  # (B, N+1)
    def score_candidates(self, seqs: torch.Tensor, cand: torch.Tensor, users=None) -> torch.Tensor:
        return (self.emb(cand) * self.encode(seqs)[:, -1:]).sum(-1)                             # (B, C)
    def loss(self, seqs, pos, neg) -> torch.Tensor:
        h = self.encode(seqs)                                                                   # (B, L, D)
        lp = (h * self.emb(pos)).sum(-1); ln = (h[:, :, None] * self.emb(neg)).sum(-1)          # (B, L), (B, L, n)
        m = (pos > 0).float()
        bce = -(nn.functional.logsigmoid(lp) * m).sum() - (nn.functional.logsigmoid(-ln) * m[..., None]).sum() / ln.shape[-1]
        return bce / m.sum().clamp(min=1)
    def training_loss(self, batch) -> torch.Tensor: return self.loss(batch.seqs, batch.pos, batch.neg)  # BCE only
    def reset_parameters(self): nn.init.xavier_uniform_(self.emb.weight); self.emb.weight.data[0] = 0


# %%
from types import SimpleNamespace

# %%
toy = SimpleNamespace(n_items=8,
    valid_input=[np.array([1, 2]), np.array([3, 4, 5]), np.array([6, 2])], valid_target=np.array([3, 6, 7]),
    test_input=[np.array([1, 2, 3]), np.array([3, 4, 5, 6]), np.array([6, 2, 7])], test_target=np.array([4, 3, 8]))
lm = LastItemModel(8, dim=2)
with torch.no_grad():  # items 1..8 on a line: item i sits at (i, 1), so the highest score is the largest id
    lm.emb.weight[:] = torch.tensor([[0., 0.]] + [[float(i), 1.] for i in range(1, 9)])
res = {p: evaluate(lm, toy, "test", protocol="full", mask_history=p == "masked", ks=(1, 3), return_ranks=True)
       for p in ("masked", "unmasked")}
{p: (r["ranks"].tolist(), r["recall@3"]) for p, r in res.items()}

# %% [markdown]
# With every last item scoring the largest id first, the unmasked ranks are `8 - target`: user 0 (target 4)
# is beaten by 8, 7, 6, 5; user 1's target 3 by 4..8; user 2's target 8 wins. Masking removes the history:
# user 0's input {1, 2, 3} is below the target and changes nothing; user 1's target 3 was seen before (a
# repeat) and stays rankable, while its history items 4, 5 and 6 drop out, leaving 7 and 8 ahead of it.

# %%
test_eq(res["unmasked"]["ranks"].tolist(), [4, 5, 0])
test_eq(res["masked"]["ranks"].tolist(), [4, 2, 0])
test_eq(res["masked"]["protocol"], "full-masked"); test_eq(res["unmasked"]["protocol"], "full-unmasked")
test_close(res["masked"]["recall@3"], 2 / 3)
test_close(res["masked"]["ndcg@3"], (0 + 1 / math.log2(4) + 1) / 3)
s100 = evaluate(lm, toy, "valid", protocol="sampled100", n_candidates=4, ks=(1, 5), return_ranks=True)
assert s100["protocol"] == "sampled100" and s100["recall@5"] == 1.0  # 5 candidates: every rank is < 5
test_fail(lambda: evaluate(lm, toy, protocol="sampled1000"), contains="Unknown evaluation protocol")
test_fail(lambda: evaluate(lm, toy, stage="train"), contains="Unknown stage")


# %% [markdown]
# **Padding and users.** A stand-in that scores the padding item above everything: the evaluator still never
# ranks it, so the ranks are those above. Every user's row index reaches the model, in the batch's order.

# %%
class PaddingLover(LastItemModel):
    "Scores item 0 highest, and keeps the user indices it is given."
    def score_all(self, seqs, users=None):
        self.users = users.tolist(); s = super().score_all(seqs); s[:, 0] = 1e9; return s  # (B, N+1)
pl = PaddingLover(8, dim=2); pl.load_state_dict(lm.state_dict())
pad_res = evaluate(pl, toy, "test", ks=(1, 3), return_ranks=True)
pad_res["ranks"].tolist(), pl.users

# %%
test_eq(pad_res["ranks"].tolist(), res["masked"]["ranks"].tolist())
test_eq(sorted(pl.users), [0, 1, 2])

# %% [markdown]
# ## Full ranking on the embedded Beauty slice
#
# The evaluation of a freshly initialised stand-in model on `beauty-mini`, once under each protocol. An
# untrained model ranks at chance level: the hit rate at 10 of a random ranking of `N` items is about `10/N`
# under full ranking and `10/101` under sampled-100; the untrained stand-in sits near those values.

# %%
from sagerec.data import load_dataset
from sagerec.core import seed_everything
import pandas as pd

# %%
mini = load_dataset("beauty-mini"); sp = mini.split()
seed_everything(0); rnd = LastItemModel(mini.n_items, dim=16); rnd.reset_parameters()
chance = {lbl: evaluate(rnd, sp, "test", protocol=p, mask_history=m)
          for lbl, p, m in [("full-masked", "full", True), ("full-unmasked", "full", False), ("sampled100", "sampled100", True)]}
pd.DataFrame(chance).T[["recall@10", "ndcg@10", "recall@20", "ndcg@20", "n_users"]]

# %%
test_eq(chance["full-masked"]["n_users"], mini.n_users)
assert chance["full-masked"]["recall@10"] < 5 * 10 / mini.n_items + 0.02
assert 0.5 * 10 / 101 < chance["sampled100"]["recall@10"] < 2 * 10 / 101


# %% [markdown]
# ## Blocks of items and shards of users give the same ranks
#
# The same untrained stand-in on `beauty-mini`, under both full-ranking protocols and both tie rules: the ranks
# from one `(B, N+1)` block per batch equal those from walks over blocks of 1,000, 97 and 1 items, exactly. A
# second item table with every item duplicated (pairs of exactly equal scores) checks that ties are counted the
# same way in blocks. Then the users are split into three shards, each ranked as if it were one of three
# processes (`all_sum` left out); adding the three partial rank arrays gives the single-process ranks.

# %%
def block_check(model, split) -> dict:
    "Whether blocked ranks equal one-block ranks, per (protocol, ties, block)."
    out = {}
    for mask in (True, False):
        for ties in ("pessimistic", "optimistic"):
            ref, _ = rank_users(model, split.test_input, split.test_target, mask_history=mask, ties=ties, item_block=10**9)
            for blk in (1000, 97, 1):
                got, _ = rank_users(model, split.test_input, split.test_target, mask_history=mask, ties=ties, item_block=blk)
                out[("masked" if mask else "unmasked", ties, blk)] = bool((got == ref).all())
    return out

seed_everything(0); twin = LastItemModel(mini.n_items, dim=16); twin.reset_parameters()
with torch.no_grad(): twin.emb.weight[2::2] = twin.emb.weight[1:-1:2].clone()  # item 2j has item 2j-1's vector
blocks = {"random": block_check(rnd, sp), "with exact ties": block_check(twin, sp)}
pd.DataFrame(blocks).T

# %%
assert all(v for b in blocks.values() for v in b.values())
r_pess, _ = rank_users(twin, sp.test_input, sp.test_target, mask_history=False, item_block=97)
r_opt, _ = rank_users(twin, sp.test_input, sp.test_target, mask_history=False, ties="optimistic", item_block=97)
test_eq(r_pess - r_opt, np.ones_like(r_pess))  # every target's twin ties with it and counts only when ties are pessimistic
test_fail(lambda: rank_users(twin, sp.test_input, sp.test_target, item_block=0), contains="item_block must be >= 1")


# %%
class LocalShard:
    "One of `world_size` shards, ranked in this process; `all_sum` is left to the caller."
    def __init__(self, rank, world_size): self.rank, self.world_size = rank, world_size
    def all_sum(self, a): return a

full_ranks, full_got = rank_users(rnd, sp.valid_input, sp.valid_target, gather=sp.valid_target[:, None], batch_size=128)
parts = [rank_users(rnd, sp.valid_input, sp.valid_target, gather=sp.valid_target[:, None], batch_size=128, shard=LocalShard(r, 3))
         for r in range(3)]
[int((p[0] > 0).sum()) for p in parts], bool((sum(p[0] for p in parts) == full_ranks).all())

# %%
test_eq(sum(p[0] for p in parts), full_ranks); test_eq(sum(p[1] for p in parts), full_got)
assert all((p[0] > 0).sum() > 0 for p in parts)  # every shard ranked some users

# %% [markdown]
# ## How fast is full ranking of every Beauty user?
#
# The budget is 10 s on a 2-core CPU for all 22,363 Beauty users with the history masked. The stand-in model
# scores exactly like a real model does at the end (a `(B, D) @ (D, N+1)` product, then masking and counting),
# so this times the evaluation machinery; the `train` notebook and `bench_train` time it with the real model.

# %%
import time

# %%
#| slow
beauty = load_dataset("beauty"); bsp = beauty.split()
seed_everything(0); big = LastItemModel(beauty.n_items, dim=50); big.reset_parameters()
torch.set_num_threads(2)
t0 = time.perf_counter(); full_beauty = evaluate(big, bsp, "test"); eval_seconds = time.perf_counter() - t0
round(eval_seconds, 2), full_beauty["n_users"]

# %%
#| slow
test_eq(full_beauty["n_users"], 22363)
assert eval_seconds < 10, eval_seconds

# %%
#| hide
import nbdev; nbdev.nbdev_export()
