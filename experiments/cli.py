"""Small helpers the experiment commands share (click is the CLI library of every command).

Every command is a :class:`SafeCommand` (groups: :class:`SafeGroup`): bad input, a data or run
file that cannot be used, a folder that cannot be written and a run in use by another process all
end in one ``error:`` line and exit status 2, never a traceback; Ctrl-C ends with status 130 and
says how to go on. ``PYRO_PSTN_DEBUG=1`` shows the traceback instead (for developers: a ValueError
raised by a bug reads like bad input otherwise).
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Iterable

import click

from inference.distributed import launched_by_torchrun
from inference.engine import resolve_device
from inference.runs import check_output_dir
from inference.sweep import Shard, SweepError
from pyro_pstn.data import DataError

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


def _os_message(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


class SafeCommand(click.Command):
    """A click command whose expected failures exit 2 with a one-line message (see the module)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", CONTEXT)
        super().__init__(*args, **kwargs)
        if self.short_help is None and self.help:  # click would cut it at the first '.', as in 'Fig.'
            self.short_help = self.help.strip().split("\n\n")[0].replace("\n", " ")

    def invoke(self, ctx: click.Context) -> object:
        if os.environ.get("PYRO_PSTN_DEBUG"):
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except (ValueError, DataError) as err:
            fail(str(err))
        except OSError as err:  # a folder that is a file, read-only, full, or gone
            fail(_os_message(err))
        except SweepError as err:  # a worker died: not bad input, but no traceback either
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: run the same command again to resume (finished runs are kept, and "
                       "interrupted ones continue from their last checkpoint)", err=True)
            sys.exit(130)


class SafeGroup(click.Group):
    """A click group whose sub-commands are :class:`SafeCommand`s."""

    command_class = SafeCommand

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", CONTEXT)
        super().__init__(*args, **kwargs)


def writable_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback: a folder option must be a folder this user can write in (or create)."""
    if value is None:
        return value
    try:
        check_output_dir(value, f"--{param.name.replace('_', '-')}")
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None
    return value


class FloatRange(click.FloatRange):
    """click's FloatRange, refusing ``nan`` and ``inf`` (click lets ``nan`` through any bound)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        converted = super().convert(value, param, ctx)
        if not math.isfinite(converted):
            self.fail(f"{value} is not a finite number", param, ctx)
        return converted


def with_options(options: list) -> Callable:
    """A decorator that applies a list of ``click.option`` decorators in their listed order."""

    def decorate(fn: Callable):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def fail(message: str) -> None:
    """Bad input: say what is wrong on stderr and exit with status 2 (click's usage-error code)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: ``--device`` must name cpu, cuda or cuda:N that this torch build can use,
    checked before anything is loaded or written."""
    try:
        resolve_device(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None
    return value


def device_option() -> Callable:
    return click.option("--device", default="cpu", show_default=True, callback=check_device,
                        help="cpu, cuda or cuda:N.")


class CommaList(click.ParamType):
    """A comma-separated list such as ``--folds 0,1,2``: each item converted by ``item`` (int,
    float or str) and, where given, one of ``choices`` or at least ``min`` (above it if
    ``min_open``); a bad item names the valid values."""

    name = "list"

    def __init__(self, item: type = int, choices: Iterable | None = None, min: float | None = None, min_open: bool = False):
        self.item, self.choices, self.min, self.min_open = item, choices, min, min_open

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> list:
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
            if isinstance(v, float) and not math.isfinite(v):
                self.fail(f"{text!r} is not a finite number", param, ctx)
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
        click.option("--results-dir", type=click.Path(file_okay=False), default=results, show_default=True,
                     callback=writable_dir),
        click.option("--run-root", type=click.Path(file_okay=False), default=runs, show_default=True,
                     callback=writable_dir),
        click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal)."),
    ]


class ShardType(click.ParamType):
    name = "i/n"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Shard:
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


def shard_option() -> Callable:
    return click.option("--shard", type=ShardType(), default="0/1", show_default=True,
                        help="Run only shard i of n of the sweep's runs (a cluster array task: "
                             "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); finished runs are skipped. A shard "
                             "writes no table: run the command once more without --shard (or with --aggregate-only) "
                             "when every shard has finished.")


def single_process_only(command: str) -> None:
    """Refuse a torchrun launch of a command that is not data-parallel (its N copies would write the
    same files): only ``experiments.fit`` is."""
    if launched_by_torchrun():
        raise click.UsageError(f"{command} runs in one process: launch it with python, not torchrun (torchrun "
                               "-m experiments.fit fits one model data-parallel; sweeps scale out with --shard i/n)")
