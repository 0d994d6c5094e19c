import os
from pathlib import Path

import pyro
import pytest
import torch

# The suite's steps are as small as the papers': one intra-op thread (what the engine picks for a fit)
# unless OMP_NUM_THREADS says otherwise, so a loaded machine does not slow it 10×.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

REPO = Path(__file__).resolve().parents[1]


def _candidate_roots():
    if os.environ.get("PYRO_PSTN_DATA"):
        yield Path(os.environ["PYRO_PSTN_DATA"])
    yield REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root. Absent data skips the test on a developer's machine but fails in CI."""
    for root in _candidate_roots():
        if (root / "MNIST" / "raw").is_dir():
            return root.resolve()
    message = "real data not found: set PYRO_PSTN_DATA to the folder holding MNIST/raw (../shared/data here)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _pyro_state():
    pyro.clear_param_store()
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session")
def pretrained_mnist(tmp_path_factory, data_root) -> tuple[Path, str]:
    """(run root, run name) of a small pretrained MNIST classifier for the localization tests
    (``localize pretrain``: 1 epoch on 1,000 images), made once per session."""
    from click.testing import CliRunner

    from experiments.localize import main

    root = tmp_path_factory.mktemp("localize")
    result = CliRunner().invoke(main, ["pretrain", "--epochs", "1", "--train-size", "1000", "--data-root", str(data_root),
                                       "--results-dir", str(root), "--run-root", str(root / "runs")])
    assert result.exit_code == 0, result.output
    return root / "runs", "classifier-mnist-e1-smoke1000"
