# %% [markdown]
# # Core utilities
# > Where data, caches, figures and runs live; seeding; devices; clear errors. Every later stage imports these.

# %%
#| default_exp core

# %%
#| export
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a shared or small CPU, spinning
# threads made training many times slower; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import warnings
# Inside a notebook kernel without ipywidgets, importing transformers/sentence-transformers (tqdm.auto) warns once per
# process that IProgress is missing; sagerec's bars are plain text bars, so the warning is noise in every executed notebook.
warnings.filterwarnings("ignore", message="IProgress not found")
import numpy as np
import torch

# %%
#| hide
import tempfile
import matplotlib.pyplot as plt
from fastcore.test import test_close, test_eq, test_fail


# %% [markdown]
# ## Errors a user can act on
#
# Every problem that comes from the user's input (a dataset name, a path, a parameter out of range) is raised
# as a `SageRecError` whose message says what was wrong and what to do. Code deep inside the library never
# lets a bare `KeyError` or `IndexError` escape for such cases.

# %%
#| export
class SageRecError(ValueError):
    "An error caused by the user's input or setup, with a message that says how to fix it."


# %%
#| export
def check(cond: bool, msg: str) -> None:
    "Raise `SageRecError(msg)` unless `cond` holds."
    if not cond: raise SageRecError(msg)


# %%
test_fail(lambda: check(1 > 2, "one is not greater than two"), contains="one is not greater")
check(2 > 1, "never raised")


# %% [markdown]
# ## Where things live
#
# Four locations, each with one environment variable that overrides it:
#
# | what | variable | default |
# |---|---|---|
# | full datasets (prepared copy or official raw files) | `SAGEREC_DATA` | none: only the embedded Beauty slice is available |
# | caches (processed datasets, embeddings, graphs) | `SAGEREC_CACHE` | `~/.cache/sagerec` |
# | figures | `SAGEREC_FIGURES` | `figures/` at the project root (or the working folder outside a checkout) |
# | runs (executed notebooks, `params.json`, `metrics.json`, checkpoints) | `SAGEREC_RUNS` | `runs/` at the project root |

# %%
#| export
def project_root(start: Path | str | None = None) -> Path | None:
    "The nearest folder above `start` (default: cwd) whose `pyproject.toml` is the sagerec project, else `None`."
    p = Path(start or Path.cwd()).resolve()
    for d in [p, *p.parents]:
        f = d / "pyproject.toml"
        if f.exists() and 'name = "sagerec"' in f.read_text(encoding="utf-8"): return d
    return None


# %%
root = project_root()
sorted(p.name for p in root.glob("*.toml"))  # the project root holds the project's pyproject.toml

# %%
assert root is not None and (root / "nbs").is_dir()
test_eq(project_root(tempfile.gettempdir()), None)


# %%
#| export
def _env_path(var: str) -> Path | None:
    v = os.environ.get(var, "").strip()
    return Path(v).expanduser() if v else None

def data_dir(path: Path | str | None = None, required: bool = False) -> Path | None:
    "The full-datasets folder: `path` if given, else `$SAGEREC_DATA`, else `None` (embedded data only)."
    p = Path(path).expanduser() if path not in (None, "") else _env_path("SAGEREC_DATA")
    if p is None:
        check(not required, "No data folder is set. Point SAGEREC_DATA (or the notebook parameter `data_dir`) "
                            "at a folder holding beauty/, toys/ and ml-1m/ (the prepared copy or the official raw files).")
        return None
    check(p.is_dir(), f"The data folder {str(p)!r} (from {'the argument' if path else 'SAGEREC_DATA'}) does not exist "
                      "or is not a folder. Set SAGEREC_DATA to the folder that holds beauty/, toys/ and ml-1m/.")
    return p.resolve()

_NO_CACHE: dict[str, Path] = {}  # unusable cache folder -> the temporary folder used instead, for this process

def cache_dir(sub: str = "") -> Path:
    "A cache folder (`$SAGEREC_CACHE` or `~/.cache/sagerec`), with optional subfolder `sub`, created on demand."
    base = _env_path("SAGEREC_CACHE") or Path.home() / ".cache" / "sagerec"
    p = _NO_CACHE.get(str(base), base) / sub
    try:
        p.mkdir(parents=True, exist_ok=True)
        check(os.access(p, os.W_OK), "not writable")
    except (OSError, SageRecError) as e:  # run uncached (a temporary folder of this process) rather than not at all
        import tempfile, warnings
        tmp = _NO_CACHE.setdefault(str(base), Path(tempfile.mkdtemp(prefix="sagerec-nocache-")))
        warnings.warn(f"The cache folder {str(base)!r} cannot be used ({type(e).__name__}: {e}); running without a cache "
                      f"(nothing is kept after this process). Point SAGEREC_CACHE at a writable folder.", stacklevel=2)
        p = tmp / sub; p.mkdir(parents=True, exist_ok=True)
    return p

def _project_sub(var: str, name: str) -> Path:
    p = _env_path(var) or (project_root() or Path.cwd()) / name
    p.mkdir(parents=True, exist_ok=True)
    return p

def figures_dir() -> Path:
    "Where `save_fig` writes: `$SAGEREC_FIGURES`, else `figures/` at the project root."
    return _project_sub("SAGEREC_FIGURES", "figures")

def runs_dir() -> Path:
    "Where runs are recorded: `$SAGEREC_RUNS`, else `runs/` at the project root (git-ignored)."
    return _project_sub("SAGEREC_RUNS", "runs")

def rel_path(path: Path | str) -> str:
    "`path` as shown to a reader: relative to the project root (or the home folder) when inside it, so outputs carry no developer paths."
    p = Path(path).expanduser()
    try: p = p.resolve()
    except OSError: pass
    for base, show in ((project_root(), ""), (Path.home(), "~")):
        if base is None: continue
        try: r = p.relative_to(base.resolve())
        except ValueError: continue
        return str(Path(show) / r) if show else (str(r) if str(r) != "." else ".")
    return str(p)


# %% [markdown]
# A data setting that points nowhere is an error at once, not a confusing failure three stages later:

# %%
test_fail(lambda: data_dir("/no/such/folder"), contains="does not exist")
test_fail(lambda: data_dir(None, required=True) if not os.environ.get("SAGEREC_DATA") else check(False, "No data folder"),
          contains="No data folder")
with tempfile.TemporaryDirectory() as d:
    test_eq(data_dir(d), Path(d).resolve())

# %% [markdown]
# Paths shown in outputs are relative to the project, so stored notebooks and the site carry no developer's
# folders; a cache folder that cannot be used (a file in the way, no permission) makes a run uncached, with a
# warning, instead of stopping it.

# %%
import warnings
rel_path(root / "runs" / "quickstart")

# %%
test_eq(rel_path(root / "runs" / "quickstart"), "runs/quickstart")
with tempfile.TemporaryDirectory() as d, warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always"); _before = os.environ.get("SAGEREC_CACHE")
    (Path(d) / "a-file").write_text("x"); os.environ["SAGEREC_CACHE"] = str(Path(d) / "a-file" / "cache")
    try: c = cache_dir("datasets")
    finally:
        if _before is None: del os.environ["SAGEREC_CACHE"]
        else: os.environ["SAGEREC_CACHE"] = _before
    assert c.is_dir() and "running without a cache" in str(w[0].message)


# %% [markdown]
# ## Cache keys and atomic writes
#
# Caches are keyed by a fingerprint of everything that determines their content, and written atomically
# (to a temporary name, then renamed) so an interrupted run never leaves a half-written file that a later
# run would trust.

# %%
#| export
def fingerprint(*parts: Any, n: int = 16) -> str:
    "A short, stable hex digest of `parts` (strings, numbers, bytes, arrays, dicts, lists, dataclasses)."
    h = hashlib.sha256()
    def feed(x):
        if is_dataclass(x) and not isinstance(x, type): x = asdict(x)
        if isinstance(x, bytes): h.update(b"b"); h.update(x)
        elif isinstance(x, np.ndarray): h.update(b"a"); h.update(str((x.dtype, x.shape)).encode()); h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict): h.update(b"d"); [feed((str(k), x[k])) for k in sorted(x, key=str)]
        elif isinstance(x, (list, tuple)): h.update(b"l%d" % len(x)); [feed(v) for v in x]
        else: h.update(b"s"); h.update(repr(x).encode("utf-8")); h.update(b"\0")
    for p in parts: feed(p)
    return h.hexdigest()[:n]

def atomic_write(path: Path | str, write) -> Path:
    "Call `write(tmp_path)` then rename the temporary file onto `path`, so readers never see a partial file."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp); os.replace(tmp, path)
    finally:
        if tmp.exists(): tmp.unlink()
    return path


# %%
fingerprint("all-MiniLM-L6-v2", 128, ["a", "b"])

# %%
test_eq(fingerprint("x", [1, 2]), fingerprint("x", [1, 2]))
assert fingerprint("x", [1, 2]) != fingerprint("x", [2, 1])
assert fingerprint(["ab", "c"]) != fingerprint(["a", "bc"])
assert fingerprint(np.arange(3)) != fingerprint(np.arange(3).astype(np.int32))


# %% [markdown]
# ## Seeds and devices

# %%
#| export
def seed_everything(seed: int) -> int:
    "Seed Python, NumPy and torch (CPU and CUDA); return `seed` so it can be recorded."
    random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
    if torch.cuda.is_available(): torch.cuda.manual_seed_all(seed)
    return seed

def pick_device(device: str | torch.device = "auto") -> torch.device:
    "`'auto'` picks CUDA when available, else CPU; any other value is checked and returned as a `torch.device`."
    if str(device) == "auto": return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try: dev = torch.device(device)
    except RuntimeError as e: raise SageRecError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from e
    check(dev.type != "cuda" or torch.cuda.is_available(), f"Device {device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'.")
    return dev


# %%
seed_everything(0); a = torch.rand(3)
seed_everything(0); test_eq(torch.rand(3), a)
pick_device("auto")

# %%
test_eq(pick_device("cpu").type, "cpu")
test_fail(lambda: pick_device("tpu9"), contains="Unknown device")


# %% [markdown]
# ## Figures
#
# `save_fig` writes `figures/<name>.png` and `.pdf` and leaves the figure open, so the notebook keeps it
# inline and the documentation shows it from the stored output.

# %%
#| export
def save_fig(name: str, fig=None, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> Path:
    "Save `fig` (default: the current figure) as `figures/<name>.<fmt>` for each format; return the PNG path."
    import matplotlib.pyplot as plt
    check(bool(name) and "/" not in name and "\\" not in name, f"Figure name {name!r} must be a plain file stem like 'graph_degrees'.")
    fig = fig or plt.gcf()
    out = figures_dir()
    for fmt in formats:  # no creation date in the PDF, so an unchanged figure gives an unchanged file
        fig.savefig(out / f"{name}.{fmt}", dpi=dpi, bbox_inches="tight", metadata={"CreationDate": None} if fmt == "pdf" else None)
    return out / f"{name}.{formats[0]}"


# %%
_before = os.environ.get("SAGEREC_FIGURES")
with tempfile.TemporaryDirectory() as d:
    os.environ["SAGEREC_FIGURES"] = d
    fig, ax = plt.subplots(figsize=(3, 2)); ax.plot([0, 1], [0, 1])
    p = save_fig("demo", fig)
    assert p.exists() and p.stat().st_size > 0 and (Path(d) / "demo.pdf").exists()
if _before is None: del os.environ["SAGEREC_FIGURES"]
else: os.environ["SAGEREC_FIGURES"] = _before
plt.close(fig)
p.name


# %% [markdown]
# ## Recording runs
#
# Every notebook run gets a folder under `runs/` holding `params.json` (the resolved parameters and the
# environment: versions, device, git commit) and `metrics.json` (whatever the run measured). Result tables
# are built from these files, never typed in.

# %%
#| export
def _jsonable(x):
    if is_dataclass(x) and not isinstance(x, type): return asdict(x)
    if isinstance(x, Path): return str(x)
    if isinstance(x, (np.integer,)): return int(x)
    if isinstance(x, (np.floating,)): return float(x)
    if isinstance(x, np.ndarray): return x.tolist()
    if isinstance(x, torch.Tensor): return x.detach().cpu().tolist()
    if isinstance(x, torch.device): return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")

def environment_info() -> dict:
    "Versions, hardware and git commit, recorded beside every run."
    info = dict(python=sys.version.split()[0], platform=platform.platform(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), torch=torch.__version__, numpy=np.__version__,
                cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    try:
        root = project_root()
        if root: info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5).stdout.strip() or None
    except Exception: info["git_commit"] = None
    return info

def read_json(path: Path | str, way_on: str = "restore it, or delete the run folder to start afresh") -> Any:
    "Read a JSON file we wrote; a damaged one is a `SageRecError` naming the file, what is wrong and `way_on`."
    path = Path(path)
    try: return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SageRecError(f"{rel_path(path)} is damaged (not valid JSON: {e}): {way_on}.") from None

class RunRecorder:
    "Write `params.json` and `metrics.json` for one run into `runs/<name>/` (or `folder`); the folder is made at the first write."
    def __init__(self, name: str, folder: Path | str | None = None):
        check(bool(name) and "/" not in name and name.strip(".") != "", f"Run name {name!r} must be a plain folder name.")
        self.dir = Path(folder) if folder else runs_dir() / name
        self.params: dict = {}; self.metrics: dict = {}
        mp = self.dir / "metrics.json"
        if mp.exists(): self.metrics = read_json(mp)  # a resumed run keeps what it recorded

    def _dump(self, fname: str, d: dict) -> Path:
        return atomic_write(self.dir / fname, lambda t: t.write_text(json.dumps(d, indent=2, default=_jsonable, sort_keys=False)))

    def log_params(self, **params) -> Path:
        "Merge `params` into `params.json` (with `environment` info and the time added)."
        self.params.update(params)
        return self._dump("params.json", {**self.params, "environment": environment_info(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def log_metrics(self, **metrics) -> Path:
        "Merge `metrics` into `metrics.json`."
        self.metrics.update(metrics)
        return self._dump("metrics.json", self.metrics)

    def path(self, fname: str) -> Path:
        "A path inside the run folder (for checkpoints, figures, tables)."
        return self.dir / fname


# %%
with tempfile.TemporaryDirectory() as d:
    rec = RunRecorder("demo", folder=Path(d) / "demo")
    rec.log_params(dataset="beauty-mini", seed=0, lr=1e-3)
    rec.log_metrics(**{"test/ndcg@10": np.float32(0.05)}); rec.log_metrics(best_epoch=3)
    saved = json.loads((Path(d) / "demo" / "metrics.json").read_text())
    params = json.loads((Path(d) / "demo" / "params.json").read_text())
    (Path(d) / "demo" / "metrics.json").write_text('{"best_epoch": ')  # damaged, e.g. by a full disk outside our atomic writes
    test_fail(lambda: RunRecorder("demo", folder=Path(d) / "demo"), contains="metrics.json is damaged (not valid JSON")
saved, sorted(params)

# %%
test_close(saved["test/ndcg@10"], 0.05, eps=1e-6); test_eq(saved["best_epoch"], 3)
assert "environment" in params and params["seed"] == 0

# %%
#| hide
import nbdev; nbdev.nbdev_export()
