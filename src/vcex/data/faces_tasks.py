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
from vcex.data.synthetic_faces import make_faces
from vcex.errors import InputError

FACES_TRAIN_SIZE = 12_000
FACES_TEST_SIZE = 2_000


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


def face_task(name: str) -> FaceTask:
    """The task called ``name`` (``smiling``, ``eyeglasses``, ``young``, ``smiling-spurious``)."""
    if name not in FACE_TASKS:
        raise InputError(f"unknown faces task {name!r}; known tasks: {', '.join(FACE_TASKS)}")
    return FACE_TASKS[name]


@lru_cache(maxsize=4)
def load_faces(task: str, split: str = "train", size: int = 64) -> ImageDataset:
    """Faces with the task's label: (N, 3, size, size) float32 in [0, 1], labels (N,) int64 0/1."""
    spec = face_task(task)
    train = split == "train"
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
    }
    return ImageDataset(faces.images, faces.labels, f"faces-{task}", split, [f"not {task}", task], info)
