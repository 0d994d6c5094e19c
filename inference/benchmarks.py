"""Timing the engine's steps: Pyro's overhead, stacked runs, the warps, the UCR models, threads.

Each function measures in one process and returns a markdown table of medians and ratios
(``python -m experiments.bench`` prints them). Pyro overhead: one training step of ``gamma_pstn`` vs a plain PyTorch step of the same loss;
(``--stack``) the per-member step time of stacked runs against one single run; (``--warps``) the
CPAB warps against the affine warp.

The plain step runs the same networks (a copy of the same initial weights) and the same
estimator: λ ~ Gamma(α0, β(x)) reparameterised, θ = μ(x) + ε/√λ, the classifier on T_θ(x),
mean NLL + w·(log q(λ) − log p(λ)) summed over θ's dimensions, Adam with the same parameter
groups. Both run without argument validation, as the engine trains. Steps alternate between the
two so drift affects both alike; medians are reported, for the whole step and for its forward
part (the loss) alone, which is where Pyro's tracing happens.
"""
from __future__ import annotations

import copy
import dataclasses
import platform
import statistics
import time
from collections.abc import Callable
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from pyro_pstn.data import DataSpec
from pyro_pstn.models import GammaPSTN, build_model
from pyro_pstn.models.stacked import Stacked
from pyro_pstn.transforms import get_layout, warp

from .engine import TrainConfig, Trainer
from .stacked import StackTrainer


def plain_torch_loss(model: GammaPSTN, kl_weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of the Pyro ELBO for the Gamma P-STN, written directly in PyTorch."""

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loc, rate = model.localizer(x)
        alpha = model.prior.concentration
        q_lambda = dist.Gamma(alpha, rate, validate_args=False)
        lam = q_lambda.rsample()
        theta = loc + torch.randn_like(loc) * lam.rsqrt()
        nll = F.cross_entropy(model.classifier(model.transform(x, theta)), y)
        p_lambda = dist.Gamma(alpha, model.prior.rate, validate_args=False)
        return nll + kl_weight * (q_lambda.log_prob(lam) - p_lambda.log_prob(lam)).sum(-1).mean()

    return loss


def timed_step(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(forward seconds, whole-step seconds) of zero_grad → loss → backward → Adam step."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with pyro.validation_enabled(False):
        loss = loss_fn(x, y)
        forward = time.perf_counter()
        loss.backward()
    optimizer.step()
    end = time.perf_counter()
    return forward - start, end - start


def measure(batch_sizes: Sequence[int] = (8, 256), steps: int = 200, device: str = "cpu") -> str:
    """The benchmark as a text table (also used by ``experiments.fit_mnist30``)."""
    pyro.settings.set(module_local_params=True)
    lines = [
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"pyro {pyro.__version__}, device {device}, {steps} timed steps each",
        f"{'batch':>6} {'pyro ms':>9} {'torch ms':>9} {'ratio':>7} {'pyro fwd':>9} {'torch fwd':>9}",
    ]
    for batch in batch_sizes:
        pyro.set_rng_seed(0)
        config = TrainConfig(kl_weight=1e-3, device=device, threads=torch.get_num_threads())  # as reported above
        trainer = Trainer(build_model("gamma_pstn", fill=-0.4242), config)
        trainer.model.kl_weight = trainer.kl_weight
        twin = Trainer(copy.deepcopy(trainer.model), config)  # same weights, parameter groups and Adam
        plain = plain_torch_loss(twin.model, trainer.kl_weight)
        x = torch.randn(batch, 1, 28, 28, device=trainer.device)
        y = torch.randint(0, 10, (batch,), device=trainer.device)
        variants = {"pyro": (trainer.loss, trainer.optimizer), "torch": (plain, twin.optimizer)}
        for _ in range(20):  # warm-up
            for loss_fn, optimizer in variants.values():
                timed_step(loss_fn, optimizer, x, y)
        times = {name: [] for name in variants}
        for _ in range(steps):
            for name, (loss_fn, optimizer) in variants.items():
                times[name].append(timed_step(loss_fn, optimizer, x, y))
        fwd = {name: 1e3 * statistics.median(t[0] for t in ts) for name, ts in times.items()}
        step = {name: 1e3 * statistics.median(t[1] for t in ts) for name, ts in times.items()}
        lines.append(
            f"{batch:>6} {step['pyro']:>9.3f} {step['torch']:>9.3f} {step['pyro'] / step['torch']:>7.3f} "
            f"{fwd['pyro']:>9.3f} {fwd['torch']:>9.3f}"
        )
    return "\n".join(lines)


def measure_stack(members: Sequence[int] = (1, 5, 25, 40), steps: int = 50, batch: int = 8, device: str = "cpu",
                  model: str = "gamma_pstn", vmap: bool = False) -> str:
    """Per-member step time of a stack of R runs (StackTrainer) against one single run (Trainer), the
    engine's own train_step on both sides, batch ``batch``; steps interleave single and stacked so
    drift affects both alike; medians. ``vmap``: the stack's networks through ``torch.func.vmap``
    (:class:`~pyro_pstn.nets.members.VmapMembers`) instead of their member layout."""
    pyro.settings.set(module_local_params=True)
    config = TrainConfig(kl_weight=1e-3, device=device)
    single = Trainer(build_model(model, fill=-0.4242), config)
    x1 = torch.randn(batch, 1, 28, 28, device=single.device)
    y1 = torch.randint(0, 10, (batch,), device=single.device)
    sync = torch.cuda.synchronize if single.device.type == "cuda" else (lambda: None)

    def timed(step: Callable[[torch.Tensor, torch.Tensor], object], x: torch.Tensor, y: torch.Tensor) -> float:
        sync()
        start = time.perf_counter()
        step(x, y)
        sync()
        return time.perf_counter() - start

    lines = [
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"pyro {pyro.__version__}, device {device}; {model}, batch {batch}, {steps} timed steps each; members "
        + ("by torch.func.vmap" if vmap else "by the networks' member layout"),
        f"{'R':>4} {'single ms':>10} {'stack ms':>10} {'per member ms':>14} {'speed-up per member':>20}",
    ]
    for r_count in members:
        stack = StackTrainer(Stacked.from_models([build_model(model, fill=-0.4242) for _ in range(r_count)], vmap=vmap),
                             [dataclasses.replace(config, seed=r) for r in range(r_count)])
        xs = torch.randn(r_count, batch, 1, 28, 28, device=stack.device)
        ys = torch.randint(0, 10, (r_count, batch), device=stack.device)
        for _ in range(5):  # warm-up
            timed(single.train_step, x1, y1), timed(stack.train_step, xs, ys)
        pairs = [(timed(single.train_step, x1, y1), timed(stack.train_step, xs, ys)) for _ in range(steps)]
        t_single = 1e3 * statistics.median(p[0] for p in pairs)
        t_stack = 1e3 * statistics.median(p[1] for p in pairs)
        lines.append(f"{r_count:>4} {t_single:>10.3f} {t_stack:>10.3f} {t_stack / r_count:>14.3f} "
                     f"{t_single * r_count / t_stack:>19.2f}×")
    return "\n".join(lines)


def measure_warps(repeats: int = 30, device: str = "cpu") -> str:
    """Forward + backward of the CPAB warps against ``affine_grid`` + ``grid_sample`` (issue 13):
    80 MNIST-sized images (2-D, θ ~ N(0, 0.5²)) and 160 series of length 131 (1-D, FaceAll's
    length), medians of interleaved calls."""
    torch.manual_seed(0)
    cases = {  # name → (input, θ scale, family)
        "similarity (affine_grid + grid_sample), 80 × 1 × 28 × 28": (torch.randn(80, 1, 28, 28), 0.1, "similarity"),
        "cpab (2-D, 34 dof, 10 steps), 80 × 1 × 28 × 28": (torch.randn(80, 1, 28, 28), 0.5, "cpab"),
        "time_affine (1-D), 160 × 1 × 131": (torch.randn(160, 1, 131), 0.1, "time_affine"),
        "cpab1d (1-D, 9 dof, exact), 160 × 1 × 131": (torch.randn(160, 1, 131), 0.5, "cpab1d"),
    }
    inputs = {}
    for name, (x, scale, family) in cases.items():
        layout = get_layout(family)
        theta = (layout.identity_theta() + scale * torch.randn(len(x), layout.dim)).to(device).requires_grad_()
        inputs[name] = (x.to(device), theta, layout)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = {name: [] for name in cases}
    for i in range(repeats + 3):
        for name, (x, theta, layout) in inputs.items():
            sync()
            start = time.perf_counter()
            warp(x, theta, layout).square().sum().backward()
            sync()
            if i >= 3:  # warm-up calls
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    affine = med[next(iter(cases))]
    lines = [f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
             f"device {device}; forward + backward, median of {repeats} interleaved calls",
             f"{'warp':<58} {'ms':>8} {'× similarity':>13}"]
    lines += [f"{name:<58} {ms:8.2f} {ms / affine:12.1f}×" for name, ms in med.items()]
    return "\n".join(lines)


def measure_ucr_step(repeats: int = 5, device: str = "cpu", length: int = 131, num_classes: int = 14) -> str:
    """One training step of the UCR models (the authors' FCN-like networks, batch 16, cpab1d) at
    S = 1 and S = 10 training samples, on a FaceAll-shaped batch: what a UCR budget is chosen from."""
    x, y = torch.randn(16, 1, length, device=device), torch.randint(0, num_classes, (16,), device=device)
    lines = [f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
             f"device {device}; batch 16 of length {length}, {num_classes} classes; median of {repeats} steps",
             f"{'model':<12} {'S':>3} {'step s':>8}"]
    for model in ("cnn", "stn", "pstn", "gamma_pstn"):
        for samples in (1, 10) if model in ("pstn", "gamma_pstn") else (1,):
            trainer = Trainer(build_model(model, DataSpec((1, length), num_classes)),
                              TrainConfig(batch_size=16, num_particles=samples, weight_decay=0.0, kl_weight=1e-4,
                                          device=device))
            trainer.train_step(x, y)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                trainer.train_step(x, y)
                times.append(time.perf_counter() - start)
            lines.append(f"{model:<12} {samples:>3} {statistics.median(times):8.3f}")
    return "\n".join(lines)


def measure_threads(threads: Sequence[int] = (1, 2), batch_sizes: Sequence[int] = (8, 256), steps: int = 100,
                    device: str = "cpu") -> str:
    """A ``gamma_pstn`` training step on MNIST-sized images at each number of torch threads,
    interleaved in one process (medians); what :func:`inference.engine.choose_threads` is chosen by."""
    pyro.settings.set(module_local_params=True)
    lines = [f"machine: {platform.machine()}, torch {torch.__version__}, device {device}, {steps} timed steps each "
             "(interleaved); gamma_pstn on 1 × 28 × 28 images",
             f"{'batch':>6} " + " ".join(f"{f'{n} thr ms':>10}" for n in threads) + f" {'ratio':>7}"]
    for batch in batch_sizes:
        pyro.set_rng_seed(0)
        trainer = Trainer(build_model("gamma_pstn"), TrainConfig(kl_weight=1e-3, device=device))
        trainer.model.kl_weight = trainer.kl_weight
        x = torch.randn(batch, 1, 28, 28, device=trainer.device)
        y = torch.randint(0, 10, (batch,), device=trainer.device)
        times = {n: [] for n in threads}
        for i in range(steps + 10):
            for n in threads:
                torch.set_num_threads(n)
                seconds = timed_step(trainer.loss, trainer.optimizer, x, y)[1]
                if i >= 10:  # after the warm-up
                    times[n].append(seconds)
        median = {n: 1e3 * statistics.median(t) for n, t in times.items()}
        lines.append(f"{batch:>6} " + " ".join(f"{median[n]:>10.3f}" for n in threads)
                     + f" {median[threads[-1]] / median[threads[0]]:>7.3f}")
    lines.append(f"ratio: step time at {threads[-1]} threads over {threads[0]} (below 1: more threads gain)")
    return "\n".join(lines)
