"""Warping images by θ, for any number of leading sample dimensions.

The one place where a sample dimension is flattened into the batch: ``[*S, B, ...] → [S·B, ...]``
once before a network or ``grid_sample``, and back once after (anchors.md §7.3.7).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .affine import AffineLayout, get_layout


def apply_flat(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, event_dim: int) -> torch.Tensor:
    """Apply ``fn`` (which takes ``[N, *event]``) to ``x`` of shape ``[*batch, *event]``.

    The batch dimensions are flattened into one, and restored on the output.
    """
    batch_shape = x.shape[: x.dim() - event_dim]
    out = fn(x.reshape(-1, *x.shape[x.dim() - event_dim :]))
    return out.reshape(*batch_shape, *out.shape[1:])


def warp(
    x: torch.Tensor,
    theta: torch.Tensor,
    layout: str | AffineLayout = "similarity",
    *,
    fill: float = 0.0,
    align_corners: bool = False,
    mode: str = "bilinear",
) -> torch.Tensor:
    """T_θ(x): resample images ``x`` ``[B, C, H, W]`` (or ``[*S, B, C, H, W]``) under θ ``[*S, B, D]``.

    ``fill`` is the value of the plane outside the image: pass the background value of
    normalised data (e.g. −μ/σ for MNIST) so that warps do not paint dark borders.
    ``align_corners`` is passed to both ``affine_grid`` and ``grid_sample``; with ``False``
    (PyTorch's default) ±1 are the outer edges of the corner pixels.
    """
    layout = get_layout(layout)
    if x.dim() < 4:
        raise ValueError(f"warp expects images [..., C, H, W] with a batch dimension, got shape {tuple(x.shape)}")
    matrices = layout.matrix(theta)  # [*S, B, 2, 3]
    batch_shape = torch.broadcast_shapes(matrices.shape[:-2], x.shape[:-3])
    x = x.expand(*batch_shape, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
    matrices = matrices.expand(*batch_shape, 2, 3).reshape(-1, 2, 3).to(x.dtype)
    grid = F.affine_grid(matrices, list(x.shape), align_corners=align_corners)
    out = F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=align_corners) + fill
    return out.reshape(*batch_shape, *out.shape[-3:])
