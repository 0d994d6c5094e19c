"""What every run directory shares: atomic writes, a lock per run, and a run's identity.

* :func:`atomic` is the one way a file of a run (config, checkpoint, metrics, posterior, result
  record, table) is written: to a temporary file beside it, then renamed over it, so a reader
  (or a run killed mid-write) sees the old file or the new one, never half of one.
* :func:`locked` holds a run directory (or a sweep's result file) for one process: a second
  ``fit --resume`` of the same run, or a second sweep reaching a run that the first is training,
  is told so (or waits), and never trains it twice or deletes it. Locks hold among the processes
  of one machine (``flock`` in its temp folder); a cluster's array tasks are kept apart by
  ``--shard``, which gives each task its own runs.
* :func:`config_diff` says which settings of a stored config differ from a requested one, so a
  resume with changed flags, or a result file of another config, is refused by name.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

if TYPE_CHECKING:
    from .engine import Trainer

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


class RunInUse(ValueError):
    """A run directory or result file is held by another process."""


def atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic`)."""
    atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, record: object) -> None:
    """``record`` as indented JSON with a final newline, atomically."""
    write_atomic(path, json.dumps(record, indent=2) + "\n")


def save_atomic(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` atomically: a reader sees the old checkpoint or the new one."""
    atomic(path, lambda tmp: torch.save(obj, tmp))


def machine(device: str | None = None) -> str:
    """What a result file says about where it was measured: CPU architecture and cores, torch threads,
    Python and torch versions, and the device (where given)."""
    return (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), Python "
            f"{platform.python_version()}, torch {torch.__version__}" + (f", device {device}" if device else ""))


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a run directory or result file: in this machine's temporary folder, named
    by a digest of the absolute path (so the results and run folders stay clean, and one file
    reached by two relative paths has one lock)."""
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / "pyro-pstn-locks" / f"{Path(path).name[:60]}-{digest}.lock"


@contextmanager
def locked(path: str | os.PathLike, wait: bool = False, what: str = "run") -> Iterator[None]:
    """Hold ``path`` (a run directory or result file) for this process.

    With ``wait`` the call blocks until the process holding it lets go (a sweep waiting for a run
    that another sweep is training); otherwise it raises :class:`RunInUse` at once. The lock is the
    operating system's (``flock``), so a killed process never leaves a stale one behind.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    file = lock_path(path)
    if not file.parent.is_dir():
        file.parent.mkdir(parents=True, exist_ok=True)
        try:  # shared by every user of the machine, as /tmp itself
            os.chmod(file.parent, 0o1777)
        except OSError:
            pass
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise RunInUse(f"{path} is in use by process {holder}: a second process would train the same {what} "
                           "twice. Wait for that one to finish (or stop it), then run this command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor lets go of the lock


#: Config fields that say where or how a run ran, not what it computes: left out of its identity.
MACHINE_FIELDS = frozenset({"device", "threads", "data_root", "spec", "data_source"})
#: Config fields that name another run by its directory: in an identity, by the run's name alone
#: (a study's runs under another --run-root are the same runs).
RUN_FIELDS = frozenset({"classifier_from"})


def run_record(config: Any, start: float, measured: dict, trainer: Trainer | None = None, device: str | None = None) -> dict:
    """A study run's result record: its name and config, what was ``measured``, its training time
    (from the trainer's history, so a resumed run counts every epoch), wall time since ``start``
    (``time.perf_counter()``), the machine, and when it finished."""
    timing = {"train_seconds": trainer.history.train_seconds} if trainer is not None else {}
    return {"name": config.name, "config": asdict(config), **measured, **timing,
            "wall_seconds": time.perf_counter() - start, "machine": machine(device or config.train.device),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def identity(config: dict) -> dict:
    """A config (nested dicts) without its :data:`MACHINE_FIELDS`, and with the runs it builds on
    (:data:`RUN_FIELDS`) by name: two runs of one identity are the same run, wherever they ran."""
    def value(key: str, v: object) -> object:
        if isinstance(v, dict):
            return identity(v)
        return Path(v).name if key in RUN_FIELDS and isinstance(v, str) else v

    return {k: value(k, v) for k, v in config.items() if k not in MACHINE_FIELDS}


def open_run(run_dir: str | os.PathLike, config: dict, trainer: Trainer | None = None) -> bool:
    """Make ``run_dir`` the directory of a run of ``config`` (its ``config.json``), and resume
    ``trainer`` from the checkpoint there if there is one (returns whether it did). A directory that
    holds a run of another config is refused, naming the settings that differ."""
    run_dir = Path(run_dir)
    stored_file = run_dir / "config.json"
    if stored_file.is_file():
        try:
            stored = json.loads(stored_file.read_text())
        except ValueError:
            stored = None  # written before this run could start: rewritten below
        if isinstance(stored, dict):
            check_same_config(run_dir, identity(stored), identity(config),
                              "Pass another --run-root, or delete that run directory to fit this config there")
    write_json(stored_file, config)
    return trainer is not None and trainer.resume(run_dir / "checkpoint.pt")


def config_diff(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    """The settings that differ between two configs (nested dicts), as ``name: stored → requested``."""
    out = []
    for key in sorted(set(stored) | set(requested), key=str):
        a, b = stored.get(key, "(unset)"), requested.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} → {b!r}")
    return out


def check_same_config(where: str | os.PathLike, stored: dict, requested: dict, remedy: str) -> None:
    """Raise a ValueError naming every setting in which the run at ``where`` (``stored``) differs
    from ``requested``: a changed option never silently reuses an earlier run's numbers."""
    diff = config_diff(stored, requested)
    if diff:
        raise ValueError(f"{where} holds a run of another config ({'; '.join(diff)}). {remedy}")


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """``path`` as a folder this process can write in (creating nothing), or a ValueError that says
    what is in the way: a file of that name, a file above it, or a folder without write access."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{option} {path}: {probe} is a file, not a folder. Pass another {option}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {probe} is not writable by this user. Pass a folder you can write in")
    return path


def measured(text: str) -> int:
    """How many results a markdown result file holds: its table rows and list items with no "not run"
    in them."""
    rows = [line for line in text.splitlines()
            if (line.lstrip().startswith("|") and not set(line) <= set("|-: ")) or line.lstrip().startswith("- ")]
    return sum("not run" not in line for line in rows)


def write_result(path: str | os.PathLike, text: str) -> None:
    """Write a result table atomically, unless it is a markdown table that would replace one with more
    measured rows: a command run with fewer finished runs (or none) never erases what an earlier one
    measured; it refuses and says how to go on. (A table's JSON summary is written after its markdown,
    by the same call, so the markdown's check guards both.)"""
    path = Path(path)
    if path.suffix == ".md" and path.is_file():
        before, after = measured(path.read_text()), measured(text)
        if after < before:
            raise ValueError(f"{path} holds {before} results (measured table rows) and this command would "
                             f"replace it with {after}: "
                             "fewer runs have results here than when it was written (another --run-root or "
                             "--results-dir, or unfinished runs?). Finish the runs, or delete the file first to "
                             "write the smaller table")
    write_atomic(path, text)
