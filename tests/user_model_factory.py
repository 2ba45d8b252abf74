"""An entry point for the tests of ``--classifier package.module:factory``: ``user_model_factory:make``."""

from __future__ import annotations

import torch
from torch import nn


def make() -> nn.Module:
    """(N, 1, 28, 28) -> (N, 10) logits: a BatchNorm CNN of its own architecture (not the zoo's)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)
    )


def not_a_module() -> str:
    return "not a module"


class TinyAutoencoder(nn.Module):
    """(N, 1, side, side) images in [0, 1] <-> (N, 8) latents; encode and decode exported for TorchScript."""

    def __init__(self, side: int = 28) -> None:
        super().__init__()
        self.side = side
        self.encoder = nn.Linear(side * side, 8)
        self.decoder = nn.Linear(8, side * side)

    @torch.jit.export
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images.flatten(1))

    @torch.jit.export
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(latents)).view(-1, 1, self.side, self.side)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


def make_latent() -> nn.Module:
    """``--latent-model user_model_factory:make_latent`` for MNIST."""
    return TinyAutoencoder()


def make_half_size_latent() -> nn.Module:
    """A latent model for 14x14 images: wrong for MNIST."""
    return TinyAutoencoder(side=14)
