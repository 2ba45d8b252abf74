"""Make a classifier of your own for ``vcex explain --classifier``: a small BatchNorm CNN trained for one epoch on
the embedded MNIST's 5,000 images (a few seconds on a CPU), saved as TorchScript and, where onnx, onnxscript and
onnxruntime are installed (``pip install "vcex[onnx]" onnx onnxscript``), also as ONNX beside it.

    python examples/make_user_classifier.py user.pt          # user.pt and user.onnx
    vcex explain --dataset mnist --classifier user.pt --normalize 0.1307/0.3081 --n 20 --out user-run
    vcex explain --dataset mnist --classifier user.onnx --normalize 0.1307/0.3081 --method linear --n 20 --out box-run

The network expects normalised input (mean 0.1307, std 0.3081), which ``--normalize`` tells vcex; vcex feeds it
[0, 1] images through that normalisation and never trains or changes it. The ONNX file is a black box: vcex only
queries it (no gradients), so only the methods that need none explain it, and metrics.json counts the queries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import sys
import warnings
from pathlib import Path

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
    onnx_path = str(Path(path).with_suffix(".onnx"))
    if export_onnx(network, onnx_path):
        print(f"saved {onnx_path} (ONNX, a black box for vcex); expects --normalize {MEAN}/{STD}")


def export_onnx(network: nn.Module, path: str) -> bool:
    """Write ``network`` as ONNX with a free batch size, if torch's exporter (onnx, onnxscript) and onnxruntime are
    installed; whether it did."""
    if not all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime")):
        print('no ONNX file: pip install "vcex[onnx]" onnx onnxscript to write one')
        return False
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes on optional packages (torchvision) it does not need here
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (torch.zeros(2, 1, 28, 28),),
                path,
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,  # one self-contained file (its sha256 then covers the weights too)
            )
    finally:
        exporter_log.setLevel(level)
    return True


if __name__ == "__main__":
    main(*sys.argv[1:2])
