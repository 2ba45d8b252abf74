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
from vcex.data import ImageDataset, canonical_dataset_name, dataset_file_stem, load_dataset
from vcex.data.faces_tasks import FACES_MODEL_SIZE
from vcex.data.folder import FOLDER_PREFIX
from vcex.data.profiles import profile_for
from vcex.errors import CacheError, InputError
from vcex.models.classifiers import Classifier, FaceCNN, KNNOracle, OracleNet, SmallCNN
from vcex.models.diffae import DIFFAE_RECIPES, DiffusionAutoencoder, reconstruction_figures, train_diffae
from vcex.models.latent import VAE, ClassAutoencoders
from vcex.models.training import accuracy, class_autoencoder_loss, classification_loss, fit

SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
# per-dataset normalisation the classifiers apply internally (training-set pixel mean and std)
_NORMALISATION = {"mnist": ((0.1307,), (0.3081,)), "fashion": ((0.2860,), (0.3530,))}
# roles every registry dataset has; ``duq`` is DISC's manifold-consistency model (vcex.models.duq)
DATASET_ROLES = ("cnn", "oracle", "vae", "im-ae", "duq")
# the DUQ recipe: the paper's gradient penalty 0.05 and length scale 0.1; centroid momentum 0.99 suits a few
# epochs (see build_duq). On the 32x32 faces length scale 0.1 stayed at chance (test accuracy 0.50-0.52 after
# 2-6 epochs) while 0.3 reached 0.96 in 3 epochs (the faces' profile, vcex.data.profiles).
DUQ_RECIPE = {
    "arch": "DUQNet",
    "lr": 2e-3,
    "batch_size": 64,
    "gradient_penalty": 0.05,
    "momentum": 0.99,
    "length_scale": 0.1,
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
    # split -> training data; None: the dataset registry's ``load_dataset(dataset, split)``
    load_data: Callable[[str], object] | None = None

    @property
    def fingerprint(self) -> str:
        text = json.dumps(
            {"role": self.role, "dataset": self.dataset, "seed": self.seed, **self.config}, sort_keys=True
        )
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    @property
    def path(self) -> Path:
        stem = self.name
        if self.dataset.startswith(FOLDER_PREFIX):  # the name holds a path: file-name-safe instead
            stem = f"{dataset_file_stem(self.dataset)}-{self.role}"
        return cache_dir() / f"{stem}-{self.fingerprint}.safetensors"

    @property
    def shipped_path(self) -> Path:
        """Where a copy of the cache file would ship inside the package (used when the cache has none)."""
        return SHIPPED_WEIGHTS / self.path.name

    def data(self, split: str) -> object:
        return self.load_data(split) if self.load_data is not None else load_dataset(self.dataset, split)


def _classifier_network(kind: str, seed: int) -> Callable[[ImageDataset], nn.Module]:
    def build(data: ImageDataset) -> nn.Module:
        torch.manual_seed(seed)
        channels = data.image_shape[0]
        if kind == "oracle" and _pair_net_oracle(data.name, channels):
            from vcex.models.faces import conv_pair_net

            network = conv_pair_net(data.num_classes, in_channels=channels)
        elif kind == "oracle":
            network = OracleNet(channels, data.num_classes)
        elif profile_for(data.name).faces:
            network = FaceCNN(channels, data.num_classes, data.image_shape[-1])
        else:
            network = SmallCNN(channels, data.num_classes, data.image_shape[-1])
        mean, std = _NORMALISATION.get(data.name, ((0.5,) * channels, (0.5,) * channels))
        return Classifier(network, mean, std, input_shape=data.image_shape, class_names=data.class_names)

    return build


def _pair_net_oracle(dataset: str, channels: int) -> bool:
    """Whether the dataset's oracle is ``conv_pair_net`` rather than ``OracleNet``: OracleNet's strided first
    layer cannot read a 32x32 face's smile (test accuracy 0.56 on the faces written as an RGB folder, against
    0.969 for the pair net; docs/benchmarks/folders.md), so the faces and every RGB folder get the pair net;
    digits keep OracleNet."""
    return profile_for(dataset).faces or (dataset.startswith(FOLDER_PREFIX) and channels == 3)


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


def _build_duq(seed: int, recipe: dict) -> Callable[[ImageDataset], nn.Module]:
    def build(data: ImageDataset) -> nn.Module:
        from vcex.models.duq import build_duq

        channels = data.image_shape[0]
        mean, std = _NORMALISATION.get(data.name, ((0.5,) * channels, (0.5,) * channels))
        options = {k: recipe[k] for k in ("momentum", "length_scale")}
        return build_duq(data, mean=mean, std=std, seed=seed, **options)

    return build


def _train_duq(recipe: dict) -> Callable:
    def train(model: nn.Module, train: ImageDataset, test: ImageDataset, seed: int, progress: bool) -> dict:
        from vcex.models.duq import train_duq

        options = {k: recipe[k] for k in ("lr", "batch_size", "gradient_penalty")}
        return train_duq(model, train, recipe["epochs"], seed=seed, progress=progress, test_dataset=test, **options)

    return train


def model_spec(name: str) -> ModelSpec:
    """The recipe behind a zoo name such as ``"mnist-cnn"``, ``"fashion-vae"``, ``"faces-style"``."""
    if name in FACE_MODELS:
        return _face_model_spec(name)
    if name in DIFFAE_MODELS:
        return _diffae_spec(name)
    spec = _dataset_model_spec(name)
    if profile_for(spec.dataset).faces:
        spec.config = {**spec.config, "image_size": FACES_MODEL_SIZE}
        if spec.role == "cnn":
            spec.config["arch"] = "FaceCNN"
        if spec.role == "oracle":
            spec.config["arch"] = "conv_pair_net"
    return spec


def _dataset_model_spec(name: str) -> ModelSpec:
    if "-" not in name:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    dataset_part, role = name.rsplit("-", 1) if not name.endswith("-im-ae") else (name[:-6], "im-ae")
    try:
        dataset = canonical_dataset_name(dataset_part)
    except InputError:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(model_names())}") from None
    if role not in DATASET_ROLES:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(model_names())}")
    extra: dict = {}
    if dataset.startswith(FOLDER_PREFIX):
        epochs, extra, channels = _folder_recipe(dataset)
        name = f"{dataset}-{role}"  # the folder's absolute path, however it was written
        if role == "oracle" and _pair_net_oracle(dataset, channels):
            extra["arch"] = "conv_pair_net"
    else:
        epochs = dict(profile_for(dataset).zoo_epochs)
    spec = _role_spec(name, role, dataset, epochs)
    spec.config.update(extra)
    return spec


def _role_spec(name: str, role: str, dataset: str, epochs: dict[str, int]) -> ModelSpec:
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
    if role == "duq":
        recipe = {**DUQ_RECIPE, **profile_for(dataset).duq_recipe, "epochs": epochs["duq"]}
        return ModelSpec(name, role, dataset, _build_duq(4, recipe), _train_duq(recipe), 4, recipe)
    raise AssertionError(role)  # roles are checked by the caller


# a folder of the user's images gets the MNIST recipes with epochs set for about as many optimiser steps as
# on MNIST's 4,000 training images (the batch sizes are the recipes'), within the folder profile's bounds
FOLDER_STEPS = {"cnn": 500, "oracle": 500, "vae": 1000, "im-ae": 640, "duq": 380}
_RECIPE_BATCH = {"cnn": 64, "oracle": 64, "vae": 128, "im-ae": 256, "duq": DUQ_RECIPE["batch_size"]}


def _folder_recipe(dataset: str) -> tuple[dict[str, int], dict, int]:
    """Epochs per role for a folder dataset (by its training-set size), the folder's fingerprint for the
    recipe (new images, new models) and its images' channels. Refuses images the zoo's networks cannot take."""
    train = load_dataset(dataset, "train")
    channels, height, width = train.image_shape
    if height != width or height % 4 or height < 12:
        raise InputError(
            f"{dataset}: the zoo's networks need square images whose side is a multiple of 4 and at least 12, "
            f"and these are {height}x{width} (height x width); resize them when reading: "
            f"{dataset.split('@')[0]}@32 (or another multiple of 4)"
        )
    low, high = profile_for(dataset).folder_epochs
    epochs = {role: round(steps * _RECIPE_BATCH[role] / len(train)) for role, steps in FOLDER_STEPS.items()}
    epochs = {role: max(low, min(high, value)) for role, value in epochs.items()}
    return epochs, {"data": train.info["fingerprint"], "train_images": len(train)}, channels


def model_names() -> list[str]:
    """Every name :func:`load_model` accepts."""
    from vcex.data import dataset_names

    return [f"{d}-{r}" for d in dataset_names() for r in DATASET_ROLES] + list(FACE_MODELS) + list(DIFFAE_MODELS)


# ---------------------------------------------------------------------------------------------
# diffusion autoencoders (vcex.models.diffae): GCD's backend as published, recipes in DIFFAE_RECIPES
# ---------------------------------------------------------------------------------------------

DIFFAE_MODELS = {"mnist-diffae": "mnist", "faces-diffae": "faces"}
# test images the zoo's record measures reconstruction on (inversion + decoding of each is 2 x steps UNet passes)
DIFFAE_TEST_IMAGES = 200


def _diffae_spec(name: str) -> ModelSpec:
    dataset = DIFFAE_MODELS[name]
    recipe = DIFFAE_RECIPES[dataset]

    def build(data: object) -> nn.Module:
        torch.manual_seed(14)
        return DiffusionAutoencoder(recipe.config)

    def train(model: nn.Module, train: object, test: object, seed: int, progress: bool) -> dict:
        # a GPU when there is one: the recipe was sized on one (the device is recorded, not fingerprinted)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        train_diffae(
            model,
            train.images,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            seed=seed,
            progress=progress,
            device=device,
        )
        figures = reconstruction_figures(model, test.images[:DIFFAE_TEST_IMAGES].to(device))
        model.cpu()
        figures = {f"test_{k}": v for k, v in figures.items()}
        return {"latent_radius": round(model.latent_radius, 4), "device": device, **figures}

    if dataset == "faces":
        from vcex.data.faces_tasks import load_face_table

        return ModelSpec(name, "diffae", dataset, build, train, 14, recipe.record(), load_face_table)
    return ModelSpec(name, "diffae", dataset, build, train, 14, recipe.record())


# ---------------------------------------------------------------------------------------------
# models of the faces that serve every face task: the attribute oracle, the factor regressor whose
# features are the generator's perceptual loss, and the style generator with its encoder
# ---------------------------------------------------------------------------------------------

FACE_MODELS = {
    "faces-attributes": "attribute oracle: reads every binary attribute (evaluation and MNAC only)",
    "faces-factors": "factor regressor: perceptual features for training the style generator",
    "faces-style": "style generator with encoder (W, W+ and StyleSpace), the faces' latent model",
}
# The attribute oracle is trained with half of each batch blurred (sigma up to this many pixels): one
# trained on sharp faces alone reads "no eyeglasses" and "eyes closed" on every face blurred by sigma 0.8,
# so it scored a generator's softness, not its attributes.
ATTRIBUTE_ORACLE_BLUR = 1.2


def _face_model_spec(name: str) -> ModelSpec:
    from vcex.data.faces_tasks import FACES_TEST_SIZE, FACES_TRAIN_SIZE, load_face_table

    data = {"image_size": FACES_MODEL_SIZE, "train_faces": FACES_TRAIN_SIZE, "test_faces": FACES_TEST_SIZE}
    profile = profile_for("faces")
    epochs = profile.zoo_epochs
    if name in ("faces-attributes", "faces-factors"):
        role = name.removeprefix("faces-")
        build = _build_attribute_oracle if role == "attributes" else _build_factor_regressor
        arch = "AttributeOracle" if role == "attributes" else "FactorRegressor"
        seed = 11 if role == "attributes" else 12
        config = {"arch": arch, "epochs": epochs[role], **data}
        if role == "attributes":
            config["design"] = "conv3x3-bn pairs, width 16"
            config["blur_sigma"] = ATTRIBUTE_ORACLE_BLUR
        return ModelSpec(
            name, role, "faces", build, _train_face_model(role, epochs[role]), seed, config, load_face_table
        )
    return ModelSpec(
        name,
        "style",
        "faces",
        _build_face_style,
        train_face_style,
        13,
        {**profile.style_recipe, **data},
        load_face_table,
    )


def _build_attribute_oracle(data: object) -> nn.Module:
    from vcex.models.faces import AttributeOracle

    torch.manual_seed(11)
    return AttributeOracle()


def _build_factor_regressor(data: object) -> nn.Module:
    from vcex.models.faces import FactorRegressor

    torch.manual_seed(12)
    return FactorRegressor(image_size=FACES_MODEL_SIZE)


def _build_face_style(data: object) -> nn.Module:
    from vcex.models.stylegan import StyleAutoencoder, StyleGeneratorConfig

    torch.manual_seed(13)
    return StyleAutoencoder(StyleGeneratorConfig.small(image_size=FACES_MODEL_SIZE))


def _train_face_model(kind: str, epochs: int) -> Callable:
    def train(model: nn.Module, train: object, test: object, seed: int, progress: bool) -> dict:
        from vcex.models.faces import train_attribute_oracle, train_factor_regressor

        if kind == "attributes":
            return train_attribute_oracle(
                model, train, test, epochs=epochs, seed=seed, progress=progress, blur_sigma=ATTRIBUTE_ORACLE_BLUR
            )
        return train_factor_regressor(model, train, test, epochs=epochs, seed=seed, progress=progress)

    return train


def train_face_style(
    model: nn.Module, train: object, test: object, seed: int, progress: bool, epochs: int | None = None
) -> dict:
    """Train the faces' style generator with the faces profile's ``style_recipe`` (``epochs`` overrides
    its epoch count, e.g. for a CPU time budget) and measure it on ``test``: PSNR and attribute agreement."""
    from vcex.models.faces import attribute_agreement, detail_weights
    from vcex.models.stylegan import reconstruction_psnr, train_style_autoencoder

    perceptual = load_model("faces-factors", progress=progress).requires_grad_(False)
    recipe = profile_for("faces").style_recipe
    figures = train_style_autoencoder(
        model,
        train.images,
        epochs=recipe["epochs"] if epochs is None else epochs,
        batch_size=recipe["batch_size"],
        lr=recipe["lr"],
        generator_lr=recipe["generator_lr"],
        perceptual=perceptual.features,
        perceptual_weight=recipe["perceptual_weight"],
        latent_weight=recipe["latent_weight"],
        pixel_weights=detail_weights(train, FACES_MODEL_SIZE, recipe["detail_boost"]),
        holdout=0.0,
        progress=progress,
        seed=seed,
    )
    oracle = load_model("faces-attributes", progress=progress)
    agreement = attribute_agreement(oracle, test.images, model)
    return {
        "train_seconds_per_epoch": round(figures["seconds_per_epoch"], 1),
        "test_psnr": round(reconstruction_psnr(model, test.images), 2),
        "test_attribute_agreement": agreement["mean"],
        "test_attribute_agreement_per_attribute": agreement["per_attribute"],
    }


def _load_file(spec: ModelSpec, path: Path) -> nn.Module:
    """Build ``spec``'s model and fill it from ``path``; a file of another recipe raises CacheError."""
    tensors, record = load_weights(path)
    if record.get("fingerprint") != spec.fingerprint:
        raise CacheError(f"{path} was made by another recipe")
    model = spec.build(spec.data("train"))
    load_state_into(model, tensors, str(path))
    model.training_record = record
    return model.eval()


def load_model(name: str, *, progress: bool = True, retrain: bool = False) -> nn.Module:
    """Load a zoo model from the cache (or the weights shipped with vcex), training and caching it first
    if neither has it. Returns it in eval mode."""
    spec = model_spec(name)
    if not retrain:
        for path, where in ((spec.path, "cached"), (spec.shipped_path, "shipped")):
            if not path.exists():
                continue
            try:
                return _load_file(spec, path)
            except CacheError as error:
                warnings.warn(f"{where} {name} is unusable ({error}); trying the next source", stacklevel=2)
    data = spec.data("train")
    test = spec.data("test")
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
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        **metrics,
    }
    save_weights(spec.path, model.state_dict(), record)
    model.training_record = record
    _warn_if_near_chance(spec, record, getattr(data, "num_classes", None))
    return model.eval()


def _warn_if_near_chance(spec: ModelSpec, record: dict, num_classes: int | None) -> None:
    """A classifier or oracle that learned (almost) nothing makes its explanations or agreement meaningless."""
    accuracy_ = record.get("test_accuracy")
    if spec.role not in ("cnn", "oracle") or accuracy_ is None or not num_classes:
        return
    chance = 1.0 / num_classes
    if accuracy_ >= chance + 0.1 * (1 - chance):
        return
    use = "its oracle agreement" if spec.role == "oracle" else "explanations of it"
    check = (
        "check the folder's labels, add images, or resize them (folder:PATH@SIZE)"
        if spec.dataset.startswith(FOLDER_PREFIX)
        else "check its recipe's epochs"
    )
    warnings.warn(
        f"{spec.name} reached test accuracy {accuracy_:.3f}, close to chance ({chance:.3f} for {num_classes} "
        f"classes), so {use} would mean little: {check}",
        stacklevel=3,
    )


def load_classifier(name: str, **kwargs) -> Classifier:
    """A zoo classifier (``"mnist-cnn"``, ``"mnist-oracle"``...): takes [0, 1] images, returns logits."""
    model = load_model(name, **kwargs)
    if not isinstance(model, Classifier):
        raise InputError(f"{name!r} is not a classifier")
    return model


def load_latent_model(name: str, **kwargs) -> VAE | DiffusionAutoencoder:
    """A zoo latent model (``"mnist-vae"``, ``"mnist-diffae"``) with ``encode``/``decode``."""
    model = load_model(name, **kwargs)
    if not isinstance(model, (VAE, DiffusionAutoencoder)):
        raise InputError(f"{name!r} is not a latent model")
    return model


def load_duq(dataset: str, **kwargs) -> Classifier:
    """The zoo's DUQ classifier for a dataset (``"mnist"``...): DISC's manifold-consistency model, whose
    certainty K_c(x) in (0, 1] says how typical x is of class c. Trained on first use (~2 min for MNIST)."""
    from vcex.models.duq import duq_network

    model = load_model(f"{canonical_dataset_name(dataset)}-duq", **kwargs)
    if duq_network(model) is None:
        raise InputError(f"{dataset}-duq is not a DUQ classifier")
    return model


def load_knn_oracle(dataset: str, k: int = 5) -> KNNOracle:
    """A kNN classifier on the dataset's training images (built in memory, nothing to train)."""
    data = load_dataset(dataset, "train")
    return KNNOracle(data.images, data.labels, k=k, num_classes=data.num_classes)
