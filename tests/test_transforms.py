import math

import pytest
import torch

from pyro_pstn.transforms import EXP_LIMIT, LAYOUTS, THETA_LIMIT, ThinPlateSpline, get_layout, warp


def _image(batch=3, channels=1, size=12):
    torch.manual_seed(0)
    return torch.rand(batch, channels, size, size)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_identity_theta_reproduces_the_input(name):
    layout = LAYOUTS[name]
    x = _image()
    theta = layout.identity_theta().expand(3, layout.dim)
    torch.testing.assert_close(layout.matrix(theta), torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3))
    for align_corners in (False, True):
        out = warp(x, theta, layout, fill=-0.4242, align_corners=align_corners)
        torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_similarity_is_a_true_similarity():
    layout = get_layout("similarity")
    theta = torch.tensor([[0.7, 1.6, 0.1, -0.2], [-2.0, 0.5, 0.0, 0.3]])
    linear = layout.matrix(theta)[..., :2]
    s = theta[:, 1]
    torch.testing.assert_close(torch.linalg.det(linear), s**2)
    # A = s R: AᵀA = s² I (the authors' 2022 form fails this when φ ≠ 0 and s ≠ 1)
    torch.testing.assert_close(linear.transpose(-1, -2) @ linear, s[:, None, None] ** 2 * torch.eye(2).expand(2, 2, 2))


def test_the_authors_uai_form_scales_only_the_diagonal_and_is_named_in_full():
    # anchors.md §1.4: [[s cos φ, −sin φ, tx], [sin φ, s cos φ, ty]]; equal to s R(φ) only at s = 1 or φ = 0
    theta = torch.tensor([[0.7, 1.6, 0.1, -0.2], [0.0, 0.5, 0.2, 0.3], [0.4, 1.0, 0.0, 0.0]], dtype=torch.float64)
    A = get_layout("uai_similarity").matrix(theta)
    c, s = math.cos(0.7), math.sin(0.7)
    torch.testing.assert_close(A[0], torch.tensor([[1.6 * c, -s, 0.1], [s, 1.6 * c, -0.2]], dtype=torch.float64))
    torch.testing.assert_close(A[1:], get_layout("similarity").matrix(theta[1:]))
    assert not torch.allclose(A[0], get_layout("similarity").matrix(theta[:1])[0])
    assert get_layout(4).name == "similarity"  # the authors' --num_param 4 alias keeps meaning the true similarity


def test_rotation_only_is_orthogonal_and_rotates_by_phi():
    layout = get_layout(1)
    A = layout.matrix(torch.tensor([[math.pi / 2]]))
    torch.testing.assert_close(A, torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]]), atol=1e-6, rtol=0)
    # a quarter turn of a square image permutes pixels exactly
    x = _image(1, 1, 8)
    out = warp(x, torch.tensor([[math.pi / 2]]), layout, align_corners=False)
    torch.testing.assert_close(out, torch.rot90(x, k=1, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_affine5_and_full_layouts():
    theta5 = torch.tensor([[0.0, math.log(2.0), math.log(0.5), 0.1, 0.2]])
    torch.testing.assert_close(
        get_layout("affine5").matrix(theta5), torch.tensor([[[2.0, 0.0, 0.1], [0.0, 0.5, 0.2]]])
    )
    raw = torch.arange(6.0).reshape(1, 6)
    torch.testing.assert_close(get_layout(6).matrix(raw), raw.reshape(1, 2, 3))


def test_warp_accepts_leading_sample_dims_and_matches_a_loop():
    x = _image(4)
    theta = torch.randn(5, 4, 4) * 0.2 + get_layout("similarity").identity_theta()
    out = warp(x, theta, "similarity", fill=0.3)
    assert out.shape == (5, 4, 1, 12, 12)
    for s in range(5):
        torch.testing.assert_close(out[s], warp(x, theta[s], "similarity", fill=0.3))


def test_padding_uses_the_fill_value():
    x = torch.zeros(1, 1, 10, 10)
    far_away = torch.tensor([[5.0, 5.0]])  # translate the image entirely off the canvas
    out = warp(x, far_away, "translation", fill=-0.4242)
    torch.testing.assert_close(out, torch.full_like(x, -0.4242))


#: Every registered family, and TPS; a layout added to LAYOUTS is covered without touching this list.
ALL_FAMILIES = [*LAYOUTS, "tps"]
#: Finite extremes: float32's largest, overflowing exp(θ) and expm's scaling, and the limits' edges.
EXTREMES = torch.tensor([3e38, -3e38, 1e30, -1e30, 1e4, -1e4, THETA_LIMIT, 89.0, -89.0, EXP_LIMIT, 0.0])


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_any_finite_theta_gives_a_finite_warp_and_gradient(name):
    """Issue 11: Student-t₂ draws around θ_id (the Gamma P-STN's posterior with α0 = 1) and every
    combination of extreme coordinates, forward and (affine families) inverse warps; before the
    per-coordinate bounds, 10⁶ draws gave 46 (affine5), 17 (lie_similarity) and 72 (lie_affine)
    non-finite images and gradients. Checked once by hand with 10⁶ draws per family: none."""
    layout = get_layout(name)
    torch.manual_seed(0)
    heavy = torch.distributions.StudentT(2.0, layout.identity_theta(), 0.5).sample((5000,))
    signs = 2.0 * torch.randint(0, 2, (2000, layout.dim)) - 1
    extreme = EXTREMES[torch.randint(len(EXTREMES), (2000, layout.dim))] * signs
    theta = torch.cat([heavy, extreme, EXTREMES[:, None].expand(-1, layout.dim)]).requires_grad_()
    x = _image(1, size=28)
    out = warp(x, theta, layout, fill=-0.4)
    if hasattr(layout, "inverse_matrix"):
        out = out + warp(x, theta, layout, fill=-0.4, inverse=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(theta.grad).all()


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_bounds_leave_ordinary_theta_alone_and_clamp_only_beyond_them(name):
    layout = get_layout(name)
    torch.manual_seed(0)
    theta = layout.identity_theta() + 0.5 * torch.randn(100, layout.dim)
    assert torch.equal(layout.clamp(theta), theta)
    limits = torch.tensor(layout.limits or (THETA_LIMIT,) * layout.dim)
    assert (limits >= 3.0).all()  # well beyond any range a model uses (Lie layouts: [−1, 1])
    assert torch.equal(layout.matrix(theta * 1e9), layout.matrix(layout.clamp(theta * 1e9)))
    assert (layout.clamp(theta * 1e9).abs() <= limits).all()


def test_unknown_layout_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid layouts: rotation"):
        get_layout("shear")
    with pytest.raises(ValueError, match="last dimension 4"):
        get_layout("similarity").matrix(torch.zeros(2, 3))


# ---- thin-plate splines and inverse warps (paper 002) ----------------------------------------


@pytest.mark.parametrize("name", ["tps", "tps4"])
def test_tps_with_zero_offsets_is_the_identity(name):
    tps = get_layout(name)
    assert tps.dim == {"tps": 18, "tps4": 32}[name] and isinstance(tps, ThinPlateSpline)
    x = _image(batch=2, size=14)
    for align_corners in (False, True):
        out = warp(x, tps.identity_theta().expand(2, tps.dim), tps, fill=-0.3, align_corners=align_corners)
        torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_tps_interpolates_its_control_points_and_reproduces_affine_maps():
    tps = ThinPlateSpline(3)
    c = tps.control_points.float()
    # offsets that move each control point by an affine map are reproduced everywhere
    A = torch.tensor([[1.1, -0.2], [0.15, 0.9]])
    b = torch.tensor([0.05, -0.1])
    theta = ((c @ A.T + b) - c).reshape(1, -1)
    grid = tps.grid(theta, [1, 1, 9, 9], align_corners=True)
    affine = torch.nn.functional.affine_grid(torch.cat([A, b[:, None]], 1)[None], [1, 1, 9, 9], align_corners=True)
    torch.testing.assert_close(grid, affine, atol=1e-5, rtol=0)
    # a non-affine move: the grid passes through the displaced control points (here grid nodes)
    theta = torch.randn(1, 18) * 0.1
    grid = tps.grid(theta, [1, 1, 9, 9], align_corners=True)
    at_controls = grid[0, ::4, ::4].reshape(-1, 2)
    torch.testing.assert_close(at_controls, c + theta.reshape(-1, 2), atol=1e-5, rtol=0)


def test_tps_rejects_a_wrong_number_of_offsets():
    with pytest.raises(ValueError, match="18"):
        warp(_image(), torch.zeros(3, 6), "tps")
    with pytest.raises(ValueError, match="valid layouts"):
        get_layout("spline")


@pytest.mark.parametrize("name", ["similarity", "affine5", "affine"])
def test_inverse_warp_undoes_a_warp(name):
    layout = get_layout(name)
    torch.manual_seed(1)
    theta = layout.identity_theta() + 0.1 * torch.randn(4, layout.dim)
    inv = layout.inverse_matrix(theta)
    A = layout.matrix(theta)
    square = lambda m: torch.cat([m, torch.tensor([0.0, 0, 1]).expand(*m.shape[:-2], 1, 3)], -2)  # noqa: E731
    torch.testing.assert_close(square(A) @ square(inv), torch.eye(3).expand(4, 3, 3), atol=1e-5, rtol=0)
    # a smooth image, warped and un-warped, is back where the frame kept it (the centre)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x = torch.exp(-4 * (xx**2 + yy**2)).expand(4, 1, 32, 32)
    back = warp(warp(x, theta, layout), theta, layout, inverse=True)
    torch.testing.assert_close(back[..., 12:20, 12:20], x[..., 12:20, 12:20], atol=0.02, rtol=0)


def test_tps_has_no_inverse_warp():
    with pytest.raises(ValueError, match="inverse"):
        warp(_image(), torch.zeros(3, 18), "tps", inverse=True)
