"""Small helpers the experiment commands share (click is the CLI library of every command)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import click

from .config import write_atomic


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


def run_options(results: str, runs: str, data_help: str) -> list:
    """The options of every study command: device, data root, results and run folders, progress."""
    return [
        click.option("--device", default="cpu", show_default=True),
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
