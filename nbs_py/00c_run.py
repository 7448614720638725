# %% [markdown]
# # Running a notebook
# > `python -m sagerec.run`: papermill's run of a notebook, with papermill's arguments, that stops quietly on Ctrl-C: the running cell is interrupted, the kernel shut down cleanly, and one line says where the run is and how to go on.
#
# This is a library notebook: the runner it builds executes the experiment notebooks (those with a `parameters`
# cell, such as `nbs/train.ipynb`); papermill never runs this notebook itself, so it has no `parameters` cell.

# %%
#| default_exp run

# %%
#| export
from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

# %%
#| hide
import shutil, time
from fastcore.test import test_eq, test_fail


# %% [markdown]
# ## Why not plain papermill
#
# `papermill nbs/train.ipynb runs/x.ipynb ...` keeps working, and is what the runner calls. But pressing Ctrl-C
# during a run printed 42 lines (measured on Beauty, the no-graph variant, Ctrl-C in the training cell; the runner:
# the progress bar and one line): papermill's `Aborted!`, the kernel's
# `zmq.error.ZMQError: Socket operation on non-socket` traceback, nbclient's `Kernel died while waiting for execute
# reply` and asyncio's `Task exception was never retrieved` with another traceback. The cause: jupyter_client starts
# the kernel in its own session, so the terminal's Ctrl-C reaches only papermill; papermill then shuts the kernel
# down while the kernel is still inside the cell, the kernel's reply goes to a socket that is already closed, and
# the kernel logs that to the terminal it inherited.
#
# The runner does what Jupyter's stop button does instead:
#
# 1. the kernel's own output (its log, and anything it prints while dying) goes to a log file, not the terminal;
#    the file is shown only when the kernel died for another reason;
# 2. the first Ctrl-C is passed on to the kernel as an interrupt: the running cell stops with `KeyboardInterrupt`,
#    papermill saves the notebook and shuts the now idle kernel down normally. A Ctrl-C between cells stops the
#    run before the next cell;
# 3. one line names the run folder and how to go on, and the exit code is 130 (the shell's code for Ctrl-C).
#
# A second Ctrl-C stops waiting for the cell (papermill shuts the kernel down, and kills it after 5 s). Every other
# failure is papermill's own: a cell's error with its traceback (exit code 1), a dead kernel with nbclient's
# traceback and the kernel's log (exit code 138, as papermill's).
#
# ```
# python -m sagerec.run nbs/train.ipynb runs/quickstart.ipynb -p run_name quickstart
# python -m sagerec.run nbs/train.ipynb runs/beauty.ipynb -p dataset beauty -f configs/beauty.yaml
# ```
#
# A training run saves `last.pt` after every epoch (atomically), so after a Ctrl-C the same command continues
# from the last finished epoch. The runner learns the run folder from the notebook's printed line
# `run folder: <path>` (the train notebook prints it before any work).

# %% [markdown]
# ## The arguments: papermill's
#
# `NOTEBOOK OUTPUT` and papermill's parameter options, read in papermill's order (`-f` files, then `-y` strings, then
# `-p`, then `-r`; a later value wins) and typed by papermill's own rule: `-p epochs 3` is the number 3, `-p tau None`
# is None, `-r run_name 007` stays the text `'007'`. Also `-k` (kernel), `--cwd`, `--no-progress-bar` and
# `--log-output`, with papermill's meaning.

# %%
#| export
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    "The command line of `python -m sagerec.run`: papermill's `NOTEBOOK OUTPUT`, `-p`, `-r`, `-f`, `-y`, `-k`, `--cwd`."
    ap = argparse.ArgumentParser(prog="python -m sagerec.run",
                                 description="Run a notebook with papermill; Ctrl-C stops it cleanly with one line (exit code 130).")
    ap.add_argument("notebook", help="the notebook to run, e.g. nbs/train.ipynb")
    ap.add_argument("output", help="where the executed notebook is written, e.g. runs/quickstart.ipynb")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter, typed as papermill types it (True/False/None, whole number, number, else text)")
    ap.add_argument("-r", "--parameters_raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter kept as text")
    ap.add_argument("-f", "--parameters_file", action="append", default=[], metavar="YAML", help="a YAML file of parameters")
    ap.add_argument("-y", "--parameters_yaml", action="append", default=[], metavar="YAML", help="a YAML string of parameters")
    ap.add_argument("-k", "--kernel", default=None, help="the kernel's name (default: the notebook's)")
    ap.add_argument("--cwd", default=None, help="the working folder of the kernel")
    ap.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True, help="papermill's bar of cells")
    ap.add_argument("--log-output", action="store_true", help="also print the notebook's output (papermill's option)")
    a = ap.parse_args(argv)
    for f in a.parameters_file:
        if not Path(f).is_file(): ap.error(f"no parameters file {f!r}")
    return a

def notebook_parameters(args: argparse.Namespace) -> dict:
    "The parameters papermill's command line makes of `args`: `-f` files, then `-y` strings, then `-p`, then `-r`; a later value wins."
    import yaml
    from papermill.cli import _resolve_type  # papermill's typing of `-p` values
    from papermill.iorw import NoDatesSafeLoader, read_yaml_file
    out: dict = {}
    for f in args.parameters_file: out.update(read_yaml_file(f) or {})
    for y in args.parameters_yaml: out.update(yaml.load(y, Loader=NoDatesSafeLoader) or {})
    for name, value in args.parameters: out[name] = _resolve_type(value)
    for name, value in args.parameters_raw: out[name] = value
    return out


# %%
cfg = Path(tempfile.mkdtemp()) / "beauty.yaml"; cfg.write_text("epochs: 150\ndim: 50\nlr: 0.001\n")
args = parse_args(["nbs/train.ipynb", "runs/x.ipynb", "-p", "dataset", "beauty", "-f", str(cfg), "-p", "epochs", "3",
                   "-p", "tau", "None", "-p", "progress", "False", "-r", "run_name", "007", "-y", "lr: 1e-3"])
params = notebook_parameters(args)
params

# %%
test_eq(params, {"epochs": 3, "dim": 50, "lr": "1e-3", "dataset": "beauty", "tau": None, "progress": False, "run_name": "007"})
test_eq((args.notebook, args.output, args.kernel, args.progress_bar), ("nbs/train.ipynb", "runs/x.ipynb", None, True))
import contextlib, io
with contextlib.redirect_stderr(io.StringIO()) as said:  # argparse's usage error, as on the command line
    test_fail(lambda: parse_args(["a.ipynb", "b.ipynb", "-f", str(cfg) + ".missing"]), exc=SystemExit)
assert "error: no parameters file" in said.getvalue()


# %% [markdown]
# `-y 'lr: 1e-3'` gives the text `'1e-3'` (papermill's YAML reader keeps YAML 1.1, which needs a dot in a float);
# the train notebook's parameter check converts it (`sagerec.params.coerce`), for papermill and this runner alike.
#
# ## The kernel, its output in a file
#
# nbclient makes its kernel manager from a class it is given (`kernel_manager_class`, which papermill passes on);
# jupyter_client launches the kernel through `_async_launch_kernel`, whose keyword arguments reach `subprocess.Popen`.
# The subclass adds `stdout` and `stderr` there, and remembers the kernel it launched, so that Ctrl-C can be passed on.

# %%
#| export
class QuietKernelManager(AsyncKernelManager):
    "A kernel manager whose kernel writes its own output (log lines, a traceback while it shuts down) to `log_path`, not the terminal."
    log_path: str | None = None                  # set on a subclass per run (`quiet_kernel_manager`): nbclient makes the instance
    launched: "QuietKernelManager | None" = None  # the manager of the kernel last launched with this class

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        if self.log_path:
            with open(self.log_path, "ab") as log:  # the kernel keeps its own copy of the file
                kw.setdefault("stdout", log); kw.setdefault("stderr", subprocess.STDOUT)
                await super()._async_launch_kernel(kernel_cmd, **kw)
        else: await super()._async_launch_kernel(kernel_cmd, **kw)
        type(self).launched = self

def quiet_kernel_manager(log_path: str | Path) -> type[QuietKernelManager]:
    "A `QuietKernelManager` class whose kernels write to `log_path` (pass it to papermill as `kernel_manager_class`)."
    return type("QuietKernelManager", (QuietKernelManager,), {"log_path": str(log_path), "launched": None})

def interrupt_kernel(km: AsyncKernelManager | None) -> bool:
    "Send SIGINT to the kernel of `km` (as jupyter_client's interrupt does: its process group); False if there is no live kernel to interrupt."
    prov = getattr(km, "provisioner", None)
    proc = getattr(prov, "process", None)
    if proc is None or proc.poll() is not None: return False
    try:
        if km.kernel_spec.interrupt_mode != "signal": return False  # kernels interrupted by message: stop between cells
    except Exception: pass
    try:
        if getattr(prov, "pgid", None): os.killpg(prov.pgid, signal.SIGINT)
        else: proc.send_signal(signal.SIGINT)
        return True
    except OSError: return False


# %%
km_class = quiet_kernel_manager(Path(tempfile.mkdtemp()) / "kernel.log")
test_eq((km_class.__name__, issubclass(km_class, AsyncKernelManager), km_class.launched), ("QuietKernelManager", True, None))
test_eq((QuietKernelManager.log_path, interrupt_kernel(None)), (None, False))

# %% [markdown]
# ## The run
#
# `run_notebook` is `papermill.execute_notebook` with the quiet kernel, a SIGINT handler for the time of the run
# (in the main thread; the previous handler is restored), a hook that stops before the next cell once Ctrl-C was
# pressed, and a reader of the notebook's output that keeps its `run folder:` line. A stopped run raises
# `Interrupted`, a `KeyboardInterrupt` whose message is the one line; so a script that runs several notebooks and
# does not catch it still stops.

# %%
#| export
EXIT_INTERRUPTED = 130  # the shell's exit code for a program stopped by Ctrl-C (128 + SIGINT)
RUN_FOLDER = re.compile(r"^run folder: (.+?)(?= \(|  |\s*$)", re.M)  # the line the train notebook prints before any work

class Interrupted(KeyboardInterrupt):
    "A notebook run stopped by Ctrl-C (SIGINT); the message says where it stopped and how to go on."

class _NoNextCell(Exception):
    "Raised by the cell-start hook after Ctrl-C: a plain exception, which papermill and nbclient let through as it is."

class _Watch:
    "Ctrl-C during a run: the first interrupts the kernel (or stops before the next cell), a second stops waiting."
    def __init__(self, km_class):
        self.km_class, self.presses, self.cell, self.n_cells, self.run_folder, self._line = km_class, 0, None, None, None, ""
        self.replied_error: str | None = None; self.replied_value = ""
    def on_signal(self, signum, frame):
        self.presses += 1
        if self.presses == 1: interrupt_kernel(self.km_class.launched); return
        for name in ("papermill", "nbclient", "asyncio", "traitlets"): logging.getLogger(name).disabled = True
        raise KeyboardInterrupt  # papermill shuts the kernel down (and kills it after 5 s); its log stays in the file
    def on_cell_start(self, cell, cell_index):
        self.cell, self.replied_error, self.replied_value = cell_index, None, ""  # a reply names only its own cell's error
        if self.presses: raise _NoNextCell()  # pressed between cells: no next cell
    def on_cell_error(self, cell, cell_index, execute_reply):  # the kernel's execute reply names the cell's error
        content = (execute_reply or {}).get("content") or {}
        self.replied_error, self.replied_value = content.get("ename"), str(content.get("evalue", ""))
    def write(self, text: str):  # papermill's `stdout_file`: the notebook's printed output, as it comes
        text = self._line + text
        for m in RUN_FOLDER.finditer(text): self.run_folder = m.group(1).strip()
        self._line = text.rsplit("\n", 1)[-1][-2000:]
    def flush(self): pass

def _project_root(start: Path) -> Path | None:
    "`sagerec.core.project_root`, without importing torch: paths the notebooks print are relative to it."
    for d in [start, *start.parents]:
        f = d / "pyproject.toml"
        if f.exists() and 'name = "sagerec"' in f.read_text(encoding="utf-8"): return d
    return None

def stopped_message(run_folder: str | None, cwd: str | Path | None = None, cell: int | None = None,
                    n_cells: int | None = None, output: str | None = None) -> str:
    "The one line printed after Ctrl-C: the run folder and how to go on, else the cell the run stopped at."
    if run_folder:
        here = Path(cwd or ".").resolve()
        f = Path(run_folder).expanduser()
        f = f if f.is_absolute() else (_project_root(here) or here) / f
        if (f / "last.pt").exists():
            return (f"Stopped by Ctrl-C: {run_folder} keeps its last finished epoch (last.pt); "
                    f"run the same command again to continue from there.")
        return f"Stopped by Ctrl-C before {run_folder} saved a checkpoint; run the same command again to start the run."
    where = f" at cell {cell + 1}" + (f" of {n_cells}" if n_cells else "") if cell is not None else ""
    return f"Stopped by Ctrl-C{where}" + (f"; the notebook so far is in {output}." if output else ".")

def _interrupted(e: BaseException, replied_error: str | None = None) -> bool:
    "`e` is the end of a run stopped by Ctrl-C: a KeyboardInterrupt here, or the cell's KeyboardInterrupt in the kernel."
    if isinstance(e, (KeyboardInterrupt, _NoNextCell)): return True
    ename = getattr(e, "ename", None)
    # papermill names the error from the cell's error output; when that output never reached the notebook (the kernel
    # replied before its IOPub message was read, as on a loaded machine) it says "CellExecutionError" with no traceback,
    # and the kernel's execute reply, kept by `_Watch.on_cell_error`, is what names the error
    return ename == "KeyboardInterrupt" or (ename == "CellExecutionError" and replied_error == "KeyboardInterrupt")

def _dead_kernel(e: BaseException) -> bool:
    from nbclient.exceptions import DeadKernelError
    while e is not None:
        if isinstance(e, DeadKernelError): return True
        e = e.__cause__ or e.__context__
    return False

def run_notebook(notebook: str | Path, output: str | Path, parameters: dict | None = None, *, kernel_name: str | None = None,
                 cwd: str | Path | None = None, progress_bar: bool = True, log_output: bool = False, **papermill_kwargs):
    "Run `notebook` with `papermill.execute_notebook`, quiet on Ctrl-C (raises `Interrupted` with the one line); returns the executed notebook."
    import papermill as pm
    fd, log = tempfile.mkstemp(prefix="sagerec-kernel-", suffix=".log"); os.close(fd)
    km_class = quiet_kernel_manager(log)
    watch = _Watch(km_class)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, watch.on_signal) if main else None
    try:
        return pm.execute_notebook(str(notebook), str(output), parameters=parameters or {}, kernel_name=kernel_name, cwd=cwd,
                                   progress_bar=progress_bar, log_output=log_output, stdout_file=watch,
                                   kernel_manager_class=km_class, on_cell_start=watch.on_cell_start,
                                   on_cell_error=watch.on_cell_error, **papermill_kwargs)
    except BaseException as e:
        if (watch.presses or isinstance(e, KeyboardInterrupt)) and _interrupted(e, watch.replied_error):
            raise Interrupted(stopped_message(watch.run_folder, cwd, watch.cell, _n_cells(output), str(output))) from None
        _explain(e, watch, log)
        raise
    finally:
        if main: signal.signal(signal.SIGINT, previous)
        Path(log).unlink(missing_ok=True)

def _explain(e: BaseException, watch: _Watch, log: str | Path | None = None):
    "Add to `e` what papermill's error leaves out: a dead kernel's own output, or the kernel's reply to a cell whose error output was lost."
    note = None
    if _dead_kernel(e) and log and (text := Path(log).read_text(errors="replace").strip()):  # its last words say why
        note = f"The kernel's own output:\n{text}"
    elif getattr(e, "ename", None) == "CellExecutionError" and not getattr(e, "traceback", None) and watch.replied_error:
        note = f"The cell's error output did not reach the notebook; the kernel replied: {watch.replied_error}: {watch.replied_value}"
    if note is None: return
    if hasattr(e, "add_note"): e.add_note(note)  # shown after the traceback (Python >= 3.11)
    else: print(note, file=sys.stderr)

def _n_cells(output) -> int | None:
    try:
        import nbformat
        return len(nbformat.read(str(output), as_version=4).cells)
    except Exception: return None

def main(argv: list[str] | None = None) -> int:
    "`python -m sagerec.run NOTEBOOK OUTPUT [-p NAME VALUE] [-f YAML] ...`; the exit code: 0, 130 after Ctrl-C, 138 for a dead kernel."
    args = parse_args(argv)
    try:
        run_notebook(args.notebook, args.output, notebook_parameters(args), kernel_name=args.kernel, cwd=args.cwd,
                     progress_bar=args.progress_bar, log_output=args.log_output)
    except Interrupted as e:
        print(e, file=sys.stderr); return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # before the run started
        print("Stopped by Ctrl-C before the notebook ran.", file=sys.stderr); return EXIT_INTERRUPTED
    except Exception as e:
        if not _dead_kernel(e): raise  # a cell's error and anything else: papermill's own message and traceback
        traceback.print_exc(); return 138  # as papermill's command line does for a dead kernel
    return 0

if __name__ == "__main__" and "__file__" in globals(): sys.exit(main())  # python -m sagerec.run (not when a notebook runs this cell)

# %% [markdown]
# ## Ctrl-C, measured
#
# A small notebook prints its run folder, saves a `last.pt` there, and then waits in a long cell. The runner is
# started as from a shell, in its own process group, and Ctrl-C is sent to that group (what the terminal does) once
# the long cell has begun. What reaches the terminal is the progress bar and the one line; the exit code is 130.
# The kernel's cell ended with `KeyboardInterrupt`, which the saved notebook shows. `tests/test_run.py` does the same
# with the train notebook, and runs the same command again to finish the training.

# %%
import json, nbformat
demo = Path(tempfile.mkdtemp()); marker = demo / "started"
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in [
    f"from pathlib import Path\nrun = Path({str(demo / 'demo-run')!r}); run.mkdir(); (run / 'last.pt').write_bytes(b'')\nprint(f'run folder: {{run}} (new)')",
    f"import time\nPath({str(marker)!r}).touch()\ntime.sleep(300)",
    "print('never reached')"]], metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
nbformat.write(nb, demo / "demo.ipynb")
import sagerec
env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(sagerec.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
t0 = time.time()
p = subprocess.Popen([sys.executable, "-m", "sagerec.run", str(demo / "demo.ipynb"), str(demo / "out.ipynb")],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
while not marker.exists() and p.poll() is None and time.time() - t0 < 120: time.sleep(0.2)
os.killpg(p.pid, signal.SIGINT)
out, err = p.communicate(timeout=120)
saved = nbformat.read(demo / "out.ipynb", as_version=4)
lines = [l for l in re.split(r"[\r\n]+", err) if l.strip() and not l.startswith("Executing")]
print(f"exit code {p.returncode}; stderr besides the progress bar:"); print("\n".join(lines))
errors = [o.ename for c in saved.cells for o in c.get("outputs", []) if o.output_type == "error"]
print("the error in the saved notebook:", errors)

# %%
test_eq(p.returncode, EXIT_INTERRUPTED)
assert len(lines) == 1 and "keeps its last finished epoch (last.pt)" in lines[0] and "Traceback" not in err, err
test_eq(errors, ["KeyboardInterrupt"])  # the long cell's; papermill also marks it at the top of the saved notebook
shutil.rmtree(demo)

# %% [markdown]
# The line itself, for the three cases:

# %%
d = Path(tempfile.mkdtemp()); (d / "a").mkdir(); (d / "a" / "last.pt").write_bytes(b""); (d / "b").mkdir()
msgs = [stopped_message(str(d / "a")), stopped_message("b", cwd=d), stopped_message(None, cell=16, n_cells=26, output="runs/x.ipynb")]
for m in msgs: print(m.replace(str(d), "<tmp>"))
assert "last.pt" in msgs[0] and "start the run" in msgs[1] and "cell 17 of 26" in msgs[2]
test_eq([m.group(1) for m in RUN_FOLDER.finditer("x\nrun folder: runs/beauty-sasrec-s0 (resume)  device: cpu\n")], ["runs/beauty-sasrec-s0"])
shutil.rmtree(d)

# %% [markdown]
# Which errors count as Ctrl-C. The interrupted cell normally leaves a `KeyboardInterrupt` error output, and papermill
# raises its `PapermillExecutionError` with that name. On a loaded machine the kernel's execute reply can come back
# before its error output is read; the cell then has no error output, and papermill's error says only
# `CellExecutionError`, with an empty traceback. The name the kernel replied with, which `_Watch.on_cell_error` keeps,
# decides then: a `KeyboardInterrupt` is a Ctrl-C; any other error stays the cell's own error (exit code 1), and the
# reply's name and message are added to papermill's error as a note, since its traceback is empty.

# %%
from papermill.exceptions import PapermillExecutionError
def pm_error(ename): return PapermillExecutionError(0, 10, "train()", ename, "", [])
cases = {"cell output KeyboardInterrupt": _interrupted(pm_error("KeyboardInterrupt")),
         "output lost, reply KeyboardInterrupt": _interrupted(pm_error("CellExecutionError"), "KeyboardInterrupt"),
         "output lost, reply ValueError": _interrupted(pm_error("CellExecutionError"), "ValueError"),
         "cell output ValueError": _interrupted(pm_error("ValueError"), "ValueError")}
cases

# %%
test_eq(list(cases.values()), [True, True, False, False])
w = _Watch(None); w.on_cell_error(None, 3, {"content": {"status": "error", "ename": "KeyboardInterrupt"}})
test_eq(w.replied_error, "KeyboardInterrupt")
w.on_cell_error(None, 3, {"content": {"status": "error", "ename": "ValueError", "evalue": "boom"}})
lost, kept = pm_error("CellExecutionError"), pm_error("ValueError")
_explain(lost, w); _explain(kept, w)
lost.__notes__, getattr(kept, "__notes__", None)

# %%
test_eq(lost.__notes__, ["The cell's error output did not reach the notebook; the kernel replied: ValueError: boom"])
assert not hasattr(kept, "__notes__")  # a cell that has its error output: papermill's message says it all

# %%
#| hide
import nbdev; nbdev.nbdev_export()
