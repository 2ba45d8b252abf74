"""Datasets: every loader returns an :class:`ImageDataset` of (N, C, H, W) float images in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vcex.data.base import ImageDataset, stratified_split
from vcex.data.fashion_mnist import load_fashion_mnist
from vcex.data.folder import (
    FOLDER_PREFIX,
    canonical_folder_name,
    folder_file_stem,
    image_files,
    load_folder_dataset,
    load_image_folder,
    read_images,
)
from vcex.data.mnist import load_mnist
from vcex.errors import InputError

_LOADERS: dict[str, Callable[..., ImageDataset]] = {
    "mnist": lambda split, root=None: load_mnist(split),
    "fashion": load_fashion_mnist,
}
_ALIASES = {"fashion-mnist": "fashion", "fashion_mnist": "fashion", "fmnist": "fashion"}


def _faces_loader(task: str) -> Callable[..., ImageDataset]:
    def load(split: str, root: str | Path | None = None) -> ImageDataset:
        from vcex.data.faces_tasks import load_faces

        return load_faces(task, split)

    return load


for _task in ("smiling", "eyeglasses", "young", "smiling-spurious"):
    _LOADERS[f"faces-{_task}"] = _faces_loader(_task)
SPLITS = ("train", "test")


def dataset_names() -> list[str]:
    """Names :func:`load_dataset` accepts (aliases not included)."""
    return sorted(_LOADERS)


def canonical_dataset_name(name: str) -> str:
    """Resolve an alias (``"fashion-mnist"``) to the registry name, or raise listing the known names;
    ``folder:PATH[@SIZE]`` comes back with PATH absolute."""
    if name.startswith(FOLDER_PREFIX):
        return canonical_folder_name(name)
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _LOADERS:
        raise InputError(
            f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}, or folder:PATH for a folder "
            "with one subfolder of images per class"
        )
    return key


def dataset_file_stem(name: str) -> str:
    """A dataset's name as it may stand in a cache file's name (a folder dataset's holds a path)."""
    return folder_file_stem(name) if name.startswith(FOLDER_PREFIX) else name


def load_dataset(name: str, split: str = "train", root: str | Path | None = None) -> ImageDataset:
    """Load a dataset by name (``"mnist"``, ``"fashion"``, ``"folder:PATH"``) and split (``"train"``, ``"test"``).

    ``folder:PATH`` reads a folder of images with one subfolder per class (:func:`load_image_folder`, its
    default split), ``folder:PATH@SIZE`` resizes them to SIZE x SIZE.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if name.startswith(FOLDER_PREFIX):
        return load_folder_dataset(name, split)
    key = canonical_dataset_name(name)
    return _LOADERS[key](split, root=root)


__all__ = [
    "ImageDataset",
    "dataset_file_stem",
    "dataset_names",
    "canonical_dataset_name",
    "load_dataset",
    "load_mnist",
    "load_fashion_mnist",
    "image_files",
    "load_image_folder",
    "read_images",
    "stratified_split",
]
