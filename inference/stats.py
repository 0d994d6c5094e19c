"""The statistics the result tables report, in one place: mean ± std over folds, differences paired
by fold or repetition with their standard errors, medians with their absolute deviation, and the
rule that selects a hyperparameter on validation."""
from __future__ import annotations

import math
import statistics


def mean_std(values: list[float], unit: str = "fold") -> str:
    """``mean ± std`` to 4 decimals; one value is marked as such, none is ``not run``."""
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.4f} (1 {unit})"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def differences(values: list[float]) -> str:
    """Per-fold differences: ``mean ± std (k/n > 0)``, how many of them are positive."""
    if len(values) < 2:
        return f"{values[0]:+.4f} (1 fold)" if values else "—"
    return f"{statistics.mean(values):+.4f} ± {statistics.stdev(values):.4f} ({sum(v > 0 for v in values)}/{len(values)} > 0)"


def paired(a: dict, b: dict) -> tuple[float, float, int] | None:
    """(mean, standard error, pairs) of a − b over the keys (folds, repetitions) both have; the
    standard error is the std of the differences over √n. None with fewer than two pairs."""
    pairs = [v - b[k] for k, v in a.items() if k in b]
    if len(pairs) < 2:
        return None
    return statistics.mean(pairs), statistics.stdev(pairs) / math.sqrt(len(pairs)), len(pairs)


def median_mad(values: list[float]) -> tuple[float, float]:
    """The median and the median absolute deviation from it."""
    median = statistics.median(values)
    return median, statistics.median(abs(v - median) for v in values)


def best_on_validation(val: dict[float, dict]) -> float:
    """The hyperparameter value whose validation metrics have the best accuracy, ties broken by the
    lower NLL (a validation split of a few series ties often)."""
    return max(val, key=lambda v: (val[v]["accuracy"], -val[v]["nll"]))


def paired_cell(pair: tuple[float, float, int] | None) -> str:
    """A paired difference as a table cell: ``mean (SE se, pairs)``, ``—`` with fewer than two pairs."""
    return f"{pair[0]:+.4f} (SE {pair[1]:.4f}, {pair[2]})" if pair else "—"


def paired_table(by_key: dict[str, dict[int, dict]], labels: dict[str, str],
                 metrics: tuple[str, ...] = ("accuracy", "nll", "ece")) -> list[str]:
    """Markdown lines of every row against every other, ``b − a`` for each pair a before b, paired by
    key (fold or repetition): ``by_key`` is {row: {key: metrics}}; ``labels`` names the rows."""
    names = list(by_key)
    lines = ["| a − b | " + " | ".join({"nll": "NLL", "ece": "ECE"}.get(m, m) for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            cells = [paired_cell(paired(*({k: v[m] for k, v in by_key[x].items()} for x in (b, a)))) for m in metrics]
            lines.append(f"| {labels.get(b, b)} − {labels.get(a, a)} | " + " | ".join(cells) + " |")
    return lines
