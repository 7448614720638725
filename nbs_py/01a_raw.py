# %% [markdown]
# # Official raw files
# > Parsers for the files a user downloads (MovieLens `ml-1m.zip`, Amazon 2014 `reviews_*_5.json.gz` and `meta_*.json.gz`), and a downloader that caches, resumes and verifies.

# %%
#| default_exp raw

# %%
#| export
from __future__ import annotations

import ast
import gzip
import hashlib
import http.client
import json
import os
import re
import socket
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

import numpy as np
import pandas as pd
from tqdm import tqdm

from sagerec.core import SageRecError, check, data_dir as _data_dir

# %%
#| hide
import tempfile, threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from fastcore.test import test_eq, test_fail


# %% [markdown]
# This notebook reads the files exactly as their publishers distribute them. `sagerec.data` (notebook `01_data`)
# turns what these parsers return into leave-one-out sequences, and it reads the prepared offline copy too;
# both routes give the same dataset for the same content.
#
# | dataset | official files | publisher | terms |
# |---|---|---|---|
# | `ml-1m` | `ml-1m.zip` (holds `ml-1m/ratings.dat`, `ml-1m/movies.dat`) | GroupLens, files.grouplens.org | research use; cite Harper & Konstan (2015); **no redistribution without permission** |
# | `beauty` | `reviews_Beauty_5.json.gz`, `meta_Beauty.json.gz` | J. McAuley, Amazon product data (2014), snap.stanford.edu | research use; cite McAuley et al. (SIGIR 2015), He & McAuley (WWW 2016) |
# | `toys` | `reviews_Toys_and_Games_5.json.gz`, `meta_Toys_and_Games.json.gz` | same | same |
#
# The MovieLens terms forbid redistribution: never copy `ml-1m.zip`, `ratings.dat` or anything derived from them
# into this repository or a package. Each user downloads it (with `fetch_raw` below) into their own data folder.

# %% [markdown]
# ## Reading lines, with errors that point at the file and line
#
# The official files are gzip (Amazon), zip (MovieLens) or plain text (an extracted `ratings.dat`). `open_text`
# looks at the first bytes, not the name, so a file someone gunzipped but did not rename still reads. A damaged
# gzip stream (a download cut short) surfaces as a `SageRecError` that names the file and says what to do.

# %%
#| export
def open_text(path: Path | str, encoding: str = "utf-8") -> IO[str]:
    "Open `path` for reading text, gunzipping it when it starts with the gzip magic bytes."
    path = Path(path)
    check(path.is_file(), f"File {str(path)!r} does not exist.")
    with open(path, "rb") as f: magic = f.read(2)
    if magic == b"\x1f\x8b": return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, "rt", encoding=encoding, newline="")

@contextmanager
def reading(path: Path | str, encoding: str = "utf-8") -> Iterator[Iterator[tuple[int, str]]]:
    "Yield `(line_number, line)` pairs of `path` (1-based); a damaged gzip stream becomes a `SageRecError`."
    f = open_text(path, encoding)
    state = {"n": 0}
    def lines():
        for state["n"], line in enumerate(f, 1): yield state["n"], line
    try:
        yield lines()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise SageRecError(f"{path} is truncated or corrupt (gzip error after line {state['n']}: {e}). "
                           "Delete it and download it again (sagerec.raw.fetch_raw).") from None
    finally:
        f.close()


# %%
with tempfile.TemporaryDirectory() as d:
    p = Path(d) / "x.json.gz"
    with gzip.open(p, "wt") as f: f.write("".join(f"line {i}\n" for i in range(1, 20_001)))
    with reading(p) as lines: first = [next(lines) for _ in range(2)]
    p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])   # cut the gzip stream short, as an interrupted download would
    def read_all():
        with reading(p) as lines: return list(lines)
    test_fail(read_all, contains="truncated or corrupt")
first

# %%
test_eq(first, [(1, "line 1\n"), (2, "line 2\n")])


# %% [markdown]
# ## MovieLens 1M
#
# `ratings.dat` has one rating per line, `UserID::MovieID::Rating::Timestamp`, sorted by user. Split on a single
# `:`, each line has seven fields, the separators' empty fields included, which lets pandas' fast C parser read
# the million lines (a `::` separator would need the slow Python engine). The parser then checks every row:
# a line with too many fields, too few (a truncated last line) or a non-number is reported with its line number,
# never read as a silently wrong rating. `line` keeps the file order, which breaks timestamp ties later.

# %%
#| export
@contextmanager
def _ml1m_member(src: Path | str, member: str) -> Iterator[tuple[IO[bytes], str]]:
    "Open `member` (`ratings.dat`, `movies.dat`) from an extracted file or from inside `ml-1m.zip`."
    src = Path(src)
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as z:
            names = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == member]
            check(bool(names), f"{src} holds no {member}; is it the MovieLens ml-1m.zip? Download it again with fetch_raw('ml-1m', ...).")
            with z.open(names[0]) as f: yield f, f"{src}::{names[0]}"
    else:
        check(src.is_file(), f"File {str(src)!r} does not exist.")
        with open(src, "rb") as f: yield f, str(src)

def first_bad_row(df: pd.DataFrame, int_cols=(), empty_cols=(), text_cols=()) -> int | None:
    "Position of the first row with a non-integer in `int_cols`, a value in `empty_cols` or a gap in `text_cols`."
    bad = np.zeros(len(df), bool)
    for c in int_cols:
        if pd.api.types.is_integer_dtype(df[c]): continue          # the fast path: the whole column parsed as integers
        v = pd.to_numeric(df[c], errors="coerce")
        bad |= (v.isna() | (v % 1 != 0)).to_numpy()
    for c in empty_cols: bad |= df[c].notna().to_numpy()
    for c in text_cols: bad |= df[c].isna().to_numpy()
    return int(np.argmax(bad)) if bad.any() else None

def read_ml1m_ratings(src: Path | str) -> pd.DataFrame:
    "Read MovieLens `ratings.dat` (or `ml-1m.zip`): user_id, movie_id, rating, timestamp, line (1-based), in file order."
    cols = ["user_id", "_a", "movie_id", "_b", "rating", "_c", "timestamp"]
    with _ml1m_member(src, "ratings.dat") as (f, where):
        try: df = pd.read_csv(f, sep=":", header=None, names=cols, engine="c", skip_blank_lines=False)
        except pd.errors.ParserError as e:
            m = re.search(r"line (\d+)", str(e))
            raise SageRecError(f"{where}, line {m.group(1) if m else '?'}: malformed rating, expected "
                               f"UserID::MovieID::Rating::Timestamp ({e}). Re-download the file.") from None
    num = ["user_id", "movie_id", "rating", "timestamp"]
    i = first_bad_row(df, int_cols=num, empty_cols=["_a", "_b", "_c"])
    if i is not None:  # blank lines are kept as all-empty rows, so row i is line i + 1
        raise SageRecError(f"{where}, line {i + 1}: malformed or truncated rating {df.iloc[i][num].tolist()}, "
                           "expected UserID::MovieID::Rating::Timestamp. Re-download the file.")
    check(len(df) > 0, f"{where} holds no ratings.")
    out = df[num].astype("int64")
    out["line"] = np.arange(1, len(out) + 1, dtype=np.int64)
    return out


# %%
ratings_dat = b"""1::1193::5::978300760
1::661::3::978302109
1::914::3::978301968
2::1357::5::978298709
"""
with tempfile.TemporaryDirectory() as d:
    p = Path(d) / "ratings.dat"; p.write_bytes(ratings_dat)
    ratings = read_ml1m_ratings(p)
    for bad, where in [(b"1::1193::5::978300760\n1::661::3", "line 2"),          # truncated last line
                       (b"1::1193::5::978300760\n1::661::x::978302109\n", "line 2"),  # not a number
                       (b"1::1193::5::978300760\n1::661::3::9::9\n", "line 2"),      # too many fields
                       (b"1::1193::5::978300760\n1::661::3.5::978302109\n", "line 2")]:  # not an integer
        p.write_bytes(bad)
        test_fail(lambda: read_ml1m_ratings(p), contains=where)
ratings

# %%
test_eq(ratings.columns.tolist(), ["user_id", "movie_id", "rating", "timestamp", "line"])
test_eq(ratings.movie_id.tolist(), [1193, 661, 914, 1357])
test_eq(ratings.line.tolist(), [1, 2, 3, 4])


# %% [markdown]
# `movies.dat` is ISO-8859-1 text, `MovieID::Title (Year)::Genre|Genre`. Titles contain single colons
# (`Star Wars: Episode IV - A New Hope (1977)`), so lines are split on `::` only.

# %%
#| export
def read_ml1m_movies(src: Path | str) -> pd.DataFrame:
    "Read MovieLens `movies.dat` (or from `ml-1m.zip`): movie_id, title, genres (list), in file order."
    rows = []
    with _ml1m_member(src, "movies.dat") as (f, where):
        for n, line in enumerate(f.read().decode("latin-1").splitlines(), 1):
            if not line.strip(): continue
            parts = line.split("::")
            if len(parts) != 3 or not parts[0].strip().isdigit():
                raise SageRecError(f"{where}, line {n}: malformed movie {line[:80]!r}, expected MovieID::Title::Genres. Re-download the file.")
            rows.append((int(parts[0]), parts[1], [g for g in parts[2].split("|") if g]))
    return pd.DataFrame(rows, columns=["movie_id", "title", "genres"])


# %%
with tempfile.TemporaryDirectory() as d:
    p = Path(d) / "movies.dat"
    p.write_bytes("2571::Matrix, The (1999)::Action|Sci-Fi|Thriller\n260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi\n"
                  "1111::Microcosmos (Microcosmos: Le peuple de l'herbe) (1996)::Documentary\n".encode("latin-1"))
    movies = read_ml1m_movies(p)
    with zipfile.ZipFile(Path(d) / "ml-1m.zip", "w") as z:   # the official zip keeps the files under ml-1m/
        z.write(p, "ml-1m/movies.dat"); z.writestr("ml-1m/ratings.dat", ratings_dat)
    from_zip = read_ml1m_movies(Path(d) / "ml-1m.zip"), read_ml1m_ratings(Path(d) / "ml-1m.zip")
movies

# %%
test_eq(movies.title[1], "Star Wars: Episode IV - A New Hope (1977)")
test_eq(movies.genres[0], ["Action", "Sci-Fi", "Thriller"])
pd.testing.assert_frame_equal(from_zip[0], movies); pd.testing.assert_frame_equal(from_zip[1], ratings)


# %% [markdown]
# ## Amazon 2014: reviews and metadata
#
# `reviews_<Category>_5.json.gz` is the 5-core review file: one JSON object per line with (among others)
# `reviewerID`, `asin`, `overall` (stars) and `unixReviewTime` (seconds, day resolution). We keep those four and the
# line number. The file is sorted by product, so the line number is what keeps "ties in file order" when
# two reviews of a user share a day.

# %%
#| export
def read_amazon_reviews(path: Path | str) -> pd.DataFrame:
    "Read `reviews_<Category>_5.json.gz`: user_id, item_id, timestamp, rating, line (1-based), in file order."
    users, items, times, stars, lines_ = [], [], [], [], []
    with reading(path) as lines:
        for n, line in lines:
            if not line.strip(): continue
            try:
                r = json.loads(line)
                missing = [k for k in ("reviewerID", "asin", "unixReviewTime") if k not in r] if isinstance(r, dict) else ["a JSON object"]
                if missing: raise KeyError(", ".join(missing))  # every missing field named, not only the first
                u, i, t, s = r["reviewerID"], r["asin"], int(r["unixReviewTime"]), float(r.get("overall", "nan"))
            except (ValueError, KeyError, TypeError) as e:
                what = f"missing {e.args[0]}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
                raise SageRecError(f"{path}, line {n}: not a complete review record ({what}); expected JSON with "
                                   "reviewerID, asin and unixReviewTime. Re-download the file.") from None
            users.append(u); items.append(i); times.append(t); stars.append(s); lines_.append(n)
    check(len(users) > 0, f"{path} holds no reviews.")
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.array(times, np.int64),
                         "rating": np.array(stars, np.float64), "line": np.array(lines_, np.int64)})


# %%
reviews_json = """{"reviewerID": "U1", "asin": "B001", "reviewerName": "Ann", "helpful": [0, 0], "reviewText": "Nice.", "overall": 5.0, "summary": "ok", "unixReviewTime": 1300000000, "reviewTime": "03 13, 2011"}
{"reviewerID": "U2", "asin": "B001", "overall": 4.0, "unixReviewTime": 1200000000}
{"reviewerID": "U1", "asin": "B002", "overall": 3.0, "unixReviewTime": 1100000000}
"""
with tempfile.TemporaryDirectory() as d:
    p = Path(d) / "reviews_Beauty_5.json.gz"
    with gzip.open(p, "wt") as f: f.write(reviews_json)
    reviews = read_amazon_reviews(p)
    with gzip.open(p, "wt") as f: f.write(reviews_json + '{"reviewerID": "U3", "asin": "B00')   # truncated last record
    test_fail(lambda: read_amazon_reviews(p), contains="line 4")
reviews

# %%
test_eq(reviews.user_id.tolist(), ["U1", "U2", "U1"]); test_eq(reviews.line.tolist(), [1, 2, 3])
test_eq(reviews.timestamp.dtype, np.int64)

# %% [markdown]
# `meta_<Category>.json.gz` is **not** JSON: each line is a Python dict literal (single quotes), so it is parsed
# with `ast.literal_eval` (never `eval`). A meta file lists many more products than its 5-core review file uses,
# so `read_amazon_meta(path, asins)` first pulls the `asin` with a regular expression and evaluates only the lines
# it needs. Kept fields: `title`, `description`, `categories` (a list of category paths, each starting at the
# top-level department) and `brand`, raw; cleaning happens when prompts are built (`sagerec.data`). Lines in strict
# JSON (as in later releases) are read too.

# %%
#| export
_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
META_FIELDS = ["title", "description", "categories", "brand"]

def read_amazon_meta(path: Path | str, asins: set[str] | None = None) -> pd.DataFrame:
    "Read `meta_<Category>.json.gz` (Python dict literals): title, description, categories, brand, indexed by ASIN."
    rows, conflicts = {}, []
    with reading(path) as lines:
        for n, line in lines:
            if not line.strip(): continue
            if asins is not None:
                m = _ASIN.search(line)
                if m is None: raise SageRecError(f"{path}, line {n}: no 'asin' field; is this an Amazon meta file? Re-download it.")
                if m.group(1) not in asins: continue
            try: d = json.loads(line) if line.lstrip().startswith('{"') else ast.literal_eval(line.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
                raise SageRecError(f"{path}, line {n}: malformed or truncated product record ({type(e).__name__}). Re-download the file.") from None
            if not isinstance(d, dict) or "asin" not in d:
                raise SageRecError(f"{path}, line {n}: not a product record with an 'asin'. Re-download the file.")
            rec = [d.get(k) for k in META_FIELDS]
            if d["asin"] in rows and rows[d["asin"]] != rec: conflicts.append(d["asin"])
            rows[d["asin"]] = rec
    if conflicts:  # the official files are what they are: say which record wins instead of choosing silently
        warnings.warn(f"{path}: {len(conflicts)} product(s) have two different records (e.g. {', '.join(conflicts[:3])}); "
                      "the last record of each is used.", stacklevel=2)
    meta = pd.DataFrame.from_dict(rows, orient="index", columns=META_FIELDS, dtype=object)
    meta.index.name = "item_id"
    return meta


# %%
meta_lines = """{'asin': 'B001', 'title': 'OPI Nail Lacquer, Simmer &amp; Shimmer', 'categories': [['Beauty', 'Makeup', 'Nails', 'Nail Polish']], 'brand': 'OPI', 'salesRank': {'Beauty': 1234}}
{'asin': 'B999', 'title': 'A product no one reviewed', 'categories': [['Beauty']]}
{'asin': 'B002', 'description': "L'Oreal's best \\"shine\\"", 'categories': [['Beauty', 'Hair Care']], 'related': {'also_bought': ['B001']}}
"""
with tempfile.TemporaryDirectory() as d:
    p = Path(d) / "meta_Beauty.json.gz"
    with gzip.open(p, "wt") as f: f.write(meta_lines)
    meta = read_amazon_meta(p, asins={"B001", "B002"})
    with gzip.open(p, "wt") as f: f.write(meta_lines + "{'asin': 'B003', 'title': 'cut sh")
    test_fail(lambda: read_amazon_meta(p), contains="line 4")
meta

# %%
test_eq(meta.index.tolist(), ["B001", "B002"])        # B999 was skipped without being evaluated
test_eq(meta.loc["B002", "description"], "L'Oreal's best \"shine\"")
assert meta.loc["B002", "title"] is None and meta.loc["B001", "brand"] == "OPI"


# %% [markdown]
# ## Downloading: cached, resumable, verified
#
# `download(url, dest, ...)` writes to `dest.part` and renames it to `dest` only when the body is complete
# (the `Content-Length` the server announced was received) and verified (size, `sha256`/`md5` when given, and an
# integrity read of `.gz`/`.zip` files, so a cut-off download with no checksum is still caught). Then:
#
# - a `dest` that exists and verifies is used as is (no network);
# - a leftover `dest.part` is resumed with an HTTP `Range` request; a server that ignores `Range` (status 200)
#   restarts from zero; a dropped connection is resumed up to `retries` times;
# - every failure is a `SageRecError` that names the URL and says what to do, including where to put a file
#   downloaded by hand.

# %%
#| export
def _verify(path: Path, expected_size: int | None = None, sha256: str | None = None, md5: str | None = None) -> str | None:
    "Return what is wrong with the file at `path`, or `None` when it passes every check asked for."
    size = path.stat().st_size
    if expected_size is not None and size != expected_size: return f"its size is {size:,} bytes, expected {expected_size:,}"
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want:
            h = hashlib.new(algo)
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""): h.update(block)
            if h.hexdigest().lower() != want.lower(): return f"its {algo} is {h.hexdigest()}, expected {want.lower()} (corrupt or changed file)"
    name = path.name.removesuffix(".part")
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20): pass
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as z: bad = z.testzip()
            if bad: return f"the zip member {bad} is corrupt"
    except (EOFError, OSError, zlib.error, zipfile.BadZipFile) as e:
        return f"it is not a complete {name.rsplit('.', 1)[-1]} file ({e})"
    return None


# %%
#| export
class _Interrupted(Exception):
    "The connection dropped mid-body; the `.part` file is kept for a resume."

def _total_from(resp, start: int) -> int | None:
    "The full size of the resource, from `Content-Range` (a 206 answer) or `Content-Length` (a 200 answer)."
    cr = resp.headers.get("Content-Range", "")
    m = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", cr)
    if m: return int(m.group(1))
    cl = resp.headers.get("Content-Length")
    return start + int(cl) if cl and cl.isdigit() else None

def _fetch_once(url: str, part: Path, dest: Path, timeout: float, progress: bool, chunk: int) -> None:
    "One HTTP request that appends to (206) or rewrites (200) `part`; raises `_Interrupted` if the body stops early."
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "sagerec-downloader", **({"Range": f"bytes={start}-"} if start else {})}
    try:
        resp = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and start:   # the range starts at/after the end: the part already holds the whole body
            m = re.search(r"/(\d+)", e.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == start: return
            part.unlink()              # a part longer than the resource cannot be resumed
            raise _Interrupted("range not satisfiable; restarting") from None
        raise SageRecError(f"Download of {url} failed: HTTP {e.code} {e.reason}. Check that the URL still works in a browser; "
                           f"otherwise download the file by hand and place it at {dest}.") from None
    except (URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SageRecError(f"Could not reach {url} ({reason}). No network here? Download the file on a machine that has "
                           f"network access and place it at {dest}; it will be verified and used.") from None
    with resp:
        if start and resp.status != 206: start = 0        # the server ignored Range: start over
        total = _total_from(resp, start)
        with open(part, "ab" if start else "wb") as f, \
             tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name, disable=not progress, leave=False) as bar:
            try:
                while block := resp.read(chunk):
                    f.write(block); bar.update(len(block))
            except (http.client.IncompleteRead, ConnectionError, TimeoutError, socket.timeout) as e:
                raise _Interrupted(str(e)) from None
    got = part.stat().st_size
    if total is not None and got < total: raise _Interrupted(f"received {got:,} of {total:,} bytes")


# %%
#| export
def download(url: str,                        # where to fetch from (http/https)
             dest: Path | str,                # the final file; `dest.part` holds an unfinished download
             expected_size: int | None = None,  # bytes, checked when given
             sha256: str | None = None,       # hex digest, checked when given
             md5: str | None = None,          # hex digest, checked when given (MovieLens publishes md5)
             retries: int = 3,                # resumes after a dropped connection before giving up
             timeout: float = 60.0,           # seconds per socket operation
             progress: bool = True,           # show a tqdm progress bar
             chunk: int = 1 << 16,            # read size in bytes
            ) -> Path:
    "Download `url` to `dest` unless a verified copy is there; resume partial files; verify; raise `SageRecError` on failure."
    check(retries >= 0, f"retries must be >= 0, not {retries}.")
    dest = Path(dest)
    if dest.exists():
        problem = _verify(dest, expected_size, sha256, md5)
        if problem is None: return dest
        warnings.warn(f"{dest} exists but {problem}; downloading it again.")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, dest, timeout, progress, chunk); break
        except _Interrupted as e: why = str(e)
    else:
        have = part.stat().st_size if part.exists() else 0
        raise SageRecError(f"Download of {url} was cut off {retries + 1} times ({why}); {have:,} bytes are kept in {part}. "
                           f"Run again to resume, or download the file by hand and place it at {dest}.")
    problem = _verify(part, expected_size, sha256, md5)
    if problem:
        part.unlink()
        raise SageRecError(f"Downloaded {url} but {problem}; the file was deleted. Run again; if it fails again, "
                           f"download the file by hand, check it, and place it at {dest}.")
    os.replace(part, dest)
    return dest


# %% [markdown]
# A local server on `127.0.0.1` stands in for the publisher (nothing is downloaded from the internet in the lessons or
# tests). The first call downloads, the second finds a verified copy and makes no request, a wrong checksum is an
# error and leaves nothing behind. `tests/test_download.py` covers the rest: a server that drops the connection
# midway, resuming from a partial file, a server that ignores `Range`, HTTP 404 and an unreachable host.

# %%
#| hide
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

def _serve(folder):
    "Serve `folder` on 127.0.0.1 at a random port from a daemon thread; return the server."
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


# %%
with tempfile.TemporaryDirectory() as d:
    site, out = Path(d) / "site", Path(d) / "out"; site.mkdir()
    payload = os.urandom(300_000)
    (site / "file.bin").write_bytes(payload)
    srv = _serve(site); url = f"http://127.0.0.1:{srv.server_address[1]}/file.bin"
    good = hashlib.sha256(payload).hexdigest()
    p = download(url, out / "file.bin", expected_size=len(payload), sha256=good, progress=False)
    (site / "file.bin").unlink()                        # a second call must not need the server
    again = download(url, out / "file.bin", sha256=good, progress=False)
    (site / "file.bin").write_bytes(payload)
    test_fail(lambda: download(url, out / "other.bin", md5="0" * 32, progress=False), contains="md5")
    leftovers = sorted(x.name for x in out.iterdir())
    srv.shutdown(); srv.server_close()
leftovers

# %%
test_eq(p, again); test_eq(leftovers, ["file.bin"])    # the corrupt download left neither other.bin nor other.bin.part


# %% [markdown]
# ## The official files and where they go
#
# `fetch_raw(name, data_dir)` downloads the official files for one dataset into `<data_dir>/<name>/`, the layout
# `sagerec.data.load_dataset` looks for. The MovieLens md5 is the one GroupLens publishes beside the file
# (`ml-1m.zip.md5`); it could not be fetched from this offline machine, but the same value is quoted, as the content of
# that file, by many independent projects. The Amazon 2014 files have no published checksum; they are checked for a
# complete gzip stream.

# %%
#| export
@dataclass(frozen=True)
class RawFile:
    "One official file: where it comes from and how to check it."
    url: str                      # download address
    name: str                     # file name inside <data_dir>/<dataset>/
    md5: str | None = None        # published checksum, if any
    size: int | None = None       # published size in bytes, if any

_SNAP = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
RAW_FILES: dict[str, list[RawFile]] = {
    "ml-1m": [RawFile("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "ml-1m.zip", md5="c4d9eecfca2ab87c1945afe126590906")],
    "beauty": [RawFile(f"{_SNAP}/reviews_Beauty_5.json.gz", "reviews_Beauty_5.json.gz"),
               RawFile(f"{_SNAP}/meta_Beauty.json.gz", "meta_Beauty.json.gz")],
    "toys": [RawFile(f"{_SNAP}/reviews_Toys_and_Games_5.json.gz", "reviews_Toys_and_Games_5.json.gz"),
             RawFile(f"{_SNAP}/meta_Toys_and_Games.json.gz", "meta_Toys_and_Games.json.gz")],
}

def fetch_raw(name: str,                        # "ml-1m", "beauty" or "toys"
              data_dir: Path | str | None = None,  # default: $SAGEREC_DATA
              progress: bool = True,
              **kwargs,                          # passed on to `download` (retries, timeout, ...)
             ) -> list[Path]:
    "Download the official raw files of dataset `name` into `<data_dir>/<name>/` (skipping verified copies)."
    check(name in RAW_FILES, f"No official download is known for {name!r}; choose one of {sorted(RAW_FILES)}.")
    root = Path(data_dir).expanduser() if data_dir not in (None, "") else _data_dir(None, required=True)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return [download(f.url, folder / f.name, expected_size=f.size, md5=f.md5, progress=progress, **kwargs) for f in RAW_FILES[name]]


# %%
with tempfile.TemporaryDirectory() as d:
    site = Path(d) / "site"; site.mkdir()
    with zipfile.ZipFile(site / "ml-1m.zip", "w") as z: z.writestr("ml-1m/ratings.dat", ratings_dat)
    srv = _serve(site)
    real = RAW_FILES["ml-1m"]
    RAW_FILES["ml-1m"] = [RawFile(f"http://127.0.0.1:{srv.server_address[1]}/ml-1m.zip", "ml-1m.zip",
                                  md5=hashlib.md5((site / "ml-1m.zip").read_bytes()).hexdigest())]
    try: got = fetch_raw("ml-1m", Path(d) / "data", progress=False)
    finally: RAW_FILES["ml-1m"] = real; srv.shutdown(); srv.server_close()
    fetched = [p.relative_to(d).as_posix() for p in got]
    test_fail(lambda: fetch_raw("ml-10m", d), contains="choose one of")
fetched

# %%
test_eq(fetched, ["data/ml-1m/ml-1m.zip"])

# %%
#| hide
import nbdev; nbdev.nbdev_export()
