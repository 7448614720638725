"""The GPU check of the training benchmark, for a session that is lent a GPU machine (see DEVELOPING.md).

That machine has PyTorch with CUDA but neither papermill nor the packaged Sentence-BERT model, and sees nothing
outside the working tree, so the check is a plain script over files prepared here:

    python tools/gpu_check.py prepare                 # here: .gpu/ = Beauty's prepared files + its item embeddings
    python tools/gpu_check.py run --device cpu        # here, to try the script (slow: full Beauty epochs on CPU)
    # there, one call:  PYTHONPATH=. python3 tools/gpu_check.py run --out $OUT     with carry [".gpu"]

`run` measures what `nbs/bench_train.ipynb` measures (seconds per training epoch of SAGERec and the no-graph
variant in the same trainer, alternating, fastest epoch after the first; full-ranking evaluation of every Beauty
user), and checks that the evaluation gives the same metrics on the GPU as on the CPU for the same weights.
It prints one JSON object and writes it to OUT/gpu_check.json. The timing loop repeats the notebook's in a few
lines because the notebook cannot run there (no papermill).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREP = ROOT / ".gpu"  # default folder: ignored by git; travels to the device machine with carry=[".gpu"]


def prepare(dataset: str, prep: Path = PREP) -> None:
    "Copy the dataset's prepared files (none for the embedded slice) and save its item embeddings under `prep`."
    from sagerec.core import data_dir
    from sagerec.data import load_dataset
    from sagerec.embed import item_embeddings
    import numpy as np
    ds = load_dataset(dataset)
    dst = prep / "data" / dataset
    if dst.exists(): shutil.rmtree(dst)
    dst.mkdir(parents=True)
    root = data_dir()
    if root is not None and (Path(root) / dataset).is_dir(): shutil.copytree(Path(root) / dataset, dst, dirs_exist_ok=True)
    emb = item_embeddings(ds, progress=True)
    np.save(prep / f"{dataset}_embeddings.npy", np.asarray(emb, dtype=np.float32))
    size = sum(f.stat().st_size for f in prep.rglob("*") if f.is_file())
    print(f"prepared {prep} ({size / 2**20:.1f} MiB): data/{dataset}/ and {dataset}_embeddings.npy {tuple(emb.shape)}")


def run(dataset: str, device: str, epochs: int, out: Path, prep: Path = PREP) -> dict:
    "Time training epochs and evaluation on `device`; compare its evaluation with the CPU's."
    os.environ["SAGEREC_DATA"] = str(prep / "data")
    import numpy as np
    import torch
    from sagerec.core import pick_device, seed_everything
    from sagerec.data import load_dataset
    from sagerec.evaluate import evaluate
    from sagerec.graph import build_graph
    from sagerec.model import ModelConfig, build_model
    from sagerec.training import TrainConfig, train

    dev = pick_device(device)
    ds = load_dataset(dataset); split = ds.split()
    graph = build_graph(np.load(prep / f"{dataset}_embeddings.npy"), k=3)
    cfg = TrainConfig(epochs=1, device=str(dev), progress=False)
    models, times = {}, {"sagerec": [], "sasrec": []}
    for v in times:
        seed_everything(0)
        models[v] = build_model(v, ds.n_items, ModelConfig(), graph if v == "sagerec" else None)
    for _ in range(epochs):  # A B A B ...
        for v, m in models.items():
            if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
            h = train(m, split, cfg).history[0]
            times[v].append(dict(train_s=h["train_seconds"], valid_s=h["valid_seconds"],
                                 peak_mib=torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None))
    res = {"dataset": dataset, "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "torch": torch.__version__, "epochs_each": epochs}
    for v, t in times.items():
        later = t[1:] or t
        res[v] = dict(s_per_epoch=min(x["train_s"] for x in later), s_per_epoch_all=[round(x["train_s"], 3) for x in t],
                      valid_s=min(x["valid_s"] for x in later), peak_mib=max((x["peak_mib"] or 0) for x in t))
    res["graph_overhead"] = res["sagerec"]["s_per_epoch"] / res["sasrec"]["s_per_epoch"] - 1
    m = models["sagerec"].to(dev).eval()
    ts = []
    for _ in range(3):
        if dev.type == "cuda": torch.cuda.synchronize()
        t0 = time.perf_counter(); on_dev = evaluate(m, split, "test")
        if dev.type == "cuda": torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    res["eval_full_masked_s"] = float(np.median(ts))
    on_cpu = evaluate(m.to("cpu"), split, "test")
    keys = [k for k, v in on_cpu.items() if isinstance(v, float)]  # the metrics (not the protocol name or the user count)
    res["eval_metrics_device"] = {k: on_dev[k] for k in keys}
    res["eval_max_abs_diff_vs_cpu"] = max(abs(on_dev[k] - on_cpu[k]) for k in keys)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write .gpu/ (prepared data + item embeddings) here")
    p.add_argument("--dataset", default="beauty")
    r = sub.add_parser("run", help="time training and evaluation on the device; compare with the CPU")
    r.add_argument("--dataset", default="beauty")
    r.add_argument("--device", default="cuda")
    r.add_argument("--epochs", type=int, default=3, help="epochs per variant, alternating (the first is not counted)")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu_check")))
    for q in (p, r): q.add_argument("--prep", type=Path, default=PREP, help="the prepared folder (default .gpu/)")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if a.cmd == "prepare": prepare(a.dataset, a.prep)
    else:
        if not (a.prep / f"{a.dataset}_embeddings.npy").exists():
            sys.exit(f"{a.prep} is not prepared for {a.dataset}: run `python tools/gpu_check.py prepare --dataset {a.dataset}` here first.")
        run(a.dataset, a.device, a.epochs, a.out, a.prep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
