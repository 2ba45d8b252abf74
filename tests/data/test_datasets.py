import gzip
import struct

import numpy as np
import pytest
import torch

from vcex.data import canonical_dataset_name, dataset_names, load_dataset, stratified_split
from vcex.data.fashion_mnist import DEBIAN_FASHION_DIR, load_fashion_mnist, read_idx
from vcex.errors import DatasetNotFoundError, InputError


def test_mnist_split_shapes_range_and_balance():
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.labels.bincount().tolist() == [400] * 10 and test.labels.bincount().tolist() == [100] * 10


def test_mnist_split_is_fixed_disjoint_and_mixed():
    first, second = load_dataset("mnist", "test"), load_dataset("mnist", "test")
    assert torch.equal(first.images, second.images)
    train = load_dataset("mnist", "train")
    train_keys = {tuple(x.flatten().tolist()[::7]) for x in train.images[:500]}
    assert not any(tuple(x.flatten().tolist()[::7]) in train_keys for x in first.images[:200])
    assert len(first.labels[:50].unique()) >= 8  # the first test images mix the classes


def test_stratified_split_keeps_class_shares():
    labels = torch.tensor([0] * 50 + [1] * 150)
    train, test = stratified_split(labels, 0.2, seed=1)
    assert len(test) == 40 and labels[test].bincount().tolist() == [10, 30]
    assert set(train.tolist()).isdisjoint(test.tolist())


def test_unknown_dataset_and_split():
    with pytest.raises(InputError, match="known datasets"):
        load_dataset("cifar")
    with pytest.raises(InputError, match="unknown split"):
        load_dataset("mnist", "validation")
    assert canonical_dataset_name("Fashion-MNIST") == "fashion" and "mnist" in dataset_names()


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_from_a_user_folder(tmp_path, gz):
    suffix = ".gz" if gz else ""
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28))
    labels = np.arange(12) % 10
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    data = load_fashion_mnist("test", root=tmp_path)
    assert data.images.shape == (12, 1, 28, 28) and data.labels.tolist() == labels.tolist()
    assert torch.allclose(data.images[:, 0] * 255, torch.tensor(images, dtype=torch.float32))


def test_fashion_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr("vcex.data.fashion_mnist.DEBIAN_FASHION_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("VCEX_FASHION_MNIST", raising=False)
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)


def test_truncated_idx_is_reported(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 5, 28, 28) + b"\x00" * 100)
    with pytest.raises(DatasetNotFoundError, match="truncated"):
        read_idx(path)


@pytest.mark.skipif(not DEBIAN_FASHION_DIR.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_from_debian_package():
    test = load_dataset("fashion", "test")
    assert test.images.shape == (10000, 1, 28, 28) and test.labels.bincount().tolist() == [1000] * 10
