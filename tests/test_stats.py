"""The statistics behind the tables (inference/stats.py), checked against hand computations, and the
command that prints the paired differences of a UCR study from its committed result files."""
import math

from click.testing import CliRunner

from experiments.reproduce import main as reproduce
from inference.stats import best_on_validation, differences, mean_std, median_mad, paired, paired_table


def test_mean_std_and_differences():
    assert mean_std([]) == "not run" and mean_std([0.5]) == "0.5000 (1 fold)"
    assert mean_std([0.7, 0.8, 0.9]) == "0.8000 ± 0.1000"
    assert differences([0.02, -0.01, 0.05]) == "+0.0200 ± 0.0300 (2/3 > 0)"


def test_paired_differences_and_their_standard_error():
    a, b = {0: 0.80, 1: 0.84, 2: 0.79, 9: 0.5}, {0: 0.78, 1: 0.80, 2: 0.80}
    mean, se, n = paired(a, b)  # pairs 0, 1, 2 only: +0.02, +0.04, −0.01
    assert n == 3 and math.isclose(mean, 0.05 / 3)
    assert math.isclose(se, math.sqrt(((0.02 - mean) ** 2 + (0.04 - mean) ** 2 + (-0.01 - mean) ** 2) / 2) / math.sqrt(3))
    assert paired({0: 1.0}, {0: 0.5}) is None  # one pair has no standard error


def test_median_mad_and_the_selection_rule():
    assert median_mad([1.0, 2.0, 4.0, 10.0]) == (3.0, 1.5)
    val = {1e-5: {"accuracy": 0.9, "nll": 0.3}, 1e-4: {"accuracy": 0.9, "nll": 0.2}, 1e-3: {"accuracy": 0.8, "nll": 0.1}}
    assert best_on_validation(val) == 1e-4  # the tie on accuracy goes to the lower NLL


def test_the_phalanges_paired_numbers_are_printed_by_a_command():
    result = CliRunner().invoke(reproduce, ["paired", "--datasets", "PhalangesOutlinesCorrect"])
    assert result.exit_code == 0, result.output
    assert "| Gaussian P-STN − CNN | -0.0012 (SE 0.0068, 5) | -0.0775 (SE 0.0162, 5) | -0.0373 (SE 0.0068, 5) |" in result.output
    assert "| Gamma P-STN | -0.0033 (SE 0.0014, 5) |" in result.output  # draws − μ(x), point 2 of the reading


def _confidence_table(pstn_gap: float, cnn_gap: float, ece_by_s: tuple[float, float, float]):
    cell = {"accuracy": 0.95, "nll": 0.2, "ece": 0.05, "overconfidence": 0.0}
    grid = {v: {"mean": {**cell, "ece": 0.01}, **{f"S{k}": {**cell, "ece": e} for k, e in zip((1, 3, 10), ece_by_s)},
                "posterior_scale": float(v)} for v in ("0.05", "0.15", "0.4")}
    return {"test": {1000: {"pstn": {**cell, "overconfidence": pstn_gap, "ece": abs(pstn_gap)},
                            "cnn": {**cell, "overconfidence": cnn_gap, "ece": abs(cnn_gap)}}},
            "grid": {"pstn": grid}, "calibration": {100: {"cnn": 0.08, "pstn-sigma0.1": -0.03}}}


def test_the_confidence_findings_follow_the_numbers_not_a_script():
    """The findings of experiments.confidence are chosen from the numbers: with the signs flipped, so
    are the words; an ordering that does not flip is not called a flip."""
    from experiments.confidence import findings

    measured = "\n".join(findings(_confidence_table(-0.0772, 0.0111, (0.02, 0.05, 0.08)), 1000, (1, 3, 10)))
    assert "is *under*confident" in measured and "nearly all of its ECE is underconfidence" in measured
    assert "The CNN is slightly *over*confident" in measured and "The ECE of the average rises with S" in measured
    assert "the ordering flips" in measured
    flipped = "\n".join(findings(_confidence_table(0.03, -0.09, (0.08, 0.05, 0.02)), 1000, (1, 3, 10)))
    assert "is *over*confident" in flipped and "The CNN is *under*confident" in flipped
    assert "does not rise steadily with S" in flipped and "the ordering flips" not in flipped


def test_paired_table_sets_every_row_against_every_other_by_key():
    by_key = {"a": {0: {"accuracy": 0.5}, 1: {"accuracy": 0.7}}, "b": {0: {"accuracy": 0.6}, 1: {"accuracy": 0.9}},
              "c": {0: {"accuracy": 0.6}}}  # one pair only: no standard error
    lines = paired_table(by_key, {"a": "A"}, metrics=("accuracy",))
    assert lines[:2] == ["| a − b | accuracy |", "|---|---|"]
    assert lines[2] == "| b − A | +0.1500 (SE 0.0500, 2) |"  # (0.1 + 0.2) / 2, std 0.0707 / √2
    assert lines[3:] == ["| c − A | — |", "| c − b | — |"]
