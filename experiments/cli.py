"""Small helpers the experiment commands share (click is the CLI library of every command)."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from inference.runs import write_atomic


def with_options(options: list):
    """A decorator that applies a list of ``click.option`` decorators in their listed order."""

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def fail(message: str):
    """Bad input: say what is wrong on stderr and exit with status 2 (click's usage-error code)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def check_device(ctx, param, value: str) -> str:
    """Click callback: ``--device`` must name cpu, cuda or cuda:N that this torch build can use,
    checked before anything is loaded or written."""
    from inference.engine import resolve_device

    try:
        resolve_device(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None
    return value


def device_option():
    return click.option("--device", default="cpu", show_default=True, callback=check_device,
                        help="cpu, cuda or cuda:N.")


class CommaList(click.ParamType):
    """A comma-separated list such as ``--folds 0,1,2``: each item converted by ``item`` (int,
    float or str) and, where given, one of ``choices`` or at least ``min`` (above it if
    ``min_open``); a bad item names the valid values."""

    name = "list"

    def __init__(self, item=int, choices=None, min: float | None = None, min_open: bool = False):
        self.item, self.choices, self.min, self.min_open = item, choices, min, min_open

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("needs at least one value (comma-separated)", param, ctx)
        out = []
        for text in items:
            try:
                v = self.item(text)
            except ValueError:
                self.fail(f"{text!r} is not a{'n integer' if self.item is int else ' number'}", param, ctx)
            if self.choices is not None and v not in self.choices:
                self.fail(f"{text!r} is not one of {', '.join(map(str, self.choices))}", param, ctx)
            if self.min is not None and (v < self.min or (self.min_open and v == self.min)):
                self.fail(f"{text!r} must be {'>' if self.min_open else '≥'} {self.min:g}", param, ctx)
            out.append(v)
        return out


def run_options(results: str, runs: str, data_help: str) -> list:
    """The options of every study command: device, data root, results and run folders, progress."""
    return [
        device_option(),
        click.option("--data-root", default=None, help=data_help),
        click.option("--results-dir", type=click.Path(file_okay=False), default=results, show_default=True),
        click.option("--run-root", type=click.Path(file_okay=False), default=runs, show_default=True),
        click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal)."),
    ]


def cached_record(path: Path, name: str, fit: Callable[[], dict], summary: Callable[[dict], str]) -> dict:
    """The result record at ``path``, calling ``fit()`` first (and writing its record atomically)
    if it is missing: what makes every study resumable run by run."""
    if not path.exists():
        click.echo(f"fitting {name}")
        record = fit()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=2) + "\n")
        click.echo(f"  done in {record['wall_seconds']:.0f} s: {summary(record)}")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` of a sweep, for cluster job arrays
    (``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""

    index: int = 0
    count: int = 1

    def select(self, runs: list) -> list:
        """This shard's runs: the ``index``-th of ``count`` contiguous, near-equal blocks of the sweep's
        deterministic run list. Blocks keep neighbouring runs (the folds of one model) together, so
        they can still train as stacks; the shards are disjoint and together hold every run once."""
        n = len(runs)
        return runs[self.index * n // self.count : (self.index + 1) * n // self.count]

    @property
    def partial(self) -> bool:
        return self.count > 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class ShardType(click.ParamType):
    name = "i/n"

    def convert(self, value, param, ctx):
        if isinstance(value, Shard):
            return value
        try:
            index, count = (int(v) for v in str(value).split("/"))
        except ValueError:
            self.fail(f"{value!r} is not of the form i/n (e.g. 0/4: the first of 4 shards)", param, ctx)
        if count < 1 or not 0 <= index < count:
            self.fail(f"{value!r}: need n ≥ 1 and 0 ≤ i < n (shards are numbered from 0, as SLURM array tasks "
                      "with --array=0-<n-1>)", param, ctx)
        return Shard(index, count)


def shard_option():
    return click.option("--shard", type=ShardType(), default="0/1", show_default=True,
                        help="Run only shard i of n of the sweep's runs (a cluster array task: "
                             "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); finished runs are skipped. A shard "
                             "writes no table: run the command once more without --shard (or with --aggregate-only) "
                             "when every shard has finished.")


def shard_done(shard: Shard, finished: int, total: int) -> None:
    """What a shard says when its runs are done (it leaves the table to the final, unsharded call)."""
    click.echo(f"shard {shard} done: {finished} of the sweep's {total} runs have results. When every shard has "
               "finished, run the same command without --shard (or with --aggregate-only) to write the table.")


def single_process_only(command: str) -> None:
    """Refuse a torchrun launch of a command that is not data-parallel (its N copies would write the
    same files): only ``experiments.fit`` is."""
    from inference.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise click.UsageError(f"{command} runs in one process: launch it with python, not torchrun (torchrun "
                               "-m experiments.fit fits one model data-parallel; sweeps scale out with --shard i/n)")
