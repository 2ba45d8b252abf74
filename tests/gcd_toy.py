"""The quadrant toy of the GCD and BB-LIG tests: a latent model and a black box whose true direction is known."""

from __future__ import annotations

import torch
from torch import nn


class Quadrants(nn.Module):
    """z (N, 4) -> images (N, 1, 8, 8): quadrant k is sigmoid(z_k); encode inverts it exactly."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        quadrants = [images[:, 0, :4, :4], images[:, 0, :4, 4:], images[:, 0, 4:, :4], images[:, 0, 4:, 4:]]
        return torch.logit(torch.stack([q.mean((1, 2)) for q in quadrants], 1).clamp(1e-4, 1 - 1e-4))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        values = torch.sigmoid(latents)
        top = torch.cat([values[:, 0, None, None].expand(-1, 4, 4), values[:, 1, None, None].expand(-1, 4, 4)], 2)
        bottom = torch.cat([values[:, 2, None, None].expand(-1, 4, 4), values[:, 3, None, None].expand(-1, 4, 4)], 2)
        return torch.cat([top, bottom], 1)[:, None]


def reader(images: torch.Tensor) -> torch.Tensor:
    """Logits (N, 2): class 1's margin is 8 * (mean of quadrant 0 - 0.5) + 4 * (mean of quadrant 1 - 0.5)."""
    margin = 8 * (images[:, 0, :4, :4].mean((1, 2)) - 0.5) + 4 * (images[:, 0, :4, 4:].mean((1, 2)) - 0.5)
    return torch.stack([torch.zeros_like(margin), margin], 1)


class BlackBox:
    """A callable with a query counter and no gradients, as vcex.models.blackbox's."""

    def __init__(self, function=reader) -> None:
        self.function = function
        self.queries = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.queries += len(images)
            return self.function(images)


def faces(latents: list[list[float]]) -> torch.Tensor:
    return Quadrants().decode(torch.tensor(latents))
