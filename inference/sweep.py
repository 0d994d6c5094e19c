"""One sweep mechanism for every study: a list of :class:`Run` s (a config and its result file), run
in worker processes, several runs of one model as one stack where they can be, one shard of a
cluster array at a time, resumable and safe to run twice at once.

* A run is finished when its result file holds a run of its config (:meth:`Run.finished`); a result
  of another config is refused by name, never taken for it.
* A worker holds a run's result file while it fits it (:func:`inference.runs.locked`): a second
  sweep reaching that run waits, then reads the result. A killed run resumes from its checkpoint.
* :class:`Shard` cuts the deterministic run list into contiguous blocks for job arrays.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from pyro_pstn.data import dataset_ndim, subset_size
from pyro_pstn.models.stacked import STACKABLE_MODELS

from .engine import CHECKPOINT, read_checkpoint
from .fitting import CONFIG_FILE, STACK_FILE, run_fit, run_fit_stack
from .runs import check_same_config, identity, locked, write_json
from .spec import FitConfig, config_from_dict
from .stacked import stack_dir_name


class SweepError(RuntimeError):
    """A sweep stopped part-way (a worker died); its finished runs are kept."""


def report(message: str) -> None:
    print(message, flush=True)



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


def shard_done(shard: Shard, finished: int, total: int) -> None:
    """What a shard says when its runs are done (it leaves the table to the final, unsharded call)."""
    report(f"shard {shard} done: {finished} of the sweep's {total} runs have results. When every shard has "
           "finished, run the same command without --shard (or with --aggregate-only) to write the table.")



@dataclass(frozen=True)
class Run:
    """One run of a sweep: a complete config, the result file that marks it finished, and the folder
    its run directory (checkpoints, figures) goes in, named after the result file."""

    config: FitConfig
    result_file: Path
    run_root: str

    @property
    def run_dir(self) -> Path:
        return Path(self.run_root) / Path(self.result_file).stem

    def at_threads(self, threads: int | None) -> FitConfig:
        """The config as fitted: with the torch threads of the worker that fits it."""
        return replace(self.config, train=replace(self.config.train, threads=threads))

    def finished(self) -> bool:
        """Whether the result file holds this run. A result of another config is never taken for it:
        the sweep refuses, naming the settings that differ (a smoke run with ``--epochs 1`` into the
        committed results, say)."""
        path = Path(self.result_file)
        if not path.exists():
            return False
        try:
            stored = config_from_dict(FitConfig, json.loads(path.read_text())["config"]).identity()
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path} cannot be read as a run's result ({type(err).__name__}: {err}): restore it, or "
                             "delete it to fit the run again") from None
        check_same_config(path, stored, self.config.identity(),
                          "A sweep writes into --results-dir (default: the committed results): pass another "
                          "--results-dir for runs of other settings, or delete the file to fit it again")
        return True

    def record(self) -> dict:
        return json.loads(Path(self.result_file).read_text())


def resumable(run_dir: Path, configs: list[FitConfig], stacked: bool = False) -> bool:
    """Whether ``run_dir`` holds an interrupted run of exactly ``configs`` (one, or a stack's) with
    a readable checkpoint.

    A sweep's run directory is named after its result file(s), so a run whose worker was killed
    (``kill -9``, the end of a session) is found again by the next sweep: it resumes from its last
    checkpoint. A leftover that cannot be resumed (killed before its first checkpoint, or of
    another config) is removed, and the run starts afresh. Called with the run's result files held
    (:func:`inference.runs.locked`), so no other sweep is training in it.
    """
    if not run_dir.exists():
        return False
    config_file = STACK_FILE if stacked else CONFIG_FILE
    try:
        stored = json.loads((run_dir / config_file).read_text())
        stored = stored["configs"] if stacked else [stored]
        # read back through FitConfig: a field added since the run started takes its default
        if [config_from_dict(FitConfig, c).identity() for c in stored] == [c.identity() for c in configs]:
            read_checkpoint(run_dir / CHECKPOINT)
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    shutil.rmtree(run_dir)
    return False


def _run_one(run: Run, threads: int) -> dict:
    """Fit one run in a worker process and keep its metrics as a small JSON.

    The result file is written atomically at the very end: a killed worker leaves none, and the
    next sweep resumes the run from its checkpoint (:func:`resumable`). The result file is held
    while the run trains: a second sweep that reaches it waits, then takes its result.
    """
    with locked(run.result_file, wait=True):
        if Path(run.result_file).exists():  # another sweep finished it while this one waited
            return run.record()
        torch.set_num_threads(threads)
        config = run.at_threads(threads)
        resume = resumable(run.run_dir, [config])
        before = _seconds_before(run.run_dir, stacked=False)[0] if resume else 0.0
        start = time.perf_counter()
        metrics = run_fit(config, run.run_dir, resume=resume, progress=False)
        return _write_record(run.result_file, config, metrics, before + time.perf_counter() - start, threads,
                             resumed=resume)


def _seconds_before(run_dir: Path, stacked: bool) -> list[float]:
    """Training seconds an interrupted run (each member of a stack) had spent before it is resumed,
    from its checkpoint's history, so a run resumed across sessions reports its whole wall time
    (less the validations and checkpoint writes of the earlier segments, and any epochs trained
    after the last checkpoint, which are lost)."""
    state = read_checkpoint(run_dir / CHECKPOINT)
    histories = state["member_histories"] if stacked else [state["history"]]
    return [float(h["train_seconds"]) for h in histories]


def _write_record(result_file: Path, config: FitConfig, metrics: dict, wall_seconds: float, threads: int,
                  resumed: bool, stacked: int = 1) -> dict:
    """The run's small result JSON (what the tables are built from), written atomically."""
    name = metrics["evaluated_on"]
    record = {
        "model": config.model,
        "size": subset_size(config.data),
        "data": config.data,
        "fold": config.fold,
        "result_file": Path(result_file).name,
        "evaluated_on": name,
        name: metrics[name],
        "reliability": metrics["reliability"],
        "validation": metrics["validation"],
        "theta_posterior_std": metrics.get("theta_posterior_std"),  # None: no θ posterior (cnn); 0 for the stn
        f"{name}_at_mean": metrics.get(f"{name}_at_mean"),  # the P-STNs' classifier at μ(x), no draws of θ
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall_seconds,
        "device": metrics["device"],
        "machine": f"{metrics['machine']} ({os.cpu_count()} cores, {threads} torch thread(s) per run), "
        f"torch {metrics['torch']}",
        "data_source": metrics["data_source"],
        "config": asdict(config),
        "resumed": resumed,
        "stacked": stacked,  # runs in the fit this one was a member of (1: alone)
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if metrics.get("diverged"):
        record["diverged"] = metrics["diverged"]
    write_json(result_file, record)
    return record


def _run_stack(runs: list[Run], threads: int) -> list[dict]:
    """Fit the runs (one model and size; folds, seeds, w or σ_p may differ) as one stack in a worker
    process; each member leaves the result JSON and run directory of a single run (:func:`_run_one`).
    Every member's result file is held (in one order, so two sweeps cannot wait on each other);
    members another sweep finished meanwhile are not fitted again."""
    with ExitStack() as held:
        for run in sorted(runs, key=lambda r: str(r.result_file)):
            held.enter_context(locked(run.result_file, wait=True))
        done = {id(run): run.record() for run in runs if Path(run.result_file).exists()}
        todo = [run for run in runs if id(run) not in done]
        if len(todo) == 1:
            done[id(todo[0])] = _run_one(todo[0], threads)
        elif todo:
            torch.set_num_threads(threads)
            configs = [run.at_threads(threads) for run in todo]
            stack_dir = Path(todo[0].run_root) / stack_dir_name([Path(run.result_file).stem for run in todo])
            resume = resumable(stack_dir, configs, stacked=True)
            for run in todo:  # a member's leftover from an earlier single run or stack
                if run.run_dir.exists():
                    shutil.rmtree(run.run_dir)
            before = _seconds_before(stack_dir, stacked=True) if resume else [0.0] * len(todo)  # already 1/R shares
            start = time.perf_counter()
            metrics = run_fit_stack(configs, [run.run_dir for run in todo], stack_dir, resume=resume, progress=False)
            share = (time.perf_counter() - start) / len(todo)
            for run, c, m, b in zip(todo, configs, metrics, before):
                done[id(run)] = _write_record(run.result_file, c, m, b + share, threads, resumed=resume,
                                              stacked=len(todo))
        return [done[id(run)] for run in runs]


#: What the members of one stack may differ in (FitConfig fields; ``train.`` ones of its TrainConfig).
STACK_VARIES = ("fold", "train.seed", "train.kl_weight", "prior_scale", "gamma_concentration", "gamma_rate")


def _stack_key(run: Run) -> str | None:
    """What a run must share with the others of its stack (None: it cannot stack)."""
    config = run.config
    if config.model not in STACKABLE_MODELS or dataset_ndim(config.data) != 2:  # no member layout (flow, series)
        return None
    shared = config.identity()
    for name in STACK_VARIES:
        *parent, key = name.split(".")
        (shared[parent[0]] if parent else shared).pop(key)
    return json.dumps([shared, run.run_root], sort_keys=True)


def stacks(runs: list[Run], stack: int) -> list[list[Run]]:
    """The runs in groups of at most ``stack`` that can train as one stack: the same config but for
    :data:`STACK_VARIES` (their order kept). Models without a member layout run alone."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = _stack_key(run)
        groups.setdefault(key if key is not None else f"alone {len(groups)}", []).append(run)
    return [group[i : i + stack] for group in groups.values() for i in range(0, len(group), stack)]


def _run_pool(runs: list[Run], workers: int, threads: int | None = None, stack: int = 1) -> list[dict]:
    """Run every run in ``workers`` processes, ``stack`` runs at a time as one stacked fit where they
    can be (:func:`stacks`; ``_run_one`` for a run alone); report as they finish.

    ``threads`` (torch threads per worker) defaults to sharing the cores evenly; pass fewer to leave
    cores free for other work while a long sweep runs.
    """
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    groups = stacks(runs, stack)
    report(f"{len(runs)} runs to do as {len(groups)} fit(s) ({workers} worker(s), {threads} thread(s) each)")
    records = []
    # spawn, not fork: forking a process whose torch thread pool is running can hang the child
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_stack, group, threads) if len(group) > 1
                       else pool.submit(_run_one, group[0], threads) for group in groups]
            for future in as_completed(futures):
                done = future.result()
                for r in done if isinstance(done, list) else [done]:
                    records.append(r)
                    split = r["evaluated_on"]
                    report(f"done {r['result_file']}: {split} accuracy {r[split]['accuracy']:.4f}, "
                               f"{r['wall_seconds']:.0f} s" + (f" (a 1/{r['stacked']} share of a stack)"
                                                              if r["stacked"] > 1 else ""))
                    if r.get("diverged"):
                        report(f"warning: {r['result_file']} diverged: {r['diverged']}")
    except BrokenProcessPool:
        raise SweepError(
            f"a worker process died in the middle of a run (killed, or out of memory); {len(records)} run(s) finished "
            "and are kept. Run the same command again: it skips finished runs and resumes interrupted ones from "
            "their last checkpoint") from None
    return records


def sweep(runs: list[Run], shard: Shard, workers: int, threads: int | None = None, stack: int = 1,
          aggregate_only: bool = False) -> bool:
    """Run the unfinished runs of ``shard`` of the sweep's full, ordered run list (:meth:`Run.finished`);
    returns whether this call should write the table (not when it is one shard of several)."""
    if aggregate_only:
        return True
    todo = [run for run in shard.select(runs) if not run.finished()]
    if todo:
        _run_pool(todo, workers, threads, stack)
    if shard.partial:
        shard_done(shard, sum(Path(run.result_file).exists() for run in runs), len(runs))
        return False
    return True


# ---- studies whose runs are not FitConfigs (pose VAEs, flows, localizers) ----------------------


def cached_record(path: Path, config: Any, fit: Callable[[], dict], summary: Callable[[dict], str]) -> dict:
    """The result record of ``config`` (a config dataclass with a ``name``) at ``path``, calling
    ``fit()`` first (and writing its record atomically) if it is missing: what makes every study
    resumable run by run. The record is held while it is fitted (a second process waits for it,
    then reads it), and a record of another config is refused, naming what differs."""
    path = Path(path)
    with locked(path, wait=True):
        if path.exists():
            record = json.loads(path.read_text())
            if isinstance(record.get("config"), dict):
                stored = asdict(config_from_dict(type(config), record["config"]))  # fields added since: their defaults
                check_same_config(path, identity(stored), identity(asdict(config)),
                                  "Pass another --results-dir for runs of other settings, or delete the file to "
                                  "fit it again")
            return record
        report(f"fitting {config.name}")
        write_json(path, fit())
        record = json.loads(path.read_text())  # as a later call reads it: keys are strings, tuples lists
        report(f"  done in {record['wall_seconds']:.0f} s: {summary(record)}")
        return record


def stacked_records(jobs: list[tuple], fit_stack: Callable[[list], list[dict]], stack: int,
                    key: Callable[[Any], object], summary: Callable[[dict], str] = lambda record: "") -> int:
    """Fit the missing runs of ``(result path, config, fit)`` jobs in stacks of up to ``stack`` runs that
    share ``key(config)``: ``fit_stack(configs)`` returns their records, written as :func:`cached_record`
    writes one (each result file held while the stack is fitted, so a second process waits and finds
    them). Returns how many runs were fitted; the rest (done, or left alone) are for :func:`each_record`."""
    groups: dict[object, list[tuple]] = {}
    for job in jobs:
        if not Path(job[0]).exists():
            groups.setdefault(key(job[1]), []).append(job)
    fitted = 0
    for group in groups.values():
        for part in (group[i : i + stack] for i in range(0, len(group), stack)):
            if len(part) < 2:
                continue  # one run: fitted alone by each_record
            paths = [Path(path) for path, _, _ in part]
            with ExitStack() as held:
                for path in sorted(paths):  # one order for every process: no deadlock
                    held.enter_context(locked(path, wait=True))
                if any(path.exists() for path in paths):  # another process fitted them meanwhile
                    continue
                report(f"fitting {len(part)} runs as one stack: {part[0][1].name}, …")
                for path, record in zip(paths, fit_stack([config for _, config, _ in part])):
                    write_json(path, record)
                    report(f"  {record['name']}: {summary(record)}")
            fitted += len(part)
    return fitted


def _cached_job(job: tuple) -> dict:
    path, config, fit = job
    return cached_record(path, config, fit, lambda record: "")


def each_record(jobs: list[tuple], workers: int = 1, summary: Callable[[dict], str] = lambda record: "",
                fit_missing: bool = True) -> list[dict]:
    """The record of every ``(result path, config, fit)`` job, fitting the missing ones, in ``workers``
    processes where more than one (``fit`` must then be picklable: a module-level function or a
    ``functools.partial`` of one). Each record is held while it is fitted (:func:`cached_record`), so
    two processes share the work; a killed one leaves its run to resume. With ``fit_missing=False``
    (``--aggregate-only``) nothing is fitted: a missing record is an error that names it."""
    missing = [config.name for path, config, _ in jobs if not Path(path).exists()]
    if missing and not fit_missing:
        raise ValueError(f"{len(missing)} of {len(jobs)} runs have no result file ({', '.join(missing[:3])}"
                         f"{', …' if len(missing) > 3 else ''}): run the command without --aggregate-only")
    if workers <= 1 or len(missing) <= 1:
        return [cached_record(path, config, fit, summary) for path, config, fit in jobs]
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_cached_job, jobs))
    except BrokenProcessPool:
        raise SweepError("a worker process died in the middle of a run (killed, or out of memory); the runs that "
                         "finished are kept. Run the same command again: it skips them") from None
