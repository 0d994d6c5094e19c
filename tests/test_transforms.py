import math

import pytest
import torch

from pyro_pstn.transforms import LAYOUTS, THETA_LIMIT, get_layout, warp


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


def test_heavy_tailed_theta_gives_no_nan():
    torch.manual_seed(1)
    theta = torch.distributions.StudentT(2.0, torch.tensor([0.0, 1, 0, 0]), 0.5).sample((2000,))
    theta[0] = torch.tensor([1e30, -1e30, 1e30, -1e30])
    assert theta.abs().max() > THETA_LIMIT
    out = warp(_image(1).expand(2000, 1, 12, 12), theta, "similarity", fill=-0.4)
    assert torch.isfinite(out).all()


def test_unknown_layout_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid layouts: rotation"):
        get_layout("shear")
    with pytest.raises(ValueError, match="last dimension 4"):
        get_layout("similarity").matrix(torch.zeros(2, 3))
