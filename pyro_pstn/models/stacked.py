"""Stacked runs: R independent fits of one model in one Pyro model (issue 12).

The members may differ in data (fold), seed, KL weight w and prior (σ_p, σ_DA, α0, β0); they
share the architecture and layout. The generative story is the single model's, R times:

    for r in members:                     (pyro.plate("members", R), dim −2)
        for i in data:                    (pyro.plate("data", B),    dim −1)
            θ_ri ~ p_r(θ),  y_ri ~ Cat(f_r(T_θ_ri(x_ri)))

so the ELBO is the sum of the members' ELBOs and each member's gradient is the one it would get
alone: Adam and coupled weight decay are elementwise, so member r follows its single run's path
given the same random draws. Images are ``[R, B, C, H, W]``, labels ``[R, B]``; the networks
carry a member dimension (:mod:`pyro_pstn.nets.members`: the papers' networks their member layout,
any other network :class:`~pyro_pstn.nets.members.VmapMembers`), the priors' tensors a leading
``[R, 1]``, the KL weight is a tensor ``[R, 1]``. ``member(r)`` is an ordinary model again, so
prediction, metrics and run directories are the single run's.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import pyro
import torch
import torch.nn as nn
from pyro.nn import PyroModule

from ..nets.members import Stackable, VmapMembers
from .base import TransformClassifier


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*module.named_buffers(), *module.named_parameters()]


def _set(module: nn.Module, name: str, value: torch.Tensor, parameter: bool) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(module.get_submodule(owner) if owner else module, attr, nn.Parameter(value) if parameter else value)


def _stack_state(modules: list[nn.Module]) -> nn.Module:
    """A copy of ``modules[0]`` whose buffers and parameters are the members' stacked, ``[R, 1, ...]``
    (a prior's buffers; the learned box of Augerino's ranges)."""
    stacked = copy.deepcopy(modules[0])
    for name, value in _tensors(modules[0]):
        values = torch.stack([m.get_parameter(name) if isinstance(value, nn.Parameter) else m.get_buffer(name)
                              for m in modules]).unsqueeze(1)
        _set(stacked, name, values.detach().clone(), isinstance(value, nn.Parameter))
    return stacked


def _member_state(stacked: nn.Module, r: int) -> nn.Module:
    single = copy.deepcopy(stacked)
    for name, value in _tensors(stacked):
        _set(single, name, value.detach()[r, 0].clone(), isinstance(value, nn.Parameter))
    return single


def _copy(model: TransformClassifier) -> TransformClassifier:
    """A deep copy, without the μ(x) a Gamma P-STN's guide leaves for its model (a transient tensor)."""
    if not hasattr(model, "guide_loc"):
        return copy.deepcopy(model)
    shared, model.guide_loc = model.guide_loc, None
    try:
        return copy.deepcopy(model)
    finally:
        model.guide_loc = shared


#: The models that stack (flow_pstn's embedder and flow do not yet).
STACKABLE_MODELS = ("cnn", "stn", "da", "pstn", "gamma_pstn", "augerino")

#: The parts of a TransformClassifier that hold one run's state: networks (stacked by their
#: ``stack`` class method, else by vmap) and small modules of tensors (priors; Augerino's learned
#: box), stacked tensor by tensor.
_NETWORKS, _STATE = ("classifier", "localizer"), ("prior", "box")


class Stacked(PyroModule):
    """R runs of one :class:`TransformClassifier` subclass, trained together; see the module docstring.

    Build it from R ordinary models (each initialised as its single run would be, e.g. under its
    own seed) with :meth:`from_models`; ``kl_weights`` are the members' weights in Pyro's
    convention (what :func:`inference.engine.model_kl_weight` gives for each member's w).
    """

    def __init__(self, base: TransformClassifier, members: int):
        super().__init__()
        self.base = base
        self.members = members

    @classmethod
    def from_models(cls, models: list[TransformClassifier], vmap: bool = False) -> "Stacked":
        """The stack of ``models``; ``vmap``: every network through :class:`VmapMembers`, even those with a
        member layout (to measure one against the other)."""
        first = models[0]
        if len({type(m) for m in models}) != 1 or any(
                getattr(m.layout, "name", None) != getattr(first.layout, "name", None) for m in models):
            raise ValueError("the members of a stack must be one model class with one layout")
        unsupported = [name for name, _ in first.named_children() if name not in _NETWORKS + _STATE]
        if unsupported:
            raise ValueError(f"{type(first).__name__} cannot be stacked yet: no member layout for {unsupported}")
        base = _copy(first)
        for name in _NETWORKS:
            net = getattr(first, name)
            if net is None:
                continue
            nets = [getattr(m, name) for m in models]
            # a member layout where the network has one (grouped convolutions: fast), else vmap
            layout = isinstance(net, Stackable) and not vmap
            setattr(base, name, type(net).stack(nets) if layout else VmapMembers(nets, first.event_dim))
        for name in _STATE:
            if isinstance(getattr(first, name, None), nn.Module):
                setattr(base, name, _stack_state([getattr(m, name) for m in models]))
        like = next(first.parameters())
        base.kl_weight = torch.tensor([[float(m.kl_weight)] for m in models], dtype=like.dtype, device=like.device)
        return cls(base, len(models))

    @property
    def localizer(self) -> nn.Module | None:
        """The stacked localizer (its parameters get the localizer's learning rate)."""
        return self.base.localizer

    def localizer_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters trained at the localizer's learning rate (``localizer_lr_mult``)."""
        return iter(()) if self.localizer is None else self.localizer.parameters()

    def undecayed_parameters(self) -> Iterator[nn.Parameter]:
        return self.base.undecayed_parameters()

    @property
    def kl_weight(self) -> torch.Tensor:
        return self.base.kl_weight

    @kl_weight.setter
    def kl_weight(self, value: float) -> None:
        """One weight per member (``[R]`` or ``[R, 1]``), or one for all."""
        like = self.base.kl_weight
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        self.base.kl_weight = value.reshape(-1, 1).expand(self.members, 1).clone()

    def member(self, r: int) -> TransformClassifier:
        """Member r as an ordinary model (its networks, prior and KL weight)."""
        if not 0 <= r < self.members:
            raise ValueError(f"member {r} of a stack of {self.members}")
        single = _copy(self.base)
        for name in _NETWORKS:
            net = getattr(self.base, name)
            if net is not None:
                setattr(single, name, net.member(r))
        for name in _STATE:
            if isinstance(getattr(self.base, name, None), nn.Module):
                setattr(single, name, _member_state(getattr(self.base, name), r))
        single.kl_weight = float(self.base.kl_weight[r, 0])
        return single.train(self.training)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, **schedule) -> torch.Tensor | None:
        """The base model under the member plate; ``schedule`` (its ``kl_weight`` a tensor [R, 1],
        one per member) goes to it as it is."""
        with pyro.plate("members", self.members, dim=-2):
            return self.base.model(x, y, **schedule)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, **schedule) -> torch.Tensor | None:
        with pyro.plate("members", self.members, dim=-2):
            return self.base.guide(x, y, **schedule)
