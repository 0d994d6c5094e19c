"""Every transform family by name: the affine layouts, the Lie-algebra layouts and TPS."""
from __future__ import annotations

import re

from .affine import AFFINE_LAYOUTS
from .layout import AffineLayout
from .lie import LIE_LAYOUTS
from .tps import ThinPlateSpline

#: Every registered matrix layout (affine and Lie); TPS families are made on demand by name.
LAYOUTS: dict[str, AffineLayout] = {**AFFINE_LAYOUTS, **LIE_LAYOUTS}
#: The authors' ``--num_param`` numbers, accepted as aliases of the affine layouts.
LAYOUT_ALIASES = {str(layout.dim): name for name, layout in AFFINE_LAYOUTS.items()}


def get_layout(name: str | int | AffineLayout | ThinPlateSpline) -> AffineLayout | ThinPlateSpline:
    """Look a transform family up by name or by its number of parameters (1–6).

    ``"tps"`` is the thin-plate spline on a 3×3 control grid (18 dof, paper 002) and
    ``"tps<s>"`` the one on an s×s grid.
    """
    if isinstance(name, (AffineLayout, ThinPlateSpline)):
        return name
    key = LAYOUT_ALIASES.get(str(name), str(name))
    tps = re.fullmatch(r"tps(\d*)", key)
    if tps:
        return ThinPlateSpline(int(tps.group(1) or 3))
    if key not in LAYOUTS:
        valid = ", ".join(f"{n} ({layout.dim})" for n, layout in LAYOUTS.items())
        raise ValueError(f"unknown transform layout {name!r}; valid layouts: {valid}, tps (18), tps<s> (2s²)")
    return LAYOUTS[key]
