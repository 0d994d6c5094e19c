"""Flow-conditioned transformations (paper 004 §3): an instance-wise distribution over T.

model:  T ~ U([−1, 1]^D)                              (a uniform prior on the box of coefficients)
        y ~ Cat(f(A_T(x)))                            (eq. 9's likelihood, A_T a Lie-algebra warp)
guide:  T ~ g_φ(T | e(x))                             (a conditional normalizing flow, §3 / A.3.1)

With the KL weight α on the T sites (``poutine.scale``, as for every model here),

    −ELBO = E_g[−log f(y | A_T(x))] + α E_g[log g_φ(T | x)] − α E_g[log U(T)]
          = L_classifier + α E_g[log g_φ]            + α D log 2,

which is the augmenter loss of eq. 10 (= L_classifier − α H[g_φ], eq. 11) up to the constant
α D log 2: the entropy bonus *is* the KL to the uniform prior. α is a weight on the summed
log-density of T (not per dimension), passed to model and guide as the loss's ``kl_weight``; a
PID controller (:class:`inference.EntropyController`) may choose it every step from
:attr:`FlowPSTN.last_entropy`, which the guide records.
"""
from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

from ..flows import ConditionalTransformFlow
from .base import BoxClassifier


class FlowPSTN(BoxClassifier):
    """``flow_pstn``: a classifier f, a pose embedder e and a conditional flow g(T | e(x)).

    The flow's dimension must match the layout's (a Lie layout such as ``lie_rotation``,
    ``lie_rotation_translation``, ``lie_affine`` or ``lie_decoupled``, whose θ = 0 is the
    identity and whose coefficients live in [−1, 1]).
    """

    def __init__(self, classifier: nn.Module, embedder: nn.Module, flow: ConditionalTransformFlow, **kwargs):
        super().__init__(classifier, **kwargs)
        if self.layout is None or flow.dim != self.layout.dim:
            raise ValueError(f"the flow has dimension {flow.dim} but layout {getattr(self.layout, 'name', None)!r} "
                             f"needs {getattr(self.layout, 'dim', '?')}")
        self.embedder, self.flow = embedder, flow
        #: −mean log g(T | x) of the guide's last training draws (nats, a detached tensor, so
        #: reading it is the only device sync): the entropy the PID controls.
        self.last_entropy: torch.Tensor | None = None

    def transformation_distribution(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """g_φ(T | e(x)) for a batch of images: batch shape [B], event [D]."""
        return self.flow(self.embedder(x))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None,
              augment: bool = True) -> torch.Tensor | None:
        """``augment=False`` (the loss's argument during the authors' warm-up epochs without
        augmentation, ``no_aug_until``; see :class:`AugmentationWarmup`): the classifier sees x
        itself and T is not sampled."""
        with self.data_plate(x):
            if not augment:
                return self.observe(self.classifier(x), y)
            with self.kl_scaled(kl_weight):
                theta = pyro.sample("theta", self.prior())  # T ~ U(box)
            return self.observe(self.classifier(self.transform(x, theta)), y)  # y ~ Cat(f(A_T(x)))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None,
              augment: bool = True) -> torch.Tensor | None:
        if not augment:
            return None
        g = self.transformation_distribution(x)
        with self.data_plate(x), self.kl_scaled(kl_weight):
            theta = pyro.sample("theta", g)  # T ~ g_φ(T | e(x))
        if self.training:
            with torch.no_grad():
                self.last_entropy = -g.log_prob(theta).mean()
        return theta


class AugmentationWarmup:
    """Schedule (a :class:`~inference.engine.Trainer` step hook): no augmentation for the first
    ``epochs`` epochs (A.3.5: the classifier first learns on the raw images), then T ~ g(T | x) as
    usual. It gives the loss's ``augment`` argument."""

    def __init__(self, epochs: int):
        self.epochs = int(epochs)

    def __call__(self, trainer: Any) -> dict:
        return {"augment": trainer.epoch >= self.epochs}
