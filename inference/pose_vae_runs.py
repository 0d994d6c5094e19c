"""Fitting one pose-latent VAE (papers 002 and 003) and what it leaves: a run directory and a record.

:class:`PoseVAEConfig` is the run spec, :func:`run_pose_vae` fits (or resumes) it into
``<run_root>/<name>/`` (``config.json``, ``checkpoint.pt``, ``samples.png``) and returns its record:
the test ELBO terms, a linear probe's accuracy on the codes, and the timing. 003's aligner (an STN
in front of the VAE) is fitted once per data set and shared by the runs that use it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyro_pstn.data import ImageSet, augmented_set, load_dataset
from pyro_pstn.models import POSE_VAE_MODELS, LatentVAE, build_pose_vae
from pyro_pstn.models.pose_vae import ARCHITECTURES, mse_noise_scale
from pyro_pstn.nets import Aligner
from pyro_pstn.priors import DeterministicPose, DiagonalNormalPose, LowRankNormalPose, PosePrior
from pyro_pstn.transforms import get_layout

from .engine import TrainConfig, Trainer
from .latents import elbo_terms, encode, linear_probe
from .plots import image_grid
from .runs import open_run, run_record, save_atomic
from .schedules import TemperatureSchedule
from .spec import training

POSE_PRIOR_NAMES = ("none", "diagonal", "fixed_mean", "lowrank")
VAE_LOSSES = ("bernoulli", "mse")
#: 003's loss: MSE + 0.001·KL (PyTorch-VAE's, with 003's weight), on 28 × 28 single-channel images.
MSE_KL_FACTOR = 1e-3
IMAGE_PIXELS = 28 * 28
VAE_DATA = ("mnist", "fashion_mnist")
#: Seeds of 003's fixed augmented copies (train and test differ).
AUGMENT_SEEDS = {"train": 3, "test": 4}


@dataclass
class PoseVAEConfig:
    """One pose-VAE fit. ``pose_prior``: none (deterministic u), diagonal (fitted ν, τ),
    fixed_mean (ν at the identity, τ fitted) or lowrank (θ = b + W u, u ~ N(0, I_rank))."""

    model: str = "vae"
    z_dim: int = 8
    transform: str = "affine"
    pose_prior: str = "none"
    rank: int = 2
    data: str = "mnist"
    train_on: str = "base"  # base | augmented (003's fixed augmented copy of the training set)
    aligner: bool = False  # 003: an STN trained to undo the augmentation, in front of the VAE
    architecture: str = "dense"  # dense (002's 2 × 256) | conv (003's PyTorch-VAE convolutions)
    loss: str = "bernoulli"  # bernoulli (002) | mse (003: MSE + 0.001·KL, as a Gaussian likelihood)
    data_root: str | None = None
    train_size: int | None = None  # smoke runs only: the first N training images (named in the run)
    test_size: int | None = None  # smoke runs only: the first N test images
    # a dict: fields over the defaults (002's: Adam lr 1e-3, batch 100, 50 epochs, KL weight 1, seed 0)
    train: TrainConfig | dict = field(default_factory=dict)

    def __post_init__(self):
        checks = [("model", POSE_VAE_MODELS), ("pose_prior", POSE_PRIOR_NAMES), ("data", VAE_DATA),
                  ("train_on", ("base", "augmented")), ("architecture", ARCHITECTURES), ("loss", VAE_LOSSES)]
        for name, valid in checks:
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        for name in ("z_dim", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.train = training(self.train, dict(epochs=50, batch_size=100, lr=1e-3, localizer_lr_mult=1.0, weight_decay=0.0,
                                               kl_weight=1.0, checkpoint_every=5, seed=0), val_every=lambda epochs: epochs)
        get_layout(self.transform)  # raises, listing the valid families
        if self.model == "dtvae" and self.transform.startswith("tps"):
            raise ValueError("dtvae un-warps x by T_θ⁻¹, which thin-plate splines lack; use an affine transform")

    @property
    def name(self) -> str:
        parts = [self.data, self.model]
        if self.model in ("tvae", "dtvae"):
            parts += [self.transform, self.pose_prior + (str(self.rank) if self.pose_prior == "lowrank" else "")]
        if self.model != "cat_vae":
            parts.append(f"z{self.z_dim}")
        if self.train_on == "augmented":
            parts.append("augtrain")
        if self.aligner:
            parts.append("stn")
        train = self.train
        parts += [v for v, default in ((self.architecture, "dense"), (self.loss, "bernoulli"), (train.optimizer, "adam"))
                  if v != default]
        if train.weight_decay:
            parts.append(f"wd{train.weight_decay:g}")
        if train.batch_size != 100:
            parts.append(f"b{train.batch_size}")
        if train.epochs != 50:
            parts.append(f"e{train.epochs}")
        if self.train_size or self.test_size:
            parts.append(f"smoke{self.train_size or 'all'}x{self.test_size or 'all'}")
        return "-".join(parts)

    def pose_prior_module(self) -> PosePrior:
        if self.pose_prior == "none":
            return DeterministicPose(self.transform)
        if self.pose_prior == "lowrank":
            return LowRankNormalPose(self.transform, self.rank)
        return DiagonalNormalPose(self.transform, fit_loc=self.pose_prior == "diagonal")


def build_model(config: PoseVAEConfig) -> LatentVAE:
    prior = config.pose_prior_module() if config.model in ("tvae", "dtvae") else None
    gaussian = config.loss == "mse"
    return build_pose_vae(config.model, config.z_dim, prior, kl_weight=config.train.kl_weight,
                          architecture=config.architecture, likelihood="gaussian" if gaussian else "bernoulli",
                          noise_scale=mse_noise_scale(MSE_KL_FACTOR, IMAGE_PIXELS) if gaussian else 1.0)


# ---- data --------------------------------------------------------------------------------------


def load_sets(config: PoseVAEConfig) -> dict[str, ImageSet]:
    """train (base or augmented), test, and for Fashion-MNIST test_augmented; pixels in [0, 1]."""
    data = load_dataset(config.data, config.data_root, val_size=None, test_size=config.test_size, normalize=False)
    train = data.train if config.train_size is None else ImageSet(*(t[: config.train_size] for t in (data.train.images, data.train.labels)))
    sets = {"train": train, "test": data.test}
    if config.data == "fashion_mnist":
        sets["test_augmented"] = augmented_set(data.test, AUGMENT_SEEDS["test"])
        if config.train_on == "augmented" or config.aligner:
            sets["train_augmented"] = augmented_set(train, AUGMENT_SEEDS["train"])
    elif config.train_on == "augmented":
        sets["train_augmented"] = augmented_set(train, AUGMENT_SEEDS["train"])
    return sets


def fit_aligner(base: ImageSet, augmented: ImageSet, epochs: int = 20, batch_size: int = 64, lr: float = 1e-3,
                seed: int = 0, device: str = "cpu", progress: bool | None = None) -> Aligner:
    """003 §3.2: an STN trained with the augmented images as input and the originals as targets
    (MSE, AdamW lr 1e-3, 20 epochs)."""
    torch.manual_seed(seed)
    aligner = Aligner("similarity").to(device)
    optimizer = torch.optim.AdamW(aligner.parameters(), lr=lr)
    inputs, targets = augmented.images.to(device), base.images.to(device)
    for epoch in tqdm(range(epochs), desc="aligner", unit="epoch", disable=None if progress is None else not progress):
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed + epoch))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(aligner(inputs[idx]), targets[idx])
            loss.backward()
            optimizer.step()
    return aligner.eval()


@torch.no_grad()
def aligned(aligner: Aligner, data: ImageSet, batch_size: int = 2000) -> ImageSet:
    device = next(aligner.parameters()).device
    images = torch.cat([aligner(data.images[i : i + batch_size].to(device)).cpu() for i in range(0, len(data), batch_size)])
    return ImageSet(images, data.labels)


def aligner_for(config: PoseVAEConfig, sets: dict[str, ImageSet], run_root: Path, progress: bool | None) -> Aligner:
    """The data set's aligner, fitted once and shared by every run that uses it."""
    path = Path(run_root) / f"aligner-{config.data}.pt"
    if path.exists():
        aligner = Aligner("similarity")
        aligner.load_state_dict(torch.load(path, map_location="cpu"))
        return aligner.to(config.train.device).eval()
    aligner = fit_aligner(sets["train"], sets["train_augmented"], device=config.train.device, progress=progress)
    save_atomic(aligner.state_dict(), path)
    return aligner


# ---- one run -----------------------------------------------------------------------------------


def run_pose_vae(config: PoseVAEConfig, run_root: Path, progress: bool | None = None) -> dict:
    """Fit (or resume) ``config``, then measure it: test ELBO terms, linear-probe accuracy on
    the codes, and sample grids from the prior. Returns the record for the result JSON."""
    start = time.perf_counter()
    run_dir = Path(run_root) / config.name
    sets = load_sets(config)
    train = sets["train_augmented"] if config.train_on == "augmented" else sets["train"]
    tests = {"base": sets["test"]} | ({"augmented": sets["test_augmented"]} if "test_augmented" in sets else {})
    if config.aligner:
        aligner = aligner_for(config, sets, run_root, progress)
        train = aligned(aligner, train)
        tests = {name: aligned(aligner, data) for name, data in tests.items()}
    model = build_model(config)
    hooks = (TemperatureSchedule(),) if config.model == "cat_vae" else ()
    trainer = Trainer(model, config.train, step_hooks=hooks)
    open_run(run_dir, asdict(config), trainer)
    trainer.fit(train, run_dir=run_dir, progress=progress)
    model.eval()
    device = trainer.device
    terms = {name: elbo_terms(model, data.images.to(device)) for name, data in tests.items()}
    codes_train = encode(model, train.images)
    probe = linear_probe(codes_train, train.labels, {n: encode(model, d.images) for n, d in tests.items()},
                         {n: d.labels for n, d in tests.items()})
    torch.manual_seed(config.train.seed)
    pose_model = config.model in ("tvae", "dtvae")
    grids = {"u at the identity" if pose_model else "z ~ p(z)": model.generate(20, "identity").cpu()}
    if pose_model and model.pose_prior.stochastic:
        grids["u ~ p(u)"] = model.generate(20, "prior").cpu()
    image_grid(grids, run_dir / "samples.png", title=config.name)
    latent_dim = int(codes_train.shape[1]) + (model.pose_prior.code_dim if pose_model else 0)
    return run_record(config, start, {"test": terms, "probe_accuracy": probe, "latent_dim": latent_dim,
                                      "final_train_loss": trainer.history.records[-1].loss}, trainer)
