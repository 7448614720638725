#!/usr/bin/env python
"""A resumable experiment queue: expand a grid of training runs from a YAML file, run a few at a time with
papermill (one thread each), skip what is finished, resume what was interrupted (the train notebook continues
from the run folder's `last.pt`), and publish finished runs to `results/`.

    python tools/grid.py status configs/grids/recipe.yaml          # what is published / done / partial / pending
    python tools/grid.py run configs/grids/recipe.yaml --jobs 2    # work through the queue (Ctrl-C or a kill is safe)
    python tools/grid.py list configs/grids/recipe.yaml            # the expanded runs and their papermill parameters
    python tools/grid.py run a.yaml b.yaml --only -s0              # several grids in one queue; only names containing '-s0'

A grid file:

    notebook: nbs/train.ipynb          # the papermill notebook (default)
    config: configs/beauty.yaml        # passed as `-f` (optional)
    common: {lr_patience: 0}           # parameters of every run
    seeds: [0, 1, 2, 3, 4]             # each run once per seed (`seed` parameter); default [0]
    order: seed                        # 'seed': every run at the first seed, then the next seed (default); 'run': all seeds of a run together
    runs:
      - name: beauty-sasrec-base       # run folder '<name>-s<seed>', or a template holding '{seed}'
        params: {variant: sasrec}
        config: configs/models/x.yaml  # optional: more `-f` files for this run (a path or a list), after the grid's
        label: SASRec                  # optional: the row this run makes in a report (sagerec.paper.grid_runs); ignored here

Running a run twice is harmless: a published run (results/<name>/metrics.json with test metrics) is skipped, a
run whose folder has test metrics is published and skipped, and any other run is (re)started and resumes from
its `last.pt`. A lock file in each run folder keeps two queues from running the same run. A run that fails is
recorded in `<runs>/_grid/<name>.failed` (with the end of its log) and skipped until `--retry-failed`.
Results are bit-identical only at the same thread count: every run here uses `num_threads=1` unless the grid
says otherwise.
"""
from __future__ import annotations

import argparse, contextlib, fcntl, json, os, signal, subprocess, sys, time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ACTIVE_S = 600  # a run folder without a queue's lock whose last.pt changed this recently is taken to be running by hand
sys.path.insert(0, str(ROOT))


def fail(msg: str) -> None:
    print(f"grid: {msg}", file=sys.stderr); sys.exit(2)


def load_grid(path: Path) -> dict:
    if not path.exists(): fail(f"no grid file {str(path)!r}")
    try: g = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e: fail(f"{path} is not valid YAML: {e}")
    unknown = set(g) - {"notebook", "config", "common", "seeds", "order", "runs"}
    if unknown: fail(f"{path}: unknown keys {sorted(unknown)} (allowed: notebook, config, common, seeds, order, runs)")
    if not g.get("runs"): fail(f"{path} lists no runs")
    if g.get("order", "seed") not in ("seed", "run"): fail(f"{path}: order must be 'seed' or 'run'")
    for r in g["runs"]:
        if not isinstance(r, dict) or "name" not in r: fail(f"{path}: every run needs a name, got {r!r}")
        extra = set(r) - {"name", "params", "seeds", "config", "label"}
        if extra: fail(f"{path}: run {r['name']!r} has unknown keys {sorted(extra)} (allowed: name, params, seeds, config, label)")
    for r in g["runs"]:
        cs = r.get("config") or []
        for c in ([g["config"]] if g.get("config") else []) + ([cs] if isinstance(cs, str) else list(cs)):
            if not (ROOT / c).exists(): fail(f"{path}: run {r['name']!r} names the config file {c!r}, which does not exist (paths are from the project root)")
    return g


def expand(g: dict) -> list[dict]:
    "The grid's runs, in queue order: dicts with name, seed and the papermill parameters."
    seeds = g.get("seeds", [0])
    jobs = []
    for r in g["runs"]:
        for s in r.get("seeds", seeds):
            name = r["name"].format(seed=s) if "{seed}" in r["name"] else f"{r['name']}-s{s}"
            params = {"num_threads": 1, "progress": False, **(g.get("common") or {}), **(r.get("params") or {}), "seed": s, "run_name": name}
            configs = r.get("config") or []
            jobs.append(dict(name=name, seed=s, params=params, grid=g, configs=[configs] if isinstance(configs, str) else list(configs)))
    if g.get("order", "seed") == "seed":
        seed_pos = {s: i for i, s in enumerate(dict.fromkeys(j["seed"] for j in jobs))}
        jobs.sort(key=lambda j: seed_pos[j["seed"]])  # stable: runs keep their order within a seed
    names = [j["name"] for j in jobs]
    dup = {n for n in names if names.count(n) > 1}
    if dup: fail(f"run names repeat: {sorted(dup)}")
    return jobs


def runs_root() -> Path:
    from sagerec.core import runs_dir
    return runs_dir()


def has_test(folder: Path) -> bool:
    try: return "test" in json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError): return False


def state(job: dict, results: Path) -> tuple[str, str]:
    "('published' | 'done' | 'running' | 'partial' | 'failed' | 'pending', detail)."
    folder = runs_root() / job["name"]
    if has_test(results / job["name"]): return "published", ""
    if has_test(folder): return "done", ""
    if (runs_root() / "_grid" / f"{job['name']}.failed").exists(): return "failed", str(runs_root() / "_grid" / f"{job['name']}.failed")
    lock = folder / ".grid.lock"
    if is_locked(lock): return "running", epochs_of(folder)
    if (folder / "last.pt").exists():
        # A queue's run holds its lock while it lives: a free lock means it ended (or was killed) and can resume now.
        # Only a run started by hand (no lock file) is guessed to be running from a recent last.pt.
        if not lock.exists() and time.time() - (folder / "last.pt").stat().st_mtime < ACTIVE_S:
            return "running", epochs_of(folder) + " (outside this queue)"
        return "partial", epochs_of(folder)
    return "pending", ""


def is_locked(lock: Path) -> bool:
    "Is a run's lock file held (by a queue or by the run it started)?"
    try:
        with open(lock) as f:
            try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); fcntl.flock(f, fcntl.LOCK_UN); return False
            except BlockingIOError: return True
    except OSError: return False


def active_runs() -> int:
    "Runs under the runs folder that any queue is running now: `--jobs` caps them all together."
    return sum(is_locked(l) for l in runs_root().glob("*/.grid.lock"))


@contextlib.contextmanager
def admission():
    "Held while a queue counts the active runs and starts one, so two queues never both take the last free slot."
    (runs_root() / "_grid").mkdir(parents=True, exist_ok=True)
    with open(runs_root() / "_grid" / ".admission.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try: yield
        finally: fcntl.flock(f, fcntl.LOCK_UN)


def epochs_of(folder: Path) -> str:
    try:
        h = json.loads((folder / "metrics.json").read_text()).get("history", [])
        v = [r for r in h if "valid/ndcg@10" in r]
        best = max(v, key=lambda r: r["valid/ndcg@10"]) if v else None
        return f"{len(h)} epochs" + (f", best valid NDCG@10 {best['valid/ndcg@10']:.4f} @ {best['epoch']}" if best else "")
    except (OSError, ValueError): return ""


def publish(job: dict, results: Path) -> Path:
    from sagerec.report import publish_run
    return publish_run(runs_root() / job["name"], dest=results)


def papermill_cmd(g: dict, job: dict, runner: str = "papermill") -> list[str]:
    "The command of one run: papermill, or `tools/plain_run.py` (the notebook's code without Jupyter) with the same parameters."
    nb = ROOT / g.get("notebook", "nbs/train.ipynb")
    out = runs_root() / "_grid" / f"{job['name']}.ipynb"
    if runner == "plain": cmd = [sys.executable, str(ROOT / "tools" / "plain_run.py"), str(nb)]
    else: cmd = [str(Path(sys.executable).parent / "papermill"), str(nb), str(out), "--cwd", str(ROOT / "nbs")]
    for c in ([g["config"]] if g.get("config") else []) + job.get("configs", []): cmd += ["-f", str(ROOT / c)]
    for k, v in job["params"].items(): cmd += ["-y", f"{k}: {json.dumps(v)}"]
    return cmd


def start(g: dict, job: dict, runner: str = "papermill"):
    folder = runs_root() / job["name"]; folder.mkdir(parents=True, exist_ok=True)
    (runs_root() / "_grid").mkdir(exist_ok=True)
    lockf = open(folder / ".grid.lock", "w")
    try: fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError: lockf.close(); return None  # another queue runs it
    log = open(runs_root() / "_grid" / f"{job['name']}.log", "a")
    env = {"SAGEREC_FIGURES": str(runs_root() / "_grid" / "figures"), **os.environ, "OMP_NUM_THREADS": str(job["params"].get("num_threads", 1)), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # the child inherits the locked file, so the run stays locked while it lives, even if this queue is killed
    p = subprocess.Popen(papermill_cmd(g, job, runner), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                         pass_fds=(lockf.fileno(),))
    return p, lockf, log


def _sigterm(signum, frame): raise KeyboardInterrupt  # a kill stops the queue's runs like Ctrl-C does


def expand_all(paths) -> list[dict]:
    "The runs of several grid files, in order; a run named twice is kept once (its first place)."
    jobs, seen = [], set()
    for path in paths:
        for j in expand(load_grid(Path(path))):
            if j["name"] not in seen: seen.add(j["name"]); jobs.append(j)
    return jobs


def admit(args, queue: list, running: dict, results: Path, done_now: int) -> None:
    "Publish the queue's finished runs, then start queued runs while fewer than `--jobs` runs are active (call under `admission()`)."
    for job in list(queue):  # publishing needs no free slot: a finished run is published even while every slot is busy
        st, _ = state(job, results)
        if st == "published": queue.remove(job)
        elif st == "done":
            print(f"[{time.strftime('%H:%M:%S')}] {job['name']} was finished: published to {publish(job, results)}", flush=True)
            queue.remove(job)
    while active_runs() < args.jobs and queue:
        job = queue.pop(0)
        st, _ = state(job, results)
        if st == "published": continue
        if st == "done":
            print(f"[{time.strftime('%H:%M:%S')}] {job['name']} was finished: published to {publish(job, results)}", flush=True); continue
        if st in ("failed", "running"): continue
        if args.max_runs is not None and done_now + len(running) >= args.max_runs: queue.clear(); break
        h = start(job["grid"], job, args.runner)
        if h is None: continue
        running[job["name"]] = (job, h)
        print(f"[{time.strftime('%H:%M:%S')}] started {job['name']} ({st}{', resuming' if st == 'partial' else ''})", flush=True)


def cmd_run(args) -> None:
    signal.signal(signal.SIGTERM, _sigterm)
    jobs = expand_all(args.grid)
    results = Path(args.results) if args.results else ROOT / "results"
    if args.retry_failed:
        for j in jobs: (runs_root() / "_grid" / f"{j['name']}.failed").unlink(missing_ok=True)
    running: dict[str, tuple] = {}
    queue = [j for j in jobs if not args.only or any(s in j["name"] for s in args.only)]
    t0 = time.time(); done_now = 0
    try:
        while True:
            for name, (job, (p, lockf, log)) in list(running.items()):
                rc = p.poll()
                if rc is None: continue
                log.close(); lockf.close(); del running[name]
                if rc == 0 and has_test(runs_root() / name):
                    print(f"[{time.strftime('%H:%M:%S')}] finished {name}: published to {publish(job, results)}", flush=True); done_now += 1
                else:
                    tail = (runs_root() / "_grid" / f"{name}.log").read_text(errors="replace")[-3000:]
                    (runs_root() / "_grid" / f"{name}.failed").write_text(f"exit code {rc}\n{tail}")
                    print(f"[{time.strftime('%H:%M:%S')}] FAILED {name} (exit {rc}); see {runs_root() / '_grid' / (name + '.log')}", flush=True)
            with admission():
                admit(args, queue, running, results, done_now)
            if not running and not queue: break
            time.sleep(args.poll)
    except KeyboardInterrupt:
        print("grid: interrupted; running runs are stopped and resume from last.pt next time", file=sys.stderr)
        for _, (_, (p, lockf, log)) in running.items():
            try: os.killpg(p.pid, 15)
            except ProcessLookupError: pass
        sys.exit(130)
    print(f"grid: queue empty after {time.time() - t0:.0f} s ({done_now} runs finished in this call)")


def cmd_status(args) -> None:
    results = Path(args.results) if args.results else ROOT / "results"
    rows = [(j["name"], *state(j, results)) for j in expand_all(args.grid)]
    w = max(len(r[0]) for r in rows)
    for n, s, d in rows: print(f"{n:<{w}}  {s:<9}  {d}")
    counts = {s: sum(r[1] == s for r in rows) for s in ("published", "done", "running", "partial", "failed", "pending")}
    print(", ".join(f"{v} {k}" for k, v in counts.items() if v))


def cmd_list(args) -> None:
    for j in expand_all(args.grid):
        print(j["name"], json.dumps({k: v for k, v in j["params"].items() if k not in ("run_name",)}), *(f"-f {c}" for c in j["configs"]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "status", "list"):
        p = sub.add_parser(name); p.add_argument("grid", nargs="+", help="grid files, queued in this order")
        p.add_argument("--results", help="where finished runs are published (default: results/ of this project)")
        if name == "run":
            p.add_argument("--jobs", type=int, default=2, help="runs at a time, counting those of other queues on the same runs folder (default 2: one per core on a 2-core machine)")
            p.add_argument("--only", nargs="*", help="run only names containing one of these strings")
            p.add_argument("--max-runs", type=int, help="start at most this many runs in this call")
            p.add_argument("--retry-failed", action="store_true", help="forget recorded failures and run them again")
            p.add_argument("--poll", type=float, default=10.0, help="seconds between checks")
            p.add_argument("--runner", choices=("papermill", "plain"), default="papermill",
                           help="'plain': tools/plain_run.py, the notebook's code in plain Python (a machine without Jupyter)")
    args = ap.parse_args(argv)
    if getattr(args, "jobs", 1) < 1: fail("--jobs must be >= 1")
    {"run": cmd_run, "status": cmd_status, "list": cmd_list}[args.cmd](args)


if __name__ == "__main__":
    main()
