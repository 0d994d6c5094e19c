"""Pose-latent VAEs (paper 002) and the invariant-VAE probe study (paper 003).

    python -m experiments.pose_vae fit --model tvae --transform tps --pose-prior diagonal --z-dim 12
    python -m experiments.pose_vae study002          # 002 Fig. 5, Table 1 and sample grids
    python -m experiments.pose_vae study003          # 003 Table 1 (Fashion-MNIST, base / augmented)

Every run is one :class:`PoseVAEConfig`; a study lists its configs, fits the ones whose small
result JSON (``experiments/results/pose_vae/runs/<name>.json``) is missing — so a study
longer than a session resumes where it stopped — and writes its tables and figures from the
JSONs. Checkpoints and sample grids of each run stay in ``runs/pose_vae/<name>/``.

Protocol (002 appendix A): dense 2 × 256 encoder and decoder, a 1 × 128 DT-VAE localizer,
Bernoulli likelihood on [0, 1] pixels, 50 epochs. Differences from the paper, all written into
the results: Adam (lr 1e-3, batch 100) instead of Lasagne's Adadelta; the linear probe is a
logistic regression (002 used a linear SVM); 003's VAEs use the same dense nets and the
Bernoulli ELBO (003 used PyTorch-VAE conv nets and MSE + 0.001·KL).
"""
from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import click
import torch

from inference.engine import OPTIMIZERS
from inference.latents import linear_probe
from inference.plots import line_plot
from inference.pose_vae_runs import (
    AUGMENT_SEEDS,
    IMAGE_PIXELS,
    MSE_KL_FACTOR,
    POSE_PRIOR_NAMES,
    VAE_DATA,
    VAE_LOSSES,
    PoseVAEConfig,
    run_pose_vae,
)
from inference.runs import write_result
from inference.spec import TRAIN_FIELDS, config_from_dict
from inference.sweep import Shard, each_record, shard_done
from pyro_pstn.data import load_dataset
from pyro_pstn.models import POSE_VAE_MODELS
from pyro_pstn.models.pose_vae import ARCHITECTURES, mse_noise_scale

from .cli import (
    CommaList,
    FloatRange,
    SafeGroup,
    run_options,
    shard_option,
    single_process_only,
    with_options,
)
from .papers import PAPER_002_TABLE1, PAPER_003_TABLE1

RESULTS = Path(__file__).parent / "results"
RUNS = Path("runs") / "pose_vae"
#: 003 as published: PyTorch-VAE's convolutions, MSE + 0.001·KL, AdamW (torch's default weight decay
#: 0.01), lr 1e-3, 20 epochs; batch 64 (PyTorch-VAE's configs; 003 does not say).
PAPER_003_PROTOCOL = dict(architecture="conv", loss="mse", train=dict(optimizer="adamw", weight_decay=0.01, batch_size=64))


def result_path(results: Path, config: PoseVAEConfig) -> Path:
    return results / "pose_vae" / "runs" / f"{config.name}.json"


def run_missing(configs: list[PoseVAEConfig], results: Path, run_root: Path, progress: bool | None,
                workers: int = 1) -> list[dict]:
    """Fit every config without a result JSON (in ``workers`` processes) and return all records."""
    jobs = [(result_path(results, c), c, partial(run_pose_vae, c, run_root, progress if workers == 1 else False))
            for c in configs]
    return each_record(jobs, workers, lambda r: f"test reconstruction {r['test']['base']['reconstruction']:.2f}, "
                                                f"probe {r['probe_accuracy']}")


# ---- CLI ---------------------------------------------------------------------------------------

_COMMON = [
    click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True),
    *run_options(str(RESULTS), str(RUNS), "Folder with MNIST/ and FashionMNIST/ (default $PYRO_PSTN_DATA)."),
]

common_options = with_options(_COMMON)


@click.group(cls=SafeGroup)
def main() -> None:
    """Pose-latent VAEs (002) and transformation-invariant VAEs (003)."""
    single_process_only("experiments.pose_vae")


@main.command()
@click.option("--model", type=click.Choice(POSE_VAE_MODELS), default="tvae", show_default=True)
@click.option("--z-dim", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--transform", default="affine", show_default=True, help="affine, affine5, similarity, …, tps, tps<s>, cpab (34-dof diffeomorphism).")
@click.option("--pose-prior", type=click.Choice(POSE_PRIOR_NAMES), default="none", show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=2, show_default=True, help="For --pose-prior lowrank.")
@click.option("--data", type=click.Choice(VAE_DATA), default="mnist", show_default=True)
@click.option("--train-on", type=click.Choice(["base", "augmented"]), default="base", show_default=True)
@click.option("--aligner/--no-aligner", default=False, help="003: an STN in front of the VAE.")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--lr", type=FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--kl-weight", type=FloatRange(min=0), default=1.0, show_default=True,
              help="β on the KL (1 = the ELBO).")
@click.option("--architecture", type=click.Choice(ARCHITECTURES), default="dense", show_default=True,
              help="dense: 002's 2 × 256 nets; conv: 003's PyTorch-VAE convolutions.")
@click.option("--loss", type=click.Choice(VAE_LOSSES), default="bernoulli", show_default=True,
              help="bernoulli: 002's ELBO; mse: 003's MSE + 0.001·KL (a Gaussian likelihood).")
@click.option("--optimizer", type=click.Choice(tuple(OPTIMIZERS)), default="adam", show_default=True)
@click.option("--weight-decay", type=FloatRange(min=0), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train-size", type=click.IntRange(min=1), default=None, help="Smoke runs only: first N training images.")
@click.option("--test-size", type=click.IntRange(min=1), default=None, help="Smoke runs only: first N test images.")
@common_options
def fit(results_dir: str, run_root: str, progress: bool | None, **options) -> None:
    """Fit one pose VAE and print its test ELBO terms and linear-probe accuracy."""
    config = PoseVAEConfig(**{k: v for k, v in options.items() if k not in TRAIN_FIELDS},
                           train={k: v for k, v in options.items() if k in TRAIN_FIELDS})
    record = run_pose_vae(config, Path(run_root), progress)
    click.echo(json.dumps({k: record[k] for k in ("name", "test", "probe_accuracy", "wall_seconds")}, indent=2))
    click.echo(f"samples: {Path(run_root) / config.name / 'samples.png'}")


# ---- 002: Fig. 5, Table 1, sample grids ---------------------------------------------------------

STUDY002_Z = (8, 20, 32)
STUDY002_MODELS = {  # label → (model, transform)
    "vae": ("vae", "affine"),
    "tvae-affine": ("tvae", "affine"),
    "tvae-tps": ("tvae", "tps"),
    "dtvae-affine": ("dtvae", "affine"),
}
#: 002 Figs. 9–11: priors on the pose, dim z + dim u = 30 (affine z 24, TPS z 12).
STUDY002_PRIORS = [
    ("tvae", "affine", "fixed_mean", 24, 2), ("tvae", "affine", "diagonal", 24, 2),
    ("tvae", "affine5", "diagonal", 24, 2), ("tvae", "affine", "lowrank", 24, 2),
    ("tvae", "affine", "lowrank", 24, 6), ("tvae", "tps", "diagonal", 12, 2), ("tvae", "tps", "lowrank", 12, 4),
]


def _epochs(record: dict) -> int:
    """A run record's epochs, whichever format its config was written in."""
    return config_from_dict(PoseVAEConfig, record["config"]).train.epochs


def study002_configs(epochs: int, device: str, data_root: str | None) -> tuple[dict, list[PoseVAEConfig]]:
    common = dict(data_root=data_root, train=dict(epochs=epochs, device=device))
    size_runs = {(label, z): PoseVAEConfig(model=m, transform=t, z_dim=z, **common)
                 for label, (m, t) in STUDY002_MODELS.items() for z in STUDY002_Z}
    prior_runs = [PoseVAEConfig(model=m, transform=t, pose_prior=p, z_dim=z, rank=r, **common)
                  for m, t, p, z, r in STUDY002_PRIORS]
    return size_runs, prior_runs


def pca_probe(data_root: str | None, dims: tuple[int, ...] = (8, 20)) -> dict[int, float]:
    """002 Table 1's PCA rows: a linear probe on the top principal components of the pixels."""
    data = load_dataset("mnist", data_root, val_size=None, normalize=False)
    x_train, x_test = data.train.images.flatten(1), data.test.images.flatten(1)
    mean = x_train.mean(0)
    _, _, v = torch.linalg.svd(x_train - mean, full_matrices=False)
    out = {}
    for d in dims:
        project = lambda x: (x - mean) @ v[:d].T  # noqa: E731
        out[d] = linear_probe(project(x_train), data.train.labels, project(x_test), data.test.labels)
    return out


@main.command()
@click.option("--only", type=click.Choice(["all", "sizes", "priors"]), default="all", show_default=True)
@click.option("--aggregate-only", is_flag=True, help="Only rewrite the tables and figures from the finished runs.")
@shard_option()
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Runs in parallel processes.")
@common_options
def study002(epochs: int, device: str, data_root: str | None, results_dir: str, run_root: str, progress: bool | None, only: str,
             aggregate_only: bool, shard: Shard, workers: int) -> None:
    """002 Fig. 5 (reconstruction vs latent size), Table 1 (linear probe on z), sample grids."""
    results, run_root = Path(results_dir), Path(run_root)
    size_runs, prior_runs = study002_configs(epochs, device, data_root)
    # Table 1's sizes first, then the prior grids, then Fig. 5's extra size: a session that stops
    # early leaves the most useful runs done
    sizes = sorted(size_runs.items(), key=lambda item: item[0][1] not in (8, 20)) if only != "priors" else []
    todo = [c for (_, z), c in sizes if z in (8, 20)] + (prior_runs if only != "sizes" else [])
    todo += [c for (_, z), c in sizes if z not in (8, 20)]
    if not aggregate_only:
        run_missing(shard.select(todo), results, run_root, progress, workers)
    if shard.partial and not aggregate_only:
        return shard_done(shard, sum(result_path(results, c).exists() for c in todo), len(todo))
    write_study002(results, run_root, size_runs, prior_runs, data_root)


def _load(results: Path, config: PoseVAEConfig) -> dict | None:
    path = result_path(results, config)
    return json.loads(path.read_text()) if path.exists() else None


def write_study002(results: Path, run_root: Path, size_runs: dict, prior_runs: list, data_root: str | None) -> None:
    out = results / "pose_vae"
    out.mkdir(parents=True, exist_ok=True)
    records = {key: _load(results, c) for key, c in size_runs.items()}
    done = [r for r in records.values() if r]
    lines = [
        "# Paper 002: pose-latent VAEs on MNIST",
        "",
        "Produced by `python -m experiments.pose_vae study002` from the per-run files in `pose_vae/runs/` (resumable: "
        "rows marked *not run* are filled in by running it again). "
        "Networks of 002 appendix A (dense 2 × 256 encoder/decoder, 1 × 128 DT-VAE localizer), Bernoulli "
        "likelihood on [0, 1] pixels, deterministic pose (no pose prior, KL of u = 0) as in 002 Fig. 5; "
        "MNIST 50,000 train images (seeded split), the official 10,000 test images. "
        "Differences from the paper: Adam (lr 1e-3, batch 100) instead of Adadelta; a logistic-regression probe "
        "(L-BFGS, standardised codes, trained on the 50,000 training codes) instead of a linear SVM.",
        "",
    ]
    if done:
        epochs = sorted({_epochs(r) for r in done})
        priors_done = [r for r in (_load(results, c) for c in prior_runs) if r]
        wall = sum(r["wall_seconds"] for r in done + priors_done)
        lines += [f"Epochs: {', '.join(map(str, epochs))}. Machine: {done[0]['machine']}. "
                  f"Total wall time of the {len(done)} latent-size runs and the {len(priors_done)} pose-prior runs: "
                  f"{wall / 60:.0f} min, one run at a time per core.", ""]
    lines += ["## Fig. 5: reconstruction term vs latent size", "",
              "E_q[log p(x | z, u)] per test image (nats, one posterior sample; higher is better).", "",
              "| model | dim z | dim z + dim u | reconstruction | test ELBO | train min |", "|---|---:|---:|---:|---:|---:|"]
    series = {}
    for (label, z), r in records.items():
        if r is None:
            lines.append(f"| {label} | {z} | — | not run | not run | — |")
            continue
        t = r["test"]["base"]
        lines.append(f"| {label} | {z} | {r['latent_dim']} | {t['reconstruction']:.2f} | {t['elbo']:.2f} | "
                     f"{r['train_seconds'] / 60:.1f} |")
        xs, ys = series.setdefault(label, ([], []))
        xs.append(r["latent_dim"])
        ys.append(t["reconstruction"])
    if series:
        line_plot(series, out / "fig5_reconstruction_vs_latent_size.png", "dim z + dim u",
                  "test reconstruction term (nats / image)", "002 Fig. 5 (ours)")
        lines += ["", "![Fig. 5](fig5_reconstruction_vs_latent_size.png)", ""]
    pca = pca_probe(data_root)
    lines += ["## Table 1: linear probe on z (test accuracy, %)", "",
              "| representation | ours | paper 002 T1 (linear SVM, test) |", "|---|---:|---:|"]
    for z in (8, 20):
        lines.append(f"| PCA ({z}) | {100 * pca[z]:.2f} | {PAPER_002_TABLE1[('pca', z)]:.2f} |")
        for label in STUDY002_MODELS:
            r = records.get((label, z))
            ours = f"{100 * r['probe_accuracy']['base']:.2f}" if r else "not run"
            lines.append(f"| {label} ({z}) | {ours} | {PAPER_002_TABLE1[(label, z)]:.2f} |")
    lines += ["", "## Samples from the prior (002 Figs. 6, 7, 9–11)", "",
              "Each grid: first block u at the identity (the canonical frame), second block u drawn from the fitted "
              "pose prior. Files in `pose_vae/samples/`.", ""]
    samples = out / "samples"
    samples.mkdir(exist_ok=True)
    grid_configs = [c for (label, z), c in size_runs.items() if z in (8, 20)] + list(prior_runs)
    for config in grid_configs:
        src, kept = run_root / config.name / "samples.png", samples / f"{config.name}.png"
        r = _load(results, config)
        if r is None or not (src.exists() or kept.exists()):  # the grid kept from an earlier run counts
            lines.append(f"- {config.name}: not run")
            continue
        if src.exists():
            kept.write_bytes(src.read_bytes())
        t = r["test"]["base"]
        lines.append(f"- [{config.name}](samples/{config.name}.png): test ELBO {t['elbo']:.2f}, "
                     f"reconstruction {t['reconstruction']:.2f}")
    write_result(out / "study002.md", "\n".join(lines) + "\n")
    click.echo("\n".join(lines))


# ---- 003: Table 1 ------------------------------------------------------------------------------



def _row003(key: tuple) -> str:
    """A Table 1 row's name: ``base-vae``, ``augmented-cat_vae-stn``, …"""
    return f"{key[0]}-{key[1]}" + ("-stn" if key[2] else "")


ROWS_003 = tuple(_row003(key) for key in PAPER_003_TABLE1)


def study003_configs(protocol: str, epochs: int, device: str, data_root: str | None) -> dict[tuple, PoseVAEConfig]:
    """003 Table 1's eight runs under ``protocol``: ``ours`` (002's dense nets, Bernoulli ELBO, Adam,
    batch 100) or ``paper`` (:data:`PAPER_003_PROTOCOL`)."""
    extra = dict(PAPER_003_PROTOCOL if protocol == "paper" else {})
    train = dict(epochs=epochs, device=device, **extra.pop("train", {}))
    return {key: PoseVAEConfig(model=key[1], z_dim=10, data="fashion_mnist", train_on=key[0], aligner=key[2],
                               data_root=data_root, train=train, **extra)
            for key in PAPER_003_TABLE1}


PROTOCOL_003 = {
    "ours": "002's dense 2 × 256 nets and the Bernoulli ELBO (003: PyTorch-VAE conv nets, MSE + 0.001·KL); "
            "Adam lr 1e-3, batch 100. Our loss column is the test −ELBO per image (Bernoulli, nats), not comparable "
            "with the paper's.",
    "paper": "003's own networks and loss: PyTorch-VAE's VanillaVAE / CategoricalVAE convolutions cut to 3 blocks "
             "(32, 64, 128 channels, BatchNorm, LeakyReLU; decoder mirrored to 28 × 28, sigmoid output for pixels in "
             "[0, 1]), MSE + 0.001·KL fitted as the ELBO of a Gaussian likelihood with σ² = 784 · 0.001 / 2 (the same "
             "minimiser), AdamW lr 1e-3 with torch's default weight decay 0.01, batch 64 (PyTorch-VAE's; 003 gives "
             "none). The loss column is MSE + 0.001·KL per image on [0, 1] pixels; the paper's losses are on a scale "
             "003 does not state (several times ours; PyTorch-VAE's categorical VAE also multiplies its MSE by "
             "α = 30), so compare accuracies only. What still differs: the categorical VAE's KL is our relaxed "
             "(Gumbel-softmax) density estimate, where PyTorch-VAE uses the KL of the categorical probabilities, "
             "and α = 30 is not applied; the exact layer changes 003 made for Fashion-MNIST are not published.",
}


@main.command()
@click.option("--protocol", type=click.Choice(tuple(PROTOCOL_003)), default="ours", show_default=True,
              help="ours: 002's dense nets and Bernoulli ELBO; paper: 003's PyTorch-VAE nets and MSE + 0.001·KL.")
@click.option("--rows", type=CommaList(str, choices=ROWS_003), default=",".join(ROWS_003), show_default=True,
              help="Which rows of Table 1 to fit (the table lists every row run so far).")
@click.option("--aggregate-only", is_flag=True, help="Only rewrite the table from the finished runs.")
@shard_option()
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Runs in parallel processes.")
@common_options
def study003(protocol: str, rows: list[str], epochs: int, device: str, data_root: str | None, results_dir: str, run_root: str,
             progress: bool | None, aggregate_only: bool, shard: Shard, workers: int) -> None:
    """003 Table 1: VAE / categorical VAE on Fashion-MNIST, base or augmented training, ± STN."""
    results, run_root = Path(results_dir), Path(run_root)
    configs = {key: c for key, c in study003_configs(protocol, epochs, device, data_root).items()
               if _row003(key) in rows}
    if not aggregate_only:
        run_missing(shard.select(list(configs.values())), results, run_root, progress, workers)
    if shard.partial and not aggregate_only:
        return shard_done(shard, sum(result_path(results, c).exists() for c in configs.values()), len(configs))
    lines = [
        "# Paper 003 Table 1: transformation-invariant VAEs on Fashion-MNIST",
        "",
        "Produced by `python -m experiments.pose_vae study003 --protocol ours --epochs 20` and `... --protocol paper "
        "--epochs 20` (003 trained for 20 epochs). Augmented set: rotation ±10°, translation ±4 px, "
        "scale ±20 %, each applied independently with probability 0.5 (`pyro_pstn.data.random_affine_copy`, "
        f"seeds {AUGMENT_SEEDS['train']} (train) / {AUGMENT_SEEDS['test']} (test)). VAE: z of 10 dims; categorical VAE: "
        "10 variables × 10 categories, Gumbel-softmax temperature 1 → 0.5 (τ = max(0.5, exp(−1e-4 t))). STN: the "
        "authors' MNIST STN localizer (similarity), fitted once for 20 epochs to map augmented training images to "
        "their originals (MSE, AdamW 1e-3), then frozen in front of the VAE. Accuracy: logistic regression on the "
        "codes (posterior means; category probabilities for the categorical VAE), fitted on the training codes. "
        "Paper columns: 003's published values, for comparison only.",
    ]
    done = []
    for name, meaning in PROTOCOL_003.items():
        table = study003_configs(name, epochs, device, data_root)
        records = {key: _load(results, c) for key, c in table.items()}
        if not any(records.values()):
            continue
        done += [r for r in records.values() if r]
        loss = "−ELBO" if name == "ours" else "MSE + 0.001·KL"
        lines += ["", f"## Protocol `{name}`", "", meaning, "",
                  f"| train on | model | STN | acc base | acc aug | {loss} base | {loss} aug | paper acc base | "
                  "paper acc aug | paper loss base | paper loss aug | epochs | wall min |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key, r in records.items():
            paper = PAPER_003_TABLE1[key]
            label = {"vae": "VAE", "cat_vae": "CVAE (categorical)"}[key[1]]
            if r is None:
                lines.append(f"| {key[0]} | {label} | {key[2]} | not run | not run | — | — | {paper[0]} | {paper[1]} | "
                             f"{paper[2]} | {paper[3]} | — | — |")
                continue
            acc = r["probe_accuracy"]
            losses = [_loss003(r, split) for split in ("base", "augmented")]
            lines.append(f"| {key[0]} | {label} | {key[2]} | {acc['base']:.4f} | {acc['augmented']:.4f} | "
                         f"{losses[0]} | {losses[1]} | {paper[0]} | {paper[1]} | {paper[2]} | {paper[3]} | "
                         f"{_epochs(r)} | {r['wall_seconds'] / 60:.1f} |")
        effects = []
        for (train_on, model, stn), config in table.items():
            with_stn = records.get((train_on, model, True)) if not stn else None
            without = records[(train_on, model, stn)] if not stn else None
            if with_stn and without:
                label = {"vae": "VAE", "cat_vae": "categorical VAE"}[model]
                effects.append(f"{label} trained on {train_on}: {without['probe_accuracy']['augmented']:.4f} → "
                               f"{with_stn['probe_accuracy']['augmented']:.4f}")
        if effects:
            lines += ["", "Accuracy on the augmented test set without → with the STN: " + "; ".join(effects) + "."]
    if done:
        lines += ["", "Machines: " + "; ".join(sorted({r["machine"] for r in done})) + ". *wall min* is the whole run "
                  "(fit, ELBO terms, probe); the first run with an STN also fits the STN (about 5 min), which the others "
                  "then load from `runs/pose_vae/`."]
    out = results / "pose_vae"
    out.mkdir(parents=True, exist_ok=True)
    write_result(out / "study003.md", "\n".join(lines) + "\n")
    click.echo("\n".join(lines))


def _loss003(record: dict, split: str) -> str:
    """The run's test loss in its protocol's units: −ELBO (Bernoulli) or 003's MSE + 0.001·KL.

    With the Gaussian likelihood of σ² = Pβ/2, −ELBO = Σ(x − x̂)²/(2σ²) + P·log(σ√(2π)) + KL, so
    MSE + β·KL = β · (−ELBO − P·log(σ√(2π))).
    """
    elbo = record["test"][split]["elbo"]
    if record["config"].get("loss", "bernoulli") == "bernoulli":
        return f"{-elbo:.1f}"
    sigma = mse_noise_scale(MSE_KL_FACTOR, IMAGE_PIXELS)
    return f"{MSE_KL_FACTOR * (-elbo - IMAGE_PIXELS * math.log(sigma * math.sqrt(2 * math.pi))):.4f}"


if __name__ == "__main__":
    main()

