"""Data-parallel fitting with torch DDP (issue 15): one model over N processes started by torchrun.

    torchrun --nproc_per_node 2 -m experiments.fit --model gamma_pstn --data mnist1000
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 -m experiments.fit ...

Every process holds a replica of the model and fits it on its own share of each batch; torch's
``DistributedDataParallel`` averages the gradients, so all replicas take the same optimiser step.
What this module adds to :class:`~inference.engine.Trainer`, following
``../shared/reference/scaling.md``:

- **The loss module owns the network.** ``Trace_ELBO()(model.model, model.guide)`` holds bound
  methods, so it has no parameters and DDP would refuse it: the network becomes a submodule of the
  loss module, which is wrapped. Parameters that a step never uses (flow_pstn's mixture weights
  under a Gaussian base) are found by one dry step before wrapping (``find_unused_parameters``).
- **Batches.** ``config.batch_size`` is the batch of each process (torch's convention); a step's
  global batch is ``world_size × batch_size``. A ``DistributedSampler`` (seeded by the run's seed,
  ``set_epoch`` every epoch) gives each process a disjoint share of every epoch, padded to equal
  length as torch does.
- **Plates and scaling.** Each process minimises −ELBO(local batch) / b_local, the per-example
  loss of a single run; DDP's average over the W processes makes it −ELBO(global batch) / (W·b),
  the loss of one process on the concatenated batch. Every latent site of the models lies in the
  ``data`` plate, so no site is counted once per process (``tests/test_distributed.py`` checks
  gradients and parameters against one process on the concatenated batch, in float64).
- **Randomness.** Pyro is seeded with ``seed + rank``: the processes draw different θ for
  different images. The initial weights are rank 0's (DDP broadcasts them).
- **Files.** Rank 0 alone validates, shows progress, writes checkpoints, metrics and plots. A
  checkpoint keeps every rank's generators; ``--resume`` reads it on rank 0 and broadcasts it, so
  nodes need no shared file system, and a run resumes with the same number of processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyro
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from .engine import History, TrainConfig, Trainer, read_checkpoint
from .runs import save_atomic


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a torchrun launch, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (which sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def join_process_group(device: str = "cpu") -> ProcessGroup:
    """Join the process group that torchrun set up: gloo on CPU, NCCL on CUDA with one GPU per
    process (``cuda`` becomes ``cuda:LOCAL_RANK``)."""
    if not launched_by_torchrun():
        raise ValueError("no torchrun environment (RANK, WORLD_SIZE): launch with torchrun --nproc_per_node N ...")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    kind = torch.device(device).type
    if kind == "cuda":  # cuda or cuda:N alike: each process takes the GPU of its local rank
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {rank} needs cuda:{local_rank}, but this node sees "
                             f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA device(s): "
                             "start at most that many processes per node")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
    return ProcessGroup(rank, world_size, local_rank, device)


def active() -> bool:
    """Whether this process is one of a torch.distributed process group."""
    return dist.is_available() and dist.is_initialized()


def leave_process_group(synchronize: bool = True) -> None:
    """Destroy the process group. ``synchronize`` (after a normal finish): wait at a barrier first, so
    no process tears down gloo while another still talks to it (a rare abort, "terminate called
    without an active exception", at the end of a clean run); not after an error, where the other
    processes may never reach the barrier."""
    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


class DistributedTrainer(Trainer):
    """A :class:`~inference.engine.Trainer` whose steps are data-parallel over a torch.distributed
    process group (see the module's docstring); every process runs the same calls.

    >>> group = join_process_group("cpu")           # in a process started by torchrun
    >>> trainer = DistributedTrainer(model, TrainConfig(epochs=10))
    >>> trainer.fit(data.train, data.val, run_dir="runs/example")   # rank 0 writes the files
    """

    def __init__(self, model: nn.Module, config: TrainConfig, step_hooks: Sequence[Callable] = ()):
        if not active():
            raise ValueError("DistributedTrainer needs a torch.distributed process group: start the processes with "
                             "torchrun and call join_process_group() first")
        super().__init__(model, config, step_hooks)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.elbo.network = self.model  # the loss module owns the network, so DDP sees (and syncs) its parameters
        self.ddp: DistributedDataParallel | None = None  # wrapped at the first step (see _wrap)

    # ---- one step ------------------------------------------------------------------------
    def _wrap(self, x: torch.Tensor, y: torch.Tensor, **schedule) -> DistributedDataParallel:
        """Wrap the loss module, after one dry step (random state restored) finds unused parameters."""
        state = self.rng_state()
        params = list(self.elbo.parameters())
        grads = torch.autograd.grad(self.elbo(x, y, **schedule), params, allow_unused=True)
        self.set_rng_state(state)
        unused = any(g is None for g in grads)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.elbo, device_ids=device_ids, find_unused_parameters=unused)

    def loss(self, x: torch.Tensor, y: torch.Tensor, **schedule) -> torch.Tensor:
        """−ELBO / b on this process's batch; DDP averages the gradients over the processes."""
        schedule = self.accepted(schedule)
        if self.ddp is None:
            self.ddp = self._wrap(x, y, **schedule)
        return self.ddp(x, y, **schedule) / x.shape[0]

    # ---- epochs --------------------------------------------------------------------------
    def epoch_order(self, n: int) -> torch.Tensor:
        """This process's share of the epoch (``DistributedSampler``: shuffled by seed and epoch)."""
        sampler = DistributedSampler(range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True,
                                     seed=self.config.seed)
        sampler.set_epoch(self.epoch)
        return torch.tensor(list(sampler), dtype=torch.long)

    def mean_loss(self, total: torch.Tensor, count: int) -> float:
        total = total.detach().clone()
        dist.all_reduce(total)  # the sum over every process's examples
        return float(total) / (count * self.world_size)

    def seed_rng(self) -> None:
        pyro.set_rng_seed(self.config.seed + self.rank)

    def fit(self, train: Dataset, val: Dataset | None = None, run_dir: str | os.PathLike | None = None,
            progress: bool | None = None, on_epoch_end: Callable[..., object] | None = None) -> History:
        """As :meth:`Trainer.fit` on every process: rank 0 validates, shows progress and writes
        ``run_dir`` (every rank passes it: a checkpoint gathers every rank's random state)."""
        main = self.rank == 0
        return super().fit(train, val if main else None, run_dir, progress if main else False, on_epoch_end)

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Rank 0's state and every rank's generators (a collective call: every rank makes it)."""
        state = super().state_dict()
        ranks = [None] * self.world_size
        dist.all_gather_object(ranks, self.rng_state())
        return {**state, "rng_ranks": ranks}

    def load_state_dict(self, state: dict) -> None:
        written_by = len(state.get("rng_ranks", [None]))
        if written_by != self.world_size:
            raise ValueError(f"the checkpoint was written by {written_by} process(es), this run has {self.world_size}: "
                             f"resume it with torchrun --nproc_per_node {written_by} (in total)")
        super().load_state_dict(state)
        self.set_rng_state(state["rng_ranks"][self.rank])

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        state = self.state_dict()
        if self.rank == 0:
            save_atomic(state, path)

    def has_checkpoint(self, path: str | os.PathLike) -> bool:
        """Rank 0 looks, and tells every rank: whether to load is one decision for the whole group (the
        others may not see rank 0's file system, or not yet its last write), as loading is collective."""
        box = [Path(path).is_file() if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Rank 0 reads the checkpoint and sends it to every rank (no shared file system needed)."""
        state = None
        if self.rank == 0:
            try:
                state = read_checkpoint(path)
            except ValueError as err:
                state = err
        box = [state]
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], Exception):
            raise box[0]
        self.restore(box[0], path)
