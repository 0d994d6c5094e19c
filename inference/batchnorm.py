"""Precise batch-norm statistics: a fitted network's BN running statistics replaced by those of its
training data under the fitted weights (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", §3).

In training a BatchNorm layer normalises by its batch's statistics and keeps, for evaluation, an
exponential moving average of them (momentum 0.1: mostly the last 10–20 steps). With batches of 16
series and weights that still move, that average can sit far from what the fitted network sees, and
the error compounds over the layers: an FCN on OSULeaf (CNN repetition 3 of ``reproduce ucr``)
fitted its training split yet read 0.33 on test in eval mode, and 0.93 with its statistics
recomputed (``experiments/results/ucr_OSULeaf.md``). Recomputing them once after the last epoch
costs one forward pass over the training set.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .loading import batches


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batch_norm(model: nn.Module, forward: Callable[[torch.Tensor, torch.Tensor], object], data: Dataset,
                         batch_size: int = 500) -> int:
    """Set every BN layer's running mean and variance of ``model`` to the mean over batches of
    ``data`` of its batch statistics; returns the number of BN layers (0: nothing to do).

    ``forward(x, y)`` runs the model on a batch as training does, e.g. the ELBO loss module: the
    guide draws θ from q(θ|x), so the classifier's layers see the warped inputs they normalise at
    test time. Everything but the BN layers is in eval mode meanwhile (dropout off, as when
    predicting); the model's train / eval mode and the layers' momenta are restored afterwards.
    With ``batch_size`` at least the data's size (most UCR training splits) the statistics are
    exactly the data's; with several batches the variance is the mean of the batch variances.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    if len(data) == 0:
        raise ValueError("cannot recompute batch-norm statistics over an empty training set")
    was_training, momenta = model.training, [m.momentum for m in layers]
    model.eval()
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches below
            m.train()
        device = next(model.parameters()).device
        for x, y in batches(data, batch_size, device):
            forward(x, y)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(layers)
