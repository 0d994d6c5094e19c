"""pyro-pstn: spatial transformations as latent variables in Pyro."""
from . import data, nets, priors, transforms
from .models import MODEL_NAMES, build_model

__version__ = "0.1.0"
__all__ = ["MODEL_NAMES", "build_model", "data", "nets", "priors", "transforms", "__version__"]
