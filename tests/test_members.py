"""Stacked networks (issue 12): member r of a stack computes exactly what the ordinary network does."""
import pytest
import torch
import torch.nn as nn

from pyro_pstn.nets import Classifier, Localizer, mnist_cnn_classifier, mnist_pstn_localizer, mnist_stn_localizer
from pyro_pstn.nets.members import MemberLinear, VmapMembers, apply_members

R = 3


def _singles(make):
    nets = []
    for r in range(R):
        torch.manual_seed(100 + r)  # each member starts where a single run with its seed starts
        nets.append(make().double())
    return nets


@pytest.mark.parametrize("make", [mnist_cnn_classifier, mnist_stn_localizer,
                                  lambda: mnist_pstn_localizer("affine"), lambda: mnist_pstn_localizer("rotation")])
def test_member_r_of_a_stack_equals_the_single_network_through_three_adam_steps(make):
    singles = _singles(make)
    stacked = type(singles[0]).stack(singles)
    assert stacked.members == R and sum(p.numel() for p in stacked.parameters()) == R * sum(
        p.numel() for p in singles[0].parameters())
    for net in (stacked, *singles):
        net.eval()  # dropout off: the masks are the only randomness
    torch.manual_seed(0)
    samples = (2,) if isinstance(stacked, Classifier) else ()  # classifiers see sample dims, localizers x itself
    x = torch.randn(*samples, R, 5, 1, 28, 28, dtype=torch.float64)  # [*S, R, B, C, H, W]

    def outputs(net, images):
        out = net(images)
        return torch.cat([o for o in (out if isinstance(out, tuple) else (out,)) if o is not None], -1)

    opt_stacked = torch.optim.Adam(stacked.parameters(), lr=1e-2, weight_decay=0.01)
    opt_singles = [torch.optim.Adam(n.parameters(), lr=1e-2, weight_decay=0.01) for n in singles]
    for _ in range(3):
        out = outputs(stacked, x)  # [*S, R, B, out]
        alone = [outputs(net, x.select(-5, r)) for r, net in enumerate(singles)]
        for r in range(R):
            torch.testing.assert_close(out.select(-3, r), alone[r], rtol=0, atol=1e-12)
        opt_stacked.zero_grad()
        (out.sin().sum()).backward()  # the sum of the members' losses: each gets its own gradient
        opt_stacked.step()
        for net, opt, o in zip(singles, opt_singles, alone):
            opt.zero_grad()
            o.sin().sum().backward()
            opt.step()
    for r, net in enumerate(singles):
        for (name, p), q in zip(stacked.member(r).named_parameters(), net.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-10, msg=name)


def test_members_are_independent_and_identity_heads_start_every_member_at_the_identity():
    loc_net = mnist_pstn_localizer("similarity")
    stacked = Localizer.stack([loc_net] * R)
    loc, spread = stacked(torch.randn(R, 4, 1, 28, 28))
    assert loc.shape == (R, 4, 4) and spread.shape == (R, 4, 4)
    torch.testing.assert_close(loc, torch.tensor([0.0, 1.0, 0.0, 0.0]).expand(R, 4, 4))
    classifier = Classifier((10, 20), 50, members=R).eval()
    x = torch.randn(R, 4, 1, 28, 28)
    changed = x.clone()
    changed[1] += 1.0  # member 1's images only
    before, after = classifier(x), classifier(changed)
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2]) and not torch.equal(before[1], after[1])


def test_stack_and_member_reject_what_does_not_fit():
    with pytest.raises(ValueError, match="same arguments"):
        Classifier.stack([mnist_cnn_classifier(), Classifier((10, 20), 50)])
    with pytest.raises(ValueError, match="member 3 of a network with members=3"):
        Classifier((10, 20), 50, members=3).member(3)
    with pytest.raises(ValueError, match=r"expects images \[..., 3, B, C, H, W\]"):
        Classifier((10, 20), 50, members=3)(torch.randn(2, 4, 1, 28, 28))
    layer = MemberLinear(2, 3, 4)
    assert layer(torch.randn(2, 5, 3)).shape == (2, 5, 4)
    with pytest.raises(ValueError):
        apply_members(lambda h: h, lambda h: h, torch.randn(4, 1, 28, 28), members=2)


# ---- stacked models ---------------------------------------------------------------------------

from inference.engine import TrainConfig, Trainer  # noqa: E402
from inference.stacked import StackTrainer  # noqa: E402
from pyro_pstn.models import build_model  # noqa: E402
from pyro_pstn.models.stacked import Stacked  # noqa: E402

from .noise import Noise  # noqa: E402


class UsersNet(nn.Module):
    """A classifier of a user's, with no member layout: any module from [*S, B, 1, 28, 28] to logits."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 3, 5, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 10))

    def forward(self, x):
        return self.net(x.reshape(-1, *x.shape[-3:])).reshape(*x.shape[:-3], -1)


@pytest.mark.parametrize("name, elbo, users", [("cnn", "trace", False), ("stn", "trace", False), ("da", "trace", False),
                                               ("pstn", "trace", False), ("gamma_pstn", "trace", False),
                                               ("pstn", "meanfield", False), ("gamma_pstn", "meanfield", False),
                                               ("cnn", "trace", True), ("gamma_pstn", "trace", True),
                                               ("augerino", "trace", False)])
def test_member_r_of_a_stack_follows_its_single_run_through_three_engine_steps(name, elbo, users):
    """Issue 12: float64, the members' own draws replayed into the single runs; members differ in
    seed (initial weights), data, KL weight (member 0 has w = 0) and prior scale / rate. Each
    step is the engine's (Trainer.train_step vs StackTrainer.train_step: KL weight conversion,
    localizer learning rate, coupled weight decay, Adam). With the ``meanfield`` ELBO the KLs are
    analytic in both (TraceMeanField_ELBO alone vs the stack's MemberTraceMeanField_ELBO). ``users``:
    the classifier is a network of the user's, stacked by vmap (issue 34)."""
    kl_weights, scales = [0.0, 1e-3, 0.5], [0.05, 0.1, 0.3]
    singles, configs = [], []
    for r in range(R):
        torch.manual_seed(10 + r)
        extra = {"classifier": UsersNet()} if users else {}
        model = build_model(name, prior_scale=scales[r], gamma_rate=1.0 + r, **extra).double()
        model.classifier.eval()  # dropout off: its masks are not replayed
        singles.append(model)
        configs.append(TrainConfig(lr=1e-2, kl_weight=kl_weights[r], seed=r, elbo=elbo))
    stack = StackTrainer(Stacked.from_models([_copy(m) for m in singles]), configs)
    stack.model.base.classifier.eval()
    assert isinstance(stack.model.base.classifier, VmapMembers) == users
    trainers = [Trainer(m, c) for m, c in zip(singles, configs)]
    torch.manual_seed(0)
    x, y = torch.randn(R, 6, 1, 28, 28, dtype=torch.float64), torch.randint(10, (R, 6))
    noise = Noise()
    for _ in range(3):
        with noise.record():  # draws of shape [R, B, D]
            total = stack.train_step(x, y)
        alone = []
        for r, trainer in enumerate(trainers):
            with noise.replay(select=lambda draw: draw[r]):
                alone.append(trainer.train_step(x[r], y[r]))
        torch.testing.assert_close(stack._member_losses, torch.stack(alone), rtol=1e-12, atol=0)
        torch.testing.assert_close(total, sum(alone), rtol=1e-12, atol=0)
    for r, single in enumerate(singles):
        member = stack.model.member(r)
        assert member.kl_weight == pytest.approx(single.kl_weight, rel=1e-12)
        for (key, p), q in zip(member.named_parameters(), single.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-10, msg=f"member {r}: {key}")
        for (key, b), c in zip(member.named_buffers(), single.buffers()):
            torch.testing.assert_close(b, c, rtol=0, atol=0, msg=f"member {r}: {key}")


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_a_stacks_elbo_is_pyros_own_estimator_split_by_member(elbo):
    """The stack's loss is a subclass of Pyro's ELBO (Trace_ELBO / TraceMeanField_ELBO): for the same
    draws its member ELBOs sum to what Pyro's own estimator computes for the whole stack (float64)."""
    import pyro
    from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

    from inference.stacked import MEMBER_ELBOS

    torch.manual_seed(0)
    model = Stacked.from_models([build_model("gamma_pstn", gamma_rate=1.0 + r).double() for r in range(R)])
    model.base.classifier.eval()
    x, y = torch.randn(R, 5, 1, 28, 28, dtype=torch.float64), torch.randint(10, (R, 5))
    kl_weight = torch.tensor([[0.0], [1e-3], [0.5]], dtype=torch.float64)
    options = dict(num_particles=2, vectorize_particles=True, max_plate_nesting=2)
    stack_elbo = MEMBER_ELBOS[elbo](**options)
    assert isinstance(stack_elbo, {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[elbo])
    pyro.set_rng_seed(1)
    members = stack_elbo.member_elbos(model.model, model.guide, x, y, kl_weight=kl_weight)
    pyro.set_rng_seed(1)
    whole = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[elbo](**options).differentiable_loss(
        model.model, model.guide, x, y, kl_weight=kl_weight)
    assert members.shape == (R,)
    torch.testing.assert_close(-members.sum(), whole, rtol=1e-12, atol=0)


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_a_stack_of_networks_without_a_member_layout_refuses_batch_norm_and_bad_shapes():
    nets = [UsersNet() for _ in range(R)]
    stacked = VmapMembers(nets, event_dim=3)
    x = torch.randn(2, R, 4, 1, 28, 28)  # [S, R, B, C, H, W]
    torch.testing.assert_close(stacked(x)[:, 1], nets[1](x[:, 1]))
    with pytest.raises(ValueError, match=rf"members expects inputs \[..., {R}, B, …, …, …\]"):
        stacked(torch.randn(4, 1, 28, 28))
    with pytest.raises(ValueError, match="has batch norm"):
        VmapMembers([nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)) for _ in range(R)], event_dim=3)


def test_a_frozen_network_stays_frozen_in_a_stack():
    from pyro_pstn.nets import Frozen

    stacked = VmapMembers([Frozen(UsersNet()) for _ in range(R)], event_dim=3)
    params = list(stacked.parameters())
    assert params and not any(p.requires_grad for p in params)
    assert not any(p.requires_grad for p in stacked.member(0).parameters())
