"""Posterior predictive averaging and calibration metrics (one place for BMA and ECE)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Number of equal-width confidence bins for ECE and reliability diagrams (Guo et al. 2017).
ECE_BINS = 15


def bayesian_model_average(logits: torch.Tensor) -> torch.Tensor:
    """log p(y|x) ≈ log (1/S) Σ_s p(y | T_θs(x)) = logsumexp_s log p_s − log S.

    ``logits``: [S, B, K] unnormalised class scores of S posterior samples → [B, K] log-probs.
    """
    log_probs = torch.log_softmax(logits, dim=-1)
    return torch.logsumexp(log_probs, dim=0) - math.log(logits.shape[0])


@dataclass
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram: bin b holds confidences in (b/n, (b+1)/n]."""

    edges: torch.Tensor  # [n+1]
    count: torch.Tensor  # [n]
    accuracy: torch.Tensor  # [n], NaN where empty
    confidence: torch.Tensor  # [n], NaN where empty

    def overconfidence(self) -> float:
        """Mean confidence − accuracy over all binned predictions: > 0 overconfident, < 0
        underconfident (the signed counterpart of ECE, |overconfidence| ≤ ECE)."""
        filled = self.count > 0
        weights = self.count[filled] / self.count.sum()
        return float((weights * (self.confidence[filled] - self.accuracy[filled])).sum())

    def to_dict(self) -> dict[str, list]:
        """JSON-friendly lists (empty bins as None), e.g. to pool diagrams over folds later."""

        def clean(t: torch.Tensor):
            return [None if v != v else float(v) for v in t.tolist()]

        return {"edges": clean(self.edges), "count": [int(c) for c in self.count.tolist()],
                "accuracy": clean(self.accuracy), "confidence": clean(self.confidence)}


def reliability_bins(log_probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Bin predictions by confidence max_k p(k|x) into ``n_bins`` equal-width bins of (0, 1]."""
    probs = log_probs.exp()
    confidence, predicted = probs.max(dim=-1)
    correct = (predicted == labels).to(probs.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=probs.dtype)
    # bin b is (edges[b], edges[b+1]]; a confidence of exactly 0 cannot occur (max ≥ 1/K)
    index = (torch.bucketize(confidence.cpu(), edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).to(probs.dtype)
    sum_correct = torch.bincount(index, weights=correct.cpu(), minlength=n_bins)
    sum_conf = torch.bincount(index, weights=confidence.cpu(), minlength=n_bins)
    nan = torch.full_like(count, float("nan"))
    accuracy = torch.where(count > 0, sum_correct / count.clamp_min(1), nan)
    mean_conf = torch.where(count > 0, sum_conf / count.clamp_min(1), nan)
    return ReliabilityBins(edges, count, accuracy, mean_conf)


def expected_calibration_error(log_probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| over equal-width bins (Guo et al. 2017)."""
    bins = reliability_bins(log_probs, labels, n_bins)
    filled = bins.count > 0
    gaps = (bins.accuracy[filled] - bins.confidence[filled]).abs()
    return float((bins.count[filled] / bins.count.sum() * gaps).sum())


def classification_metrics(log_probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS) -> dict[str, float]:
    """Accuracy, NLL (mean −log p(y|x)), ECE and multi-class Brier score (mean Σ_k (p_k − 1[y=k])²)."""
    labels = labels.to(log_probs.device)
    one_hot = torch.nn.functional.one_hot(labels, log_probs.shape[-1]).to(log_probs.dtype)
    return {
        "accuracy": float((log_probs.argmax(-1) == labels).float().mean()),
        "nll": float(-log_probs.gather(-1, labels[:, None]).mean()),
        "ece": expected_calibration_error(log_probs, labels, n_bins),
        "brier": float(((log_probs.exp() - one_hot) ** 2).sum(-1).mean()),
    }


def pool_bins(bins: list[dict]) -> ReliabilityBins:
    """Pool per-run bin statistics (``ReliabilityBins.to_dict()``) with the same edges, e.g. over folds.

    Counts add; per-bin accuracy and confidence are count-weighted means, so the pooled diagram is
    that of all predictions together.
    """
    edges = torch.tensor(bins[0]["edges"], dtype=torch.float64)
    count = torch.tensor([b["count"] for b in bins], dtype=torch.float64)

    def weighted(key: str):
        values = torch.tensor([[0.0 if v is None else v for v in b[key]] for b in bins], dtype=torch.float64)
        total = count.sum(0)
        return torch.where(total > 0, (values * count).sum(0) / total.clamp_min(1), torch.tensor(float("nan")))
    return ReliabilityBins(edges, count.sum(0), weighted("accuracy"), weighted("confidence"))
