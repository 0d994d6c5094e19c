"""Networks: localizers and classifiers (no Pyro in here)."""
from .mnist import (
    Classifier,
    Localizer,
    conv_features,
    count_parameters,
    mnist_cnn_classifier,
    mnist_pstn_localizer,
    mnist_stn_classifier,
    mnist_stn_localizer,
)

__all__ = [
    "Classifier",
    "Localizer",
    "conv_features",
    "count_parameters",
    "mnist_cnn_classifier",
    "mnist_pstn_localizer",
    "mnist_stn_classifier",
    "mnist_stn_localizer",
]
