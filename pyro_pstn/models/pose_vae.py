"""Pose-latent VAEs (paper 002) and the categorical VAE (paper 003 §3.2).

An image is an appearance z rendered by a decoder g in a canonical frame and warped by a
pose u (002 §II, Fig. 3):

    z ~ N(0, I)                          (002 §IV, eq. 6)
    u ~ p(u)                             (a swappable :class:`~pyro_pstn.priors.PosePrior`, eq. 7)
    θ = to_theta(u)                      (θ = u, or θ = b + W u for the low-rank prior)
    x_ij ~ Bernoulli(T_θ(g(z))_ij)       (eq. 8; the warp acts on pixel probabilities)

and the ELBO is eq. 5/9: E_q[log p(x | z, u)] − KL(q(z|x) ‖ p(z)) − KL(q(u|x) ‖ p(u)).

| model   | guide (002 §III, Fig. 4)                                                      |
|---------|-------------------------------------------------------------------------------|
| ``VAE``   | z ~ q(z | x); no pose (θ fixed at the identity)                              |
| ``TVAE``  | one encoder, two heads: z ~ q(z | x), u ~ q(u | x)                          |
| ``DTVAE`` | u ~ q(u | x) from a localizer; y = T_θ⁻¹(x) (un-warped); z ~ q(z | y)         |

Site names are API: ``z``, ``u`` (pose code), ``theta`` (deterministic transformation
parameters) and ``x``. ``y`` (labels) is accepted and ignored, so the classifier engine fits
these models unchanged. Pixels must lie in [0, 1] (load data with ``normalize=False``).
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine
from pyro.nn import PyroModule
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical as _TorchExpRelaxedCategorical

from ..data.types import DataSpec
from ..nets.conv import ConvVAEDecoder, ConvVAETrunk
from ..nets.dense import DenseDecoder, DenseTrunk, GaussianHead
from ..priors import DeterministicPose, PosePrior
from ..transforms import check_layout_family, has_inverse, warp

#: The paper clips the decoder's output to [1e-6, 1 − 1e-6] "to make the loss and gradients
#: more stable" (002 appendix A).
PROB_EPS = 1e-6
#: Pixel likelihoods: 002's Bernoulli, or a Gaussian of fixed σ (003's MSE loss, see ``observe``).
LIKELIHOODS = ("bernoulli", "gaussian")
#: The VAE networks by name: 002's dense 2 × 256 nets, or 003's PyTorch-VAE convolutions.
ARCHITECTURES = ("dense", "conv")


def mse_noise_scale(kl_factor: float, num_pixels: int) -> float:
    """σ of the Gaussian likelihood whose ELBO has the minimiser of MSE + ``kl_factor``·KL, the MSE a
    mean over ``num_pixels`` pixels (003: PyTorch-VAE's loss with 0.001): Σ(x − x̂)²/(2σ²) + KL
    = (MSE + kl_factor·KL) / kl_factor when 2σ² = num_pixels · kl_factor."""
    return math.sqrt(num_pixels * kl_factor / 2)


class LatentVAE(PyroModule):
    """What the VAEs share: the Bernoulli likelihood, the KL weight, encoding for probes."""

    #: Latent sites recorded in posterior files and read by :meth:`encode`.
    latent_sites: tuple[str, ...] = ("z",)

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28), kl_weight: float = 1.0,
                 likelihood: str = "bernoulli", noise_scale: float = 1.0):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; valid: {', '.join(LIKELIHOODS)}")
        if not noise_scale > 0:
            raise ValueError(f"noise_scale must be positive, got {noise_scale}")
        self.image_shape = tuple(image_shape)
        self.kl_weight = float(kl_weight)
        self.likelihood, self.noise_scale = likelihood, float(noise_scale)
        self.localizer = None  # the DT-VAE's pose network (the engine gives it its own learning rate)
        self.layout = None  # the transformation family (pose models take it from their pose prior)

    def kl_scaled(self, kl_weight: float | None = None) -> poutine.messenger.Messenger:
        """β on the latent sites in model and guide (``poutine.scale``; a mask for β = 0): the
        ``kl_weight`` the loss passes (the engine's schedule), else the model's own."""
        w = self.kl_weight if kl_weight is None else kl_weight
        if w > 0:
            return poutine.scale(scale=w)
        return poutine.mask(mask=False)

    def observe(self, probs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x_ij ~ Bernoulli(p_ij) (002 eq. 8), or x_ij ~ N(p_ij, σ²) with ``likelihood="gaussian"``.

        Grey-level x under the Bernoulli is the usual continuous relaxation of the binary
        likelihood (Pyro's VAE example does the same), hence validate_args=False. The Gaussian
        with σ² = P·β / 2 (P pixels) is 003's loss, MSE + β·KL with β = 0.001, divided by β: the
        same minimiser, as an ELBO with KL weight 1 (:func:`mse_noise_scale`)."""
        if self.likelihood == "gaussian":
            pyro.sample("x", dist.Normal(probs, self.noise_scale).to_event(3), obs=x)
            return probs
        probs = probs.clamp(PROB_EPS, 1 - PROB_EPS)
        pyro.sample("x", dist.Bernoulli(probs=probs, validate_args=False).to_event(3), obs=x)
        return probs

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        raise NotImplementedError

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The representation a linear probe reads: the posterior mean of z, ``[B, dim z]``."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, num: int, pose: str = "identity") -> torch.Tensor:
        """``num`` images drawn from the prior: z ~ p(z), u at the identity or u ~ p(u)."""
        raise NotImplementedError

    def localizer_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters trained at the localizer's learning rate (``localizer_lr_mult``)."""
        return iter(()) if self.localizer is None else self.localizer.parameters()


class VAE(LatentVAE):
    """z ~ N(0, I), x ~ Bernoulli(g(z)) (Kingma & Welling 2013; 002 Fig. 4 left)."""

    def __init__(self, encoder: nn.Module, z_head: GaussianHead, decoder: nn.Module, z_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.z_head, self.decoder, self.z_dim = encoder, z_head, decoder, int(z_dim)

    def prior_z(self, like: torch.Tensor) -> dist.Distribution:
        """p(z) = N(0, I) (002 §IV), on ``like``'s device."""
        zero = like.new_zeros(self.z_dim)
        return dist.Normal(zero, 1.0).to_event(1)

    def render(self, z: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """T_θ(g(z)): the decoder's pixel probabilities, warped by θ when a pose is given."""
        probs = torch.sigmoid(self.decoder(z))
        return probs if theta is None else warp(probs, theta, self.layout)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        with pyro.plate("data", x.shape[0]):
            with self.kl_scaled(kl_weight):
                z = pyro.sample("z", self.prior_z(x))
            return self.observe(self.render(z), x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> None:
        with pyro.plate("data", x.shape[0]), self.kl_scaled(kl_weight):
            loc, scale = self.z_head(self.encoder(x))
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.z_head(self.encoder(x))[0]

    @torch.no_grad()
    def generate(self, num: int, pose: str = "identity") -> torch.Tensor:
        z = self.prior_z(next(self.parameters())).sample((num,))
        return torch.sigmoid(self.decoder(z))


class TVAE(VAE):
    """Transformer VAE (002 §III, Fig. 4 middle): x = T_θ(g(z)) with pose u inferred beside z."""

    latent_sites = ("z", "u", "theta")

    def __init__(
        self,
        encoder: nn.Module,
        z_head: GaussianHead,
        u_head: GaussianHead,
        decoder: nn.Module,
        z_dim: int,
        pose_prior: PosePrior,
        **kwargs,
    ):
        super().__init__(encoder, z_head, decoder, z_dim, **kwargs)
        try:
            check_layout_family(pose_prior.layout, 2)
        except ValueError as err:
            raise ValueError(f"a pose VAE warps images: {err}") from None
        self.u_head, self.pose_prior = u_head, pose_prior
        self.layout = pose_prior.layout

    def sample_pose(self, kl_weight: float | None = None) -> torch.Tensor:
        """u ~ p(u) (eq. 7) and θ = to_theta(u), inside the caller's data plate."""
        with self.kl_scaled(kl_weight):
            u = pyro.sample("u", self.pose_prior())
        return pyro.deterministic("theta", self.pose_prior.to_theta(u), event_dim=1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> torch.Tensor | None:
        with pyro.plate("data", x.shape[0]):
            with self.kl_scaled(kl_weight):
                z = pyro.sample("z", self.prior_z(x))
            theta = self.sample_pose(kl_weight)
            return self.observe(self.render(z, theta), x)

    def guide_pose(self, h: torch.Tensor, kl_weight: float | None = None) -> torch.Tensor:
        """u ~ q(u | x), parameterised relative to the prior (starts at the identity)."""
        with self.kl_scaled(kl_weight):
            u = pyro.sample("u", self.pose_prior.guide_distribution(*self.u_head(h)))
        return self.pose_prior.to_theta(u)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> None:
        with pyro.plate("data", x.shape[0]):
            h = self.encoder(x)
            with self.kl_scaled(kl_weight):
                loc, scale = self.z_head(h)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))
            self.guide_pose(h, kl_weight)

    @torch.no_grad()
    def generate(self, num: int, pose: str = "identity") -> torch.Tensor:
        z = self.prior_z(next(self.parameters())).sample((num,))
        return self.render(z, self._pose(num, pose))

    def _pose(self, num: int, pose: str) -> torch.Tensor:
        if pose not in ("identity", "prior"):
            raise ValueError(f"unknown pose {pose!r}; valid: identity, prior")
        return self.pose_prior.identity_theta(num) if pose == "identity" else self.pose_prior.sample_theta(num)

    @torch.no_grad()
    def pose_mean(self, x: torch.Tensor) -> torch.Tensor:
        """θ at the mean of q(u | x): the inferred pose of each image."""
        return self.pose_prior.to_theta(self.pose_prior.guide_distribution(*self.u_head(self.encoder(x))).mean)

    @torch.no_grad()
    def canonical(self, x: torch.Tensor) -> torch.Tensor:
        """g(E[z | x]): the reconstruction in the canonical frame, before the pose warp."""
        return torch.sigmoid(self.decoder(self.encode(x)))


class DTVAE(TVAE):
    """Double-transformer VAE (002 §III, Fig. 4 right): the pose is inferred first and undone,
    y = T_θ⁻¹(x), before z is encoded from y; the decoder's canonical image is warped back by T_θ.
    Needs a family with a closed-form inverse: affine or Lie (A(θ)⁻¹) or CPAB (T_{−θ}), not TPS."""

    def __init__(
        self,
        localizer: nn.Module,
        u_head: GaussianHead,
        encoder: nn.Module,
        z_head: GaussianHead,
        decoder: nn.Module,
        z_dim: int,
        pose_prior: PosePrior,
        **kwargs,
    ):
        super().__init__(encoder, z_head, u_head, decoder, z_dim, pose_prior, **kwargs)
        if not has_inverse(self.layout):
            raise ValueError(f"DTVAE un-warps x by T_θ⁻¹, which {self.layout.name} lacks; use an affine, Lie or "
                             "cpab family")
        self.localizer = localizer

    def upright(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """y = T_θ⁻¹(x): the image with its pose undone."""
        return warp(x, theta, self.layout, inverse=True)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None) -> None:
        with pyro.plate("data", x.shape[0]):
            theta = self.guide_pose(self.localizer(x), kl_weight)
            with self.kl_scaled(kl_weight):
                loc, scale = self.z_head(self.encoder(self.upright(x, theta)))
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def pose_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.pose_prior.to_theta(self.pose_prior.guide_distribution(*self.u_head(self.localizer(x))).mean)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.z_head(self.encoder(self.upright(x, self.pose_mean(x))))[0]


# ---- the categorical VAE (paper 003 §3.2; Jang, Gu & Poole 2017) ------------------------------


class ExpRelaxedCategorical(_TorchExpRelaxedCategorical, dist.torch_distribution.TorchDistributionMixin):
    """torch's log-space relaxed categorical as a Pyro distribution: the log of a Gumbel-softmax
    sample. Densities in log space stay finite at low temperature, where the simplex form underflows."""


class CatVAE(LatentVAE):
    """K categorical variables with C categories each (003: 10 × 10), relaxed by Gumbel-softmax.

        z_k ~ RelaxedOneHot(τ, uniform)      (prior; log-space sample site ``z``, [B, K, C])
        x ~ Bernoulli(g(exp z))              (decoder reads the K relaxed one-hot vectors)

    The guide is RelaxedOneHot(τ, logits(x)); the ELBO's KL is estimated from the two relaxed
    densities (Maddison et al. 2017). The temperature τ reaches model and guide as an argument
    through the loss (a :class:`~inference.schedules.TemperatureSchedule` lowers it during
    training); without one, the model's own ``temperature``.
    """

    def __init__(self, encoder: nn.Module, logits_head: nn.Module, decoder: nn.Module, num_variables: int = 10,
                 num_categories: int = 10, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.logits_head, self.decoder = encoder, logits_head, decoder
        self.num_variables, self.num_categories = int(num_variables), int(num_categories)
        self.temperature = float(temperature)

    def _relaxed(self, logits: torch.Tensor, temperature: float | None) -> dist.Distribution:
        tau = torch.tensor(self.temperature if temperature is None else temperature, dtype=logits.dtype,
                           device=logits.device)
        return ExpRelaxedCategorical(tau, logits=logits).to_event(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_head(self.encoder(x)).unflatten(-1, (self.num_variables, self.num_categories))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None,
              temperature: float | None = None) -> torch.Tensor | None:
        with pyro.plate("data", x.shape[0]):
            uniform = x.new_zeros(self.num_variables, self.num_categories)
            with self.kl_scaled(kl_weight):
                log_z = pyro.sample("z", self._relaxed(uniform, temperature))
            probs = torch.sigmoid(self.decoder(log_z.exp().flatten(-2)))
            return self.observe(probs, x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, kl_weight: float | None = None,
              temperature: float | None = None) -> None:
        with pyro.plate("data", x.shape[0]), self.kl_scaled(kl_weight):
            pyro.sample("z", self._relaxed(self.logits(x), temperature))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The K × C category probabilities, flattened (003's "10 × 10 matrix")."""
        return self.logits(x).softmax(-1).flatten(-2)

    @torch.no_grad()
    def generate(self, num: int, pose: str = "identity") -> torch.Tensor:
        """Hard one-hot codes drawn uniformly, decoded."""
        device = next(self.parameters()).device
        idx = torch.randint(self.num_categories, (num, self.num_variables), device=device)
        one_hot = torch.nn.functional.one_hot(idx, self.num_categories).float()
        return torch.sigmoid(self.decoder(one_hot.flatten(-2)))


# ---- the papers' configurations -------------------------------------------------------------

POSE_VAE_MODELS = ("vae", "tvae", "dtvae", "cat_vae")


def build_pose_vae(
    name: str,
    z_dim: int = 8,
    pose_prior: PosePrior | None = None,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    hidden: tuple[int, ...] = (256, 256),
    localizer_hidden: tuple[int, ...] = (128,),
    num_variables: int = 10,
    num_categories: int = 10,
    kl_weight: float = 1.0,
    architecture: str = "dense",
    likelihood: str = "bernoulli",
    noise_scale: float = 1.0,
    spec: DataSpec | None = None,
) -> LatentVAE:
    """002 appendix A's networks: dense 2 × 256 encoder and decoder, a 1 × 128 DT-VAE localizer;
    with ``architecture="conv"`` 003's PyTorch-VAE convolutions (:class:`~pyro_pstn.nets.ConvVAETrunk`,
    :class:`~pyro_pstn.nets.ConvVAEDecoder`) for encoder and decoder (the localizer stays dense).

    ``pose_prior`` (for ``tvae``/``dtvae``) defaults to the deterministic pose on the 6-dof
    affine map; e.g. ``build_pose_vae("tvae", 12, DiagonalNormalPose("tps"))`` is 002's TPS TVAE.
    ``spec`` (a data set's :class:`~pyro_pstn.data.DataSpec`) sizes encoder and decoder for its
    images instead of ``image_shape`` (any C × H × W for the dense networks; square images for the
    convolutional ones). The likelihood models pixels in [0, 1]: load such data with ``normalize=False``.
    """
    if spec is not None:
        if spec.ndim != 2:
            raise ValueError(f"a pose VAE models images, got a spec of {spec.describe()}")
        image_shape = spec.shape
    if name not in POSE_VAE_MODELS:
        raise ValueError(f"unknown model {name!r}; valid pose-VAE models: {', '.join(POSE_VAE_MODELS)}")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    common = dict(image_shape=image_shape, kl_weight=kl_weight, likelihood=likelihood, noise_scale=noise_scale)
    if architecture == "conv" and image_shape[1] != image_shape[2]:
        raise ValueError(f"the convolutional VAE networks take square images, got {image_shape}; use "
                         "architecture='dense'")
    encoder = DenseTrunk(image_shape, hidden) if architecture == "dense" else ConvVAETrunk(image_shape)

    def decoder_of(in_features: int):
        return (DenseDecoder(in_features, image_shape, hidden) if architecture == "dense"
                else ConvVAEDecoder(in_features, image_shape))

    features = encoder.out_features
    if name == "cat_vae":
        k = num_variables * num_categories
        return CatVAE(encoder, nn.Linear(features, k), decoder_of(k), num_variables, num_categories, **common)
    z_head, decoder = GaussianHead(features, z_dim), decoder_of(z_dim)
    if name == "vae":
        return VAE(encoder, z_head, decoder, z_dim, **common)
    pose_prior = pose_prior if pose_prior is not None else DeterministicPose("affine")
    if name == "tvae":
        u_head = GaussianHead(features, pose_prior.code_dim, zero_init=True)
        return TVAE(encoder, z_head, u_head, decoder, z_dim, pose_prior, **common)
    localizer = DenseTrunk(image_shape, localizer_hidden)
    u_head = GaussianHead(localizer_hidden[-1], pose_prior.code_dim, zero_init=True)
    return DTVAE(localizer, u_head, encoder, z_head, decoder, z_dim, pose_prior, **common)
