"""Named models, trained by vcex's own code on first use and cached as safetensors.

``load_classifier("mnist-cnn")`` trains on first call (with a progress bar), saves the weights with a
record of data, seed and test accuracy under :func:`vcex.cache.cache_dir`, and loads them afterwards.
A damaged cache file is reported and retrained, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vcex.cache import cache_dir, load_state_into, load_weights, save_weights
from vcex.data import ImageDataset, canonical_dataset_name, load_dataset
from vcex.errors import CacheError, InputError
from vcex.models.classifiers import Classifier, FaceCNN, KNNOracle, OracleNet, SmallCNN
from vcex.models.latent import VAE, ClassAutoencoders
from vcex.models.training import accuracy, class_autoencoder_loss, classification_loss, fit

# per-dataset normalisation the classifiers apply internally (training-set pixel mean and std)
_NORMALISATION = {"mnist": ((0.1307,), (0.3081,)), "fashion": ((0.2860,), (0.3530,))}
# epochs scale with dataset size so a cold start stays within minutes on 2 CPU cores
_EPOCHS = {
    "mnist": {"cnn": 8, "oracle": 8, "vae": 30, "im-ae": 40},
    "fashion": {"cnn": 4, "oracle": 3, "vae": 8, "im-ae": 6},
    "faces": {"cnn": 3, "oracle": 2, "vae": 10, "im-ae": 6},
}


@dataclass
class ModelSpec:
    """How to build and train one named model."""

    name: str
    role: str
    dataset: str
    build: Callable[[ImageDataset], nn.Module]
    train: Callable[[nn.Module, ImageDataset, ImageDataset, int, bool], dict]
    seed: int
    config: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        text = json.dumps(
            {"role": self.role, "dataset": self.dataset, "seed": self.seed, **self.config}, sort_keys=True
        )
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    @property
    def path(self) -> Path:
        return cache_dir() / f"{self.name}-{self.fingerprint}.safetensors"


def _classifier_network(kind: str, seed: int) -> Callable[[ImageDataset], nn.Module]:
    def build(data: ImageDataset) -> nn.Module:
        torch.manual_seed(seed)
        channels = data.image_shape[0]
        if kind == "oracle":
            network = OracleNet(channels, data.num_classes)
        elif data.name.startswith("faces-"):
            network = FaceCNN(channels, data.num_classes, data.image_shape[-1])
        else:
            network = SmallCNN(channels, data.num_classes, data.image_shape[-1])
        mean, std = _NORMALISATION.get(data.name, ((0.5,) * channels, (0.5,) * channels))
        return Classifier(network, mean, std, input_shape=data.image_shape, class_names=data.class_names)

    return build


def _train_classifier(epochs: int, max_shift: int, lr: float) -> Callable:
    def train(model: nn.Module, train: ImageDataset, test: ImageDataset, seed: int, progress: bool) -> dict:
        fit(
            model,
            classification_loss(model, max_shift),
            train.images,
            train.labels,
            epochs=epochs,
            lr=lr,
            seed=seed,
            progress=progress,
            desc=f"training {train.name} classifier",
        )
        return {"test_accuracy": round(accuracy(model, test.images, test.labels), 4)}

    return train


def _build_vae(seed: int, latent_dim: int) -> Callable[[ImageDataset], nn.Module]:
    def build(data: ImageDataset) -> nn.Module:
        torch.manual_seed(seed)
        return VAE(data.image_shape[0], latent_dim, image_size=data.image_shape[-1])

    return build


def _train_vae(epochs: int, beta: float) -> Callable:
    def train(model: nn.Module, train: ImageDataset, test: ImageDataset, seed: int, progress: bool) -> dict:
        fit(
            model,
            lambda x, _y, _g: model.loss(x, beta),
            train.images,
            train.labels,
            epochs=epochs,
            lr=3e-3,
            batch_size=128,
            seed=seed,
            progress=progress,
            desc=f"training {train.name} VAE",
        )
        with torch.no_grad():
            reconstruction = model.decode(model.encode(test.images))
            mse = float((reconstruction - test.images).pow(2).mean())
        return {"test_reconstruction_mse": round(mse, 5)}

    return train


def _build_class_aes(seed: int) -> Callable[[ImageDataset], nn.Module]:
    def build(data: ImageDataset) -> nn.Module:
        torch.manual_seed(seed)
        return ClassAutoencoders(data.num_classes, data.image_shape)

    return build


def _train_class_aes(epochs: int) -> Callable:
    def train(model: nn.Module, train: ImageDataset, test: ImageDataset, seed: int, progress: bool) -> dict:
        step = class_autoencoder_loss(model, train.images, train.labels)
        fit(
            model,
            step,
            train.images,
            train.labels,
            epochs=epochs,
            lr=3e-3,
            batch_size=256,
            seed=seed,
            progress=progress,
            desc=f"training {train.name} realism autoencoders",
        )
        with torch.no_grad():
            errors = (model(test.images) - test.images.unsqueeze(1)).pow(2).flatten(2).mean(2)
            own = errors.gather(1, test.labels[:, None]).squeeze(1)
            # how often the image's own class autoencoder beats every other class's: IM1's premise
            best = errors[:, : model.num_classes].argmin(1)
        return {
            "test_own_class_mse": round(float(own.mean()), 5),
            "test_own_class_best": round(float((best == test.labels).float().mean()), 4),
        }

    return train


def model_spec(name: str) -> ModelSpec:
    """The recipe behind a zoo name such as ``"mnist-cnn"``, ``"fashion-vae"``."""
    if "-" not in name:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    dataset_part, role = name.rsplit("-", 1) if not name.endswith("-im-ae") else (name[:-6], "im-ae")
    try:
        dataset = canonical_dataset_name(dataset_part)
    except InputError:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(model_names())}") from None
    epochs = _EPOCHS["faces"] if dataset.startswith("faces-") else _EPOCHS.get(dataset, _EPOCHS["fashion"])
    if role == "cnn":
        return ModelSpec(
            name,
            role,
            dataset,
            _classifier_network("cnn", 0),
            _train_classifier(epochs["cnn"], 0, 2e-3),
            0,
            {"arch": "SmallCNN", "epochs": epochs["cnn"], "lr": 2e-3},
        )
    if role == "oracle":
        return ModelSpec(
            name,
            role,
            dataset,
            _classifier_network("oracle", 1),
            _train_classifier(epochs["oracle"], 2, 3e-3),
            1,
            {"arch": "OracleNet", "epochs": epochs["oracle"], "shift": 2, "lr": 3e-3},
        )
    if role == "vae":
        return ModelSpec(
            name,
            role,
            dataset,
            _build_vae(2, 16),
            _train_vae(epochs["vae"], 1.0),
            2,
            {"arch": "VAE", "latent_dim": 16, "epochs": epochs["vae"], "beta": 1.0},
        )
    if role == "im-ae":
        return ModelSpec(
            name,
            role,
            dataset,
            _build_class_aes(3),
            _train_class_aes(epochs["im-ae"]),
            3,
            {"arch": "ClassAutoencoders", "epochs": epochs["im-ae"]},
        )
    raise InputError(f"unknown model {name!r}; known models: {', '.join(model_names())}")


def model_names() -> list[str]:
    """Every name :func:`load_model` accepts."""
    from vcex.data import dataset_names

    return [f"{d}-{r}" for d in dataset_names() for r in ("cnn", "oracle", "vae", "im-ae")]


def load_model(name: str, *, progress: bool = True, retrain: bool = False) -> nn.Module:
    """Load a zoo model from the cache, training (and caching) it first if needed. Returns it in eval mode."""
    spec = model_spec(name)
    data = None
    if spec.path.exists() and not retrain:
        try:
            tensors, record = load_weights(spec.path)
            if record.get("fingerprint") != spec.fingerprint:
                raise CacheError(f"{spec.path} was made by another recipe")
            data = load_dataset(spec.dataset, "train")
            model = spec.build(data)
            load_state_into(model, tensors, str(spec.path))
            model.training_record = record
            return model.eval()
        except CacheError as error:
            warnings.warn(f"cached {name} is unusable ({error}); retraining it", stacklevel=2)
    data = data or load_dataset(spec.dataset, "train")
    test = load_dataset(spec.dataset, "test")
    model = spec.build(data)
    started = time.perf_counter()
    metrics = spec.train(model, data, test, spec.seed, progress)
    record = {
        "name": name,
        "role": spec.role,
        "dataset": spec.dataset,
        "data": data.info,
        "seed": spec.seed,
        "config": spec.config,
        "fingerprint": spec.fingerprint,
        "train_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        **metrics,
    }
    save_weights(spec.path, model.state_dict(), record)
    model.training_record = record
    return model.eval()


def load_classifier(name: str, **kwargs) -> Classifier:
    """A zoo classifier (``"mnist-cnn"``, ``"mnist-oracle"``...): takes [0, 1] images, returns logits."""
    model = load_model(name, **kwargs)
    if not isinstance(model, Classifier):
        raise InputError(f"{name!r} is not a classifier")
    return model


def load_latent_model(name: str, **kwargs) -> VAE:
    """A zoo latent model (``"mnist-vae"``) with ``encode``/``decode``."""
    model = load_model(name, **kwargs)
    if not isinstance(model, VAE):
        raise InputError(f"{name!r} is not a latent model")
    return model


def load_knn_oracle(dataset: str, k: int = 5) -> KNNOracle:
    """A kNN classifier on the dataset's training images (built in memory, nothing to train)."""
    data = load_dataset(dataset, "train")
    return KNNOracle(data.images, data.labels, k=k, num_classes=data.num_classes)
