"""How a fitted classifier copes with a transformation applied at test time (issue 35).

Each test image is rotated, shifted or scaled by the same known amount before the posterior
predictive classifies it, and accuracy, NLL and ECE are measured at every amount of a sweep: a model
that learned the invariance keeps its accuracy, a calibrated one its ECE where its accuracy drops.
The plane around a moved image is filled with the data's background (``DataSpec.fill``), as the
models' own warps fill it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_pstn.transforms import get_layout, warp

from .metrics import classification_metrics
from .predictive import predict


@dataclass(frozen=True)
class Shift:
    """One test-time transformation: ``kind`` rotation (``amount`` in degrees, the warp of the
    ``rotation`` layout at that angle), translation (content moved right and down alike by a fraction
    of the image's width) or scale (content enlarged by a factor; below 1 it shrinks)."""

    kind: str
    amount: float

    KINDS = ("rotation", "translation", "scale")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown test-time transformation {self.kind!r}; valid: {', '.join(self.KINDS)}")
        if not math.isfinite(self.amount) or (self.kind == "scale" and self.amount <= 0):
            raise ValueError(f"a {self.kind} needs a finite amount{' > 0' if self.kind == 'scale' else ''}, "
                             f"got {self.amount}")

    @property
    def identity(self) -> bool:
        return self.amount == (1.0 if self.kind == "scale" else 0.0)

    def matrix(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The 2 × 3 matrix of the warp (``affine_grid``'s convention: output to input coordinates in [-1, 1])."""
        if self.kind == "rotation":
            return get_layout("rotation").matrix(torch.tensor([[math.radians(self.amount)]], dtype=dtype))[0]
        if self.kind == "translation":
            t = 2 * self.amount  # a fraction of the width in [-1, 1] units
            return torch.tensor([[1.0, 0.0, -t], [0.0, 1.0, -t]], dtype=dtype)
        s = 1 / self.amount
        return torch.tensor([[s, 0.0, 0.0], [0.0, s, 0.0]], dtype=dtype)


def shifted(images: torch.Tensor, shift: Shift, fill: float | tuple[float, ...]) -> torch.Tensor:
    """``images`` [B, C, H, W] moved by ``shift``, the uncovered plane filled with ``fill``."""
    if shift.identity:
        return images
    theta = shift.matrix(images.dtype).flatten().expand(len(images), 6)
    return warp(images, theta, "affine", fill=fill)


@torch.no_grad()
def robustness(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, shifts: list[Shift],
               fill: float | tuple[float, ...], num_samples: int = 10) -> list[dict]:
    """Posterior predictive accuracy, NLL, ECE and Brier of ``model`` on the test set moved by each
    shift: one dict per shift, ``{"kind", "amount", **metrics}``."""
    unmoved = None  # the unshifted test set is measured once, however many kinds include it
    out = []
    for s in shifts:
        if s.identity and unmoved is not None:
            metrics = unmoved
        else:
            metrics = classification_metrics(predict(model, shifted(images, s, fill), num_samples), labels)
            unmoved = metrics if s.identity else unmoved
        out.append({"kind": s.kind, "amount": s.amount, **metrics})
    return out
