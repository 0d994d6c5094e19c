"""CPAB diffeomorphisms: continuous piecewise-affine velocity fields, integrated (Freifeld et al. 2017).

The "diffeo" transformations of paper 000 (§4.1.2) and the time warps of its UCR experiments (000
§5.3, 001 §5.2.2), written on torch alone (``../shared/reference/cpab.md`` says why no package is
usable). Conventions are libcpab's, so θ has the papers' dimensions:

- **1-D** (``cpab1d``): [0, 1] cut into 10 equal cells, velocity zero at both ends: θ ∈ R⁹.
- **2-D** (``cpab``): [0, 1]² cut into 3 × 3 squares, each cut into 4 triangles through its centre
  (36 cells); the velocity component normal to the boundary is zero on the boundary: θ ∈ R³⁴.

Cell c has an affine velocity v(x) = A_c [x; 1]. Stacking every A_c into a vector a, continuity
across shared edges and the boundary condition are linear constraints L a = 0; a = B θ with B an
orthonormal basis of L's null space (SVD in float64, once per family). With B orthonormal an
isotropic prior on θ is isotropic in velocity space. θ = 0 is the identity and T_{−θ} = T_θ⁻¹.

T_θ moves each point along the field for unit time:

- 1-D exactly. In a cell with v(x) = a x + b the flow is ψ(x, t) = x + v(x) t φ(a t) with
  φ(z) = (eᶻ − 1)/z, and the time to reach the edge e the point moves towards is
  t_e = (e − x)/v(x) · log1p(u)/u with u = a (e − x)/v(x) (never, if u ≤ −1: the velocity changes
  sign first). Points step from edge to edge, at most once per cell; autograd through these
  formulas gives the exact gradient.
- 2-D stepped (libcpab's scheme): ``steps`` steps of length h = 1/steps, each applying
  exp(h [A_c; 0 0 0]) of the cell the point is in at the start of the step (the steps' gradient
  written out, :class:`_Steps2d`). Against 2000 steps in
  float64, on the pixel centres of 28 × 28 images (80 draws of θ, largest errors):

  | θ ~ N(0, σ²) | largest displacement | 10 steps (default) | 20 steps | 50 steps |
  | --- | ---: | ---: | ---: | ---: |
  | σ = 0.5 | 6.4 px | 0.045 px | 0.010 px | 0.001 px |
  | σ = 1   | 10 px | 0.11 px | 0.027 px | 0.004 px |
  | σ = 2   | 15 px | 0.62 px | 0.13 px | 0.020 px |

  Pass ``steps`` for wider priors (``tests/test_cpab.py`` holds the σ = 0.5 row).

Images are warped like the affine families: the output point p (``affine_grid``'s normalised
coordinates, [-1, 1]) samples the input at T_θ(p), mapped to and from [0, 1]; ``warp`` fills what
lies outside with the data's background. Any finite θ gives a finite warp and gradient: each
coordinate of θ is clamped so that no velocity slope exceeds :data:`EXP_LIMIT` (beyond that a cell is
squeezed by more than e¹⁰ anyway).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from .layout import EXP_LIMIT
from .time_affine import signal_positions


def _null_space(L: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [P, K] of {a : L a = 0} (float64 SVD)."""
    _, s, vh = torch.linalg.svd(L, full_matrices=True)
    rank = int((s > s.max() * 1e-10).sum())
    return vh[rank:].T.contiguous()


def _phi(z: torch.Tensor) -> torch.Tensor:
    """(eᶻ − 1)/z, 1 + z/2 near 0 (both branches finite everywhere, for autograd)."""
    small = z.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, 1 + z / 2, torch.expm1(safe) / safe)


#: |v| below which a point counts as still (e^EXP_LIMIT · STILL ≈ 1e-7 of the domain in unit time);
#: it keeps v's reciprocal, and so every gradient, finite.
STILL = 5e-12


def _log1p_ratio(u: torch.Tensor) -> torch.Tensor:
    """log(1 + u)/u for u > −1, 1 − u/2 near 0."""
    small = u.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(u), u)
    return torch.where(small, 1 - u / 2, torch.log1p(safe) / safe)


def _compose(p: tuple, q: tuple) -> tuple:
    """The affine map p ∘ q, each as its six entries (m00, m01, m02, m10, m11, m12)."""
    return (p[0] * q[0] + p[1] * q[3], p[0] * q[1] + p[1] * q[4], p[0] * q[2] + p[1] * q[5] + p[2],
            p[3] * q[0] + p[4] * q[3], p[3] * q[1] + p[4] * q[4], p[3] * q[2] + p[4] * q[5] + p[5])


def _affine_exp(g: tuple, h: float, degree: int = 6) -> tuple:
    """exp(h G) for the generators G = [[A, b], [0, 0]] given by their six entries: the flow map of
    v(x) = A x + b for time h, as six entries.

    Elementwise (batched 3 × 3 ``matrix_exp`` and its backward cost most of a warp): scaling by
    2⁻ᵏ until the row sums of |hG| are at most 0.1, a Taylor polynomial of ``degree`` (Horner, in
    affine form: relative error below 0.1⁷/7! ≈ 2e-11) and k squarings.
    """
    rows = [(g[i].detach().abs() + g[i + 1].detach().abs() + g[i + 2].detach().abs()).max() for i in (0, 3)]
    norm = float(torch.stack(rows).max())
    k = max(0, math.ceil(math.log2(max(h * norm, 1e-30) / 0.1)))
    scale = h / 2**k
    g = tuple(scale * e for e in g)
    one, zero = torch.ones_like(g[0]), torch.zeros_like(g[0])
    x = (one, zero, zero, zero, one, zero)  # Horner: X ← I + G X / j, for j = degree … 1
    for j in range(degree, 0, -1):
        gx = _compose(g, x)  # G X in affine form: G's last row is zero
        x = (1 + gx[0] / j, gx[1] / j, gx[2] / j, gx[3] / j, 1 + gx[4] / j, gx[5] / j)
    for _ in range(k):
        x = _compose(x, x)
    return x


class CPAB:
    """A CPAB family: ``CPAB(1, (10,))`` is ``cpab1d``, ``CPAB(2, (3, 3))`` is ``cpab``.

    The interface of the other families (``name``, ``dim``, ``identity_theta``, ``param_names``,
    ``grid``), plus ``ndim`` (the spatial dimensions it warps) and, for analysis and tests,
    ``velocity(points, θ)`` and ``transform_points(points, θ)`` on [0, 1]ⁿ.
    """

    invertible = True  # T_θ⁻¹ = T_{−θ}

    def __init__(self, ndim: int, cells: tuple[int, ...], steps: int = 10):
        if ndim not in (1, 2) or len(cells) != ndim or min(cells) < 1:
            raise ValueError(f"CPAB needs ndim 1 or 2 and one cell count per dimension, got ndim={ndim}, cells={cells}")
        if steps < 1:
            raise ValueError(f"CPAB needs at least one integration step, got steps={steps}")
        self.ndim, self.cells, self.steps = ndim, tuple(int(c) for c in cells), int(steps)
        self.name = "cpab1d" if (ndim, self.cells) == (1, (10,)) else "cpab" if (ndim, self.cells) == (2, (3, 3)) \
            else f"cpab{ndim}d_{'x'.join(map(str, self.cells))}"
        self.num_cells = self.cells[0] if ndim == 1 else 4 * self.cells[0] * self.cells[1]
        self.dim = self.basis.shape[1]
        self.param_names = tuple(f"theta{k}" for k in range(self.dim))
        self.identity = (0.0,) * self.dim

    def __repr__(self) -> str:
        return f"CPAB(ndim={self.ndim}, cells={self.cells}, steps={self.steps})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CPAB) and (other.ndim, other.cells, other.steps) == (self.ndim, self.cells, self.steps)

    def __hash__(self) -> int:
        return hash((CPAB, self.ndim, self.cells, self.steps))

    def identity_theta(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=dtype, device=device)

    # ---- the tessellation and its constraints (float64, once) -------------------------------
    @functools.cached_property
    def vertices(self) -> list[tuple[torch.Tensor, ...]]:
        """Each cell's vertices: 1-D (left, right); 2-D the triangle (corner, corner, centre)."""
        if self.ndim == 1:
            n = self.cells[0]
            return [(torch.tensor([c / n], dtype=torch.float64), torch.tensor([(c + 1) / n], dtype=torch.float64))
                    for c in range(n)]
        nx, ny = self.cells
        out = []
        for j, i in itertools.product(range(ny), range(nx)):
            x0, x1, y0, y1 = i / nx, (i + 1) / nx, j / ny, (j + 1) / ny
            centre = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2], dtype=torch.float64)
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            # triangles 0: top (y0 side), 1: right, 2: bottom, 3: left, in the order of _cell_index
            for k in range(4):
                a, b = corners[k], corners[(k + 1) % 4]
                out.append((torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), centre))
        return out

    @functools.cached_property
    def constraints(self) -> torch.Tensor:
        """L [M, P]: continuity at the vertices of every shared edge, and the boundary condition."""
        width = self.ndim + 1  # an A_c row is (slopes, offset)
        per_cell = self.ndim * width
        rows = []

        def row(cell: int, point: torch.Tensor, component: int) -> torch.Tensor:
            r = torch.zeros(self.num_cells * per_cell, dtype=torch.float64)
            start = cell * per_cell + component * width
            r[start : start + width] = torch.cat([point, torch.ones(1, dtype=torch.float64)])
            return r

        def key(p: torch.Tensor) -> tuple:
            return tuple(round(float(v), 9) for v in p)

        edges: dict[tuple, list[int]] = {}
        for c, verts in enumerate(self.vertices):
            faces = [(v,) for v in verts] if self.ndim == 1 else [(verts[k], verts[(k + 1) % 3]) for k in range(3)]
            for face in faces:
                edges.setdefault(tuple(sorted(key(p) for p in face)), []).append(c)
        for face, cells in edges.items():
            points = [torch.tensor(p, dtype=torch.float64) for p in face]
            if len(cells) == 2:  # shared: the same velocity at the face's vertices
                for p in points:
                    for comp in range(self.ndim):
                        rows.append(row(cells[0], p, comp) - row(cells[1], p, comp))
            else:  # on the boundary: the normal component is zero there
                for p in points:
                    for comp in range(self.ndim):
                        if all(abs(float(q[comp]) - float(points[0][comp])) < 1e-12 for q in points) and \
                                float(points[0][comp]) in (0.0, 1.0):
                            rows.append(row(cells[0], p, comp))
        return torch.stack(rows)

    @functools.cached_property
    def basis(self) -> torch.Tensor:
        """B [P, D], orthonormal, float64: the velocity parameters a = B θ."""
        return _null_space(self.constraints)

    @functools.cached_property
    def theta_limit(self) -> float:
        """|θᵢ| bound that keeps every velocity slope within ±EXP_LIMIT."""
        width = self.ndim + 1
        slopes = self.basis.reshape(self.num_cells, self.ndim, width, self.dim)[:, :, : self.ndim]
        return float(EXP_LIMIT / slopes.abs().sum(-1).max())

    def cell_matrices(self, theta: torch.Tensor) -> torch.Tensor:
        """A_c for θ [N, D]: [N, cells, ndim, ndim + 1] (clamped θ, see the module docstring)."""
        if theta.shape[-1] != self.dim:
            raise ValueError(f"{self.name} expects θ with last dimension {self.dim}, got shape {tuple(theta.shape)}")
        theta = theta.clamp(-self.theta_limit, self.theta_limit)
        a = theta @ self.basis.to(theta.device, theta.dtype).T
        return a.reshape(*theta.shape[:-1], self.num_cells, self.ndim, self.ndim + 1)

    # ---- cells and velocities ---------------------------------------------------------------
    def _cell_index(self, points: torch.Tensor) -> torch.Tensor:
        """The cell of each point [..., ndim] in [0, 1]ⁿ (points outside: the nearest cell)."""
        if self.ndim == 1:
            n = self.cells[0]
            return (points[..., 0] * n).floor().clamp(0, n - 1).long()
        return self._cell_index_2d(points[..., 0], points[..., 1])

    def _cell_index_2d(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nx, ny = self.cells
        sx, sy = x.detach() * nx, y.detach() * ny  # the cells are piecewise constant: no gradient
        i, j = sx.floor().clamp_(0, nx - 1), sy.floor().clamp_(0, ny - 1)
        dx, dy = sx.sub_(i).sub_(0.5), sy.sub_(j).sub_(0.5)  # from the square's centre, in units of its sides

        def indicator(test: Callable, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
            return test(a, b, out=torch.empty_like(a))  # 1.0 / 0.0, written as floats (bool tensors cost more)

        # 0: top (dy < 0), 1: right, 2: bottom, 3: left, split by the square's diagonals:
        # 1 + 2·left, or 2·below where |dy| ≥ |dx| (in place, on the CPU each op is a pass over the points)
        vertical = indicator(torch.ge, dy.abs(), dx.abs())
        triangle = indicator(torch.le, dx, 0.0).mul_(2).add_(1)
        triangle.addcmul_(vertical, indicator(torch.ge, dy, 0.0).mul_(2).sub_(triangle))
        return i.add_(j, alpha=nx).mul_(4).add_(triangle).long()

    def velocity(self, points: torch.Tensor, theta: torch.Tensor, cells: torch.Tensor | None = None) -> torch.Tensor:
        """v(x) at points [N, P, ndim] for θ [N, D] (each point in ``cells`` if given)."""
        A = self.cell_matrices(theta)  # [N, cells, ndim, ndim+1]
        c = self._cell_index(points) if cells is None else cells
        A_at = torch.gather(A, 1, c[..., None, None].expand(*c.shape, self.ndim, self.ndim + 1))
        homogeneous = torch.cat([points, torch.ones_like(points[..., :1])], -1)
        return (A_at @ homogeneous[..., None])[..., 0]

    # ---- integration ------------------------------------------------------------------------
    def transform_points(self, points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """T_θ(x) for points [N, P, ndim] in [0, 1]ⁿ and θ [N, D]."""
        if points.shape[-1] != self.ndim or points.dim() != 3 or theta.dim() != 2 or len(theta) != len(points):
            raise ValueError(f"{self.name}: expected points [N, P, {self.ndim}] and θ [N, {self.dim}], got "
                             f"{tuple(points.shape)} and {tuple(theta.shape)}")
        return self._integrate_1d(points, theta) if self.ndim == 1 else self._integrate_2d(points, theta)

    def _integrate_1d(self, points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        n = self.cells[0]
        A = self.cell_matrices(theta)[..., 0, :]  # [N, cells, 2]: v = a x + b
        x = points[..., 0]
        cell = self._cell_index(points)
        remaining = torch.ones_like(x)
        done = torch.zeros_like(x, dtype=torch.bool)
        for _ in range(n):
            ab = torch.gather(A, 1, cell[..., None].expand(*cell.shape, 2))
            a, b = ab[..., 0], ab[..., 1]
            v = a * x + b
            moving = v.abs() > STILL  # slower points stay put: they would move < 1e-7 in unit time
            v_safe = torch.where(moving, v, torch.ones_like(v))
            edge = torch.where(v > 0, cell + 1, cell).to(x.dtype) / n
            u = a * (edge - x) / v_safe  # v(edge) / v(x) − 1
            reaches = moving & (u > -1)  # the velocity keeps its sign up to the edge
            u_safe = torch.where(reaches, u, torch.zeros_like(u))
            t_edge = torch.where(reaches, (edge - x) / v_safe * _log1p_ratio(u_safe), torch.full_like(x, float("inf")))
            leaves = ~done & (t_edge < remaining)
            stays = ~done & ~leaves
            end = x + v * remaining * _phi(a * remaining)  # ψ(x, remaining), inside the cell
            x = torch.where(leaves, edge, torch.where(stays, end, x))
            remaining = torch.where(leaves, remaining - torch.where(leaves, t_edge, torch.zeros_like(t_edge)), remaining)
            cell = torch.where(leaves, torch.where(v > 0, cell + 1, cell - 1).clamp(0, n - 1), cell)
            done = done | stays
            if bool(done.all()):  # most points cross a few cells at most
                break
        return x[..., None]

    def _integrate_2d(self, points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        A = self.cell_matrices(theta)  # [N, cells, 2, 3]
        n, cells = A.shape[:2]
        # the step's flow map per (θ, cell), as six flat tables (m00, m01, m02, m10, m11, m12)
        step = torch.stack(_affine_exp(A.reshape(n * cells, 6).unbind(-1), 1.0 / self.steps), -1)  # [n·cells, 6]
        offset = torch.arange(n, device=points.device)[:, None] * cells
        x, y = _Steps2d.apply(step, points[..., 0], points[..., 1], offset, self)
        return torch.stack([x, y], -1)

    # ---- warping ----------------------------------------------------------------------------
    def grid(self, theta: torch.Tensor, size: list[int], align_corners: bool = False, inverse: bool = False) -> torch.Tensor:
        """Sampling grid for θ [N, D]: [N, H, W, 2] for images (``size`` [N, C, H, W]), as
        ``affine_grid``; [N, L] for signals (``size`` [N, C, L]), in the same [-1, 1] convention.
        ``inverse``: the grid of T_θ⁻¹ = T_{−θ}."""
        n = size[0]
        theta = -theta if inverse else theta
        if self.ndim == 2:
            identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=theta.dtype, device=theta.device)
            out = F.affine_grid(identity, [1, *size[1:]], align_corners=align_corners)  # [1, H, W, 2], shared
            moved = self.transform_points(((out.reshape(1, -1, 2) + 1) / 2).expand(n, -1, -1), theta)
            return (2 * moved - 1).reshape(n, *out.shape[1:])
        length = size[-1]
        line = signal_positions(length, align_corners, theta.dtype, theta.device)
        moved = self.transform_points(((line + 1) / 2).expand(n, length)[..., None], theta)
        return 2 * moved[..., 0] - 1


class _Steps2d(torch.autograd.Function):
    """The 2-D steps x ← M_c(x) (M_c: the step's flow map of the cell c the point is in), with the
    gradient written out rather than taped: autograd through the loop spent most of a warp on its
    gathers' and scatters' bookkeeping. Backward, step by step in reverse, each point adds
    (g_x x, g_x y, g_x, g_y x, g_y y, g_y) to its cell's column of ∂L/∂M (one ``index_add_``) and
    (g_x, g_y) ← M_cᵀ (g_x, g_y); the cells are piecewise constant in x, so they carry no gradient,
    as autograd would have it. Formulas and gradient are those of the taped loop (``tests/test_cpab.py``
    checks them against it in float64). Tables are read with ``index_select`` on flat indices, about
    4× faster on the CPU than advanced indexing."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, step: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                offset: torch.Tensor, family: CPAB) -> tuple[torch.Tensor, torch.Tensor]:
        columns = step.t().contiguous()  # [6, n·cells]: six tables
        ctx.trail = []  # (x, y, flat cell) before each step
        for step_index in range(family.steps):
            if step_index == 0 and x.stride(0) == 0 and y.stride(0) == 0:  # one grid for every image: cells once
                flat = (family._cell_index_2d(x[:1], y[:1]) + offset).reshape(-1)
            else:
                flat = (family._cell_index_2d(x, y) + offset).reshape(-1)
            m = [table.index_select(0, flat).view_as(x) for table in columns]
            ctx.trail.append((x, y, flat))
            x, y = m[2].addcmul(m[0], x).addcmul_(m[1], y), m[5].addcmul(m[3], x).addcmul_(m[4], y)
        ctx.save_for_backward(columns)
        return x, y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, gx: torch.Tensor, gy: torch.Tensor) -> tuple:
        (columns,) = ctx.saved_tensors
        grad = torch.zeros_like(columns)  # [6, n·cells]
        terms = gx.new_empty(6, *gx.shape)  # each point's ∂L/∂M at one step, added to its cell's in one call
        for x, y, flat in reversed(ctx.trail):
            torch.mul(gx, x, out=terms[0]), torch.mul(gx, y, out=terms[1]), terms[2].copy_(gx)
            torch.mul(gy, x, out=terms[3]), torch.mul(gy, y, out=terms[4]), terms[5].copy_(gy)
            grad.index_add_(1, flat, terms.view(6, -1))
            # M_c re-read rather than kept from the forward pass: less memory, and faster on the CPU
            m = [columns[row].index_select(0, flat).view_as(gx) for row in (0, 1, 3, 4)]
            gx, gy = (m[0] * gx).addcmul_(m[2], gy), (m[1] * gx).addcmul_(m[3], gy)
        del ctx.trail
        return grad.t(), gx, gy, None, None
