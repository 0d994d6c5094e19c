"""Thin-plate-spline warps from an s×s grid of control points (paper 002 §V.iii: 3×3 → 18 dof).

θ holds the control points' offsets, ``(dx_1, dy_1, …, dx_K, dy_K)`` with K = s², in the
normalised coordinates of ``affine_grid`` ([-1, 1]², x to the right, y down). The warp maps
each output point p to the input point

    f(p) = a₀ + A p + Σ_k w_k U(‖p − c_k‖),   U(r) = r² log r²,

the thin-plate interpolant with f(c_k) = c_k + δ_k (Bookstein 1989). Its coefficients are a
linear function of the targets, so the (K+3)×(K+3) system is inverted once per control grid
and each warp is one matrix product. θ = 0 gives f(p) = p exactly: the identity.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .layout import THETA_LIMIT


def _radial(d2: torch.Tensor) -> torch.Tensor:
    """U(r) = r² log r², written in terms of d² = r² (0 at r = 0)."""
    return torch.where(d2 > 0, d2 * torch.log(d2.clamp_min(1e-30)), torch.zeros_like(d2))


def _pairwise_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


class ThinPlateSpline:
    """The TPS family with an ``s × s`` control grid spanning ``[-extent, extent]²``.

    Has the same interface as :class:`~pyro_pstn.transforms.layout.AffineLayout` (``name``,
    ``dim``, ``identity_theta``, ``param_names``, ``grid``) so models take either. Offsets are
    clamped at ``THETA_LIMIT``: the spline is linear in them, so the grid stays finite.
    """

    def __init__(self, grid_size: int = 3, extent: float = 1.0):
        if grid_size < 2:
            raise ValueError(f"a TPS control grid needs at least 2×2 points, got grid_size={grid_size}")
        self.grid_size = int(grid_size)
        self.extent = float(extent)
        self.name = f"tps{self.grid_size}"
        self.dim = 2 * self.grid_size**2
        self.param_names = tuple(f"{axis}{k}" for k in range(self.grid_size**2) for axis in ("dx", "dy"))
        line = torch.linspace(-self.extent, self.extent, self.grid_size, dtype=torch.float64)
        ys, xs = torch.meshgrid(line, line, indexing="ij")
        self.control_points = torch.stack([xs.flatten(), ys.flatten()], -1)  # [K, 2], (x, y)

    def __repr__(self) -> str:
        return f"ThinPlateSpline(grid_size={self.grid_size}, extent={self.extent})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThinPlateSpline) and (other.grid_size, other.extent) == (self.grid_size, self.extent)

    def __hash__(self) -> int:
        return hash((ThinPlateSpline, self.grid_size, self.extent))

    @property
    def identity(self) -> tuple[float, ...]:
        return (0.0,) * self.dim

    def identity_theta(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=dtype, device=device)

    @functools.cached_property
    def _solver(self) -> torch.Tensor:
        """L⁻¹ restricted to the target columns: [K+3, K], so that coefficients = L⁻¹ Y."""
        c = self.control_points
        k = len(c)
        P = torch.cat([torch.ones(k, 1, dtype=c.dtype), c], 1)  # [K, 3]
        L = torch.zeros(k + 3, k + 3, dtype=c.dtype)
        L[:k, :k] = _radial(_pairwise_sq(c, c))
        L[:k, k:] = P
        L[k:, :k] = P.T
        return torch.linalg.inv(L)[:, :k]

    @functools.lru_cache(maxsize=16)  # noqa: B019 (one entry per output size; the family objects are few)
    def _basis(self, height: int, width: int, align_corners: bool) -> torch.Tensor:
        """[H·W, K] map from control-point targets to grid points: grid = basis @ (c + δ)."""
        identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
        points = F.affine_grid(identity, [1, 1, height, width], align_corners=align_corners).reshape(-1, 2)
        features = torch.cat(
            [_radial(_pairwise_sq(points, self.control_points)), torch.ones(len(points), 1, dtype=points.dtype), points], 1
        )  # [H·W, K+3]
        return (features @ self._solver).float()  # [H·W, K]

    def grid(self, theta: torch.Tensor, size: list[int], align_corners: bool = False) -> torch.Tensor:
        """Sampling grid [N, H, W, 2] for θ [N, 2K] (the TPS analogue of ``affine_grid``)."""
        if theta.shape[-1] != self.dim:
            raise ValueError(f"{self.name} expects θ with last dimension {self.dim}, got shape {tuple(theta.shape)}")
        n, _, height, width = size
        basis = self._basis(height, width, bool(align_corners)).to(theta.device, theta.dtype)
        offsets = theta.clamp(-THETA_LIMIT, THETA_LIMIT).reshape(n, -1, 2)
        targets = self.control_points.to(theta.device, theta.dtype) + offsets  # [N, K, 2]
        return (basis @ targets).reshape(n, height, width, 2)
