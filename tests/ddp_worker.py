"""Run by tests/test_distributed.py under torchrun (2 processes, gloo): what each rank computes.

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m tests.ddp_worker MODE OUT_DIR

MODE ``steps``: two data-parallel SGD steps of gamma_pstn and of a DT-VAE in float64; each rank
saves its random draws, the synced gradients and the final parameters to OUT_DIR/MODEL-rankR.pt.
MODE ``resume``: a short real-data fit straight through, and the same fit interrupted after one
epoch and resumed; rank 0 saves both runs' metrics to OUT_DIR/resume.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pyro
import torch

from inference.distributed import DistributedTrainer, join_process_group, leave_process_group
from inference.engine import TrainConfig

from .interrupt import Interrupt, stop_after
from .noise import Noise

GLOBAL_BATCH, SEED = 8, 5


def build(name: str):
    """The model of the step test, in float64, with the same initial weights on every call."""
    from pyro_pstn.models import build_model, build_pose_vae
    from pyro_pstn.priors import DiagonalNormalPose

    torch.manual_seed(0)
    if name == "dtvae":
        return build_pose_vae(name, 4, DiagonalNormalPose("affine"), hidden=(32,), localizer_hidden=(16,)).double()
    model = build_model(name).double()
    model.classifier.eval()  # dropout off: its masks are not among the replayed draws
    return model


def batch(name: str):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(GLOBAL_BATCH, 1, 28, 28, generator=generator, dtype=torch.float64)
    return x, torch.randint(10, (GLOBAL_BATCH,), generator=generator)


def sgd(trainer, lr: float = 0.05):
    """SGD with the engine's parameter groups (the localizer's lr × 0.1): Adam's first steps are
    about lr · sign(grad) and would hide a wrong gradient scale."""
    return torch.optim.SGD([{"params": g["params"], "lr": lr * g["lr"] / trainer.config.lr}
                            for g in trainer.optimizer.param_groups])


def config(name: str) -> TrainConfig:
    return TrainConfig(lr=1e-3, kl_weight=1.0 if name == "dtvae" else 1e-2, weight_decay=0.0, seed=SEED)


def steps(out: Path, rank: int, world: int) -> None:
    for name in ("gamma_pstn", "dtvae"):
        model = build(name)
        trainer = DistributedTrainer(model, config(name))
        trainer.optimizer = sgd(trainer)
        x, y = batch(name)
        share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        pyro.set_rng_seed(SEED + rank)
        noise, draws, grads, losses = Noise(), [], [], []
        for _ in range(2):
            with noise.record():
                losses.append(trainer.train_step(x[share], y[share]))
            draws.append(noise.draws)
            grads.append([p.grad.clone() for p in model.parameters()])
        torch.save({"draws": draws, "grads": grads, "losses": losses,
                    "params": [p.detach().clone() for p in model.parameters()]}, out / f"{name}-rank{rank}.pt")


def resume(out: Path, rank: int, world: int) -> None:
    import os

    from experiments.config import authors_config
    from inference.fitting import run_fit

    def config_for():
        return authors_config("gamma_pstn", "mnist30", {"epochs": 3, "val_every": 1, "checkpoint_every": 1}, fold=0, test_size=200,
                                       val_size=100, data_root=os.environ.get("PYRO_PSTN_DATA"))

    straight = run_fit(config_for(), out / "straight", progress=False)

    try:
        run_fit(config_for(), out / "resumed", progress=False, on_epoch_end=stop_after(1))
    except Interrupt:
        pass
    resumed = run_fit(config_for(), out / "resumed", resume=True, progress=False)
    if rank == 0:
        (out / "resume.json").write_text(json.dumps({"straight": straight, "resumed": resumed}))
    else:
        assert straight is None and resumed is None  # only rank 0 returns (and writes) metrics


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    group = join_process_group("cpu")
    finished = False
    try:
        {"steps": steps, "resume": resume}[mode](out, group.rank, group.world_size)
        finished = True
    finally:
        leave_process_group(synchronize=finished)
