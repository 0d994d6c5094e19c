"""Pyro overhead: one training step of ``gamma_pstn`` vs a plain PyTorch step of the same loss.

    python -m experiments.bench [--batch-sizes 8,256] [--steps 200]

The plain step runs the same networks (a copy of the same initial weights) and the same
estimator: λ ~ Gamma(α0, β(x)) reparameterised, θ = μ(x) + ε/√λ, the classifier on T_θ(x),
mean NLL + w·(log q(λ) − log p(λ)) summed over θ's dimensions, Adam with the same parameter
groups. Both run without argument validation, as the engine trains. Steps alternate between the
two so drift affects both alike; medians are reported, for the whole step and for its forward
part (the loss) alone, which is where Pyro's tracing happens.
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


def plain_torch_loss(model: GammaPSTN, kl_weight: float):
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


def timed_step(loss_fn, optimizer, x, y) -> tuple[float, float]:
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


def measure(batch_sizes=(8, 256), steps: int = 200, device: str = "cpu") -> str:
    """The benchmark as a text table (also used by ``experiments.fit_mnist30``)."""
    pyro.settings.set(module_local_params=True)
    lines = [
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"pyro {pyro.__version__}, device {device}, {steps} timed steps each",
        f"{'batch':>6} {'pyro ms':>9} {'torch ms':>9} {'ratio':>7} {'pyro fwd':>9} {'torch fwd':>9}",
    ]
    for batch in batch_sizes:
        pyro.set_rng_seed(0)
        config = TrainConfig(kl_weight=1e-3, device=device)
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


@click.command()
@click.option("--batch-sizes", default="8,256", help="Comma-separated batch sizes.")
@click.option("--steps", type=click.IntRange(min=10), default=200, help="Timed steps per variant and batch size.")
@click.option("--device", default="cpu")
def main(batch_sizes: str, steps: int, device: str):
    """Print the ratio of our Pyro step time to a plain PyTorch step (medians, same run)."""
    click.echo(measure([int(b) for b in batch_sizes.split(",")], steps, device))


if __name__ == "__main__":
    main()
