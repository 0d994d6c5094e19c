"""Conditional normalizing flows over transformation parameters (paper 004 §3, A.3.1–A.3.2).

``ConditionalTransformFlow(dim, context_dim)(e)`` is the distribution g(T | e(x)) of a batch:
a conditional base (a Gaussian, or a mixture of Gaussians with a relaxed component choice)
pushed through RealNVP affine couplings conditioned on the embedding e (Pyro's
``conditional_affine_coupling``; a ``conditional_spline`` when D = 1, where a coupling has
nothing to condition on), each followed by a permutation and a soft clamp c·tanh(x / c), and a
final tanh that squashes T into the box (−1, 1)^D.

Everything is a Pyro transform, so ``log_prob`` is the exact change-of-variables density of
the *squashed* T — the transformation that is applied — not of the pre-clamp value the authors'
entropy used (anchors.md §2.9). The final tanh is scaled by 1 − 10⁻⁶ so that no float32 sample
lands exactly on the box's edge, where a uniform prior has zero density.
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    Permute,
    TanhTransform,
    conditional_affine_coupling,
    conditional_spline,
)

#: The box edge the squashed samples stay inside.
BOX = 1.0 - 1e-6
BASES = ("gaussian", "mixture")


def _small_init(layer: nn.Linear, factor: float = 0.01) -> None:
    """Scale a layer's initial weights down (A.3.1): the flow starts close to the identity."""
    with torch.no_grad():
        layer.weight.mul_(factor)
        layer.bias.mul_(factor)


class RelaxedMixtureOfDiagNormals(dist.TorchDistribution):
    """Σ_k π_k N(μ_k, diag σ_k²) whose component choice is a straight-through Gumbel-softmax (A.3.2).

    ``rsample`` draws a Gumbel-softmax vector at ``temperature``; with ``hard=True`` (default)
    its forward value is the arg-max one-hot, so samples are exact mixture samples and
    ``log_prob`` (the exact mixture density) is their density, while gradients reach the
    logits through the relaxed weights (biased, as any straight-through estimator). With
    ``hard=False`` a sample is a blend of components, as in the authors' default, and the
    mixture density is only approximately its density.
    """

    arg_constraints = {"logits": constraints.real, "locs": constraints.real, "scales": constraints.positive}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, logits: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor, temperature: float = 0.5,
                 hard: bool = True, validate_args: bool | None = None):
        self.logits, self.locs, self.scales = logits, locs, scales
        self.temperature, self.hard = float(temperature), bool(hard)
        super().__init__(logits.shape[:-1], locs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: torch.Size | tuple[int, ...],
               _instance: RelaxedMixtureOfDiagNormals | None = None) -> RelaxedMixtureOfDiagNormals:
        batch_shape = torch.Size(batch_shape)
        k, d = self.locs.shape[-2:]
        return RelaxedMixtureOfDiagNormals(
            self.logits.expand(batch_shape + (k,)), self.locs.expand(batch_shape + (k, d)),
            self.scales.expand(batch_shape + (k, d)), self.temperature, self.hard,
        )

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        k, d = self.locs.shape[-2:]
        uniform = torch.rand(shape + (k,), dtype=self.logits.dtype, device=self.logits.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
        soft = F.softmax((self.logits + gumbel) / self.temperature, -1)
        weights = soft
        if self.hard:
            hard = F.one_hot(soft.argmax(-1), k).to(soft.dtype)
            weights = hard - soft.detach() + soft
        noise = torch.randn(shape + (k, d), dtype=self.locs.dtype, device=self.locs.device)
        components = self.locs + self.scales * noise
        return (weights.unsqueeze(-1) * components).sum(-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        per_component = dist.Normal(self.locs, self.scales).log_prob(value.unsqueeze(-2)).sum(-1)
        return torch.logsumexp(F.log_softmax(self.logits, -1) + per_component, -1)


class ConditionalBase(nn.Module):
    """The base of the flow given an embedding: global parameters plus a projection of e(x).

    ``gaussian``: N(μ + Δμ(e), diag(σ e^{Δs(e)})²). ``mixture``: K such components with
    logits; the component locations start spread uniformly in ±``loc_spread`` so the modes
    can separate. Projection weights start at 1 % of their default (A.3.1).
    """

    def __init__(self, dim: int, context_dim: int, kind: str = "gaussian", num_components: int = 1,
                 scale_init: float = 0.5, loc_spread: float = 0.7, temperature: float = 0.5, hard: bool = True):
        super().__init__()
        if kind not in BASES:
            raise ValueError(f"unknown base {kind!r}; valid: {', '.join(BASES)}")
        if num_components < 1 or (kind == "gaussian" and num_components != 1):
            raise ValueError(f"a {kind} base takes num_components ≥ 1 (exactly 1 for gaussian), got {num_components}")
        self.dim, self.kind, self.num_components = dim, kind, num_components
        self.temperature, self.hard = temperature, hard
        k = num_components
        generator = torch.Generator().manual_seed(0)
        spread = (2 * torch.rand(k, dim, generator=generator) - 1) * loc_spread if k > 1 else torch.zeros(k, dim)
        self.locs = nn.Parameter(spread)
        self.log_scales = nn.Parameter(torch.full((k, dim), math.log(scale_init)))
        self.logits = nn.Parameter(torch.zeros(k))
        self.projection = nn.Linear(context_dim, k * (2 * dim + 1))
        _small_init(self.projection)

    def forward(self, context: torch.Tensor) -> dist.TorchDistribution:
        k, d = self.num_components, self.dim
        offsets = self.projection(context)
        locs = self.locs + offsets[..., : k * d].unflatten(-1, (k, d))
        scales = (self.log_scales + offsets[..., k * d : 2 * k * d].unflatten(-1, (k, d))).clamp(-7.0, 2.0).exp()
        if self.kind == "gaussian":
            return dist.Normal(locs[..., 0, :], scales[..., 0, :]).to_event(1)
        logits = self.logits + offsets[..., 2 * k * d :]
        return RelaxedMixtureOfDiagNormals(logits, locs, scales, self.temperature, self.hard)


def soft_clamp(width: float) -> ComposeTransform:
    """x ↦ c·tanh(x / c): the authors' TanhFlow(c) between flow layers (identity near 0)."""
    return ComposeTransform([AffineTransform(0.0, 1.0 / width), TanhTransform(), AffineTransform(0.0, width)])


class ConditionalTransformFlow(nn.Module):
    """g(T | e): a conditional flow into the box (−1, 1)^D, called with the embedding e.

    >>> flow = ConditionalTransformFlow(dim=3, context_dim=32, num_layers=4)
    >>> g = flow(embedding)            # a TransformedDistribution, batch [B], event [D]
    >>> T = g.rsample(); log_g = g.log_prob(T)
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_layers: int = 4,
        hidden: tuple[int, ...] = (32, 32),
        base: str = "gaussian",
        num_components: int = 1,
        scale_init: float = 0.5,
        temperature: float = 0.5,
        hard: bool = True,
        clamp_width: float | None = 6.0,
        count_bins: int = 8,
    ):
        super().__init__()
        if dim < 1 or num_layers < 0:
            raise ValueError(f"need dim ≥ 1 and num_layers ≥ 0, got dim={dim}, num_layers={num_layers}")
        self.dim = dim
        self.base = ConditionalBase(dim, context_dim, base, num_components, scale_init, temperature=temperature, hard=hard)
        layers = []
        for _ in range(num_layers):
            if dim == 1:
                layer = conditional_spline(1, context_dim, hidden_dims=list(hidden), count_bins=count_bins)
            else:
                layer = conditional_affine_coupling(dim, context_dim, hidden_dims=list(hidden))
            _small_init(layer.nn.layers[-1])
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.register_buffer("permutation", torch.arange(dim - 1, -1, -1))
        self.clamp_width = clamp_width

    def transforms(self, context: torch.Tensor) -> list:
        chain = []
        for layer in self.layers:
            chain.append(layer.condition(context) if isinstance(layer, ConditionalTransform) else layer)
            if self.dim > 1:
                chain.append(Permute(self.permutation))
            if self.clamp_width is not None:
                chain.append(soft_clamp(self.clamp_width))
        return chain + [TanhTransform(), AffineTransform(0.0, BOX)]

    def forward(self, context: torch.Tensor) -> dist.TransformedDistribution:
        """g(T | e) for a batch of embeddings ``[B, context_dim]``: batch shape [B], event [D]."""
        return dist.TransformedDistribution(self.base(context), self.transforms(context))
