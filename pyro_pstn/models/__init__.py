"""One module per generative story; each model is a ``PyroModule`` with ``model(x, y)`` / ``guide(x, y)``.

:func:`build_model` assembles the papers' MNIST configurations; for anything else construct
the classes directly with your own networks, layout and prior, e.g.::

    GammaPSTN(my_classifier, my_localizer, prior=GammaPrior(dim=4, concentration=2.0))

and :func:`build_pose_vae` the pose-latent VAEs of papers 002/003 (``vae``, ``tvae``, ``dtvae``,
``cat_vae``), e.g. ``build_pose_vae("tvae", z_dim=12, pose_prior=LowRankNormalPose("tps", rank=4))``.
"""
from __future__ import annotations

from ..flows import ConditionalTransformFlow
from ..nets import (SimpleConv, mnist_cnn_classifier, mnist_pstn_localizer, mnist_stn_classifier, mnist_stn_localizer,
                    ucr_classifier, ucr_localizer)
from ..priors import GammaPrior, NormalPrior
from ..transforms import FAMILIES, LIE_LAYOUTS, check_layout_family, get_layout

FLOW_EMBEDDING_DIM = 32  # the pose embedding e(x) of paper 004 (A.3.1)
from .base import TransformClassifier, check_images, draw
from .classifiers import CNN, STN
from .flow_pstn import AugmentationWarmup, FlowPSTN
from .pose_vae import POSE_VAE_MODELS, DTVAE, TVAE, VAE, CatVAE, LatentVAE, build_pose_vae
from .pstn import DA, PSTN, GammaPSTN

MODELS = {"cnn": CNN, "stn": STN, "da": DA, "pstn": PSTN, "gamma_pstn": GammaPSTN, "flow_pstn": FlowPSTN}
MODEL_NAMES = tuple(MODELS)


def build_model(
    name: str,
    layout: str | None = None,
    prior_scale: float = 0.1,
    num_classes: int = 10,
    fill: float = 0.0,
    align_corners: bool = False,
    spread_init: float = -5.0,
    gamma_concentration: float = 1.0,
    gamma_rate: float = 1.0,
    family: str = "image28",
) -> TransformClassifier:
    """The papers' model ``name`` with the authors' network sizes for the data ``family``
    (anchors.md §1.3): ``"image28"`` (MNIST-sized images: the ≈28k-parameter networks) or
    ``"series"`` (univariate series, the UCR experiments: an FCN-like classifier and a 1-D
    localizer, with the ``cpab1d`` family by default). :func:`pyro_pstn.data.data_family` names
    the family of a data set.

    ``prior_scale`` is σ_p of the Gaussian P-STN prior or σ_DA of the augmentation baseline;
    ``spread_init`` the initial bias of the σ / β head (softplus(−5) ≈ 0.0067);
    ``gamma_concentration`` / ``gamma_rate`` are α0 / β0 of the Gamma P-STN (paper: 1, 1).
    ``flow_pstn`` (paper 004) takes a Lie layout (``lie_similarity`` is the P-STN's family), the
    P-STN's classifier, a SimpleConv(c = 8) pose embedder and a 4-layer conditional flow.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    default = {"series": "cpab1d"}.get(family, "lie_similarity" if name == "flow_pstn" else "similarity")
    layout_ = check_layout_family(layout or default, family)
    common = dict(fill=fill, align_corners=align_corners)
    if family == "series":
        return _series_model(name, layout_, prior_scale, num_classes, spread_init, gamma_concentration, gamma_rate,
                             common)
    if name == "flow_pstn":
        if layout_.name not in LIE_LAYOUTS:
            raise ValueError(f"flow_pstn needs a Lie layout (θ in [−1, 1], identity 0), got {layout_.name!r}; "
                             f"valid: {', '.join(LIE_LAYOUTS)}")
        flow = ConditionalTransformFlow(layout_.dim, FLOW_EMBEDDING_DIM, num_layers=4)
        embedder = SimpleConv(1, FLOW_EMBEDDING_DIM, width=8)
        return FlowPSTN(mnist_stn_classifier(num_classes), embedder, flow, layout=layout_, **common)
    if name == "cnn":
        return CNN(mnist_cnn_classifier(num_classes), **common)
    classifier = mnist_stn_classifier(num_classes)
    if name == "stn":
        return STN(classifier, layout_, localizer=mnist_stn_localizer(layout_), **common)
    if name == "da":
        return DA(classifier, NormalPrior(layout_.identity_theta(), prior_scale), layout=layout_, **common)
    localizer = mnist_pstn_localizer(layout_, spread_init)
    if name == "pstn":
        return PSTN(classifier, localizer, NormalPrior(layout_.identity_theta(), prior_scale), layout=layout_, **common)
    prior = GammaPrior(layout_.dim, gamma_concentration, gamma_rate)
    return GammaPSTN(classifier, localizer, prior, layout=layout_, **common)


def _series_model(name, layout, prior_scale, num_classes, spread_init, gamma_concentration, gamma_rate, common):
    """The UCR networks (:mod:`pyro_pstn.nets.series`) in the same generative stories."""
    common = {**common, "event_dim": 2}
    if name == "flow_pstn":
        raise ValueError("flow_pstn is built for images (Lie layouts of 2-D affine maps); for series use cnn, stn, "
                         "da, pstn or gamma_pstn")
    if name == "cnn":
        return CNN(ucr_classifier(num_classes, baseline=True), **common)
    classifier = ucr_classifier(num_classes)
    if name == "stn":
        return STN(classifier, layout, localizer=ucr_localizer(layout, spread_head=False), **common)
    if name == "da":
        return DA(classifier, NormalPrior(layout.identity_theta(), prior_scale), layout=layout, **common)
    localizer = ucr_localizer(layout, spread_head=True, spread_init=spread_init)
    if name == "pstn":
        return PSTN(classifier, localizer, NormalPrior(layout.identity_theta(), prior_scale), layout=layout, **common)
    return GammaPSTN(classifier, localizer, GammaPrior(layout.dim, gamma_concentration, gamma_rate), layout=layout,
                     **common)


__all__ = [
    "FAMILIES",
    "check_layout_family",
    "AugmentationWarmup",
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
