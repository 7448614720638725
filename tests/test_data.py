"""Data stage mechanisms: raw and prepared sources agree, the cache, and every user-facing error (fixtures in tests/fixtures)."""
import gzip
import os
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sagerec.core import SageRecError
from sagerec.data import LeaveOneOut, SeqDataset, find_source, load_dataset

FIX = Path(__file__).parent / "fixtures"


def _gz(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(gzip.compress(src.read_bytes(), mtime=0))


def beauty_dir(root: Path, layout: str) -> Path:
    "A data folder holding the Beauty fixture in the 'raw' or 'prepared' layout, gzipped under the official names."
    if layout == "raw":
        _gz(FIX / "raw/beauty/reviews_Beauty_5.json", root / "beauty/reviews_Beauty_5.json.gz")
        _gz(FIX / "raw/beauty/meta_Beauty.json", root / "beauty/meta_Beauty.json.gz")
    else:
        _gz(FIX / "prepared/beauty/interactions.tsv", root / "beauty/interactions.tsv.gz")
        _gz(FIX / "prepared/beauty/items.jsonl", root / "beauty/items.jsonl.gz")
    return root


def ml_dir(root: Path, layout: str) -> Path:
    "ML-1M fixture as extracted files ('raw'), as the official zip ('zip') or as the prepared copy ('prepared')."
    d = root / "ml-1m"; d.mkdir(parents=True, exist_ok=True)
    if layout == "raw":
        shutil.copy(FIX / "raw/ml-1m/ratings.dat", d); shutil.copy(FIX / "raw/ml-1m/movies.dat", d)
    elif layout == "zip":
        with zipfile.ZipFile(d / "ml-1m.zip", "w") as z:
            z.write(FIX / "raw/ml-1m/ratings.dat", "ml-1m/ratings.dat"); z.write(FIX / "raw/ml-1m/movies.dat", "ml-1m/movies.dat")
    else:
        _gz(FIX / "prepared/ml-1m/ratings_ordered.tsv", d / "ratings_ordered.tsv.gz"); shutil.copy(FIX / "prepared/ml-1m/movies.dat", d)
    return root


def same(a: SeqDataset, b: SeqDataset):
    np.testing.assert_array_equal(a.item_seq, b.item_seq)
    np.testing.assert_array_equal(a.user_ptr, b.user_ptr)
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    pd.testing.assert_frame_equal(a.items, b.items)


# ---------------------------------------------------------------- both sources, one dataset

def test_beauty_raw_equals_prepared(tmp_path):
    raw = load_dataset("beauty", beauty_dir(tmp_path / "r", "raw"), cache=False)
    prep = load_dataset("beauty", beauty_dir(tmp_path / "p", "prepared"), cache=False)
    same(raw, prep)
    assert (raw.info["source"], prep.info["source"]) == ("raw", "prepared")
    assert raw.user_ids.tolist() == ["RA", "RB", "RD"]              # RC (4 reviews) dropped; order = first appearance
    assert raw.items.raw_id.tolist() == ["P4", "P1", "P2", "P3", "P6", "P5"]
    assert [raw.sequence(u).tolist() for u in range(3)] == [[1, 2, 3, 4, 5, 6], [6, 3, 2, 4, 5], [4, 1, 6, 2, 5]]
    # the ids match the prepared file's item_idx column, as they do on the full data
    tsv = pd.read_csv(FIX / "prepared/beauty/interactions.tsv", sep="\t").drop_duplicates("item_id").set_index("item_id")
    assert tsv.item_idx.reindex(raw.items.raw_id).tolist() == raw.items.index.tolist()


def test_beauty_prompts(tmp_path):
    ds = load_dataset("beauty", beauty_dir(tmp_path, "raw"), cache=False)
    p = dict(zip(ds.items.raw_id, ds.items.prompt))
    assert p["P1"] == "Title: Rose & Oud Perfume. Categories: Fragrance; Women. Brand: Maison."
    assert p["P2"] == "Title: OPI Nail Lacquer. Description: A long-lasting lacquer. Categories: Makeup; Nails; Nail Polish. Brand: OPI."
    assert p["P3"] == "Title: L'Oreal Paris Shampoo. Categories: Hair Care; Shampoos; Personal Care. Brand: L'Oreal Paris."
    assert p["P4"] == "Title: Travel Bag. Categories: Tools & Accessories; Bags & Cases."     # brand "Unknown" left out
    assert p["P5"] == "Title: Cotton Pads."                                                  # only the root category
    assert p["P6"] == ""                                                                     # no meta record
    assert ds.items.category.tolist() == ["Tools & Accessories", "Fragrance", "Makeup", "Hair Care", None, None]
    assert ds.items.title.tolist()[4] is None
    prompts = ds.prompts()
    assert len(prompts) == ds.n_items + 1 and prompts[0] == "" and prompts[2] == ds.prompt(2)


@pytest.mark.parametrize("layout", ["zip", "prepared"])
def test_ml1m_sources_agree(tmp_path, layout):
    ref = load_dataset("ml-1m", ml_dir(tmp_path / "ref", "raw"), cache=False)
    other = load_dataset("ml-1m", ml_dir(tmp_path / layout, layout), cache=False)
    same(ref, other)
    assert ref.user_ids.tolist() == ["1", "2"]                     # user 3 has 4 ratings >= 4
    assert ref.items.raw_id.tolist() == ["10", "20", "40", "50", "60", "70"]
    assert ref.item_seq.tolist() == [1, 2, 3, 4, 5, 6, 2, 3, 5, 6, 4]  # ties (same second) kept in file order
    assert ref.prompt(2) == "Title: The City of Lost Children (1995). Genres: Adventure; Sci-Fi."
    assert ref.prompt(4) == "Title: Amélie (2001). Genres: Comedy; Romance."           # ISO-8859-1 decoded
    assert ref.prompt(5) == "Title: L'Enfer (1994). Genres: Drama."
    assert ref.prompt(6) == "" and ref.items.title[6] is None                          # movie 70 not in movies.dat


def test_ml1m_rating_threshold_and_kcore(tmp_path):
    root = ml_dir(tmp_path, "raw")
    allr = load_dataset("ml-1m", root, min_rating=1, cache=False)
    assert allr.n_users == 3 and allr.n_interactions == 18
    four = load_dataset("ml-1m", root, min_user=4, cache=False)
    assert four.n_users == 3 and four.n_items == 7               # user 3 stays, and with it movie 30
    core = load_dataset("ml-1m", root, min_user=3, k_core=2, cache=False)
    assert core.n_users == 3 and core.n_items == 6                # movie 30 has one positive: gone
    assert "30" not in core.items.raw_id.tolist() and core.sequence(2).size == 3


# ---------------------------------------------------------------- contract

def test_contract_types_and_split(tmp_path):
    ds = load_dataset("beauty", beauty_dir(tmp_path, "raw"), cache=False)
    assert ds.item_seq.dtype == np.int64 and ds.user_ptr.dtype == np.int64
    assert ds.user_ptr.shape == (ds.n_users + 1,) and ds.item_seq.min() == 1 and ds.item_seq.max() == ds.n_items
    assert list(ds.items.columns[:4]) == ["raw_id", "title", "category", "prompt"] and ds.items.index[0] == 1
    sp = ds.split()
    assert isinstance(sp, LeaveOneOut) and sp.n_items == ds.n_items and sp.n_users == ds.n_users
    for u in range(ds.n_users):
        seq = ds.sequence(u)
        assert sp.train[u].tolist() == seq[:-2].tolist() == sp.valid_input[u].tolist()
        assert sp.test_input[u].tolist() == seq[:-1].tolist()
        assert sp.valid_target[u] == seq[-2] and sp.test_target[u] == seq[-1]
    assert sp.valid_target.shape == sp.test_target.shape == (ds.n_users,)


def test_beauty_mini_needs_no_data(monkeypatch, tmp_path):
    monkeypatch.delenv("SAGEREC_DATA", raising=False)
    ds = load_dataset("beauty-mini", cache=tmp_path)
    assert ds.n_users == 1000 and np.diff(ds.user_ptr).min() >= 5 and ds.info["source"] == "embedded"
    assert (ds.items.prompt != "").mean() > 0.99
    sp = ds.split()
    assert len(sp.train) == 1000 and all(len(t) >= 3 for t in sp.train)


# ---------------------------------------------------------------- cache

def test_cache_hit_rebuild_and_invalidation(tmp_path):
    root, cache = beauty_dir(tmp_path / "d", "raw"), tmp_path / "cache"
    first = load_dataset("beauty", root, cache=cache)
    assert "cache_file" not in first.info
    files = list(cache.glob("*.npz")); assert len(files) == 1
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]     # no temporary file left behind
    second = load_dataset("beauty", root, cache=cache)
    assert second.info["cache_file"] == str(files[0]); same(first, second)
    # different parameters -> another cache entry
    load_dataset("beauty", root, cache=cache, min_user=6)
    assert len(list(cache.glob("*.npz"))) == 2
    # garbage in the cache file -> warning and rebuild
    files[0].write_bytes(b"not a zip at all")
    with pytest.warns(UserWarning, match="unreadable"):
        rebuilt = load_dataset("beauty", root, cache=cache)
    same(first, rebuilt)
    assert load_dataset("beauty", root, cache=cache).info.get("cache_file")   # rewritten and readable again
    # a changed source file (size and mtime) -> a new key, the new content is read
    reviews = root / "beauty/reviews_Beauty_5.json.gz"
    lines = gzip.decompress(reviews.read_bytes()).decode().splitlines(keepends=True)
    reviews.write_bytes(gzip.compress("".join(l for l in lines if '"RD"' not in l).encode()))
    os.utime(reviews, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = load_dataset("beauty", root, cache=cache)
    assert "cache_file" not in changed.info and changed.n_users == 2


def test_cache_with_inconsistent_arrays_is_rebuilt(tmp_path):
    root, cache = beauty_dir(tmp_path / "d", "raw"), tmp_path / "cache"
    ds = load_dataset("beauty", root, cache=cache)
    f = next(cache.glob("*.npz"))
    with np.load(f) as z: parts = dict(z)
    parts["user_ptr"] = parts["user_ptr"][:-1]                         # a readable but wrong file
    with open(f, "wb") as fh: np.savez(fh, **parts)
    with pytest.warns(UserWarning, match="unreadable"):
        again = load_dataset("beauty", root, cache=cache)
    same(ds, again)


# ---------------------------------------------------------------- errors

def test_unknown_name_lists_valid_ones():
    with pytest.raises(SageRecError, match="Valid names: beauty, toys, ml-1m, beauty-mini"):
        load_dataset("movielens-20m")


def test_no_data_setting(monkeypatch):
    monkeypatch.delenv("SAGEREC_DATA", raising=False)
    with pytest.raises(SageRecError, match="no data folder is set.*SAGEREC_DATA.*beauty-mini"):
        load_dataset("toys")


def test_data_setting_points_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv("SAGEREC_DATA", str(tmp_path / "missing"))
    with pytest.raises(SageRecError, match="does not exist"):
        load_dataset("beauty")


def test_missing_files_say_where_and_how(tmp_path):
    (tmp_path / "ml-1m").mkdir()
    with pytest.raises(SageRecError) as e:
        load_dataset("ml-1m", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "ml-1m") in msg and "ratings.dat + movies.dat or ml-1m.zip" in msg
    assert "ratings_ordered.tsv.gz + movies.dat" in msg and "fetch_raw('ml-1m'" in msg
    _gz(FIX / "raw/beauty/reviews_Beauty_5.json", tmp_path / "beauty/reviews_Beauty_5.json.gz")   # meta missing
    with pytest.raises(SageRecError, match="meta_Beauty.json.gz"):
        load_dataset("beauty", tmp_path, source="raw")


def test_bad_parameters(tmp_path):
    root = beauty_dir(tmp_path, "raw")
    with pytest.raises(SageRecError, match="source must be"):
        load_dataset("beauty", root, source="web")
    with pytest.raises(SageRecError, match="k_core must be"):
        load_dataset("beauty", root, k_core=0)
    with pytest.raises(SageRecError, match="min_user must be"):
        load_dataset("beauty", root, min_user=1)


def test_empty_after_filtering(tmp_path):
    with pytest.raises(SageRecError, match="No interactions are left.*min_user=7"):
        load_dataset("beauty", beauty_dir(tmp_path / "b", "raw"), min_user=7, cache=False)
    with pytest.raises(SageRecError, match="no rating is >= 6"):
        load_dataset("ml-1m", ml_dir(tmp_path / "m", "raw"), min_rating=6, cache=False)


def _edit(path: Path, old: str, new: str):
    "Replace `old` by `new` in a (gzipped) text file."
    data = path.read_bytes()
    gz = data[:2] == b"\x1f\x8b"
    text = (gzip.decompress(data) if gz else data).decode("latin-1")
    assert old in text
    out = text.replace(old, new, 1).encode("latin-1")
    path.write_bytes(gzip.compress(out) if gz else out)


_BUILDERS = {"ml-1m": ml_dir, "beauty": beauty_dir}


@pytest.mark.parametrize("name,layout,fname,old,new,where", [
    ("ml-1m", "raw", "ml-1m/ratings.dat", "1::20::4::200\n", "1::20::4\n", "ratings.dat, line 6"),         # truncated row
    ("ml-1m", "raw", "ml-1m/ratings.dat", "2::10::3::60\n", "2::10::3::60::7\n", "line 10"),              # extra field
    ("ml-1m", "raw", "ml-1m/movies.dat", "30::Postino", "30 Postino", "movies.dat, line 3"),
    ("beauty", "raw", "beauty/reviews_Beauty_5.json.gz", '{"reviewerID": "RA", "asin": "P4"', '{"reviewerID": "RA", "asim": "P4"', "line 10"),
    ("beauty", "raw", "beauty/meta_Beauty.json.gz", "'title': 'OPI Nail Lacquer'", "'title': 'OPI Nail Lacquer", "meta_Beauty.json.gz, line 2"),
    ("beauty", "prepared", "beauty/interactions.tsv.gz", "RB\tP2\t1000\t1\t2\t3", "RB\tP2\t1000\t1\t2\t3\textra", "line 9"),  # pandas' own line count
    ("beauty", "prepared", "beauty/interactions.tsv.gz", "RB\tP2\t1000\t1\t2\t3", "RB\tP2\t1000", "line 9"),
    ("beauty", "prepared", "beauty/items.jsonl.gz", '{"item_id": "P3"', '{"item": "P3"', "items.jsonl.gz, line 4"),
])
def test_malformed_rows_name_file_and_line(tmp_path, name, layout, fname, old, new, where):
    root = _BUILDERS[name](tmp_path, layout)
    _edit(root / fname, old, new)
    with pytest.raises(SageRecError, match=where):
        load_dataset(name, root, cache=False)


@pytest.mark.parametrize("fname", ["beauty/reviews_Beauty_5.json.gz", "beauty/meta_Beauty.json.gz"])
def test_truncated_gzip(tmp_path, fname):
    root = beauty_dir(tmp_path, "raw")
    p = root / fname
    p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])
    with pytest.raises(SageRecError, match="truncated or corrupt"):
        load_dataset("beauty", root, cache=False)


def test_prepared_file_without_expected_columns(tmp_path):
    root = beauty_dir(tmp_path, "prepared")
    (root / "beauty/interactions.tsv.gz").write_bytes(gzip.compress(b"a\tb\n1\t2\n"))
    with pytest.raises(SageRecError, match="lacks the column"):
        load_dataset("beauty", root, cache=False)


def test_find_source_prefers_raw_and_honours_choice(tmp_path):
    root = beauty_dir(beauty_dir(tmp_path, "raw"), "prepared")
    assert find_source("beauty", root).kind == "raw"
    assert find_source("beauty", root, "prepared").kind == "prepared"
    root2 = ml_dir(tmp_path / "z", "zip")
    src = find_source("ml-1m", root2)
    assert src.kind == "raw" and src.files["ratings"].name == "ml-1m.zip"


# ---------------------------------------------------------------- the full data (needs SAGEREC_DATA)

_DATA = os.environ.get("SAGEREC_DATA", "")
_full = pytest.mark.skipif(not (_DATA and Path(_DATA, "beauty").is_dir()), reason="needs SAGEREC_DATA with the full datasets")


@pytest.mark.slow
@_full
@pytest.mark.parametrize("name,counts", [("beauty", (22363, 12101, 198502)), ("toys", (19412, 11924, 167597)),
                                         ("ml-1m", (6034, 3533, 575272))])
def test_full_counts_and_cached_load(name, counts, tmp_path):
    ds = load_dataset(name, cache=tmp_path)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == counts
    t = time.perf_counter()
    again = load_dataset(name, cache=tmp_path)
    assert time.perf_counter() - t < 10 and again.info.get("cache_file")
    same(ds, again)
