"""Encoder plus optimisation: a latent model whose ``encode`` refines the encoder's latent by inversion.

An amortised encoder answers in one pass but misses what it was never pushed to keep: the faces
encoder loses most smiles and open eyes (the attribute oracle reads the same smile on a face and its
reconstruction for 54% of faces) although the generator can draw them. Starting from the encoder's
latent and running Adam on the pixel error of ``decode(z)`` against the image (GAN inversion, as in
Image2StyleGAN; the encoder's start keeps it near the encoded faces) recovers much of it, at the cost
of ``steps`` decoder forward and backward passes per image.

>>> refined = RefinedEncoder(style_autoencoder, steps=300)
>>> w = refined.encode(images)          # (N, 128), closer reconstructions than style_autoencoder.encode
"""

from __future__ import annotations

import torch
from torch import nn

from vcex.checks import check_count, check_positive_finite, device_of
from vcex.errors import InputError
from vcex.models.latent import LatentModel, as_latent_model
from vcex.models.state import evaluating

DEFAULT_STEPS = 300
# Adam's step on the faces generator's W (per-coordinate spread ~7): 0.1 and 0.3 gave the same fidelity on
# 200 test faces (attribute agreement 0.95, against 0.90 for the encoder alone), 0.3 a little more PSNR
DEFAULT_LR = 0.3


class RefinedEncoder(nn.Module):
    """``encode(images) -> z`` by the wrapped model's encoder, then ``steps`` Adam steps on mean((decode(z) - x)^2).

    Args:
        latent_model: any latent model with ``encode`` and a differentiable ``decode``.
        steps: Adam steps per image (0: the encoder alone).
        lr: Adam's learning rate on the latent (in the latent's own units).
        batch_size: images refined at once.

    ``decode`` is the wrapped model's. Deterministic: no sampling.
    """

    def __init__(
        self, latent_model: LatentModel, *, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR, batch_size: int = 256
    ) -> None:
        super().__init__()
        self.latent_model = as_latent_model(latent_model)
        self.steps, self.batch_size = check_count("steps", steps), check_count("batch_size", batch_size, 1)
        self.lr = check_positive_finite("lr", lr)

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        return getattr(self.latent_model, "image_shape", None)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> refined latents (N, ...); works inside ``torch.no_grad()`` too."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"images must be a (N, C, H, W) tensor, got {shape}")
        images = images.to(device_of(self.latent_model))
        # eval mode and frozen weights while refining: only the latent is optimised, the model comes back as it was
        with evaluating(self.latent_model):
            return torch.cat([self._refine(chunk) for chunk in images.split(self.batch_size)])

    def _refine(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            start = self.latent_model.encode(images)
        if self.steps == 0:
            return start
        with torch.enable_grad():
            latents = start.detach().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([latents], lr=self.lr)
            for _ in range(self.steps):
                # per-image means, summed: one image's step does not depend on the batch it is in
                loss = (self.latent_model.decode(latents) - images).pow(2).flatten(1).mean(1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return latents.detach()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.latent_model.decode(latents)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))
