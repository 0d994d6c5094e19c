"""What invariance a flow_pstn learned: rotation ranges per class, distance to rotations (paper 004).

* :func:`transformation_samples` — T ~ g(T | x) for many images, in batches;
* :func:`rotation_ranges` — per image, the central interval of the sampled rotation angles
  (004 Figs. 4 and 8: "learned rotation range"), summarised per class;
* :func:`relative_rotation_error` — ‖A − R‖_F / ‖R‖_F for the nearest rotation R of the linear
  part A (polar decomposition): 004 Fig. 7's measure for rotation discovery.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from pyro_pstn.transforms import TransformFamily, rotation_angle


@torch.no_grad()
def transformation_samples(model: nn.Module, images: torch.Tensor, num_samples: int = 200, batch_size: int = 500) -> torch.Tensor:
    """``[num_samples, N, D]`` draws of T from the model's g(T | x), on the model's device; CPU result."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat([
            model.transformation_distribution(images[i : i + batch_size].to(device)).sample((num_samples,)).cpu()
            for i in range(0, len(images), batch_size)
        ], 1)
    finally:
        model.train(was_training)


def rotation_degrees(layout: str | TransformFamily, theta: torch.Tensor) -> torch.Tensor:
    """The rotation angle (degrees) of A(θ) for θ ``[..., D]``."""
    return torch.rad2deg(rotation_angle(layout.matrix(theta)))


def rotation_ranges(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_samples: int = 200,
                    coverage: float = 0.95) -> dict:
    """Width (degrees) of the central ``coverage`` interval of each image's sampled rotation,
    and its mean / std per class. A full invariance is a width near 360° (at 95 %: 342°)."""
    angles = rotation_degrees(model.layout, transformation_samples(model, images, num_samples))  # [S, N]
    tail = (1 - coverage) / 2
    low, high = torch.quantile(angles, tail, dim=0), torch.quantile(angles, 1 - tail, dim=0)
    width = high - low
    per_class = {
        int(c): {"mean_width": float(width[labels == c].mean()), "std_width": float(width[labels == c].std()),
                 "mean_angle": float(angles[:, labels == c].mean()), "images": int((labels == c).sum())}
        for c in labels.unique()
    }
    return {"coverage": coverage, "num_samples": num_samples, "per_class": per_class, "widths": width}


def relative_rotation_error(matrices: torch.Tensor) -> torch.Tensor:
    """‖A − R‖_F / ‖R‖_F = ‖A − R‖_F / √2 for the linear parts A of ``[..., 2, 3]`` matrices,
    R = U Vᵀ the nearest rotation (polar decomposition; a reflection if det A < 0)."""
    linear = matrices[..., :2, :2]
    u, _, vh = torch.linalg.svd(linear)
    nearest = u @ vh
    return torch.linalg.matrix_norm(linear - nearest) / math.sqrt(2.0)
