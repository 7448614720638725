"""Worker for tests/test_distributed.py, started by torchrun: python ddp_worker.py MODE OUT [RUN_DIR MARKER | DEVICE].

2 CPU processes with gloo; mode `step` also runs as 1 process on a GPU (nccl) with DEVICE=cuda."""
import copy, hashlib, json, sys, time
from pathlib import Path

import numpy as np
import torch

from sagerec.core import seed_everything
from sagerec.distributed import close_distributed, ddp_loss, ddp_wrap, init_distributed, shard
from sagerec.graph import random_graph
from sagerec.model import ModelConfig, TrainBatch, build_model

torch.set_num_threads(1)
mode, out = sys.argv[1], Path(sys.argv[2])
device = sys.argv[3] if mode == "step" and len(sys.argv) > 3 else "cpu"
env = init_distributed(device)
assert env.active and env.backend == ("nccl" if device == "cuda" else "gloo"), env


def tiny_batch():
    "Six users of different lengths (so the two halves hold different numbers of target positions), fixed negatives."
    rng = np.random.default_rng(0)
    L, B = 8, 6
    seqs = np.zeros((B, L), np.int64)
    for b, n in enumerate([8, 2, 5, 3, 7, 1]): seqs[b, L - n:] = rng.integers(1, 31, n)
    pos = np.zeros_like(seqs); pos[:, :-1] = seqs[:, 1:]; pos[:, -1] = rng.integers(1, 31, B); pos *= seqs != 0
    neg = rng.integers(1, 31, (B, L, 2)) * (pos != 0)[..., None]
    return [torch.from_numpy(a) for a in (seqs, pos, neg)]


def flat(params): return torch.cat([p.detach().reshape(-1) for p in params])


if mode == "step":  # (a): one DDP step on two half-batches == one single-process step on the whole batch
    seed_everything(0)
    cfg = ModelConfig(dim=8, max_len=8, dropout=0, edge_dropout=0, node_dropout=0)
    model = build_model("sagerec", 30, cfg, random_graph(31, 40, seed=0))
    cpu_ref = copy.deepcopy(model)
    model.to(env.device); ref = copy.deepcopy(model); init = flat(model.parameters()).clone()
    seqs, pos, neg = (t.to(env.device) for t in tiny_batch())
    mine = torch.from_numpy(shard(np.arange(len(seqs)), env)).to(env.device)
    step = ddp_wrap(model, env)  # routes to model.training_loss(batch), as in the trainer
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tb = TrainBatch(mine, seqs[mine], pos[mine], neg[mine], kind="bce")
    loss, whole_loss = ddp_loss(step(tb), int((pos[mine] != 0).sum()), env)
    opt.zero_grad(); loss.backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    opt.step()
    gathered = env.all_gather_object(dict(grad=g, params=flat(model.parameters()), n=int((pos[mine] != 0).sum())))
    if env.is_main:
        ropt = torch.optim.SGD(ref.parameters(), lr=0.5)
        rl = ref.loss(seqs, pos, neg); ropt.zero_grad(); rl.backward()
        rg = torch.cat([p.grad.reshape(-1) for p in ref.parameters()]); ropt.step()
        copt = torch.optim.SGD(cpu_ref.parameters(), lr=0.5)
        copt.zero_grad(); cpu_ref.loss(*tiny_batch()).backward(); copt.step()
        out.write_text(json.dumps(dict(
            n_per_rank=[x["n"] for x in gathered], loss_ddp=whole_loss, loss_single=float(rl.detach()),
            grad_diff=float((g - rg).abs().max()), grad_scale=float(rg.abs().max()),
            param_diff=float((flat(model.parameters()) - flat(ref.parameters())).abs().max()),
            param_moved=float((flat(model.parameters()) - init).abs().max()),
            ranks_agree=float(max((x["params"] - gathered[0]["params"]).abs().max() for x in gathered)),
            cpu_param_diff=float((flat(model.parameters()).cpu() - flat(cpu_ref.parameters())).abs().max()),
            world_size=env.world_size, backend=env.backend)))

elif mode == "eval":  # (b): sharded evaluation == single-process evaluation
    from sagerec.data import load_dataset
    from sagerec.evaluate import evaluate
    from sagerec.training import validate, validation_negatives
    ds = load_dataset("beauty-mini"); sp = ds.split()
    seed_everything(0)
    model = build_model("sagerec", ds.n_items, ModelConfig(dim=16, max_len=20), random_graph(ds.n_items + 1, 3000, seed=0)).eval()
    res = {}
    for name, kw in {"full-masked": {}, "full-unmasked": dict(mask_history=False), "sampled100": dict(protocol="sampled100"),
                     "full-masked-blocked": dict(item_block=500)}.items():
        m = evaluate(model, sp, "test", batch_size=128, return_ranks=True, shard=env, **kw)
        res[name] = {**{k: v for k, v in m.items() if k != "ranks"}, "ranks": m["ranks"].tolist()}
    res["valid"] = validate(model, sp, validation_negatives(sp, 1, seed=1), max_len=20, batch_size=128, shard=env)
    if env.is_main: out.write_text(json.dumps(res))

elif mode == "train":  # (c): a 2-process run of the one trainer; with a marker it hangs in epoch 2 to be killed
    from sagerec.synthetic import synthetic_dataset
    from sagerec.training import TrainConfig, train
    run_dir, marker = sys.argv[3], sys.argv[4]
    ds = synthetic_dataset(200, n_users=120, seed=0); sp = ds.split()
    seed_everything(0)
    model = build_model("sagerec", ds.n_items, ModelConfig(dim=8, max_len=10, dropout=0.3), random_graph(ds.n_items + 1, 300, seed=0))
    def hang(epoch, step, loss):
        if marker != "-" and epoch == 2 and step == 3:
            if env.is_main: Path(marker).write_text("epoch 2 step 3")
            time.sleep(600)
    res = train(model, sp, TrainConfig(epochs=3, batch_size=16, max_len=10, lr=1e-2, n_neg=2, progress=False),
                run_dir=run_dir, on_step=hang, dist=env)
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values())).hexdigest()
    digests = env.all_gather_object(digest)
    if env.is_main:
        hist = [{k: v for k, v in r.items() if "seconds" not in k} for r in res.history]
        out.write_text(json.dumps(dict(history=hist, best_epoch=res.best_epoch, weights=digest, ranks_same=len(set(digests)) == 1)))
close_distributed(env)
