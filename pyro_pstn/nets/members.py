"""Members: R independent copies of a network evaluated in one call (stacked runs).

A network built with ``members=R`` holds R sets of weights. It takes images
``[*S, R, B, C, H, W]`` (a member dimension in front of the batch, inside any sample dims) and
returns ``[*S, R, B, ...]``: member r sees only its own images and uses only its own weights, so R
runs (folds, seeds, KL weights) train in one step (``../shared/reference/scaling.md``):

- a convolution is one ``Conv2d`` with ``groups=R`` over the members' channels side by side
  (member r owns output channels ``r·C_out … (r+1)·C_out − 1``);
- a linear layer is a batched matrix product (:class:`MemberLinear`);
- ReLU, max-pooling and dropout act elementwise or per channel, so they need nothing new.

The same class is written once for both uses: a network takes ``members=None`` (an ordinary
network, as before) or ``members=R``, and :func:`conv2d` / :func:`linear` pick the layer.
:func:`copy_member` moves member r's weights between a stacked network and an ordinary one in
either direction, so a stack can start from R single-run initialisations and ``member(r)`` is an
ordinary network again.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn


class MemberLinear(nn.Module):
    """R independent ``nn.Linear(in_features, out_features)``: ``[R, N, in] → [R, N, out]``."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))
        bound = 1 / math.sqrt(in_features)
        for r in range(members):  # each member as nn.Linear initialises itself
            nn.init.kaiming_uniform_(self.weight[r], a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


def conv2d(in_channels: int, out_channels: int, kernel_size: int, members: int | None = None, **kwargs) -> nn.Conv2d:
    """``nn.Conv2d``, or with ``members=R`` one grouped convolution holding R of them."""
    if members is None:
        return nn.Conv2d(in_channels, out_channels, kernel_size, **kwargs)
    return nn.Conv2d(members * in_channels, members * out_channels, kernel_size, groups=members, **kwargs)


def linear(in_features: int, out_features: int, members: int | None = None) -> nn.Module:
    """``nn.Linear``, or with ``members=R`` a :class:`MemberLinear`."""
    return nn.Linear(in_features, out_features) if members is None else MemberLinear(members, in_features, out_features)


def apply_members(features: Callable, head: Callable, x: torch.Tensor, members: int) -> torch.Tensor:
    """``head(features(x))`` per member: images ``[*S, R, B, C, H, W]`` → ``[*S, R, B, out]``.

    ``features`` takes ``[N, R·C, H, W]`` (the members' channels side by side) and returns
    ``[N, R·F]``; ``head`` takes ``[R, N, F]``. The one place where the member dimension is folded
    into channels and back (``apply_flat`` is its single-network twin).
    """
    if x.dim() < 5 or x.shape[-5] != members:
        raise ValueError(f"a network of {members} members expects images [..., {members}, B, C, H, W], "
                         f"got shape {tuple(x.shape)}")
    *samples, _, batch, channels, height, width = x.shape
    folded = x.movedim(-5, -4).reshape(-1, members * channels, height, width)
    folded = folded.contiguous(memory_format=torch.channels_last)  # max-pooling is far faster channels-last on CPU
    h = features(folded)  # [N, R·F]
    out = head(h.view(h.shape[0], members, -1).transpose(0, 1))  # [R, N, out]
    return out.reshape(members, *samples, batch, out.shape[-1]).movedim(0, -3)


@torch.no_grad()
def copy_member(source: nn.Module, target: nn.Module, r: int, *, into_stack: bool = False) -> None:
    """Copy member r's weights from a stacked network to an ordinary one of the same architecture
    (or, with ``into_stack=True``, from the ordinary ``source`` into member r of the stacked ``target``).
    The stacked one is a :class:`Stackable` (its ``init_args`` name its members)."""
    stacked, single = (target, source) if into_stack else (source, target)
    members = stacked.init_args["members"]
    pairs = list(zip(stacked.named_modules(), single.named_modules()))
    if len(list(stacked.modules())) != len(list(single.modules())):
        raise ValueError("the stacked and the ordinary network differ in architecture")
    for (name, s), (_, o) in pairs:
        if isinstance(s, MemberLinear):
            views = [(s.weight[r], o.weight), (s.bias[r], o.bias)]
        elif isinstance(s, nn.Conv2d) and s.groups == members * o.groups:
            c = o.out_channels
            views = [(s.weight[r * c:(r + 1) * c], o.weight), (s.bias[r * c:(r + 1) * c], o.bias)]
        else:
            if sum(1 for _ in s.parameters(recurse=False)):
                raise ValueError(f"{name or 'the network'}: {type(s).__name__} has no member layout")
            continue
        for in_stack, alone in views:
            if in_stack.shape != alone.shape:
                raise ValueError(f"{name}: member shape {tuple(in_stack.shape)} ≠ {tuple(alone.shape)}")
            (in_stack if into_stack else alone).copy_(alone if into_stack else in_stack)


class Stackable:
    """Mixin for networks whose constructor takes ``members``: ``member(r)`` and ``stack(nets)``.

    A subclass records its constructor's arguments in ``self.init_args`` (``members`` included).
    """

    init_args: dict

    @property
    def members(self) -> int | None:
        return self.init_args.get("members")

    def member(self, r: int) -> nn.Module:
        """Member r as an ordinary network (``members=None``) with its weights."""
        if self.members is None or not 0 <= r < self.members:
            raise ValueError(f"member {r} of a network with members={self.members}")
        single = type(self)(**{**self.init_args, "members": None}).to(next(self.parameters()))  # dtype, device
        copy_member(self, single, r)
        return single.train(self.training)

    @classmethod
    def stack(cls, nets: list) -> nn.Module:
        """One stacked network whose member r is ``nets[r]`` (ordinary networks of one architecture)."""
        args = {k: v for k, v in nets[0].init_args.items() if k != "members"}
        if any({k: v for k, v in n.init_args.items() if k != "members"} != args for n in nets):
            raise ValueError("only networks built with the same arguments can be stacked")
        stacked = cls(**args, members=len(nets)).to(next(nets[0].parameters()))  # dtype, device
        for r, net in enumerate(nets):
            copy_member(net, stacked, r, into_stack=True)
        return stacked


class VmapMembers(nn.Module):
    """R copies of any network as one, for networks without a member layout (a user's, say): their
    parameters and buffers stacked ``[R, ...]`` and the network applied to each member's inputs with
    ``torch.func.vmap`` over the member dimension, which stands ``event_dim + 1`` dimensions from the
    right of the input (``[*S, R, B, C, H, W]`` for images, ``event_dim`` 3) and at the same place
    in the outputs (a tensor or a tuple of them).

    Slower than a member layout's grouped convolutions: a gamma_pstn step at R = 25 costs 2.1 ms a
    member under vmap against 1.3 ms with the layout and about 4 ms for a single run (1 CPU thread;
    ``python -m experiments.bench --stack --vmap`` beside ``--stack``, in
    ``experiments/results/stacked_bench.md``). Networks with batch norm are refused (their running
    statistics would need a stacked precise BN).
    """

    def __init__(self, nets: list[nn.Module], event_dim: int):
        super().__init__()
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in nets[0].modules()):
            raise ValueError(f"{type(nets[0]).__name__} has batch norm, which a stack does not support: fit its runs "
                             "one at a time")
        from torch.func import stack_module_state  # torch.func: imported where a stack is built

        params, buffers = stack_module_state(nets)
        self._template = [copy.deepcopy(nets[0])]  # a list: not a submodule, so its weights are not the stack's
        self._names = {name: name.replace(".", "__") for name in params}
        self._buffer_names = {name: "buffer__" + name.replace(".", "__") for name in buffers}
        trainable = {name: p.requires_grad for name, p in nets[0].named_parameters()}  # a frozen network stays frozen
        for name, key in self._names.items():
            self.register_parameter(key, nn.Parameter(params[name].detach().clone(), requires_grad=trainable[name]))
        for name, key in self._buffer_names.items():
            self.register_buffer(key, buffers[name].clone())
        self.members, self.event_dim = len(nets), event_dim

    def _state(self) -> tuple[dict, dict]:
        return ({n: getattr(self, k) for n, k in self._names.items()},
                {n: getattr(self, k) for n, k in self._buffer_names.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple:
        from torch.func import functional_call, vmap

        where = x.dim() - self.event_dim - 2
        if where < 0 or x.shape[where] != self.members:
            raise ValueError(f"a network of {self.members} members expects inputs [..., {self.members}, B, "
                             f"{', '.join(['…'] * self.event_dim)}], got shape {tuple(x.shape)}")
        template = self._template[0].train(self.training)

        def one(params: dict, buffers: dict, inputs: torch.Tensor) -> torch.Tensor | tuple:
            return functional_call(template, (params, buffers), (inputs,))

        return vmap(one, in_dims=(0, 0, where), out_dims=where, randomness="different")(*self._state(), x)

    def member(self, r: int) -> nn.Module:
        """Member r as an ordinary network with its weights."""
        if not 0 <= r < self.members:
            raise ValueError(f"member {r} of a network with members={self.members}")
        single = copy.deepcopy(self._template[0])
        params, buffers = self._state()
        single.load_state_dict({**{n: p[r].detach().clone() for n, p in params.items()},
                                **{n: b[r].clone() for n, b in buffers.items()}})
        return single.train(self.training)
