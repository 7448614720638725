# %% [markdown]
# # The paper's tables
# > Tables 3–6 and Figure 2 laid out as the paper prints them, the cold-start split of §5.8, a new item placed from its text alone, and the learned-embedding case studies: functions that `nbs/paper.ipynb` applies to the runs in `results/`.

# %%
#| default_exp paper

# %%
#| export
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sagerec.core import check, project_root
from sagerec.report import METRICS, load_run, paired_test, run_row, seed_summary

# %%
#| hide
import tempfile
from fastcore.test import test_close, test_eq, test_fail


# %% [markdown]
# ## Which runs make which row: grid files with labels
#
# Every experiment of the paper is a grid file in `configs/grids/` (run by `tools/grid.py`). A run of a grid may carry
# a `label`: the row (or bar) it belongs to in the paper's table. `grid_runs` expands a grid file as the queue does
# (name template, seeds) and keeps the label, so a table can say which of its rows are missing and which command
# produces them.

# %%
#| export
def grid_path(grid: Path | str) -> Path:
    "A grid file: a path as given, or a bare file name (`paper_main_toys.yaml`) looked up in the project's `configs/grids/`."
    path = Path(grid)
    if not path.exists() and path.parent == Path("."):
        root = project_root() or project_root(Path(__file__).parent)  # from the working folder, else the package's checkout
        if root is not None: path = root / "configs" / "grids" / path
    check(path.exists(), f"No grid file {str(grid)!r}: the paper's grids are configs/grids/paper_*.yaml.")
    return path

def grid_runs(path: Path | str) -> pd.DataFrame:
    "The runs of a grid file: one row per (run, seed) with `run` (folder name), `label` (default: the run's name) and `seed`."
    import yaml
    path = grid_path(path)
    g = yaml.safe_load(path.read_text()) or {}
    check(g.get("runs"), f"{path} lists no runs.")
    rows = []
    for r in g["runs"]:
        for s in r.get("seeds", g.get("seeds", [0])):
            name = r["name"].format(seed=s) if "{seed}" in r["name"] else f"{r['name']}-s{s}"
            rows.append({"grid": path.name, "label": r.get("label", r["name"]), "run": name, "seed": s})
    return pd.DataFrame(rows)

def grid_table(grids,                          # grid files (their runs, in order)
               results: Path | str,            # folder of published run folders (results/)
               protocol: str = "full-masked",  # the test protocol of the metrics
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    "(`runs_table`-like rows of the finished runs of `grids`, with their `label`; the runs not finished yet)."
    results = Path(results)
    plan = pd.concat([grid_runs(g) for g in grids], ignore_index=True).drop_duplicates("run")
    done, missing = [], []
    for r in plan.itertuples():
        f = results / r.run
        run = load_run(f) if (f / "metrics.json").exists() and (f / "params.json").exists() else None
        if run is not None and protocol in run["metrics"].get("test", {}):
            done.append({"label": r.label, "grid": r.grid, **run_row(run, protocol), "metrics": run["metrics"]})
        else: missing.append(r._asdict())
    cols = ["label", "grid", "dataset", "variant", "seed", "protocol", *METRICS, "best_epoch", "epochs_run", "s/epoch", "hardware", "run", "metrics"]
    miss = pd.DataFrame(missing, columns=["grid", "label", "run", "seed"]) if missing else pd.DataFrame(columns=["grid", "label", "run", "seed"])
    return pd.DataFrame(done, columns=cols), miss

def missing_line(missing: pd.DataFrame,  # the second frame of `grid_table`
                ) -> str:
    "One sentence per grid: which rows are not published yet (labels and seeds) and the command that makes them."
    if not len(missing): return "Every run of the grid is published."
    out = []
    for grid, m in missing.groupby("grid", sort=False):
        per = m.groupby("label", sort=False)["seed"].apply(lambda s: ",".join(map(str, sorted(s))))
        out.append(f"Not run yet ({len(m)} run{'s' * (len(m) > 1)}, `python tools/grid.py run configs/grids/{grid} --jobs 2`): "
                   + "; ".join(f"{l} (seed{'s' * (',' in s)} {s})" for l, s in per.items()) + ".")
    return "\n\n".join(out)

def capped_line(done: pd.DataFrame,  # the first frame of `grid_table`
               ) -> str:
    "One sentence naming the published runs that the epoch cap ended, not early stopping (their rows may be low); '' if none."
    capped = done[[m.get("stop_reason") == "max_epochs" for m in done["metrics"]]]
    if not len(capped): return ""
    per = capped.groupby("label", sort=False).apply(
        lambda g: ", ".join(f"seed {r.seed}: best epoch {r.best_epoch} of {r.epochs_run}" for r in g.itertuples()), include_groups=False)
    return ("Ended by the epoch cap, not by early stopping (these rows may be low): "
            + "; ".join(f"{l} ({s})" for l, s in per.items()) + ".")


# %% [markdown]
# A fake results folder for the lessons below: three methods on one dataset, five seeds each, with known metrics
# (`ours` ahead of `b` by a clear margin on every seed, `c` last).

# %%
#| export
def fake_run(folder: Path | str, name: str, dataset: str = "beauty", variant: str = "sagerec", seed: int = 0,
             metrics: dict | None = None, **extra) -> Path:
    "Write a minimal finished run folder (params.json, metrics.json) for tests and lessons."
    f = Path(folder) / name; f.mkdir(parents=True, exist_ok=True)
    m = metrics or {k: 0.01 for k in METRICS}
    params = {"dataset": dataset, "variant": variant, "seed": seed, "run_name": name, "environment": {"cpu_count": 2}}
    metr = {"test": {p: dict(m, n_users=100) for p in ("full-masked", "full-unmasked", "sampled100")}, "best_epoch": 10,
            "epochs_run": 30, "seconds_per_epoch": 2.0, **extra}
    (f / "params.json").write_text(json.dumps(params)); (f / "metrics.json").write_text(json.dumps(metr))
    return f


# %%
tmp = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
for s in range(5):
    base = 0.03 + 0.001 * rng.standard_normal()
    for label, v, gain in (("ours", "sagerec", 1.2), ("b", "sasrec", 1.0), ("c", "gru4rec", 0.6)):
        fake_run(tmp / "results", f"x-{label}-s{s}", variant=v, seed=s, metrics={m: base * gain * (2 if "20" in m else 1) for m in METRICS})
(tmp / "grid.yaml").write_text("seeds: [0, 1, 2, 3, 4]\nruns:\n"
    "  - {name: x-ours, label: SAGERec}\n  - {name: x-b, label: SASRec}\n  - {name: x-c, label: GRU4Rec}\n  - {name: x-d, label: BERT4Rec, seeds: [0]}\n")
done, missing = grid_table([tmp / "grid.yaml"], tmp / "results")
done[["label", "seed", "ndcg@10"]].head(4), missing

# %%
test_eq(len(done), 15); test_eq(missing["run"].tolist(), ["x-d-s0"]); test_eq(set(done["label"]), {"SAGERec", "SASRec", "GRU4Rec"})

# %% [markdown]
# Under a table, `missing_line` names what is not run yet and the command that runs it; a bare grid name is looked up
# in the project's `configs/grids/` (so notebooks anywhere in the project can say `grid_table(["paper_main_toys.yaml"], …)`).

# %%
print(missing_line(missing))
test_eq(missing_line(missing), "Not run yet (1 run, `python tools/grid.py run configs/grids/grid.yaml --jobs 2`): BERT4Rec (seed 0).")
test_eq(missing_line(missing.iloc[:0]), "Every run of the grid is published.")

# %% [markdown]
# `capped_line` names the published runs that stopped at the epoch cap instead of by early stopping: a row still
# improving when training ended may be low, and a reader should see so under the table.

# %%
capped = done.copy()
capped.at[3, "metrics"] = {**capped.at[3, "metrics"], "stop_reason": "max_epochs"}  # one run ended by the cap
print(capped_line(capped))
test_eq(capped_line(capped), f"Ended by the epoch cap, not by early stopping (these rows may be low): {capped.at[3, 'label']} (seed {capped.at[3, 'seed']}: best epoch 10 of 30).")
test_eq(capped_line(done), "")
test_eq(grid_path("paper_main_beauty.yaml").parent.name, "grids")
test_fail(lambda: grid_path("no_such_grid.yaml"), contains="No grid file")


# %% [markdown]
# ## Tables 3–4: mean ± std, best in bold, second underlined, the paired t-test
#
# The paper reports each method's mean over five seeds and marks SAGERec's gain over the second-best method as
# significant when a paired t-test gives p < 0.01. `paper_table` does exactly that on the rows of `grid_table`:
# for every metric the strongest *other* method (highest mean) is the reference, and each of `ours` is tested against
# it over the seeds both have (`sagerec.report.paired_test`). A row with fewer seeds than `full_seeds` is marked.

# %%
#| export
def paper_table(done: pd.DataFrame,                 # from `grid_table`, one dataset and protocol
                ours: tuple[str, ...] = ("SAGERec",), # labels of our rows (tested against the best other row)
                metrics: tuple[str, ...] = METRICS,
                alpha: float = 0.01,                # significance level of the paired t-test (paper: 0.01)
                full_seeds: int = 5,                # the paper's protocol: rows with fewer seeds are marked
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    "(numeric summary: mean, std, n per label and metric; the tests of each `ours` row against the best other row, per metric)."
    check(len(done) > 0, "No finished runs to tabulate: run the grid first (python tools/grid.py run <grid>).")
    check(done["dataset"].nunique() == 1 and done["protocol"].nunique() == 1, "paper_table takes one dataset under one protocol: filter first.")
    g = done.groupby("label", sort=False)
    summ = pd.concat({m: g[m].agg(["mean", "std"]) for m in metrics}, axis=1)
    summ[("seeds", "n")] = g["seed"].nunique(); summ[("seeds", "list")] = g["seed"].apply(lambda s: ",".join(map(str, sorted(s))))
    summ[("seeds", "short")] = summ[("seeds", "n")] < full_seeds
    tests = []
    others = [l for l in summ.index if l not in ours]
    for o in [l for l in ours if l in summ.index]:
        for m in metrics:
            if not others: continue
            ref = summ.loc[others, (m, "mean")].idxmax()
            row = {"ours": o, "metric": m, "vs": ref, "ours mean": summ.loc[o, (m, "mean")], "vs mean": summ.loc[ref, (m, "mean")]}
            row["gain"] = row["ours mean"] / row["vs mean"] - 1
            common = set(done[done.label == o].seed) & set(done[done.label == ref].seed)
            if len(common) >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pt = paired_test(done[done.label.isin([o, ref])], o, ref, label="label", metrics=(m,))
                row.update(p=float(pt.loc[m, "p"]), seeds=int(pt.loc[m, "seeds"]))
            else: row.update(p=np.nan, seeds=len(common))
            row["significant"] = bool(row["p"] < alpha and row["gain"] > 0) if row["seeds"] >= 2 else False
            tests.append(row)
    return summ, pd.DataFrame(tests)

def format_paper_table(summ: pd.DataFrame,            # from `paper_table`
                       tests: pd.DataFrame | None = None,  # from `paper_table`: marks significant gains with '*'
                       metrics: tuple[str, ...] = METRICS,
                       digits: int = 4,
                       style: str = "markdown",       # 'markdown' (**bold**, <u>underline</u>) or 'plain' (no marks)
                      ) -> pd.DataFrame:
    "Strings 'mean ± std' per cell, the best mean of each column in bold and the second underlined; rows short of seeds say so."
    out = pd.DataFrame(index=summ.index)
    for m in metrics:
        mean, std = summ[(m, "mean")], summ[(m, "std")]
        order = mean.sort_values(ascending=False).index.tolist()
        cells = []
        for l in summ.index:
            c = f"{mean[l]:.{digits}f}" + (f" ± {std[l]:.{digits}f}" if pd.notna(std[l]) else "")
            if tests is not None and len(tests) and ((tests.ours == l) & (tests.metric == m) & tests.significant).any(): c += "*"
            if style == "markdown" and len(order) > 1:
                if l == order[0]: c = f"**{c}**"
                elif l == order[1]: c = f"<u>{c}</u>"
            cells.append(c)
        out[m] = cells
    out["seeds"] = [f"{s}" + (" (short)" if short else "") for s, short in zip(summ[("seeds", "list")], summ[("seeds", "short")])]
    return out


# %%
summ, tests = paper_table(done)
fmt = format_paper_table(summ, tests)
fmt

# %%
test_eq(fmt.loc["SAGERec", "ndcg@10"].startswith("**"), True); test_eq(fmt.loc["SASRec", "ndcg@10"].startswith("<u>"), True)
test_eq(set(tests["vs"]), {"SASRec"}); assert tests["significant"].all() and (tests["p"] < 0.01).all()
test_eq(fmt.loc["SAGERec", "ndcg@10"].endswith("***"), True)  # '*' (p < 0.01) inside the bold marks
test_eq(fmt.loc["GRU4Rec", "seeds"], "0,1,2,3,4")

# %% [markdown]
# The test is not a formality: when our row is *behind* the best other method, or the difference is noise, nothing
# is marked. Two seeds with opposite differences:

# %%
noisy = pd.DataFrame([{"label": l, "dataset": "d", "protocol": "full-masked", "seed": s, **{m: v for m in METRICS}}
                      for l, s, v in (("SAGERec", 0, 0.030), ("SAGERec", 1, 0.020), ("SASRec", 0, 0.021), ("SASRec", 1, 0.028))])
s2, t2 = paper_table(noisy)
t2[["metric", "vs", "gain", "p", "significant"]]

# %%
assert not t2["significant"].any()
test_eq(format_paper_table(s2, t2).loc["SAGERec", "seeds"], "0,1 (short)")


# %% [markdown]
# ## Our runs beside the published numbers
#
# A reader's first question about a baseline is whether it is as good as the one they know. `configs/reference/published.yaml`
# holds other papers' numbers for the same split and protocol, each with its source; `published_comparison` puts our
# mean beside each one and flags a row more than `tolerance` below it (the baselines issue asks for an explanation of
# every such gap). The published values are never mixed into our tables: they only appear in this comparison.

# %%
#| export
def load_published(path: Path | str, dataset: str) -> pd.DataFrame:
    "Published numbers for `dataset` from a YAML file like `configs/reference/published.yaml`: one row per (label, source) with the metrics given."
    import yaml
    path = Path(path)
    check(path.exists(), f"No file {str(path)!r}: the published numbers live in configs/reference/published.yaml.")
    doc = yaml.safe_load(path.read_text()) or {}
    rows = doc.get(dataset) or []
    sources = doc.get("sources", {})
    unknown = sorted({r.get("source") for r in rows} - set(sources))
    check(not unknown, f"{path.name}: entries of {dataset!r} cite unknown sources {unknown}; add them under `sources`.")
    return pd.DataFrame([{**r, "source": sources[r["source"]]} for r in rows])

def published_comparison(done: pd.DataFrame,                # from `grid_table`, one dataset, full ranking masked
                         published: pd.DataFrame,           # from `load_published`
                         tolerance: float = 0.15,           # flag ours more than this share below the published value
                        ) -> pd.DataFrame:
    "One row per (label, metric) that both have: our mean and seeds, the published value, the relative difference, and a flag."
    check(done["protocol"].eq("full-masked").all(), "The published numbers are full ranking with the history masked: pass that protocol's runs.")
    rows = []
    for p in published.to_dict("records"):
        ours = done[done.label == p["label"]]
        for m in METRICS:
            if len(ours) == 0 or pd.isna(p.get(m, np.nan)): continue
            mean = float(ours[m].mean())
            rows.append({"label": p["label"], "metric": m, "ours": mean, "seeds": ",".join(map(str, sorted(ours.seed))),
                         "published": float(p[m]), "difference": mean / float(p[m]) - 1,
                         f"more than {tolerance:.0%} below": mean < (1 - tolerance) * float(p[m]), "source": p["source"]})
    return pd.DataFrame(rows, columns=["label", "metric", "ours", "seeds", "published", "difference", f"more than {tolerance:.0%} below", "source"])


# %% [markdown]
# On the fake runs: `ours` is at 0.036 NDCG@10 on average; a published 0.0370 is within 15%, a published 0.050 is not.

# %%
pub_file = tmp / "published.yaml"
pub_file.write_text("sources: {x: 'a paper'}\nbeauty:\n  - {label: SAGERec, source: x, ndcg@10: 0.037}\n"
                    "  - {label: SASRec, source: x, ndcg@10: 0.050, recall@20: 0.06}\n  - {label: Nobody, source: x, ndcg@10: 0.1}\n")
cmp = published_comparison(done, load_published(pub_file, "beauty"))
cmp

# %%
test_eq(cmp["label"].tolist(), ["SAGERec", "SASRec", "SASRec"])  # rows only where both have the metric; no run -> no row
test_eq(cmp["more than 15% below"].tolist(), [False, True, False])
test_close(cmp["difference"].iloc[0], done[done.label == "SAGERec"]["ndcg@10"].mean() / 0.037 - 1)
test_fail(lambda: load_published(pub_file, "beauty").pipe(lambda d: published_comparison(done.assign(protocol="sampled100"), d)),
          contains="full ranking")
pub_file.write_text("sources: {}\nbeauty:\n  - {label: SASRec, source: y, ndcg@10: 0.05}\n")
test_fail(lambda: load_published(pub_file, "beauty"), contains="unknown sources")


# %% [markdown]
# ## Table 5: the ablations, and the claimed order checked
#
# The paper claims (A) full > every other variant and (D) random graph < every other variant. `ablation_order`
# gives, per metric, the measured order of the means and whether it agrees with the claim.

# %%
#| export
def ablation_order(summ: pd.DataFrame,            # from `paper_table` on the ablation runs
                   best: str, worst: str,          # the labels the paper claims best and worst
                   metrics: tuple[str, ...] = METRICS,
                  ) -> pd.DataFrame:
    "Per metric: the measured order of the labels (by mean), and whether `best` is first and `worst` last as claimed."
    rows = []
    for m in metrics:
        order = summ[(m, "mean")].sort_values(ascending=False).index.tolist()
        rows.append({"metric": m, "order (best first)": " > ".join(order),
                     f"{best} best": order[0] == best if best in order else None,
                     f"{worst} worst": order[-1] == worst if worst in order else None})
    return pd.DataFrame(rows).set_index("metric")


# %%
co = ablation_order(summ, best="SAGERec", worst="GRU4Rec")
co

# %%
assert co["SAGERec best"].all() and co["GRU4Rec worst"].all()
assert not ablation_order(summ, best="SASRec", worst="SAGERec")["SASRec best"].any()


# %% [markdown]
# Why a variant wins or loses is in its checkpoint. `edge_weight_summary` reads what a trained graph layer does with
# its edges: the mean edge weight and the share of edges below 0.1 (the MLP's scale), how the weights rank against
# the text cosines (Spearman, scipy), how evenly each item's incoming weight is spread over its neighbours, and how
# large the propagated term is against the raw row it is added to (median over the items with edges). A fixed-weight
# layer (B) uses the cosines themselves; an untrained edge MLP starts near 0.5 on every edge.

# %%
#| export
def edge_weight_summary(model) -> dict:
    "What a trained graph layer does with its edges: weights vs the text cosines, and the propagated term's size."
    from scipy.stats import spearmanr
    from sagerec.propagation import scatter_logsumexp
    g = getattr(model, "graph", None)
    check(g is not None, "The model has no graph layer (graph_mode 'none'): there are no edge weights to summarise.")
    was = model.training; model.eval()
    with torch.no_grad():
        x = model.item_emb.weight  # (N+1, D) the table the graph layer propagates: the ID rows, plus the text feature's projection
        if getattr(model, "text_proj", None) is not None: x = x + model.text_proj(model.text_feats)
        lw, dst, n = g.log_edge_weights(x).double(), g.edge_index[1], x.shape[0]  # (E,) log weights, exact where weights underflow
        w, c = lw.exp().float().cpu().numpy(), g.edge_weight.cpu().numpy()
        has = torch.zeros(n, dtype=torch.bool, device=x.device); has[g.edge_index[0]] = True
        ratio = ((g(x) - x).norm(dim=1)[has] / x.norm(dim=1)[has].clamp_min(1e-12)).median().item()
        # how evenly each item spreads its incoming weight over its neighbours: exp(entropy) / in-degree, 1 = all equal
        logp = lw - scatter_logsumexp(lw, dst, n)[dst]  # (E,) log of each edge's share of its receiver's incoming weight
        ent = lw.new_zeros(n).index_add_(0, dst, -(logp.exp() * logp))  # (N,)
        deg = torch.bincount(dst, minlength=n)  # (N,) in-degree
        evenness = (ent.exp() / deg.clamp_min(1))[deg > 0].median().item()
    model.train(was)
    rho = float(spearmanr(w, c)[0]) if w.std() > 0 and c.std() > 0 else float("nan")
    return {"mode": g.mode, "edges": int(len(w)), "mean weight": float(w.mean()), "share < 0.1": float((w < 0.1).mean()),
            "Spearman with cosine": rho, "evenness (median)": evenness, "propagated / raw (median)": ratio}


# %%
from sagerec.graph import build_graph
from sagerec.model import build_model
torch.manual_seed(0)
toy_emb = np.vstack([np.zeros(16), np.random.default_rng(0).standard_normal((40, 16))]).astype(np.float32)
toy_graph = build_graph(toy_emb, k=3, tau=0.0)
summaries = {mode: edge_weight_summary(build_model("sagerec", 40, {"dim": 8, "graph_mode": mode}, toy_graph)) for mode in ("learned", "fixed")}
pd.DataFrame(summaries).T

# %%
test_close(summaries["fixed"]["Spearman with cosine"], 1.0)  # (B) weighs by the cosines themselves
test_close(summaries["fixed"]["mean weight"], float(toy_graph.edge_weight.mean()), eps=1e-5)
assert 0.3 < summaries["learned"]["mean weight"] < 0.7 and summaries["learned"]["share < 0.1"] == 0  # an untrained MLP: about 0.5 everywhere
test_fail(lambda: edge_weight_summary(build_model("sagerec", 40, {"dim": 8, "graph_mode": "none"})), contains="no graph layer")

# %% [markdown]
# **The weights' scale does not matter, only how they compare.** The layer normalises by the weighted degrees
# ($w_{ij} / \sqrt{d_i d_j}$), so multiplying every weight by the same factor changes nothing it computes. An edge MLP
# whose output bias is pushed far negative (every weight about $e^{-12}$, then $e^{-20}$ times its former size) has
# "cut" every edge below 0.1, yet propagates exactly as before: "mean weight" and "share < 0.1" describe the MLP's
# scale, not what reaches the items. What does is the *evenness* (how evenly an item's incoming weight is spread over
# its neighbours, the exponential of the entropy over the in-degree: 1 when all are equal) and, in the end, the size
# of the propagated term against the raw row.

# %%
shifted = build_model("sagerec", 40, {"dim": 8, "graph_mode": "learned"}, toy_graph)
shift = {}
for b in (-12.0, -20.0):
    with torch.no_grad(): shifted.graph.edge_mlp.lin2.bias.fill_(b)
    shift[f"output bias {b:g}"] = edge_weight_summary(shifted)
pd.DataFrame(shift).T

# %%
a, b = shift.values()
assert a["share < 0.1"] == b["share < 0.1"] == 1 and b["mean weight"] < 1e-3 * a["mean weight"]
test_close(a["propagated / raw (median)"], b["propagated / raw (median)"], eps=1e-5)  # same propagation at any scale
test_close(a["evenness (median)"], b["evenness (median)"], eps=1e-6)
test_close(summaries["fixed"]["evenness (median)"], 1.0, eps=0.1)  # cosines above tau are of similar size: nearly even
assert 0 < summaries["learned"]["evenness (median)"] <= 1


# %% [markdown]
# Every training run with a graph layer records this summary for its best checkpoint in `metrics.json`
# (`edge_weights`, written by `nbs/train.ipynb`), so the comparison needs no checkpoint: `edge_weight_table` lays the
# recorded summaries of a grid's finished runs out as rows (runs published before the field existed have none and
# are left out), beside each run's test NDCG@10.

# %%
#| export
def edge_weight_table(done: pd.DataFrame,  # from `grid_table`: the finished runs, with their `metrics`
                      by_label: bool = True,  # mean over seeds per label (else one row per run)
                     ) -> pd.DataFrame:
    "The `edge_weights` summaries the runs of `done` recorded, one row per run or per label (mean over its seeds)."
    rows = [{"label": r["label"], "seed": r["seed"], "ndcg@10": r["ndcg@10"], **r["metrics"]["edge_weights"]}
            for _, r in done.iterrows() if isinstance(r["metrics"], dict) and r["metrics"].get("edge_weights")]
    if not rows: return pd.DataFrame()
    t = pd.DataFrame(rows)
    if not by_label: return t
    num = t.drop(columns=["label", "mode", "seed"]).columns
    out = t.groupby("label", sort=False)[list(num)].mean()
    return out.assign(mode=t.groupby("label", sort=False)["mode"].first(), seeds=t.groupby("label", sort=False)["seed"].nunique())


# %%
ew = {"learned": summaries["learned"], "fixed": summaries["fixed"]}
for mode, s in ew.items():
    for seed in (0, 1): fake_run(tmp / "ew", f"ew-{mode}-s{seed}", seed=seed, metrics={m: 0.02 + 0.01 * seed for m in METRICS}, edge_weights=s)
fake_run(tmp / "ew", "ew-old-s0")  # published before runs recorded the field
(tmp / "ew.yaml").write_text("seeds: [0, 1]\nruns:\n  - {name: ew-learned, label: learned}\n  - {name: ew-fixed, label: fixed}\n"
                             "  - {name: ew-old, label: old, seeds: [0]}\n")
ew_table = edge_weight_table(grid_table([tmp / "ew.yaml"], tmp / "ew")[0])
ew_table

# %%
test_eq(list(ew_table.index), ["learned", "fixed"]); test_eq(ew_table["seeds"].tolist(), [2, 2])  # the run without the field is left out
test_close(ew_table.loc["fixed", "Spearman with cosine"], 1.0); test_close(ew_table.loc["learned", "ndcg@10"], 0.025)
test_eq(len(edge_weight_table(grid_table([tmp / "ew.yaml"], tmp / "ew")[0], by_label=False)), 4)
# the text variants propagate the ID rows plus the text projection: the summary reads that table, not the ID rows alone
text_model = build_model("sagerec", 40, {"dim": 8, "graph_mode": "fixed", "text_input": True, "text_dim": 4}, toy_graph.with_features(toy_emb))
with torch.no_grad(): text_model.item_emb.weight.zero_()
assert edge_weight_summary(text_model)["propagated / raw (median)"] > 0  # on the ID rows alone (all zero) it would be nan or 0

# %% [markdown]
# ## Figure 2: the graph plug-in, before and after

# %%
#| export
PLUGIN_GRAPHS = {"": "without", "+graph": "learned graph", "+fixed_graph": "fixed graph"}  # label suffix -> bar

def plugin_frame(done: pd.DataFrame,                    # from `grid_table`: labels '<model>', '<model>+graph', '<model>+fixed_graph'
                 models: tuple[str, ...] = ("gru4rec", "bert4rec", "cl4srec"),
                 metrics: tuple[str, ...] = METRICS,
                ) -> pd.DataFrame:
    """Long table (model, graph, metric, seed, value) of the runs of each model without the graph, with the learned
    plug-in and with the plug-in on fixed cosine weights; `graph` is one of `PLUGIN_GRAPHS`' values."""
    rows = []
    for _, r in done.iterrows():
        v = str(r["variant"])
        suffix = next((s for s in PLUGIN_GRAPHS if s and v.endswith(s)), "")
        base = v.removesuffix(suffix)
        if base not in models: continue
        for m in metrics:
            rows.append({"model": base, "graph": PLUGIN_GRAPHS[suffix], "metric": m, "seed": r["seed"], "value": r[m]})
    return pd.DataFrame(rows, columns=["model", "graph", "metric", "seed", "value"])

def plot_plugin(long: pd.DataFrame,                    # from `plugin_frame`
                title: str = "Graph plug-in (Beauty, full ranking, masked)"):
    "Figure 2: one panel per metric, bars per model without / with the graph (learned, fixed); whiskers = std over seeds."
    import matplotlib.pyplot as plt
    import seaborn as sns
    check(len(long) > 0, "No plug-in runs to plot: run configs/grids/paper_plugin_beauty.yaml first.")
    ms = list(dict.fromkeys(long["metric"]))
    bars = [g for g in PLUGIN_GRAPHS.values() if (long["graph"] == g).any()]
    fig, axes = plt.subplots(1, len(ms), figsize=(3.1 * len(ms), 3.0), squeeze=False)
    for ax, m in zip(axes[0], ms):
        sns.barplot(long[long.metric == m], x="model", y="value", hue="graph", hue_order=bars, errorbar="sd", capsize=0.1,
                    err_kws={"linewidth": 1}, ax=ax)
        ax.set(title=m, xlabel="", ylabel="test value" if ax is axes[0][0] else "")
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()  # one legend for the figure, below the panels, where it covers no bar
    fig.legend(handles, labels, loc="lower center", ncol=len(bars), frameon=False, fontsize=9)
    fig.suptitle(title); fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# %% [markdown]
# Fake runs: the two SAGERec labels of the toy grid stand for a model without and with the learned plug-in, and one
# copy of the latter, relabelled, for the plug-in on fixed weights.

# %%
fake = done[done.label != "GRU4Rec"].assign(variant=done["variant"].replace({"sagerec": "gru4rec+graph", "sasrec": "gru4rec"}))
fake = pd.concat([fake, fake[fake.variant == "gru4rec+graph"].assign(variant="gru4rec+fixed_graph")])
pl = plugin_frame(fake)
fig = plot_plugin(pl, title="fake runs")
pl.groupby(["graph", "metric"])["value"].mean().unstack()

# %%
test_eq(len(pl), 3 * 5 * 4); test_eq(set(pl.graph), set(PLUGIN_GRAPHS.values()))
test_eq([t.get_text() for t in fig.legends[0].get_texts()], list(PLUGIN_GRAPHS.values()))  # one figure legend, every bar kind
assert all(ax.get_legend() is None for ax in fig.axes)  # and none inside a panel
assert pl[pl.graph == "learned graph"].value.mean() > pl[pl.graph == "without"].value.mean()
test_eq(len(plugin_frame(fake.assign(variant="caser+graph"))), 0)  # models outside `models` are left out
test_eq(plugin_frame(fake.head(1).assign(variant="bert4rec+fixed_graph"))[["model", "graph"]].iloc[0].tolist(), ["bert4rec", "fixed graph"])


# %% [markdown]
# ## Table 6: efficiency, from what every run records
#
# `nbs/train.ipynb` records the graph's size, the parameter count, peak memory (process RSS; on a GPU also the CUDA
# peak), seconds per epoch and the per-epoch timing history; the wall time to the best checkpoint is the sum of the
# training and validation seconds of the epochs up to the best one, plus the self-supervised pre-training a model
# needs before it (S3-Rec's `pretrain_history`, shown on its own as `pretrain s`). `run s` is what the whole run
# cost: pre-training, every epoch's training and validation, and the test evaluation. Validation ranks every user
# against the whole catalogue each epoch, so for some models it is a large share of the run (compare `run s` with
# `s/epoch` × epochs for TransRec-sub in Table 6 of `nbs/paper.ipynb`), which `s/epoch` alone does not show.

# %%
#| export
def efficiency_row(metrics: dict) -> dict:
    "Table 6 quantities of one run from its metrics.json (NaN where the run did not record them)."
    g, h, best = metrics.get("graph") or {}, metrics.get("history") or [], metrics.get("best_epoch")
    epoch_s = lambda r: (r.get("train_seconds") or 0) + (r.get("valid_seconds") or 0)
    pre = sum(r.get("seconds") or 0 for r in metrics.get("pretrain_history") or [])
    to_best = pre + sum(epoch_s(r) for r in h if best is not None and r["epoch"] <= best)
    test_s = metrics.get("eval_seconds") or {}  # seconds per test protocol
    run = pre + sum(epoch_s(r) for r in h) + sum(test_s.values() if isinstance(test_s, dict) else [test_s])
    return {"nodes": g.get("items", np.nan), "edges": g.get("undirected_edges", np.nan), "parameters": metrics.get("n_params", np.nan),
            "peak RSS MB": metrics.get("peak_rss_mb", np.nan), "peak CUDA MB": metrics.get("peak_cuda_mb", np.nan),
            "s/epoch": metrics.get("seconds_per_epoch", np.nan), "epochs to best": best if best is not None else np.nan,
            "pretrain s": pre, "s to best": to_best if h else np.nan, "run s": run if h else np.nan,
            "device": metrics.get("device_name", metrics.get("device", "?"))}

def efficiency_table(done: pd.DataFrame) -> pd.DataFrame:
    "Table 6: per label, the mean of each efficiency quantity over its seeds (runs from `grid_table`, with `metrics`)."
    check(len(done) > 0 and "metrics" in done, "efficiency_table needs rows of `grid_table` (they carry each run's metrics).")
    rows = pd.DataFrame([{"label": r.label, **efficiency_row(r.metrics)} for r in done.itertuples()])
    num = rows.drop(columns="device").groupby("label", sort=False).mean()
    return num.assign(device=rows.groupby("label", sort=False)["device"].first(), seeds=rows.groupby("label", sort=False).size())


# %%
with_time = fake_run(tmp / "eff", "e-s0", metrics=None, n_params=1234, peak_rss_mb=500.0, graph={"items": 10, "undirected_edges": 15},
                     history=[{"epoch": e, "train_seconds": 2.0, "valid_seconds": 0.5} for e in range(1, 31)], device_name="cpu")
(tmp / "eff.yaml").write_text("runs:\n  - {name: e, label: SAGERec}\n")
eff = efficiency_table(grid_table([tmp / "eff.yaml"], tmp / "eff")[0])
eff

# %%
test_eq(eff.loc["SAGERec", "s to best"], 10 * 2.5); test_eq(eff.loc["SAGERec", "edges"], 15); test_eq(eff.loc["SAGERec", "seeds"], 1)
test_eq(eff.loc["SAGERec", "run s"], 30 * 2.5); test_eq(eff.loc["SAGERec", "pretrain s"], 0)
assert np.isnan(eff.loc["SAGERec", "peak CUDA MB"])

# %% [markdown]
# A model with a pre-training stage (S3-Rec) pays for it before its first epoch: it counts in the time to the best
# checkpoint and in the run's cost; the test evaluation counts in the run's cost only.

# %%
pre_row = efficiency_row({"best_epoch": 2, "eval_seconds": {"full-masked": 3.0, "sampled100": 1.0}, "pretrain_history": [{"epoch": 1, "seconds": 7.0}, {"epoch": 2, "seconds": 8.0}],
                          "history": [{"epoch": e, "train_seconds": 1.0, "valid_seconds": 0.5} for e in (1, 2, 3)]})
{k: pre_row[k] for k in ("pretrain s", "s to best", "run s")}

# %%
test_eq((pre_row["pretrain s"], pre_row["s to best"], pre_row["run s"]), (15.0, 15.0 + 2 * 1.5, 15.0 + 3 * 1.5 + 4.0))


# %% [markdown]
# ## The compute plan: what the missing runs cost
#
# For every label with missing runs, the expected time is the number of missing runs × the mean cost of a finished
# run *of the same label* in the same grid (else in another grid of the same dataset: the same model and recipe). A
# run's cost is its `run s` from `efficiency_row` (pre-training, training and validation of every epoch, test) when
# it recorded its timing history, else its epochs × seconds per training epoch. A label with
# no finished run on this dataset has no measured rate. When the same label has finished runs on another dataset
# (`like`, e.g. Beauty's), its cost there is scaled by how much longer a run takes here than there, the median of that
# ratio over the labels finished on both; such rows say `estimated` and the ratio is in `plan.attrs`. `CPU hours to 3
# seeds` is what the row needs to reach three seeds, the fallback when five are out of reach. Without `like`,
# or with no shared label, the cost stays unknown rather than guessed.

# %%
#| export
def compute_plan(done: pd.DataFrame,               # finished runs of one dataset's grids (`grid_table`)
                 missing: pd.DataFrame,            # their missing runs
                 jobs: int = 2,                    # runs at a time
                 like: pd.DataFrame | None = None, # finished runs of another dataset, to estimate labels never run here
                ) -> pd.DataFrame:
    "Per (grid, label) with missing runs: how many, the s/epoch and epochs of the finished ones, and the CPU hours (`estimated` when scaled from `like`)."
    def run_seconds(d):  # measured wall seconds of each run, else epochs × s/epoch
        measured = d["metrics"].map(lambda m: efficiency_row(m)["run s"]) if "metrics" in d else pd.Series(np.nan, index=d.index)
        return measured.astype(float).fillna(d["s/epoch"] * d["epochs_run"])
    def per_run(d): return run_seconds(d).groupby(d["label"]).mean()  # seconds per run, by label
    here = per_run(done)
    there = per_run(like) if like is not None and len(like) else pd.Series(dtype=float)
    shared = here.index.intersection(there.index)
    ratio = float((here[shared] / there[shared]).median()) if len(shared) else np.nan
    rows = []
    for (grid, label), g in missing.groupby(["grid", "label"], sort=False):
        d = done[(done.grid == grid) & (done.label == label)]  # the same runs; else the same label in another grid
        if not len(d): d = done[done.label == label]
        spe, ep = (d["s/epoch"].mean(), d["epochs_run"].mean()) if len(d) else (np.nan, np.nan)
        est = not len(d) and not np.isnan(ratio) and label in there.index
        per = run_seconds(d).mean() if len(d) else there[label] * ratio if est else np.nan
        rows.append({"grid": grid, "label": label, "missing": len(g), "finished": len(d), "s/epoch": spe, "epochs": ep,
                     "h/run": per / 3600, "CPU hours": len(g) * per / 3600,
                     "CPU hours to 3 seeds": min(len(g), max(0, 3 - len(d))) * per / 3600, "estimated": est})
    out = pd.DataFrame(rows, columns=["grid", "label", "missing", "finished", "s/epoch", "epochs", "h/run", "CPU hours",
                                      "CPU hours to 3 seeds", "estimated"])
    out.attrs.update({"wall hours": out["CPU hours"].sum(min_count=1) / jobs, "run-time ratio to like": ratio})
    return out


# %%
cp = compute_plan(done, missing)
# cp

# %%
test_eq(cp["label"].tolist(), ["BERT4Rec"]); assert np.isnan(cp["CPU hours"].iloc[0]) and not cp["estimated"].iloc[0]
cp2 = compute_plan(done, pd.DataFrame([{"grid": "g", "label": "SASRec", "run": "x", "seed": 9}]))
test_close(cp2["CPU hours"].iloc[0], 2.0 * 30 / 3600)

# %% [markdown]
# A run that recorded its timing history is costed by it, validation, pre-training and test included: the SASRec
# runs below took 3 s of training and 1 s of validation for each of 30 epochs, 20 s of pre-training and 5 s of test.

# %%
timed = done.assign(metrics=[dict(m, history=[{"epoch": e, "train_seconds": 3.0, "valid_seconds": 1.0} for e in range(1, 31)],
                                  pretrain_history=[{"epoch": 1, "seconds": 20.0}], eval_seconds={"full-masked": 5.0}) for m in done["metrics"]])
cp_timed = compute_plan(timed, pd.DataFrame([{"grid": "g", "label": "SASRec", "run": "x", "seed": 9}]))
test_close(cp_timed["h/run"].iloc[0], (20 + 30 * 4.0 + 5) / 3600)
test_close(cp_timed["CPU hours to 3 seeds"].iloc[0], 0)  # SASRec already has five finished runs

# %% [markdown]
# With another dataset's runs as `like`: if SASRec and SAGERec took three times as long per run there and BERT4Rec ran
# there, BERT4Rec's missing run here is estimated at a third of its time there.

# %%
other = done.assign(**{"s/epoch": done["s/epoch"] * 3})
other = pd.concat([other, other[other.label == "SASRec"].assign(label="BERT4Rec", **{"s/epoch": 9.0})], ignore_index=True)
cp3 = compute_plan(done, missing, like=other)
cp3[["label", "CPU hours", "estimated"]], cp3.attrs["run-time ratio to like"]

# %%
test_close(cp3.attrs["run-time ratio to like"], 1 / 3); assert cp3["estimated"].iloc[0]
test_close(cp3["CPU hours"].iloc[0], 9.0 * 30 / 3 / 3600)

# %% [markdown]
# ## Cold start (§5.8): the split
#
# In the standard 5-core split almost every test target also occurs in training, so the cold set is *made*:
# `pick_cold_items` draws `n` items uniformly at random (NumPy `default_rng(seed)`) from the distinct test targets
# that occur in training, and `cold_split` removes every occurrence of them from every model input — the training
# sequences and the validation and test inputs — so the model never sees them as history or as a training target.
# They stay in the catalogue, keep their text (so the semantic graph still links them), and stay the test (and
# validation) targets of their users, who form the cold user set (`cold_users`). Users whose input would become
# empty are refused with a clear error (none occur with the default seed on Beauty or `beauty-mini`).

# %%
#| export
COLD_RULE = "n items drawn uniformly (numpy default_rng(seed)) from the distinct test targets that occur in training"

def pick_cold_items(split, n: int = 100, seed: int = 0) -> np.ndarray:
    "The cold items: `n` distinct test-target items that occur in training, drawn with `seed` (sorted)."
    trained = np.zeros(split.n_items + 1, bool)
    for s in split.train: trained[s] = True
    cand = np.unique(split.test_target)
    cand = cand[trained[cand]]
    check(isinstance(n, (int, np.integer)) and 1 <= n <= len(cand), f"n must be between 1 and {len(cand)} (the test targets seen in training), not {n!r}.")
    return np.sort(np.random.default_rng(seed).choice(cand, size=n, replace=False))

def cold_split(split, items):
    "A copy of the leave-one-out `split` with every occurrence of `items` removed from the training sequences and the validation and test inputs."
    from sagerec.data import LeaveOneOut
    items = np.asarray(items, dtype=np.int64)
    check(len(items) > 0 and items.min() >= 1 and items.max() <= split.n_items, f"cold items must be ids in 1..{split.n_items}.")
    drop = np.zeros(split.n_items + 1, bool); drop[items] = True
    keep = lambda seqs: [s[~drop[s]] for s in seqs]
    out = LeaveOneOut(keep(split.train), keep(split.valid_input), split.valid_target.copy(), keep(split.test_input), split.test_target.copy(), split.n_items)
    empty = [u for u, s in enumerate(out.test_input) if len(s) == 0] + [u for u, s in enumerate(out.valid_input) if len(s) == 0]
    if empty: check(False, f"{len(set(empty))} user(s) would have no input left without the cold items (e.g. user {empty[0]}): draw another seed.")
    return out

def cold_users(split, items) -> np.ndarray:
    "(U,) bool: the users whose test target is one of `items`."
    return np.isin(split.test_target, np.asarray(items))


# %%
from sagerec.data import load_dataset
mini = load_dataset("beauty-mini"); sp = mini.split()
cold = pick_cold_items(sp, 100, seed=0)
csp = cold_split(sp, cold)
cu = cold_users(csp, cold)
seen_after = np.isin(np.concatenate(csp.train + csp.test_input + csp.valid_input), cold).sum()
dict(cold_items=len(cold), cold_users=int(cu.sum()), training_interactions=(sum(map(len, sp.train)), sum(map(len, csp.train))), cold_in_any_input=int(seen_after))

# %%
test_eq(seen_after, 0); test_eq(len(set(cold.tolist())), 100); assert cu.sum() >= 100
test_eq(pick_cold_items(sp, 100, seed=0), cold); assert not np.array_equal(pick_cold_items(sp, 100, seed=1), cold)
test_eq(csp.test_target, sp.test_target)
test_fail(lambda: pick_cold_items(sp, 10**6), contains="must be between")


# %% [markdown]
# ## A new item after training: its row from its text alone
#
# A model trained without an item has no trained row for it. `text_rows` gives such items a row without retraining:
# the cosine-weighted mean of the learned rows of their `k` most similar *trained* items by text (the same Sentence-BERT
# vectors the graph is built from); a graph model then adds its propagation over the semantic graph, which links the
# new item to its neighbours, when it builds its tables. It writes the raw table `item_emb` in place.

# %%
#| export
@torch.no_grad()
def text_rows(model,                  # a trained SeqRecModel (its `item_emb` is written in place)
              items,                  # ids of the new items (rows never trained)
              emb,                    # (N+1, d) item text embeddings, unit-norm (sagerec.embed.item_embeddings)
              k: int = 3,             # trained neighbours averaged per new item
             ) -> pd.DataFrame:
    "Set the raw rows of `items` to the cosine-weighted mean of their `k` nearest trained items by text; return the neighbours used."
    check(hasattr(model, "item_emb") and getattr(model, "text_proj", None) is None,
          "text_rows needs a model whose item table is `item_emb` (not a text-input variant).")
    items = np.asarray(items, dtype=np.int64)
    E = torch.as_tensor(np.asarray(emb), dtype=torch.float32)
    check(E.shape[0] <= model.item_emb.weight.shape[0], f"emb has {E.shape[0]} rows, more than the model's table ({model.item_emb.weight.shape[0]}).")
    E = torch.cat([E, E.new_zeros(model.item_emb.weight.shape[0] - E.shape[0], E.shape[1])])  # extra rows (a mask token) are never neighbours
    sims = E[torch.as_tensor(items)] @ E.T  # (n, N+1)
    sims[:, 0] = -np.inf; sims[:, torch.as_tensor(items)] = -np.inf; sims[:, len(emb):] = -np.inf  # no padding, new item or extra row
    w, nb = sims.topk(k, dim=1)  # (n, k)
    wts = w.clamp_min(0) + 1e-8
    W = model.item_emb.weight
    W[torch.as_tensor(items)] = ((wts / wts.sum(1, keepdim=True)).unsqueeze(-1).to(W) * W[nb]).sum(1)
    if hasattr(model, "_cache"): model._cache = None
    return pd.DataFrame({"item": items, "neighbours": nb.tolist(), "cosine": w.numpy().round(4).tolist()})


# %% [markdown]
# On `beauty-mini`: SAGERec (d = 32) trained for 10 epochs on the cold split, evaluated on the cold users (full ranking,
# history masked) as trained (the cold rows only ever saw gradients as sampled negatives and through propagation) and
# after `text_rows`. A fixture of 148 cold users, where one hit moves Recall@10 by 0.007: the numbers show that the
# path works end to end, not how well it works at scale (see
# `configs/grids/paper_cold_beauty.yaml` and `nbs/paper.ipynb` for Beauty).

# %%
#| export
def cold_metrics(model, split, items, ks=(10, 20), **kw) -> dict:
    "Test metrics (full ranking, history masked) over the users whose test target is one of `items`."
    from sagerec.evaluate import evaluate, metrics_from_ranks
    ranks = np.asarray(evaluate(model, split, "test", ks=ks, return_ranks=True, **kw)["ranks"])
    mask = cold_users(split, items)
    return {**metrics_from_ranks(ranks[mask], ks), "n_users": int(mask.sum())}


# %%
from sagerec.embed import item_embeddings
from sagerec.graph import build_graph
from sagerec.model import build_model
from sagerec.training import TrainConfig, train
torch.manual_seed(0)
emb_mini = item_embeddings(mini, progress=False)
g_mini = build_graph(emb_mini, k=3)
m_cold = build_model("sagerec", mini.n_items, dict(dim=32, max_len=20), g_mini)
_ = train(m_cold, csp, TrainConfig(epochs=10, max_len=20, batch_size=128, patience=0, progress=False, num_threads=1, seed=0))
before = cold_metrics(m_cold, csp, cold, max_len=20)
used = text_rows(m_cold, cold, emb_mini, k=3)
after = cold_metrics(m_cold, csp, cold, max_len=20)
pd.DataFrame({"as trained": before, "rows from text": after}).T.round(4)

# %%
assert used["neighbours"].map(lambda nb: not set(nb) & set(cold.tolist())).all()
test_eq(after["n_users"], int(cu.sum()))
for m in (before, after): assert 0 <= m["ndcg@10"] <= m["recall@10"] <= m["recall@20"] <= 1


# %% [markdown]
# A cold-start run records both scorings in its `metrics.json` under `test_cold` (the train notebook's `cold_items`
# parameter). `cold_table` lays the finished runs of a cold-start grid out as the paper's §5.8 table: one row per
# model and scoring, the mean and standard deviation over seeds (`sagerec.report.seed_summary`).

# %%
#| export
def cold_table(done: pd.DataFrame,                              # from `grid_table` on a cold-start grid
               metrics: tuple[str, ...] = ("ndcg@10", "recall@10"),
              ) -> pd.DataFrame:
    "Per label and cold scoring ('as_trained', 'text_rows'): mean ± std over seeds of `metrics` on the cold users."
    check("metrics" in done, "cold_table needs rows of `grid_table` (they carry each run's metrics).")
    rows = [{"variant": r.label, "cold scoring": kind, "seed": r.seed, **{k: m[k] for k in (*metrics, "n_users")}}
            for r in done.itertuples() for kind, m in (r.metrics.get("test_cold") or {}).items()]
    check(len(rows) > 0, "None of these runs has cold-start metrics (`test_cold`): run the train notebook with `-p cold_items 100`.")
    out = seed_summary(pd.DataFrame(rows), by=("variant", "cold scoring"), metrics=(*metrics, "n_users"))
    return out.drop(columns=["n_users std"]).rename(columns={"n_users mean": "cold users"}).rename_axis(["model", "cold scoring"])


# %%
for s in (0, 1):
    fake_run(tmp / "cold", f"c-s{s}", seed=s, test_cold={"as_trained": {"ndcg@10": 0.0, "recall@10": 0.0, "n_users": 294},
                                                      "text_rows": {"ndcg@10": 0.008 + s / 1000, "recall@10": 0.014, "n_users": 294}})
(tmp / "cold.yaml").write_text("seeds: [0, 1]\nruns:\n  - {name: c, label: SASRec}\n")
ct = cold_table(grid_table([tmp / "cold.yaml"], tmp / "cold")[0])
ct

# %%
test_eq(ct.loc[("SASRec", "text_rows"), "ndcg@10 mean"], 0.0085); test_eq(ct.loc[("SASRec", "as_trained"), "seeds"], "0,1")
test_eq(ct.loc[("SASRec", "text_rows"), "cold users"], 294)
test_fail(lambda: cold_table(grid_table([tmp / "eff.yaml"], tmp / "eff")[0]), contains="has cold-start metrics")


# %% [markdown]
# ## Case studies: learned embeddings of an item and its neighbours
#
# `embedding_cosines` reads a checkpoint's raw item table (`item_emb.weight`, what the sequence model learned before
# any propagation) and gives the cosine of each pair of items, for comparing SASRec with SAGERec (§5.8: 352–4537).

# %%
#| export
def checkpoint_table(path: Path | str, key: str = "item_emb.weight") -> torch.Tensor:
    "The item table (N+1, d) stored in a training checkpoint (best.pt / last.pt)."
    check(Path(path).exists(), f"No checkpoint at {str(path)!r}: point at a run folder's best.pt.")
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file (holds RNG states)
    check(isinstance(state, dict) and "model" in state, f"{path} is not a checkpoint written by sagerec.training.train.")
    state = state["model"]
    check(key in state, f"{path} has no {key!r}; its tables: {[k for k in state if k.endswith('weight')][:8]}.")
    return state[key].float()

def embedding_cosines(table, pairs) -> pd.DataFrame:
    "Cosine of the rows of `table` for each (i, j) in `pairs`."
    T = torch.nn.functional.normalize(torch.as_tensor(table, dtype=torch.float32), dim=1)
    return pd.DataFrame([{"i": i, "j": j, "cosine": float(T[i] @ T[j])} for i, j in pairs])


# %%
from sagerec.training import save_checkpoint
save_checkpoint(tmp / "m.pt", {"model": m_cold.state_dict()})
cos = embedding_cosines(checkpoint_table(tmp / "m.pt"), [(1, 1), (1, 2)])
cos

# %%
test_close(cos.cosine.iloc[0], 1.0, eps=1e-5); test_fail(lambda: checkpoint_table(tmp / "m.pt", "nope"), contains="has no")

# %%
#| hide
import nbdev; nbdev.nbdev_export()
