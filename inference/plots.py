"""Figures written into a run directory (matplotlib's object API: no pyplot, no display needed)."""
from __future__ import annotations

import os

import numpy as np
import torch

from .metrics import ReliabilityBins


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def reliability_diagram(bins: ReliabilityBins, path: str | os.PathLike, title: str = "", ece: float | None = None):
    """Accuracy per confidence bin against the diagonal of perfect calibration."""
    fig = _figure(4.2, 4.2)
    ax = fig.add_subplot()
    edges = bins.edges.numpy()
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    acc = np.nan_to_num(bins.accuracy.numpy())
    conf = np.nan_to_num(bins.confidence.numpy(), nan=0.0)
    filled = bins.count.numpy() > 0
    ax.bar(centres[filled], acc[filled], width=width[filled], edgecolor="black", color="tab:blue", label="accuracy")
    gap_low = np.minimum(acc, conf)[filled]
    ax.bar(
        centres[filled], np.abs(conf - acc)[filled], bottom=gap_low, width=width[filled],
        fill=False, hatch="//", edgecolor="tab:red", label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_title(title + (f"  ECE = {ece:.4f}" if ece is not None else ""), fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def augmentation_grid(images: torch.Tensor, warped: torch.Tensor, path: str | os.PathLike, title: str = ""):
    """Row k: test image k, then its posterior augmentations T_θs(x_k) for θ_s ~ q(θ | x_k).

    ``images``: [K, C, H, W]; ``warped``: [S, K, C, H, W].
    """
    S, K = warped.shape[:2]
    fig = _figure(0.9 * (S + 1), 0.9 * K + 0.4)
    vmin, vmax = float(images.min()), float(images.max())
    for k in range(K):
        for s in range(S + 1):
            ax = fig.add_subplot(K, S + 1, k * (S + 1) + s + 1)
            img = images[k] if s == 0 else warped[s - 1, k]
            ax.imshow(img[0].numpy(), cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_xticks([]), ax.set_yticks([])
            if k == 0:
                ax.set_title("input" if s == 0 else f"θ{s}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def calibration_curves(curves: dict[str, ReliabilityBins], path: str | os.PathLike, title: str = ""):
    """Accuracy against mean confidence per bin, one line per model, with the diagonal."""
    fig = _figure(4.6, 4.4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for label, bins in curves.items():
        filled = (bins.count > 0).numpy()
        ax.plot(bins.confidence.numpy()[filled], bins.accuracy.numpy()[filled], "o-", ms=3, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
