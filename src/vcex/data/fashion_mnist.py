"""Fashion-MNIST (70,000 images) from the standard IDX files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from vcex.data.base import ImageDataset
from vcex.errors import DatasetNotFoundError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = (
    "install Debian's package (apt-get update && apt-get install dataset-fashion-mnist), "
    "or pass root=/ set VCEX_FASHION_MNIST to a folder holding the four standard IDX files "
    "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz])"
)


def fashion_mnist_dirs(root: str | Path | None = None) -> list[Path]:
    """Folders searched for the IDX files, in order."""
    dirs = []
    if root is not None:
        dirs.append(Path(root))
    if os.environ.get("VCEX_FASHION_MNIST"):
        dirs.append(Path(os.environ["VCEX_FASHION_MNIST"]))
    dirs.append(DEBIAN_FASHION_DIR)
    return dirs


def _find(stem: str, dirs: list[Path]) -> Path:
    for folder in dirs:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    searched = ", ".join(str(d) for d in dirs)
    raise DatasetNotFoundError(f"Fashion-MNIST file {stem} not found in {searched}: {_HOW_TO_GET}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DatasetNotFoundError(f"cannot read {path} ({error}); the file is damaged: {_HOW_TO_GET}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotFoundError(f"{path} is not an IDX file of unsigned bytes: {_HOW_TO_GET}")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise DatasetNotFoundError(f"{path} is truncated (expected shape {shape}): {_HOW_TO_GET}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST's official split: 60,000 train / 10,000 test.

    Returns images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64.
    """
    dirs = fashion_mnist_dirs(root)
    image_stem, label_stem = _FILES[split]
    image_path, label_path = _find(image_stem, dirs), _find(label_stem, dirs)
    pixels, labels = read_idx(image_path), read_idx(label_path)
    if pixels.ndim != 3 or labels.ndim != 1 or len(pixels) != len(labels):
        raise DatasetNotFoundError(
            f"{image_path} and {label_path} do not hold matching images and labels: {_HOW_TO_GET}"
        )
    images = torch.from_numpy(pixels.copy()).float().unsqueeze(1) / 255.0
    info = {"source": str(image_path.parent), "split": "official"}
    return ImageDataset(images, torch.from_numpy(labels.astype(np.int64)), "fashion", split, FASHION_CLASSES, info)
