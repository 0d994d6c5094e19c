"""Robustness to test-time transformations (issue 35): the shifts, and the command on fitted runs."""
import json

import pytest
import torch
from click.testing import CliRunner

from experiments.fit import main as fit
from experiments.robustness import main as robustness
from inference.robustness import Shift, shifted


def test_shifts_move_the_content_as_they_say_and_fill_with_the_background():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 3] = 1.0
    moved = shifted(x, Shift("translation", 0.2), fill=-0.5)  # one pixel of five, right and down
    assert moved[0, 0, 3, 4] == 1.0 and moved[0, 0, 2, 3] == 0.0 and moved[0, 0, 0, 0] == -0.5
    quarter = shifted(x, Shift("rotation", 90), fill=0.0)
    assert torch.isclose(quarter.sum(), torch.tensor(1.0, dtype=torch.float64)) and quarter[0, 0, 2, 3] == 0.0
    assert torch.equal(shifted(x, Shift("scale", 1.0), fill=0.0), x)
    with pytest.raises(ValueError, match="valid: rotation, translation, scale"):
        Shift("shear", 0.1)
    with pytest.raises(ValueError, match="scale needs a finite amount > 0"):
        Shift("scale", 0.0)


def test_the_command_reads_fitted_runs_and_at_no_shift_gives_their_own_test_metrics(tmp_path, data_root):
    for seed in (0, 1):
        result = CliRunner().invoke(fit, ["--model", "cnn", "--data", "mnist30", "--epochs", "2", "--test-size", "60",
                                          "--val-size", "20", "--seed", str(seed), "--no-progress", "--out-dir",
                                          str(tmp_path / "runs"), "--run-name", f"cnn{seed}", "--data-root", str(data_root)])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(robustness, [str(tmp_path / "runs" / "cnn0"), str(tmp_path / "runs" / "cnn1"),
                                             "--rotations", "0,90", "--translations", "0.2", "--scales", "1",
                                             "--name", "tiny", "--results-dir", str(tmp_path / "results")],
                                env={"PYRO_PSTN_DATA": str(data_root)})
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "results" / "robustness" / "tiny.json").read_text())
    for name in ("cnn0", "cnn1"):
        at_zero = runs[str(tmp_path / "runs" / name)]["metrics"][0]
        own = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())["test"]
        assert at_zero["amount"] == 0 and at_zero["accuracy"] == pytest.approx(own["accuracy"], abs=1e-6)
    text = (tmp_path / "results" / "robustness" / "tiny.md").read_text()
    assert "| 90° |" in text and "cnn × 2" in text and "mean over the sweep" in text
    assert (tmp_path / "results" / "robustness" / "tiny.png").stat().st_size > 0
    missing = CliRunner().invoke(robustness, [str(tmp_path / "nowhere"), "--results-dir", str(tmp_path / "results")])
    assert missing.exit_code == 2 and "holds no config.json" in missing.output
