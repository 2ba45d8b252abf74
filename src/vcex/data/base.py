"""The dataset record every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageDataset:
    """Images with integer labels.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1].
        labels: (N,) int64 class indices.
        name: dataset name as the registry knows it (``"mnist"``, ``"fashion"``...).
        split: ``"train"`` or ``"test"``.
        class_names: one name per class index.
        info: provenance (source files, seed) recorded with models trained on it.
        files: each image's file, relative to its folder (``cat/001.png``), for datasets read from files.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    split: str
    class_names: list[str]
    info: dict[str, str] = field(default_factory=dict)
    files: list[str] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: torch.Tensor | list[int]) -> ImageDataset:
        """The images at ``indices``, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long)
        files = None if self.files is None else [self.files[i] for i in index.tolist()]
        return ImageDataset(
            self.images[index], self.labels[index], self.name, self.split, self.class_names, dict(self.info), files
        )


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split keeping each class's share: returns (train_indices, test_indices), each in a
    seeded random order, so the first N test images mix the classes."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in labels.unique(sorted=True):
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_test = round(len(members) * test_fraction)
        test.append(members[:n_test])
        train.append(members[n_test:])
    train_all, test_all = torch.cat(train), torch.cat(test)
    return (
        train_all[torch.randperm(len(train_all), generator=generator)],
        test_all[torch.randperm(len(test_all), generator=generator)],
    )
