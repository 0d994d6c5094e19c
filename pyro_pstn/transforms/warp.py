"""Warping images by θ, for any number of leading sample dimensions.

The one place where a sample dimension is flattened into the batch: ``[*S, B, ...] → [S·B, ...]``
once before a network or ``grid_sample``, and back once after (anchors.md §7.3.7).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .family import TransformFamily, check_theta, is_invertible, spatial_dims
from .registry import get_layout


def apply_flat(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Apply ``fn`` (which takes ``[N, *event]``) to ``x`` of shape ``[*batch, *event]``.

    The batch dimensions are flattened into one, and restored on the output.
    """
    batch_shape = x.shape[: x.dim() - event_dim]
    out = fn(x.reshape(-1, *x.shape[x.dim() - event_dim :]))
    return out.reshape(*batch_shape, *out.shape[1:])


def has_inverse(layout: str | TransformFamily) -> bool:
    """Whether ``warp(..., inverse=True)`` can apply T_θ⁻¹ for this family in closed form: the
    affine and Lie layouts (A(θ)⁻¹), CPAB (T_{−θ}) and the time warp; not the thin-plate spline."""
    return is_invertible(get_layout(layout))


def _fill(fill: float | Sequence[float] | torch.Tensor, x: torch.Tensor, event: int):
    """A number, or one value per channel shaped to broadcast over ``x`` [N, C, *spatial]."""
    if isinstance(fill, (int, float)):
        return float(fill)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    if fill.dim() == 0:
        return fill
    if fill.shape != (x.shape[1],):
        raise ValueError(f"fill has {fill.numel()} values, but the inputs have {x.shape[1]} channels: give one number "
                         "or one per channel")
    return fill.reshape(-1, *(1,) * (event - 1))


def warp(
    x: torch.Tensor,
    theta: torch.Tensor,
    layout: str | TransformFamily = "similarity",
    *,
    fill: float | tuple[float, ...] = 0.0,
    align_corners: bool = False,
    mode: str = "bilinear",
    inverse: bool = False,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """T_θ(x): resample images ``x`` ``[B, C, H, W]`` (or ``[*S, B, C, H, W]``) under θ ``[*S, B, D]``;
    with a 1-D family (``cpab1d``, ``time_affine``) signals ``[*S, B, C, L]`` along their time axis.

    ``fill`` is the value of the plane outside the image (one number, or one per channel): pass the
    background of normalised data (e.g. −μ/σ for MNIST; ``DataSpec.fill``) so that warps do not
    paint dark borders. Any family of the :mod:`~pyro_pstn.transforms.family` contract works; a θ
    with a NaN or infinite entry raises a ValueError (checked when θ is on the CPU or no gradient
    is taken, so CUDA training steps never wait on it).
    ``align_corners`` is passed to both ``affine_grid`` and ``grid_sample``; with ``False``
    (PyTorch's default) ±1 are the outer edges of the corner pixels. ``inverse=True`` applies
    T_θ⁻¹ (affine and CPAB families), so ``warp(warp(x, θ), θ, inverse=True)`` undoes a warp up to
    what left the frame. ``size`` (height, width) samples an output of another size than the input
    (2-D families): a 28 × 28 crop of a 96 × 96 canvas, with the same normalised coordinates.
    """
    layout = get_layout(layout)
    spatial = spatial_dims(layout)  # 1 for the time warps of signals
    event = spatial + 1
    if x.dim() < event + 1:
        expected = "signals [..., C, L]" if spatial == 1 else "images [..., C, H, W]"
        raise ValueError(f"{layout.name} warps {expected} with a batch dimension, got shape {tuple(x.shape)}")
    if theta.shape[-1] != layout.dim:
        raise ValueError(f"{layout.name} expects θ with last dimension {layout.dim}, got shape {tuple(theta.shape)}")
    if inverse and not has_inverse(layout):
        raise ValueError(f"{layout.name} has no closed-form inverse; inverse warps need an affine or CPAB family")
    batch_shape = torch.broadcast_shapes(theta.shape[:-1], x.shape[:-event])
    x = x.expand(*batch_shape, *x.shape[-event:]).reshape(-1, *x.shape[-event:])
    theta = theta.expand(*batch_shape, layout.dim).reshape(-1, layout.dim).to(x.dtype)
    if theta.device.type == "cpu" or not torch.is_grad_enabled():
        check_theta(theta, layout)
    fill = _fill(fill, x, event)
    if size is not None and spatial != 2:
        raise ValueError(f"an output size is for 2-D families; {layout.name} warps signals along their own length")
    out_shape = list(x.shape) if size is None else [*x.shape[:2], *size]
    grid = layout.grid(theta, out_shape, align_corners=align_corners, **({"inverse": True} if inverse else {}))
    if spatial == 1:  # a signal is an image of height 1, sampled along its one row
        grid = torch.stack([grid, torch.zeros_like(grid)], -1)[:, None]  # [N, 1, L, 2]
        fill = fill if isinstance(fill, float) or fill.dim() == 0 else fill[..., None]
        out = F.grid_sample((x - fill)[..., None, :], grid, mode=mode, padding_mode="zeros",
                            align_corners=align_corners)[..., 0, :] + fill
    else:
        out = F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=align_corners) + fill
    return out.reshape(*batch_shape, *out.shape[-event:])
