"""Every transform family by name: the affine layouts, the Lie-algebra layouts, TPS, CPAB, the time
warp, and families registered by the user (:func:`register_family`)."""
from __future__ import annotations

import functools
import re

from .affine import AFFINE_LAYOUTS
from .cpab import CPAB
from .family import TransformFamily, spatial_dims
from .layout import AffineLayout
from .lie import LIE_LAYOUTS
from .time_affine import TimeAffine
from .tps import ThinPlateSpline

#: Every registered matrix layout (affine and Lie); TPS families are made on demand by name.
LAYOUTS: dict[str, AffineLayout] = {**AFFINE_LAYOUTS, **LIE_LAYOUTS}
#: The authors' ``--num_param`` numbers, accepted as aliases of the affine layouts.
#: (``uai_similarity``, their 2022 matrix form, is named in full: 4 means ``similarity``.)
LAYOUT_ALIASES = {"1": "rotation", "2": "translation", "3": "scale_translation", "4": "similarity", "5": "affine5",
                  "6": "affine"}


#: The CPAB families (libcpab's tessellations, :mod:`.cpab`): name → (spatial dims, cells).
CPAB_FAMILIES = {"cpab": (2, (3, 3)), "cpab1d": (1, (10,))}

Family = TransformFamily
#: Families registered by name with :func:`register_family`.
USER_FAMILIES: dict[str, TransformFamily] = {}


def register_family(name: str, family: TransformFamily, overwrite: bool = False) -> TransformFamily:
    """Make ``family`` (any object of the :class:`~pyro_pstn.transforms.family.TransformFamily`
    contract) known by ``name`` to :func:`get_layout`, configs and the command line."""
    if not isinstance(family, TransformFamily):
        raise ValueError(f"{family!r} is not a transform family: it needs name, dim, identity_theta(dtype, device) and "
                         "grid(theta, size, align_corners) (see pyro_pstn.transforms.family)")
    if (name in LAYOUTS or name in CPAB_FAMILIES or name == TimeAffine.name or re.fullmatch(r"tps\d*", name)
            or (name in USER_FAMILIES and not overwrite)):
        raise ValueError(f"transform family {name!r} exists already; pick another name (or overwrite=True for your own)")
    USER_FAMILIES[name] = family
    return family


@functools.lru_cache(maxsize=None)
def _cpab(name: str) -> CPAB:
    return CPAB(*CPAB_FAMILIES[name])  # one instance per name: its basis is computed once


def get_layout(name: str | int | Family) -> Family:
    """Look a transform family up by name or by its number of parameters (1–6).

    ``"tps"`` is the thin-plate spline on a 3×3 control grid (18 dof, paper 002) and
    ``"tps<s>"`` the one on an s×s grid; ``"cpab"`` (34 dof) and ``"cpab1d"`` (9 dof, for
    signals) are the CPAB diffeomorphisms, ``"time_affine"`` the shift and scale of a signal's time axis.
    """
    if isinstance(name, TransformFamily):
        return name
    key = LAYOUT_ALIASES.get(str(name), str(name))
    if key in USER_FAMILIES:
        return USER_FAMILIES[key]
    tps = re.fullmatch(r"tps(\d*)", key)
    if tps:
        return ThinPlateSpline(int(tps.group(1) or 3))
    if key in CPAB_FAMILIES:
        return _cpab(key)
    if key == TimeAffine.name:
        return TimeAffine()
    if key not in LAYOUTS:
        valid = ", ".join(f"{n} ({layout.dim})" for n, layout in LAYOUTS.items())
        raise ValueError(f"unknown transform layout {name!r}; valid layouts: {valid}, tps (18), tps<s> (2s²), "
                         "cpab (34), cpab1d (9), time_affine (2)"
                         + "".join(f", {n} ({f.dim})" for n, f in USER_FAMILIES.items()))
    return LAYOUTS[key]


#: The built-in families of signals (1-D); every other built-in one warps images.
SERIES_FAMILIES = ("cpab1d", "time_affine")


def check_layout_family(layout: str | int | Family, ndim: int) -> Family:
    """The transform family ``layout`` (a name or an instance) if it warps inputs with ``ndim``
    spatial dimensions (2 images, 1 series), else a ValueError that says which fit."""
    layout = get_layout(layout)
    spatial = spatial_dims(layout)
    if spatial != ndim:
        kind = {1: "series", 2: "images"}.get(ndim, f"{ndim}-D inputs")
        raise ValueError(f"the {layout.name} family warps {spatial}-D inputs, but the data are {kind}: series take "
                         f"{', '.join(SERIES_FAMILIES)}; images an affine, Lie, tps or cpab family (or a family of your "
                         "own with the matching ndim)")
    return layout
