"""The downloader against a local HTTP server on 127.0.0.1: caching, resuming, truncation, corruption, HTTP errors.

Nothing is downloaded from the internet. The server runs in a thread on a random port; its behaviour per file
(`Handler.modes`, default "plain"): "plain" honours Range, "trunc" always stops halfway, "flaky" stops halfway on
the first request only, "norange" ignores Range; unknown names are 404.
"""
import gzip
import hashlib
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sagerec.core import SageRecError
from sagerec import raw as rawmod
from sagerec.raw import RawFile, download, fetch_raw

PAYLOAD = os.urandom(200_000)


class Handler(BaseHTTPRequestHandler):
    files: dict = {}
    modes: dict = {}
    requests: list = []
    seen: set = set()

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.requests.append((name, rng))
        body = self.files.get(name)
        if body is None:
            self.send_error(404, "Not Found"); return
        mode = self.modes.get(name, "plain")
        start = 0
        m = re.match(r"bytes=(\d+)-$", rng or "")
        if m and mode != "norange":
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416); self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0"); self.end_headers(); return
            self.send_response(206); self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Length", str(len(rest))); self.end_headers()
        cut = mode == "trunc" or (mode == "flaky" and name not in self.seen)
        self.seen.add(name)
        self.wfile.write(rest[: len(rest) // 2] if cut else rest)
        if cut: self.close_connection = True


@pytest.fixture
def server():
    Handler.files, Handler.modes, Handler.requests, Handler.seen = {}, {}, [], set()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield base, Handler
    srv.shutdown(); srv.server_close()


def sha(b: bytes) -> str: return hashlib.sha256(b).hexdigest()


def test_download_verifies_and_then_uses_the_cached_copy(server, tmp_path):
    base, h = server
    h.files["plain.bin"] = PAYLOAD
    dest = tmp_path / "plain.bin"
    got = download(f"{base}/plain.bin", dest, expected_size=len(PAYLOAD), sha256=sha(PAYLOAD), progress=False)
    assert got == dest and dest.read_bytes() == PAYLOAD and not (tmp_path / "plain.bin.part").exists()
    n = len(h.requests)
    download(f"{base}/plain.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert len(h.requests) == n                                   # verified copy: no request at all


def test_resume_from_partial_file_uses_range(server, tmp_path):
    base, h = server
    h.files["plain.bin"] = PAYLOAD
    dest = tmp_path / "plain.bin"
    (tmp_path / "plain.bin.part").write_bytes(PAYLOAD[:12_345])
    download(f"{base}/plain.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert h.requests == [("plain.bin", "bytes=12345-")]


def test_dropped_connection_is_resumed(server, tmp_path):
    base, h = server
    h.files["flaky.bin"], h.modes["flaky.bin"] = PAYLOAD, "flaky"
    dest = download(f"{base}/flaky.bin", tmp_path / "flaky.bin", md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert h.requests == [("flaky.bin", None), ("flaky.bin", f"bytes={len(PAYLOAD) // 2}-")]


def test_server_that_always_truncates_gives_a_clear_error_and_keeps_the_part(server, tmp_path):
    base, h = server
    h.files["trunc.bin"], h.modes["trunc.bin"] = PAYLOAD, "trunc"
    dest = tmp_path / "trunc.bin"
    with pytest.raises(SageRecError, match=r"was cut off 3 times.*Run again to resume.*place it at") as e:
        download(f"{base}/trunc.bin", dest, retries=2, progress=False)
    assert f"{base}/trunc.bin" in str(e.value) and str(dest) in str(e.value)
    assert not dest.exists()
    part = tmp_path / "trunc.bin.part"
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD) and PAYLOAD.startswith(part.read_bytes())
    assert [r for _, r in h.requests][1:] != [None] * 2               # the retries asked for ranges
    # the publisher recovers: the next call resumes from the part and completes
    h.modes["trunc.bin"] = "plain"; h.requests.clear()
    download(f"{base}/trunc.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and h.requests == [("trunc.bin", f"bytes={kept}-")]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    base, h = server
    h.files["norange.bin"], h.modes["norange.bin"] = PAYLOAD, "norange"
    (tmp_path / "norange.bin.part").write_bytes(PAYLOAD[:5000])
    dest = download(f"{base}/norange.bin", tmp_path / "norange.bin", sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD                     # not the partial prefix twice


def test_part_already_complete_gets_416_and_is_used(server, tmp_path):
    base, h = server
    h.files["plain.bin"] = PAYLOAD
    (tmp_path / "plain.bin.part").write_bytes(PAYLOAD)
    dest = download(f"{base}/plain.bin", tmp_path / "plain.bin", sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and h.requests == [("plain.bin", f"bytes={len(PAYLOAD)}-")]


def test_checksum_mismatch_deletes_and_explains(server, tmp_path):
    base, h = server
    h.files["plain.bin"] = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1])          # one flipped bit
    dest = tmp_path / "plain.bin"
    with pytest.raises(SageRecError, match="sha256 is .* expected .*corrupt.*place it at"):
        download(f"{base}/plain.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert not dest.exists() and not (tmp_path / "plain.bin.part").exists()
    with pytest.raises(SageRecError, match="size is 200,000 bytes, expected 200,001"):
        download(f"{base}/plain.bin", dest, expected_size=200_001, progress=False)


def test_existing_corrupt_file_is_downloaded_again(server, tmp_path):
    base, h = server
    h.files["plain.bin"] = PAYLOAD
    dest = tmp_path / "plain.bin"; dest.write_bytes(b"old junk")
    with pytest.warns(UserWarning, match="downloading it again"):
        download(f"{base}/plain.bin", dest, sha256=sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_incomplete_gzip_without_checksum_is_caught(server, tmp_path):
    base, h = server
    gz = gzip.compress(PAYLOAD)
    h.files["plain.json.gz"] = gz[: len(gz) // 2]           # the server itself has a cut-off file
    with pytest.raises(SageRecError, match="not a complete gz file"):
        download(f"{base}/plain.json.gz", tmp_path / "x.json.gz", progress=False)
    assert not (tmp_path / "x.json.gz").exists()


def test_http_error_names_url_and_status(server, tmp_path):
    base, _ = server
    with pytest.raises(SageRecError, match=r"HTTP 404.*download the file by hand and place it at") as e:
        download(f"{base}/nothing.zip", tmp_path / "nothing.zip", progress=False)
    assert f"{base}/nothing.zip" in str(e.value)


def test_unreachable_host_says_what_to_do(tmp_path):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()   # a port nobody listens on
    dest = tmp_path / "ml-1m.zip"
    with pytest.raises(SageRecError, match=r"Could not reach .*No network here\?.*place it at") as e:
        download(f"http://127.0.0.1:{port}/ml-1m.zip", dest, progress=False, timeout=5)
    assert str(dest) in str(e.value)


def test_fetch_raw_layout(server, tmp_path, monkeypatch):
    base, h = server
    reviews, meta = gzip.compress(b'{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n'), gzip.compress(b"{'asin': 'a'}\n")
    h.files.update({"reviews_Beauty_5.json.gz": reviews, "meta_Beauty.json.gz": meta})
    monkeypatch.setitem(rawmod.RAW_FILES, "beauty", [RawFile(f"{base}/reviews_Beauty_5.json.gz", "reviews_Beauty_5.json.gz"),
                                                     RawFile(f"{base}/meta_Beauty.json.gz", "meta_Beauty.json.gz")])
    got = fetch_raw("beauty", tmp_path / "data", progress=False)
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["data/beauty/reviews_Beauty_5.json.gz", "data/beauty/meta_Beauty.json.gz"]
    monkeypatch.setenv("SAGEREC_DATA", str(tmp_path / "data"))
    assert fetch_raw("beauty", progress=False) == got            # already there: nothing fetched again
    assert len(h.requests) == 2


def test_fetch_raw_knows_the_official_files():
    assert rawmod.RAW_FILES["ml-1m"][0].url == "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    assert rawmod.RAW_FILES["ml-1m"][0].md5 == "c4d9eecfca2ab87c1945afe126590906"
    names = {f.name for k in ("beauty", "toys") for f in rawmod.RAW_FILES[k]}
    assert names == {"reviews_Beauty_5.json.gz", "meta_Beauty.json.gz", "reviews_Toys_and_Games_5.json.gz", "meta_Toys_and_Games.json.gz"}
    assert all(f.url.startswith("http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/") for k in ("beauty", "toys") for f in rawmod.RAW_FILES[k])
    with pytest.raises(SageRecError, match="choose one of"):
        fetch_raw("ml-20m", "/tmp")
