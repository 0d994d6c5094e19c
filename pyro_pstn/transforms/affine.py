"""Affine parameter layouts: θ ∈ R^D ↦ 2×3 matrix A(θ) acting on normalised coordinates.

Each layout has an identity θ_id with A(θ_id) = [I | 0]. Coordinates follow
``torch.nn.functional.affine_grid``: A maps *output* grid points to *input* sample points,
in [-1, 1]² (x to the right, y down).

| D | name               | θ                          | A(θ)                          |
|---|--------------------|----------------------------|-------------------------------|
| 1 | ``rotation``       | (φ)                        | R(φ) \\| 0                    |
| 2 | ``translation``    | (tx, ty)                   | I \\| t                       |
| 3 | ``scale_translation`` | (s, tx, ty)             | s·I \\| t                     |
| 4 | ``similarity``     | (φ, s, tx, ty)             | s·R(φ) \\| t  (paper 000 §4.1.1) |
| 5 | ``affine5``        | (ψ, log sx, log sy, tx, ty) | R(ψ)·diag(sx, sy) \\| t  (paper 002 §V.iii) |
| 6 | ``affine``         | (a11, a12, tx, a21, a22, ty) | the raw matrix             |

Layout 4 is a true similarity, det A = s². The authors' 2022 code scales only the diagonal,
[[s·cos φ, −sin φ], [sin φ, s·cos φ]], which is not a similarity (anchors.md §1.4); we do not
copy that.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .tps import ThinPlateSpline

#: Heavy-tailed posteriors (Student-t with 2 degrees of freedom) occasionally draw enormous θ.
#: Beyond this magnitude the warped image is pure background anyway, so θ is clamped before the
#: matrix is built; this keeps grid coordinates finite (no NaN from inf·0 in grid_sample).
THETA_LIMIT = 1e3


def _rotation(phi: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(phi), torch.sin(phi)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _with_translation(linear: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return torch.cat([linear, torch.stack([tx, ty], -1).unsqueeze(-1)], -1)


def _eye(theta: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, dtype=theta.dtype, device=theta.device).expand(*theta.shape[:-1], 2, 2)


def _rotation_matrix(t):
    return _with_translation(_rotation(t[..., 0]), torch.zeros_like(t[..., 0]), torch.zeros_like(t[..., 0]))


def _translation_matrix(t):
    return _with_translation(_eye(t), t[..., 0], t[..., 1])


def _scale_translation_matrix(t):
    return _with_translation(t[..., 0, None, None] * _eye(t), t[..., 1], t[..., 2])


def _similarity_matrix(t):
    return _with_translation(t[..., 1, None, None] * _rotation(t[..., 0]), t[..., 2], t[..., 3])


def _affine5_matrix(t):
    scales = torch.diag_embed(torch.exp(t[..., 1:3]))
    return _with_translation(_rotation(t[..., 0]) @ scales, t[..., 3], t[..., 4])


def _affine_matrix(t):
    return t.reshape(*t.shape[:-1], 2, 3)


@dataclass(frozen=True)
class AffineLayout:
    """A named parameterisation θ ↦ A(θ) with its identity θ_id."""

    name: str
    dim: int
    identity: tuple[float, ...]
    _matrix: Callable[[torch.Tensor], torch.Tensor]
    param_names: tuple[str, ...]

    def identity_theta(self, dtype=torch.float32, device=None) -> torch.Tensor:
        return torch.tensor(self.identity, dtype=dtype, device=device)

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """[..., D] → [..., 2, 3]."""
        if theta.shape[-1] != self.dim:
            raise ValueError(
                f"layout {self.name!r} expects θ with last dimension {self.dim}, got shape {tuple(theta.shape)}"
            )
        return self._matrix(theta.clamp(-THETA_LIMIT, THETA_LIMIT))

    def inverse_matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """[..., D] → [..., 2, 3], the matrix of A(θ)⁻¹: [M | t]⁻¹ = [M⁻¹ | −M⁻¹ t].

        (VITAE's raw-affine inverse negates t without applying M⁻¹, anchors.md §5.4.)
        """
        A = self.matrix(theta)
        inv = torch.linalg.inv(A[..., :2])
        return torch.cat([inv, -(inv @ A[..., 2:])], -1)

    def grid(
        self, theta: torch.Tensor, size: list[int], align_corners: bool = False, inverse: bool = False
    ) -> torch.Tensor:
        """Sampling grid [N, H, W, 2] for θ [N, D], as ``affine_grid`` (of A(θ)⁻¹ if ``inverse``)."""
        matrices = self.inverse_matrix(theta) if inverse else self.matrix(theta)
        return F.affine_grid(matrices, size, align_corners=align_corners)


LAYOUTS: dict[str, AffineLayout] = {
    layout.name: layout
    for layout in [
        AffineLayout("rotation", 1, (0.0,), _rotation_matrix, ("angle",)),
        AffineLayout("translation", 2, (0.0, 0.0), _translation_matrix, ("tx", "ty")),
        AffineLayout("scale_translation", 3, (1.0, 0.0, 0.0), _scale_translation_matrix, ("scale", "tx", "ty")),
        AffineLayout("similarity", 4, (0.0, 1.0, 0.0, 0.0), _similarity_matrix, ("angle", "scale", "tx", "ty")),
        AffineLayout("affine5", 5, (0.0,) * 5, _affine5_matrix, ("angle", "log_sx", "log_sy", "tx", "ty")),
        AffineLayout(
            "affine", 6, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), _affine_matrix, ("a11", "a12", "tx", "a21", "a22", "ty")
        ),
    ]
}
#: The authors' ``--num_param`` numbers, accepted as aliases.
LAYOUT_ALIASES = {str(layout.dim): name for name, layout in LAYOUTS.items()}

# The Lie-algebra layouts of paper 004 (expm of generators) are AffineLayouts too.
from .lie import LIE_LAYOUTS  # noqa: E402  (lie.py needs AffineLayout, defined above)

LAYOUTS.update(LIE_LAYOUTS)


def get_layout(name: str | int | AffineLayout | ThinPlateSpline) -> AffineLayout | ThinPlateSpline:
    """Look a transform family up by name or by its number of parameters (1–6).

    ``"tps"`` is the thin-plate spline on a 3×3 control grid (18 dof, paper 002) and
    ``"tps<s>"`` the one on an s×s grid.
    """
    if isinstance(name, (AffineLayout, ThinPlateSpline)):
        return name
    key = LAYOUT_ALIASES.get(str(name), str(name))
    tps = re.fullmatch(r"tps(\d*)", key)
    if tps:
        return ThinPlateSpline(int(tps.group(1) or 3))
    if key not in LAYOUTS:
        valid = ", ".join(f"{n} ({layout.dim})" for n, layout in LAYOUTS.items())
        raise ValueError(f"unknown transform layout {name!r}; valid layouts: {valid}, tps (18), tps<s> (2s²)")
    return LAYOUTS[key]
