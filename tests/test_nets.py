import pytest
import torch

from pyro_pstn.models import build_model
from pyro_pstn.nets import count_parameters, mnist_pstn_localizer, mnist_stn_localizer
from pyro_pstn.transforms import LAYOUTS


@pytest.mark.parametrize(
    "name, layout, expected",
    [
        ("cnn", "similarity", 28_086),
        ("stn", "similarity", 28_726),
        ("pstn", "similarity", 26_662),
        ("gamma_pstn", "similarity", 26_662),
        ("da", "similarity", 21_840),
        ("stn", "rotation", 27_859),
        ("gamma_pstn", "rotation", 25_312),
    ],
)
def test_parameter_counts_match_the_authors(name, layout, expected):
    assert count_parameters(build_model(name, layout=layout)) == expected


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("make", [mnist_stn_localizer, mnist_pstn_localizer])
def test_localizers_start_at_the_identity(layout, make):
    localizer = make(layout)
    loc, spread = localizer(torch.randn(5, 1, 28, 28))
    torch.testing.assert_close(loc, LAYOUTS[layout].identity_theta().expand(5, -1))
    if spread is not None:
        torch.testing.assert_close(spread, torch.nn.functional.softplus(torch.tensor(-5.0)).expand(5, LAYOUTS[layout].dim))


def test_classifier_accepts_sample_dims():
    model = build_model("pstn")
    x = torch.randn(3, 4, 1, 28, 28)
    model.eval()
    out = model.classifier(x)
    assert out.shape == (3, 4, 10)
    torch.testing.assert_close(out[1], model.classifier(x[1]))
