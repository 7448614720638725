# %% [markdown]
# # Accuracy: the training recipe, the objective, and whether the graph helps
# > Every table here is built from the published runs in `results/` (their `params.json` and `metrics.json`); rerun it with `papermill nbs/accuracy.ipynb out.ipynb -p results_folder runs`.

# %% [markdown]
# **Protocol.** Amazon Beauty (2014 5-core: 22,363 users, 12,101 items), leave-one-out (last item = test,
# second-to-last = validation), full ranking over all items with the user's history masked, Recall and NDCG at
# 10 and 20 averaged over all 22,363 test users; the checkpoint with the best validation NDCG@10 is tested.
# Every run: one CPU thread on a 2-core machine (the `hardware` column), constant learning rate
# (`lr_patience 0`, see the README), early stopping after 20 validations without a better validation NDCG@10.
# Results are bit-identical only at the same thread count.
#
# **What we compare against** (published by others on the same split and protocol, *not* our runs; numbers as
# printed in the cited tables): SASRec trained with its original BCE recipe, Recall@10 0.0605 / NDCG@10 0.0318
# (S3-Rec / ICLRec code family); CL4SRec 0.0681 / 0.0299 (same family); SASRec trained with cross-entropy or
# sampled softmax, NDCG@10 about 0.053 (gSASRec / eSASRec benchmark tables); BSARec 0.1008 / 0.0611 (its
# official log).

# %% tags=["parameters"]
results_folder: str = "../results"  # a folder of run folders (results/, or runs/ for your own)
dataset: str = "beauty"             # which dataset's runs to tabulate
runs_folder: str = "../runs"        # where the runs' checkpoints are (results/ keeps no weights): read for the learned gates

# %%
from sagerec.params import notebook_params  # every parameter checked (names, types, ranges) before any work
globals().update(notebook_params(globals()))

# %%
import json
from pathlib import Path

import pandas as pd

from sagerec.core import save_fig
from sagerec.report import ablation_table, graph_tests, plot_runs, recipe_summary, reference_recipe

# %% [markdown]
# ## The reference recipe
#
# `sagerec.report.reference_recipe`: the settings of `configs/<dataset>.yaml` (the paper's, as this project first
# read them) over the train notebook's defaults, with a constant learning rate. Each row below names what
# differs from it (`sagerec.report.changed_settings`).

# %%
REFERENCE = reference_recipe(dataset)
runs = ablation_table([results_folder], REFERENCE, extra=("variant",))
runs = runs[runs["dataset"] == dataset]
runs.groupby(["variant", "change"]).size().rename("runs").to_frame()

# %%
assert len(runs) > 0 and runs["change"].notna().all()

# %% [markdown]
# ## Part 1 — the no-graph variant (our SASRec) under BCE: one factor at a time
#
# Mean ± standard deviation over the seeds run, the change of NDCG@10 against the reference rows, and a paired
# t-test over common seeds where at least two exist (`sagerec.report.recipe_summary`). Seconds per epoch depend on
# how loaded the shared CPU was, so they are indicative only.

# %%
bce = runs[(runs["variant"] == "sasrec") & (runs["loss"].fillna("bce") == "bce")]
recipe_table = recipe_summary(bce)
recipe_table

# %%
assert "reference" in recipe_table.index

# %%
fig = plot_runs(bce.assign(label=bce["change"]), label="label")
save_fig("accuracy_recipe")

# %% [markdown]
# ### Length-sorted batches and what the loss averages over
#
# The trainer packs users of similar length into a batch (`bucket`, an epoch about 7× cheaper on Beauty) and, like
# SASRec, averages the loss over the batch's target positions (`loss_norm "batch"`). Together these give a batch of
# short users the same step as a batch of long ones: each position of a short user weighs far more than under
# SASRec's own sampler (random users, `bucket 0`). `loss_norm "position"` keeps the packing and weighs every
# position of the epoch the same (the batch's mean loss × its targets / the mean targets per batch). One epoch's
# batches on Beauty (seed 0), and the share of the epoch's gradient weight that goes to users with the shortest
# inputs:

# %%
#| slow
import numpy as np

from sagerec.data import load_dataset
from sagerec.training import TrainingData

split = load_dataset(dataset).split()
td = TrainingData(split.train, split.n_items, max_len=REFERENCE["max_len"])
cut = int(np.quantile(td.lengths, 1 / 3))
short = td.lengths <= cut

def weight_on_short(bucket: int, loss_norm: str) -> float:
    "Share of one epoch's total loss weight on the positions of `short` users."
    order = td.batch_order(REFERENCE["batch_size"], np.random.default_rng(0), bucket)
    mean_targets, w = td.lengths.sum() / len(order), np.zeros(len(td))
    for idx in order:
        w[idx] = td.lengths[idx] / (td.lengths[idx].sum() if loss_norm == "batch" else mean_targets)
    return w[short].sum() / w.sum()

packing = pd.DataFrame({"bucket": [REFERENCE["bucket"], 0, REFERENCE["bucket"]], "loss_norm": ["batch", "batch", "position"]})
packing[f"loss weight on users with <= {cut} inputs ({short.mean():.0%} of users)"] = [weight_on_short(b, n) for b, n in zip(packing["bucket"], packing["loss_norm"])]
packing["their share of the positions"] = td.lengths[short].sum() / td.lengths.sum()
packing.round(3)

# %%
#| slow
assert packing.iloc[0, 2] > 1.5 * packing.iloc[0, 3]                  # packed + batch mean: short users over-weighted
assert abs(packing.iloc[2, 2] - packing.iloc[2, 3]) < 1e-9            # per-position weighting restores their share exactly

# %% [markdown]
# The rows `bucket=0` (seed 0) and `loss_norm=position` (seeds 0 and 1) of the table above are these two repairs,
# trained: both lift the no-graph variant over the reference, so the packing's objective was part of the gap to the published SASRec.
# The paired p-values appear once a change has two or more seeds.

# %% [markdown]
# ### The block: pre- or post-LayerNorm
#
# The published BCE-SASRec rows (0.0318 / 0.0605 at @10, 0.0386 / 0.0894 at @20) come from the S3-Rec / ICLRec code.
# Its whole encoder and training recipe (d 64, 2 heads, 4d GELU feed-forward, N(0, 0.02) init, no √d scaling, no L2,
# batch 256) with *our* pre-LayerNorm block is no better than our reference; with *its* post-LayerNorm block
# (`norm="post"`: a LayerNorm on the input sum and after each residual, `nbs/05_encoder.ipynb`) the same run lands
# on the published row (`configs/recipes/iclrec.yaml`). The two rows of the table above, side by side:

# %%
iclrec_rows = recipe_table[recipe_table.index.str.contains("dim=64") & recipe_table.index.str.contains("batch_size=256")]
block = iclrec_rows.assign(block=["post" if "norm=post" in c else "pre" for c in iclrec_rows.index]).set_index("block")
block[["seeds", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "best epoch"]]


# %%
def first_value(cell) -> float: return float(str(cell).split(" ")[0])  # "mean ± std" or a single seed's value
if {"pre", "post"} <= set(block.index):
    assert first_value(block.loc["post", "ndcg@20"]) > 1.1 * first_value(block.loc["pre", "ndcg@20"])  # the block is the gap

# %% [markdown]
# So the one difference left between our BCE backbone and the published one was the block. The paper states
# pre-LayerNorm for SAGERec, so `configs/beauty.yaml` keeps it; `norm="post"` is a switch, and CL4SRec's config
# (`configs/models/cl4srec.yaml`) takes the ICLRec code's block with the rest of its recipe. Under our best
# objective the post-LayerNorm block does not help SAGERec (seed 0: `beauty-recipe-best-post-sagerec`, in the
# graph tables below).

# %% [markdown]
# ## Part 2 — objectives beyond the paper
#
# The same model under full cross-entropy over the catalogue and under sampled softmax with a pool of negatives
# shared by every position of a step (uniform, or by training popularity with the logQ correction).

# %%
obj = runs[(runs["variant"] == "sasrec") & ((runs["loss"].fillna("bce") != "bce") | (runs["change"] == "reference"))]
objective_table = recipe_summary(obj)
objective_table

# %%
assert len(objective_table) >= 1

# %% [markdown]
# **Weighting every position the same matters even more for the best objective.** Its row with `loss_norm=position`
# (`configs/recipes/best.yaml`: sampled softmax over 1,024 popularity-drawn negatives with logQ, every target position
# of the epoch weighted the same) reaches NDCG@10 0.0537 ± 0.0003 and Recall@10 0.0917 ± 0.0009 over five seeds,
# level with the published cross-entropy SASRec (≈ 0.053 / 0.092), against 0.0478 with the per-batch mean: the
# length-sorted batches had cost this objective 11%, twice what they cost BCE, at no change in the cost of a step.

# %% [markdown]
# ## Part 3 — the graph, and the variants beyond the paper, against the no-graph counterpart
#
# Every variant against the no-graph variant (`sasrec`) under the same recipe: mean ± std per variant, then the
# paired t-test over common seeds (two-sided; `sagerec.report.graph_tests`). `gated`, `text`, `text_graph`,
# `text_gated` and `text_fixed` go beyond the paper (`nbs/06_model.ipynb`, "Beyond the paper"; `text_fixed` is the text
# feature with Table 5's fixed cosine edge weights, `fixed_edges` being the paper's ablation (B)).

# %%
by_variant = pd.concat({v: recipe_summary(g) for v, g in runs.groupby("variant")}, names=["variant"])
by_variant.swaplevel().sort_index()[["seeds", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "best epoch", "s/epoch"]]

# %%
graph_table = graph_tests(runs)
graph_table.round(4) if len(graph_table) else "no variant has two seeds in common with its no-graph counterpart yet"

# %% [markdown]
# **Reading the tests.** Under the paper's BCE recipe (`reference`) the graph makes no significant difference. Under
# both sampled-softmax recipes SAGERec is ahead of its no-graph counterpart on every metric over five seeds, by
# 3–5%. With the per-position weighting (`configs/recipes/best.yaml`) all four gains pass the paper's p < 0.01
# (NDCG@10 0.0556 against 0.0537, Recall@10 0.0953 against 0.0917); with the per-batch mean only the Recall gains do.
# Under the published-level BCE recipe (`l2=0.0, n_neg=100`) SAGERec is *behind* on all five seeds (−8% NDCG@10,
# p = 0.03: significant at 0.05, not at 0.01). So which
# way the layer goes depends on the objective: with 100 independent negatives per position it costs more than it
# gives; with a shared pool of popularity-drawn negatives it lifts the rare targets (next section).
#
# **The best configuration** (beyond the paper): the Sentence-BERT vectors as an input feature *and* the graph
# (`variant text_graph`) at d = 64 under the best recipe reach NDCG@10 0.0584 ± 0.0007 over five seeds, the issue's
# 0.058, against 0.0547 for the no-graph variant at the same size (+6.8%, p = 1e-4; every metric p < 0.001). The
# capacity alone is worth little (the no-graph variant gains 2% from d = 50 to 64); the text feature and the graph
# together gain 5% at d = 50 and 7% at d = 64. Of the 5% at d = 50, the text feature alone gives +2.7% (0.0551,
# p = 0.02) and the graph on top of it a further +2.4% (0.0565 against 0.0551, p = 0.009): about half each. At
# d = 64 the graph's share is larger: the text feature alone gives +2.1% (0.0559 against 0.0547, p = 0.03) and the
# graph on top of it +4.6% (0.0584 against 0.0559, p = 0.007; every metric p < 0.01), two thirds of the gain. Each
# step as a paired t-test over the five seeds (`sagerec.report.paired_test`):

# %%
import warnings

from sagerec.report import paired_test

STEPS = {  # step: (runs with it, runs without it), by run name without the seed; all under configs/recipes/best.yaml
    "text feature, d 50": ("beauty-recipe-best-text", "beauty-recipe-posnorm-sspop"),
    "graph on top of the text feature, d 50": ("beauty-recipe-best-text_graph", "beauty-recipe-best-text"),
    "d 64 instead of 50, no graph": ("beauty-recipe-best-d64", "beauty-recipe-posnorm-sspop"),
    "text feature, d 64": ("beauty-recipe-best-text-d64", "beauty-recipe-best-d64"),
    "graph on top of the text feature, d 64": ("beauty-recipe-best-text_graph-d64", "beauty-recipe-best-text-d64"),
    "text feature + graph, d 64": ("beauty-recipe-best-text_graph-d64", "beauty-recipe-best-d64"),
    # the fixed cosine weights (Table 5's B) in place of the learned edge MLP (nbs/paper.ipynb: the MLP cuts its edges)
    "fixed instead of learned edge weights, d 50": ("beauty-recipe-best-fixed_edges", "beauty-recipe-posnorm-sspop-sagerec"),
    "fixed-weight graph, d 50": ("beauty-recipe-best-fixed_edges", "beauty-recipe-posnorm-sspop"),
    "fixed-weight graph on top of the text feature, d 64": ("beauty-recipe-best-text_fixed-d64", "beauty-recipe-best-text-d64"),
    "fixed instead of learned edge weights, text feature, d 64": ("beauty-recipe-best-text_fixed-d64", "beauty-recipe-best-text_graph-d64"),
}
named = runs.assign(row=runs["run"].str.replace(r"-s\d+$", "", regex=True))
steps = {}
for step, (a, b) in STEPS.items():
    pair = named[named["row"].isin([a, b])]
    if pair.groupby("row")["seed"].nunique().reindex([a, b]).fillna(0).min() < 2: continue  # not run (e.g. your own results)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps[step] = paired_test(pair, a, b, label="row")[["gain", "p", "seeds"]]
steps = pd.concat(steps, names=["step"]).unstack("metric") if steps else pd.DataFrame()
steps.round(4) if len(steps) else "the runs of these steps are not in this results folder"

# %%
if len(steps): assert (steps["seeds"].to_numpy() >= 2).all() and steps.columns.get_level_values(0).isin(["gain", "p", "seeds"]).all()

# %% [markdown]
# **Fixed cosine weights instead of the learned edge MLP** (the last four steps; beyond the paper, from Table 5's (B),
# `-p variant fixed_edges` and `-p variant text_fixed`). The fixed weights beat the learned ones under the best
# recipe both without the text feature (d = 50) and with it (d = 64), and the fixed-weight graph on top of the text
# feature at d = 64 is the best configuration we have (NDCG@10 about 0.064; the README has the means). Why the learned
# layer falls behind is traced in `nbs/paper.ipynb` ("What the learned edge MLP does with the graph" and the graph
# dropout test after it).

# %% [markdown]
# ### What the gate learns
#
# The gated variants start at $a = 0$ (no propagation) and may take in as much of the propagated term as helps.
# The learned $a$ of each gated run's best checkpoint (read from `runs_folder`; results/ keeps no weights):

# %%
#| slow
import torch

gates = {}
for r in runs[runs["variant"].isin(["gated", "text_gated"])]["run"]:
    ck = Path(runs_folder) / r / "best.pt"
    if ck.exists(): gates[r] = float(torch.load(ck, map_location="cpu", weights_only=False)["model"]["gate"])
gates or f"no checkpoint of a gated run under {runs_folder}"


# %% [markdown]
# ### By target popularity
#
# Test users split into thirds by how often their target item occurs in training (`sagerec.report.popularity_groups`);
# NDCG@10 per group, mean over seeds, for the runs that recorded the split.

# %%
def popularity_rows(t: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in t.iterrows():
        m = json.loads((Path(results_folder) / r["run"] / "metrics.json").read_text()).get("test_by_popularity")
        for grp in ("head", "torso", "tail"):
            if m and grp in m: rows.append({"variant": r["variant"], "change": r["change"], "seed": r["seed"], "group": grp, "ndcg@10": m[grp]["ndcg@10"]})
    return pd.DataFrame(rows)

pop = popularity_rows(runs)
(pop.pivot_table(index=["change", "variant"], columns="group", values="ndcg@10", aggfunc="mean")[["head", "torso", "tail"]].round(4)
 if len(pop) else "no run recorded the popularity split yet")

# %% [markdown]
# Is a group's difference real? Per popularity group, each variant against the no-graph runs of the same recipe,
# paired by seed (`scipy.stats.ttest_rel`, two-sided), where at least two seeds are common:

# %%
from scipy.stats import ttest_rel

def group_tests(pop: pd.DataFrame, baseline: str = "sasrec") -> pd.DataFrame:
    rows = []
    for (change, grp), g in pop.groupby(["change", "group"]):
        base = g[g["variant"] == baseline].set_index("seed")["ndcg@10"]
        for v, gv in g[g["variant"] != baseline].groupby("variant"):
            x = gv.set_index("seed")["ndcg@10"]; seeds = sorted(set(x.index) & set(base.index))
            if len(seeds) < 2: continue
            r = ttest_rel(x[seeds], base[seeds])
            rows.append({"change": change, "variant": v, "group": grp, "variant NDCG@10": x[seeds].mean(), "no-graph NDCG@10": base[seeds].mean(),
                         "gain": x[seeds].mean() / base[seeds].mean() - 1, "p": float(r.pvalue), "seeds": len(seeds)})
    return pd.DataFrame(rows).set_index(["change", "variant", "group"]) if rows else pd.DataFrame()

gtests = group_tests(pop) if len(pop) else pd.DataFrame()
gtests.round(4) if len(gtests) else "no variant has two seeds in common with its no-graph counterpart yet"

# %% [markdown]
# ## The learning-rate schedule: which validation signal to decay on
#
# The paper multiplies the LR by 0.1 after 5 validations without a lower validation loss (`lr_patience 5`). Our
# validation loss is the BCE of each validation target against sampled negatives: it bottoms out early and then rises
# while the ranking still improves, so that schedule cuts the LR long before the model has converged. `-p lr_signal
# metric` decays on the validation NDCG@10 instead, the quantity that early stopping and the checkpoint already
# follow. Seed 0 of each schedule, against the constant LR (`lr_patience 0`) that every other row here uses.

# %%
SCHEDULES = {("reference", "constant LR"): "beauty-sasrec-s0-constlr",
             ("reference", "decay on validation loss (paper)"): "beauty-sasrec-s0",
             ("reference", "decay on validation NDCG@10"): "beauty-recipe-lrmetric-s0",
             ("best recipe", "constant LR"): "beauty-recipe-posnorm-sspop-s0",
             ("best recipe", "decay on validation NDCG@10"): "beauty-recipe-best-lrmetric-s0"}
folder = Path(results_folder)
sched_runs = {k: json.loads((folder / r / "metrics.json").read_text()) for k, r in SCHEDULES.items() if (folder / r / "metrics.json").exists()}
missing_sched = [r for k, r in SCHEDULES.items() if k not in sched_runs]
if missing_sched: print("not run yet:", ", ".join(missing_sched), "(python tools/grid.py run configs/grids/recipe.yaml --only ...)")
schedule_table = pd.DataFrame({k: {"run": SCHEDULES[k], "LR decays": sum(b["lr"] < a["lr"] for a, b in zip(m["history"], m["history"][1:])),
                                   "final LR": m["history"][-1]["lr"], "best epoch": m["best_epoch"], "epochs": m["epochs_run"],
                                   "test ndcg@10": m["test"]["full-masked"]["ndcg@10"], "test recall@10": m["test"]["full-masked"]["recall@10"]}
                               for k, m in sched_runs.items()}).T.rename_axis(["recipe", "schedule"])
schedule_table

# %%
assert len(schedule_table) >= 2 and (schedule_table["final LR"] > 0).all()

# %% [markdown]
# Reading (seed 0 each): under the paper's BCE recipe, decaying on NDCG@10 instead of the loss roughly doubles the
# decaying schedule's test NDCG@10 (0.0090 to 0.0164) but stays well below the constant LR: validation NDCG@10 under BCE is noisy, it
# plateaus for five validations long before the model has converged, and the LR is cut five times. Under the best
# recipe, whose validation NDCG@10 climbs smoothly, the same schedule ends above the constant LR. One seed is not
# enough to change a default: `lr_patience 0` stays the documented setting of every row here, and `lr_signal
# metric` is a parameter to try.

# %% [markdown]
# Validation loss and validation NDCG@10 per epoch under the paper's schedule (reference recipe, seed 0), with the
# LR cuts it applied (dotted) and, where it has run, the same under `lr_signal metric`. Under the paper's signal the
# loss (left axis) stops falling after about ten epochs, every later epoch spends patience, the LR is cut again and
# again, and validation NDCG@10 (right axis) freezes at about a third of what the constant LR reaches (the table's
# test NDCG@10 says the same).

# %%
import matplotlib.pyplot as plt

def plot_schedule(ax, m: dict, title: str) -> None:
    h = pd.DataFrame(m["history"]).dropna(subset=["valid_loss"])
    ax.plot(h["epoch"], h["valid_loss"], color="tab:red", label="validation loss")
    ax.set_xlabel("epoch"); ax.set_ylabel("validation loss", color="tab:red"); ax.set_title(title)
    ax2 = ax.twinx(); ax2.plot(h["epoch"], h["valid/ndcg@10"], color="tab:blue", label="validation NDCG@10")
    ax2.set_ylabel("validation NDCG@10", color="tab:blue")
    for e in h["epoch"][h["lr"].diff() < 0]: ax.axvline(e, color="grey", ls=":", lw=1)

shown = [k for k in (("reference", "decay on validation loss (paper)"), ("reference", "decay on validation NDCG@10")) if k in sched_runs]
fig, axes = plt.subplots(1, len(shown), figsize=(6.5 * len(shown), 4), squeeze=False)
for ax, k in zip(axes[0], shown): plot_schedule(ax, sched_runs[k], f"{k[1]} (dotted: LR x 0.1)")
fig.tight_layout()
save_fig("accuracy_lr_schedule")

# %% [markdown]
# ## Why test NDCG sits below validation NDCG
#
# Every model's test NDCG@10 is about a quarter below its best validation NDCG@10. Test targets are each user's
# last item, later in time than the validation targets, and so rarer in the training data:

# %%
#| slow
import numpy as np
from sagerec.data import load_dataset

bsplit = load_dataset(dataset).split()
counts = np.bincount(np.concatenate(bsplit.train), minlength=bsplit.n_items + 1)
drift = pd.DataFrame({stage: {"median training count": float(np.median(counts[t])), "share seen <= 5 times": float((counts[t] <= 5).mean()),
                              "share never seen": float((counts[t] == 0).mean())}
                      for stage, t in (("validation targets", np.asarray(bsplit.valid_target)), ("test targets", np.asarray(bsplit.test_target)))})
drift.round(4)

# %%
#| slow
assert drift.loc["median training count", "test targets"] < drift.loc["median training count", "validation targets"]

# %% [markdown]
# ## What each objective costs
#
# Training steps on real Beauty batches (the trainer's own batching and negatives), one thread, the no-graph
# variant and SAGERec, each objective: median wall and CPU milliseconds of a step (loss, backward, Adam) over 30
# steps, and the epoch they imply (175 steps of 128 users). Other work on the shared CPU inflates wall time;
# CPU time is the steadier number.

# %%
#| slow
import time

import torch

from sagerec.core import seed_everything
from sagerec.embed import item_embeddings
from sagerec.graph import build_graph
from sagerec.model import ModelConfig, TrainBatch, build_model
from sagerec.training import TrainingData

# %%
#| slow
torch.set_num_threads(1)
beauty = load_dataset("beauty")
bgraph = build_graph(item_embeddings(beauty, progress=False), k=3)
tdata = TrainingData(bsplit.train, bsplit.n_items, 50)
OBJECTIVES = {"bce, 1 negative": dict(loss="bce", n_neg=1), "bce, 100 negatives": dict(loss="bce", n_neg=100),
              "sampled softmax, 1,024": dict(loss="sampled_softmax", n_neg=1024), "full cross-entropy": dict(loss="ce", n_neg=1)}
rng = np.random.default_rng(0)
order = tdata.batch_order(128, rng)
cost = []
for name in ("sasrec", "sagerec"):
    seed_everything(0)
    m = build_model(name, bsplit.n_items, ModelConfig(), bgraph).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for label, o in OBJECTIVES.items():
        wall, cpu = [], []
        for i, idx in enumerate(order[:33]):
            b = tdata.make_batch(idx, o["n_neg"], rng, o["loss"])
            tb = TrainBatch(*(torch.from_numpy(a) if a is not None else None for a in (b.users, b.seqs, b.pos, b.neg)), kind=o["loss"])
            t, c = time.perf_counter(), time.process_time()
            opt.zero_grad(); m.training_loss(tb).backward(); opt.step()
            if i >= 3: wall.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
        cost.append({"model": name, "objective": label, "wall ms/step": 1000 * np.median(wall), "CPU ms/step": 1000 * np.median(cpu),
                     "CPU s/epoch (175 steps)": 175 * np.median(cpu)})
cost = pd.DataFrame(cost).set_index(["model", "objective"]).round(1)
cost

# %%
#| slow
c = cost["CPU ms/step"]
assert c[("sasrec", "full cross-entropy")] > c[("sasrec", "sampled softmax, 1,024")] > 0  # the pool is cheaper than the catalogue
