"""Record the random draws of a training step and replay them into another computation.

torch.distributions draws reparameterised samples from standard noise: ``Normal.rsample`` calls
``_standard_normal``, ``Gamma.rsample`` calls ``_standard_gamma`` and ``Uniform.rsample``
``torch.rand`` (nothing else in a training step with dropout off does). :class:`Noise` records
those draws in call order and replays them (or pieces of them) elsewhere, so two ways of
computing the same step (a stack member and its single run; DDP processes and one process on
the concatenated batch) can be compared with the same random draws, in float64.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.distributions.gamma as torch_gamma
import torch.distributions.normal as torch_normal
import torch.distributions.uniform as torch_uniform


class Noise:
    def __init__(self):
        self.draws: list[torch.Tensor] = []
        self._originals = torch_normal._standard_normal, torch_gamma._standard_gamma, torch_uniform.torch.rand

    @contextlib.contextmanager
    def _patched(self, draw: Callable):
        torch_normal._standard_normal = lambda *a, **k: draw(self._originals[0], *a, **k)
        torch_gamma._standard_gamma = lambda *a, **k: draw(self._originals[1], *a, **k)
        torch_uniform.torch.rand = lambda *a, **k: draw(self._originals[2], *a, **k)
        try:
            yield
        finally:
            torch_normal._standard_normal, torch_gamma._standard_gamma, torch_uniform.torch.rand = self._originals

    def record(self):
        """Draw as usual and keep every draw (``self.draws``, in call order)."""
        self.draws = []

        def draw(original, *args, **kwargs):
            self.draws.append(original(*args, **kwargs))
            return self.draws[-1]

        return self._patched(draw)

    def replay(self, draws: list[torch.Tensor] | None = None, select: Callable = lambda d: d):
        """Return ``select(draw)`` for the recorded draws (or ``draws``), one per call, in order."""
        queue = iter(self.draws if draws is None else draws)

        def draw(original, *args, **kwargs):
            return select(next(queue))

        return self._patched(draw)
