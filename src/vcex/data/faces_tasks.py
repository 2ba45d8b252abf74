"""Classification tasks on the synthetic faces: labels that are known functions of known factors.

Each task renders a fixed training set (seed 0) and test set (seed 1). A task with a planted
shortcut has it only in the training set, so the test set shows how much a classifier relies on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch

from vcex.data.base import ImageDataset
from vcex.data.synthetic_faces import BINARY_ATTRIBUTES, FACTORS, NUISANCE_FACTORS, FacesDataset, make_faces
from vcex.errors import InputError

FACES_TRAIN_SIZE = 12_000
FACES_TEST_SIZE = 2_000
# the side the faces models (classifiers, oracles, style generator) work at: 32 keeps every model
# trainable on 2 CPU cores; the renderer itself defaults to 64
FACES_MODEL_SIZE = 32
# the factors a face is made of (not nuisance jitter), in FACTORS order
CONTENT_FACTORS = tuple(name for name in FACTORS if name not in NUISANCE_FACTORS)
ATTRIBUTE_NAMES = tuple(BINARY_ATTRIBUTES)


def _young(factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    # a composite label from three factors: no beard, eyes open, hair not light
    return (factors["beard"] < 0.5) & (factors["eye_openness"] > 0.3) & (factors["hair_color"] < 0.75)


@dataclass(frozen=True)
class FaceTask:
    """A binary label on the faces: ``label`` is an attribute name or a function of the factors."""

    name: str
    label: str | Callable[[Mapping[str, torch.Tensor]], torch.Tensor]
    drivers: tuple[str, ...]
    spurious: tuple[str, float] | None = None
    description: str = ""


FACE_TASKS: dict[str, FaceTask] = {
    "smiling": FaceTask("smiling", "smiling", ("smile",), description="smile > 0"),
    "eyeglasses": FaceTask("eyeglasses", "eyeglasses", ("eyeglasses",), description="wears glasses"),
    "young": FaceTask(
        "young",
        _young,
        ("beard", "eye_openness", "hair_color"),
        description="no beard, eyes open (> 0.3) and hair not light (< 0.75)",
    ),
    "smiling-spurious": FaceTask(
        "smiling-spurious",
        "smiling",
        ("smile",),
        spurious=("warm_background", 0.95),
        description="smile > 0; in training, a warm background agrees with the label in 95% of images",
    ),
}


def task_attributes(task: FaceTask) -> tuple[str, ...]:
    """The binary attributes read from the task's driver factors (left out of MNAC: they are meant to change)."""
    return tuple(name for name, attribute in BINARY_ATTRIBUTES.items() if attribute.factor in task.drivers)


def face_task(name: str) -> FaceTask:
    """The task called ``name`` (``smiling``, ``eyeglasses``, ``young``, ``smiling-spurious``)."""
    if name not in FACE_TASKS:
        raise InputError(f"unknown faces task {name!r}; known tasks: {', '.join(FACE_TASKS)}")
    return FACE_TASKS[name]


def _split_seed(split: str) -> int:
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}; use train or test")
    return 0 if split == "train" else 1


@lru_cache(maxsize=2)
def load_face_table(split: str = "train", size: int = FACES_MODEL_SIZE) -> FacesDataset:
    """The unlabelled faces every task draws from (no shortcut planted), with their factor table.

    Same seeds and sizes as the tasks: train 12,000 faces (seed 0), test 2,000 (seed 1).
    """
    seed = _split_seed(split)
    faces = make_faces(FACES_TRAIN_SIZE if split == "train" else FACES_TEST_SIZE, seed=seed, size=size)
    faces.info["split"] = split
    return faces


def attribute_matrix(faces: FacesDataset, names: tuple[str, ...] = ATTRIBUTE_NAMES) -> torch.Tensor:
    """Binary attributes as a (N, A) float32 0/1 matrix, columns in ``names`` order."""
    return torch.stack([faces.attributes[name].float() for name in names], 1)


def factor_matrix(faces: FacesDataset, names: tuple[str, ...] = CONTENT_FACTORS) -> torch.Tensor:
    """Factors scaled to [0, 1] by their ranges: (N, F) float32, columns in ``names`` order."""
    columns = []
    for name in names:
        spec = FACTORS[name]
        columns.append((faces.factors[name] - spec.low) / (spec.high - spec.low))
    return torch.stack(columns, 1)


@lru_cache(maxsize=4)
def load_faces(task: str, split: str = "train", size: int = FACES_MODEL_SIZE) -> ImageDataset:
    """Faces with the task's label: (N, 3, size, size) float32 in [0, 1], labels (N,) int64 0/1."""
    spec = face_task(task)
    train = _split_seed(split) == 0
    faces = make_faces(
        FACES_TRAIN_SIZE if train else FACES_TEST_SIZE,
        seed=0 if train else 1,
        size=size,
        label=spec.label,
        spurious=spec.spurious if train else None,
    )
    info = {
        "source": "vcex.data.synthetic_faces",
        "task": task,
        "seed": str(0 if train else 1),
        "label": spec.description,
        "spurious": str(spec.spurious if train else None),
        "size": str(size),
    }
    return ImageDataset(faces.images, faces.labels, f"faces-{task}", split, [f"not {task}", task], info)
