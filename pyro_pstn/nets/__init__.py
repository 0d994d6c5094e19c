"""Networks: localizers, classifiers, dense encoders/decoders (no Pyro in here)."""
from .aligner import Aligner
from .conv import ConvVAEDecoder, ConvVAETrunk, SimpleConv
from .dense import DenseDecoder, DenseTrunk, GaussianHead, MLPClassifier, mlp
from .frozen import Frozen
from .mnist import (
    Classifier,
    Localizer,
    conv_features,
    count_parameters,
    large_localizer,
    mnist_cnn_classifier,
    mnist_pstn_localizer,
    mnist_stn_classifier,
    mnist_stn_localizer,
)
from .series import SeriesClassifier, SeriesLocalizer, ucr_classifier, ucr_localizer

__all__ = [
    "SeriesClassifier",
    "SeriesLocalizer",
    "ucr_classifier",
    "ucr_localizer",
    "Aligner",
    "SimpleConv",
    "ConvVAEDecoder",
    "ConvVAETrunk",
    "DenseDecoder",
    "DenseTrunk",
    "GaussianHead",
    "MLPClassifier",
    "Frozen",
    "large_localizer",
    "mlp",
    "Classifier",
    "Localizer",
    "conv_features",
    "count_parameters",
    "mnist_cnn_classifier",
    "mnist_pstn_localizer",
    "mnist_stn_classifier",
    "mnist_stn_localizer",
]
