"""Long real-data runs: ``make test-slow`` (``pytest -m slow``); not part of the default suite."""
import pytest

from experiments.config import authors_config
from inference.fitting import run_fit


@pytest.mark.slow
def test_gamma_pstn_on_mnist30_with_the_full_protocol_reaches_75_percent(tmp_path, data_root):
    config = authors_config("gamma_pstn", "mnist30", data_root=str(data_root))
    metrics = run_fit(config, tmp_path / "run", progress=False)
    assert metrics["epochs"] == 600 and metrics["n_test"] == 10000
    assert metrics["test"]["accuracy"] >= 0.75
