"""How a model is fitted and used: SVI engine, posterior predictive, calibration, ArviZ export."""
from .control import EntropyController, PIDController
from .engine import TrainConfig, Trainer
from .metrics import bayesian_model_average, classification_metrics, expected_calibration_error, reliability_bins
from .predictive import posterior_draws, predict, predict_at_mean
from .schedules import AnnealingSchedule, TemperatureSchedule, pyro_kl_weight

__all__ = [
    "EntropyController",
    "PIDController",
    "AnnealingSchedule",
    "TrainConfig",
    "TemperatureSchedule",
    "Trainer",
    "bayesian_model_average",
    "classification_metrics",
    "expected_calibration_error",
    "posterior_draws",
    "predict",
    "predict_at_mean",
    "pyro_kl_weight",
    "reliability_bins",
]
