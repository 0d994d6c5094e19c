"""Differentiable spatial transformations T_θ (no Pyro in here)."""
from .cpab import CPAB
from .family import TransformFamily, check_theta, is_invertible, param_names, spatial_dims
from .layout import EXP_LIMIT, THETA_LIMIT, AffineLayout
from .lie import GENERATORS, LIE_LAYOUTS, compose, rotation_angle
from .registry import CPAB_FAMILIES, LAYOUTS, SERIES_FAMILIES, USER_FAMILIES, check_layout_family, get_layout, register_family
from .time_affine import TimeAffine
from .tps import ThinPlateSpline
from .warp import apply_flat, has_inverse, warp

__all__ = ["GENERATORS", "LIE_LAYOUTS", "compose", "rotation_angle", "LAYOUTS", "EXP_LIMIT", "THETA_LIMIT",
           "AffineLayout", "ThinPlateSpline", "CPAB", "CPAB_FAMILIES", "TimeAffine", "get_layout",
           "SERIES_FAMILIES", "USER_FAMILIES", "register_family", "TransformFamily", "check_theta",
           "is_invertible", "param_names", "spatial_dims", "check_layout_family", "warp", "has_inverse", "apply_flat"]
