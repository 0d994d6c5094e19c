"""The contract every transform family answers, built-in or a user's own.

A family is any object with

* ``name`` (str) and ``dim`` (int): its name and the dimension D of θ;
* ``identity_theta(dtype, device)``: θ_id with T_θid = id, a tensor [D];
* ``grid(theta, size, align_corners=False)``: for θ [N, D] and the output ``size`` [N, C, H, W] the
  sampling grid [N, H, W, 2] in ``affine_grid``'s [-1, 1] convention (for a 1-D family and signals
  [N, C, L], the sample positions [N, L]);

and, optionally, ``ndim`` (spatial dimensions it warps: 2, the default, or 1), ``param_names``
(θ's coordinates, for ArviZ) and ``invertible = True`` with ``grid(..., inverse=True)`` giving
T_θ⁻¹. :func:`~pyro_pstn.transforms.warp` does the rest: [*S, B, C, ...] batching, the fill
value, the output size. A family must give a finite grid for every finite θ; a non-finite θ is
refused by :func:`check_theta`.

>>> class Shear:
...     name, dim = "shear", 1
...     def identity_theta(self, dtype=torch.float32, device=None):
...         return torch.zeros(1, dtype=dtype, device=device)
...     def grid(self, theta, size, align_corners=False):
...         A = torch.zeros(len(theta), 2, 3, dtype=theta.dtype); A[:, 0, 0] = A[:, 1, 1] = 1
...         A[:, 0, 1] = theta[:, 0].clamp(-10, 10)
...         return F.affine_grid(A, size, align_corners=align_corners)
>>> register_family("shear", Shear())   # now "shear" works wherever a family name does
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class TransformFamily(Protocol):
    name: str
    dim: int

    def identity_theta(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor: ...

    def grid(self, theta: torch.Tensor, size: list[int], align_corners: bool = False) -> torch.Tensor: ...


def spatial_dims(family: TransformFamily) -> int:
    """2 for a family of image warps, 1 for a time warp of signals."""
    return int(getattr(family, "ndim", 2))


def param_names(family: TransformFamily) -> tuple[str, ...]:
    return tuple(getattr(family, "param_names", None) or (f"theta{k}" for k in range(family.dim)))


def is_invertible(family: TransformFamily) -> bool:
    """Whether ``warp(..., inverse=True)`` can apply T_θ⁻¹ (the family says ``invertible = True``)."""
    return bool(getattr(family, "invertible", False))


def check_theta(theta: torch.Tensor, family: TransformFamily) -> None:
    """A ValueError where θ has a NaN or infinite entry: no warp is made of it.

    Called by :func:`~pyro_pstn.transforms.warp` where the check costs no device synchronisation
    (θ on the CPU, or no gradient being taken, as in validation and prediction); in CUDA training
    steps the engine's check of the loss catches a non-finite θ instead.
    """
    bad = ~torch.isfinite(theta)
    if bool(bad.any()):
        rows = bad.reshape(-1, theta.shape[-1]).any(-1).nonzero()[:5, 0].tolist()
        raise ValueError(f"{family.name}: θ has {int(bad.sum())} NaN or infinite entries (flattened rows {rows}...), "
                         "so the warp would be NaN. The localizer or the posterior diverged: lower the learning rate, "
                         "check the inputs for NaN, or check a custom localizer's output")
