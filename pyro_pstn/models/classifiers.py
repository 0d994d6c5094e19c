"""The deterministic baselines: ``cnn`` (no transformation) and ``stn`` (θ = μ(x))."""
from __future__ import annotations

import pyro
import torch
import torch.nn as nn

from .base import TransformClassifier


class CNN(TransformClassifier):
    """y ~ Cat(f(x)): the plain classifier baseline."""

    stochastic_predictions = False
    latent_sites = ()

    def __init__(self, classifier: nn.Module, **kwargs):
        super().__init__(classifier, layout=None, **kwargs)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        with self.data_plate(x):
            return self.observe(self.classifier(x), y)


class STN(TransformClassifier):
    """Spatial transformer network (Jaderberg et al. 2015): y ~ Cat(f(T_μ(x)(x))).

    θ = μ(x) is a point estimate, recorded as the deterministic site ``theta``; there is nothing
    to infer, so the guide is empty and the ELBO is the log-likelihood.
    """

    stochastic_predictions = False

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        loc, _ = self.localizer(x)
        with self.data_plate(x):
            theta = pyro.deterministic("theta", loc, event_dim=1)
            return self.observe(self.classifier(self.transform(x, theta)), y)
