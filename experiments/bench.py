"""Time the engine's steps (:mod:`inference.benchmarks`): Pyro's overhead against a plain PyTorch step
of the same loss; (``--stack``) the per-member step time of stacked runs against one single run;
(``--warps``) the CPAB warps against the affine warp; (``--ucr``) the UCR models; (``--threads``)
one step at several numbers of torch threads.

    python -m experiments.bench [--batch-sizes 8,256] [--steps 200]
    python -m experiments.bench --stack [--members 1,5,25,40] [--steps 50] [--vmap]
    python -m experiments.bench --warps
    python -m experiments.bench --ucr
    python -m experiments.bench --threads 1,2 [--batch-sizes 8,256]
"""
from __future__ import annotations

import click

from inference.benchmarks import measure, measure_stack, measure_threads, measure_ucr_step, measure_warps
from pyro_pstn.models.stacked import STACKABLE_MODELS

from .cli import CommaList, SafeCommand, device_option


@click.command(cls=SafeCommand)
@click.option("--batch-sizes", type=CommaList(int, min=1), default="8,256", help="Comma-separated batch sizes.")
@click.option("--steps", type=click.IntRange(min=10), default=None,
              help="Timed steps per variant (default: 200; 50 with --stack).")
@click.option("--stack", is_flag=True, help="Per-member step time of stacked runs against one single run.")
@click.option("--members", type=CommaList(int, min=1), default="1,5,25,40", help="With --stack: the stack sizes R.")
@click.option("--model", type=click.Choice(STACKABLE_MODELS), default="gamma_pstn",
              help="With --stack: the model stacked.")
@click.option("--vmap", is_flag=True, help="With --stack: the networks stacked by torch.func.vmap, not their member layout.")
@click.option("--warps", is_flag=True, help="CPAB warps against affine_grid + grid_sample (forward + backward).")
@click.option("--ucr", is_flag=True, help="One training step of the UCR models (batch 16; S = 1 and 10).")
@click.option("--threads", type=CommaList(int, min=1), default=None,
              help="Step time at these numbers of torch threads, e.g. 1,2.")
@device_option()
def main(batch_sizes: list[int], steps: int | None, stack: bool, members: list[int], model: str, vmap: bool, warps: bool,
         ucr: bool, threads: list[int] | None, device: str) -> None:
    """Print the ratio of our Pyro step time to a plain PyTorch step (medians, same run), with
    --stack the per-member speed-up of stacked runs, with --warps the CPAB warps' cost."""
    if threads:
        click.echo(measure_threads(tuple(threads), tuple(batch_sizes), steps or 100, device))
    elif warps:
        click.echo(measure_warps(steps or 30, device))
    elif ucr:
        click.echo(measure_ucr_step(steps or 5, device))
    elif stack:
        click.echo(measure_stack(members, steps or 50, device=device, model=model, vmap=vmap))
    else:
        click.echo(measure(batch_sizes, steps or 200, device))


if __name__ == "__main__":
    main()
