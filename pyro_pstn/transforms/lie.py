"""Affine maps from Lie-algebra coefficients (paper 004 §3 and eq. 13; anchors.md §2.3).

A transformation is A = expm(Σᵢ wᵢ Gᵢ) for 3×3 generators Gᵢ of the affine group, computed
with ``torch.linalg.matrix_exp``; its top 2×3 block acts on ``affine_grid`` coordinates like
every other layout. The flow of ``flow_pstn`` produces θ in the box [−1, 1]^D; a layout scales
each coefficient to its range (rotation ±π, so θ = ±1 is ±180°) before exponentiating. θ = 0
is the identity in every Lie layout.

| D | name | θ (each in [−1, 1]) | generators |
|---|---|---|---|
| 1 | ``lie_rotation`` | (r) | π r · G_rot |
| 3 | ``lie_rotation_translation`` | (tx, ty, r) | t_range tx · G_tx + t_range ty · G_ty + π r · G_rot |
| 4 | ``lie_similarity`` | (tx, ty, r, s) | as above + s · G_scale (scale e^{±1}): the P-STN's similarity family |
| 6 | ``lie_affine`` | (tx, ty, r, s, st, sh) | the six of 004: translations, rotation, isotropic scale, stretch, shear |
| 6 | ``lie_decoupled`` | (a, b, c, d, e, f) | eq. 13: expm([[a, b, c], [d, e, f], [0, 0, 0]]), one matrix unit each; b, d × π, c, f × t_range |

The decoupled form lets a model *discover* rotations: a rotation is the skew-symmetric
combination b = −d (a = e = 0). Eq. 13 prints a 1 in the bottom-right corner of the exponent;
that would scale the translation column by e − 1 and is not in the affine Lie algebra, so the
bottom row here is zero (the authors' ROTGEN generators have it zero too).

Each coefficient is bounded (see :mod:`.layout`): the translation and rotation generators enter
expm polynomially and are bounded by ``THETA_LIMIT``; the non-compact ones (scale, stretch, shear;
the diagonal and off-diagonal units of eq. 13) by ``EXP_LIMIT`` on the coefficient after its
range, so that ‖expm‖ ≤ e^{(1 + √2)·EXP_LIMIT} stays finite in float32.

Summing coefficients composes transformations only when the generators commute (rotation
alone, or translations alone); :func:`compose` multiplies matrices, which is always right.
"""
from __future__ import annotations

import math

import torch

from .layout import EXP_LIMIT, THETA_LIMIT, AffineLayout

#: Translation range of the Lie layouts (anchors.md §2.3: the authors' trans_scale, 0.1 of the
#: half-width of the image), rotation range ±π.
TRANSLATION_RANGE = 0.1
ROTATION_RANGE = math.pi


def _unit(row: int, col: int, value: float = 1.0) -> torch.Tensor:
    g = torch.zeros(3, 3)
    g[row, col] = value
    return g


_L, _E = THETA_LIMIT, EXP_LIMIT
#: The six generators of 004 (tx, ty, rotation, isotropic scale, stretch, shear), before ranges.
GENERATORS = torch.stack([
    _unit(0, 2),  # t_x
    _unit(1, 2),  # t_y
    _unit(1, 0) - _unit(0, 1),  # rotation: [[0, −1], [1, 0]], so expm(φ G) = R(φ)
    _unit(0, 0) + _unit(1, 1),  # isotropic scale
    _unit(0, 0) - _unit(1, 1),  # stretch
    _unit(0, 1) + _unit(1, 0),  # shear
])
#: Bound on each generator's coefficient (after its range): polynomial ones THETA_LIMIT, non-compact ones EXP_LIMIT.
GENERATOR_LIMITS = (_L, _L, _L, _E, _E, _E)
#: Eq. 13: one matrix unit per entry of the top 2×3 block, in row order (a, b, c, d, e, f).
DECOUPLED_GENERATORS = torch.stack([_unit(r, c) for r in range(2) for c in range(3)])
#: a, e scale; b, d shear alone and grow exponentially together (b·d > 0); c, f translate.
DECOUPLED_LIMITS = (_E, _E, _L, _E, _E, _L)


def algebra(theta: torch.Tensor, generators: torch.Tensor, ranges: torch.Tensor) -> torch.Tensor:
    """Σᵢ rangeᵢ θᵢ Gᵢ: [..., D] → [..., 3, 3] element of the Lie algebra."""
    g = generators.to(theta.device, theta.dtype)
    return torch.einsum("...d,dij->...ij", theta * ranges.to(theta.device, theta.dtype), g)


def homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    """[..., 2, 3] → [..., 3, 3] with bottom row (0, 0, 1)."""
    bottom = torch.zeros(*matrix.shape[:-2], 1, 3, dtype=matrix.dtype, device=matrix.device)
    bottom[..., 0, 2] = 1.0
    return torch.cat([matrix, bottom], -2)


def compose(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """The 2×3 matrix of warping by ``first`` and then warping the result by ``then``.

    ``affine_grid`` maps output points to input points, so warp(warp(x, A₁), A₂) samples x at
    A₁ A₂ p: the product is A₁ · A₂ in homogeneous coordinates.
    """
    return (homogeneous(first) @ homogeneous(then))[..., :2, :]


def rotation_angle(matrix: torch.Tensor) -> torch.Tensor:
    """The rotation angle (radians) of the linear part of [..., 2, 3] matrices: atan2(A₂₁, A₁₁).

    Exact for rotations and similarities; for a general affine map, the angle of its first column.
    """
    return torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0])


def lie_layout(name: str, slots: tuple[int, ...], ranges: tuple[float, ...], generators: torch.Tensor,
               param_names: tuple[str, ...], coefficient_limits: tuple[float, ...]) -> AffineLayout:
    """An :class:`AffineLayout` θ ↦ expm(Σ rangeᵢ θᵢ G_slotᵢ)[:2] with identity θ = 0, and
    |rangeᵢ θᵢ| ≤ ``coefficient_limits[slotᵢ]``."""
    chosen = generators[list(slots)]
    scale = torch.tensor(ranges)

    def matrix(theta: torch.Tensor) -> torch.Tensor:
        return torch.linalg.matrix_exp(algebra(theta, chosen, scale))[..., :2, :]

    limits = tuple(min(coefficient_limits[slot] / r, THETA_LIMIT) for slot, r in zip(slots, ranges))
    return AffineLayout(name, len(slots), (0.0,) * len(slots), matrix, param_names, limits)


_T, _R, _G = TRANSLATION_RANGE, ROTATION_RANGE, GENERATOR_LIMITS
LIE_LAYOUTS: dict[str, AffineLayout] = {
    layout.name: layout
    for layout in [
        lie_layout("lie_rotation", (2,), (_R,), GENERATORS, ("rotation",), _G),
        lie_layout("lie_rotation_translation", (0, 1, 2), (_T, _T, _R), GENERATORS, ("tx", "ty", "rotation"), _G),
        lie_layout("lie_similarity", (0, 1, 2, 3), (_T, _T, _R, 1.0), GENERATORS, ("tx", "ty", "rotation", "scale"), _G),
        lie_layout("lie_affine", tuple(range(6)), (_T, _T, _R, 1.0, 1.0, 1.0), GENERATORS,
                   ("tx", "ty", "rotation", "scale", "stretch", "shear"), _G),
        lie_layout("lie_decoupled", tuple(range(6)), (1.0, _R, _T, _R, 1.0, _T), DECOUPLED_GENERATORS,
                   ("a", "b", "c", "d", "e", "f"), DECOUPLED_LIMITS),
    ]
}
