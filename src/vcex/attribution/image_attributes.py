"""Descriptor readers on images: attribution that reads what a counterfactual shows, not its latent.

:class:`~vcex.attribution.LatentAttributes` reads a counterfactual through linear probes fitted on
*encoded* latents. Those probes are calibrated only where encoded latents lie, and an attack in a
generator's latent space mostly leaves that region (on the synthetic faces, 72% of a W attack's change
falls outside the encoded faces' top 20 principal directions), so the probes misread what the
counterfactual image shows. They are also only as good as the encoder: a descriptor the encoder drops
(the faces' smile) cannot be probed at all. :class:`ImageAttributes` instead trains one small CNN with
one output per descriptor on the descriptor dataset's images and reads the counterfactual image
itself: s_a = p_a(x_cf) - p_a(x_start), where x_start is the image the method started from (a latent
method's reconstruction, else the original). It needs no latent at all, so it scores pixel-space and
model-inversion counterfactuals the same way.

>>> readers = ImageAttributes(max_blur=1.2).fit(train_images, Descriptors.from_faces(train_faces))
>>> local = readers.local(CounterfactualAttack(classifier, style).explain(images))
>>> local.top(0, k=3)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from vcex.attribution.base import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DescriptorReader,
    LocalAttribution,
    ProbeReport,
    judge,
    split_descriptors,
)
from vcex.attribution.descriptors import Descriptors
from vcex.cache import load_state_into, load_weights, save_weights
from vcex.checks import check_images, check_positive_finite
from vcex.errors import CacheError, InputError
from vcex.explainers.result import CounterfactualResult
from vcex.models.faces import conv_pair_net
from vcex.models.training import fit, random_blur, random_shift
from vcex.records import dataclass_from_record

_SETTINGS = ("epochs", "batch_size", "lr", "width", "max_shift", "max_blur", "margin", "alpha")


class ImageAttributes(DescriptorReader):
    """One CNN reads every descriptor from images (N, C, H, W) in [0, 1]; fit once, score many.

    Args:
        descriptors: default descriptors for :meth:`fit` (optional).
        epochs, batch_size, lr: training of the reader (Adam, one-cycle schedule).
        width: channels of the first stage (the attribute oracle's design, ``conv_pair_net``).
        max_shift: random translation of training images by up to this many pixels.
        max_blur: half of each training batch is blurred with sigma up to this many pixels, so that
            the reader sees attributes through a generator's softness (1.2 for the faces' generator;
            0 to train on sharp images only).
        margin, alpha: a reader is usable when its held-out accuracy is at least ``chance + margin``
            and a one-sided binomial test against chance gives p < ``alpha``.
        device: where to train and read (default: CUDA when available, else the CPU).
        progress: show a progress bar while training.
    """

    def __init__(
        self,
        descriptors: Descriptors | None = None,
        *,
        epochs: int = 8,
        batch_size: int = 64,
        lr: float = 3e-3,
        width: int = 16,
        max_shift: int = 1,
        max_blur: float = 0.0,
        margin: float = DEFAULT_MARGIN,
        alpha: float = DEFAULT_ALPHA,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(descriptors, margin, alpha)
        lr = check_positive_finite("lr", lr)
        if epochs < 1 or batch_size < 1 or lr <= 0 or width < 1 or max_shift < 0 or max_blur < 0:
            raise InputError(
                "ImageAttributes needs epochs >= 1, batch_size >= 1, lr > 0, width >= 1, max_shift >= 0 and "
                f"max_blur >= 0; got epochs={epochs}, batch_size={batch_size}, lr={lr}, width={width}, "
                f"max_shift={max_shift}, max_blur={max_blur}"
            )
        self.epochs, self.batch_size, self.lr, self.width = epochs, batch_size, lr, width
        self.max_shift, self.max_blur, self.progress = max_shift, max_blur, progress
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network: torch.nn.Module | None = None
        self.image_shape: tuple[int, int, int] | None = None
        self.train_seconds: float | None = None

    # ------------------------------------------------------------------------------ fitting

    def fit(
        self, images: torch.Tensor, descriptors: Descriptors | None = None, test_fraction: float = 0.2, seed: int = 0
    ) -> ImageAttributes:
        """Train the reader on ``images`` (N, C, H, W) in [0, 1] and descriptors with N rows; returns ``self``.

        Rows with NaN in any descriptor are dropped with a note; a seeded split keeps ``test_fraction``
        of the rest to check each descriptor's reader. Descriptors with one class in the training split
        are not trained on and are reported unusable.
        """
        descriptors = self._descriptors(descriptors)
        images = check_images(images)
        split = split_descriptors(descriptors, int(images.shape[0]), test_fraction, seed)
        if not bool(split.keep.all()):
            images = images[split.keep]
        trainable = torch.tensor([not split.one_class(j) for j in range(len(descriptors.names))])
        torch.manual_seed(seed)
        network = conv_pair_net(len(descriptors.names), self.width, in_channels=int(images.shape[1])).to(self.device)
        mask = trainable.float().to(self.device)

        def step(batch: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            batch = random_blur(random_shift(batch, self.max_shift, generator), self.max_blur, generator)
            logits = network(batch.to(self.device) * 2 - 1)
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(self.device), reduction="none")
            return (loss * mask).sum(1).mean() / mask.sum().clamp_min(1.0)

        started = time.perf_counter()
        rows = split.train_rows
        fit(network, step, images[rows], split.targets[rows].float(), epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, seed=seed, progress=self.progress,
            desc="training descriptor readers")  # fmt: skip
        self.train_seconds = time.perf_counter() - started
        self.network = network.eval().requires_grad_(False)
        self.image_shape = tuple(images.shape[1:])
        predicted = (self._logits(images[split.test_rows]) > 0).numpy()
        self.names = list(descriptors.names)
        self.reports = [
            judge(split, j, name, predicted[:, j] if bool(trainable[j]) else None, self.margin, self.alpha,
                  source="the images")
            for j, name in enumerate(self.names)
        ]  # fmt: skip
        self.notes = split.notes
        return self

    # ------------------------------------------------------------------------------ scoring

    @torch.no_grad()
    def _logits(self, images: torch.Tensor, chunk: int = 512) -> torch.Tensor:
        parts = [self.network(part.to(self.device) * 2 - 1).float().cpu() for part in images.split(chunk)]
        return torch.cat(parts)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """p_a(x) for every descriptor: (N, C, H, W) in [0, 1] -> (N, A), in chunks, without gradients."""
        self._check_fitted()
        images = self._checked(images, "images")
        return torch.sigmoid(self._logits(images))

    def local(
        self, result_or_images: CounterfactualResult | torch.Tensor, counterfactual_images: torch.Tensor | None = None
    ) -> LocalAttribution:
        """Local scores s_a = p_a(x_cf) - p_a(x_start), each counterfactual against the image it started from.

        Args:
            result_or_images: a :class:`CounterfactualResult` (its ``reconstructions`` are the start
                when present, as for latent attacks; else its ``originals``), or start images (N, C, H, W).
            counterfactual_images: (N, C, H, W) counterfactuals, when start images are given.
        Returns:
            :class:`LocalAttribution` with ``scores`` (N, A).
        """
        start, counterfactual_images = self._inputs(
            result_or_images, counterfactual_images, "start images and counterfactual_images", _result_images
        )
        start = self._checked(start, "start images")
        counterfactual_images = self._checked(counterfactual_images, "counterfactual images")
        if start.shape[0] != counterfactual_images.shape[0]:
            raise InputError(
                f"{start.shape[0]} start images but {counterfactual_images.shape[0]} counterfactuals: "
                "one counterfactual per image, in order"
            )
        probs = torch.sigmoid(self._logits(torch.cat([start, counterfactual_images])))
        return self._local(probs[: start.shape[0]], probs[start.shape[0] :])

    def hold(self, names: Sequence[str]) -> HeldDescriptors:
        """A differentiable function images (b, C, H, W) in [0, 1] -> (b, M) probabilities of the descriptors
        ``names``, for an attack that must leave them unchanged (``CounterfactualAttack(hold=...)``).

        Raises InputError for an unknown name or a reader that does not beat chance (holding what cannot
        be read holds nothing)."""
        self._check_fitted()
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise InputError("hold needs at least one descriptor name")
        unknown = [name for name in names if name not in self.names]
        if unknown:
            raise InputError(f"unknown descriptors {unknown}; these readers read {', '.join(self.names)}")
        unusable = [name for name in names if not bool(self.usable[self.names.index(name)])]
        if unusable:
            raise InputError(
                f"cannot hold {unusable}: their readers do not beat chance ({self.reasons[unusable[0]]}), so "
                "holding them would hold nothing"
            )
        return HeldDescriptors(self, names)

    # ------------------------------------------------------------------------------ saving

    def save(self, path: str | Path) -> Path:
        """Write the fitted readers to a safetensors file: the network's weights and, as its record, the
        descriptor names, held-out reports, image shape and training settings. Read back with :meth:`load`."""
        self._check_fitted()
        record = {
            "kind": "ImageAttributes",
            "names": self.names,
            "reports": self.summary(),
            "notes": self.notes,
            "image_shape": list(self.image_shape),
            "train_seconds": self.train_seconds,
            "settings": {key: getattr(self, key) for key in _SETTINGS},
        }
        return save_weights(path, self.network.state_dict(), record)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> ImageAttributes:
        """Readers saved by :meth:`save` (no pickle: weights and a JSON record)."""
        tensors, record = load_weights(path)
        if record.get("kind") != "ImageAttributes":
            raise CacheError(f"{path} does not hold ImageAttributes readers (its record says {record.get('kind')!r})")
        readers = cls(**record["settings"], device=device)
        channels = record["image_shape"][0]
        network = conv_pair_net(len(record["names"]), readers.width, in_channels=channels)
        load_state_into(network, tensors, str(path))
        readers.network = network.to(readers.device).eval().requires_grad_(False)
        readers.image_shape = tuple(record["image_shape"])
        readers.names = list(record["names"])
        readers.reports = [dataclass_from_record(ProbeReport, report, str(path)) for report in record["reports"]]
        readers.notes = list(record["notes"])
        readers.train_seconds = record["train_seconds"]
        return readers

    # ------------------------------------------------------------------------------ helpers

    def _checked(self, images: torch.Tensor, name: str) -> torch.Tensor:
        channels, height, width = self.image_shape
        return check_images(images, channels=channels, size=(height, width), name=name)

    def _is_fitted(self) -> bool:
        return self.network is not None


class HeldDescriptors:
    """Descriptor probabilities to hold during an attack (from :meth:`ImageAttributes.hold`): images
    (b, C, H, W) in [0, 1] -> (b, M), with gradients through the readers' network, on the images' device."""

    def __init__(self, readers: ImageAttributes, names: list[str]) -> None:
        self.readers, self.names = readers, names
        # on the readers' device once: indexing with it inside an attack's loop then copies nothing
        self.columns = torch.tensor([readers.names.index(name) for name in names], device=readers.device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.readers.network(images.to(self.readers.device) * 2 - 1)[:, self.columns]
        return torch.sigmoid(logits.float()).to(images.device)

    def __repr__(self) -> str:
        return f"descriptors {', '.join(self.names)} (image readers)"


def _result_images(result: CounterfactualResult) -> tuple[torch.Tensor, torch.Tensor]:
    """The image a result's method started from (a latent method's reconstruction, else the original) and
    its counterfactual."""
    start = result.reconstructions if result.reconstructions is not None else result.originals
    return start, result.counterfactuals
