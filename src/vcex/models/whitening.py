"""A latent model seen in the whitened coordinates of its own encoded data.

A latent attack runs Adam, whose steps have the same size in every coordinate. That suits a VAE's z,
whose prior is N(0, I), but not an encoder whose latents are anisotropic: the faces generator's W has a
per-coordinate spread of 3 to 20, and 99% of the encoded faces' variance lies in 15 of its 128
directions. Equal steps in raw W then push the latent mostly along directions the encoder never
produces (measured: 70-77% of an attack's change fell outside the encoded faces' top-20 principal
directions), where the generator still responds but probes fitted on encoded latents read nonsense.

In whitened coordinates c = (z - mean) V^T / scale, with V and scale^2 the principal directions and
variances of encoded training latents, every direction has unit spread, so an equal step moves each
direction by the same share of its natural variation and the path stays where encoded data lies.
The map is linear and invertible; ``to_base`` gives the wrapped model's own latents back.

>>> whitened = WhitenedLatentModel.fit(style_autoencoder, train_images)
>>> result = CounterfactualAttack(classifier, whitened, lr=0.1).explain(images)
>>> w_cf = whitened.to_base(result.counterfactual_latents)
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, TypeVar

import torch
from torch import nn

from vcex.checks import device_of
from vcex.errors import InputError
from vcex.models.latent import LatentModel, as_latent_model
from vcex.models.state import evaluates


class _HasLatents(Protocol):
    """What :meth:`WhitenedLatentModel.to_base_result` reads of a result (a ``CounterfactualResult``), named here
    so that models never import from explainers (data flows one way: models -> explainers -> results)."""

    original_latents: torch.Tensor | None
    counterfactual_latents: torch.Tensor | None


ResultT = TypeVar("ResultT", bound=_HasLatents)

DEFAULT_MIN_SCALE = 1e-3  # floor of a direction's spread, relative to the largest (keeps the map invertible)


class WhitenedLatentModel(nn.Module):
    """``encode(images) -> c (N, d)``, ``decode(c) -> images``, c the whitened latent of ``latent_model``.

    Args:
        latent_model: any latent model; its latents (N, ...) are flattened to d numbers.
        mean: (d,) mean of the encoded latents.
        basis: (d, d) orthonormal rows, the principal directions (largest variance first).
        scale: (d,) spread along each direction, all > 0.
        latent_shape: the wrapped model's latent shape without the batch dimension.

    Build it with :meth:`fit` (from images) or :meth:`from_latents`.
    """

    def __init__(
        self,
        latent_model: LatentModel,
        mean: torch.Tensor,
        basis: torch.Tensor,
        scale: torch.Tensor,
        latent_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.latent_model = as_latent_model(latent_model)
        dim = mean.numel()
        if basis.shape != (dim, dim) or scale.shape != (dim,):
            raise InputError(
                f"whitening needs mean (d,), basis (d, d) and scale (d,); got {tuple(mean.shape)}, "
                f"{tuple(basis.shape)} and {tuple(scale.shape)}"
            )
        if not bool((scale > 0).all()):
            raise InputError("every whitening scale must be > 0; build the model with WhitenedLatentModel.fit")
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.register_buffer("mean", mean.detach().float().reshape(dim).clone())
        self.register_buffer("basis", basis.detach().float().clone())
        self.register_buffer("scale", scale.detach().float().clone())

    @classmethod
    @torch.no_grad()
    @evaluates("latent_model")
    def fit(
        cls,
        latent_model: LatentModel,
        images: torch.Tensor,
        *,
        batch_size: int = 256,
        min_scale: float = DEFAULT_MIN_SCALE,
    ) -> WhitenedLatentModel:
        """Whiten ``latent_model`` by the encodings of ``images`` (N, C, H, W), N >= 2 (more than d is best);
        the model encodes in eval mode, its modes restored afterwards."""
        latent_model = as_latent_model(latent_model)
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"whitening images must be a (N, C, H, W) tensor, got {shape}")
        device = device_of(latent_model)
        latents = torch.cat([latent_model.encode(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)])
        return cls.from_latents(latent_model, latents, min_scale=min_scale)

    @classmethod
    def from_latents(
        cls, latent_model: LatentModel, latents: torch.Tensor, *, min_scale: float = DEFAULT_MIN_SCALE
    ) -> WhitenedLatentModel:
        """Whiten ``latent_model`` by given encoded latents (N, ...), N >= 2."""
        if not isinstance(latents, torch.Tensor) or latents.dim() < 2 or latents.shape[0] < 2:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"whitening needs at least 2 encoded latents (N, ...), got {shape}")
        if not bool(torch.isfinite(latents).all()):
            raise InputError("the encoded latents contain NaN or inf; check the latent model and the images")
        if not 0 < min_scale < 1:
            raise InputError(f"min_scale is a share of the largest spread, in (0, 1); got {min_scale}")
        flat = latents.flatten(1).double()
        centred = flat - flat.mean(0)
        covariance = centred.T @ centred / (flat.shape[0] - 1)
        variances, vectors = torch.linalg.eigh(covariance)  # ascending
        variances, vectors = variances.flip(0), vectors.flip(1)
        spread = variances.clamp_min(0).sqrt()
        if float(spread[0]) == 0.0:
            raise InputError("all encoded latents are identical; whitening needs images that differ")
        scale = spread.clamp_min(min_scale * float(spread[0]))
        return cls(latent_model, flat.mean(0), vectors.T, scale, tuple(latents.shape[1:]))

    @property
    def dim(self) -> int:
        return self.mean.numel()

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return getattr(self.latent_model, "image_shape", None)

    def from_base(self, latents: torch.Tensor) -> torch.Tensor:
        """The wrapped model's latents (N, ...) -> whitened (N, d)."""
        flat = latents.flatten(1)
        if flat.shape[1] != self.dim:
            raise InputError(f"latents have {flat.shape[1]} numbers each; this whitening was fitted on {self.dim}")
        return ((flat - self.mean) @ self.basis.T) / self.scale

    def to_base(self, whitened: torch.Tensor) -> torch.Tensor:
        """Whitened latents (N, d) -> the wrapped model's latents (N, *latent_shape)."""
        if whitened.dim() != 2 or whitened.shape[1] != self.dim:
            raise InputError(f"whitened latents must be (N, {self.dim}), got {tuple(whitened.shape)}")
        return (self.mean + (whitened * self.scale) @ self.basis).reshape(-1, *self.latent_shape)

    @torch.no_grad()
    def to_base_result(self, result: ResultT) -> ResultT:
        """A result (a ``CounterfactualResult`` dataclass) of an explainer run on this model, with its latents
        mapped back to the wrapped model's; every other field is the result's own."""
        if result.original_latents is None or result.counterfactual_latents is None:
            raise InputError("the result has no latents to map back; it was not made by a latent method")
        device = self.mean.device
        return dataclasses.replace(
            result,
            original_latents=self.to_base(result.original_latents.to(device)).to(result.original_latents.device),
            counterfactual_latents=self.to_base(result.counterfactual_latents.to(device)).to(
                result.counterfactual_latents.device
            ),
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.from_base(self.latent_model.encode(images))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.latent_model.decode(self.to_base(latents))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))
