"""Differentiable spatial transformations T_θ (no Pyro in here)."""
from .affine import LAYOUTS, THETA_LIMIT, AffineLayout, get_layout
from .lie import GENERATORS, LIE_LAYOUTS, compose, rotation_angle
from .tps import ThinPlateSpline
from .warp import apply_flat, warp

__all__ = ["GENERATORS", "LIE_LAYOUTS", "compose", "rotation_angle", "LAYOUTS", "THETA_LIMIT", "AffineLayout", "ThinPlateSpline", "get_layout", "warp", "apply_flat"]
