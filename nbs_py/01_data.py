# %% [markdown]
# # Data
# > Beauty, Toys and ML-1M as chronological leave-one-out sequences with one text prompt per item, preprocessed as the paper says; plus `beauty-mini`, a slice of Beauty that ships with the package.

# %%
#| default_exp data

# %%
#| export
from __future__ import annotations

import gzip
import html
import importlib.resources
import json
import math
import re
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sagerec.core import SageRecError, atomic_write, cache_dir, check, data_dir as _data_dir, fingerprint
from sagerec.raw import (META_FIELDS, first_bad_row, read_amazon_meta, read_amazon_reviews, read_ml1m_movies,
                         read_ml1m_ratings, reading)

# %%
#| hide
import os, shutil, tempfile, zipfile
from contextlib import contextmanager
from fastcore.test import test_eq, test_fail, test_close

# %%
#| hide
pd.set_option("display.max_colwidth", 120)


# %% [markdown]
# ## What the paper asks for
#
# §5.1 of the paper: ML-1M ratings of 4 and above are positives; users with at least five interactions are kept;
# each user's interactions are sorted chronologically; the last item is the test target, the second-to-last the
# validation target, the rest is training data. Item text is a prompt `"key: value. key: value."` built from
# title, description, categories and brand (Amazon) or title and genres (ML-1M). This notebook does exactly that,
# from either the official raw files (parsed in `01a_raw`) or the prepared offline copy, and caches the result.
#
# | name | what | needs |
# |---|---|---|
# | `beauty` | Amazon Beauty 2014, 5-core | `SAGEREC_DATA` (or `data_dir=`) |
# | `toys` | Amazon Toys and Games 2014, 5-core | `SAGEREC_DATA` |
# | `ml-1m` | MovieLens 1M, ratings >= 4 | `SAGEREC_DATA` |
# | `beauty-mini` | a 1,000-user slice of `beauty`, shipped in `sagerec/assets/` | nothing |
#
# **Folder layout.** The data folder holds one subfolder per dataset, in either layout (or both):
#
# | dataset | official raw files (`source="raw"`) | prepared offline copy (`source="prepared"`) |
# |---|---|---|
# | `beauty/` | `reviews_Beauty_5.json.gz`, `meta_Beauty.json.gz` | `interactions.tsv.gz`, `items.jsonl.gz` |
# | `toys/` | `reviews_Toys_and_Games_5.json.gz`, `meta_Toys_and_Games.json.gz` | `interactions.tsv.gz`, `items.jsonl.gz` |
# | `ml-1m/` | `ml-1m.zip`, or the extracted `ratings.dat` + `movies.dat` | `ratings_ordered.tsv.gz`, `movies.dat` |
#
# `source="auto"` (the default) uses the official raw files when they are all there, else the prepared copy.
# `sagerec.raw.fetch_raw(name, data_dir)` downloads the official files into this layout.

# %%
#| export
@dataclass(frozen=True)
class DatasetSpec:
    "What a dataset name means: its kind, its official file names and its default positive threshold."
    name: str                          # the name given to `load_dataset`
    kind: str                          # "amazon" or "movielens"
    category: str = ""                 # Amazon category as spelled in the official file names
    min_rating: float | None = None    # default positive threshold (ML-1M: ratings >= 4)

DATASETS: dict[str, DatasetSpec] = {
    "beauty": DatasetSpec("beauty", "amazon", "Beauty"),
    "toys": DatasetSpec("toys", "amazon", "Toys_and_Games"),
    "ml-1m": DatasetSpec("ml-1m", "movielens", min_rating=4),
    "beauty-mini": DatasetSpec("beauty-mini", "amazon", "Beauty"),
}
_ALIASES = {"ml1m": "ml-1m", "movielens-1m": "ml-1m", "toys-and-games": "toys", "amazon-beauty": "beauty", "amazon-toys": "toys"}

def dataset_spec(name: str) -> DatasetSpec:
    "The `DatasetSpec` for `name` (case and `_`/`-` are ignored); a `SageRecError` lists the valid names."
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    check(key in DATASETS, f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}.")
    return DATASETS[key]


# %%
dataset_spec("ML_1M")

# %%
test_eq(dataset_spec("Beauty").category, "Beauty")
test_fail(lambda: dataset_spec("amazon-books"), contains="Valid names: beauty, toys, ml-1m, beauty-mini")


# %% [markdown]
# ## Item text prompts
#
# The metadata keeps text exactly as published: HTML entities such as `&amp;`, `&quot;` and `L&#39;Oreal` are
# still there, and some titles are escaped twice (`AVVA&amp;#8482` for `AVVA™`). `clean_text` unescapes at most twice
# and collapses whitespace; a missing value becomes `""`, and `kv_prompt` leaves empty fields out.

# %%
#| exports
def _missing(v) -> bool: return v is None or (isinstance(v, float) and math.isnan(v))

def clean_text(v) -> str:
    "Unescape HTML entities (twice at most, for double-escaped text) and collapse whitespace; `''` for a missing value."
    if _missing(v): return ""
    s = " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
    for _ in range(2):
        u = html.unescape(s)
        if u == s: break
        s = u
    return " ".join(s.split())

def kv_prompt(pairs: list[tuple[str, str]]) -> str:
    "`'key: value. key: value.'` from `(key, value)` pairs, leaving out empty values; a value's own final `.!?` is kept, not doubled."
    parts = []
    for k, v in pairs:
        v = (v or "").strip()
        if v: parts.append(f"{k}: {v}" if v[-1] in ".!?" else f"{k}: {v}.")
    return " ".join(parts)


# %%
cleaned = [clean_text("L&#39;Oreal Paris"), clean_text("Simmer &amp; Shimmer"), clean_text("AVVA&amp;#8482 makeup"),
           clean_text("  two\n lines "), clean_text(None), clean_text(float("nan"))]
cleaned

# %%
test_eq(cleaned, ["L'Oreal Paris", "Simmer & Shimmer", "AVVA™ makeup", "two lines", "", ""])
test_eq(kv_prompt([("Title", "OPI Nail Lacquer"), ("Description", ""), ("Brand", "OPI")]), "Title: OPI Nail Lacquer. Brand: OPI.")
test_eq(kv_prompt([("Title", "Wow!"), ("Brand", "Acme Inc.")]), "Title: Wow! Brand: Acme Inc.")

# %% [markdown]
# **Amazon.** Keys in the paper's order: `Title`, `Description`, `Categories`, `Brand`. Every category path starts at
# a top-level department (`Beauty`, `Toys & Games`, sometimes a second one such as `Clothing, Shoes & Jewelry`)
# that says nothing about the product within its dataset, so it is dropped; the remaining names of **all** paths
# are joined with `"; "` in first-seen order without repeats (a product in two paths keeps both, and names such as
# `Clothing, Shoes & Jewelry` contain commas, hence the semicolon). Description HTML tags are removed. A brand of
# `"Unknown"` (a placeholder in the meta files) is treated as missing. The `category` column used to colour plots is
# the first name below the department.

# %%
#| exports
_TAG = re.compile(r"<[^<>]{1,200}>")
_NO_BRAND = {"", "unknown", "n/a", "na", "none"}

def category_names(paths) -> list[str]:
    "Category names below each path's top-level department, in first-seen order, without repeats."
    seen = {}
    for path in paths if isinstance(paths, (list, tuple)) else []:
        for c in list(path)[1:]:
            c = clean_text(c)
            if c: seen.setdefault(c, None)
    return list(seen)

def amazon_prompt(meta: dict) -> str:
    "The prompt of an Amazon product from its raw meta fields (`title`, `description`, `categories`, `brand`)."
    desc = meta.get("description")
    desc = "" if _missing(desc) else _TAG.sub(" ", " ".join(desc) if isinstance(desc, list) else str(desc))
    brand = clean_text(meta.get("brand"))
    return kv_prompt([("Title", clean_text(meta.get("title"))), ("Description", clean_text(desc)),
                      ("Categories", "; ".join(category_names(meta.get("categories")))),
                      ("Brand", "" if brand.lower() in _NO_BRAND else brand)])


# %%
fake = {"title": "OPI Nail Lacquer, Simmer &amp; Shimmer", "description": "<b>Long-lasting</b> colour",
        "categories": [["Beauty", "Makeup", "Nails", "Nail Polish"], ["Beauty", "Makeup", "Nails"]], "brand": "OPI"}
amazon_prompt(fake)

# %%
test_eq(amazon_prompt(fake), "Title: OPI Nail Lacquer, Simmer & Shimmer. Description: Long-lasting colour. "
                             "Categories: Makeup; Nails; Nail Polish. Brand: OPI.")
test_eq(amazon_prompt({"title": None, "categories": [["Toys & Games"]], "brand": "Unknown"}), "")   # nothing left: no text
test_eq(category_names([["Beauty", "Bath & Body"], ["Clothing, Shoes & Jewelry", "Luggage & Travel Gear"]]),
        ["Bath & Body", "Luggage & Travel Gear"])

# %% [markdown]
# **ML-1M.** `movies.dat` files titles library-style, with a trailing article (`Matrix, The (1999)`); the paper's
# example prompt reads `"Title: The Matrix (1999). Genres: Action; Sci-Fi."`, so the article is moved back to the
# front (English, and the French, Italian, Spanish and German articles the file uses). Genres are joined with `"; "`.

# %%
#| exports
_ARTICLE = re.compile(r"^(?P<main>.+?), (?P<art>The|A|An|Les|La|Le|L'|Il|El|Los|Las|Das|Der|Die)(?P<rest>(?: \([^()]*\))+)$")

def movie_title(raw: str) -> str:
    "`'Matrix, The (1999)'` -> `'The Matrix (1999)'`; other titles unchanged (whitespace cleaned)."
    t = clean_text(raw)
    m = _ARTICLE.match(t)
    if not m: return t
    sep = "" if m["art"].endswith("'") else " "
    return f"{m['art']}{sep}{m['main']}{m['rest']}"

def movie_prompt(title: str, genres: list[str]) -> str:
    "The prompt of a MovieLens movie: `'Title: ... . Genres: a; b.'`."
    return kv_prompt([("Title", movie_title(title)), ("Genres", "; ".join(clean_text(g) for g in genres if clean_text(g)))])


# %%
movie_prompt("Matrix, The (1999)", ["Action", "Sci-Fi"])

# %%
test_eq(movie_prompt("Matrix, The (1999)", ["Action", "Sci-Fi"]), "Title: The Matrix (1999). Genres: Action; Sci-Fi.")
test_eq([movie_title(t) for t in ["Postino, Il (The Postman) (1994)", "Enfer, L' (1994)", "Good, The Bad and The Ugly, The (1966)", "Toy Story (1995)"]],
        ["Il Postino (The Postman) (1994)", "L'Enfer (1994)", "The Good, The Bad and The Ugly (1966)", "Toy Story (1995)"])


# %% [markdown]
# ## From an interaction log to sequences
#
# Every source is first turned into one log: a row per interaction with the raw `user` and `item` ids and the
# columns that order it. `build_sequences` sorts by those columns (users first, then time), applies the filters, and
# numbers the items **1..N in order of first appearance** when the users' chronological sequences are read one after
# another (0 stays free for padding). That one rule reproduces the item ids of the S3-Rec/P5 preprocessing that
# produced the standard Amazon sets (checked on the full data below), so an item number from work that uses those
# ids, presumably including the paper's cold item 352 (§5.8), names the same product here.
#
# Filters, in the paper's order: optional iterative `k_core` (drop users **and** items with fewer than `k`
# interactions until none is left; off by default because the Amazon files are already 5-core), then users with
# fewer than `min_user` interactions are dropped once (`min_user=5`, the paper's rule; items are not filtered).

# %%
#| exports
def k_core(log: pd.DataFrame, k: int) -> pd.DataFrame:
    "Drop users and items with fewer than `k` interactions, repeatedly, until every one left has at least `k`."
    while True:
        keep = (log.groupby("user", sort=False)["item"].transform("size") >= k) & \
               (log.groupby("item", sort=False)["user"].transform("size") >= k)
        if keep.all(): return log
        log = log[keep]

def build_sequences(log: pd.DataFrame,          # one row per interaction: user, item, and the `order` columns
                    order: list[str],            # sort keys: a user rank first, then the chronological key(s)
                    min_user: int = 5,           # drop users with fewer interactions (after k-core)
                    kcore: int | None = None,    # iterative k-core on users and items, or None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    "Sort, filter and re-index `log`: `(item_seq (nnz,), user_ptr (U+1,), user raw ids (U,), item raw ids (N,))`, items 1..N."
    check(not log.duplicated(order).any(), f"The log has interactions with the same order key {order}; the chronological order would be ambiguous.")
    log = log.sort_values(order, kind="stable")
    if kcore: log = k_core(log, kcore)
    log = log[log.groupby("user", sort=False)["item"].transform("size") >= min_user]
    check(len(log) > 0, f"No interactions are left after filtering (min_user={min_user}, k_core={kcore}). Lower the thresholds.")
    ucodes, users = pd.factorize(log["user"])
    check(bool((np.diff(ucodes) >= 0).all()), f"The first order column {order[0]!r} does not identify users one-to-one.")
    icodes, items = pd.factorize(log["item"])
    user_ptr = np.zeros(len(users) + 1, np.int64)
    np.cumsum(np.bincount(ucodes, minlength=len(users)), out=user_ptr[1:])
    return (icodes + 1).astype(np.int64), user_ptr, np.asarray(users.astype(str), dtype=str), np.asarray(items.astype(str), dtype=str)


# %% [markdown]
# A hand-made log: three users, listed out of order. Bob's two reviews on day 5 tie; the `line` column (file
# order) breaks the tie. Cid has only two interactions and is dropped with `min_user=3`.

# %%
log = pd.DataFrame({"user": ["bob", "ann", "bob", "ann", "cid", "ann", "bob", "cid", "bob"],
                    "item": ["pen", "cup", "ink", "pen", "cup", "mug", "cup", "pen", "mug"],
                    "urank": [2, 1, 2, 1, 3, 1, 2, 3, 2],
                    "day":  [5, 1, 5, 2, 1, 3, 1, 2, 9],
                    "line": [1, 2, 3, 4, 5, 6, 7, 8, 9]})
item_seq, user_ptr, users, items = build_sequences(log, ["urank", "day", "line"], min_user=3)
{u: [items.tolist()[i - 1] for i in item_seq[user_ptr[k]:user_ptr[k + 1]]] for k, u in enumerate(users.tolist())}

# %%
test_eq(users.tolist(), ["ann", "bob"])
test_eq(items.tolist(), ["cup", "pen", "mug", "ink"])            # ids 1..4 by first appearance: ann's cup, pen, mug, then bob's ink
test_eq(item_seq.tolist(), [1, 2, 3,  1, 2, 4, 3]);  test_eq(user_ptr.tolist(), [0, 3, 7])   # bob: cup(day 1), pen, ink (day 5, file order), mug
test_fail(lambda: build_sequences(log, ["urank", "day", "line"], min_user=5), contains="No interactions are left")

# %% [markdown]
# Iterative k-core removes more than one pass would: with `k=2`, `ink` (one interaction) goes, which leaves nothing
# to remove; `cid` keeps two interactions and stays.

# %%
core = k_core(log, 2)
sorted(core.user.unique()), sorted(core.item.unique())

# %%
test_eq(sorted(core.item.unique()), ["cup", "mug", "pen"]); test_eq(len(core), 8)


# %% [markdown]
# ## `SeqDataset` and the leave-one-out split
#
# A dataset is the users' sequences in CSR form (`item_seq`, `user_ptr`) plus an item table indexed 1..N. The split
# follows the paper: per user, the last item is the test target, the second-to-last the validation target, and
# training uses `seq[:-2]` only (inputs and targets). Validation predicts `seq[-2]` from `seq[:-2]`; testing predicts
# `seq[-1]` from `seq[:-1]`. The arrays are views into `item_seq`, so a split costs no copy.

# %%
#| exports
@dataclass(repr=False)
class LeaveOneOut:
    "Per-user leave-one-out split: train/valid input `seq[:-2]`, valid target `seq[-2]`, test input `seq[:-1]`, test target `seq[-1]`."
    train: list[np.ndarray]          # U arrays: seq[:-2], the only source of training inputs and targets
    valid_input: list[np.ndarray]    # U arrays: seq[:-2]
    valid_target: np.ndarray         # (U,) seq[-2]
    test_input: list[np.ndarray]     # U arrays: seq[:-1]
    test_target: np.ndarray          # (U,) seq[-1]
    n_items: int                     # items are 1..n_items

    @property
    def n_users(self) -> int: return len(self.test_target)

    @classmethod
    def from_csr(cls, item_seq: np.ndarray, user_ptr: np.ndarray, n_items: int) -> LeaveOneOut:
        "Split CSR sequences; every user needs at least 3 interactions."
        lens = np.diff(user_ptr)
        check(len(lens) > 0 and lens.min() >= 3, f"Leave-one-out needs at least 3 interactions per user; the shortest sequence has {lens.min() if len(lens) else 0}.")
        seqs = np.split(item_seq, user_ptr[1:-1])
        train = [s[:-2] for s in seqs]
        return cls(train, list(train), item_seq[user_ptr[1:] - 2].copy(), [s[:-1] for s in seqs], item_seq[user_ptr[1:] - 1].copy(), n_items)

    def __repr__(self): return f"LeaveOneOut({self.n_users:,} users, {self.n_items:,} items, {sum(map(len, self.train)):,} training interactions)"


# %%
#| export
@dataclass(repr=False)
class SeqDataset:
    "Chronological item sequences of `n_users` users over items 1..n_items (0 = padding), with one text prompt per item."
    name: str                 # dataset name
    item_seq: np.ndarray      # (nnz,) int64: the users' sequences one after another
    user_ptr: np.ndarray      # (n_users+1,) int64: user u is item_seq[user_ptr[u]:user_ptr[u+1]]
    items: pd.DataFrame       # indexed by item id 1..n_items: raw_id, title, category, prompt
    user_ids: np.ndarray      # (n_users,) raw user ids (reviewerID / UserID) as str
    info: dict = field(default_factory=dict)  # source, files, parameters, cache key

    def __post_init__(self):
        n, ptr = len(self.items), self.user_ptr
        check(ptr.ndim == 1 and len(ptr) == len(self.user_ids) + 1 and ptr[0] == 0 and ptr[-1] == len(self.item_seq)
              and bool((np.diff(ptr) > 0).all()), f"{self.name}: inconsistent user_ptr")
        check(self.items.index.tolist() == list(range(1, n + 1)), f"{self.name}: the item table must be indexed 1..n_items")
        check(len(self.item_seq) == 0 or (self.item_seq.min() >= 1 and self.item_seq.max() <= n), f"{self.name}: item ids outside 1..{n}")

    @property
    def n_users(self) -> int: return len(self.user_ptr) - 1
    @property
    def n_items(self) -> int: return len(self.items)
    @property
    def n_interactions(self) -> int: return len(self.item_seq)

    def sequence(self, u: int) -> np.ndarray:
        "User `u`'s chronological item sequence (a view)."
        check(0 <= u < self.n_users, f"User index {u} is outside 0..{self.n_users - 1}.")
        return self.item_seq[self.user_ptr[u]:self.user_ptr[u + 1]]

    def prompt(self, item: int) -> str:
        "The text prompt of item `item` (1..n_items); `''` when the item has no text."
        check(1 <= item <= self.n_items, f"Item id {item} is outside 1..{self.n_items} (0 is padding).")
        return self.items.at[item, "prompt"]

    def prompts(self) -> list[str]:
        "All prompts, indexed by item id: `''` at 0 (padding), then items 1..n_items."
        return [""] + self.items["prompt"].tolist()

    def split(self) -> LeaveOneOut:
        "The leave-one-out split (last = test, second-to-last = validation)."
        return LeaveOneOut.from_csr(self.item_seq, self.user_ptr, self.n_items)

    def stats(self) -> dict:
        "Table 2 statistics: users, items, interactions, average sequence length, sparsity."
        U, N, nnz = self.n_users, self.n_items, self.n_interactions
        return {"dataset": self.name, "users": U, "items": N, "interactions": nnz,
                "avg_len": nnz / U, "sparsity_%": 100 * (1 - nnz / (U * N))}

    def __repr__(self):
        return f"SeqDataset({self.name!r}: {self.n_users:,} users, {self.n_items:,} items, {self.n_interactions:,} interactions, source={self.info.get('source')})"


# %% [markdown]
# The three-user log above as a dataset, and its split checked by eye:

# %%
toy = SeqDataset("toy", np.array([1, 2, 3, 4, 5,  2, 4, 1, 6,  3, 6, 5], np.int64), np.array([0, 5, 9, 12], np.int64),
                 pd.DataFrame({"raw_id": list("abcdef"), "title": None, "category": None, "prompt": ""}, index=pd.RangeIndex(1, 7, name="item_id")),
                 np.array(["u0", "u1", "u2"]))
sp = toy.split()
pd.DataFrame({"sequence": [toy.sequence(u).tolist() for u in range(3)], "train = valid input": [t.tolist() for t in sp.train],
              "valid target": sp.valid_target, "test input": [t.tolist() for t in sp.test_input], "test target": sp.test_target})

# %%
test_eq([t.tolist() for t in sp.train], [[1, 2, 3], [2, 4], [3]])
test_eq(sp.valid_target.tolist(), [4, 1, 6]); test_eq(sp.test_target.tolist(), [5, 6, 5])
test_eq([t.tolist() for t in sp.test_input], [[1, 2, 3, 4], [2, 4, 1], [3, 6]])
test_eq(len(toy.prompts()), toy.n_items + 1); test_eq(toy.stats()["avg_len"], 4.0)
test_fail(lambda: toy.prompt(0), contains="0 is padding")
test_fail(lambda: SeqDataset("bad", np.array([1, 2], np.int64), np.array([0, 2], np.int64), toy.items.iloc[:1], np.array(["u"])),
          contains="item ids outside")


# %% [markdown]
# ## Reading the sources
#
# Each reader returns a log (`user`, `item`, order columns, and `rating` when the source has ratings) and the raw
# item metadata. The chronological order, per source:
#
# | source | user order | chronological key | ties |
# |---|---|---|---|
# | Amazon raw | first appearance in the review file | `unixReviewTime` (day resolution) | file order (the files are sorted by product): a stable sort, as S3-Rec/P5 do |
# | Amazon prepared | `user_idx` | `seq_pos` (the S3-Rec/P5 order, which is that same stable sort) | already resolved |
# | ML-1M raw | `UserID` | `Timestamp` (seconds) | file order (stable sort) |
# | ML-1M prepared | `user_id` | `seq_pos` | resolved by the BERT4Rec-VAE code's non-stable sort: arbitrary but fixed |
#
# Toys and ML-1M in the prepared copy carry **order only** (no timestamps); order is all leave-one-out needs. The
# ML-1M tie rule differs between the two sources: among ratings given in the same second, the raw files keep file
# order and the prepared copy keeps the order it was built with, so the two can differ in which of two same-second
# ratings comes last. Counts are identical.

# %%
#| export
def _read_tsv(path: Path, cols: dict[str, str]) -> pd.DataFrame:
    "Read a prepared TSV (header line, tab separated) keeping `cols` ({name: 'int' | 'str'}); a bad row names its line."
    try:
        # every column is read (no `usecols`): with `usecols` pandas silently ignores a row's extra fields
        df = pd.read_csv(path, sep="\t", dtype={c: str for c, k in cols.items() if k == "str"}, skip_blank_lines=False)
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+)", str(e))
        raise SageRecError(f"{path}, line {m.group(1) if m else '?'}: malformed row ({str(e).strip()}). Restore the file from the prepared copy.") from None
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as e:
        raise SageRecError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}). Restore the file from the prepared copy.") from None
    missing = [c for c in cols if c not in df.columns]
    check(not missing, f"{path} lacks the column(s) {missing}; is it a prepared-copy file? See the data folder's README.")
    i = first_bad_row(df, int_cols=[c for c, k in cols.items() if k == "int"], text_cols=[c for c, k in cols.items() if k == "str"])
    if i is not None:
        raise SageRecError(f"{path}, line {i + 2}: malformed or truncated row {df.iloc[i].tolist()}. Restore the file from the prepared copy.")
    check(len(df) > 0, f"{path} holds no rows.")
    return df[list(cols)].astype({c: "int64" for c, k in cols.items() if k == "int"})

def _read_items_jsonl(path: Path) -> pd.DataFrame:
    "Read a prepared `items.jsonl.gz`: Amazon meta fields indexed by ASIN."
    rows, first = {}, {}
    with reading(path) as lines:
        for n, line in lines:
            if not line.strip(): continue
            try: d = json.loads(line); key, rec = str(d["item_id"]), [d.get(k) for k in META_FIELDS]
            except (ValueError, KeyError, TypeError) as e:
                raise SageRecError(f"{path}, line {n}: malformed item record ({type(e).__name__}). Restore the file from the prepared copy.") from None
            if key in rows and rows[key] != rec:  # which of two texts is the item's is unknown: never pick one silently
                raise SageRecError(f"{path}, line {n}: a second, different record for item {key!r} (the first is on line {first[key]}). "
                                   "Restore the file from the prepared copy, or keep only the right record.")
            rows[key] = rec; first.setdefault(key, n)
    meta = pd.DataFrame.from_dict(rows, orient="index", columns=META_FIELDS, dtype=object)
    meta.index.name = "item_id"
    return meta


# %%
#| export
def read_prepared_amazon(interactions: Path, items: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    "Log and item metadata of a prepared Amazon dataset (`interactions.tsv.gz`, `items.jsonl.gz`)."
    df = _read_tsv(interactions, {"user_id": "str", "item_id": "str", "seq_pos": "int", "user_idx": "int"})
    log = pd.DataFrame({"user": df.user_id, "item": df.item_id, "urank": df.user_idx, "pos": df.seq_pos})
    return log, _read_items_jsonl(items)

def read_raw_amazon(reviews: Path) -> pd.DataFrame:
    "Log of an official Amazon review file: users ranked by first appearance, ties in time kept in file order."
    r = read_amazon_reviews(reviews)
    return pd.DataFrame({"user": r.user_id, "item": r.item_id, "urank": pd.factorize(r.user_id)[0],
                         "timestamp": r.timestamp, "line": r.line, "rating": r.rating})

def read_prepared_ml1m(ratings: Path) -> pd.DataFrame:
    "Log of the prepared `ratings_ordered.tsv.gz` (order only, no timestamps)."
    df = _read_tsv(ratings, {"user_id": "int", "movie_id": "int", "rating": "int", "seq_pos": "int"})
    return pd.DataFrame({"user": df.user_id, "item": df.movie_id, "urank": df.user_id, "pos": df.seq_pos, "rating": df.rating})

def read_raw_ml1m(ratings: Path) -> pd.DataFrame:
    "Log of the official `ratings.dat` (or `ml-1m.zip`): ordered by timestamp, ties in file order."
    r = read_ml1m_ratings(ratings)
    return pd.DataFrame({"user": r.user_id, "item": r.movie_id, "urank": r.user_id, "timestamp": r.timestamp, "line": r.line, "rating": r.rating})

ORDER = {"prepared": ["urank", "pos"], "raw": ["urank", "timestamp", "line"]}


# %% [markdown]
# The item table: raw id, cleaned title, the plotting category, and the prompt; `""` for an item with no text.

# %%
#| export
def amazon_items(raw_ids: np.ndarray, meta: pd.DataFrame) -> pd.DataFrame:
    "Item table (indexed 1..N) for Amazon raw ids from meta fields indexed by ASIN."
    _warn_no_record(raw_ids, meta.index, "product metadata")
    m = meta.reindex(raw_ids)
    rows = []
    for rid, rec in zip(raw_ids, m.to_dict("records")):
        names = category_names(rec.get("categories"))
        rows.append((str(rid), clean_text(rec.get("title")) or None, names[0] if names else None, amazon_prompt(rec)))
    return _item_frame(rows)

def movie_items(raw_ids: np.ndarray, movies: pd.DataFrame) -> pd.DataFrame:
    "Item table (indexed 1..N) for MovieLens raw ids (as str) from `read_ml1m_movies` output."
    m = movies.assign(movie_id=movies.movie_id.astype(str)).set_index("movie_id")
    _warn_no_record(raw_ids, m.index, "movies.dat")
    m = m.reindex(raw_ids)
    rows = []
    for rid, title, genres in zip(raw_ids, m.title, m.genres):
        genres = genres if isinstance(genres, list) else []
        rows.append((str(rid), None if _missing(title) else movie_title(title), genres[0] if genres else None,
                     "" if _missing(title) else movie_prompt(title, genres)))
    return _item_frame(rows)

def _warn_no_record(raw_ids, known, what: str) -> None:
    "Warn, with the count and examples, about items of the log that have no record in the item file."
    missing = [str(r) for r in raw_ids if r not in known]
    if missing:
        warnings.warn(f"{len(missing)} of {len(raw_ids)} items of the log have no record in the {what} (e.g. {', '.join(missing[:3])}): "
                      "they are kept with an empty text (the dataset rule keeps every item of the filtered log), so they get a "
                      "zero embedding and no semantic edges.", stacklevel=3)

def _item_frame(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["raw_id", "title", "category", "prompt"], dtype=object)
    df.index = pd.RangeIndex(1, len(df) + 1, name="item_id")
    return df


# %% [markdown]
# ## Finding the files

# %%
#| export
ASSETS = Path(str(importlib.resources.files("sagerec"))) / "assets"

@dataclass
class Source:
    "Where a dataset is read from."
    kind: str                  # "raw", "prepared" or "embedded"
    files: dict[str, Path]     # role -> path

def _layouts(spec: DatasetSpec, folder: Path) -> dict[str, list[dict[str, Path]]]:
    "Candidate file sets per source kind, in order of preference."
    if spec.kind == "amazon":
        return {"raw": [{"reviews": folder / f"reviews_{spec.category}_5.json.gz", "meta": folder / f"meta_{spec.category}.json.gz"}],
                "prepared": [{"interactions": folder / "interactions.tsv.gz", "items": folder / "items.jsonl.gz"}]}
    return {"raw": [{"ratings": folder / "ratings.dat", "movies": folder / "movies.dat"},
                    {"ratings": folder / "ml-1m.zip", "movies": folder / "ml-1m.zip"}],
            "prepared": [{"ratings": folder / "ratings_ordered.tsv.gz", "movies": folder / "movies.dat"}]}

def find_source(name: str, data_dir: Path | str | None = None, source: str = "auto") -> Source:
    "Locate the files of dataset `name`: `source` is 'auto' (raw if complete, else prepared), 'raw' or 'prepared'."
    spec = dataset_spec(name)
    check(source in ("auto", "raw", "prepared"), f"source must be 'auto', 'raw' or 'prepared', not {source!r}.")
    if spec.name == "beauty-mini":
        return Source("embedded", {"interactions": ASSETS / "beauty-mini.interactions.tsv.gz", "items": ASSETS / "beauty-mini.items.jsonl.gz"})
    root = _data_dir(data_dir)
    check(root is not None, f"Dataset {spec.name!r} needs the full data, and no data folder is set. Set SAGEREC_DATA (or pass "
                            f"data_dir=) to a folder holding {spec.name}/ (the prepared copy or the official files; "
                            f"sagerec.raw.fetch_raw({spec.name!r}, folder) downloads the latter). 'beauty-mini' needs no data.")
    folder = root / spec.name
    kinds = ["raw", "prepared"] if source == "auto" else [source]
    layouts = _layouts(spec, folder)
    for kind in kinds:
        for files in layouts[kind]:
            if all(p.is_file() for p in files.values()): return Source(kind, files)
    looked = "; ".join(f"{k}: " + " or ".join(" + ".join(dict.fromkeys(p.name for p in f.values())) for f in layouts[k]) for k in kinds)
    raise SageRecError(f"Dataset {spec.name!r}: no complete set of files in {folder} (looked for {looked}). Download the official "
                       f"files with sagerec.raw.fetch_raw({spec.name!r}, {str(root)!r}), or point SAGEREC_DATA (or data_dir=) at "
                       f"a folder whose {spec.name}/ subfolder holds the prepared copy.")


# %% [markdown]
# ## Loading, with an on-disk cache
#
# `load_dataset` reads the source, filters, re-indexes and builds the item table, then stores the result in
# `cache_dir("datasets")` under a key that fingerprints the parameters, the source kind and each source file's
# path, size and modification time (so an edited or replaced file is re-read). Writes are atomic; a cache file that
# cannot be read or fails the consistency checks is rebuilt with a warning.

# %%
#| export
_CACHE_VERSION = 1

def _file_id(p: Path) -> tuple:
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns)

def _save(ds: SeqDataset, path: Path) -> None:
    items = ds.items.reset_index().to_dict("list")
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, item_seq=ds.item_seq, user_ptr=ds.user_ptr, user_ids=np.asarray(ds.user_ids, dtype=str),
                     items=np.array(json.dumps(items)), info=np.array(json.dumps(ds.info, default=str)))
    atomic_write(path, write)

def _load_cached(path: Path, name: str) -> SeqDataset | None:
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            d = json.loads(str(z["items"]))
            check(d["item_id"] == list(range(1, len(d["raw_id"]) + 1)), "item ids are not 1..N")
            items = _item_frame(list(zip(d["raw_id"], d["title"], d["category"], d["prompt"])))
            return SeqDataset(name, z["item_seq"].astype(np.int64), z["user_ptr"].astype(np.int64), items, z["user_ids"],
                              {**json.loads(str(z["info"])), "cache_file": str(path)})
    except Exception as e:  # any damage: truncated zip, missing key, bad JSON, inconsistent arrays
        warnings.warn(f"The dataset cache {path} is unreadable ({type(e).__name__}: {e}); rebuilding it.")
        return None


# %%
#| export
def _build(spec: DatasetSpec, src: Source, min_rating, min_user: int, kcore: int | None) -> SeqDataset:
    "Read `src`, filter, sort, re-index and attach item text."
    f = src.files
    if spec.kind == "amazon":
        log, meta = read_prepared_amazon(f["interactions"], f["items"]) if src.kind != "raw" else (read_raw_amazon(f["reviews"]), None)
    else:
        log = read_raw_ml1m(f["ratings"]) if src.kind == "raw" else read_prepared_ml1m(f["ratings"])
    n_read = len(log)
    if min_rating is not None:
        check("rating" in log, f"{spec.name}: the {src.kind} files have no ratings, so min_rating={min_rating} cannot be applied.")
        log = log[log.rating >= min_rating]
        check(len(log) > 0, f"{spec.name}: no rating is >= {min_rating} among the {n_read:,} read from {f}. Lower min_rating.")
    item_seq, user_ptr, users, items = build_sequences(log, ORDER["raw" if src.kind == "raw" else "prepared"], min_user, kcore)
    if spec.kind == "amazon":
        if meta is None: meta = read_amazon_meta(f["meta"], asins=set(items))
        table = amazon_items(items, meta)
    else:
        table = movie_items(items, read_ml1m_movies(f["movies"]))
    info = {"source": src.kind, "files": {k: str(p) for k, p in f.items()}, "min_rating": min_rating, "min_user": min_user,
            "k_core": kcore, "interactions_read": n_read, "items_without_text": int((table.prompt == "").sum())}
    return SeqDataset(spec.name, item_seq, user_ptr, table, users, info)


# %%
#| export
def load_dataset(name: str,                           # "beauty", "toys", "ml-1m" or "beauty-mini"
                 data_dir: Path | str | None = None,   # data folder; default $SAGEREC_DATA (unused for beauty-mini)
                 source: str = "auto",                 # "auto", "raw" (official files) or "prepared" (offline copy)
                 min_user: int = 5,                    # keep users with at least this many interactions (paper: 5)
                 min_rating: float | None = None,      # keep ratings >= this; None = dataset default (ML-1M: 4, Amazon: all)
                 k_core: int | None = None,            # iterative k-core on users and items before `min_user`; None = off
                 cache: bool | Path | str = True,      # True: cache_dir("datasets"); False: no cache; a folder: cache there
                 refresh: bool = False,                # rebuild even if a cached copy exists
                ) -> SeqDataset:
    "Load a dataset as chronological sequences with item prompts, preprocessed as in the paper, cached on disk."
    spec = dataset_spec(name)
    check(isinstance(min_user, (int, np.integer)) and min_user >= 3,
          f"min_user must be an integer >= 3 (leave-one-out needs a training, a validation and a test item per user), not {min_user!r}.")
    check(k_core is None or (isinstance(k_core, (int, np.integer)) and k_core >= 1), f"k_core must be None or a positive integer, not {k_core!r}.")
    min_rating = spec.min_rating if min_rating is None else min_rating
    src = find_source(spec.name, data_dir, source)
    key = fingerprint(_CACHE_VERSION, spec.name, src.kind, min_rating, int(min_user), k_core,
                      [_file_id(p) for p in sorted(set(src.files.values()))])
    folder = cache_dir("datasets") if cache is True else (Path(cache) if cache else None)
    path = folder / f"{spec.name}-{key}.npz" if folder else None
    if path is not None and path.exists() and not refresh:
        ds = _load_cached(path, spec.name)
        if ds is not None: return ds
    ds = _build(spec, src, min_rating, int(min_user), k_core)
    ds.info["cache_key"] = key
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(ds, path)
    return ds


# %% [markdown]
# ### Both sources, one dataset
#
# A tiny Beauty written in both layouts, by hand: three users in the official review format (one JSON object per
# line, in the file's product order) with a Python-literal meta file, and the same interactions in the prepared
# format, where `seq_pos` spells out the order the raw rule must find: time, then file order for same-day reviews
# (u1 reviewed B2 and B3 on the same day; B2 comes first in the file). `min_user=3` keeps the fixture small.

# %%
#| hide
@contextmanager
def env(**kv):
    "Temporarily set (or, with None, unset) environment variables."
    old = {k: os.environ.get(k) for k in kv}
    for k, v in kv.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v
    try: yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v

def write_gz(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f: f.write(text)


# %%
reviews = """{"reviewerID": "u2", "asin": "B1", "overall": 5.0, "unixReviewTime": 300}
{"reviewerID": "u1", "asin": "B1", "overall": 4.0, "unixReviewTime": 500}
{"reviewerID": "u1", "asin": "B2", "overall": 4.0, "unixReviewTime": 200}
{"reviewerID": "u3", "asin": "B2", "overall": 2.0, "unixReviewTime": 100}
{"reviewerID": "u2", "asin": "B2", "overall": 3.0, "unixReviewTime": 100}
{"reviewerID": "u1", "asin": "B3", "overall": 5.0, "unixReviewTime": 200}
{"reviewerID": "u3", "asin": "B3", "overall": 5.0, "unixReviewTime": 200}
{"reviewerID": "u2", "asin": "B4", "overall": 1.0, "unixReviewTime": 900}
{"reviewerID": "u3", "asin": "B4", "overall": 4.0, "unixReviewTime": 300}
"""
meta = """{'asin': 'B1', 'title': 'Rose Water Toner', 'categories': [['Beauty', 'Skin Care', 'Face']], 'brand': 'Heritage'}
{'asin': 'B2', 'title': 'Nail Polish &quot;Red&quot;', 'categories': [['Beauty', 'Makeup', 'Nails']], 'brand': 'OPI'}
{'asin': 'B3', 'title': 'Nail File', 'categories': [['Beauty', 'Tools & Accessories']], 'brand': 'Unknown'}
{'asin': 'B9', 'title': 'Not in the 5-core', 'categories': [['Beauty']]}
"""
interactions = """user_id\titem_id\ttimestamp\tseq_pos\tuser_idx\titem_idx
u2\tB2\t100\t0\t1\t1
u2\tB1\t300\t1\t1\t2
u2\tB4\t900\t2\t1\t3
u1\tB2\t200\t0\t2\t1
u1\tB3\t200\t1\t2\t4
u1\tB1\t500\t2\t2\t2
u3\tB2\t100\t0\t3\t1
u3\tB3\t200\t1\t3\t4
u3\tB4\t300\t2\t3\t3
"""
items = "\n".join(json.dumps(d) for d in [
    {"item_id": "B2", "item_idx": 1, "title": "Nail Polish &quot;Red&quot;", "categories": [["Beauty", "Makeup", "Nails"]], "brand": "OPI"},
    {"item_id": "B1", "item_idx": 2, "title": "Rose Water Toner", "categories": [["Beauty", "Skin Care", "Face"]], "brand": "Heritage"},
    {"item_id": "B4", "item_idx": 3, "title": None, "categories": [["Beauty"]], "brand": None},
    {"item_id": "B3", "item_idx": 4, "title": "Nail File", "categories": [["Beauty", "Tools & Accessories"]], "brand": "Unknown"}]) + "\n"

tmp = Path(tempfile.mkdtemp()); cache = tmp / "cache"
write_gz(tmp / "data/beauty/reviews_Beauty_5.json.gz", reviews); write_gz(tmp / "data/beauty/meta_Beauty.json.gz", meta)
write_gz(tmp / "data/beauty/interactions.tsv.gz", interactions); write_gz(tmp / "data/beauty/items.jsonl.gz", items)
raw = load_dataset("beauty", tmp / "data", source="raw", min_user=3, cache=cache)
prep = load_dataset("beauty", tmp / "data", source="prepared", min_user=3, cache=cache)
raw, raw.items

# %%
test_eq(raw.item_seq, prep.item_seq); test_eq(raw.user_ptr, prep.user_ptr); test_eq(raw.user_ids, prep.user_ids)
pd.testing.assert_frame_equal(raw.items, prep.items)
test_eq(raw.sequence(1).tolist(), [1, 4, 2])          # u1: B2 and B3 on day 200 in file order, then B1
test_eq(raw.items.raw_id.tolist(), ["B2", "B1", "B4", "B3"])
test_eq(raw.prompt(1), 'Title: Nail Polish "Red". Categories: Makeup; Nails. Brand: OPI.')
test_eq(raw.prompt(3), ""); test_eq(raw.prompt(4), "Title: Nail File. Categories: Tools & Accessories.")
test_eq(find_source("beauty", tmp / "data").kind, "raw")  # auto prefers the official files when both are there

# %% [markdown]
# The second load comes from the cache; a damaged cache file is noticed and rebuilt:

# %%
cached = load_dataset("beauty", tmp / "data", source="raw", min_user=3, cache=cache)
cache_file = Path(cached.info["cache_file"])
cache_file.write_bytes(cache_file.read_bytes()[:100])           # truncate it
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    rebuilt = load_dataset("beauty", tmp / "data", source="raw", min_user=3, cache=cache)
len(list(cache.iterdir())), [re.sub(r"/\S+", "<path>", str(w.message)) for w in caught]

# %%
test_eq(cached.item_seq, raw.item_seq); pd.testing.assert_frame_equal(cached.items, raw.items)
assert "cache_file" not in raw.info and cached.info["source"] == "raw"
assert any("unreadable" in str(w.message) for w in caught) and "cache_file" not in rebuilt.info
test_eq(rebuilt.item_seq, raw.item_seq)
assert load_dataset("beauty", tmp / "data", source="raw", min_user=3, cache=cache).info.get("cache_file")  # written again

# %% [markdown]
# ### Errors a user can act on

# %%
with env(SAGEREC_DATA=None):
    test_fail(lambda: load_dataset("beauty"), contains="no data folder is set")
test_fail(lambda: load_dataset("beauty", "/no/such/folder"), contains="does not exist")
test_fail(lambda: load_dataset("books", tmp / "data"), contains="Valid names")
test_fail(lambda: load_dataset("toys", tmp / "data"), contains="reviews_Toys_and_Games_5.json.gz + meta_Toys_and_Games.json.gz")
test_fail(lambda: load_dataset("toys", tmp / "data"), contains="fetch_raw")
test_fail(lambda: load_dataset("beauty", tmp / "data", min_user=3, k_core=4, cache=False), contains="No interactions are left")
test_fail(lambda: load_dataset("beauty", tmp / "data", source="prepared", min_rating=4, cache=False), contains="have no ratings")
test_fail(lambda: load_dataset("beauty", tmp / "data", min_user=2), contains="min_user must be")

# %% [markdown]
# A damaged file is reported with its name and line, never read as a silently smaller dataset:

# %%
write_gz(tmp / "bad/beauty/interactions.tsv.gz", interactions.replace("u1\tB3\t200\t1\t2\t4", "u1\tB3\t200"))
write_gz(tmp / "bad/beauty/items.jsonl.gz", items)
test_fail(lambda: load_dataset("beauty", tmp / "bad", min_user=3, cache=False), contains="interactions.tsv.gz, line 6")
write_gz(tmp / "bad/beauty/interactions.tsv.gz", interactions.replace("u1\tB3\t200\t1\t2\t4", "u1\tB3\t200\tone\t2\t4"))
test_fail(lambda: load_dataset("beauty", tmp / "bad", min_user=3, cache=False), contains="line 6")
(tmp / "bad/beauty/interactions.tsv.gz").write_bytes(gzip.compress(interactions.encode())[:60])
test_fail(lambda: load_dataset("beauty", tmp / "bad", min_user=3, cache=False), contains="truncated or corrupt")

# %% [markdown]
# ### ML-1M from both sources
#
# The same check for MovieLens: an extracted `ratings.dat`, the official zip, and the prepared `ratings_ordered`
# file give one dataset. Ratings below 4 are dropped before users are counted. User 1 rated movies 2 and 3 in the same
# second; file order decides.

# %%
ratings_dat = "1::10::5::100\n1::3::4::300\n1::2::4::300\n1::7::2::400\n1::5::5::500\n2::3::4::100\n2::10::3::150\n2::5::4::200\n2::2::5::250\n"
movies_dat = "2::Matrix, The (1999)::Action|Sci-Fi|Thriller\n3::Toy Story (1995)::Animation|Children's|Comedy\n5::Heat (1995)::Action|Crime\n10::GoldenEye (1995)::Action\n"
ordered = "user_id\tmovie_id\trating\tseq_pos\n1\t10\t5\t0\n1\t3\t4\t1\n1\t2\t4\t2\n1\t7\t2\t3\n1\t5\t5\t4\n2\t3\t4\t0\n2\t10\t3\t1\n2\t5\t4\t2\n2\t2\t5\t3\n"
for sub in ["ex", "zip", "prep"]: (tmp / sub / "ml-1m").mkdir(parents=True)
(tmp / "ex/ml-1m/ratings.dat").write_text(ratings_dat); (tmp / "ex/ml-1m/movies.dat").write_bytes(movies_dat.encode("latin-1"))
with zipfile.ZipFile(tmp / "zip/ml-1m/ml-1m.zip", "w") as z:
    z.writestr("ml-1m/ratings.dat", ratings_dat); z.writestr("ml-1m/movies.dat", movies_dat.encode("latin-1"))
write_gz(tmp / "prep/ml-1m/ratings_ordered.tsv.gz", ordered); (tmp / "prep/ml-1m/movies.dat").write_bytes(movies_dat.encode("latin-1"))
ml = {sub: load_dataset("ml-1m", tmp / sub, min_user=3, cache=False) for sub in ["ex", "zip", "prep"]}
ml["ex"], ml["ex"].items

# %%
for sub in ["zip", "prep"]:
    test_eq(ml[sub].item_seq, ml["ex"].item_seq); test_eq(ml[sub].user_ptr, ml["ex"].user_ptr); pd.testing.assert_frame_equal(ml[sub].items, ml["ex"].items)
test_eq([ml[s].info["source"] for s in ["ex", "zip", "prep"]], ["raw", "raw", "prepared"])
test_eq(ml["ex"].items.raw_id.tolist(), ["10", "3", "2", "5"]); test_eq(ml["ex"].item_seq.tolist(), [1, 2, 3, 4,  2, 4, 3])
test_eq(ml["ex"].prompt(3), "Title: The Matrix (1999). Genres: Action; Sci-Fi; Thriller.")
test_eq(ml["ex"].items.category.tolist(), ["Action", "Animation", "Action", "Action"])
test_fail(lambda: load_dataset("ml-1m", tmp / "ex", min_rating=6, cache=False), contains="no rating is >= 6")
shutil.rmtree(tmp)


# %% [markdown]
# ## The embedded dataset: `beauty-mini`
#
# A deterministic slice of Beauty ships in `sagerec/assets/` so that the package, its notebooks and CI run with no
# data setting at all. How it is cut (`make_beauty_mini`, run on the prepared copy in a slow cell below):
#
# 1. Items: the `n_items=2000` most reviewed Beauty items (ties broken by the lower S3-Rec item id), so that the
#    slice keeps items that several users share, as the full data does.
# 2. Each user's sequence is restricted to those items, keeping its chronological order.
# 3. Users: among those left with at least `min_len=5` interactions, `n_users=1000` are taken evenly spaced in
#    S3-Rec user-id order. Every user has at least 5 interactions, so the slice is a sensible leave-one-out dataset.
# 4. Items re-numbered by first appearance (the rule used everywhere); `beauty_item_idx` keeps the full-data id.
#
# The files use the prepared-copy format, so one reader serves both, with the raw item text (title, categories,
# brand) as published. `ATTRIBUTION.md` beside them names the source and the papers to cite.

# %%
#| export
def _write_gz_text(path: Path, text: str) -> Path:
    "Write `text` gzip-compressed with no timestamp or name in the header, so equal text gives equal bytes."
    def write(tmp):
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(text.encode("utf-8"))
    return atomic_write(path, write)

_ATTRIBUTION = """# beauty-mini: attribution

`beauty-mini.interactions.tsv.gz` and `beauty-mini.items.jsonl.gz` are a slice of the Amazon product data (2014 crawl),
category Beauty, 5-core review file `reviews_Beauty_5.json.gz` and metadata `meta_Beauty.json.gz`, as preprocessed
by S3-Rec/P5 (the standard 22,363-user set). The data is distributed by its authors for research; please cite:

- J. McAuley, C. Targett, Q. Shi, A. van den Hengel. *Image-based recommendations on styles and substitutes.* SIGIR 2015.
- R. He, J. McAuley. *Ups and downs: Modeling the visual evolution of fashion trends with one-class collaborative filtering.* WWW 2016.

The slice (made by `sagerec.data.make_beauty_mini`, notebook `01_data`): the {n_items_pool:,} most reviewed items;
each user's sequence restricted to them, in chronological order; {n_users:,} users taken evenly spaced (by S3-Rec user id)
among those with at least {min_len} such interactions. Result: {users:,} users, {items:,} items, {interactions:,} interactions.
Item text (title, categories, brand) is kept exactly as published, HTML entities included.
"""

def make_beauty_mini(data_dir: Path | str | None = None,  # folder holding the prepared beauty/ copy; default $SAGEREC_DATA
                     out_dir: Path | str = ASSETS,        # where the two files and ATTRIBUTION.md are written
                     n_items: int = 2000,                 # most reviewed items kept
                     n_users: int = 1000,                 # users kept, evenly spaced
                     min_len: int = 5,                    # least interactions per kept user
                    ) -> list[Path]:
    "Cut the embedded `beauty-mini` slice from the prepared Beauty copy; the output is byte-identical on every run."
    src = find_source("beauty", data_dir, "prepared")
    log = pd.read_csv(src.files["interactions"], sep="\t", dtype={"user_id": str, "item_id": str}).sort_values(["user_idx", "seq_pos"])
    counts = log.groupby("item_idx").size().rename("n").reset_index().sort_values(["n", "item_idx"], ascending=[False, True])
    sub = log[log.item_idx.isin(counts.item_idx.iloc[:n_items])]
    lens = sub.groupby("user_idx").size()
    eligible = np.sort(lens[lens >= min_len].index.to_numpy())
    check(len(eligible) >= n_users, f"Only {len(eligible)} users have {min_len}+ interactions with the top {n_items} items; ask for fewer users.")
    chosen = eligible[np.round(np.linspace(0, len(eligible) - 1, n_users)).astype(int)]
    sub = sub[sub.user_idx.isin(chosen)].copy()
    sub["seq_pos"] = sub.groupby("user_idx").cumcount()
    sub["user_idx"] = pd.factorize(sub.user_idx)[0] + 1
    sub["beauty_item_idx"], sub["item_idx"] = sub.item_idx, pd.factorize(sub.item_idx)[0] + 1
    cols = ["user_id", "item_id", "timestamp", "seq_pos", "user_idx", "item_idx"]
    out = Path(out_dir); out.mkdir(parents=True, exist_ok=True)
    p1 = _write_gz_text(out / "beauty-mini.interactions.tsv.gz", sub[cols].to_csv(sep="\t", index=False, lineterminator="\n"))
    first = sub.drop_duplicates("item_idx").set_index("beauty_item_idx")["item_idx"]
    with reading(src.files["items"]) as lines:
        recs = [json.loads(l) for _, l in lines if l.strip()]
    recs = sorted(({**r, "item_idx": int(first[r["item_idx"]]), "beauty_item_idx": r["item_idx"]} for r in recs if r["item_idx"] in first.index),
                  key=lambda r: r["item_idx"])
    p2 = _write_gz_text(out / "beauty-mini.items.jsonl.gz", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    note = _ATTRIBUTION.format(n_items_pool=n_items, n_users=n_users, min_len=min_len, users=sub.user_idx.nunique(),
                               items=len(recs), interactions=len(sub))
    p3 = atomic_write(out / "ATTRIBUTION.md", lambda t: t.write_text(note, encoding="utf-8"))
    return [p1, p2, p3]


# %% [markdown]
# Loading it needs nothing but the package:

# %%
with env(SAGEREC_DATA=None):
    mini = load_dataset("beauty-mini")
mini, mini.split()

# %%
mini_lens = np.diff(mini.user_ptr)
test_eq(mini.n_users, 1000); assert mini_lens.min() >= 5
assert 1000 < mini.n_items < 3000 and mini.info["source"] == "embedded"
test_eq(mini.items.prompt.str.len().gt(0).mean() > 0.99, True)
assert sum(p.stat().st_size for p in ASSETS.glob("beauty-mini.*")) < 1_000_000   # compact: well under 1 MB
mini.items.head(3)

# %%
pd.DataFrame([mini.stats()])

# %% [markdown]
# ## The full datasets (slow cells: need `SAGEREC_DATA`)
#
# Regenerating the embedded slice from the prepared copy gives the same bytes as the shipped files (it is run here,
# so the files in the package are always the output of the code above):

# %%
#| slow
shipped = {p.name: p.read_bytes() for p in ASSETS.glob("*")}
with tempfile.TemporaryDirectory() as d:
    twice = [{p.name: p.read_bytes() for p in make_beauty_mini(out_dir=d)} for _ in range(2)]
written = make_beauty_mini()
{p.name: f"{p.stat().st_size:,} bytes" for p in written}, {"unchanged from the shipped files": shipped == twice[0]}

# %%
#| slow
test_eq(twice[0], twice[1])                       # deterministic, byte for byte
test_eq(sorted(p.name for p in written), ["ATTRIBUTION.md", "beauty-mini.interactions.tsv.gz", "beauty-mini.items.jsonl.gz"])
mini2 = load_dataset("beauty-mini", refresh=True)
test_eq(mini2.n_users, 1000); assert np.diff(mini2.user_ptr).min() >= 5

# %% [markdown]
# Each dataset loaded twice: first with `refresh=True` (read, filter, re-index, write the cache), then from the cache.

# %%
#| slow
full, timing = {}, []
for name in ["beauty", "toys", "ml-1m"]:
    t0 = time.perf_counter(); load_dataset(name, refresh=True); t1 = time.perf_counter()
    full[name] = load_dataset(name); t2 = time.perf_counter()
    assert full[name].info.get("cache_file")
    timing.append({"dataset": name, "source": full[name].info["source"], "first load (s)": round(t1 - t0, 2), "cached load (s)": round(t2 - t1, 2)})
pd.DataFrame(timing)

# %%
#| slow
assert all(t["cached load (s)"] < 10 for t in timing)

# %% [markdown]
# **Table 2**, rebuilt from the data (sparsity = 1 − interactions / (users × items)):

# %%
#| slow
table2 = pd.DataFrame([full[n].stats() for n in ["beauty", "toys", "ml-1m"]] + [mini.stats()]).set_index("dataset")
table2.round(2)

# %%
#| slow
test_eq(table2.loc["beauty", ["users", "items", "interactions"]].tolist(), [22363, 12101, 198502])
test_eq(table2.loc["toys", ["users", "items", "interactions"]].tolist(), [19412, 11924, 167597])
test_eq(table2.loc["ml-1m", ["users", "items", "interactions"]].tolist(), [6034, 3533, 575272])
assert all(np.diff(full[n].user_ptr).min() >= 5 for n in full)

# %% [markdown]
# The iterative 5-core variant of ML-1M (users **and** items with at least 5 positives), for studies that use it:

# %%
#| slow
ml_core = load_dataset("ml-1m", k_core=5)
ml_core.stats()

# %%
#| slow
test_eq([ml_core.n_users, ml_core.n_items, ml_core.n_interactions], [6034, 3125, 574376])

# %% [markdown]
# First-appearance numbering reproduces the ids of the prepared copy (`item_idx`, the S3-Rec/P5 numbering for
# Beauty, the P5/RDRec numbering for Toys) for every item, so an item number from papers that use them, like the cold
# item 352 of §5.8, is the same item here. (For Toys, S3-Rec itself numbers items differently; the prepared copy's
# `s3rec_item_idx` gives that mapping.) ML-1M has no such convention: its ids are ours.

# %%
#| slow
same_ids = {}
for name in ["beauty", "toys"]:
    src = find_source(name, source="prepared")
    idx = pd.read_csv(src.files["interactions"], sep="\t", usecols=["item_id", "item_idx"]).drop_duplicates().set_index("item_id")["item_idx"]
    same_ids[name] = bool((idx.reindex(full[name].items.raw_id).to_numpy() == full[name].items.index.to_numpy()).all())
same_ids

# %%
#| slow
test_eq(same_ids, {"beauty": True, "toys": True})

# %% [markdown]
# Example prompts, the Beauty item 352 (in this id space) among them, and how many items have no text at all:

# %%
#| slow
examples = pd.DataFrame([{"dataset": n, "item": i, "prompt": full[n].prompt(i)} for n in ["beauty", "toys", "ml-1m"] for i in (1, 2, 3)]
                        + [{"dataset": "beauty", "item": 352, "prompt": full["beauty"].prompt(352)}])
with pd.option_context("display.max_colwidth", 200): display(examples)
{n: full[n].info["items_without_text"] for n in full}

# %%
#| slow
test_eq(full["beauty"].items.raw_id[352], "B0009I4M02")
assert full["beauty"].prompt(352).startswith("Title: TIGI Bed Head Small Talk")
assert all(p.count(": ") >= 1 for p in examples.prompt)
matrix = full["ml-1m"].items.index[full["ml-1m"].items.raw_id == "2571"][0]
test_eq(full["ml-1m"].prompt(matrix), "Title: The Matrix (1999). Genres: Action; Sci-Fi; Thriller.")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
