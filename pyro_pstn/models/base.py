"""What every spatial-transformer classifier shares: y ~ Cat(f(T_θ(x)))."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine
from pyro.nn import PyroModule

from ..data.types import DataSpec
from ..priors import Box
from ..transforms import LIE_LAYOUTS, TransformFamily, get_layout, warp


def kl_weight_per_dimension(w: float, theta_dim: int) -> float:
    """The authors' KL weight w on the scale of Pyro's ELBO: the one place the convention lives.

    The P-STN authors' loss (pSTN-baselines, ``loss/``) is  mean_i NLL_i + w · mean_{i,d} KL_{i,d}:
    the KL is averaged over the batch *and* the D dimensions of θ. Pyro's ELBO sums log-densities
    over a site's event dimensions, and our training loss is the ELBO divided by the batch size, so
        w · (1/D) Σ_d KL_{i,d} = w_pyro · Σ_d KL_{i,d}   ⇔   w_pyro = w / D.
    """
    return w / theta_dim


def check_images(x: torch.Tensor, y: torch.Tensor | None = None, num_classes: int | None = None,
                 event_dim: int = 3, spec: DataSpec | None = None) -> None:
    """Raise a ValueError that says what is wrong with a batch of images (``event_dim`` 3) or
    signals (``event_dim`` 2), and labels; with ``spec``, also where they do not fit it."""
    if spec is not None:
        event_dim, num_classes = spec.ndim + 1, spec.num_classes if num_classes is None else num_classes
    if not torch.is_tensor(x) or x.dim() != event_dim + 1:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        expected = "images [batch, channels, height, width]" if event_dim == 3 else "signals [batch, channels, length]"
        raise ValueError(f"expected {expected}, got {shape}")
    if len(x) == 0:
        raise ValueError("the data set is empty: give at least one example")
    if not x.is_floating_point():
        raise ValueError(f"images must be floating point (normalised), got {x.dtype}; convert with x.float() / 255 and "
                         "normalise, or load the data through pyro_pstn.data")
    if spec is not None:
        spec.check(x, "images")
    if not torch.isfinite(x).all():
        raise ValueError(f"images contain {int((~torch.isfinite(x)).sum())} NaN or infinite values; clean the data")
    if y is not None:
        check_labels(y, len(x), num_classes)


def check_labels(y: torch.Tensor, n: int, num_classes: int | None = None) -> None:
    """A ValueError unless ``y`` holds ``n`` integer class labels in 0..num_classes−1."""
    if not torch.is_tensor(y) or y.shape != (n,):
        shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"labels must have shape [{n}] to match the images, got {shape}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices 0..K-1, got {y.dtype}; convert them with y.long() "
                         "(after checking they are whole numbers)")
    if num_classes is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (the model has {num_classes} classes), got range "
                         f"{int(y.min())}..{int(y.max())}; build the model with the data's spec, or remap the labels")


@contextmanager
def _scale_members(w: torch.Tensor):
    with poutine.mask(mask=w > 0), poutine.scale(scale=torch.where(w > 0, w, torch.ones_like(w))):
        yield


class TransformClassifier(PyroModule):
    """Base of ``cnn``, ``stn``, ``da``, ``pstn`` and ``gamma_pstn``.

    Subclasses write ``model(x, y=None)`` and ``guide(x, y=None)`` with a ``pyro.plate("data")``
    over the batch; ``model`` returns the class logits. Site names are API: ``theta``
    (transformation), ``lambda`` (precision) and ``y`` (label).

    ``kl_weight`` multiplies the latent sites' log-densities in model *and* guide through
    ``poutine.scale``, i.e. it weights the KL term of the ELBO (a β-VAE weight, Higgins et al.).
    It is in Pyro's convention, the KL *summed* over θ's dimensions. The training engine passes it
    to model and guide as an argument through the loss, every step, from the authors'
    per-dimension w and the annealing schedule (as Pyro's ``examples/dmm.py`` passes its
    ``annealing_factor``); the attribute is the weight used when none is passed.
    """

    #: Whether predictions vary between posterior samples (if not, one sample suffices).
    stochastic_predictions = True
    #: Whether the config's KL weight w is per θ dimension (the P-STN authors' convention, so the
    #: engine scales the summed KL by w / D) or applies to the summed log-density as is.
    kl_per_dimension = True
    #: The latent (or deterministic) transformation sites recorded in the posterior file.
    latent_sites: tuple[str, ...] = ("theta",)
    #: What the engine and the commands may ask of any model (no isinstance on model classes):
    #: it predicts class labels (metrics, reliability) ...
    classifies = True
    #: ... and it has a localizer whose μ(x) is the mode of q(θ|x) (``predict_at_mean``).
    predicts_at_mean = False

    def __init__(
        self,
        classifier: nn.Module,
        layout: str | TransformFamily | None = "similarity",
        localizer: nn.Module | None = None,
        fill: float = 0.0,
        align_corners: bool = False,
        kl_weight: float = 1.0,
        event_dim: int = 3,
        output_size: tuple[int, int] | None = None,
        spec: DataSpec | None = None,
    ):
        super().__init__()
        #: The data the model was built for (None: not stated; inputs are then checked by shape only).
        self.spec = spec
        if spec is not None:
            event_dim = spec.ndim + 1
        self.event_dim = int(event_dim)  # dims of one input: 3 for images [C, H, W], 2 for signals [C, L]
        # the pre-image's size when it differs from the input's (a 28 × 28 crop of a 96 × 96 canvas)
        self.output_size = None if output_size is None else tuple(output_size)
        self.classifier = classifier
        self.localizer = localizer
        self.layout = get_layout(layout) if layout is not None else None
        self.fill = float(fill) if isinstance(fill, (int, float)) else tuple(float(v) for v in fill)
        self.align_corners = bool(align_corners)
        self.kl_weight = float(kl_weight)

    # ---- pieces -------------------------------------------------------------------------
    def pyro_kl_weight(self, w: float) -> float:
        """The weight on Pyro's summed KL for the configured w: the authors' per-dimension w
        (:func:`kl_weight_per_dimension`) where :attr:`kl_per_dimension`, else w itself."""
        if self.kl_per_dimension:
            return kl_weight_per_dimension(w, self.layout.dim if self.layout is not None else 1)
        return w

    def transform(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """T_θ(x) for θ of shape [*S, B, D]: the pre-image the classifier sees."""
        return warp(x, theta, self.layout, fill=self.fill, align_corners=self.align_corners, size=self.output_size)

    def observe(self, logits: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """y ~ Cat(softmax(logits)). Models return the logits: traces keep them as ``_RETURN``."""
        pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits

    def data_plate(self, x: torch.Tensor) -> pyro.plate:
        """The plate over the batch of images ``x`` ``[..., B, C, H, W]`` (signals ``[..., B, C, L]``;
        a stack of members puts its own plate outside it, :class:`~pyro_pstn.models.stacked.Stacked`)."""
        return pyro.plate("data", x.shape[-1 - self.event_dim])

    def kl_scaled(self, kl_weight: float | torch.Tensor | None = None) -> poutine.messenger.Messenger:
        """Context that applies the KL weight to the latent sites it wraps (in model and guide): the
        ``kl_weight`` the loss passes to model and guide (the engine's schedule, on Pyro's summed
        scale), else the model's own ``kl_weight``.

        A weight of 0 masks the sites' log-densities out (``poutine.scale`` only takes w > 0):
        the ELBO is then the expected log-likelihood alone. In a stack the weight is a tensor
        ``[R, 1]``, one per member, and members with w = 0 are masked alone.
        """
        w = self.kl_weight if kl_weight is None else kl_weight
        if torch.is_tensor(w):
            return _scale_members(w)
        if w > 0:
            return poutine.scale(scale=w)
        return poutine.mask(mask=False)

    def localizer_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters trained at the localizer's learning rate (``localizer_lr_mult``)."""
        return iter(()) if self.localizer is None else self.localizer.parameters()

    def undecayed_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters trained without weight decay (none but Augerino's ranges)."""
        return iter(())

    def identity_theta(self, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        return self.layout.identity_theta(like.dtype, like.device).expand(batch_size, self.layout.dim)

    # ---- the generative story and its guide (overridden) ---------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        raise NotImplementedError

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> None:
        """No latent variables to infer (deterministic models)."""

    def learned(self) -> dict:
        """What the fit learned beyond its networks, for the run's metrics (Augerino: its ranges)."""
        return {}

    # ---- prediction ----------------------------------------------------------------------
    def predictive_model(self) -> Callable[..., torch.Tensor | None]:
        """The model used for posterior predictive sampling (DA overrides it to test at θ_id)."""
        return self.model


class BoxClassifier(TransformClassifier):
    """Base of the models whose θ has a flat prior on the box [−1, 1]^D of a Lie layout, θ = 0 the
    identity: ``flow_pstn`` (paper 004) and ``augerino`` (Benton et al. 2020). Their weight (004's
    entropy weight α, Augerino's regulariser weight) applies to the summed term as it is, not per
    dimension of θ."""

    kl_per_dimension = False

    def __init__(self, classifier: nn.Module, **kwargs):
        super().__init__(classifier, **kwargs)
        if self.layout is None or not bool((self.layout.identity_theta() == 0).all()):
            raise ValueError(f"{type(self).__name__} needs a family whose identity is θ = 0, with θ in [−1, 1] (a Lie "
                             f"layout: {', '.join(LIE_LAYOUTS)}; or a family of your own), got "
                             f"{getattr(self.layout, 'name', None)!r}")
        self.register_buffer("box_low", -torch.ones(self.layout.dim))
        self.register_buffer("box_high", torch.ones(self.layout.dim))

    def prior(self) -> dist.Distribution:
        """θ ~ U([−1, 1]^D)."""
        return Box(self.box_low, self.box_high).to_event(1)


def draw(model: nn.Module, guide: Callable, x: torch.Tensor, num_samples: int,
         sites: tuple[str, ...] = ("logits",)) -> dict[str, torch.Tensor]:
    """S vectorised joint draws from guide and model: {site: [S, B, ...]}.

    ``"logits"`` names the model's return value, the class logits.

    The guide is traced under a sample plate at dim −2 (models have one plate, ``data``, at
    −1) and the model is replayed on those draws, as ``pyro.infer.Predictive(parallel=True)``
    does, without its extra trace to guess the plate nesting.
    """
    with torch.no_grad(), pyro.plate("posterior_samples", num_samples, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    out = {}
    for name in sites:
        if name == "logits":
            value, event_dim = model_trace.nodes["_RETURN"]["value"], 1
        else:
            value, event_dim = model_trace.nodes[name]["value"], model_trace.nodes[name]["fn"].event_dim
        # a value that depends on no sampled variable (CNN logits) has no sample dim: broadcast it
        out[name] = value.expand(num_samples, *value.shape[-(event_dim + 1) :])
    return out
