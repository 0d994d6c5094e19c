"""Every transform family by name: the affine layouts, the Lie-algebra layouts, TPS and CPAB."""
from __future__ import annotations

import functools
import re

from .affine import AFFINE_LAYOUTS
from .cpab import CPAB
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

Family = AffineLayout | ThinPlateSpline | CPAB | TimeAffine


@functools.lru_cache(maxsize=None)
def _cpab(name: str) -> CPAB:
    return CPAB(*CPAB_FAMILIES[name])  # one instance per name: its basis is computed once


def get_layout(name: str | int | Family) -> Family:
    """Look a transform family up by name or by its number of parameters (1–6).

    ``"tps"`` is the thin-plate spline on a 3×3 control grid (18 dof, paper 002) and
    ``"tps<s>"`` the one on an s×s grid; ``"cpab"`` (34 dof) and ``"cpab1d"`` (9 dof, for
    signals) are the CPAB diffeomorphisms, ``"time_affine"`` the shift and scale of a signal's time axis.
    """
    if isinstance(name, (AffineLayout, ThinPlateSpline, CPAB, TimeAffine)):
        return name
    key = LAYOUT_ALIASES.get(str(name), str(name))
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
                         "cpab (34), cpab1d (9), time_affine (2)")
    return LAYOUTS[key]


#: Data families → the spatial dimensions of their inputs (images 2, series 1).
FAMILIES = {"image28": 2, "series": 1}
SERIES_FAMILIES = ("cpab1d", "time_affine")


def check_layout_family(layout: str | int | Family, family: str) -> Family:
    """The transform family ``layout`` (a name or an instance) if it warps inputs of the data
    ``family`` (``"image28"``: 2-D, ``"series"``: 1-D), else a ValueError that says which fit."""
    if family not in FAMILIES:
        raise ValueError(f"unknown data family {family!r}; valid: {', '.join(FAMILIES)}")
    layout = get_layout(layout)
    spatial = getattr(layout, "ndim", 2)
    if spatial != FAMILIES[family]:
        raise ValueError(f"the {layout.name} family warps {spatial}-D inputs, but {family} data is "
                         f"{FAMILIES[family]}-D: series take {', '.join(SERIES_FAMILIES)}; images an affine, Lie, "
                         "tps or cpab family")
    return layout
