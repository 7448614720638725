# %% [markdown]
# # Training
# > BCE with sampled negatives on every position, Adam, LR decay on the validation loss, early stopping on validation NDCG@10, checkpoints that survive a kill.

# %%
#| default_exp training

# %%
#| export
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sagerec.core import SageRecError, atomic_write, check, fingerprint, pick_device, rel_path, seed_everything
from sagerec.distributed import DistEnv, ddp_loss, ddp_wrap, rank_generator, rank_seed, shard
from sagerec.params import check_fields
from sagerec.evaluate import UnseenSampler, left_pad, metrics_from_ranks, model_max_len, rank_users
from sagerec.model import LOSSES, TrainBatch

# %%
#| hide
import tempfile
from types import SimpleNamespace
from fastcore.test import test_eq, test_close, test_fail

# %%
#| hide
torch.set_num_threads(1)  # tiny fixtures: one thread is faster and immune to a busy shared CPU

# %% [markdown]
# ## Configuration
#
# The defaults are the paper's (SPEC.md, §Training); everything the paper leaves open is a named field.

# %%
#| export
POOLS = ("uniform", "popularity")
LOSS_NORMS = ("batch", "position")
LR_SIGNALS = ("valid_loss", "metric")

@dataclass
class TrainConfig:
    "How to train one model (defaults: the paper's settings, SPEC.md)."
    epochs: int = 200                  # upper bound; early stopping usually ends sooner (paper: ~150 on Beauty)
    batch_size: int = 128              # users per step (paper)
    lr: float = 1e-3                   # Adam learning rate (paper)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas (paper)
    eps: float = 1e-8                  # Adam epsilon (paper)
    loss: str = "bce"                  # objective (model.loss kind): 'bce' (paper), 'ce' (full softmax), 'sampled_softmax'
    n_neg: int = 1                     # 'bce': negatives per target position (SASRec: 1; SPEC's other reading: 100); 'sampled_softmax': pool size per step
    pool: str = "uniform"              # 'sampled_softmax': draw the pool 'uniform'ly over items or by training 'popularity'
    logq: bool = False                 # 'sampled_softmax': subtract log q(item) from every logit (logQ correction)
    loss_norm: str = "batch"           # 'batch': mean over the batch's positions (paper, SASRec); 'position': every position weighs the same across batches
    max_len: int = 50                  # keep the last max_len inputs of a sequence (paper: 50 Beauty/Toys, 165 ML-1M)
    eval_every: int = 1                # validate every this many epochs
    patience: int = 20                 # stop after this many validations without a better `metric` (0: never stop early)
    metric: str = "ndcg@10"            # early-stopping metric: validation stage, full ranking, history masked (paper: NDCG@10)
    lr_patience: int = 5               # LR x lr_factor once the validation loss has not improved for this many validations in a row (0: never)
    lr_factor: float = 0.1             # LR decay factor (paper: 0.1)
    lr_signal: str = "valid_loss"      # what the LR decay watches: 'valid_loss' (paper; lower is better) or 'metric' (the validation `metric`)
    pretrain_epochs: int = 0           # epochs of the model's own pre-training stage (`pretrain_loss`, e.g. S3-Rec) before the main stage (0: none)
    grad_clip: float | None = None     # clip the gradient norm to this (None: no clipping; inf/NaN gradients still stop the run)
    seed: int = 0                      # seeds Python, NumPy and torch; batches and negatives use their own generator from it
    device: str = "auto"               # 'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:N'
    num_threads: int | None = None     # torch CPU threads (None: torch's default)
    bucket: int = 50                   # shuffle users, sort chunks of bucket*batch_size by length, batch, shuffle batches (0: plain shuffle)
    eval_batch_size: int = 1024        # users per forward pass during validation
    progress: bool = True              # show a tqdm bar over epochs with the loss and the validation metric

    def __post_init__(self):
        check_fields(self)  # types first (sagerec.params): 2.5 epochs or 'abc' as a seed name the field
        for f in ("epochs", "batch_size", "n_neg", "max_len", "eval_every", "eval_batch_size"):
            check(getattr(self, f) >= 1, f"TrainConfig.{f} must be >= 1, got {getattr(self, f)!r}.")
        check(self.num_threads is None or self.num_threads >= 1, f"TrainConfig.num_threads must be >= 1 or None (torch's default), got {self.num_threads!r}.")
        check(0 <= self.seed < 2**32, f"TrainConfig.seed must be in [0, 2**32), got {self.seed!r}.")
        check(self.bucket >= 0, f"TrainConfig.bucket must be >= 0 (0: plain shuffle), got {self.bucket!r}.")
        check(0 < self.lr_factor < 1 and all(0 <= b < 1 for b in self.betas) and self.eps > 0,
              f"TrainConfig: need 0 < lr_factor < 1, 0 <= betas < 1 and eps > 0, got lr_factor={self.lr_factor!r}, betas={self.betas!r}, eps={self.eps!r}.")
        check(self.grad_clip is None or self.grad_clip > 0, f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip!r}.")
        check(self.lr > 0 and math.isfinite(self.lr), f"TrainConfig.lr must be a positive number, got {self.lr!r}.")
        check(self.patience >= 0 and self.lr_patience >= 0, "TrainConfig.patience and lr_patience must be >= 0 (0 turns each off).")
        check(self.metric.split("@")[0] in ("ndcg", "recall") and self.metric.split("@")[-1].isdigit(),
              f"TrainConfig.metric must look like 'ndcg@10' or 'recall@20', got {self.metric!r}.")
        for f, allowed in (("loss", LOSSES), ("pool", POOLS), ("loss_norm", LOSS_NORMS), ("lr_signal", LR_SIGNALS)):
            check(getattr(self, f) in allowed, f"TrainConfig.{f}={getattr(self, f)!r}: use one of {allowed}.")

# Fields that change what a run computes; a checkpoint is resumed only under the same values.
_RESULT_FIELDS = ("batch_size", "lr", "betas", "eps", "n_neg", "max_len", "eval_every", "metric", "lr_patience",
                  "lr_factor", "seed", "bucket", "grad_clip", "loss", "pool", "logq", "loss_norm", "lr_signal", "pretrain_epochs")

# %%
TrainConfig(epochs=3)

# %%
test_eq(TrainConfig().lr, 1e-3); test_eq(TrainConfig().betas, (0.9, 0.999)); test_eq(TrainConfig().batch_size, 128)
test_eq(TrainConfig(betas=[0.9, 0.98]).betas, (0.9, 0.98))  # YAML gives lists
test_fail(lambda: TrainConfig(lr=-1), contains="lr must be a positive")
test_fail(lambda: TrainConfig(batch_size=0), contains="batch_size must be >= 1")
test_fail(lambda: TrainConfig(metric="auc"), contains="metric must look like")
test_fail(lambda: TrainConfig(epochs=2.5, seed="abc"), contains="TrainConfig: epochs=2.5 must be a whole number, not a fraction; seed='abc' must be a whole number")
test_fail(lambda: TrainConfig(num_threads=-2), contains="num_threads must be >= 1 or None")
test_fail(lambda: TrainConfig(eval_batch_size=0), contains="TrainConfig.eval_batch_size must be >= 1")


# %% [markdown]
# ## Training examples and batches
#
# Each user contributes one example: the **training part** of their sequence (`split.train[u]` = `seq[:-2]`,
# never the validation or test item), cut to its last `max_len + 1` items; the input is `s[:-1]` and every
# position's target is the next item `s[1:]` (SASRec). Users with fewer than 2 training items have no target
# and are skipped.
#
# **Negatives** are drawn uniformly, `n_neg` per position, from the items the user never interacted with
# *in the training part*: the validation and test items are unknown at training time, so they are not
# excluded (excluding them would leak the held-out items into training).
#
# **Batches**: users are shuffled, cut into chunks of `bucket * batch_size`, each chunk is sorted by length and
# split into batches, and the batch order is shuffled. Each batch is left-padded only to its own longest
# sequence. On Beauty (average training input ~6 items, `max_len` 50) this removes most of the padding work.

# %%
#| export
@dataclass
class Batch:
    "One training step's arrays (numpy, int64)."
    users: np.ndarray  # (B,) user indices
    seqs: np.ndarray   # (B, L) inputs, left-padded with 0
    pos: np.ndarray    # (B, L) next item per position, 0 = no target
    neg: np.ndarray | None  # 'bce': (B, L, n_neg) negatives, 0 where pos is 0; 'sampled_softmax': (P,) pool; 'ce': None

class TrainingData:
    "The training examples of a split and the epoch's batches: inputs seq[:-1], targets seq[1:] of each training sequence."
    def __init__(self, train: Sequence[np.ndarray],  # per user: the training part of the sequence (split.train)
                 n_items: int,                        # catalogue size
                 max_len: int = 50):                  # inputs keep the last max_len items
        self.n_items, self.max_len = n_items, max_len
        lens = np.fromiter((len(s) for s in train), dtype=np.int64, count=len(train))
        self.users = np.flatnonzero(lens >= 2)                      # users with at least one target
        self.seqs = [np.asarray(train[u], dtype=np.int64)[-(max_len + 1):] for u in self.users]
        self.lengths = np.array([len(s) - 1 for s in self.seqs], dtype=np.int64)   # inputs per example
        self.sampler = UnseenSampler(train, n_items)               # negatives avoid the training part only
        counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in train] or [np.zeros(0, np.int64)]), minlength=n_items + 1)[:n_items + 1]
        self.popularity = counts[1:] / max(counts[1:].sum(), 1)     # (N,) training share of items 1..N

    def log_q(self, pool: str = "uniform") -> np.ndarray:  # (N+1,)
        "Log-probability of drawing each item into a sampled-softmax pool (index 0, padding: 0)."
        q = np.full(self.n_items, 1.0 / self.n_items) if pool == "uniform" else np.maximum(self.popularity, 1e-12)
        return np.concatenate([[0.0], np.log(q)])

    def pool(self, size: int, rng: np.random.Generator, pool: str = "uniform") -> np.ndarray:  # (P,)
        "A pool of `size` negatives shared by every position of a step, drawn with replacement."
        if pool == "uniform": return rng.integers(1, self.n_items + 1, size=size)
        return rng.choice(self.n_items, size=size, p=self.popularity) + 1

    def __len__(self) -> int: return len(self.users)

    def batch_order(self, batch_size: int, rng: np.random.Generator, bucket: int = 50) -> list[np.ndarray]:
        "Example indices per batch for one epoch: shuffled, length-bucketed, batch order shuffled."
        perm = rng.permutation(len(self))
        if bucket and bucket > 0:
            chunk = bucket * batch_size
            perm = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")] for c in np.array_split(perm, max(1, math.ceil(len(perm) / chunk)))])
        batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def make_batch(self, idx: np.ndarray, n_neg: int, rng: np.random.Generator, loss: str = "bce", pool: str = "uniform") -> Batch:
        "Pad the examples `idx` to their longest input and draw the negatives `loss` needs: `n_neg` per position ('bce'), a pool of `n_neg` ('sampled_softmax'), none ('ce')."
        ex = [self.seqs[i] for i in idx]
        seqs = left_pad([s[:-1] for s in ex], self.max_len)                      # (B, L)
        pos = left_pad([s[1:] for s in ex], self.max_len, length=seqs.shape[1])  # (B, L)
        users = self.users[idx]
        if loss == "ce": return Batch(users, seqs, pos, None)
        if loss == "sampled_softmax": return Batch(users, seqs, pos, self.pool(n_neg, rng, pool))
        neg = self.sampler.sample(users, seqs.shape[1] * n_neg, rng).reshape(len(idx), seqs.shape[1], n_neg)  # (B, L, n_neg)
        neg[pos == 0] = 0
        return Batch(users, seqs, pos, neg)

    def batches(self, batch_size: int, n_neg: int, rng: np.random.Generator, bucket: int = 50, loss: str = "bce", pool: str = "uniform"):
        "Yield one epoch of `Batch`es."
        for idx in self.batch_order(batch_size, rng, bucket): yield self.make_batch(idx, n_neg, rng, loss, pool)


# %% [markdown]
# Three users, 9 items. User 1 has a single training item, so no target, and is skipped. User 2's sequence is
# longer than `max_len + 1 = 4` and keeps its last 4 items: inputs `[5, 6, 7]`, targets `[6, 7, 8]`.

# %%
td = TrainingData([np.array([1, 2, 3]), np.array([4]), np.array([2, 4, 5, 6, 7, 8])], n_items=9, max_len=3)
b = td.make_batch(np.arange(len(td)), n_neg=2, rng=np.random.default_rng(0))
b.users, b.seqs, b.pos, b.neg

# %%
test_eq(b.users.tolist(), [0, 2])
test_eq(b.seqs.tolist(), [[0, 1, 2], [5, 6, 7]]); test_eq(b.pos.tolist(), [[0, 2, 3], [6, 7, 8]])
test_eq(b.neg.shape, (2, 3, 2)); test_eq(b.neg[0, 0].tolist(), [0, 0])             # no target, no negatives
assert not set(b.neg[0, 1:].ravel()) & {1, 2, 3} and not set(b.neg[1].ravel()) & {2, 4, 5, 6, 7, 8}

# %% [markdown]
# For the softmax objectives the batch carries a pool of `n_neg` items shared by the whole step
# (`sampled_softmax`, drawn uniformly or by training popularity, whose log-probabilities `log_q` feed the logQ
# correction) or no negatives at all (`ce`, which scores the whole catalogue).

# %%
pb = td.make_batch(np.arange(len(td)), n_neg=1000, rng=np.random.default_rng(0), loss="sampled_softmax", pool="popularity")
np.bincount(pb.neg, minlength=10)[1:], td.popularity.round(3)

# %%
test_eq(pb.neg.shape, (1000,)); test_eq(td.make_batch(np.arange(len(td)), 5, np.random.default_rng(0), loss="ce").neg, None)
cnt = np.bincount(pb.neg, minlength=10)
test_eq(cnt[9], 0); assert cnt[2] > 1.5 * cnt[1]  # item 9 never occurs in training; item 2 occurs twice as often as item 1
test_close(np.exp(td.log_q("popularity")[1:]).sum(), 1.0, eps=1e-6); test_close(td.log_q("uniform")[1:], np.log(1 / 9), eps=1e-9)

# %% [markdown]
# Bucketing: 1,000 users with lengths 1..50, batches of 16. The padded cells per epoch (batch size × longest
# in batch, summed) drop to close to the real item count, while every user still appears exactly once.

# %%
rng = np.random.default_rng(0)
lens = rng.integers(1, 50, size=1000)
tdb = TrainingData([np.arange(1, n + 2) for n in lens], n_items=60, max_len=50)
def padded_cells(order): return sum(len(i) * tdb.lengths[i].max() for i in order)
plain, bucketed = tdb.batch_order(16, np.random.default_rng(1), bucket=0), tdb.batch_order(16, np.random.default_rng(1), bucket=50)
int(tdb.lengths.sum()), int(padded_cells(plain)), int(padded_cells(bucketed))

# %%
test_eq(np.sort(np.concatenate(bucketed)), np.arange(1000))
assert padded_cells(bucketed) < 1.1 * tdb.lengths.sum() < padded_cells(plain)


# %% [markdown]
# ## Validation: metrics and loss in one pass
#
# Validation ranks every user's `valid_target` from `valid_input` under full ranking with the history masked
# (the paper's early-stopping criterion is NDCG@10 there). The same forward pass gives the **validation loss**
# used for the LR schedule: the BCE at the last position between the validation target and `n_neg` negatives
# per user, drawn once per run (fixed seed) from the items the user never interacted with before the
# validation target (`seq[:-1]`), scored by the raw, unmasked scores:
#
# `valid_loss = mean_u [ -log σ(s_u(target)) - mean_j log(1 - σ(s_u(neg_j))) ]`
#
# It is the training loss restricted to the last position, without the L2 term, on held-out targets.

# %%
#| export
def validation_negatives(split, n_neg: int, seed: int) -> np.ndarray:
    "`(U, 1 + n_neg)`: each user's validation target, then `n_neg` fixed negatives unseen in seq[:-1]."
    known = [np.append(s, t) for s, t in zip(split.valid_input, split.valid_target)]   # = seq[:-1]
    negs = UnseenSampler(known, split.n_items).sample(np.arange(len(known)), n_neg, np.random.default_rng(seed))
    return np.concatenate([np.asarray(split.valid_target, dtype=np.int64)[:, None], negs], axis=1)

def bce_from_scores(scores: np.ndarray) -> float:
    "Mean BCE of `(U, 1 + n)` logits whose column 0 is the positive: -log σ(s+) - mean log(1 - σ(s-))."
    s = torch.as_tensor(scores, dtype=torch.float64)
    return float((-nn.functional.logsigmoid(s[:, 0]) - nn.functional.logsigmoid(-s[:, 1:]).mean(1)).mean())

def validate(model: nn.Module, split, val_cand: np.ndarray, ks=(10, 20), max_len: int = 50,
             batch_size: int = 1024, mask_history: bool = True, shard=None) -> dict[str, float]:
    "Validation metrics (full ranking, history masked) and validation loss of `model`, in one pass (users sharded across processes with `shard`)."
    ranks, sc = rank_users(model, split.valid_input, split.valid_target, mask_history=mask_history,
                           gather=val_cand, max_len=max_len, batch_size=batch_size, shard=shard)
    return {"valid_loss": bce_from_scores(sc), **{f"valid/{k}": v for k, v in metrics_from_ranks(ranks, ks).items()}}


# %%
test_close(bce_from_scores(np.zeros((3, 2))), 2 * math.log(2))  # σ(0) = 1/2 for the positive and the negative
test_close(bce_from_scores(np.array([[20., -20.]])), 0, eps=1e-7)


# %% [markdown]
# ## Checkpoints
#
# A checkpoint holds everything needed to continue as if nothing happened: model, optimizer and scheduler
# states, the RNG states (Python, NumPy's global and the run's own generator, torch CPU and CUDA), the number
# of finished epochs, the history, the early-stopping counters and the configuration. `last.pt` is written
# after every epoch and `best.pt` whenever the validation metric improves, both atomically, so a kill at any
# moment leaves the previous file intact.

# %%
#| export
def _rng_state(gen: np.random.Generator) -> dict:
    return dict(python=random.getstate(), numpy=np.random.get_state(), gen=gen.bit_generator.state,
                torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

def _set_rng_state(s: dict, gen: np.random.Generator) -> None:
    random.setstate(s["python"]); np.random.set_state(s["numpy"]); gen.bit_generator.state = s["gen"]
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available(): torch.cuda.set_rng_state_all(s["cuda"])

def _rank_rng_state(neg_gen: np.random.Generator) -> dict:  # distributed: what differs per rank
    return dict(gen=neg_gen.bit_generator.state, torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state() if torch.cuda.is_available() else None)

def _set_rank_rng_state(s: dict, neg_gen: np.random.Generator) -> None:
    neg_gen.bit_generator.state = s["gen"]; torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available(): torch.cuda.set_rng_state(s["cuda"])

def save_checkpoint(path: Path | str, state: dict) -> Path:
    "Write `state` with `torch.save`, atomically; a failed write (a full disk) is a `SageRecError` that says so."
    try: return atomic_write(path, lambda t: torch.save(state, t))
    except (OSError, RuntimeError) as e:  # torch reports a short write as e.g. "unexpected pos 123 vs 456"
        import shutil
        free = shutil.disk_usage(Path(path).parent).free / 2**20 if Path(path).parent.exists() else float("nan")
        raise SageRecError(f"Could not write the checkpoint {rel_path(path)} ({type(e).__name__}: {str(e).strip().splitlines()[-1][:120]}); "
                           f"{free:.0f} MiB are free on its disk, which is probably full. Nothing was damaged (checkpoints are "
                           f"replaced atomically): free some space and start the run again; it continues from the last checkpoint.") from None

def _damaged(path: Path, what: str) -> SageRecError:
    other = path.with_name("best.pt" if path.name == "last.pt" else "last.pt")
    alt = (f"resume from {other.name} (copy it over {path.name}; it may be some epochs older), " if other.exists() and path.name == "last.pt" else "")
    return SageRecError(f"The checkpoint {rel_path(path)} is damaged ({what}): {alt}start afresh with resume=False "
                        f"(-p resume False), or delete the run folder {rel_path(path.parent)}.")

def load_checkpoint(path: Path | str,                     # a best.pt / last.pt written by `train`
                    model: nn.Module | None = None,       # if given, its weights are replaced by the checkpoint's
                    map_location: str | torch.device = "cpu",
                   ) -> dict:
    "Read a training checkpoint (and load its weights into `model`); a damaged file is a one-line `SageRecError` with the way on."
    path = Path(path)
    check(path.exists(), f"No checkpoint at {rel_path(path)}: train first, or point at a run folder's best.pt / last.pt.")
    try: state = torch.load(path, map_location=map_location, weights_only=False)  # our own file: holds RNG states
    except Exception as e:  # truncated zip, bad pickle, I/O error: torch's messages do not say the file is damaged
        raise _damaged(path, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:100] if str(e).strip() else 'unreadable'}") from None
    if not isinstance(state, dict) or not {"model", "state"} <= set(state): raise _damaged(path, "not a checkpoint written by sagerec.training.train")
    if model is not None:
        try: model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise SageRecError(f"The checkpoint {rel_path(path)} holds weights of other shapes than this model "
                               f"({_shape_diff(state['model'], model.state_dict())}): build the model with the settings it was trained with "
                               f"(its params.json).") from None
    return state

def _shape_diff(saved: dict, now: dict, n: int = 3) -> str:
    "The first `n` differences between two state dicts' tensor shapes, as 'name: saved (a, b), now (a, c)'."
    diffs = [f"{k}: saved {tuple(saved[k].shape) if k in saved else 'none'}, now {tuple(now[k].shape) if k in now else 'none'}"
             for k in dict.fromkeys([*saved, *now]) if k not in saved or k not in now or tuple(saved[k].shape) != tuple(now[k].shape)]
    return "; ".join(diffs[:n]) + (f"; {len(diffs) - n} more" if len(diffs) > n else "")

def _model_signature(model: nn.Module) -> str:
    return fingerprint(type(model).__name__, [(k, tuple(v.shape)) for k, v in model.state_dict().items()])


# %% [markdown]
# ## The training loop

# %%
#| export
@dataclass
class TrainResult:
    "What `train` returns; the same numbers are in the run folder's checkpoints."
    history: list[dict]        # one row per epoch: train_loss, lr, seconds, and validation numbers when validated
    best_epoch: int            # epoch (1-based) with the best validation metric (0: never validated)
    best_metrics: dict         # validation numbers at the best epoch
    stop_reason: str           # 'early_stopping', 'max_epochs'
    seconds_per_epoch: float   # mean training seconds per epoch (validation excluded)
    device: str                # where it ran
    run_dir: Path | None = None
    config: dict = field(default_factory=dict)
    pretrain_history: list[dict] = field(default_factory=list)  # one row per pre-training epoch: pretrain_loss, seconds

    @property
    def best_path(self) -> Path | None: return self.run_dir / "best.pt" if self.run_dir else None
    @property
    def last_path(self) -> Path | None: return self.run_dir / "last.pt" if self.run_dir else None


# %%
#| export
def _nonfinite_error(what: str, value: float, epoch: int, step: int, lr: float, run_dir) -> SageRecError:
    where = f" The last good checkpoint is {str(Path(run_dir) / 'last.pt')!r}." if run_dir and (Path(run_dir) / "last.pt").exists() else ""
    return SageRecError(f"The training {what} became {value} at epoch {epoch}, step {step} (lr {lr:g}): the weights are diverging. "
                        f"Lower the learning rate (e.g. lr={lr / 10:g}), set grad_clip, or check the inputs, then train again "
                        f"in a new run folder.{where}")

def train(model: nn.Module,                  # a model that follows the model contract (built and seeded by the caller)
          split,                             # a `LeaveOneOut` split
          cfg: TrainConfig | None = None,    # training settings
          run_dir: Path | str | None = None, # where best.pt / last.pt go (None: keep nothing on disk)
          resume: bool = True,               # continue from run_dir/last.pt when it exists
          on_step: Callable[[int, int, float], None] | None = None,  # called as on_step(epoch, step, loss) after each step
          on_epoch: Callable[[dict, list[dict]], None] | None = None,  # called as on_epoch(row, history) after each epoch's checkpoint
          dist: DistEnv | None = None,       # this process's place in a torchrun run (sagerec.distributed.init_distributed); None: one process
         ) -> TrainResult:
    "Train `model` on `split.train`, validate, decay the LR, stop early and checkpoint; return the history."
    cfg = cfg or TrainConfig()
    if cfg.num_threads: torch.set_num_threads(cfg.num_threads)
    dev = pick_device(cfg.device)
    env = dist or DistEnv(device=dev); ddp = env.active  # --- distributed: see sagerec.distributed for what changes
    try: m_len = model_max_len(model)
    except SageRecError: m_len = None
    check(m_len is None or cfg.max_len <= m_len, f"TrainConfig.max_len={cfg.max_len} is longer than the model's max_len={m_len}: "
                                                 "use the same value for both (ModelConfig.max_len and TrainConfig.max_len).")
    model.to(dev)
    data = TrainingData(split.train, split.n_items, cfg.max_len)
    check(len(data) > 0, "No user has 2 or more training items, so there is nothing to train on: check the split.")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    # torch reduces once the bad count *exceeds* its patience: lr_patience - 1 gives "after lr_patience bad validations"
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min" if cfg.lr_signal == "valid_loss" else "max",
                                                       factor=cfg.lr_factor, patience=max(cfg.lr_patience - 1, 0))
    run_dir = Path(run_dir) if run_dir is not None else None
    last = run_dir / "last.pt" if run_dir else None
    sig = _model_signature(model); key = {f: getattr(cfg, f) for f in _RESULT_FIELDS}
    gen = np.random.default_rng(cfg.seed)  # batch order (shared by all ranks); and negatives in a single process
    neg_gen = rank_generator(cfg.seed, env.rank) if ddp else gen  # distributed: negatives per rank
    st = dict(epoch=0, history=[], best=-math.inf, best_epoch=0, best_metrics={}, bad=0, stop_reason=None)
    has_last = env.broadcast_object(resume and last is not None and last.exists())  # rank 0 decides, and sends the checkpoint
    if has_last:
        ck = env.broadcast_object(load_checkpoint(last, map_location="cpu" if ddp else dev) if env.is_main else None)
        ways = "use another run folder (run_name), start afresh with resume=False, or delete the folder"
        check(ck.get("world_size", 1) == env.world_size, f"{rel_path(last)} was written by a run on {ck.get('world_size', 1)} processes; "
                                                         f"resume it on as many (this run has {env.world_size}), or {ways}.")
        if ck["signature"] != sig:
            cfg_now = asdict(model.cfg) if dataclasses.is_dataclass(getattr(model, "cfg", None)) else None
            cfg_then = ck.get("model_config")
            what = ("; ".join(f"{k} {cfg_then.get(k)!r} -> {v!r}" for k, v in cfg_now.items() if k in cfg_then and cfg_then.get(k) != v)
                    if cfg_now and cfg_then else "") or _shape_diff(ck["model"], model.state_dict())
            if ck["model_class"] != type(model).__name__: what = f"model {ck['model_class']} -> {type(model).__name__}; {what}"
            raise SageRecError(f"{rel_path(last)} was trained with other model settings ({what}; saved -> now): {ways}.")
        saved = {**{f: getattr(TrainConfig(), f) for f in _RESULT_FIELDS}, **ck["key"]}  # fields added later: their defaults
        diff = [f"{k} {saved[k]!r} -> {v!r}" for k, v in key.items() if saved[k] != v]
        check(not diff, f"{rel_path(last)} was trained with other settings ({'; '.join(diff)}; saved -> now): {ways}.")
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["optimizer"]); sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"], gen); st = ck["state"]
        if ddp: _set_rank_rng_state(ck["rank_rng"][env.rank], neg_gen)
        if st["stop_reason"] == "max_epochs" and st["epoch"] < cfg.epochs: st["stop_reason"] = None  # more epochs asked
    else:
        seed_everything(cfg.seed)
        if ddp: torch.manual_seed(rank_seed(cfg.seed, env.rank))  # distributed: dropout per rank
    val_cand = validation_negatives(split, cfg.n_neg if cfg.loss == "bce" else 1, seed=cfg.seed + 1)
    logq = torch.as_tensor(data.log_q(cfg.pool), dtype=torch.float32, device=dev) if cfg.logq and cfg.loss == "sampled_softmax" else None
    n_batches = math.ceil(len(data) / cfg.batch_size)
    mean_targets = float(data.lengths.sum()) / n_batches  # 'position' norm: a batch's loss weighs (its targets / this)
    step_model = ddp_wrap(model, env, "training_loss") if ddp else None  # distributed: DDP all-reduces the gradients of training_loss

    def snapshot() -> dict:
        rank_rng = env.all_gather_object(_rank_rng_state(neg_gen)) if ddp else None  # a collective: every rank calls it
        return dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(), rng=_rng_state(gen),
                    state=st, key=key, config=asdict(cfg), signature=sig, model_class=type(model).__name__, n_items=split.n_items,
                    world_size=env.world_size, rank_rng=rank_rng,
                    model_config=asdict(model.cfg) if dataclasses.is_dataclass(getattr(model, "cfg", None)) else None)

    # --- pre-training stage (TrainConfig.pretrain_epochs > 0): `model.pretrain_loss(batch)` on the same batches, no
    # validation; then the main stage starts from a fresh Adam state. Checkpointed after every epoch like the main stage.
    if cfg.pretrain_epochs and st.setdefault("pretrain_epoch", 0) < cfg.pretrain_epochs:
        check(callable(getattr(model, "pretrain_loss", None)), f"TrainConfig.pretrain_epochs={cfg.pretrain_epochs}, but "
              f"{type(model).__name__} has no pretrain_loss(batch): set pretrain_epochs=0 for this model.")
        st.setdefault("pretrain_history", [])
        pre_model = ddp_wrap(model, env, "pretrain_loss") if ddp else None
        for pe in tqdm(range(st["pretrain_epoch"] + 1, cfg.pretrain_epochs + 1), desc="pre-training", disable=not (cfg.progress and env.is_main)):
            model.train(); t0 = time.perf_counter(); total, n_steps = 0.0, 0
            for step, idx in enumerate(data.batch_order(cfg.batch_size, gen, cfg.bucket), 1):
                mine = shard(idx, env) if ddp else idx  # distributed: this rank's users, weighted by their number
                b = data.make_batch(mine if len(mine) else idx[:1], cfg.n_neg, neg_gen, cfg.loss, cfg.pool)
                tb = TrainBatch(*(torch.from_numpy(a).to(dev) if a is not None else None for a in (b.users, b.seqs, b.pos, b.neg)),
                                kind=cfg.loss, logq=logq)
                if ddp: loss, lv = ddp_loss(pre_model(tb), len(mine), env)
                else: loss = model.pretrain_loss(tb); lv = float(loss.detach())
                if not math.isfinite(lv): raise _nonfinite_error("pre-training loss", lv, pe, step, opt.param_groups[0]["lr"], run_dir)
                opt.zero_grad(set_to_none=True); loss.backward()
                gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf))
                if not math.isfinite(gnorm): raise _nonfinite_error("pre-training gradient norm", gnorm, pe, step, opt.param_groups[0]["lr"], run_dir)
                opt.step(); total += lv; n_steps += 1
            st["pretrain_history"].append(dict(epoch=pe, pretrain_loss=total / max(n_steps, 1), seconds=time.perf_counter() - t0))
            st["pretrain_epoch"] = pe
            if pe == cfg.pretrain_epochs:  # fine-tuning starts from a new optimizer state, as a separate fine-tuning run would
                opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
                sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min" if cfg.lr_signal == "valid_loss" else "max",
                                                                   factor=cfg.lr_factor, patience=max(cfg.lr_patience - 1, 0))
            if run_dir is not None:
                snap = snapshot()  # a collective under DDP: every rank calls it
                if env.is_main: save_checkpoint(last, snap)
    # --- end of the pre-training stage

    bar = tqdm(total=cfg.epochs, initial=st["epoch"], desc="epochs", unit="epoch", disable=not (cfg.progress and env.is_main), dynamic_ncols=True)
    try:
        while st["stop_reason"] is None and st["epoch"] < cfg.epochs:
            epoch = st["epoch"] + 1
            model.train(); t0 = time.perf_counter(); total, n_steps = 0.0, 0
            order = data.batch_order(cfg.batch_size, gen, cfg.bucket)
            for step, idx in enumerate(order, 1):
                mine = shard(idx, env) if ddp else idx  # distributed: this rank's users of the batch (a rank left without any steps with weight 0)
                b = data.make_batch(mine if len(mine) else idx[:1], cfg.n_neg, neg_gen, cfg.loss, cfg.pool)
                tb = TrainBatch(*(torch.from_numpy(a).to(dev) if a is not None else None for a in (b.users, b.seqs, b.pos, b.neg)),
                                kind=cfg.loss, logq=logq)
                if ddp: loss, lv = ddp_loss(step_model(tb), int((b.pos != 0).sum()) if len(mine) else 0, env)  # weighted: the whole batch's gradient
                else: loss = model.training_loss(tb)
                if cfg.loss_norm == "position":
                    w = float((b.pos != 0).sum() if not ddp else data.lengths[idx].sum()) / mean_targets  # the whole batch's targets
                    loss = loss * w
                    if ddp: lv *= w
                if not ddp: lv = float(loss.detach())
                if not math.isfinite(lv): raise _nonfinite_error("loss", lv, epoch, step, opt.param_groups[0]["lr"], run_dir)
                opt.zero_grad(set_to_none=True); loss.backward()
                gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf))  # the norm, clipped if asked
                if not math.isfinite(gnorm):  # caught before the step, so the weights in memory stay finite
                    raise _nonfinite_error("gradient norm", gnorm, epoch, step, opt.param_groups[0]["lr"], run_dir)
                opt.step()
                total += lv; n_steps += 1
                if on_step is not None: on_step(epoch, step, lv)
            if dev.type == "cuda": torch.cuda.synchronize(dev)
            row = dict(epoch=epoch, train_loss=total / max(n_steps, 1), lr=opt.param_groups[0]["lr"],
                       train_seconds=time.perf_counter() - t0, steps=n_steps)
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                t1 = time.perf_counter()
                row.update(validate(model, split, val_cand, max_len=cfg.max_len, batch_size=cfg.eval_batch_size, shard=env if ddp else None))
                row["valid_seconds"] = time.perf_counter() - t1
                score = row[f"valid/{cfg.metric}"]
                if cfg.lr_patience: sched.step(row["valid_loss"] if cfg.lr_signal == "valid_loss" else score)  # 0: constant LR
                if score > st["best"]:
                    st.update(best=score, best_epoch=epoch, best_metrics={k: v for k, v in row.items() if k.startswith("valid")}, bad=0)
                else: st["bad"] += 1
                if cfg.patience and st["bad"] >= cfg.patience: st["stop_reason"] = "early_stopping"
            st["history"].append(row); st["epoch"] = epoch
            if st["stop_reason"] is None and epoch >= cfg.epochs: st["stop_reason"] = "max_epochs"
            if run_dir is not None:
                snap = snapshot()
                if env.is_main:  # distributed: rank 0 writes
                    if st["best_epoch"] == epoch: save_checkpoint(run_dir / "best.pt", snap)
                    save_checkpoint(last, snap)
            if on_epoch is not None: on_epoch(row, st["history"])
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", **({f"v_{cfg.metric}": f"{row[f'valid/{cfg.metric}']:.4f}", "best": st["best_epoch"]} if "valid_loss" in row else {}))
    finally:
        bar.close()
    secs = [r["train_seconds"] for r in st["history"]]
    return TrainResult(history=st["history"], best_epoch=st["best_epoch"], best_metrics=st["best_metrics"],
                       stop_reason=st["stop_reason"] or "max_epochs", seconds_per_epoch=float(np.mean(secs)) if secs else float("nan"),
                       device=str(dev), run_dir=run_dir, config=asdict(cfg), pretrain_history=st.get("pretrain_history", []))


# %% [markdown]
# ## Training on the embedded Beauty slice
#
# A few epochs of the stand-in `LastItemModel` (scores by the last item's embedding) on `beauty-mini`: the
# training loss falls and validation NDCG@10 rises above the untrained value, and the run folder holds
# both checkpoints.

# %%
from sagerec.data import load_dataset
from sagerec.evaluate import LastItemModel, evaluate
import pandas as pd

# %%
mini = load_dataset("beauty-mini"); sp = mini.split()
seed_everything(0); lm = LastItemModel(mini.n_items, dim=32, max_len=50); lm.reset_parameters()
before = evaluate(lm, sp, "valid")["ndcg@10"]
tmp = Path(tempfile.mkdtemp())
res = train(lm, sp, TrainConfig(epochs=4, lr=1e-2, progress=False), run_dir=tmp / "run")
pd.DataFrame(res.history)[["epoch", "train_loss", "valid_loss", "valid/ndcg@10", "lr", "steps"]].round(4)

# %%
h = res.history
assert h[-1]["train_loss"] < h[0]["train_loss"] and res.best_metrics["valid/ndcg@10"] > before
assert (tmp / "run" / "best.pt").exists() and (tmp / "run" / "last.pt").exists()
test_eq(load_checkpoint(tmp / "run" / "last.pt")["state"]["epoch"], 4); test_eq(res.stop_reason, "max_epochs")


# %% [markdown]
# ## Divergence stops with a clear message
#
# A diverging run stops at the first non-finite loss, or at the first non-finite gradient (checked before the
# optimizer step, so the weights are never overwritten with NaN), and says where it happened and what to do.

# %%
class Exploding(LastItemModel):
    "Returns a non-finite loss from step 3 on."
    def __init__(self, *a, **k): super().__init__(*a, **k); self.calls = 0
    def loss(self, seqs, pos, neg):
        self.calls += 1
        return super().loss(seqs, pos, neg) * (float("inf") if self.calls >= 3 else 1.0)
try: train(Exploding(mini.n_items, 8), sp, TrainConfig(epochs=1, progress=False)); msg = None
except SageRecError as e: msg = str(e)
msg

# %%
assert "loss became inf at epoch 1, step 3" in msg and "Lower the learning rate" in msg
class InfGrad(LastItemModel):
    "A finite loss whose gradient is NaN: d sqrt(x)/dx at x = 0."
    def loss(self, seqs, pos, neg): return super().loss(seqs, pos, neg) + torch.sqrt(self.emb.weight[0, 0] * 0)
test_fail(lambda: train(InfGrad(mini.n_items, 8), sp, TrainConfig(epochs=1, progress=False)), contains="gradient norm became nan at epoch 1, step 1")

# %% [markdown]
# Early stopping: with `patience=1` a run stops at the first validation that does not beat the best one. A
# learning rate of 0 cannot improve anything, so the run stops after epoch 2 and the best epoch is 1.

# %%
seed_everything(0); frozen = LastItemModel(mini.n_items, 8); frozen.reset_parameters()
r0 = train(frozen, sp, TrainConfig(epochs=10, lr=1e-12, patience=1, progress=False))
r0.stop_reason, r0.best_epoch, len(r0.history)

# %%
test_eq((r0.stop_reason, r0.best_epoch, len(r0.history)), ("early_stopping", 1, 2))

# %% [markdown]
# ## Resuming after an interruption
#
# A run interrupted in the middle of epoch 3 and started again from its run folder continues from `last.pt`
# (end of epoch 2) and ends with exactly the history of an uninterrupted run: the RNG states travel with the
# checkpoint. (`tests/test_training.py` does the same with a real `SIGKILL` of a separate process.)

# %%
from sagerec.model import ModelConfig, build_model

# %%
mcfg = ModelConfig(dim=16, max_len=20, dropout=0.5)  # the real no-graph model, dropout included: torch's RNG matters
def fresh():
    seed_everything(0); return build_model("sasrec", mini.n_items, mcfg)
cfg3 = TrainConfig(epochs=3, max_len=20, progress=False)
straight = train(fresh(), sp, cfg3, run_dir=tmp / "straight")
def stop_mid_epoch3(epoch, step, loss):
    if epoch == 3 and step == 2: raise KeyboardInterrupt
try: train(fresh(), sp, cfg3, run_dir=tmp / "resumed", on_step=stop_mid_epoch3)
except KeyboardInterrupt: pass
saved_epoch = load_checkpoint(tmp / "resumed" / "last.pt")["state"]["epoch"]
resumed = train(build_model("sasrec", mini.n_items, mcfg), sp, cfg3, run_dir=tmp / "resumed")
drop = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
saved_epoch, [r["train_loss"] for r in straight.history], [r["train_loss"] for r in resumed.history]

# %%
test_eq(saved_epoch, 2)
test_eq(drop(resumed.history), drop(straight.history))
test_fail(lambda: train(fresh(), sp, TrainConfig(epochs=3, max_len=20, lr=5e-3, progress=False), run_dir=tmp / "resumed"),
          contains="trained with other settings (lr 0.001 -> 0.005; saved -> now)")
seed_everything(0)
test_fail(lambda: train(build_model("sasrec", mini.n_items, ModelConfig(dim=32, max_len=20)), sp, cfg3, run_dir=tmp / "resumed"),
          contains="other model settings (dim 16 -> 32; saved -> now)")
test_fail(lambda: train(fresh(), sp, TrainConfig(epochs=1, max_len=50, progress=False)), contains="longer than the model's max_len")


# %% [markdown]
# ## A pre-training stage
#
# A model that defines `pretrain_loss(batch)` (S3-Rec's attribute objectives, `sagerec.s3rec`) gets
# `TrainConfig.pretrain_epochs` epochs of it before the main stage, on the same batches and with the same
# checks; the main stage then starts from a fresh Adam state. Here a toy `pretrain_loss` (each position must
# recognise its own item against a negative) falls over 3 pre-training epochs, a run killed in the middle of
# pre-training resumes to exactly the uninterrupted histories, and a model without the hook is refused.

# %%
class Pretrainable(LastItemModel):
    "LastItemModel plus a toy pre-training objective; raises KeyboardInterrupt at pre-training call `stop_at`."
    stop_at, calls = None, 0
    def pretrain_loss(self, batch):
        self.calls += 1
        if self.calls == self.stop_at: raise KeyboardInterrupt
        return self.loss(batch.seqs, batch.seqs, batch.neg)
def fresh_pt(stop_at=None):
    seed_everything(0); m = Pretrainable(mini.n_items, 16); m.reset_parameters(); m.stop_at = stop_at; return m
cfg_pt = TrainConfig(epochs=2, pretrain_epochs=3, lr=1e-2, progress=False)
pt = train(fresh_pt(), sp, cfg_pt, run_dir=tmp / "pt")
steps_per_epoch = pt.history[0]["steps"]
try: train(fresh_pt(stop_at=steps_per_epoch + 3), sp, cfg_pt, run_dir=tmp / "pt-resumed")  # killed in pre-training epoch 2
except KeyboardInterrupt: pass
pt_saved = load_checkpoint(tmp / "pt-resumed" / "last.pt")["state"]["pretrain_epoch"]
pt2 = train(fresh_pt(), sp, cfg_pt, run_dir=tmp / "pt-resumed")
pt_saved, [round(r["pretrain_loss"], 4) for r in pt.pretrain_history], [round(r["pretrain_loss"], 4) for r in pt2.pretrain_history]

# %%
test_eq(pt_saved, 1)
h_pt = [r["pretrain_loss"] for r in pt.pretrain_history]
assert len(h_pt) == 3 and h_pt[2] < h_pt[0]
test_eq([r["pretrain_loss"] for r in pt2.pretrain_history], h_pt)
test_eq(drop(pt2.history), drop(pt.history))
test_fail(lambda: train(fresh(), sp, TrainConfig(epochs=1, max_len=20, pretrain_epochs=1, progress=False)), contains="has no pretrain_loss")

# %% [markdown]
# A damaged `last.pt` (a truncated copy, a disk error) stops a resumed run with one line that names the file, says
# it is damaged and gives the ways on; a checkpoint that cannot be written (a full disk) says so and leaves the
# previous file intact.

# %%
import shutil
shutil.copytree(tmp / "resumed", tmp / "damaged")
data = (tmp / "damaged" / "last.pt").read_bytes(); (tmp / "damaged" / "last.pt").write_bytes(data[: len(data) // 2])
try: train(fresh(), sp, cfg3, run_dir=tmp / "damaged"); msg = None
except SageRecError as e: msg = str(e)
msg

# %%
assert "last.pt is damaged" in msg and "resume from best.pt" in msg and "resume=False" in msg and "\n" not in msg
def full_disk(obj, f): raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: file write failed")
_save, torch.save = torch.save, full_disk
try: test_fail(lambda: save_checkpoint(tmp / "resumed" / "last.pt", {"x": 1}), contains="which is probably full. Nothing was damaged")
finally: torch.save = _save
test_eq(load_checkpoint(tmp / "resumed" / "last.pt")["state"]["epoch"], 3)  # the old file is intact

# %%
#| hide
import nbdev; nbdev.nbdev_export()
