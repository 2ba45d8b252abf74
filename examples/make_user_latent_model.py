"""Make a latent model of your own for ``vcex explain --latent-model``: a small convolutional autoencoder trained for
a few epochs on the embedded MNIST's 5,000 images (under a minute on a CPU), saved as TorchScript whose module
exports ``encode`` and ``decode``.

    python examples/make_user_latent_model.py latent.pt
    vcex explain --dataset mnist --latent-model latent.pt --n 20 --out latent-run

vcex checks it once (decode(encode(x)) gives finite [0, 1] images of x's shape), runs it in eval mode without
changing it and explains the dataset's classifier (or your own, with --classifier) in its latent space.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from vcex.data import load_dataset


class Autoencoder(nn.Module):
    """(N, 1, 28, 28) images in [0, 1] <-> (N, 16) latents; ``decode`` ends in a sigmoid, so images stay in [0, 1]."""

    def __init__(self, latent_dim: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, latent_dim),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 64 * 7 * 7), nn.LeakyReLU(0.2), nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid(),
        )  # fmt: skip

    @torch.jit.export
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    @torch.jit.export
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


def main(path: str = "latent.pt", epochs: int = 5) -> None:
    torch.manual_seed(0)
    images = load_dataset("mnist", "train").images
    model = Autoencoder()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(64):
            optimiser.zero_grad()
            nn.functional.binary_cross_entropy(model(images[batch]), images[batch]).backward()
            optimiser.step()
    model.eval()
    test = load_dataset("mnist", "test").images
    with torch.no_grad():
        error = (model(test) - test).abs().mean().item()
    torch.jit.save(torch.jit.script(model), path)
    print(f"saved {path} (TorchScript exporting encode/decode; test reconstruction L1 {error:.3f})")


if __name__ == "__main__":
    main(*sys.argv[1:2])
