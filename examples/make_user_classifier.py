"""Make a classifier of your own for ``vcex explain --classifier``: a small BatchNorm CNN trained for one epoch on
the embedded MNIST's 5,000 images (a few seconds on a CPU), saved as TorchScript.

    python examples/make_user_classifier.py user.pt
    vcex explain --dataset mnist --classifier user.pt --normalize 0.1307/0.3081 --n 20 --out user-run

The network expects normalised input (mean 0.1307, std 0.3081), which ``--normalize`` tells vcex; vcex feeds it
[0, 1] images through that normalisation and never trains or changes it.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from vcex.data import load_dataset

MEAN, STD = 0.1307, 0.3081


def make_network() -> nn.Module:
    """(N, 1, 28, 28) normalised images -> (N, 10) logits: two conv + BatchNorm blocks and a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip


def main(path: str = "user.pt", epochs: int = 1) -> None:
    torch.manual_seed(0)
    train = load_dataset("mnist", "train")
    images, labels = (train.images - MEAN) / STD, train.labels
    network = make_network()
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(network(images[batch]), labels[batch]).backward()
            optimiser.step()
    network.eval()
    test = load_dataset("mnist", "test")
    with torch.no_grad():
        accuracy = (network((test.images - MEAN) / STD).argmax(1) == test.labels).float().mean().item()
    torch.jit.save(torch.jit.script(network), path)
    print(f"saved {path} (TorchScript; test accuracy {accuracy:.3f}); expects --normalize {MEAN}/{STD}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
