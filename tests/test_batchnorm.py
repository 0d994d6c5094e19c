"""Precise batch-norm statistics (inference/batchnorm.py): after a fit, eval mode normalises by the
training split's statistics, not by the running averages of the last small batches."""
import copy
import math

import pytest
import torch

from inference.batchnorm import batch_norm_layers, recompute_batch_norm
from inference.engine import TrainConfig, Trainer
from pyro_pstn.data import DataSpec, ImageSet
from pyro_pstn.models import build_model

#: The spec of the series below: one channel of 64 steps, 3 classes.
SERIES = DataSpec((1, 64), 3)


def _series(n: int = 24, length: int = 64, classes: int = 3, seed: int = 0) -> ImageSet:
    """Noisy sines whose frequency is the class, float64 ``[n, 1, length]``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    t = torch.linspace(0, 1, length, dtype=torch.float64)
    x = torch.sin(2 * math.pi * (y[:, None] + 1) * t) + 0.1 * torch.randn(n, length, generator=g, dtype=torch.float64)
    return ImageSet(x[:, None], y)


def _batch_statistics_copy(model):
    """A copy of ``model`` in eval mode but for its BN layers, which normalise by batch statistics."""
    model = copy.deepcopy(model).eval()
    for m in batch_norm_layers(model):
        m.train()
    return model


def _split_statistics(model, forward, data: ImageSet) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, unbiased variance) over the whole split of each BN layer's input, in one pass of a copy
    with batch statistics (the other layers in eval mode)."""
    model = _batch_statistics_copy(model)
    seen = []
    for m in batch_norm_layers(model):
        m.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0].mean((0, 2)), inputs[0].var((0, 2)))))
    with torch.no_grad():
        forward(model)(data.images, data.labels)
    return seen


def _matches(model, statistics) -> bool:
    layers = batch_norm_layers(model)
    return len(layers) == len(statistics) and all(
        torch.allclose(m.running_mean, mean, rtol=1e-9, atol=1e-12) and torch.allclose(m.running_var, var, rtol=1e-9)
        for m, (mean, var) in zip(layers, statistics))


def test_precise_bn_sets_every_layer_to_the_splits_statistics_in_float64():
    """A collapsed net (running statistics far off) gets each layer's statistics of the data back,
    and nothing else changes: weights, momenta, train / eval mode."""
    torch.manual_seed(0)
    model = build_model("cnn", SERIES).double()
    data = _series()
    classify = lambda m: (lambda x, y: m.classifier(x))  # noqa: E731
    for m in batch_norm_layers(model):  # what a lagging running average can leave behind
        m.running_mean.fill_(3.0)
        m.running_var.fill_(50.0)
        m.momentum = 0.3
    weights = {k: v.clone() for k, v in model.named_parameters()}
    expected = _split_statistics(model, classify, data)
    batch_stats = _batch_statistics_copy(model)  # the net that normalises by the whole split's batch statistics
    with torch.no_grad():
        target = batch_stats.classifier(data.images)
        collapsed = model.eval().classifier(data.images)
    assert not _matches(model, expected) and not torch.allclose(collapsed, target, rtol=1e-2, atol=1e-2)
    model.train()
    assert recompute_batch_norm(model, classify(model), data, batch_size=len(data)) == 5
    assert _matches(model, expected)
    assert model.training and all(m.training and m.momentum == 0.3 for m in batch_norm_layers(model))
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    with torch.no_grad():  # eval mode now reads the split as batch statistics do (up to var's n / (n − 1))
        assert torch.allclose(model.eval().classifier(data.images), target, rtol=1e-2, atol=1e-3)


def test_precise_bn_over_several_batches_averages_their_means():
    model = build_model("cnn", SERIES).double()
    data = _series(n=30)
    halves = [ImageSet(data.images[i : i + 15], data.labels[i : i + 15]) for i in (0, 15)]
    classify = lambda m: (lambda x, y: m.classifier(x))  # noqa: E731
    means = [[s[0] for s in _split_statistics(model, classify, h)] for h in halves]
    recompute_batch_norm(model, classify(model), data, batch_size=15)
    first = batch_norm_layers(model)[0]  # its input does not depend on the earlier layers' normalisation
    assert torch.allclose(first.running_mean, (means[0][0] + means[1][0]) / 2, rtol=1e-9, atol=1e-12)


def test_no_batch_norm_is_nothing_to_do_and_an_empty_split_is_refused():
    model = build_model("cnn")  # the 28 × 28 networks have no batch norm
    assert recompute_batch_norm(model, lambda x, y: pytest.fail("no forward pass expected"), _series()) == 0
    series = build_model("cnn", SERIES)
    empty = ImageSet(torch.zeros(0, 1, 64), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty training set"):
        recompute_batch_norm(series, lambda x, y: None, empty)


@pytest.mark.parametrize("precise", [True, False])
def test_a_fit_ends_with_the_training_splits_statistics_unless_told_otherwise(precise):
    """After 2 epochs of batches of 4 the running averages are still far from the split's statistics
    (they start at 0 and 1); with precise_bn (the default) the last epoch replaces them."""
    torch.manual_seed(0)
    model = build_model("cnn", SERIES).double()
    data = _series()
    trainer = Trainer(model, TrainConfig(epochs=2, batch_size=4, weight_decay=0.0, precise_bn=precise, val_every=2))
    history = trainer.fit(data, data, progress=False)
    assert history.records[-1].val_accuracy is not None
    expected = _split_statistics(model, lambda m: (lambda x, y: m.classifier(x)), data)
    assert _matches(model, expected) == precise
    assert TrainConfig().precise_bn


def test_precise_bn_of_a_pstn_draws_theta_and_restores_the_mode():
    """Through the ELBO: the localizer's first layer sees the raw series (its statistics are exact),
    the classifier the warped ones; the model stays in eval mode if it was."""
    torch.manual_seed(1)
    model = build_model("pstn", SERIES).double()
    data = _series()
    trainer = Trainer(model, TrainConfig(epochs=1, batch_size=len(data)))
    model.eval()
    assert trainer.recompute_batch_norm(ImageSet(data.images, data.labels)) == 8  # 3 in the localizer, 5 in f
    assert not model.training
    first = batch_norm_layers(model.localizer)[0]
    conv = model.localizer.features[0][:2]  # padding and convolution before the first BN layer
    with torch.no_grad():
        h = conv(data.images)
    assert torch.allclose(first.running_mean, h.mean((0, 2)), rtol=1e-9, atol=1e-12)
    assert torch.allclose(first.running_var, h.var((0, 2)), rtol=1e-9)
    assert all(torch.isfinite(m.running_var).all() and m.num_batches_tracked == 1 for m in batch_norm_layers(model))
