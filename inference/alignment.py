"""Mean-shift alignment of out-of-distribution poses (paper 004 §3, last paragraph; A.3.9).

Start from I₀ and T₀ = identity; at every step draw samples from the model's conditional
transformation distribution at the current image, take their mean and move by a fraction γ:

    T_k = T_{k−1} ∘ expm(γ Σᵢ E_{g(T | I_{k−1})}[Tᵢ] Gᵢ),     I_k = A_{T_k}(I₀)

The paper writes T_k = T_{k−1} + γ E[T], adding coefficients; that is the same only when the
generators commute (rotation alone). Here matrices are composed (:func:`compose`), which is
right for every layout, and I_k always re-warps the *original* image, so interpolation blur
does not accumulate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pyro_pstn.transforms import compose, rotation_angle, warp


@dataclass
class Alignment:
    images: torch.Tensor  # [B, C, H, W]: I_K, the aligned images
    matrices: torch.Tensor  # [K + 1, B, 2, 3]: A(T_0) = identity, …, A(T_K)

    @property
    def angles(self) -> torch.Tensor:
        """[K + 1, B] rotation angle (radians) of the accumulated transformation at each step."""
        return rotation_angle(self.matrices)


def warp_by_matrix(x: torch.Tensor, matrices: torch.Tensor, fill: float = 0.0, align_corners: bool = False) -> torch.Tensor:
    """Warp images by raw 2×3 matrices [..., B, 2, 3] (the 6-parameter ``affine`` layout)."""
    return warp(x, matrices.flatten(-2), "affine", fill=fill, align_corners=align_corners)


@torch.no_grad()
def mean_shift_align(model: nn.Module, x: torch.Tensor, iterations: int = 20, step: float = 0.1,
                     num_samples: int = 100) -> Alignment:
    """Align each image of ``x`` separately with a model that has ``transformation_distribution(x)``
    (``flow_pstn``); defaults are A.3.9's (20 iterations, γ = 0.1, 100 samples)."""
    if iterations < 0 or step <= 0 or num_samples < 1:
        raise ValueError(f"need iterations ≥ 0, step > 0 and num_samples ≥ 1, got {iterations}, {step}, {num_samples}")
    if any(model.layout.identity):
        raise ValueError(f"mean-shift scales coefficients, so it needs a Lie layout (identity θ = 0), "
                         f"not {model.layout.name!r}")
    was_training = model.training
    model.eval()
    try:
        identity = model.layout.matrix(model.layout.identity_theta(x.dtype, x.device).expand(x.shape[0], -1))
        matrices, current = [identity], x
        for _ in range(iterations):
            mean = model.transformation_distribution(current).sample((num_samples,)).mean(0)  # E_g[T], [B, D]
            total = compose(matrices[-1], model.layout.matrix(step * mean))
            matrices.append(total)
            current = warp_by_matrix(x, total, fill=model.fill, align_corners=model.align_corners)
    finally:
        model.train(was_training)
    return Alignment(current, torch.stack(matrices))
