# %% [markdown]
# # Reporting runs
# > Result tables built from the `params.json` / `metrics.json` that every run writes: no number is typed in by hand.

# %%
#| default_exp report

# %%
#| export
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from sagerec.core import check, project_root, read_json

# %%
#| hide
import tempfile
from fastcore.test import test_close, test_eq, test_fail
from sagerec.core import save_fig

# %% [markdown]
# A run folder (written by `nbs/train.ipynb` through `RunRecorder`) holds `params.json` (the resolved parameters
# and the environment) and `metrics.json` (validation history, best epoch, test metrics per protocol, timing).
# Runs whose numbers the documentation quotes are *published*: their two JSON files are copied into
# `results/<run_name>/`, which is committed, so every table in the README is rebuilt from files in the repository
# and each row says how to repeat it.

# %%
#| export
PROTOCOLS = ("full-masked", "full-unmasked", "sampled100")  # evaluation protocols recorded by nbs/train.ipynb
METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")

def load_run(folder: Path | str) -> dict:
    "The `params` and `metrics` of the run in `folder`."
    folder = Path(folder)
    files = {n: folder / f"{n}.json" for n in ("params", "metrics")}
    for n, f in files.items():
        check(f.exists(), f"{folder} is not a run folder: {f.name} is missing (runs are written by nbs/train.ipynb).")
    return {n: read_json(f, way_on="rerun that run, or leave its folder out") for n, f in files.items()}

def run_row(run: dict, protocol: str = "full-masked", params: tuple[str, ...] = ()) -> dict:
    "One table row: what was run, on what, the `params` asked for, and its test metrics under `protocol`."
    check(protocol in PROTOCOLS, f"Unknown protocol {protocol!r}: use one of {PROTOCOLS}.")
    p, m = run["params"], run["metrics"]
    test = m.get("test", {}).get(protocol)
    check(test is not None, f"Run {p.get('run_name')!r} has no test metrics under {protocol!r} (did it finish?).")
    env = p.get("environment", {})
    dataset = p["dataset"] + (f" cold-{p['cold_items']}" if p.get("cold_items") else "")  # a cold-start split is its own dataset
    return {"dataset": dataset, "variant": p["variant"], "seed": p["seed"], **{k: p.get(k) for k in params}, "protocol": protocol,
            **{k: test[k] for k in METRICS}, "best_epoch": m.get("best_epoch"), "epochs_run": m.get("epochs_run"),
            "s/epoch": m.get("seconds_per_epoch"), "hardware": env.get("cuda") or f"CPU x{env.get('cpu_count')}",
            "run": p.get("run_name")}

def runs_table(folders, protocol: str = "full-masked", params: tuple[str, ...] = ()) -> pd.DataFrame:
    "A table of the runs in `folders` (run folders, or parents of run folders) under `protocol`, with extra `params` columns."
    runs = []
    for f in map(Path, folders):
        check(f.is_dir(), f"{f} is not a folder: pass run folders or folders that hold them (e.g. results/ or runs/).")
        if (f / "metrics.json").exists(): runs.append(f); continue  # a run folder named explicitly must be finished
        found = sorted(d for d in f.iterdir() if (d / "metrics.json").exists())
        done = [d for d in found if "test" in load_run(d)["metrics"]]
        if len(done) < len(found):
            warnings.warn(f"{f}: left out {len(found) - len(done)} folder(s) without test metrics (unfinished runs or "
                          f"benchmarks): {', '.join(d.name for d in found if d not in done)}", stacklevel=2)
        runs += done
    return pd.DataFrame([run_row(load_run(r), protocol, params) for r in runs])


# %% [markdown]
# A hand-made run folder shows the shape of the files and the row built from them. A run trained on a cold-start
# split (the train notebook's `cold_items`) is labelled as a dataset of its own, e.g. `beauty cold-100`: its training
# data differ, so no table compares it with runs on the full split.

# %%
def fake_run(root: Path, name: str, variant: str, ndcg10: float, seed: int = 0) -> Path:
    d = root / name; d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"dataset": "beauty-mini", "variant": variant, "seed": seed, "run_name": name,
                                              "environment": {"cpu_count": 2, "cuda": None}}))
    test = {p: {"recall@10": 2 * ndcg10, "ndcg@10": ndcg10, "recall@20": 3 * ndcg10, "ndcg@20": 1.2 * ndcg10} for p in PROTOCOLS}
    (d / "metrics.json").write_text(json.dumps({"test": test, "best_epoch": 3, "epochs_run": 5, "seconds_per_epoch": 1.5}))
    return d

tmp = Path(tempfile.mkdtemp())
fake_run(tmp, "a", "sagerec", 0.04); fake_run(tmp, "b", "sasrec", 0.03)
table = runs_table([tmp], params=("run_name",))
table

# %%
test_eq(list(table["variant"]), ["sagerec", "sasrec"])
test_close(table["ndcg@10"].tolist(), [0.04, 0.03])
test_eq(table["hardware"][0], "CPU x2")
test_eq(list(table["run_name"]), ["a", "b"])
test_fail(lambda: load_run(tmp / "nope"), contains="not a run folder")
cold_run = {"params": {"dataset": "beauty", "variant": "sasrec", "seed": 0, "cold_items": 100}, "metrics": load_run(tmp / "a")["metrics"]}
test_eq(run_row(cold_run)["dataset"], "beauty cold-100")  # trained without 100 items: not comparable with the full split
test_fail(lambda: runs_table([tmp], protocol="sampled50"), contains="Unknown protocol")
test_fail(lambda: runs_table([tmp / "missing"]), contains="not a folder")

# %% [markdown]
# Scanning a folder such as `runs/` leaves out, with a warning, the folders that hold no test metrics (a benchmark
# or an unfinished run); naming such a run folder directly is an error, as above.

# %%
(tmp / "bench").mkdir(); (tmp / "bench" / "params.json").write_text("{}"); (tmp / "bench" / "metrics.json").write_text("{}")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    scanned = runs_table([tmp])
test_eq(list(scanned["run"]), ["a", "b"])
test_eq(len(caught), 1); assert "bench" in str(caught[0].message)
str(caught[0].message)


# %% [markdown]
# ## Publishing a run
#
# `publish_run` copies a finished run's `params.json` and `metrics.json` into `results/<run_name>/` (the
# learning curve too, when there is one), the committed evidence behind the README's tables.

# %%
#| export
def results_dir() -> Path:
    "`results/` at the project root: the committed record of the runs the documentation quotes."
    return (project_root() or Path.cwd()) / "results"

def publish_run(run_folder: Path | str, dest: Path | str | None = None) -> Path:
    "Copy a finished run's JSON files (and learning curve) into `results/<run name>/`; return that folder."
    run = load_run(run_folder)
    check("test" in run["metrics"], f"{run_folder} has no test metrics yet: publish finished runs only.")
    out = Path(dest or results_dir()) / Path(run_folder).name
    out.mkdir(parents=True, exist_ok=True)
    for f in ("params.json", "metrics.json", "learning_curve.png", "test_ranks.npz"):
        if (Path(run_folder) / f).exists(): shutil.copy2(Path(run_folder) / f, out / f)
    return out


# %%
pub = publish_run(tmp / "a", dest=tmp / "results")
sorted(p.name for p in pub.iterdir())

# %%
test_eq(sorted(p.name for p in pub.iterdir()), ["metrics.json", "params.json"])
test_eq(runs_table([tmp / "results"])["run"].tolist(), ["a"])


# %% [markdown]
# ## Looking rather than reading
#
# `plot_runs` draws one group of bars per metric and one bar per run label, from the same table. Runs that share a
# label (the seeds of one method) make one bar, their mean, with the standard deviation as whiskers (deterministic,
# unlike a bootstrapped interval, so the figure only changes when the runs do).

# %%
#| export
def plot_runs(table: pd.DataFrame,                # from `runs_table`
              label: str = "variant",             # column whose value names each bar
              metrics: tuple[str, ...] = METRICS, # metrics to show, one group each
              title: str | None = None,           # figure title (default: dataset and protocol)
             ):
    "Grouped bar chart of `metrics` for the runs in `table` (seaborn): runs sharing a label are averaged, whiskers = std over them."
    check(len(table) > 0, "The table has no runs to plot.")
    check(table["dataset"].nunique() == 1 and table["protocol"].nunique() == 1,
          "plot_runs draws runs of one dataset under one protocol: filter the table first.")
    long = table.assign(run_label=table[label].astype(str)).melt(id_vars="run_label", value_vars=list(metrics),
                                                                  var_name="metric", value_name="value")
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 3.2))
    sns.barplot(long, x="metric", y="value", hue="run_label", errorbar="sd", capsize=0.1, err_kws={"linewidth": 1}, ax=ax)
    ax.set(xlabel="", ylabel="test value", title=title or f"{table['dataset'].iloc[0]}, {table['protocol'].iloc[0]}")
    ax.legend(title=label, fontsize=8, title_fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    return fig


# %%
fig = plot_runs(table)
[t.get_text() for t in fig.axes[0].get_legend().get_texts()]

# %%
test_eq([t.get_text() for t in fig.axes[0].get_legend().get_texts()], ["sagerec", "sasrec"])
test_eq(len(fig.axes[0].patches) >= 2 * len(METRICS), True)
test_fail(lambda: plot_runs(table.iloc[:0]), contains="no runs")
test_fail(lambda: plot_runs(table.assign(dataset=["beauty", "toys"])), contains="one dataset")
plt.close(fig)


# %% [markdown]
# ## Several seeds
#
# The paper reports the mean over 5 seeds and a paired t-test against the second-best method (p < 0.01).
# `seed_summary` gives the mean and standard deviation over seeds of each group of runs; `paired_test` pairs the
# runs of two variants by seed and applies `scipy.stats.ttest_rel` (two-sided) to each metric. Seeds present for
# only one of the two variants are left out of the test, and said so.

# %%
#| export
def seed_summary(table: pd.DataFrame,                       # from `runs_table`
                 by: tuple[str, ...] = ("dataset", "variant"),  # one row per group
                 metrics: tuple[str, ...] = METRICS,
                ) -> pd.DataFrame:
    "Mean and standard deviation (ddof = 1) of each metric over the seeds of each group, and the seeds used."
    check(len(table) > 0, "The table has no runs to summarise.")
    g = table.groupby(list(by))
    out = g[list(metrics)].agg(["mean", "std"])
    out.columns = [f"{m} {s}" for m, s in out.columns]
    return out.assign(seeds=g["seed"].apply(lambda s: ",".join(map(str, sorted(s)))), n=g["seed"].nunique())


def _by_seed(table: pd.DataFrame, a: str, b: str, label: str) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    "The runs of `a` and of `b`, each indexed by seed, and the seeds both have."
    for v in (a, b): check((table[label] == v).any(), f"No run has {label} = {v!r}; the table has {sorted(table[label].astype(str).unique())}.")
    ta, tb = (table[table[label] == v].set_index("seed") for v in (a, b))
    for t, v in ((ta, a), (tb, b)): check(t.index.is_unique, f"{label} = {v!r} has several runs with the same seed: filter the table first.")
    return ta, tb, sorted(set(ta.index) & set(tb.index))

def paired_test(table: pd.DataFrame,                 # from `runs_table`, one dataset and protocol
                a: str, b: str,                      # the two values of `label` compared (a - b)
                label: str = "variant",              # the column that tells the methods apart
                metrics: tuple[str, ...] = METRICS,
               ) -> pd.DataFrame:
    "Paired two-sided t-test of `a` against `b` over the seeds both have, per metric (`scipy.stats.ttest_rel`)."
    from scipy.stats import ttest_rel
    check(table["dataset"].nunique() == 1 and table["protocol"].nunique() == 1,
          "paired_test compares runs of one dataset under one protocol: filter the table first.")
    ta, tb, seeds = _by_seed(table, a, b, label)
    check(len(seeds) >= 2, f"A paired test needs at least 2 seeds run for both {a!r} and {b!r}; common seeds: {seeds}.")
    left_out = sorted(set(ta.index) ^ set(tb.index))
    if left_out: warnings.warn(f"Seeds {left_out} were run for only one of {a!r}, {b!r} and are left out of the test.", stacklevel=2)
    rows = []
    for m in metrics:
        xa, xb = ta.loc[seeds, m].to_numpy(float), tb.loc[seeds, m].to_numpy(float)
        r = ttest_rel(xa, xb)
        rows.append({"metric": m, f"{a} mean": xa.mean(), f"{b} mean": xb.mean(), "gain": xa.mean() / xb.mean() - 1,
                     "t": float(r.statistic), "p": float(r.pvalue), "seeds": len(seeds)})
    return pd.DataFrame(rows).set_index("metric")


# %% [markdown]
# Three seeds of two hand-made methods; the test statistic is the mean paired difference over its standard error:

# %%
seeds_dir = Path(tempfile.mkdtemp())
for sd, (x, y) in enumerate([(0.040, 0.036), (0.042, 0.037), (0.039, 0.037)]):
    fake_run(seeds_dir, f"a{sd}", "sagerec", x, seed=sd); fake_run(seeds_dir, f"b{sd}", "sasrec", y, seed=sd)
fake_run(seeds_dir, "a3", "sagerec", 0.05, seed=3)  # a seed the other method lacks
st = runs_table([seeds_dir])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pt = paired_test(st, "sagerec", "sasrec")
seed_summary(st)[["ndcg@10 mean", "ndcg@10 std", "seeds"]], pt.loc[["ndcg@10"]]

# %%
diff = pd.Series([0.004, 0.005, 0.002])
test_close(pt.loc["ndcg@10", "t"], diff.mean() / (diff.std() / 3 ** 0.5), eps=1e-6)
test_eq(pt.loc["ndcg@10", "seeds"], 3)
test_eq(len(caught), 1); assert "[3]" in str(caught[0].message)
test_eq(seed_summary(st).loc[("beauty-mini", "sagerec"), "seeds"], "0,1,2,3")
test_close(seed_summary(st).loc[("beauty-mini", "sasrec"), "ndcg@10 mean"], (0.036 + 0.037 + 0.037) / 3, eps=1e-9)
test_fail(lambda: paired_test(st, "sagerec", "gru4rec"), contains="No run has variant = 'gru4rec'")
test_fail(lambda: paired_test(st[st.seed == 0], "sagerec", "sasrec"), contains="at least 2 seeds")


# %% [markdown]
# A mean change can hide seeds that go the other way. `seed_changes` gives the relative change of `a` against `b` on
# each seed both have, so a sentence such as "+5% on seed 0, +1% on seed 1" is read from a table, not from the files.

# %%
#| export
def seed_changes(table: pd.DataFrame,   # from `runs_table` (or `sagerec.paper.grid_table`), one dataset and protocol
                 a: str, b: str,        # the two values of `label` compared (a / b - 1)
                 label: str = "variant",
                 metric: str = "ndcg@10",
                ) -> pd.Series:
    "Relative change of `a` against `b` on each seed both have (index: seed); empty when they share no seed."
    check(metric in table.columns, f"No column {metric!r}; the metrics are {list(METRICS)}.")
    ta, tb, seeds = _by_seed(table, a, b, label)
    return (ta.loc[seeds, metric] / tb.loc[seeds, metric] - 1).rename(f"{metric} change")

def format_changes(changes: pd.Series) -> str:
    "`seed_changes` as text: '+11% (seed 0), +14% (seed 1)'."
    return ", ".join(f"{c:+.0%} (seed {s})" for s, c in changes.items())


# %%
ch = seed_changes(st, "sagerec", "sasrec")
print(format_changes(ch))
test_eq(ch.index.tolist(), [0, 1, 2])  # seed 3 has no sasrec run
test_close(ch[0], 0.040 / 0.036 - 1, eps=1e-12)
test_eq(format_changes(ch), "+11% (seed 0), +14% (seed 1), +5% (seed 2)")
test_eq(seed_changes(st[(st.variant == "sagerec") | (st.seed == 0)], "sagerec", "sasrec").index.tolist(), [0])
test_fail(lambda: seed_changes(st, "sagerec", "sasrec", metric="mrr"), contains="No column 'mrr'")


# %% [markdown]
# ## What differs from a reference recipe
#
# An ablation compares runs that differ from a reference in one setting (or a few). `changed_settings` names,
# for one run, the settings whose recorded value differs from the reference's (a setting a run does not record,
# because it predates the setting, counts as the reference's value), so a table's rows are labelled by what was
# actually run, not by a hand-written name.

# %%
#| export
def changed_settings(params: dict,      # a run's params.json
                     reference: dict,   # the reference recipe: setting -> value
                    ) -> str:
    "'k=v, ...' for the reference settings whose value differs in `params` (sorted), or 'reference'."
    def same(a, b): return a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1))
    diff = [f"{k}={params[k]}" for k in sorted(reference) if k in params and params[k] is not None and not same(params[k], reference[k])]
    return ", ".join(diff) or "reference"

def trained_on(run: dict) -> str:
    "The kind of device a run trained on, 'cpu' or 'cuda' (its metrics' `device`; runs that did not record it ran on the CPU)."
    return str(run["metrics"].get("device") or "cpu").split(":")[0]

def ablation_table(folders, reference: dict, protocol: str = "full-masked", extra: tuple[str, ...] = ()) -> pd.DataFrame:
    "`runs_table` of the runs in `folders` with a `change` column from `changed_settings` against `reference`."
    runs = [r for f in map(Path, folders) for r in (sorted(f.iterdir()) if not (f / "params.json").exists() else [f])
            if (r / "metrics.json").exists() and "test" in load_run(r)["metrics"]]
    rows = []
    for r in runs:
        run = load_run(r)
        run = {**run, "params": {**run["params"], "device": trained_on(run)}}  # the device it ran on, not the one asked for ('auto')
        rows.append({**run_row(run, protocol, tuple(reference) + tuple(extra)), "change": changed_settings(run["params"], reference)})
    return pd.DataFrame(rows)


# %%
ref = {"l2": 1e-5, "n_neg": 1, "loss": "bce"}
changed_settings({"l2": 0.0, "n_neg": 1}, ref), changed_settings({"l2": 1e-5, "loss": "ce", "n_neg": 1}, ref), changed_settings({"n_neg": 1}, ref)

# %%
test_eq(changed_settings({"l2": 0.0, "n_neg": 1}, ref), "l2=0.0")
test_eq(changed_settings({"l2": 1.0000000000001e-5, "n_neg": 100, "loss": "ce"}, ref), "loss=ce, n_neg=100")
test_eq(changed_settings({}, ref), "reference")

# %% [markdown]
# The device a run trained on is part of what was run: a GPU run is not bit-identical to the CPU run of the same seed,
# so it must not be paired with it or averaged into its row. `ablation_table` records it (`trained_on`) as the setting
# `device`, which the reference recipe sets to `cpu`: a GPU run's change says `device=cuda`.

# %%
fake_run(tmp / "dev", "c0", "sagerec", 0.04); g0 = fake_run(tmp / "dev", "g0", "sagerec", 0.05)
(g0 / "metrics.json").write_text(json.dumps({**json.loads((g0 / "metrics.json").read_text()), "device": "cuda:0"}))
dev_tab = ablation_table([tmp / "dev"], {"device": "cpu", "l2": 1e-5})
dev_tab[["device", "change", "ndcg@10"]]

# %%
test_eq(dev_tab.sort_values("ndcg@10")["change"].tolist(), ["reference", "device=cuda"])
test_eq(dev_tab.sort_values("ndcg@10")["device"].tolist(), ["cpu", "cuda"])

# %% [markdown]
# Tables group runs by what differs from a dataset's **reference recipe**: the settings of `configs/<dataset>.yaml`
# over the train notebook's defaults, with a constant learning rate (`lr_patience 0`, the project's schedule; see
# the README). `recipe_summary` gives one row per change (mean ± std over seeds, the NDCG@10 gain over the
# reference rows and, with two or more common seeds, the paired p-value); `graph_tests` pairs each recipe's SAGERec
# runs (or any graph variant) with its no-graph runs.

# %%
#| export
RECIPE_DEFAULTS = dict(dim=50, n_heads=1, n_blocks=2, dropout=0.5, max_len=50, l2=1e-5, ffn_mult=1, activation="relu",
                       attn_out_dropout=True, ffn_inner_dropout=True, norm="pre", init="xavier", scale_input=True, batch_size=128, lr=1e-3,
                       adam_beta2=0.999, n_neg=1, bucket=50, loss_norm="batch", loss="bce", pool="uniform", logq=False,
                       lr_patience=0, lr_signal="valid_loss", output_embedding="graph", k=3, n_graph_layers=1, edge_dropout=0.2,
                       node_dropout=0.5, node_dropout_mode="messages", text_dim=64,
                       device="cpu")  # the train notebook's defaults for what defines a recipe; `device`: what a run trained on (`trained_on`)

def reference_recipe(dataset: str, configs: Path | str | None = None) -> dict:
    "The reference recipe of `dataset`: `RECIPE_DEFAULTS` overlaid by `configs/<dataset>.yaml`, with a constant LR."
    import yaml
    path = Path(configs or (project_root() or Path.cwd()) / "configs") / f"{dataset}.yaml"
    cfg = yaml.safe_load(path.read_text()) if path.exists() else {}
    return {**RECIPE_DEFAULTS, **{k: v for k, v in cfg.items() if k in RECIPE_DEFAULTS}, "lr_patience": 0}

def recipe_summary(table: pd.DataFrame,           # from `ablation_table`, one dataset and variant
                   base: str = "reference",       # the `change` that others are compared with
                   metrics: tuple[str, ...] = METRICS,
                  ) -> pd.DataFrame:
    "One row per `change`: mean ± std over seeds, the NDCG@10 gain over `base` and, with >= 2 common seeds, the paired p-value."
    rows, ref = [], table[table["change"] == base]
    for change, g in table.groupby("change", sort=False):
        row = {"change": change, "seeds": ",".join(map(str, sorted(g["seed"])))}
        for m in metrics: row[m] = f"{g[m].mean():.4f} ± {g[m].std():.4f}" if len(g) > 1 else f"{g[m].mean():.4f}"
        if len(ref) and change != base:
            row["NDCG@10 vs reference"] = f"{g['ndcg@10'].mean() / ref['ndcg@10'].mean() - 1:+.1%}"
            if len(set(g["seed"]) & set(ref["seed"])) >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pt = paired_test(pd.concat([g, ref]).assign(arm=lambda d: np.where(d["change"] == base, "b", "a")), "a", "b", label="arm")
                row["p"] = f"{pt.loc['ndcg@10', 'p']:.2g}"
        row["best epoch"] = f"{g['best_epoch'].mean():.0f}"
        row["s/epoch"] = f"{g['s/epoch'].mean():.1f}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("change")

def graph_tests(table: pd.DataFrame,           # from `ablation_table`, one dataset
                baseline: str = "sasrec",      # the no-graph variant
               ) -> pd.DataFrame:
    "For every recipe and every other variant run with >= 2 seeds in common with `baseline`: the paired t-test per metric."
    out = []
    for change, g in table.groupby("change"):
        for v in sorted(set(g["variant"]) - {baseline}):
            common = set(g[g["variant"] == v]["seed"]) & set(g[g["variant"] == baseline]["seed"])
            if len(common) < 2: continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pt = paired_test(g[g["variant"].isin([v, baseline])], v, baseline)
            out.append(pt.rename(columns={f"{v} mean": "variant mean", f"{baseline} mean": "no-graph mean"})
                         .assign(change=change, variant=v).reset_index())
    return pd.concat(out).set_index(["change", "variant", "metric"]) if out else pd.DataFrame()


# %%
rt = pd.DataFrame([{"dataset": "toy", "protocol": "full-masked", "change": c, "variant": v, "seed": sd, "ndcg@10": x, "recall@10": 2 * x, "ndcg@20": x, "recall@20": 3 * x,
                    "best_epoch": 10, "s/epoch": 1.0}
                   for c, v, sd, x in [("reference", "sasrec", 0, .030), ("reference", "sasrec", 1, .031), ("l2=0.0", "sasrec", 0, .033),
                                       ("l2=0.0", "sasrec", 1, .035), ("reference", "sagerec", 0, .032), ("reference", "sagerec", 1, .034)]])
rs, gt_ = recipe_summary(rt[rt.variant == "sasrec"]), graph_tests(rt)
rs[["seeds", "ndcg@10", "NDCG@10 vs reference", "p"]], gt_.loc[("reference", "sagerec", "ndcg@10"), ["variant mean", "no-graph mean", "seeds"]]

# %%
test_eq(rs.loc["l2=0.0", "NDCG@10 vs reference"], f"{(0.034 / 0.0305) - 1:+.1%}")
test_eq(rs.loc["reference", "ndcg@10"], "0.0305 ± 0.0007")
test_close(gt_.loc[("reference", "sagerec", "ndcg@10"), "variant mean"], 0.033, eps=1e-12)
test_eq(reference_recipe("beauty")["lr_patience"], 0); test_eq(reference_recipe("ml-1m")["max_len"], 165)

# %% [markdown]
# ## Where does a gain come from? Targets by popularity
#
# A mean over users hides *which* users gain. `popularity_groups` splits the test users by how often their
# target item occurs in the training data (the training parts of all sequences) into three groups of nearly
# equal size: **head** (the most frequent targets), **torso** and **tail** (the rarest). A boundary count goes to the
# group below it, so the groups may differ a little in size; the thresholds are returned with them.
# `metrics_by_group` averages the usual metrics within each group. The train notebook records both for the
# headline protocol (`metrics.json` → `test_by_popularity`), and keeps the per-user ranks in `test_ranks.npz`.

# %%
#| export
POPULARITY_GROUPS = ("head", "torso", "tail")

def popularity_groups(train: list,            # per user: the training part of the sequence (split.train)
                      targets,                # (U,) the evaluated users' target items
                      n_items: int,           # catalogue size
                     ) -> tuple[np.ndarray, dict]:
    "Group index per user (0 head, 1 torso, 2 tail) by the target's training count, and the count thresholds."
    counts = np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in train]), minlength=n_items + 1)
    c = counts[np.asarray(targets, dtype=np.int64)]  # (U,)
    lo, hi = np.quantile(c, [1 / 3, 2 / 3])
    groups = np.where(c > hi, 0, np.where(c > lo, 1, 2))
    return groups, {"tail": f"count <= {lo:g}", "torso": f"{lo:g} < count <= {hi:g}", "head": f"count > {hi:g}"}

def metrics_by_group(ranks, groups, ks=(10, 20)) -> dict:
    "Metrics of the users of each popularity group: {'head': {...,'n_users'}, 'torso': ..., 'tail': ...}."
    from sagerec.evaluate import metrics_from_ranks
    ranks, groups = np.asarray(ranks), np.asarray(groups)
    return {name: {**metrics_from_ranks(ranks[groups == i], ks), "n_users": int((groups == i).sum())}
            for i, name in enumerate(POPULARITY_GROUPS) if (groups == i).any()}


# %% [markdown]
# Six users whose targets occur 9, 9, 4, 4, 1 and 0 times in training: two per group.

# %%
toy_train = [np.array([1] * 9 + [2] * 9), np.array([3] * 4 + [4] * 4 + [5])]
grp, thr = popularity_groups(toy_train, [1, 2, 3, 4, 5, 6], n_items=6)
by_group = metrics_by_group(np.array([0, 30, 3, 0, 40, 50]), grp)
grp, thr, {g: (m["recall@10"], m["n_users"]) for g, m in by_group.items()}

# %%
test_eq(grp.tolist(), [0, 0, 1, 1, 2, 2])
test_eq({g: m["recall@10"] for g, m in by_group.items()}, {"head": 0.5, "torso": 1.0, "tail": 0.0})
test_close(by_group["torso"]["ndcg@10"], (1 / np.log2(5) + 1) / 2, eps=1e-9)

# %% [markdown]
# The published Beauty runs (their table is in the README), under the masked full-ranking protocol, labelled by
# variant and learning-rate schedule (`lr_patience` 5 = the paper's, 0 = constant); a bar with whiskers averages
# several seeds (the seeds of each label are listed below the figure):

# %%
real = runs_table([results_dir()], params=("lr_patience",))
real = real[real["dataset"] == "beauty"]
real = real.assign(run_label=real["variant"] + ", lr_patience " + real["lr_patience"].astype(str))
fig = plot_runs(real, label="run_label")
save_fig("results_beauty")
seed_summary(real, by=("run_label",))["seeds"]

# %%
#| hide
import nbdev; nbdev.nbdev_export()
