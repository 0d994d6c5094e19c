"""Figures written into a run directory (matplotlib's object API: no pyplot, no display needed)."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from .metrics import ReliabilityBins

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def reliability_diagram(bins: ReliabilityBins, path: str | os.PathLike, title: str = "", ece: float | None = None) -> None:
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


def show_image(ax: Axes, image: torch.Tensor, vmin: float, vmax: float) -> None:
    """Draw one image [C, H, W] on ``ax``: grey for one channel, colour (RGB) for three, the first
    three channels of more; values mapped from [vmin, vmax] to the display range."""
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=vmin, vmax=vmax)
        return
    rgb = image[:3].permute(1, 2, 0) if image.shape[0] >= 3 else image[[0, 1, 1]].permute(1, 2, 0)
    ax.imshow(((rgb - vmin) / max(vmax - vmin, 1e-12)).clamp(0, 1).numpy())


def augmentation_grid(images: torch.Tensor, warped: torch.Tensor, path: str | os.PathLike, title: str = "") -> None:
    """Row k: test image k, then its posterior augmentations T_θs(x_k) for θ_s ~ q(θ | x_k).

    ``images``: [K, C, H, W]; ``warped``: [S, K, C, H, W]. Series ([K, C, L], [S, K, C, L]) are
    drawn by :func:`series_augmentations`.
    """
    if images.dim() == 3:
        return series_augmentations(images, warped, path, title)
    S, K = warped.shape[:2]
    fig = _figure(0.9 * (S + 1), 0.9 * K + 0.4)
    vmin, vmax = float(images.min()), float(images.max())
    for k in range(K):
        for s in range(S + 1):
            ax = fig.add_subplot(K, S + 1, k * (S + 1) + s + 1)
            img = images[k] if s == 0 else warped[s - 1, k]
            show_image(ax, img, vmin, vmax)
            ax.set_xticks([]), ax.set_yticks([])
            if k == 0:
                ax.set_title("input" if s == 0 else f"θ{s}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def series_augmentations(series: torch.Tensor, warped: torch.Tensor, path: str | os.PathLike, title: str = "") -> None:
    """One panel per series k: its posterior augmentations T_θs(x_k) (thin) over the series itself
    (thick), as paper 000 Fig. 8 / 001 Fig. 10. ``series``: [K, 1, L]; ``warped``: [S, K, 1, L]."""
    S, K = warped.shape[:2]
    columns = min(K, 4)
    rows = -(-K // columns)
    fig = _figure(3.2 * columns, 2.2 * rows + 0.4)
    for k in range(K):
        ax = fig.add_subplot(rows, columns, k + 1)
        for s in range(S):
            ax.plot(warped[s, k, 0].numpy(), color="tab:orange", lw=0.7, alpha=0.6, label="T_θ(x), θ ~ q(θ|x)" if s == 0 else None)
        ax.plot(series[k, 0].numpy(), color="k", lw=1.4, label="x")
        ax.set_xticks([]), ax.set_yticks([])
        if k == 0:
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def calibration_curves(curves: dict[str, ReliabilityBins], path: str | os.PathLike, title: str = "") -> None:
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


def image_grid(rows: dict[str, torch.Tensor], path: str | os.PathLike, title: str = "", columns: int = 10) -> None:
    """One labelled block of images per entry of ``rows`` ({label: [N, C, H, W] in [0, 1]}),
    ``columns`` images to a line: sample grids from a generative model's prior."""
    lines = {label: math.ceil(len(images) / columns) for label, images in rows.items()}
    total = sum(lines.values())
    fig = _figure(0.55 * columns + 1.6, 0.55 * total + 0.5)
    grid = fig.add_gridspec(total, columns + 1, width_ratios=[2.2] + [1] * columns)
    line = 0
    for label, images in rows.items():
        label_ax = fig.add_subplot(grid[line : line + lines[label], 0])
        label_ax.axis("off")
        label_ax.text(1.0, 0.5, label, ha="right", va="center", fontsize=7, wrap=True)
        for i, img in enumerate(images):
            ax = fig.add_subplot(grid[line + i // columns, 1 + i % columns])
            show_image(ax, img.cpu(), 0.0, 1.0)
            ax.axis("off")
        line += lines[label]
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93 if title else 0.99, wspace=0.05, hspace=0.05)
    fig.savefig(path)


def line_plot(series: dict[str, tuple[list[float], list[float]]], path: str | os.PathLike, xlabel: str, ylabel: str,
              title: str = "", markers: bool = True, logy: bool = False,
              errors: dict[str, list[float]] | None = None) -> None:
    """One line per entry of ``series`` ({label: (x values, y values)}), with markers unless
    ``markers=False`` (long traces such as a controller's log), and error bars of half-length
    ``errors[label]`` where given."""
    fig = _figure(5.0, 3.8)
    ax = fig.add_subplot()
    for label, (xs, ys) in series.items():
        ax.errorbar(xs, ys, yerr=(errors or {}).get(label), fmt="o-" if markers else "-", ms=4,
                    lw=1.5 if markers else 0.8, capsize=3, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def histograms(series: dict[str, np.ndarray], path: str | os.PathLike, xlabel: str, title: str = "",
               bins: int | np.ndarray = 60, columns: int = 5) -> None:
    """One small histogram per entry of ``series`` ({panel title: values}), sharing the x axis."""
    n = len(series)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig = _figure(2.6 * cols, 2.2 * rows + 0.4)
    for i, (label, values) in enumerate(series.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.hist(np.asarray(values).ravel(), bins=bins, color="tab:blue", alpha=0.8)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def scatter_panels(panels: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, xlabel: str,
                   ylabel: str, title: str = "", diagonal: bool = True) -> None:
    """One scatter plot per entry of ``panels`` ({panel title: (x, y)}), with y = x dashed
    (001 Fig. 4, left: ground-truth against recovered transformations)."""
    fig = _figure(3.4 * len(panels), 3.4)
    for i, (label, (xs, ys)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.scatter(np.asarray(xs).ravel(), np.asarray(ys).ravel(), s=2, alpha=0.3, color="tab:blue")
        if diagonal:
            low, high = float(np.min(xs)), float(np.max(xs))
            ax.plot([low, high], [low, high], "k--", lw=1)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def overlaid_histograms(series: dict[str, np.ndarray], path: str | os.PathLike, xlabel: str, title: str = "",
                        bins: int = 40) -> None:
    """Several distributions on one axis, as densities (001 Fig. 4, bottom right)."""
    fig = _figure(4.4, 3.2)
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.hist(np.asarray(values).ravel(), bins=bins, alpha=0.5, density=True, label=label)
    ax.set(xlabel=xlabel, ylabel="density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
