"""Probabilistic spatial transformers: ``da``, ``pstn`` (paper 000) and ``gamma_pstn`` (paper 001).

Equation numbers refer to the papers in ``../shared/papers``.
"""
from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine

from ..priors import GammaPrior, NormalPrior
from .base import TransformClassifier


class DA(TransformClassifier):
    """Traditional data augmentation (paper 000 §4.3): θ ~ N(θ_id, σ_DA² I), fixed a priori.

    Nothing about θ is learned: the guide draws θ from the prior itself, q(θ) = p(θ), so the
    KL term is exactly zero and the ELBO is E_p(θ)[log p(y | T_θ(x))], training on augmented
    copies. At test time the classifier sees the unaugmented image (θ = θ_id), as in the
    paper's baseline; pass ``test_time_augmentation=True`` to average over prior draws instead.
    """

    def __init__(self, classifier: nn.Module, prior: NormalPrior, test_time_augmentation: bool = False, **kwargs):
        super().__init__(classifier, **kwargs)
        self.prior = prior
        self.test_time_augmentation = test_time_augmentation
        self.stochastic_predictions = test_time_augmentation

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        with self.data_plate(x):
            with self.kl_scaled(kl_weight):
                theta = pyro.sample("theta", self.prior())  # θ ~ N(θ_id, σ_DA² I)
            return self.observe(self.classifier(self.transform(x, theta)), y)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> None:
        with self.data_plate(x), self.kl_scaled(kl_weight):
            pyro.sample("theta", self.prior())  # q(θ) = p(θ)

    def predictive_model(self) -> Callable[..., torch.Tensor | None]:
        if self.test_time_augmentation:
            return self.model

        def at_identity(x: torch.Tensor, y: torch.Tensor | None = None, **schedule):
            return poutine.condition(self.model, data={"theta": self.identity_theta(x.shape[0], x)})(x, y, **schedule)

        return at_identity


class PSTN(TransformClassifier):
    """Gaussian P-STN (paper 000 §3, with the pre-image I integrated out as σ_noise → 0).

    model:  θ ~ N(θ_id, σ_p² I)                          (eq. 4, centred at the identity)
            y ~ Cat(f(T_θ(x)))                          (eq. 3, p(y | I) with I = T_θ(x))
    guide:  θ ~ N(μ(x), diag σ(x)²)                     (eq. 8)

    ELBO: E_q[log p(y | T_θ(x))] − w · KL(q(θ|x) ‖ p(θ))   (eq. 23, with the KL weight w)
    """

    predicts_at_mean = True

    def __init__(self, classifier: nn.Module, localizer: nn.Module, prior: NormalPrior, **kwargs):
        super().__init__(classifier, localizer=localizer, **kwargs)
        self.prior = prior

    def theta_variance(self, spread: torch.Tensor) -> torch.Tensor:
        """Var q(θ|x) from the localizer's spread head σ(x): σ²."""
        return spread**2

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        with self.data_plate(x):
            with self.kl_scaled(kl_weight):
                theta = pyro.sample("theta", self.prior())  # eq. 4
            return self.observe(self.classifier(self.transform(x, theta)), y)  # eq. 3

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> None:
        loc, scale = self.localizer(x)
        with self.data_plate(x), self.kl_scaled(kl_weight):
            pyro.sample("theta", dist.Normal(loc, scale).to_event(1))  # eq. 8


class GammaPSTN(TransformClassifier):
    """Gamma P-STN (paper 001 §4): a precision hierarchy, so q(θ|x) is a Student-t.

    model:  λ_d ~ Gamma(α0, β0)                         (eq. 6, one λ per θ dimension)
            θ | λ ~ N(μ(x), 1/λ)                        (eq. 5)
            y ~ Cat(f(T_θ(x)))                          (eq. 4)
    guide:  λ_d ~ Gamma(α0, β(x))                       (eq. 7, q(λ) amortised by the localizer)
            θ | λ ~ N(μ(x), 1/λ)                        (eq. 7, the same conditional as the model)

    θ | λ is the same distribution in model and guide, so its terms cancel exactly and
    ELBO = E_q[log p(y | T_θ(x))] − w · KL(q(λ) ‖ p(λ))  (eq. 10/17); marginally
    q(θ|x) = t_{2α0}(μ(x), β(x)/α0) (eq. 14). With ``TraceMeanField_ELBO`` the λ KL is analytic.
    The localizer's β head gives one rate per θ dimension, as in the authors' code.
    """

    latent_sites = ("lambda", "theta")
    predicts_at_mean = True

    def __init__(self, classifier: nn.Module, localizer: nn.Module, prior: GammaPrior, **kwargs):
        super().__init__(classifier, localizer=localizer, **kwargs)
        self.prior = prior
        #: (x, μ(x)) of the guide's last localizer pass. Model and guide share μ(x) (eqs. 5 and 7), and
        #: SVI and predictive sampling run the guide, then the model, on the same x: the model takes
        #: the guide's μ(x) instead of running the localizer again, whose dropout or batch norm would
        #: give another μ and θ | λ terms that no longer cancel. Run on its own, the model computes it.
        self.guide_loc: tuple[torch.Tensor, torch.Tensor] | None = None

    def theta_variance(self, spread: torch.Tensor) -> torch.Tensor:
        """The scale² of the Student-t q(θ|x) from the β head: β(x) / α0 (eq. 14)."""
        return spread / self.prior.concentration

    def _theta_given_lambda(self, loc: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return pyro.sample("theta", dist.Normal(loc, lam.rsqrt()).to_event(1))  # eq. 5

    def location(self, x: torch.Tensor) -> torch.Tensor:
        """μ(x) for the model: the guide's, when the guide has just run on this x (see ``guide_loc``)."""
        shared, self.guide_loc = self.guide_loc, None
        return shared[1] if shared is not None and shared[0] is x else self.localizer(x)[0]

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        loc = self.location(x)
        with self.data_plate(x):
            with self.kl_scaled(kl_weight):
                lam = pyro.sample("lambda", self.prior())  # eq. 6
            theta = self._theta_given_lambda(loc, lam)  # eq. 5
            return self.observe(self.classifier(self.transform(x, theta)), y)  # eq. 4

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> None:
        loc, rate = self.localizer(x)
        self.guide_loc = (x, loc)  # for the model's θ | λ (eq. 5)
        with self.data_plate(x):
            with self.kl_scaled(kl_weight):
                lam = pyro.sample("lambda", dist.Gamma(self.prior.concentration, rate).to_event(1))  # eq. 7
            self._theta_given_lambda(loc, lam)

    def student_t(self, x: torch.Tensor) -> dist.Distribution:
        """The marginal q(θ|x) = t_{2α0}(μ(x), sqrt(β(x)/α0)) (eq. 14), for inspection."""
        loc, rate = self.localizer(x)
        alpha = self.prior.concentration
        return dist.StudentT(2 * alpha, loc, (rate / alpha).sqrt()).to_event(1)
