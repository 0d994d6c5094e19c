"""Augerino (Benton et al., *Learning Invariances in Neural Networks*, NeurIPS 2020): one learned
range of transformations for the whole data set, the baseline of paper 004.

Augerino samples the coefficients of a Lie-algebra warp (paper 004 eq. 12; any Lie layout here)
uniformly, each in its own learned range, and averages the classifier over the warped copies. In
Pyro terms it is a model with a flat prior on the layout's box and a guide that is a learned box,
the same for every input (nothing amortised):

model:  θ ~ U([−1, 1]^D)                              (the layout's box; θ = 0 the identity)
        y ~ Cat(f(T_θ(x)))
guide:  θ ~ U(−w, w),  w = min(softplus(ρ) / 2, 1)    (Augerino eq. 9: ε ~ U(−1, 1), θ = ε · w)

Augerino's code draws θ = u · ω − ω / 2 with ω = softplus(ρ) (``UniformAug``), so its "width"
ω = 2w is the box's full width; w is capped at the layout's box (|θ| ≤ 1: ±180° of rotation in a
Lie layout), where Augerino's "safe" loss stops the regulariser at ω = 10. Its loss, per example
and with the regulariser weight λ (the run's KL weight; Augerino's ``aug_reg``), is

    loss = E_{θ ~ U(−w, w)} [−log p(y | T_θ(x))] − λ ‖ω‖₂          (``regulariser="width"``)

the classification loss averaged over augmented copies (``num_particles`` of them; Augerino's
training uses one) minus its width regulariser, which pushes every range wider. In the model the
regulariser is the factor ``width`` (+λ‖ω‖₂ in the log joint); θ's prior and guide densities are
masked out, so this objective is *not* an ELBO. ``regulariser="entropy"`` keeps them instead: the
loss is then the negative ELBO with the KL to the box prior,

    KL(U(−w, w) ‖ U(−1, 1)) = Σ_d log(1 / w_d),                    (paper 004 eq. 10–11)

which is 004's entropy regulariser for a uniform (log p ∝ −log width, 004 §3.2).

At test time the posterior predictive averages the class probabilities over S draws of θ from
the learned box (Augerino's ``AugAveragedModel`` averages log-probabilities over its copies).
The ranges are in the layout's coefficients: a Lie layout's rotation is in units of π (θ = 1 is
180°), where Augerino's rotation coefficient is in radians, so λ weighs a rotation range π times
less here than in Augerino's code; its translations (× 0.1) and scale, stretch and shear match.
"""
from __future__ import annotations

from collections.abc import Iterator

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine

from ..priors import Box
from ..transforms import param_names
from .base import BoxClassifier

#: Augerino's regulariser (the width norm) or 004's (the KL to the box prior: the entropy).
REGULARISERS = ("width", "entropy")
#: Augerino's initial ρ (its ``UniformAug``: 0, a width ω = softplus(0) = 0.69 for every coefficient).
AUGERINO_INIT = 0.0


class LearnedBox(nn.Module):
    """The learned half-widths w of Augerino's box: w = min(softplus(ρ) / 2, 1), one per coefficient.

    ``init`` is ρ's initial value (Augerino's ``UniformAug``: 0, so ω = 0.69; its MNIST scripts set
    −5, ω = 0.0067, for every coefficient but the rotation's)."""

    def __init__(self, dim: int, init: float | torch.Tensor = AUGERINO_INIT):
        super().__init__()
        self.raw_width = nn.Parameter(torch.as_tensor(init, dtype=torch.float32).expand(dim).clone())

    def width(self) -> torch.Tensor:
        """ω = 2w, Augerino's "width": the full width of each coefficient's range, ``[..., D]``."""
        return F.softplus(self.raw_width).clamp(max=2.0)

    def forward(self) -> dist.Distribution:
        """q(θ) = U(−w, w)."""
        half = self.width() / 2
        return Box(-half, half).to_event(1)


class Augerino(BoxClassifier):
    """``augerino``: a classifier f and one learned box of transformations; see the module docstring.

    ``regulariser``: ``"width"`` (Augerino's −λ‖ω‖₂, the default) or ``"entropy"`` (the KL to the
    box prior, paper 004's); λ is the KL weight the engine passes (``TrainConfig.kl_weight``).
    """

    def __init__(self, classifier: nn.Module, box: LearnedBox | None = None, regulariser: str = "width", **kwargs):
        super().__init__(classifier, **kwargs)
        if regulariser not in REGULARISERS:
            raise ValueError(f"unknown regulariser {regulariser!r}; valid: {', '.join(REGULARISERS)}")
        self.box = LearnedBox(self.layout.dim) if box is None else box
        if self.box.raw_width.shape[-1] != self.layout.dim:
            raise ValueError(f"the box has {self.box.raw_width.shape[-1]} widths but layout {self.layout.name!r} has "
                             f"{self.layout.dim} coefficients")
        self.regulariser = regulariser
        #: The entropy of the box in the guide's last training pass, Σ_d log 2w_d (nats, detached): the
        #: exact counterpart of flow_pstn's sampled entropy of g(T | x).
        self.last_entropy: torch.Tensor | None = None

    def transformation_distribution(self, x: torch.Tensor) -> dist.Distribution:
        """The learned box for a batch of inputs (the same for each): batch shape [B], event [D]."""
        return self.box().expand(x.shape[: -self.event_dim])

    def width(self) -> torch.Tensor:
        """ω, the learned full width of each coefficient's range (in the layout's units)."""
        return self.box.width()

    def undecayed_parameters(self) -> Iterator[nn.Parameter]:
        """ρ, trained without weight decay, as in Augerino's optimiser (decay would pull ω towards 0.69)."""
        return self.box.parameters()

    def learned(self) -> dict:
        """The learned range ω of each coefficient (θ in [−ω/2, ω/2]), by the layout's names."""
        return {"learned_width": dict(zip(param_names(self.layout), self.width().tolist()))}

    def _theta_weighted(self, kl_weight: float | torch.Tensor | None) -> poutine.messenger.Messenger:
        """θ's densities: weighted by λ (the KL of the entropy regulariser), or masked out (Augerino's)."""
        return self.kl_scaled(kl_weight) if self.regulariser == "entropy" else poutine.mask(mask=False)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        with self.data_plate(x):
            if self.regulariser == "width":
                with self.kl_scaled(kl_weight):
                    pyro.factor("width", self.width().norm(dim=-1))  # + λ ‖ω‖₂ per example
            with self._theta_weighted(kl_weight):
                theta = pyro.sample("theta", self.prior())  # θ ~ U([−1, 1]^D)
            return self.observe(self.classifier(self.transform(x, theta)), y)  # y ~ Cat(f(T_θ(x)))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor:
        if self.training:
            self.last_entropy = self.width().detach().log().sum()
        with self.data_plate(x), self._theta_weighted(kl_weight):
            return pyro.sample("theta", self.box())  # θ ~ U(−w, w), the same box for every x
