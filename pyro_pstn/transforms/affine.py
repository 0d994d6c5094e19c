"""Affine parameter layouts: θ ∈ R^D ↦ 2×3 matrix A(θ) (the type is :class:`.layout.AffineLayout`).

| D | name               | θ                          | A(θ)                          |
|---|--------------------|----------------------------|-------------------------------|
| 1 | ``rotation``       | (φ)                        | R(φ) \\| 0                    |
| 2 | ``translation``    | (tx, ty)                   | I \\| t                       |
| 3 | ``scale_translation`` | (s, tx, ty)             | s·I \\| t                     |
| 4 | ``similarity``     | (φ, s, tx, ty)             | s·R(φ) \\| t  (paper 000 §4.1.1) |
| 5 | ``affine5``        | (ψ, log sx, log sy, tx, ty) | R(ψ)·diag(sx, sy) \\| t  (paper 002 §V.iii) |
| 6 | ``affine``         | (a11, a12, tx, a21, a22, ty) | the raw matrix             |
| 4 | ``uai_similarity`` | (φ, s, tx, ty)             | [[s·cos φ, −sin φ], [sin φ, s·cos φ]] \\| t |

Layout 4 is a true similarity, det A = s². The authors' 2022 code scales only the diagonal,
[[s·cos φ, −sin φ], [sin φ, s·cos φ]], which is not a similarity when φ ≠ 0 and s ≠ 1 (anchors.md
§1.4): the UAI MNIST runs of paper 001 used it. It is here as ``uai_similarity`` so that the
difference can be measured (``experiments.reproduce ablation``), not as a default; the number 4
stays an alias of ``similarity``. The log-scales of ``affine5`` are bounded by ``EXP_LIMIT``, every other coordinate by
``THETA_LIMIT`` (see :mod:`.layout`).
"""
from __future__ import annotations

import torch

from .layout import EXP_LIMIT, THETA_LIMIT, AffineLayout


def _rotation(phi: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(phi), torch.sin(phi)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _with_translation(linear: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return torch.cat([linear, torch.stack([tx, ty], -1).unsqueeze(-1)], -1)


def _eye(theta: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, dtype=theta.dtype, device=theta.device).expand(*theta.shape[:-1], 2, 2)


def _rotation_matrix(t: torch.Tensor):
    return _with_translation(_rotation(t[..., 0]), torch.zeros_like(t[..., 0]), torch.zeros_like(t[..., 0]))


def _translation_matrix(t: torch.Tensor):
    return _with_translation(_eye(t), t[..., 0], t[..., 1])


def _scale_translation_matrix(t: torch.Tensor):
    return _with_translation(t[..., 0, None, None] * _eye(t), t[..., 1], t[..., 2])


def _similarity_matrix(t: torch.Tensor):
    return _with_translation(t[..., 1, None, None] * _rotation(t[..., 0]), t[..., 2], t[..., 3])


def _uai_similarity_matrix(t: torch.Tensor):
    c, s, scale = torch.cos(t[..., 0]), torch.sin(t[..., 0]), t[..., 1]
    linear = torch.stack([torch.stack([scale * c, -s], -1), torch.stack([s, scale * c], -1)], -2)
    return _with_translation(linear, t[..., 2], t[..., 3])


def _affine5_matrix(t: torch.Tensor):
    scales = torch.diag_embed(torch.exp(t[..., 1:3]))
    return _with_translation(_rotation(t[..., 0]) @ scales, t[..., 3], t[..., 4])


def _affine_matrix(t: torch.Tensor):
    return t.reshape(*t.shape[:-1], 2, 3)


_L, _E = THETA_LIMIT, EXP_LIMIT
AFFINE_LAYOUTS: dict[str, AffineLayout] = {
    layout.name: layout
    for layout in [
        AffineLayout("rotation", 1, (0.0,), _rotation_matrix, ("angle",)),
        AffineLayout("translation", 2, (0.0, 0.0), _translation_matrix, ("tx", "ty")),
        AffineLayout("scale_translation", 3, (1.0, 0.0, 0.0), _scale_translation_matrix, ("scale", "tx", "ty")),
        AffineLayout("similarity", 4, (0.0, 1.0, 0.0, 0.0), _similarity_matrix, ("angle", "scale", "tx", "ty")),
        AffineLayout("affine5", 5, (0.0,) * 5, _affine5_matrix, ("angle", "log_sx", "log_sy", "tx", "ty"),
                     limits=(_L, _E, _E, _L, _L)),
        AffineLayout(
            "affine", 6, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), _affine_matrix, ("a11", "a12", "tx", "a21", "a22", "ty")
        ),
        AffineLayout("uai_similarity", 4, (0.0, 1.0, 0.0, 0.0), _uai_similarity_matrix, ("angle", "scale", "tx", "ty")),
    ]
}
