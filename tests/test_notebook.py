"""Each notebook executes, top to bottom, on a small run that the test fits first; the committed
notebooks carry the outputs of ``make notebooks`` (real runs) and no error."""
import json

import pytest

from experiments.config import authors_config
from experiments.notebooks import NOTEBOOKS, RUNS, execute_notebook
from inference.fitting import run_fit
from inference.flow_runs import FlowConfig, run_flow
from inference.pose_vae_runs import PoseVAEConfig, run_pose_vae


def _execute(notebook: str, run_dir) -> tuple[list, str]:
    """Run ``notebooks/<notebook>`` on ``run_dir``; return its outputs and their printed text."""
    nb = execute_notebook(notebook.removesuffix(".ipynb"), run_dir, timeout=300)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs, "".join(o.get("text", "") for o in outputs)


def _figures(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def test_inspect_posteriors_notebook_executes_on_a_small_run(tmp_path, data_root):
    config = authors_config(
        "gamma_pstn", "mnist30", train={"epochs": 2}, data_root=str(data_root), test_size=100, val_size=50
    )
    run_fit(config, tmp_path / "run", progress=False)
    outputs, text = _execute("01_inspect_posteriors.ipynb", tmp_path / "run")
    assert _figures(outputs) >= 4
    assert "gamma_pstn on mnist30 fold 0" in text


def test_inspect_posteriors_notebook_shows_time_warps_of_a_series_run(tmp_path, data_root):
    config = authors_config("pstn", "ucr/ItalyPowerDemand", train={"epochs": 2, "num_particles": 2},
                                     data_root=str(data_root), test_size=100)
    run_fit(config, tmp_path / "run", progress=False)
    outputs, text = _execute("01_inspect_posteriors.ipynb", tmp_path / "run")
    assert _figures(outputs) >= 4  # ArviZ's posterior and forest plots, the warped series, the reliability diagram
    assert "pstn on ucr/ItalyPowerDemand fold 0, layout cpab1d" in text


def test_pose_vae_notebook_executes_on_a_small_run(tmp_path, data_root):
    config = PoseVAEConfig(model="tvae", pose_prior="diagonal", z_dim=4, data_root=str(data_root),
                           train_size=600, test_size=200, train=dict(epochs=1))
    run_pose_vae(config, tmp_path, progress=False)
    outputs, text = _execute("02_pose_vae.ipynb", tmp_path / config.name)
    assert _figures(outputs) >= 5
    assert "tvae on mnist: affine warp, pose prior diagonal" in text


def test_flow_invariance_notebook_executes_on_a_small_run(tmp_path, data_root):
    config = FlowConfig(data="mario_iggy_3modes", layout="lie_rotation", base="mixture", components=3, no_aug_until=1,
                        train_size=128, data_root=str(data_root), train=dict(epochs=2, batch_size=64))
    run_flow(config, tmp_path, progress=False)
    outputs, text = _execute("03_flow_invariance.ipynb", tmp_path / config.name)
    assert _figures(outputs) >= 4
    assert "flow_pstn on mario_iggy30x3modes: lie_rotation" in text


def test_localization_notebook_executes_on_a_small_run(tmp_path, data_root, pretrained_mnist, monkeypatch):
    import shutil

    from click.testing import CliRunner

    from experiments.localize import main as localize

    monkeypatch.setenv("PYRO_PSTN_DATA", str(data_root))
    run_root, classifier = pretrained_mnist
    shutil.copytree(run_root / classifier, tmp_path / "runs" / classifier)
    common = ["--results-dir", str(tmp_path), "--run-root", str(tmp_path / "runs")]
    fit = CliRunner().invoke(localize, ["fit", "--epochs", "1", "--train-size", "64", "--test-size", "300", "--val-size",
                                        "16", "--classifier", classifier, *common])
    assert fit.exit_code == 0, fit.output
    outputs, text = _execute("04_localization.ipynb", tmp_path / "runs" / "rotated_mnist-gamma_pstn-e1-seed0-smoke64x300")
    assert _figures(outputs) >= 4
    assert "gamma_pstn on rotated_mnist: 1 epochs, layout rotation, 300 test images" in text
    assert "ε = " in text and "ratio" in text and "θ_true of these images" in text


@pytest.mark.parametrize("name", list(RUNS))
def test_committed_notebooks_show_the_outputs_of_a_real_run(name):
    cells = [c for c in json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert all(c.get("execution_count") for c in cells), "run `make notebooks` to save the notebook executed"
    assert _figures(outputs) >= 4 and not [o for o in outputs if o["output_type"] == "error"]
    printed = "".join("".join(o.get("text", "")) for o in outputs)
    assert "Warning" not in printed and str(NOTEBOOKS.parent) not in printed  # no banners, no machine paths
