# %% [markdown]
# # Parameters
# > One check for the parameters of every notebook run (papermill `-p`, `-f` YAML, or the Python API): unknown names with a suggestion, types, ranges and choices, all reported together before any work starts.
#
# This is a library notebook: papermill runs the experiment notebooks that call this check (`nbs/train.ipynb` and
# the others with a `parameters` cell), not this one, so it has no `parameters` cell of its own.

# %%
#| default_exp params

# %%
#| export
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union

from sagerec.core import RunRecorder, SageRecError, check, read_json, rel_path

# %%
#| hide
import tempfile
from fastcore.test import test_eq, test_fail


# %% [markdown]
# ## Where the rules come from
#
# Nothing here lists the parameters of a notebook by hand, so a new parameter needs no upkeep in this module:
#
# - **names**: the annotated assignments of the notebook's `parameters` cell (`dim: int = 50`). Any other plain
#   value in the notebook's namespace was put there by papermill (an `-p` or `-f` name that the notebook does
#   not have, which papermill only mentions on stderr) and is rejected, with the closest known name as a hint.
# - **types**: a parameter that is also a field of a configuration dataclass (`ModelConfig`, `TrainConfig`, ...)
#   takes the field's type; the others take their annotation in the parameters cell.
# - **ranges and choices**: the dataclasses' own `__post_init__` checks, run now on the parameters rather than
#   after the data, embeddings and graph were built; a field may also carry `field(metadata={"check": fn})`. The
#   notebook's own parameters (dataset, variant, run name, ...) are checked by the small table `RUN_CHECKS`.
#
# A value is converted only where the meaning is unambiguous: `2.0` is the whole number `2`, the text `"1e-3"`
# (what YAML makes of `lr: 1e-3`) is the number 0.001, a YAML list is a tuple where a tuple is expected.
# `2.5` epochs, `"abc"` as a width, or `-2` threads are errors that name the parameter.

# %%
#| export
class BadValue(Exception):
    "A value that does not fit its type or range (the message leaves out the parameter's name)."

_PLAIN = (bool, int, float, str, list, tuple, dict, type(None))

def _type_name(tp) -> str:
    if tp is type(None) or tp is None: return "None"
    if tp is bool: return "True or False"
    if tp is int: return "a whole number"
    if tp is float: return "a number"
    if tp is str: return "a text"
    o, a = typing.get_origin(tp), typing.get_args(tp)
    if o in (Union, types.UnionType): return " or ".join(_type_name(x) for x in sorted(a, key=lambda x: x is type(None)))
    if o is Literal: return "one of " + ", ".join(map(repr, a))
    if o in (tuple, list): return f"a list of {len(a)} values" if o is tuple and a and a[-1] is not Ellipsis else "a list"
    return getattr(tp, "__name__", str(tp))

def coerce(value: Any, tp: Any) -> Any:
    "`value` as type `tp` where the meaning is unambiguous (2.0 -> 2, '1e-3' -> 0.001, [a, b] -> (a, b)); else raise `BadValue`."
    o, a = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object or isinstance(tp, (str, typing.TypeVar)): return value  # unknown annotation: accepted as is
    if tp is type(None) or tp is None:
        if value is None: return None
        raise BadValue("must be None")
    if o in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip() in ("None", "null", "~")):
            if type(None) in a: return None
        for t in sorted(a, key=lambda x: x is type(None)):
            try: return coerce(value, t)
            except BadValue: pass
        raise BadValue(f"must be {_type_name(tp)}")
    if o is Literal:
        if value in a: return value
        raise BadValue(f"must be {_type_name(tp)}")
    if tp is bool:
        if isinstance(value, bool): return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"): return value.strip().lower() == "true"
        raise BadValue("must be True or False")
    if tp is int:
        if isinstance(value, bool): raise BadValue("must be a whole number, not True/False")
        if isinstance(value, int): return value
        if isinstance(value, float) and value.is_integer(): return int(value)
        if isinstance(value, str):
            try: return int(value.strip().replace("_", ""))
            except ValueError: pass
        raise BadValue("must be a whole number" + (", not a fraction" if isinstance(value, float) else ""))
    if tp is float:
        v = None
        if isinstance(value, (int, float)) and not isinstance(value, bool): v = float(value)
        elif isinstance(value, str):
            try: v = float(value.strip())
            except ValueError: pass
        if v is None: raise BadValue("must be a number")
        if math.isnan(v): raise BadValue("must be a number, not NaN")
        return v
    if tp is str:
        if isinstance(value, str): return value
        if isinstance(value, int) and not isinstance(value, bool): return str(value)  # e.g. a run name 2024
        raise BadValue("must be a text")
    if tp is tuple or o is tuple:
        if not isinstance(value, (list, tuple)): raise BadValue(f"must be {_type_name(tp)}")
        if a and a[-1] is not Ellipsis:
            if len(value) != len(a): raise BadValue(f"must be {_type_name(tp)}")
            return tuple(coerce(v, t) for v, t in zip(value, a))
        return tuple(coerce(v, a[0]) for v in value) if a else tuple(value)
    if tp is list or o is list:
        if not isinstance(value, (list, tuple)): raise BadValue("must be a list")
        return [coerce(v, a[0]) for v in value] if a else list(value)
    if tp is dict or o is dict:
        if not isinstance(value, dict): raise BadValue("must be a mapping")
        return value
    if isinstance(tp, type) and not isinstance(value, tp): raise BadValue(f"must be {_type_name(tp)}")
    return value


# %%
[coerce(2.0, int), coerce("1e-3", float), coerce([0.9, 0.98], tuple[float, float]), coerce("None", typing.Optional[int]), coerce("false", bool)]

# %%
test_eq([coerce(2.0, int), coerce("1e-3", float), coerce([0.9, 0.98], tuple[float, float])], [2, 0.001, (0.9, 0.98)])
test_eq(coerce(None, int | None), None); test_eq(coerce(3, float | None), 3.0); test_eq(coerce(1, float), 1.0)
for v, t in [(2.5, int), ("abc", int), (True, int), ("abc", float), (float("nan"), float), ("maybe", bool), (1, bool),
             (1.5, str), ([1], tuple[float, float]), ("x", typing.Optional[int])]:
    test_fail(lambda: coerce(v, t), contains="must be")


# %% [markdown]
# ## Parameters and their checks
#
# A `Param` is a name, a type, a default and an optional check (a function that returns a complaint, or `None`
# when the value is fine). `config_params` reads them off a dataclass; `check_fields` is what every configuration
# dataclass calls first in its `__post_init__`, so the Python API converts and checks types exactly as a notebook
# run does.

# %%
#| export
@dataclass
class Param:
    "One parameter: its type, default, where it comes from, and an optional check returning a complaint or None."
    name: str
    type: Any = Any
    default: Any = None
    owner: str = ""                                     # the dataclass that defines it ('' = the notebook's own)
    check: Callable[[Any], str | None] | None = None

def one_of(*choices) -> Callable[[Any], str | None]:
    "A check: the value is one of `choices`."
    return lambda v: None if v in choices else f"must be one of {', '.join(map(repr, choices))}"

def at_least(lo, optional: bool = False) -> Callable[[Any], str | None]:
    "A check: the value is >= `lo` (or None, when `optional`)."
    return lambda v: None if (v is None and optional) or (v is not None and v >= lo) else f"must be >= {lo}" + (" (or None)" if optional else "")

def within(lo, hi, optional: bool = False) -> Callable[[Any], str | None]:
    "A check: lo <= value <= hi (or None, when `optional`)."
    return lambda v: None if (v is None and optional) or (v is not None and lo <= v <= hi) else f"must be between {lo} and {hi}" + (" (or None)" if optional else "")

def folder_name(v) -> str | None:
    "A check: a plain folder name (no separators, not '.' or '..')."
    if v is None: return None
    if not v.strip() or v.strip(".") == "" or any(c in v for c in "/\\\0") or v != v.strip():
        return "must be a plain folder name such as 'beauty-sagerec-s0' (no '/', not '.' or '..', no surrounding spaces)"
    return None

def config_params(cls) -> dict[str, Param]:
    "The fields of dataclass `cls` as `Param`s (type from the annotation, default, `metadata['check']` if any)."
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        d = f.default if f.default is not dataclasses.MISSING else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out[f.name] = Param(f.name, hints.get(f.name, Any), d, cls.__name__, f.metadata.get("check"))
    return out

def check_fields(obj) -> None:
    "Convert every field of dataclass instance `obj` to its declared type, in place; one `SageRecError` naming every bad field."
    bad = []
    for name, p in config_params(type(obj)).items():
        v = getattr(obj, name)
        try: v = coerce(v, p.type)
        except BadValue as e: bad.append(f"{name}={v!r} {e}"); continue
        if p.check and (msg := p.check(v)): bad.append(f"{name}={v!r} {msg}"); continue
        object.__setattr__(obj, name, v)
    check(not bad, f"{type(obj).__name__}: " + "; ".join(bad) + ".")


# %%
@dataclass
class Demo:
    "A toy configuration."
    epochs: int = 3
    lr: float = 1e-3
    mode: str = dataclasses.field(default="a", metadata={"check": one_of("a", "b")})
    def __post_init__(self):
        check_fields(self)
        check(self.epochs >= 1, f"Demo.epochs must be >= 1, got {self.epochs}.")

Demo(epochs=2.0, lr="1e-2")

# %%
test_eq((Demo(epochs=2.0).epochs, Demo(lr="1e-2").lr), (2, 0.01))
test_fail(lambda: Demo(epochs=2.5, lr="abc"), contains="Demo: epochs=2.5 must be a whole number, not a fraction; lr='abc' must be a number.")
test_fail(lambda: Demo(mode="c"), contains="mode='c' must be one of 'a', 'b'")


# %% [markdown]
# ## Validating a set of parameters
#
# `validate` checks a dict of values against a schema and reports **every** problem in one line: unknown names
# (with the closest known name, from `difflib`), values of the wrong type, values out of range. The schema's
# configuration dataclasses are then built from the values, so their `__post_init__` checks run now; when one
# fails, each changed field is tried alone to name every bad one, not only the first.

# %%
#| export
def did_you_mean(name: str, known) -> str:
    "' (did you mean 'epochs'?)' for the closest name in `known`, or ''."
    m = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6) or difflib.get_close_matches(name.lower().replace("-", "_"), list(known), n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""

def _config_problems(cls, kw: dict) -> list[str]:
    "Problems the `__post_init__` of `cls` finds in the fields `kw` (each changed field alone, when together they fail)."
    try: cls(**kw); return []
    except SageRecError as e: together = str(e)
    defaults = config_params(cls)
    alone = []
    for k, v in kw.items():
        if v == defaults[k].default: continue
        try: cls(**{k: v})
        except SageRecError as e:
            if str(e) not in alone: alone.append(str(e))
    return alone or [together]

def _run_check(fn, v) -> str | None:
    try: return fn(v)
    except TypeError: return None  # a check written for another type of parameter (e.g. `threads` as a list of counts)

def validate(values: dict, schema: dict[str, Param], configs=(), what: str = "parameter") -> dict:
    "`values` converted and checked against `schema` and the `configs` dataclasses; one `SageRecError` listing every problem."
    problems = [f"unknown {what} {k!r}{did_you_mean(k, schema)}" for k in values if k not in schema]
    out = {}
    for name, p in schema.items():
        v = values.get(name, p.default)
        try: v = coerce(v, p.type)
        except BadValue as e: problems.append(f"{name}={v!r} {e}"); continue
        if p.check and (msg := _run_check(p.check, v)): problems.append(f"{name}={v!r} {msg}"); continue
        out[name] = v
    for cls in configs:  # fields already found bad are left at their defaults here, so they are not reported twice
        names = {f.name for f in dataclasses.fields(cls)}
        problems += _config_problems(cls, {k: v for k, v in out.items() if k in names})
    problems = [p.rstrip(".") for p in problems]
    check(not problems, f"Bad {what}{'s' if len(problems) > 1 else ''}: " + "; ".join(problems) + ". Nothing was run or written.")
    return out


# %%
schema = {**config_params(Demo), "run_name": Param("run_name", str | None, None, check=folder_name)}
try: validate({"epoch": 1, "batchsize": 64, "lr": -1, "run_name": "."}, schema, configs=[Demo])
except SageRecError as e: msg = str(e)
msg

# %%
assert "unknown parameter 'epoch' (did you mean 'epochs'?)" in msg and "run_name='.' must be a plain folder name" in msg
test_eq(validate({"epochs": "4", "lr": 1}, schema, configs=[Demo]), {"epochs": 4, "lr": 1.0, "mode": "a", "run_name": None})
test_fail(lambda: validate({"epochs": 0}, schema, configs=[Demo]), contains="Demo.epochs must be >= 1, got 0")
test_eq(did_you_mean("batchsize", ["batch_size", "lr"]), " (did you mean 'batch_size'?)")


# %% [markdown]
# ## A notebook's parameters
#
# `notebook_params(globals(), ...)` is the first call after the `parameters` cell of every papermill notebook
# (`train.ipynb`, the benchmarks, the index). papermill puts the values of `-p` and `-f` in a cell right after
# the `parameters` cell, so by then the namespace holds the defaults, the given values and any unknown names.
# The result is the converted values; the notebook writes them back (`globals().update(...)`), so `epochs: 2.0`
# in a YAML file becomes `2` everywhere.
#
# `RUN_CHECKS` holds the checks of the notebooks' own parameters (those that are not configuration fields).
# Parameters are lower-case names; an upper-case name (`VARIANTS`) is a constant of the notebook, not a parameter.

# %%
#| export
def _dataset_names():
    from sagerec.data import DATASETS
    return tuple(DATASETS)

def _dataset(v) -> str | None:
    names = _dataset_names()
    if v.startswith("synthetic-") and v.split("-", 1)[1].isdigit(): return None  # sagerec.synthetic catalogues (scale benchmarks)
    return None if v in names else f"is not a dataset; use one of {', '.join(map(repr, names))}{did_you_mean(v, names)}"

def _device(v) -> str | None:
    from sagerec.core import pick_device
    try: pick_device(v); return None
    except SageRecError as e: return f"cannot be used: {e}"

def _text_model(v) -> str | None:
    return "must be a sentence-transformers model name or folder (or None for the packaged one)" if v is not None and not v.strip() else None

RUN_CHECKS: dict[str, Callable[[Any], str | None]] = {  # the experiment notebooks' own parameters
    "dataset": _dataset, "device": _device, "run_name": folder_name, "text_model": _text_model,
    "text_max_length": at_least(1), "k": at_least(1), "tau": within(-1.0, 1.0, optional=True), "seed": within(0, 2**32 - 1),
    "sampled_seed": within(0, 2**32 - 1), "num_threads": at_least(1, optional=True), "epochs": at_least(1),
    "adam_beta2": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
}

def _is_injected(name: str, value, known) -> bool:
    "A plain value in a notebook's namespace that no parameter declares: put there by papermill (CONSTANTS are the notebook's own)."
    if name.startswith("_") or name in ("In", "Out") or not isinstance(value, _PLAIN): return False
    return not name.isupper() or name.lower() in known  # `-p EPOCHS 3` is still caught

def notebook_params(g: dict, configs=(), checks: dict | None = None) -> dict:
    "Validate the parameters of the running notebook from its namespace `g` (call with `globals()` right after the parameters cell)."
    ann = g.get("__annotations__") or {}
    check(bool(ann), "notebook_params: the parameters cell must annotate its parameters (`name: type = default`).")
    fields = {}
    for cls in configs:
        for n, p in config_params(cls).items(): fields.setdefault(n, p)
    checks = {**RUN_CHECKS, **(checks or {})}
    schema = {}
    for name, tp in ann.items():
        if isinstance(tp, str):  # postponed annotations (`from __future__ import annotations`): evaluate them here
            try: tp = eval(tp, {**vars(typing), **g})
            except Exception: tp = Any
        p = fields.get(name)
        schema[name] = Param(name, p.type if p else tp, None, p.owner if p else "", checks.get(name) if not p or not p.check else p.check)
    values = {k: v for k, v in g.items() if k in ann or _is_injected(k, v, ann)}
    return validate(values, schema, configs=configs)


# %%
ns = {}
exec("from typing import Optional\nepochs: int = 3\nlr: float = 1e-3\nrun_name: Optional[str] = None\n", ns)  # the parameters cell
exec("epoch = 5\nlr = 'abc'\n", ns)                                                                          # what papermill injects
try: notebook_params(ns, configs=[Demo])
except SageRecError as e: msg = str(e)
msg

# %%
test_eq(msg, "Bad parameters: unknown parameter 'epoch' (did you mean 'epochs'?); lr='abc' must be a number. Nothing was run or written.")
ns["lr"] = 1; del ns["epoch"]
test_eq(notebook_params(ns, configs=[Demo]), {"epochs": 3, "lr": 1.0, "run_name": None})

# %% [markdown]
# ## The run folder, before anything is written
#
# A run folder that already holds a run (`last.pt` or `metrics.json`) is continued only under the settings it was
# started with. `check_run_folder` compares them with the stored `params.json` and refuses, naming each setting
# that differs, **before** anything in the folder is touched; it also reads the stored files, so a damaged
# `params.json`, `metrics.json` or `last.pt` is reported now with the way on. `may_change` are the parameters a
# continued run may change (more epochs, another patience, the device, threads, progress bars).

# %%
#| export
MAY_CHANGE = ("epochs", "patience", "device", "num_threads", "progress", "eval_batch_size", "resume", "data_dir", "output_dir", "run_name",
              "sampled_seed")

def check_run_folder(folder: Path | str, params: dict, resume: bool = True, may_change=MAY_CHANGE) -> str:
    "'new', 'resume' or 'replace' for run folder `folder` under `params`; a `SageRecError` when it holds another run."
    folder = Path(folder); where = rel_path(folder)
    if folder.exists() and not folder.is_dir(): raise SageRecError(f"{where} exists and is not a folder: choose another run_name.")
    started = folder.is_dir() and any((folder / f).exists() for f in ("last.pt", "metrics.json", "best.pt"))
    if not started: return "new"
    if not resume: return "replace"
    ways = (f"use another run_name, pass resume=False (-p resume False) to start afresh and replace it, or delete {where}")
    saved = read_json(folder / "params.json", way_on=ways) if (folder / "params.json").exists() else None
    check(saved is not None, f"{where} holds a run but no params.json, so its settings are unknown: {ways}.")
    diff = [f"{k} {saved.get(k, '(unset)')!r} -> {v!r}" for k, v in params.items() if k not in may_change and k in saved and saved[k] != v]
    new = [k for k, v in params.items() if k not in may_change and k not in saved and v is not None]
    check(not diff, f"{where} holds a run with other settings ({'; '.join(diff)}; saved -> now): {ways}.")
    if new: import warnings; warnings.warn(f"{where} was started before the parameter(s) {', '.join(new)} existed; continuing it.", stacklevel=2)
    if (folder / "metrics.json").exists(): read_json(folder / "metrics.json", way_on=ways)
    if (folder / "last.pt").exists():
        from sagerec.training import load_checkpoint
        load_checkpoint(folder / "last.pt")  # a damaged file is reported here, with the way on
    return "resume"


# %%
#| export
def start_run(folder: Path | str, state: str, params: dict, **extra) -> RunRecorder:
    "Start recording a checked run (`state` from `check_run_folder`): `params.json` is written now and only now; a resumed run keeps its own."
    folder = Path(folder)
    if state == "replace":  # resume=False on a folder that holds a run: its files go only now, when the new run starts
        for f in ("best.pt", "last.pt", "metrics.json", "params.json", "learning_curve.png"): (folder / f).unlink(missing_ok=True)
    rec = RunRecorder(folder.name, folder=folder)
    if state == "resume": rec.params = read_json(folder / "params.json")
    else: rec.log_params(**params, **extra)
    return rec


# %%
d = Path(tempfile.mkdtemp()) / "run"
test_eq(check_run_folder(d, {"dim": 50}), "new")
d.mkdir(); (d / "params.json").write_text(json.dumps({"dim": 50, "epochs": 8})); (d / "metrics.json").write_text("{}")
test_eq(check_run_folder(d, {"dim": 50, "epochs": 20}), "resume")
test_eq(check_run_folder(d, {"dim": 64}, resume=False), "replace")
try: check_run_folder(d, {"dim": 64, "epochs": 8})
except SageRecError as e: msg = str(e).replace(str(d), "<run folder>")
msg

# %%
assert "other settings (dim 50 -> 64; saved -> now)" in msg and "resume=False" in msg
test_eq(json.loads((d / "params.json").read_text()), {"dim": 50, "epochs": 8})  # refused: the folder is untouched
rec = start_run(d, "resume", {"dim": 50, "epochs": 20})
test_eq(json.loads((d / "params.json").read_text()), {"dim": 50, "epochs": 8})  # a continued run keeps its record
rec = start_run(d, "replace", {"dim": 64})
test_eq((json.loads((d / "params.json").read_text())["dim"], (d / "metrics.json").exists()), (64, False))
(d / "metrics.json").write_text('{"history": [')
test_fail(lambda: check_run_folder(d, {"dim": 64}), contains="metrics.json is damaged")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
