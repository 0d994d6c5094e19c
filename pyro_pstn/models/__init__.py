"""One module per generative story; each model is a ``PyroModule`` with ``model(x, y)`` / ``guide(x, y)``.

:func:`build_model` assembles a model for a data set from its :class:`~pyro_pstn.data.DataSpec`:
the papers' networks, with the authors' exact sizes, where the spec is the papers' (1 × 28 × 28
images; univariate series), networks sized from the spec otherwise, and any ``nn.Module`` of yours
as classifier or localizer::

    build_model("gamma_pstn", data.spec)                       # networks sized from the data
    build_model("pstn", data.spec, classifier=my_resnet)       # your classifier, our localizer
    GammaPSTN(my_classifier, my_localizer, prior=GammaPrior(dim=4, concentration=2.0))  # by hand

:func:`build_pose_vae` builds the pose-latent VAEs of papers 002/003 (``vae``, ``tvae``, ``dtvae``,
``cat_vae``), e.g. ``build_pose_vae("tvae", z_dim=12, pose_prior=LowRankNormalPose("tps", rank=4))``.
"""
from __future__ import annotations

import torch.nn as nn

from ..data.types import MNIST_SPEC, DataSpec
from ..flows import ConditionalTransformFlow
from ..nets import (
    SimpleConv,
    mnist_cnn_classifier,
    mnist_pstn_localizer,
    mnist_stn_classifier,
    mnist_stn_localizer,
    ucr_classifier,
    ucr_localizer,
)
from ..priors import GammaPrior, NormalPrior
from ..transforms import TransformFamily, check_layout_family
from .augerino import AUGERINO_INIT, Augerino, LearnedBox
from .base import BoxClassifier, TransformClassifier, check_images, check_labels, draw, kl_weight_per_dimension
from .classifiers import CNN, STN
from .flow_pstn import AugmentationWarmup, FlowPSTN
from .pose_vae import DTVAE, POSE_VAE_MODELS, TVAE, VAE, CatVAE, LatentVAE, build_pose_vae
from .pstn import DA, PSTN, GammaPSTN

FLOW_EMBEDDING_DIM = 32  # the pose embedding e(x) of paper 004 (A.3.1)
MIN_SERIES_LENGTH = 10  # cpab1d's cells: a shorter series has less than one value per cell

MODELS = {"cnn": CNN, "stn": STN, "da": DA, "pstn": PSTN, "gamma_pstn": GammaPSTN, "flow_pstn": FlowPSTN,
          "augerino": Augerino}
MODEL_NAMES = tuple(MODELS)
#: The models whose θ lives in a Lie layout's box [−1, 1]^D (:class:`BoxClassifier`).
BOX_MODELS = tuple(name for name, cls in MODELS.items() if issubclass(cls, BoxClassifier))
#: Augerino's own family: the six generators of its ``UniformAug`` (translations, rotation, scale, stretch, shear).
AUGERINO_LAYOUT = "lie_affine"


def default_layout(name: str, spec: DataSpec) -> str:
    """The transform family of ``name`` when none is given: ``cpab1d`` for series, a Lie layout
    for ``flow_pstn`` (the similarity's) and ``augerino`` (its six generators), else the similarity
    layout (rotation, scale, translation)."""
    if spec.ndim == 1:
        return "cpab1d"
    return {"flow_pstn": "lie_similarity", "augerino": AUGERINO_LAYOUT}.get(name, "similarity")


def build_model(
    name: str,
    spec: DataSpec = MNIST_SPEC,
    layout: str | TransformFamily | None = None,
    prior_scale: float = 0.1,
    fill: float | tuple[float, ...] | None = None,
    align_corners: bool = False,
    spread_init: float | None = None,
    gamma_concentration: float = 1.0,
    gamma_rate: float = 1.0,
    classifier: nn.Module | None = None,
    localizer: nn.Module | None = None,
) -> TransformClassifier:
    """Model ``name`` for data of ``spec`` (default: the papers' MNIST spec).

    Networks: the authors' sizes (anchors.md §1.3) on 1 × 28 × 28 images and on series (an FCN-like
    classifier and a 1-D localizer, with the ``cpab1d`` family by default); on other images the same
    networks with the spec's channels, any H × W from 16 up (an adaptive max-pool keeps the heads on
    at most 4 × 4 features) and the spec's classes. ``classifier`` replaces f: any module mapping
    inputs ``[B, *spec.shape]`` to logits ``[B, K]``. ``localizer`` replaces the localizer: a module
    returning ``(μ(x), spread(x))`` of shape ``[B, D]`` each (spread None for the STN).

    ``layout`` is any transform family (a name or an object of the
    :mod:`~pyro_pstn.transforms.family` contract); ``fill`` the warps' outside value (default: the
    spec's background); ``prior_scale`` σ_p of the Gaussian P-STN prior or σ_DA of the augmentation
    baseline; ``spread_init`` the initial bias of the σ / β head (default −5: softplus(−5) ≈ 0.0067),
    or Augerino's initial ρ (default 0, Augerino's: ω = softplus(ρ) = 0.69); ``gamma_concentration``
    / ``gamma_rate`` α0 / β0 of the Gamma P-STN (paper: 1, 1). ``flow_pstn`` (paper 004) takes a Lie
    layout, the P-STN's classifier, a SimpleConv(c = 8) pose embedder and a 4-layer conditional flow;
    ``augerino`` a Lie layout (default: its six generators) and the P-STN's classifier.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if not isinstance(spec, DataSpec):
        raise ValueError(f"spec must be a pyro_pstn.data.DataSpec (e.g. data.spec), got {type(spec).__name__}")
    if spec.ndim == 1 and spec.shape[-1] < MIN_SERIES_LENGTH:
        raise ValueError(f"series of {spec.shape[-1]} values are too short to warp in time: the models need at least "
                         f"{MIN_SERIES_LENGTH} (one per cell of cpab1d's tessellation)")
    if name in BOX_MODELS and spec.ndim != 2:
        raise ValueError(f"{name} is built for images (Lie layouts of 2-D affine maps); for series use "
                         f"{', '.join(n for n in MODEL_NAMES if n not in BOX_MODELS)}")
    layout_ = check_layout_family(layout or default_layout(name, spec), spec.ndim)
    common = dict(fill=spec.fill if fill is None else fill, align_corners=align_corners, spec=spec)
    nets = _Networks(spec, layout_, -5.0 if spread_init is None else spread_init, classifier, localizer)
    if name == "flow_pstn":
        flow = ConditionalTransformFlow(layout_.dim, FLOW_EMBEDDING_DIM, num_layers=4)
        embedder = SimpleConv(spec.channels, FLOW_EMBEDDING_DIM, width=8)
        return FlowPSTN(nets.classifier(), embedder, flow, layout=layout_, **common)
    if name == "augerino":
        box = LearnedBox(layout_.dim, AUGERINO_INIT if spread_init is None else spread_init)
        return Augerino(nets.classifier(), box, layout=layout_, **common)
    if name == "cnn":
        return CNN(nets.classifier(baseline=True), **common)
    if name == "stn":
        return STN(nets.classifier(), layout_, localizer=nets.localizer(probabilistic=False), **common)
    if name == "da":
        return DA(nets.classifier(), NormalPrior(layout_.identity_theta(), prior_scale), layout=layout_, **common)
    if name == "pstn":
        return PSTN(nets.classifier(), nets.localizer(), NormalPrior(layout_.identity_theta(), prior_scale),
                    layout=layout_, **common)
    prior = GammaPrior(layout_.dim, gamma_concentration, gamma_rate)
    return GammaPSTN(nets.classifier(), nets.localizer(), prior, layout=layout_, **common)


class _Networks:
    """The networks of a model for a spec: the user's where given, else the papers' (sized from the spec)."""

    def __init__(self, spec: DataSpec, layout: str | TransformFamily, spread_init: float, classifier: nn.Module,
                 localizer: nn.Module):
        self.spec, self.layout, self.spread_init = spec, layout, spread_init
        self.user_classifier, self.user_localizer = classifier, localizer

    def classifier(self, baseline: bool = False) -> nn.Module:
        if self.user_classifier is not None:
            return self.user_classifier
        spec = self.spec
        if spec.ndim == 1:
            return ucr_classifier(spec.num_classes, baseline=baseline, in_channels=spec.channels)
        make = mnist_cnn_classifier if baseline else mnist_stn_classifier
        return make(spec.num_classes, spec.channels, spec.shape[1:])

    def localizer(self, probabilistic: bool = True) -> nn.Module:
        if self.user_localizer is not None:
            return self.user_localizer
        spec = self.spec
        if spec.ndim == 1:
            return ucr_localizer(self.layout, spread_head=probabilistic, spread_init=self.spread_init,
                                 in_channels=spec.channels)
        if probabilistic:
            return mnist_pstn_localizer(self.layout, self.spread_init, spec.channels, spec.shape[1:])
        return mnist_stn_localizer(self.layout, spec.channels, spec.shape[1:])


__all__ = [
    "check_layout_family",
    "check_labels",
    "default_layout",
    "kl_weight_per_dimension",
    "AugmentationWarmup",
    "Augerino",
    "AUGERINO_INIT",
    "AUGERINO_LAYOUT",
    "BOX_MODELS",
    "BoxClassifier",
    "LearnedBox",
    "FlowPSTN",
    "CNN",
    "DTVAE",
    "POSE_VAE_MODELS",
    "TVAE",
    "VAE",
    "CatVAE",
    "LatentVAE",
    "build_pose_vae",
    "DA",
    "MODELS",
    "MODEL_NAMES",
    "PSTN",
    "STN",
    "GammaPSTN",
    "TransformClassifier",
    "build_model",
    "check_images",
    "draw",
]
