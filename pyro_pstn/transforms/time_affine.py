"""The affine time warp of 1-D signals: a shift and a scale of the time axis.

θ = (log s, τ): the output time p (``affine_grid``'s normalised coordinates, [-1, 1]) samples the
input at s·p + τ; θ = 0 is the identity. log s is clamped to ±EXP_LIMIT and τ to THETA_LIMIT, so
any finite θ gives a finite warp; the inverse is (p − τ)/s.
"""
from __future__ import annotations

import torch

from .layout import EXP_LIMIT, THETA_LIMIT


def signal_positions(length: int, align_corners: bool, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The sample positions of a signal of ``length`` in [-1, 1], in ``affine_grid``'s convention."""
    if align_corners:
        return torch.linspace(-1, 1, length, dtype=dtype, device=device)
    return (2 * torch.arange(length, dtype=dtype, device=device) + 1) / length - 1


class TimeAffine:
    """The ``time_affine`` family (2 dof) for signals ``[..., C, L]``."""

    name = "time_affine"
    ndim = 1
    invertible = True
    dim = 2
    param_names = ("log_scale", "shift")
    identity = (0.0, 0.0)

    def __repr__(self) -> str:
        return "TimeAffine()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeAffine)

    def __hash__(self) -> int:
        return hash(TimeAffine)

    def identity_theta(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=dtype, device=device)

    def grid(self, theta: torch.Tensor, size: list[int], align_corners: bool = False, inverse: bool = False) -> torch.Tensor:
        """Sample positions [N, L] for θ [N, 2] and signals of ``size`` [N, C, L]."""
        if theta.shape[-1] != self.dim:
            raise ValueError(f"{self.name} expects θ with last dimension {self.dim}, got shape {tuple(theta.shape)}")
        log_scale = theta[:, :1].clamp(-EXP_LIMIT, EXP_LIMIT)
        shift = theta[:, 1:].clamp(-THETA_LIMIT, THETA_LIMIT)
        p = signal_positions(size[-1], align_corners, theta.dtype, theta.device)
        return (p - shift) * torch.exp(-log_scale) if inverse else torch.exp(log_scale) * p + shift
