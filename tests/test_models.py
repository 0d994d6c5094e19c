import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample

from pyro_pstn.models import MODEL_NAMES, GammaPSTN, build_model, check_images, draw
from pyro_pstn.nets import mnist_pstn_localizer, mnist_stn_classifier
from pyro_pstn.priors import GammaPrior, NormalPrior

B, K = 6, 10


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(B, 1, 28, 28, generator=g), torch.randint(0, K, (B,), generator=g)


def _model(name, **kwargs):
    m = build_model(name, fill=-0.4242, **kwargs)
    if m.localizer is not None:  # move away from the identity initialisation so μ(x), σ(x) vary by image
        with torch.no_grad():
            for p in m.localizer.parameters():
                p.add_(0.02 * torch.randn_like(p))
    m.eval()  # no dropout: the hand-written formulas below are deterministic given θ
    return m


def _traces(m, x, y, particles=None):
    ctx = pyro.plate("particles", particles, dim=-2) if particles else poutine.messenger.Messenger()
    with ctx:
        guide_trace = poutine.trace(m.guide).get_trace(x, y)
        model_trace = poutine.trace(poutine.replay(m.model, trace=guide_trace)).get_trace(x, y)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return guide_trace, model_trace


EXPECTED_LATENTS = {"cnn": {}, "stn": {}, "da": {"theta": 4}, "pstn": {"theta": 4}, "gamma_pstn": {"lambda": 4, "theta": 4},
                    "flow_pstn": {"theta": 4}, "augerino": {"theta": 6}}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("particles", [None, 3])
def test_trace_shapes_guide_replayed_into_model(name, particles):
    x, y = _batch()
    m = _model(name)
    guide_trace, model_trace = _traces(m, x, y, particles)
    lead = (particles, B) if particles else (B,)
    latents = EXPECTED_LATENTS[name]
    sampled = {n for n, s in guide_trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}
    assert sampled == set(latents)
    for site, dim in latents.items():
        for tr in (guide_trace, model_trace):
            assert tr.nodes[site]["value"].shape == (*lead, dim)
            assert tr.nodes[site]["log_prob"].shape == lead
        torch.testing.assert_close(model_trace.nodes[site]["value"], guide_trace.nodes[site]["value"])
    assert model_trace.nodes["y"]["log_prob"].shape == lead
    assert model_trace.nodes["_RETURN"]["value"].shape == ((*lead, K) if latents else (B, K))
    if name == "stn":
        assert model_trace.nodes["theta"]["value"].shape == (B, 4)


def _log_normal(v, loc, scale):
    return -0.5 * ((v - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


@torch.no_grad()
def _log_lik(m, x, y, theta):
    logits = m.classifier(m.transform(x, theta))
    return torch.log_softmax(logits, -1).gather(-1, y[:, None]).squeeze(-1)


def _loss_and_guide_draws(elbo, m, x, y, seed):
    """The ELBO loss, and the guide's draws that the loss used (same seed, the guide runs first)."""
    pyro.set_rng_seed(seed)
    loss = elbo.loss(m.model, m.guide, x, y)
    pyro.set_rng_seed(seed)
    nodes = poutine.trace(m.guide).get_trace(x, y).nodes
    return loss, {name: nodes[name]["value"] for name in m.latent_sites}


@torch.no_grad()
def _pstn_elbo_by_hand(m, x, y, theta):
    """Σ_i log p(y_i | T_θi(x_i)) + w (log N(θ_i | θ_id, σ_p²) − log N(θ_i | μ(x_i), σ(x_i)²))."""
    mu, sigma = m.localizer(x)
    prior_loc = torch.tensor([0.0, 1.0, 0.0, 0.0])
    log_p = _log_normal(theta, prior_loc, torch.tensor(0.2)).sum(-1)
    log_q = _log_normal(theta, mu, sigma).sum(-1)
    return (_log_lik(m, x, y, theta) + m.kl_weight * (log_p - log_q)).sum()


def test_pstn_elbo_equals_the_hand_written_formula():
    x, y = _batch()
    m = _model("pstn", prior_scale=0.2)
    m.kl_weight = 0.37
    loss, draws = _loss_and_guide_draws(Trace_ELBO(max_plate_nesting=1), m, x, y, seed=11)
    theta = draws["theta"]
    assert loss == pytest.approx(-float(_pstn_elbo_by_hand(m, x, y, theta)), rel=1e-5)


def _kl_gamma(a_q, b_q, a_p, b_p):
    """KL(Gamma(a_q, b_q) ‖ Gamma(a_p, b_p)), rate parameterisation, written out."""
    return (
        (a_q - a_p) * torch.digamma(a_q)
        - torch.lgamma(a_q)
        + torch.lgamma(a_p)
        + a_p * (torch.log(b_q) - torch.log(b_p))
        + a_q * (b_p - b_q) / b_q
    )


@pytest.mark.parametrize("alpha0, beta0", [(1.0, 1.0), (2.0, 0.5)])
def test_gamma_pstn_meanfield_elbo_equals_the_analytic_formula(alpha0, beta0):
    """ELBO = Σ_i log p(y_i | T_θi(x_i)) − w Σ_{i,d} KL(Gamma(α0, β_d(x_i)) ‖ Gamma(α0, β0))  (paper 001 eq. 17)."""
    x, y = _batch()
    m = _model("gamma_pstn", gamma_concentration=alpha0, gamma_rate=beta0)
    m.kl_weight = 1e-3 / 4
    loss, draws = _loss_and_guide_draws(TraceMeanField_ELBO(max_plate_nesting=1), m, x, y, seed=5)
    theta = draws["theta"]
    _, beta = m.localizer(x)
    a0, b0 = torch.tensor(alpha0), torch.tensor(beta0)
    elbo = _log_lik(m, x, y, theta).sum() - m.kl_weight * _kl_gamma(a0, beta, a0, b0).sum()
    assert loss == pytest.approx(-float(elbo.detach()), rel=1e-5)


def test_gamma_pstn_trace_elbo_theta_terms_cancel():
    """With Trace_ELBO the θ | λ terms of model and guide cancel exactly; λ's are Monte Carlo."""
    x, y = _batch()
    m = _model("gamma_pstn")
    m.kl_weight = 0.5
    loss, draws = _loss_and_guide_draws(Trace_ELBO(max_plate_nesting=1), m, x, y, seed=8)
    lam, theta = draws["lambda"], draws["theta"]
    _, beta = m.localizer(x)
    log_p_lam = (-lam).sum(-1)  # Gamma(1, 1): log p = −λ
    log_q_lam = (torch.log(beta) - beta * lam).sum(-1)  # Gamma(1, β): log q = log β − βλ
    elbo = (_log_lik(m, x, y, theta) + m.kl_weight * (log_p_lam - log_q_lam)).sum()
    assert loss == pytest.approx(-float(elbo.detach()), rel=1e-5)


def test_vectorised_particles_agree_with_a_loop_over_samples():
    x, y = _batch()
    m = _model("pstn", prior_scale=0.2)
    m.kl_weight = 1.0
    S = 4
    pyro.set_rng_seed(21)
    loss = Trace_ELBO(num_particles=S, vectorize_particles=True, max_plate_nesting=1).loss(m.model, m.guide, x, y)
    pyro.set_rng_seed(21)
    with pyro.plate("num_particles_vectorized", S, dim=-2):
        theta = poutine.trace(m.guide).get_trace(x, y).nodes["theta"]["value"]
    assert theta.shape == (S, B, 4)
    looped = sum(float(_pstn_elbo_by_hand(m, x, y, theta[s])) for s in range(S)) / S
    assert loss == pytest.approx(-looped, rel=1e-5)


def test_gamma_posterior_is_student_t():
    """Guide draws of θ follow t_{2α0}(μ(x), sqrt(β(x)/α0)) (paper 001 eq. 14): a KS check."""
    from scipy import stats

    x, _ = _batch()
    m = _model("gamma_pstn", gamma_concentration=3.0)
    draws = draw(m.model, m.guide, x[:1], 20000, sites=("theta",))["theta"][:, 0, 0].double().numpy()
    with torch.no_grad():
        t = m.student_t(x[:1]).base_dist
    ks = stats.kstest(draws, stats.t(df=6.0, loc=float(t.loc[0, 0]), scale=float(t.scale[0, 0])).cdf)
    assert ks.statistic < 0.015


def test_priors_are_swapped_by_a_constructor_argument():
    prior = GammaPrior(dim=4, concentration=5.0, rate=2.0)
    m = GammaPSTN(mnist_stn_classifier(), mnist_pstn_localizer(), prior)
    x, y = _batch()
    _, model_trace = _traces(m, x, y)
    fn = model_trace.nodes["lambda"]["fn"]
    torch.testing.assert_close(fn.base_dist.concentration, torch.full((B, 4), 5.0))
    with pytest.raises(ValueError, match="positive"):
        NormalPrior(torch.zeros(4), -1.0)


def test_da_predicts_at_the_identity_unless_asked_for_test_time_augmentation():
    x, y = _batch()
    m = _model("da", prior_scale=0.3)
    at_id = draw(m.predictive_model(), m.guide, x, 3, sites=("logits",))["logits"]
    plain = m.classifier(x)
    torch.testing.assert_close(at_id, plain.expand(3, B, K), atol=1e-5, rtol=0)
    m.test_time_augmentation = True
    tta = draw(m.predictive_model(), m.guide, x, 3, sites=("logits",))["logits"]
    assert not torch.allclose(tta[0], tta[1])


def test_bad_inputs_get_clear_errors():
    x, y = _batch()
    with pytest.raises(ValueError, match=r"\[batch, channels, height, width\]"):
        check_images(x[0])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        check_images(bad)
    with pytest.raises(ValueError, match="labels must have shape"):
        check_images(x, y[:3])
    with pytest.raises(ValueError, match="0..9"):
        check_images(x, y + 10, num_classes=10)
    with pytest.raises(ValueError, match="valid models: cnn, stn, da, pstn, gamma_pstn"):
        build_model("vit")


def test_zero_kl_weight_leaves_only_the_likelihood():
    x, y = _batch()
    m = _model("pstn")
    m.kl_weight = 0.0
    loss, draws = _loss_and_guide_draws(Trace_ELBO(max_plate_nesting=1), m, x, y, seed=2)
    theta = draws["theta"]
    assert loss == pytest.approx(-float(_log_lik(m, x, y, theta).sum()), rel=1e-5)
