import math

import pytest
import torch

from inference.metrics import (
    bayesian_model_average,
    classification_metrics,
    expected_calibration_error,
    pool_bins,
    reliability_bins,
)


def _log(p):
    return torch.log(torch.tensor(p))


def test_ece_on_a_hand_computed_case():
    # confidences 0.9 (right), 0.78 (wrong), 0.62 (right), 0.55 (right), 0.58 (wrong)
    probs = [[0.9, 0.1], [0.78, 0.22], [0.62, 0.38], [0.55, 0.45], [0.58, 0.42]]
    labels = torch.tensor([0, 1, 0, 0, 1])
    # 15 bins of width 1/15: 0.9 → bin 13, 0.78 → 11, 0.62 → 9, 0.55 and 0.58 share bin 8
    # ECE = (|1−0.9| + |0−0.78| + |1−0.62| + 2·|0.5−0.565|) / 5 = 1.39 / 5
    assert expected_calibration_error(_log(probs), labels) == pytest.approx(0.278, abs=1e-6)
    bins = reliability_bins(_log(probs), labels)
    assert bins.count.tolist() == [0] * 8 + [2, 1, 0, 1, 0, 1, 0]
    assert float(bins.accuracy[8]) == 0.5 and float(bins.confidence[8]) == pytest.approx(0.565)
    assert math.isnan(float(bins.accuracy[0]))
    as_dict = bins.to_dict()
    assert as_dict["count"][8] == 2 and as_dict["accuracy"][0] is None and len(as_dict["edges"]) == 16


def test_perfectly_calibrated_and_other_metrics():
    log_probs = _log([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])  # 75 % accurate at 75 % confidence
    m = classification_metrics(log_probs, labels)
    assert m["ece"] == pytest.approx(0.0, abs=1e-6)
    assert m["accuracy"] == 0.75
    assert m["nll"] == pytest.approx(-(3 * math.log(0.75) + math.log(0.25)) / 4)
    assert m["brier"] == pytest.approx((3 * 2 * 0.25**2 + 2 * 0.75**2) / 4)


def test_bayesian_model_average_is_the_mean_of_probabilities():
    logits = torch.randn(7, 5, 3)
    expected = torch.softmax(logits, -1).mean(0).log()
    torch.testing.assert_close(bayesian_model_average(logits), expected)
    # one sample: just the log-softmax
    torch.testing.assert_close(bayesian_model_average(logits[:1]), torch.log_softmax(logits[0], -1))


def test_pooled_bins_equal_the_bins_of_all_predictions():
    torch.manual_seed(0)
    logits, labels = torch.randn(300, 4) * 2, torch.randint(0, 4, (300,))
    log_probs = torch.log_softmax(logits, -1)
    parts = [reliability_bins(log_probs[i : i + 100], labels[i : i + 100]).to_dict() for i in (0, 100, 200)]
    pooled, whole = pool_bins(parts), reliability_bins(log_probs, labels)
    torch.testing.assert_close(pooled.count, whole.count.double())
    torch.testing.assert_close(pooled.accuracy, whole.accuracy.double(), equal_nan=True)
    torch.testing.assert_close(pooled.confidence, whole.confidence.double(), equal_nan=True)


def test_overconfidence_is_the_signed_gap_of_confidence_over_accuracy():
    probs = torch.tensor([[0.9, 0.1], [0.78, 0.22], [0.62, 0.38], [0.55, 0.45], [0.58, 0.42]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0, 1])
    bins = reliability_bins(probs.log(), labels)
    # mean confidence (0.9 + 0.78 + 0.62 + 0.55 + 0.58) / 5 = 0.686 against accuracy 3/5
    assert bins.overconfidence() == pytest.approx(0.686 - 0.6, abs=1e-12)
    assert abs(bins.overconfidence()) <= expected_calibration_error(probs.log(), labels)
    right = reliability_bins(torch.tensor([[0.7, 0.3]] * 4, dtype=torch.float64).log(), torch.zeros(4, dtype=torch.long))
    assert right.overconfidence() == pytest.approx(-0.3, abs=1e-12)  # always right at 70 %: underconfident


def test_predicting_at_mu_is_the_posterior_predictive_of_a_collapsed_posterior():
    from inference.predictive import predict, predict_at_mean
    from pyro_pstn.models import build_model

    torch.manual_seed(0)
    model = build_model("pstn").double()
    with torch.no_grad():
        model.localizer.loc.weight.normal_(0, 1e-3)  # μ(x) depends on x
        model.localizer.spread.bias.fill_(-60.0)  # σ(x) at its floor 1e-8: every draw is μ(x) to 1e-8
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(predict(model, x, num_samples=4), predict_at_mean(model, x), rtol=0, atol=1e-6)
    with torch.no_grad():
        model.localizer.spread.bias.fill_(0.0)  # σ ≈ 0.69: draws differ from μ(x)
    assert not torch.allclose(predict(model, x, num_samples=4), predict_at_mean(model, x), atol=1e-3)
    with pytest.raises(ValueError, match="no localizer"):
        predict_at_mean(build_model("cnn"), x.float())
