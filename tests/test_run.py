"""`python -m sagerec.run` (nbs/00c_run.ipynb): papermill's arguments, a quiet Ctrl-C that the same command resumes
from, and papermill's own errors for every other failure (issue 13)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from sagerec.run import EXIT_INTERRUPTED, RUN_FOLDER, notebook_parameters, parse_args, stopped_message

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "nbs" / "train.ipynb"


def _env(tmp: Path) -> dict:
    return {**os.environ, "SAGEREC_RUNS": str(tmp / "runs"), "SAGEREC_FIGURES": str(tmp / "figures"), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _injected(nb_path: Path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    return next(c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))


# ------------------------------------------------------------------------------------------ the arguments (fast)
def test_arguments_are_papermills(tmp_path):
    "The same -p/-r/-f/-y arguments give the same injected cell as papermill's command line (its order: -f, -y, -p, -r)."
    from click.testing import CliRunner
    import papermill
    from papermill.cli import papermill as papermill_cli
    cfg = tmp_path / "c.yaml"; cfg.write_text("epochs: 150\ndim: 64\nlr: 1e-3\ntau: null\n")
    args = ["-p", "epochs", "3", "-f", str(cfg), "-p", "dataset", "beauty", "-y", "dim: 32\nseed: 7", "-p", "progress", "False",
            "-p", "lr", "0.01", "-r", "run_name", "007", "-p", "tau", "None", "-f", str(cfg), "-p", "k", "2.5"]
    r = CliRunner().invoke(papermill_cli, [str(TRAIN), str(tmp_path / "pm.ipynb"), "--prepare-only", "--log-level", "WARNING", *args])
    assert r.exit_code == 0, r.output
    a = parse_args([str(TRAIN), str(tmp_path / "ours.ipynb"), *args])
    params = notebook_parameters(a)
    assert params == {"epochs": 3, "dim": 32, "lr": 0.01, "tau": None, "seed": 7, "dataset": "beauty", "progress": False,
                      "k": 2.5, "run_name": "007"}
    papermill.execute_notebook(str(TRAIN), str(tmp_path / "ours.ipynb"), parameters=params, prepare_only=True, progress_bar=False)
    assert _injected(tmp_path / "ours.ipynb") == _injected(tmp_path / "pm.ipynb")
    assert (a.notebook, a.kernel, a.cwd, a.progress_bar, a.log_output) == (str(TRAIN), None, None, True, False)
    b = parse_args(["in.ipynb", "out.ipynb", "-k", "python3", "--cwd", "nbs", "--no-progress-bar", "--log-output"])
    assert (b.kernel, b.cwd, b.progress_bar, b.log_output, notebook_parameters(b)) == ("python3", "nbs", False, True, {})


def test_bad_arguments_stop_with_a_usage_line(tmp_path, capsys):
    for argv, said in [(["in.ipynb"], "the following arguments are required: output"),
                       (["in.ipynb", "out.ipynb", "-f", str(tmp_path / "none.yaml")], "no parameters file"),
                       (["in.ipynb", "out.ipynb", "-p", "epochs"], "expected 2 arguments")]:
        with pytest.raises(SystemExit) as e: parse_args(argv)
        assert e.value.code == 2 and said in capsys.readouterr().err


def test_the_line_after_ctrl_c(tmp_path):
    (tmp_path / "a").mkdir(); (tmp_path / "a" / "last.pt").write_bytes(b""); (tmp_path / "b").mkdir()
    assert "a keeps its last finished epoch (last.pt); run the same command again" in stopped_message(str(tmp_path / "a"))
    assert "before b saved a checkpoint" in stopped_message("b", cwd=tmp_path)  # relative: to the project root, else cwd
    assert stopped_message(None, cell=3, n_cells=9, output="o.ipynb") == "Stopped by Ctrl-C at cell 4 of 9; the notebook so far is in o.ipynb."
    # the runner reads the line the train notebook prints before any work
    src = "\n".join(c.source for c in nbformat.read(TRAIN, as_version=4).cells if c.cell_type == "code")
    assert 'print(f"run folder: {rel_path(run_folder)} ({run_state})  device: {dev}")' in src
    assert [m.group(1) for m in RUN_FOLDER.finditer("run folder: runs/my run (resume)  device: cpu\n")] == ["runs/my run"]


# ------------------------------------------------------------------------------------------ real runs
def _start(tmp: Path, *args) -> subprocess.Popen:
    "The runner as started from a shell: its own process group, which the terminal's Ctrl-C signals as a whole."
    return subprocess.Popen([sys.executable, "-m", "sagerec.run", *map(str, args)], cwd=tmp, env=_env(tmp), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _said(err: str) -> list[str]:
    "stderr's lines, papermill's progress bar left out."
    return [l for l in re.split(r"[\r\n]+", err) if l.strip() and not l.startswith("Executing")]


@pytest.mark.slow
def test_ctrl_c_in_training_is_one_line_and_the_same_command_resumes(tmp_path):
    epochs = 10
    cmd = [TRAIN, tmp_path / "out.ipynb", "-p", "dataset", "beauty-mini", "-p", "variant", "sasrec", "-p", "epochs", epochs,
           "-p", "patience", 0, "-p", "progress", "False", "-p", "num_threads", 1, "-p", "run_name", "ctrlc"]
    run = tmp_path / "runs" / "ctrlc"
    p = _start(tmp_path, *cmd)
    t0 = time.time()
    # metrics.json is written just after last.pt at the end of an epoch: waiting for it (not for last.pt) makes sure
    # the Ctrl-C below falls after a finished epoch's bookkeeping on a loaded machine too
    while not (run / "metrics.json").exists() and p.poll() is None and time.time() - t0 < 600: time.sleep(0.2)
    assert p.poll() is None, p.communicate()[1][-3000:]
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    out, err = p.communicate(timeout=300)
    said = _said(err)
    assert p.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert len(said) <= 3 and "Traceback" not in err, err
    assert "keeps its last finished epoch (last.pt); run the same command again" in said[-1] and str(run) in said[-1]
    assert (run / "last.pt").exists()
    done = json.loads((run / "metrics.json").read_text())["epochs_run"]
    assert 1 <= done < epochs
    p = _start(tmp_path, *cmd)  # the same command: continues from last.pt
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs_run"] == epochs and "test" in m
    assert [h["epoch"] for h in m["history"]] == list(range(1, epochs + 1))


@pytest.mark.slow
def test_other_failures_keep_papermills_error(tmp_path):
    "A cell's error: papermill's message and traceback, exit code 1. A dead kernel: nbclient's error and the kernel's own output, 138."
    def notebook(name, src):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(src)],
                                      metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
        nbformat.write(nb, tmp_path / name); return tmp_path / name
    p = _start(tmp_path, notebook("err.ipynb", "raise ValueError('boom')"), tmp_path / "o1.ipynb", "--no-progress-bar")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1 and "PapermillExecutionError" in err and "ValueError: boom" in err and "Ctrl-C" not in err, err
    p = _start(tmp_path, notebook("die.ipynb", "import os, sys\nprint('last words', file=sys.__stderr__, flush=True)\nos._exit(3)"),
               tmp_path / "o2.ipynb", "--no-progress-bar")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 138 and "DeadKernelError" in err and "The kernel's own output" in err and "last words" in err, err
