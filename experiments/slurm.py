"""Submit a sweep as a SLURM job array with submitit (``pip install -e '.[slurm]'``).

    python -m experiments.slurm --shards 5 --partition gpu --gpus 1 --timeout-min 480 -- \\
        reproduce mnist_subsets --sizes 3000 --stack 5 --device cuda

Array task i runs ``python -m experiments.<COMMAND ...> --shard i/n`` (each sweep command takes
``--shard``, ``experiments.cli.Shard``); once every task has succeeded, one more job runs the same
command without ``--shard``: it finds every run finished and writes the table. Logs go to
``--log-dir``. ``--cluster local`` runs the same jobs as local processes (how the tests exercise
it); the plain-``sbatch`` recipe without submitit is ``experiments/sweep_array.sbatch``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from .cli import SafeCommand, fail

#: The commands whose sweeps take --shard: module of experiments → its sweep subcommands.
SHARDED = {"reproduce": ("mnist_subsets", "grid", "calibration", "ucr"), "pose_vae": ("study002", "study003")}


def run_command(argv: list[str]) -> None:
    """One job: ``python -m experiments.<argv>`` in the submitting directory, failing the job if it fails."""
    subprocess.run([sys.executable, "-m", f"experiments.{argv[0]}", *argv[1:]], check=True)


def _check(command: tuple[str, ...]) -> list[str]:
    valid = ", ".join(f"{m} {c}" for m, cs in SHARDED.items() for c in cs)
    if len(command) < 2 or command[1] not in SHARDED.get(command[0], ()):
        raise click.UsageError(f"after -- give a sweep command, one of: {valid} (with its options); got "
                               f"{' '.join(command) or 'nothing'}")
    if "--shard" in command:
        raise click.UsageError("leave --shard out: each array task adds its own")
    return list(command)


@click.command(cls=SafeCommand)
@click.option("--shards", type=click.IntRange(min=1), required=True, help="Array tasks (n of --shard i/n).")
@click.option("--cluster", type=click.Choice(["slurm", "local", "debug"]), default="slurm",
              help="slurm: submit to SLURM; local/debug: run the same jobs here (tests, dry runs).")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--gpus", type=click.IntRange(min=0), default=0, help="GPUs per task.")
@click.option("--cpus", type=click.IntRange(min=1), default=4, help="CPU cores per task.")
@click.option("--timeout-min", type=click.IntRange(min=1), default=480, help="Time limit of each task, minutes.")
@click.option("--parallel", type=click.IntRange(min=1), default=None, help="At most this many tasks at once.")
@click.option("--log-dir", type=click.Path(file_okay=False), default="runs/slurm")
@click.option("--wait/--no-wait", default=None, help="Wait for the jobs (default: only for local and debug).")
@click.argument("command", nargs=-1, required=True)
def main(shards: int, cluster: str, partition: str | None, gpus: int, cpus: int, timeout_min: int, parallel: int | None,
         log_dir: str, wait: bool | None, command: str) -> None:
    """Run the sweep COMMAND (after --) as a job array of SHARDS tasks, then write its table."""
    argv = _check(command)
    try:
        import submitit
    except ImportError:
        raise click.UsageError("submitit is not installed: pip install -e '.[slurm]' (or use "
                               "experiments/sweep_array.sbatch with plain sbatch)") from None
    executor = submitit.AutoExecutor(folder=Path(log_dir) / "%j", cluster=cluster)
    executor.update_parameters(name=f"pyro-pstn-{argv[1]}", timeout_min=timeout_min, cpus_per_task=cpus,
                               gpus_per_node=gpus, slurm_partition=partition,
                               slurm_array_parallelism=parallel or shards)
    tasks = executor.map_array(run_command, [[*argv, "--shard", f"{i}/{shards}"] for i in range(shards)])
    click.echo(f"submitted {shards} array task(s): {', '.join(t.job_id for t in tasks)}")
    if cluster == "slurm":  # the table: one job once every task has succeeded
        array_id = tasks[0].job_id.split("_")[0]
        executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{array_id}"},
                                   slurm_array_parallelism=1)
        final = executor.submit(run_command, argv)
        click.echo(f"submitted the table job {final.job_id} (after {array_id} succeeds); logs in {log_dir}")
    if wait if wait is not None else cluster != "slurm":
        for i, task in enumerate(tasks):
            try:
                task.result()
            except Exception as err:  # submitit's FailedJobError or the task's own exception
                fail(f"array task {i} (job {task.job_id}) failed: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}. "
                     f"Its log is under {log_dir}; the other tasks' finished runs are kept, and the same command "
                     "resumes the sweep")
        if cluster != "slurm":
            try:
                run_command(argv)
            except subprocess.CalledProcessError as err:
                fail(f"the table job (python -m experiments.{' '.join(argv)}) failed with exit status {err.returncode}")
        click.echo("every task has finished")


if __name__ == "__main__":
    main()
