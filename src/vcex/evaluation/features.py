"""Feature extractors for set-level realism metrics (Frechet distance, KID).

Inception weights cannot be downloaded here, so realism is measured on the penultimate layer of a
classifier trained on the same dataset: the input of its final ``nn.Linear``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vcex.errors import InputError, ModelError
from vcex.models.state import evaluating

FeatureFunction = Callable[[torch.Tensor], torch.Tensor]


class PenultimateFeatures:
    """Images (N, ...) -> features (N, D): the input of the last ``nn.Linear`` that runs in ``model``.

    The whole model runs (so a :class:`vcex.models.Classifier` normalises its input as usual), in eval
    mode and without gradients, in chunks of ``batch_size``; each module's train/eval flag is restored
    afterwards. Features come back as float32 on the model's output device.

    Args:
        model: an ``nn.Module`` that contains at least one ``nn.Linear`` (its head).
        batch_size: images per forward pass.
    """

    def __init__(self, model: nn.Module, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = int(batch_size)
        self._linears = [module for module in model.modules() if isinstance(module, nn.Linear)]

    def _one_chunk(self, images: torch.Tensor) -> torch.Tensor:
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []

        def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen.append((inputs[0], output))

        handles = [linear.register_forward_hook(keep) for linear in self._linears]
        try:
            logits = self.model(images)
        finally:
            for handle in handles:
                handle.remove()
        if not seen:
            raise ModelError(
                "penultimate_features: no nn.Linear ran in the model's forward pass; "
                "pass a feature function images -> (N, D) instead"
            )
        features, head_output = seen[-1]
        if not _is_output(head_output, logits):
            raise ModelError(
                "penultimate_features: the model's last layer is not an nn.Linear (its output is not the "
                "model's output); pass a feature function images -> (N, D) instead"
            )
        return features.flatten(1).float()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"penultimate_features: need a non-empty batch of images (N, ...), got {shape}")
        with evaluating(self.model):  # dropout off and batch-norm running statistics: features must be repeatable
            return torch.cat([self._one_chunk(chunk) for chunk in images.split(self.batch_size)])


def _is_output(head_output: torch.Tensor, logits: object) -> bool:
    """Whether the head's output is the model's output (a binary :class:`Classifier` prepends a zero column)."""
    if head_output is logits:
        return True
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or head_output.dim() != 2:
        return False
    if logits.shape[0] != head_output.shape[0] or logits.shape[1] < head_output.shape[1]:
        return False
    return torch.equal(logits[:, logits.shape[1] - head_output.shape[1] :], head_output)


def penultimate_features(classifier: nn.Module, batch_size: int = 256) -> PenultimateFeatures:
    """Feature function from a classifier's penultimate layer: images (N, ...) -> features (N, D).

    Works for :class:`vcex.models.Classifier` and for ``SmallCNN`` (D = 128), ``FaceCNN`` (D = 512),
    ``OracleNet`` (D = 4 * width) and any ``nn.Module`` whose last layer is an ``nn.Linear`` (the last
    one to run, and its output is the model's output): a forward hook captures that layer's input.
    Use a classifier trained on the dataset being judged, ideally not the one being explained, so
    counterfactuals cannot fool the feature space they are scored in.

    Raises:
        InputError: ``classifier`` is not an ``nn.Module`` or contains no ``nn.Linear``; pass your own
            feature function (any callable images -> (N, D)) to the realism metrics instead.
        ModelError: (when called) the model's output does not come straight from its last ``nn.Linear``.
    """
    if not isinstance(classifier, nn.Module):
        raise InputError(
            f"penultimate_features needs an nn.Module ending in nn.Linear, got {type(classifier).__name__}; "
            "pass a feature function images -> (N, D) instead"
        )
    if not any(isinstance(module, nn.Linear) for module in classifier.modules()):
        raise InputError(
            f"penultimate_features: {type(classifier).__name__} has no nn.Linear layer to read features from; "
            "pass a feature function images -> (N, D) instead"
        )
    if batch_size < 1:
        raise InputError(f"penultimate_features: batch_size must be at least 1, got {batch_size}")
    return PenultimateFeatures(classifier, batch_size)
