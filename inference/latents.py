"""Using a fitted VAE: its ELBO terms on held-out data, its codes, and a linear probe on them.

* :func:`elbo_terms` — per-image reconstruction term E_q[log p(x | z, u)] (paper 002 Fig. 5,
  "the second term of the likelihood") and the ELBO, Monte Carlo over the guide;
* :func:`encode` — the representation a model exposes (posterior means of z, or the
  categorical VAE's category probabilities), in batches;
* :func:`linear_probe` — multinomial logistic regression on codes (002 Table 1 used a linear
  SVM, 003 Table 1 logistic regression); a full-batch L-BFGS fit in torch, no extra dependency.
"""
from __future__ import annotations

import pyro
import torch
import torch.nn as nn
from pyro import poutine


@torch.no_grad()
def elbo_terms(model: nn.Module, images: torch.Tensor, num_samples: int = 1, batch_size: int = 1000) -> dict[str, float]:
    """Mean per image of the reconstruction term and of the ELBO (nats), KL weight 1."""
    recon = elbo = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        for _ in range(num_samples):  # the loss's KL weight 1: the ELBO itself
            guide_trace = poutine.trace(model.guide).get_trace(x, kl_weight=1.0)
            model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x, kl_weight=1.0)
            model_trace.compute_log_prob()
            guide_trace.compute_log_prob()
            log_lik = model_trace.nodes["x"]["log_prob"]
            log_joint = sum(site["log_prob"] for site in model_trace.nodes.values() if site["type"] == "sample"
                            and not site["is_observed"] and "log_prob" in site)
            log_q = sum(site["log_prob"] for site in guide_trace.nodes.values() if site["type"] == "sample"
                        and "log_prob" in site)
            recon += float(log_lik.sum()) / num_samples
            elbo += float((log_lik + log_joint - log_q).sum()) / num_samples
    return {"reconstruction": recon / len(images), "elbo": elbo / len(images)}


@torch.no_grad()
def encode(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """``model.encode`` over ``images`` in batches, on the model's device; returns a CPU tensor."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model.encode(images[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)  # a model in eval mode stays there: its BN statistics untouched


def linear_probe(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: dict[str, torch.Tensor] | torch.Tensor,
    test_labels: dict[str, torch.Tensor] | torch.Tensor,
    l2: float = 1e-4,
    max_iter: int = 500,
) -> dict[str, float] | float:
    """Test accuracy of a multinomial logistic regression fitted on standardised training codes.

    ``test_codes`` / ``test_labels`` may be dicts of named test sets (003: base and augmented);
    then a dict of accuracies comes back. ``l2`` is the penalty on the weights per example.
    """
    if not torch.isfinite(train_codes).all():
        raise ValueError("codes contain NaN or infinite values: the VAE diverged; refit it")
    mean, std = train_codes.mean(0), train_codes.std(0).clamp_min(1e-6)
    x = ((train_codes - mean) / std).double()
    y = train_labels.long()
    num_classes = int(y.max()) + 1
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)

    def accuracy(codes: torch.Tensor, labels: torch.Tensor):
        logits = ((codes - mean) / std).double() @ weight.detach() + bias.detach()
        return float((logits.argmax(-1) == labels).double().mean())

    if isinstance(test_codes, dict):
        return {name: accuracy(test_codes[name], test_labels[name]) for name in test_codes}
    return accuracy(test_codes, test_labels)



@torch.no_grad()
def pose_draws(model: nn.Module, images: torch.Tensor, num_samples: int = 200) -> torch.Tensor:
    """Draws of θ from the pose posterior q(u | x) of a TVAE / DTVAE, ``[num_samples, K, D]``.

    The guide runs once under a vectorised ``draws`` plate; each u is mapped to the warp's θ
    by the pose prior (identity for plain coefficients, ψ/log-scale → matrix for affine5, b + W u
    for a low-rank prior). Feed the result to :func:`inference.posterior.to_inference_data`.
    """
    if getattr(model, "pose_prior", None) is None:
        raise ValueError(f"{type(model).__name__} has no pose latent; pose draws need a tvae or dtvae")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with pyro.plate("draws", num_samples, dim=-2):
            trace = poutine.trace(model.guide).get_trace(images.to(device))
        u = trace.nodes["u"]["value"].expand(num_samples, len(images), -1)
        return model.pose_prior.to_theta(u).cpu()
    finally:
        model.train(was_training)
