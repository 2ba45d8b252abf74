"""Latent models: the protocol explainers rely on, and the VAE backend for MNIST-sized images."""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from vcex.errors import InputError, ModelError


@runtime_checkable
class LatentModel(Protocol):
    """Anything with batched ``encode`` and ``decode`` in the classifier's input range.

    ``encode(images (N, C, H, W)) -> latents (N, ...)``; ``decode(latents) -> images (N, C, H, W)``.
    """

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def as_latent_model(model: object) -> LatentModel:
    """Accept any object with callable ``encode`` and ``decode``; refuse others with a clear error.

    vcex's own latent models come back as they are; any other is wrapped in :class:`UserLatentModel`, whose
    ``encode`` checks what the model returns (and takes the mean of a VAE's ``(mean, log-variance)``).
    """
    if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))):
        raise InputError(
            f"latent model must have encode(images) -> latents and decode(latents) -> images; "
            f"{type(model).__name__} does not"
        )
    if isinstance(model, UserLatentModel) or type(model).__module__.split(".")[0] == "vcex":
        return model  # type: ignore[return-value]
    return UserLatentModel(model)


def _described(value: object) -> str:
    """What an encoder returned, for an error message: a tensor by its shape, a sequence by its items' kinds."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        items = ", ".join(_described(item) if isinstance(item, torch.Tensor) else type(item).__name__ for item in value)
        return f"a {type(value).__name__} of {len(value)} ({items})"
    return f"a {type(value).__name__}"


class UserLatentModel(nn.Module):
    """A latent model from outside vcex, as explainers see it: ``decode`` is its own, and ``encode`` checks
    that it returns latents (N, ...) for N images.

    Many VAEs' ``encode`` returns ``(mean, log-variance)``: the first element is taken as the latent (the
    posterior mean, so explanations are repeatable), with a warning the first time. Anything else that is
    not a tensor with the batch as its first dimension raises :class:`ModelError`. Other attributes are the
    wrapped model's, and its train/eval mode is the wrapped model's, so freezing the wrapper freezes the model
    and restores exactly its mode.
    """

    def __init__(self, model: object) -> None:
        super().__init__()
        self.wrapped = model  # a submodule when it is an nn.Module (moved, frozen and fingerprinted with it)
        self._warned = False

    @property
    def training(self) -> bool:  # type: ignore[override]
        wrapped = self.__dict__.get("_modules", {}).get("wrapped")
        return wrapped.training if wrapped is not None else self.__dict__.get("_own_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        wrapped = self.__dict__.get("_modules", {}).get("wrapped")
        if wrapped is not None:
            wrapped.training = mode
        else:
            self.__dict__["_own_training"] = mode

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "wrapped":
                raise
            return getattr(self.wrapped, name)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (N, ...) of ``images`` (N, C, H, W): the model's, or the first element of what it returns."""
        latents = self.wrapped.encode(images)
        if isinstance(latents, torch.Tensor) and latents.dim() >= 1 and latents.shape[0] == images.shape[0]:
            return latents
        first = latents[0] if isinstance(latents, (tuple, list)) and latents else None
        if isinstance(first, torch.Tensor) and first.dim() >= 1 and first.shape[0] == images.shape[0]:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"the latent model's encode() returns {_described(latents)}; its first element is taken as the "
                    "latent (for a VAE: the posterior mean). If that is not the latent its decode() takes, give "
                    "vcex an object whose encode() returns it",
                    stacklevel=2,
                )
            return first
        raise ModelError(
            f"the latent model's encode() returned {_described(latents)} for {images.shape[0]} images; it must "
            f"return the latents as one tensor ({images.shape[0]}, ...), or a tuple whose first element is that "
            "tensor (a VAE's (mean, log-variance))"
        )

    def decode(self, latents: torch.Tensor, **options: object) -> torch.Tensor:
        """The model's decode; keyword options (a diffusion autoencoder's ``x_T=``, ``steps=``) are passed on."""
        return self.wrapped.decode(latents, **options)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstructions (N, C, H, W): ``decode(encode(images))``."""
        return self.decode(self.encode(images))


class VAE(nn.Module):
    """Convolutional VAE for (N, C, 28, 28) images in [0, 1].

    ``encode`` returns the posterior mean (deterministic, so explanations are repeatable);
    ``encode_distribution`` returns (mean, log-variance) for sampling. ``decode`` ends in a sigmoid,
    so images come back in [0, 1].
    """

    def __init__(self, in_channels: int = 1, latent_dim: int = 16, width: int = 32, image_size: int = 28) -> None:
        super().__init__()
        if image_size % 4:
            raise InputError(f"VAE image_size must be divisible by 4, got {image_size}")
        self.latent_dim = latent_dim
        self.image_shape = (in_channels, image_size, image_size)
        side = image_size // 4
        self._side = side
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, 256),
            nn.LeakyReLU(0.2),
        )
        self.to_mean = nn.Linear(256, latent_dim)
        self.to_logvar = nn.Linear(256, latent_dim)
        self.decoder_fc = nn.Sequential(
            nn.Linear(latent_dim, 256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, 2 * width * side * side),
            nn.LeakyReLU(0.2),
        )
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, in_channels, 4, 2, 1),
        )
        self._width = width

    @property
    def latent_radius(self) -> float:
        """The radius that holds 99.9% of the N(0, I) prior the decoder was trained to read: the region a
        latent attack stays in (:class:`vcex.CounterfactualAttack`'s ``latent_bound``)."""
        from scipy.stats import chi2

        return float(chi2.ppf(0.999, self.latent_dim)) ** 0.5

    def encode_distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(images)
        return self.to_mean(hidden), self.to_logvar(hidden).clamp(-12, 8)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_distribution(images)[0]

    def decode_logits(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = self.decoder_fc(latents).view(-1, 2 * self._width, self._side, self._side)
        return self.decoder_conv(hidden)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(latents))

    def loss(self, images: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """Negative ELBO per image (Bernoulli likelihood), averaged over the batch."""
        mean, logvar = self.encode_distribution(images)
        latents = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        reconstruction = F.binary_cross_entropy_with_logits(self.decode_logits(latents), images, reduction="sum")
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum()
        return (reconstruction + beta * kl) / images.shape[0]


class ClassAutoencoders(nn.Module):
    """One small dense autoencoder per class plus one for all classes, evaluated together.

    Used for the IM1/IM2 realism scores (Van Looveren & Klaise): an image that looks like class t
    is reconstructed better by class t's autoencoder. ``forward(images (N, C, H, W))`` returns
    reconstructions (N, K + 1, C, H, W): index k < K is class k's autoencoder, index K the shared one.
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], hidden: int = 128, code: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        dims = [int(torch.tensor(image_shape).prod()), hidden, code, hidden]
        dims.append(dims[0])
        count = num_classes + 1
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(count, a, b) * (2.0 / a) ** 0.5) for a, b in zip(dims[:-1], dims[1:])
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(count, 1, b)) for b in dims[1:])

    def run(self, flat: torch.Tensor) -> torch.Tensor:
        """flat: (K + 1, B, D) one batch per autoencoder -> reconstructions (K + 1, B, D)."""
        hidden = flat
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.baddbmm(bias, hidden, weight)
            hidden = torch.sigmoid(hidden) if i == last else F.relu(hidden)
        return hidden

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1)
        out = self.run(flat.unsqueeze(0).expand(self.num_classes + 1, -1, -1))
        return out.transpose(0, 1).reshape(images.shape[0], self.num_classes + 1, *self.image_shape)
