"""The layout type that every matrix family shares: θ ∈ R^D ↦ 2×3 matrix A(θ), with its bounds.

A layout is a name, a dimension D, an identity θ_id with A(θ_id) = [I | 0] and a function
θ ↦ A(θ) acting on the normalised coordinates of ``torch.nn.functional.affine_grid`` (A maps
*output* grid points to *input* sample points, in [-1, 1]², x to the right, y down). The affine
layouts (:mod:`.affine`) and the Lie-algebra layouts (:mod:`.lie`) are both instances.

**Any finite θ gives a finite matrix, warp and gradient.** Heavy-tailed posteriors (the Gamma
P-STN's Student-t has 2 degrees of freedom) draw enormous θ now and then. Each coordinate of θ is
clamped to its own bound before A(θ) is built:

- coordinates that enter A polynomially (angles, translations, raw entries, scales) at
  :data:`THETA_LIMIT`;
- coordinates that enter through an exponential (log-scales; the scale, stretch and shear
  generators of a matrix exponential) so that the exponent stays within ±:data:`EXP_LIMIT`.

Within the bounds the map is exact; beyond them the warped image is pure background or a single
stretched pixel anyway, and the clamp's gradient is zero (not NaN from ``inf · 0``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

#: Bound on coordinates of θ that enter A(θ) polynomially.
THETA_LIMIT = 1e3
#: Bound on any exponent: a zoom of e^10 ≈ 2·10⁴ in or out already saturates any image.
EXP_LIMIT = 10.0
#: Smallest |det A| an inverse is taken of: the inverse of a zoom of e^EXP_LIMIT in both axes.
DET_MIN = math.exp(-2 * EXP_LIMIT)


@dataclass(frozen=True)
class AffineLayout:
    """A named parameterisation θ ↦ A(θ) with its identity θ_id and per-coordinate bounds."""

    name: str
    dim: int
    identity: tuple[float, ...]
    _matrix: Callable[[torch.Tensor], torch.Tensor]
    param_names: tuple[str, ...]
    #: |θᵢ| ≤ limits[i] (see the module docstring); ``None`` means THETA_LIMIT for every coordinate.
    limits: tuple[float, ...] | None = None
    #: A(θ)⁻¹ in closed form (:meth:`inverse_matrix`).
    invertible = True
    ndim = 2

    def __post_init__(self):
        if len(self.identity) != self.dim or len(self.param_names) != self.dim:
            raise ValueError(f"layout {self.name!r}: identity and param_names need {self.dim} entries each")
        if self.limits is not None and len(self.limits) != self.dim:
            raise ValueError(f"layout {self.name!r}: limits need {self.dim} entries, got {len(self.limits)}")

    def identity_theta(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.tensor(self.identity, dtype=dtype, device=device)

    def clamp(self, theta: torch.Tensor) -> torch.Tensor:
        """θ with each coordinate clamped to its bound (identity within the bounds)."""
        if self.limits is None:
            return theta.clamp(-THETA_LIMIT, THETA_LIMIT)
        limits = torch.tensor(self.limits, dtype=theta.dtype, device=theta.device)
        return torch.minimum(torch.maximum(theta, -limits), limits)

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """[..., D] → [..., 2, 3]."""
        if theta.shape[-1] != self.dim:
            raise ValueError(
                f"layout {self.name!r} expects θ with last dimension {self.dim}, got shape {tuple(theta.shape)}"
            )
        return self._matrix(self.clamp(theta))

    def inverse_matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """[..., D] → [..., 2, 3], the matrix of A(θ)⁻¹: [M | t]⁻¹ = [M⁻¹ | −M⁻¹ t].

        M⁻¹ = adj(M) / det M, with |det M| held at least :data:`DET_MIN` so that a singular draw
        (a scale of exactly 0) gives a finite, maximally zoomed inverse rather than an error.
        (VITAE's raw-affine inverse negates t without applying M⁻¹, anchors.md §5.4.)
        """
        A = self.matrix(theta)
        (a, b), (c, d) = A[..., 0, :2].unbind(-1), A[..., 1, :2].unbind(-1)
        det = a * d - b * c
        det = torch.where(det < 0, det.clamp(max=-DET_MIN), det.clamp(min=DET_MIN))
        inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]
        return torch.cat([inv, -(inv @ A[..., 2:])], -1)

    def grid(
        self, theta: torch.Tensor, size: list[int], align_corners: bool = False, inverse: bool = False
    ) -> torch.Tensor:
        """Sampling grid [N, H, W, 2] for θ [N, D], as ``affine_grid`` (of A(θ)⁻¹ if ``inverse``)."""
        matrices = self.inverse_matrix(theta) if inverse else self.matrix(theta)
        return F.affine_grid(matrices, size, align_corners=align_corners)
