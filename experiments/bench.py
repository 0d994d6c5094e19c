"""Pyro overhead: one training step of ``gamma_pstn`` vs a plain PyTorch step of the same loss.

    python -m experiments.bench [--batch-sizes 8,256] [--steps 200]

The plain step runs the same networks (a copy of the same initial weights) and the same
estimator: λ ~ Gamma(α0, β(x)) reparameterised, θ = μ(x) + ε/√λ, the classifier on T_θ(x),
mean NLL + w·(log q(λ) − log p(λ)) summed over θ's dimensions, Adam with the same parameter
groups. Steps alternate between the two so drift affects both alike; medians are reported.
"""
from __future__ import annotations

import copy
import platform
import statistics
import time

import click
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from inference.engine import TrainConfig, Trainer
from pyro_pstn.models import GammaPSTN, build_model


def plain_torch_step(model: GammaPSTN, optimizer: torch.optim.Optimizer, kl_weight: float):
    """The same loss as the Pyro ELBO, written directly in PyTorch."""

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loc, rate = model.localizer(x)
        alpha = model.prior.concentration
        q_lambda = dist.Gamma(alpha, rate, validate_args=False)  # as the engine: no argument checks
        lam = q_lambda.rsample()
        theta = loc + torch.randn_like(loc) * lam.rsqrt()
        nll = F.cross_entropy(model.classifier(model.transform(x, theta)), y)
        p_lambda = dist.Gamma(alpha, model.prior.rate, validate_args=False)
        kl = (q_lambda.log_prob(lam) - p_lambda.log_prob(lam)).sum(-1).mean()
        loss = nll + kl_weight * kl
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _time(fn, x, y) -> float:
    start = time.perf_counter()
    fn(x, y)
    return time.perf_counter() - start


def measure(batch_sizes=(8, 256), steps: int = 200, device: str = "cpu") -> str:
    """The benchmark as a text table (also used by ``experiments.fit_mnist30``)."""
    pyro.settings.set(module_local_params=True)
    lines = [
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"pyro {pyro.__version__}, device {device}, {steps} timed steps each",
        f"{'batch':>6} {'pyro ms':>9} {'torch ms':>9} {'ratio':>7}",
    ]
    for batch in batch_sizes:
        pyro.set_rng_seed(0)
        config = TrainConfig(kl_weight=1e-3, device=device)
        trainer = Trainer(build_model("gamma_pstn", fill=-0.4242), config)
        twin = copy.deepcopy(trainer.model)
        twin_trainer = Trainer(twin, config)  # same parameter groups and Adam settings
        plain = plain_torch_step(twin, twin_trainer.optimizer, trainer.kl_weight)
        trainer.model.kl_weight = trainer.kl_weight
        x = torch.randn(batch, 1, 28, 28, device=trainer.device)
        y = torch.randint(0, 10, (batch,), device=trainer.device)
        pyro_step = trainer.train_step
        for _ in range(20):  # warm-up
            pyro_step(x, y), plain(x, y)
        pyro_times, torch_times = [], []
        for _ in range(steps):
            pyro_times.append(_time(pyro_step, x, y))
            torch_times.append(_time(plain, x, y))
        p, t = statistics.median(pyro_times), statistics.median(torch_times)
        lines.append(f"{batch:>6} {1e3 * p:>9.3f} {1e3 * t:>9.3f} {p / t:>7.3f}")
    return "\n".join(lines)


@click.command()
@click.option("--batch-sizes", default="8,256", help="Comma-separated batch sizes.")
@click.option("--steps", type=click.IntRange(min=10), default=200, help="Timed steps per variant and batch size.")
@click.option("--device", default="cpu")
def main(batch_sizes: str, steps: int, device: str):
    """Print the ratio of our Pyro step time to a plain PyTorch step (medians, same run)."""
    click.echo(measure([int(b) for b in batch_sizes.split(",")], steps, device))


if __name__ == "__main__":
    main()
