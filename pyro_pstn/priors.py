"""Swappable priors: objects passed to a model's constructor, not flags.

Their parameters are buffers, so they follow the model to any device. Calling a prior returns a
Pyro distribution whose event is one θ (or λ) vector; the model's data plate adds the batch.
Write your own by subclassing ``torch.nn.Module`` with a ``forward()`` that returns a
distribution with ``event_shape == (D,)``.
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn as nn

from .transforms import TransformFamily, get_layout


class NormalPrior(nn.Module):
    """θ ~ N(loc, diag(scale²)): paper 000 eq. 4 centred at the identity, and paper 000 §4.3 (DA)."""

    def __init__(self, loc: torch.Tensor, scale: float | torch.Tensor):
        super().__init__()
        loc = torch.as_tensor(loc, dtype=torch.float32)
        scale = torch.as_tensor(scale, dtype=torch.float32).expand_as(loc).clone()
        if not (scale > 0).all():
            raise ValueError(f"prior scale must be positive, got {scale.tolist()}")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class Box(dist.Uniform):
    """U(low, high) on the *closed* box: the uniform density wherever low ≤ θ ≤ high.

    A draw low + u·(high − low) with u < 1 can round to ``high`` in float32, where
    ``torch.distributions.Uniform`` gives log 0 = −inf (its box is half-open): one such draw in a
    fit would make the loss infinite. The density is the same everywhere else, and its gradient
    with respect to ``low`` / ``high`` is −∂ log(high − low), as for ``Uniform``.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        inside = (value >= self.low) & (value <= self.high)
        return torch.where(inside, -(self.high - self.low).log(), -math.inf)


class GammaPrior(nn.Module):
    """λ_d ~ Gamma(α0, β0) for each of D precisions (paper 001 eq. 6; α0 = β0 = 1 in the paper)."""

    def __init__(self, dim: int, concentration: float = 1.0, rate: float = 1.0):
        super().__init__()
        if concentration <= 0 or rate <= 0:
            raise ValueError(f"Gamma prior needs concentration > 0 and rate > 0, got {concentration}, {rate}")
        self.register_buffer("concentration", torch.full((dim,), float(concentration)))
        self.register_buffer("rate", torch.full((dim,), float(rate)))

    def forward(self) -> dist.Distribution:
        return dist.Gamma(self.concentration, self.rate).to_event(1)


# ---- pose priors of the pose-latent VAEs (paper 002 §IV and §V.iii) ----------------------------
#
# A pose prior owns a latent *pose code* (Pyro site ``u``) and the map from the code to the
# transformation's parameters θ (recorded as the deterministic site ``theta``). It also builds
# the guide's distribution for the code *relative to the prior* from an encoder head's raw
# (a, b): at a = 0 the guide sits on the prior's centre, i.e. on the identity transformation
# (as Pyro's AIR example parameterises z_where). Swapping the prior is one constructor argument
# of a pose VAE.


class PosePrior(nn.Module):
    """Base class: ``forward()`` gives p(u); ``guide_distribution(a, b)`` gives q(u | x); θ = ``to_theta(u)``."""

    #: False for the deterministic pose (no prior, point-estimated u, KL = 0).
    stochastic = True

    def __init__(self, layout: str | TransformFamily, code_dim: int):
        super().__init__()
        self.layout = get_layout(layout)
        self.code_dim = int(code_dim)
        self.register_buffer("identity", self.layout.identity_theta())

    def to_theta(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def sample_theta(self, num: int) -> torch.Tensor:
        """θ for ``num`` draws from the prior (the identity where the pose has no prior)."""
        return self.to_theta(self().sample((num,)))

    def identity_theta(self, num: int) -> torch.Tensor:
        """θ of the identity transformation, ``[num, dim θ]``."""
        return self.identity.expand(num, self.layout.dim)


class DeterministicPose(PosePrior):
    """No pose prior: u is a point estimate (a Delta guide) under a flat prior, so its KL is 0."""

    stochastic = False

    def __init__(self, layout: str | TransformFamily):
        super().__init__(layout, get_dim(layout))

    def forward(self) -> dist.Distribution:
        return dist.ImproperUniform(dist.constraints.real, (), (self.code_dim,))

    def guide_distribution(self, a: torch.Tensor, b: torch.Tensor) -> dist.Distribution:
        return dist.Delta(self.identity + a, event_dim=1)

    def sample_theta(self, num: int) -> torch.Tensor:
        return self.identity_theta(num)


class DiagonalNormalPose(PosePrior):
    """u ~ N(ν, diag τ²) with fitted ν, τ (paper 002 eq. 7); θ = u.

    With the ``affine5`` layout this is the prior on the reparametrised affine map
    (ψ, log Sx, log Sy, Tx, Ty) of 002 §V.iii. ``fit_loc=False`` keeps ν at the identity.
    """

    def __init__(self, layout: str | TransformFamily, scale_init: float = 0.1, fit_loc: bool = True, fit_scale: bool = True):
        super().__init__(layout, get_dim(layout))
        loc = self.layout.identity_theta()
        log_scale = torch.full_like(loc, math.log(scale_init))
        self.loc = nn.Parameter(loc) if fit_loc else nn.Buffer(loc)
        self.log_scale = nn.Parameter(log_scale) if fit_scale else nn.Buffer(log_scale)

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)

    def guide_distribution(self, a: torch.Tensor, b: torch.Tensor) -> dist.Distribution:
        scale = self.log_scale.exp()
        return dist.Normal(self.loc + scale * a, scale * b).to_event(1)


class LowRankNormalPose(PosePrior):
    """u ~ N(0, I_k), θ = b + W u: a Normal prior on θ with covariance W Wᵀ of rank ≤ k (002 §V.iii).

    b starts at the identity and W small, so the guide q(u | x) = N(a, softplus-scale) starts
    near θ = identity. ``rank = dim θ`` is the full-covariance prior.
    """

    def __init__(self, layout: str | TransformFamily, rank: int = 2, weight_init: float = 0.01):
        super().__init__(layout, rank)
        dim = get_dim(layout)
        if not 1 <= rank <= dim:
            raise ValueError(f"rank must be in 1..{dim} (the transformation's dimension), got {rank}")
        self.bias = nn.Parameter(self.layout.identity_theta())
        self.weight = nn.Parameter(weight_init * torch.randn(dim, rank))
        self.register_buffer("zero", torch.zeros(rank))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.zero, 1.0).to_event(1)

    def guide_distribution(self, a: torch.Tensor, b: torch.Tensor) -> dist.Distribution:
        return dist.Normal(a, b).to_event(1)

    def to_theta(self, u: torch.Tensor) -> torch.Tensor:
        return self.bias + u @ self.weight.T


POSE_PRIORS = {"none": DeterministicPose, "diagonal": DiagonalNormalPose, "lowrank": LowRankNormalPose}


def get_dim(layout: str | TransformFamily) -> int:
    return get_layout(layout).dim


def build_pose_prior(kind: str, layout: str | TransformFamily, **options) -> PosePrior:
    """``kind`` ∈ :data:`POSE_PRIORS` (``none``, ``diagonal``, ``lowrank``) for transform ``layout``."""
    if kind not in POSE_PRIORS:
        raise ValueError(f"unknown pose prior {kind!r}; valid: {', '.join(POSE_PRIORS)}")
    return POSE_PRIORS[kind](layout, **options)
