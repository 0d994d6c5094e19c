"""CPAB diffeomorphisms and the affine time warp (issue 13): pyro_pstn/transforms/cpab.py, time_affine.py."""
import pytest
import torch
import torch.nn.functional as F

from pyro_pstn.transforms import CPAB, get_layout, warp

FAMILIES = {"cpab1d": 9, "cpab": 34}


@pytest.mark.parametrize("name", FAMILIES)
def test_libcpab_dimensions_and_an_orthonormal_basis_of_the_constraints_null_space(name):
    T = get_layout(name)
    assert T.dim == FAMILIES[name] and get_layout(name) is T  # one instance: its basis is computed once
    B = T.basis
    torch.testing.assert_close(B.T @ B, torch.eye(T.dim, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (T.constraints @ B).abs().max() < 1e-12


def _faces(T):
    """(cell, other cell or None, points on the face) for every face of the tessellation."""
    faces = {}
    for c, verts in enumerate(T.vertices):
        pairs = [(v,) for v in verts] if T.ndim == 1 else [(verts[k], verts[(k + 1) % 3]) for k in range(3)]
        for face in pairs:
            faces.setdefault(tuple(sorted(tuple(round(float(x), 9) for x in p) for p in face)), []).append(c)
    out = []
    for face, cells in faces.items():
        ends = torch.tensor(face, dtype=torch.float64)
        points = torch.stack([ends[0] + s * (ends[-1] - ends[0]) for s in (0.0, 0.3, 0.5, 1.0)])
        out.append((cells[0], cells[1] if len(cells) > 1 else None, points))
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_the_velocity_field_is_continuous_across_every_shared_face_and_tangent_on_the_boundary(name):
    T = get_layout(name)
    theta = torch.randn(3, T.dim, dtype=torch.float64)
    shared = boundary = 0
    for cell, other, points in _faces(T):
        pts = points.expand(3, *points.shape)
        v = T.velocity(pts, theta, cells=torch.full(pts.shape[:2], cell))
        if other is not None:
            torch.testing.assert_close(v, T.velocity(pts, theta, cells=torch.full(pts.shape[:2], other)),
                                       rtol=0, atol=1e-12)
            shared += 1
        else:  # the component normal to the boundary is zero on it
            normal = [d for d in range(T.ndim) if torch.all(points[:, d] == points[0, d])]
            assert len(normal) == 1 and float(points[0, normal[0]]) in (0.0, 1.0)
            assert v[..., normal[0]].abs().max() < 1e-12
            boundary += 1
    # 2-D: 4 centre-to-corner edges in each of 9 squares, 12 edges between squares; 12 on the boundary
    assert (shared, boundary) == ((9, 2) if name == "cpab1d" else (48, 12))
    assert T.velocity(torch.rand(3, 5, T.ndim, dtype=torch.float64), theta).abs().max() > 1e-3  # not trivially 0


def _pixel_points(n, height=28):
    identity = torch.eye(2, 3, dtype=torch.float64).expand(n, 2, 3)
    return (F.affine_grid(identity, [n, 1, height, height], align_corners=False).reshape(n, -1, 2) + 1) / 2


@pytest.mark.parametrize("name", FAMILIES)
def test_theta_zero_is_the_identity_and_minus_theta_the_inverse(name):
    T = get_layout(name)
    torch.manual_seed(0)
    x = torch.randn(4, 2, *((50,) if T.ndim == 1 else (28, 28)), dtype=torch.float64)
    torch.testing.assert_close(warp(x, torch.zeros(4, T.dim, dtype=torch.float64), T), x, rtol=0, atol=1e-12)
    points = torch.rand(4, 300, 1, dtype=torch.float64) if T.ndim == 1 else _pixel_points(4)
    theta = (1.0 if T.ndim == 1 else 0.5) * torch.randn(4, T.dim, dtype=torch.float64)
    moved = T.transform_points(points, theta)
    assert (moved - points).abs().max() > 0.02  # a real warp
    back = T.transform_points(moved, -theta)
    # 1-D integrates exactly; 2-D's 10 steps leave about 1e-3 of the 28 px frame
    assert (back - points).abs().max() < (1e-12 if T.ndim == 1 else 1e-3)
    if T.ndim == 1:  # a diffeomorphism of [0, 1]: increasing, ends fixed
        line = torch.linspace(0, 1, 500, dtype=torch.float64).expand(4, 500)[..., None]
        out = T.transform_points(line, 3 * theta)[..., 0]
        assert (out.diff(dim=-1) > 0).all() and (out[:, [0, -1]] - line[:, [0, -1], 0]).abs().max() < 1e-12


def test_one_dimensional_integration_passes_gradcheck_in_float64():
    T = get_layout("cpab1d")
    torch.manual_seed(1)
    points = torch.rand(3, 40, 1, dtype=torch.float64)
    theta = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    moved = T.transform_points(points, theta.detach())
    crossed = (T._cell_index(moved) != T._cell_index(points)).sum()
    assert crossed > 10  # points that cross cells: the exit-time formulas are on the gradient's path
    assert torch.autograd.gradcheck(lambda t: T.transform_points(points, t), (theta,))


def test_two_dimensional_steps_against_a_fine_float64_reference():
    """At θ ~ N(0, 0.5²) (displacements up to about 6 px on 28 px), 10 steps err by < 0.07 px
    against 500 float64 steps (whose own error is ~(10/500)² of that); the module docstring's
    table (80 draws against 2000 steps) has 0.045 px."""
    torch.manual_seed(0)
    points, theta = _pixel_points(16), 0.5 * torch.randn(16, 34, dtype=torch.float64)
    reference = CPAB(2, (3, 3), steps=500).transform_points(points, theta)
    error = (get_layout("cpab").transform_points(points, theta) - reference).norm(dim=-1).max() * 28
    assert 0.005 < error < 0.07 and (reference - points).norm(dim=-1).max() * 28 > 3


def test_two_dimensional_steps_and_their_written_out_gradient_equal_the_taped_loop():
    """Float64: the stepped 2-D flow (forward, and the backward written by hand for speed) equals the
    plain loop autograd differentiates (same cells, same maps), for θ and for the points; and the
    cell of a point, computed in float arithmetic, is the one the comparisons of the definition give,
    on the square's diagonals and centre lines too."""
    from pyro_pstn.transforms.cpab import _affine_exp

    T = get_layout("cpab")
    torch.manual_seed(3)
    points = (_pixel_points(6) + 0.01 * torch.randn(6, 784, 2, dtype=torch.float64)).requires_grad_()
    theta = (0.8 * torch.randn(6, 34, dtype=torch.float64)).requires_grad_()

    def taped(points, theta):
        A = T.cell_matrices(theta)
        n, cells = A.shape[:2]
        step = _affine_exp(A.reshape(n * cells, 6).unbind(-1), 1.0 / T.steps)
        offset = torch.arange(n)[:, None] * cells
        x, y = points[..., 0], points[..., 1]
        for _ in range(T.steps):
            m = [table[T._cell_index_2d(x, y) + offset] for table in step]
            x, y = m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]
        return torch.stack([x, y], -1)

    weights = torch.randn(6, 784, 2, dtype=torch.float64)
    ours, reference = T.transform_points(points, theta), taped(points, theta)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13)
    grads = torch.autograd.grad((ours * weights).sum(), (points, theta))
    expected = torch.autograd.grad((reference * weights).sum(), (points, theta))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    shared = points[:1].detach().expand(6, -1, -1)  # one grid for every image, as warp passes it
    torch.testing.assert_close(T.transform_points(shared, theta), T.transform_points(shared.contiguous(), theta),
                               rtol=0, atol=0)
    x, y = torch.rand(4000, dtype=torch.float64), torch.rand(4000, dtype=torch.float64)
    x[:1000] = y[:1000]  # on a diagonal of the squares
    x[1000:1500] = 0.5  # on a centre line
    i, j = (x * 3).floor().clamp(0, 2), (y * 3).floor().clamp(0, 2)
    dx, dy = x * 3 - i - 0.5, y * 3 - j - 0.5
    definition = (4 * (j * 3 + i)).long() + torch.where(dy.abs() >= dx.abs(), 2 * (dy >= 0), 1 + 2 * (dx <= 0))
    assert torch.equal(T._cell_index_2d(x, y), definition)


@pytest.mark.parametrize("name", [*FAMILIES, "time_affine"])
def test_heavy_tailed_and_extreme_theta_give_finite_warps_and_gradients(name):
    T = get_layout(name)
    torch.manual_seed(2)
    student = torch.distributions.StudentT(2.0, 0.0, 1.0).sample((256, T.dim))
    extreme = torch.tensor([1e6, -1e6, 1e30, -1e30])[torch.randint(4, (16, T.dim))]
    for draws in (student, extreme):
        theta = draws.clone().requires_grad_()
        x = torch.randn(len(theta), 1, *((131,) if T.ndim == 1 else (28, 28)))
        out = warp(x, theta, T, fill=-0.42)
        out.square().sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(theta.grad).all()


def test_signals_warp_with_sample_dims_and_bad_shapes_say_what_is_expected():
    x = torch.randn(5, 3, 64)  # [B, C, L]
    theta = torch.randn(2, 5, 9)  # [S, B, D]
    assert warp(x, theta, "cpab1d").shape == (2, 5, 3, 64)
    with pytest.raises(ValueError, match=r"cpab1d warps signals \[..., C, L\] with a batch dimension"):
        warp(torch.randn(64), torch.zeros(9), "cpab1d")
    with pytest.raises(ValueError, match="cpab expects θ with last dimension 34"):
        warp(torch.randn(2, 1, 28, 28), torch.zeros(2, 6), "cpab")
    with pytest.raises(ValueError, match="cpab1d.*time_affine"):
        get_layout("cpab3")


def test_the_affine_time_warp_shifts_and_scales_the_time_axis():
    t = torch.linspace(-1, 1, 101, dtype=torch.float64)
    x = t[None, None] ** 3 + t[None, None]  # [1, 1, L], smooth and increasing
    shift = torch.tensor([[0.0, 0.1]], dtype=torch.float64)
    shifted = warp(x, shift, "time_affine", align_corners=True)
    inside = (t > -0.85) & (t < 0.85)
    torch.testing.assert_close(shifted[0, 0, inside], ((t + 0.1) ** 3 + t + 0.1)[inside], rtol=0, atol=2e-3)
    theta = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    back = warp(warp(x, theta, "time_affine", align_corners=True), theta, "time_affine", align_corners=True,
                inverse=True)
    middle = t.abs() < 0.5
    torch.testing.assert_close(back[0, 0, middle], x[0, 0, middle], rtol=0, atol=2e-3)
    torch.testing.assert_close(warp(x, torch.zeros(1, 2, dtype=torch.float64), "time_affine"), x, rtol=0, atol=1e-12)
