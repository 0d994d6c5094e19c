"""Posterior predictive sampling over a data set: test-time augmentation by the posterior over θ."""
from __future__ import annotations

import torch

from pyro_pstn.models import TransformClassifier, check_images, draw

from .metrics import bayesian_model_average


def check_inputs(model: TransformClassifier, images: torch.Tensor) -> None:
    """A ValueError that says what is wrong where ``images`` cannot go through ``model``: not a
    batch of the model's spec (channels, size), empty, integer-valued, NaN or infinite."""
    check_images(images, event_dim=getattr(model, "event_dim", 3), spec=getattr(model, "spec", None))


def predict(
    model: TransformClassifier, images: torch.Tensor, num_samples: int = 10, batch_size: int = 500
) -> torch.Tensor:
    """BMA log-probabilities [N, K] of the posterior predictive with ``num_samples`` draws of θ.

    Deterministic models (CNN, STN, DA without test-time augmentation) use a single draw.
    The model is put in eval mode (no dropout) and restored afterwards.
    """
    check_inputs(model, images)
    samples = num_samples if model.stochastic_predictions else 1
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            logits = draw(model.predictive_model(), model.guide, x, samples, sites=("logits",))["logits"]
            out.append(bayesian_model_average(logits).cpu())
        return torch.cat(out)
    finally:
        model.train(was_training)


def predict_at_mean(model: TransformClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """log p(y | T_μ(x)(x)) [N, K]: the classifier at the localizer's μ(x), with no draws of θ.

    μ(x) is the mean (and mode) of q(θ|x) for the Gaussian P-STN and of the Student-t of the
    Gamma P-STN; set against :func:`predict` it separates what training did to the classifier from
    what averaging over posterior draws at test time does to the predictive.
    """
    if getattr(model, "localizer", None) is None:
        raise ValueError(f"{type(model).__name__} has no localizer: there is no μ(x) to predict at")
    check_inputs(model, images)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].to(device)
                loc, _ = model.localizer(x)
                out.append(torch.log_softmax(model.classifier(model.transform(x, loc)), -1).cpu())
        return torch.cat(out)
    finally:
        model.train(was_training)


def posterior_draws(model: TransformClassifier, images: torch.Tensor, num_samples: int) -> dict[str, torch.Tensor]:
    """{site: [S, N, ...]} joint draws of the model's latent sites for ``images`` (a small batch)."""
    check_inputs(model, images)
    sites = model.latent_sites
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return {k: v.cpu() for k, v in draw(model.model, model.guide, images.to(device), num_samples, sites).items()}
    finally:
        model.train(was_training)
