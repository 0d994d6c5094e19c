"""Transformation posteriors as ArviZ ``InferenceData`` (imported lazily: ArviZ is heavy)."""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Sequence

import torch

from pyro_pstn.transforms import TransformFamily, param_names

from .runs import atomic

if TYPE_CHECKING:  # ArviZ is imported lazily (it is heavy)
    from arviz import InferenceData


def import_arviz() -> ModuleType:
    """``arviz``, imported without the multi-line FutureWarning banner about its coming 1.0
    refactor that it prints on import (it says nothing about our use of it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz

    return arviz


def to_inference_data(
    draws: dict[str, torch.Tensor], layout: TransformFamily, images: torch.Tensor, labels: torch.Tensor, indices: Sequence[int]
) -> InferenceData:
    """Build InferenceData from posterior draws {site: [S, K, D]} of K test images.

    Groups: ``posterior`` (θ and, for the Gamma P-STN, λ; one chain of S draws, dims
    ``image`` × ``theta_dim`` named by the layout), ``observed_data`` (the labels) and
    ``constant_data`` (the images themselves, so a notebook can re-warp them).
    """
    az = import_arviz()
    image_ids = [int(i) for i in indices]
    posterior = {name: value.unsqueeze(0).numpy() for name, value in draws.items()}  # chain dim
    dims = {name: ["image", "theta_dim"] for name in posterior}
    pixels = ["channel", "row", "col"] if images.dim() == 4 else ["channel", "time"]  # images or series
    dims.update({"y": ["image"], "images": ["image", *pixels]})
    return az.from_dict(
        posterior=posterior,
        observed_data={"y": labels.numpy()},
        constant_data={"images": images.numpy()},
        coords={"image": image_ids, "theta_dim": list(param_names(layout))},
        dims=dims,
    )


def save_inference_data(idata: InferenceData, path: str | os.PathLike) -> None:
    atomic(path, lambda tmp: idata.to_netcdf(tmp, engine="h5netcdf"))


def load_inference_data(path: str | os.PathLike) -> InferenceData:
    return import_arviz().from_netcdf(path, engine="h5netcdf")
