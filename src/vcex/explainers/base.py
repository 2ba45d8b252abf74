"""The small base every explainer shares: checks, target rules, devices, eval mode, batching.

A method file implements only ``_explain_batch``; everything that is the same for every method
(validating inputs, resolving targets, freezing models, chunking, timing) lives here once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from vcex.checks import check_count, check_device, short_list
from vcex.errors import InputError, ModelError
from vcex.explainers.result import CounterfactualResult, ResultBuilder
from vcex.explainers.thresholds import AUTO, explained_thresholds
from vcex.models.blackbox import is_black_box
from vcex.models.classifiers import (
    Classifier,
    as_classifier,
    check_classifier_images,
    check_differentiable,
    predict_proba,
)
from vcex.models.latent import LatentModel, as_latent_model
from vcex.models.state import evaluating

TARGET_RULES = ("second", "flip")
# settings an explain call resolves from its images (recorded in each result, absent from settings() outside a
# call): a record that asks whether a saved result still stands compares the others
CALL_SETTINGS = ("threshold_reason", "latent_bound_radius", "latent_bound_source")
PAPER_THRESHOLD = 0.75  # Goldwasser & Hooker, reference code (research note section 1)

TargetSpec = int | str | torch.Tensor | list[int]
# one confidence for every class, one per class (e.g. from :func:`vcex.explainers.class_thresholds`), or
# "auto": per class, from how sure the classifier is of the explained images (capped at 0.998)
ThresholdSpec = float | str | Sequence[float] | torch.Tensor


def check_threshold(threshold: ThresholdSpec) -> float | str | tuple[float, ...]:
    """A threshold as a float, per-class thresholds as a tuple of floats, each strictly in (0, 1), or ``"auto"``."""
    if isinstance(threshold, str):
        if threshold != AUTO:
            raise InputError(f"threshold must be a probability in (0, 1), one per class, or 'auto', got {threshold!r}")
        return threshold
    if isinstance(threshold, bool):
        raise InputError(f"threshold must be a probability in (0, 1) or one per class, got {threshold!r}")
    if isinstance(threshold, (int, float)) or (isinstance(threshold, torch.Tensor) and threshold.dim() == 0):
        value = float(threshold)
        if not 0.0 < value < 1.0:  # also refuses NaN
            raise InputError(f"threshold must lie strictly between 0 and 1, got {value}")
        return value
    if isinstance(threshold, torch.Tensor):
        if threshold.dim() != 1:
            raise InputError(
                f"per-class thresholds must be a 1-D tensor (one per class), got shape {tuple(threshold.shape)}"
            )
        threshold = threshold.detach().cpu().tolist()
    try:
        values = tuple(float(value) for value in threshold)
    except (TypeError, ValueError):
        raise InputError(
            f"threshold must be a probability in (0, 1) or a sequence of them (one per class), got {threshold!r}"
        ) from None
    bad = [i for i, value in enumerate(values) if not 0.0 < value < 1.0]
    if not values or bad:
        raise InputError(
            "per-class thresholds must each lie strictly between 0 and 1"
            + (f"; class {bad[0]} has {values[bad[0]]}" if bad else ", and there must be at least one")
        )
    return values


def resolve_targets(target: TargetSpec, probs: torch.Tensor, lower: bool = False) -> torch.Tensor:
    """Turn a target specification into one class per image.

    Args:
        target: a class index, a (N,) tensor or list of them, ``"second"`` (the runner-up class) or
            ``"flip"`` (the other class of a binary classifier).
        probs: (N, K) classifier probabilities on the originals.
        lower: the target is a class to lower, so it may equal the current prediction.
    Returns:
        (N,) int64 on ``probs``' device.
    """
    n, classes = probs.shape
    predicted = probs.argmax(1)
    if isinstance(target, str):
        if target == "second":
            targets = probs.topk(2, dim=1).indices[:, 1] if not lower else predicted
        elif target == "flip":
            if classes != 2:
                raise InputError(
                    f"target='flip' needs a binary classifier, this one has {classes} classes; "
                    "use 'second' or a class index"
                )
            targets = 1 - predicted if not lower else predicted
        else:
            raise InputError(
                f"unknown target rule {target!r}; use a class index, a tensor of them, "
                f"or one of {', '.join(TARGET_RULES)}"
            )
    elif isinstance(target, bool):
        raise InputError("target must be a class index, a tensor of them, 'second' or 'flip', not a bool")
    elif isinstance(target, int):
        targets = torch.full((n,), target, dtype=torch.long, device=probs.device)
    else:
        targets = torch.as_tensor(target, device=probs.device)
        if targets.is_floating_point() or targets.dtype == torch.bool:
            raise InputError(f"target tensor must hold integer class indices, got dtype {targets.dtype}")
        if targets.dim() == 0:
            targets = targets.expand(n)
        if targets.shape != (n,):
            raise InputError(f"target must have one class per image: shape ({n},), got {tuple(targets.shape)}")
        targets = targets.long()
    out_of_range = ((targets < 0) | (targets >= classes)).nonzero().flatten().tolist()
    if out_of_range:
        bad = targets[out_of_range[0]].item()
        raise InputError(
            f"target class {bad} is out of range for a classifier with {classes} classes "
            f"(valid: 0..{classes - 1}; images {short_list(out_of_range)})"
        )
    if not lower:
        same = (targets == predicted).nonzero().flatten().tolist()
        if same:
            raise InputError(
                f"the target equals the classifier's current prediction for images {short_list(same)}: "
                "there is nothing to change; pick another class, or target='second'"
            )
    return targets


class Explainer:
    """Base of every counterfactual explainer: ``Method(classifier, ...).explain(images, target=...)``.

    Subclasses declare what they need (``needs_gradients``, ``needs_latent_model``) and implement
    ``_explain_batch``; the base checks inputs once, resolves targets, freezes the models in eval
    mode (restoring them afterwards), splits the work into chunks of ``batch_size`` and times it.

    Args:
        classifier: a :class:`vcex.Classifier`, any ``nn.Module`` or callable returning logits
            (N, K) for images in [0, 1].
        latent_model: object with ``encode``/``decode`` (methods that need one).
        threshold: confidence the target class must pass for a counterfactual to count as valid: one
            probability, one per class (a sequence or 1-D tensor of length K, e.g. from
            :func:`vcex.explainers.class_thresholds`), used by each image's target class, or ``"auto"``
            (default): 0.998 where the classifier is that sure of the typical explained image of a class,
            else that class's median confidence (:func:`vcex.explainers.thresholds.explained_thresholds`).
            The thresholds used and why are in each result's ``threshold`` and ``settings``.
        batch_size: images per chunk (bounds memory).
        device: where to compute; default the classifier's device.
        progress: show progress bars.
    """

    name: ClassVar[str] = "explainer"
    needs_gradients: ClassVar[bool] = True
    needs_latent_model: ClassVar[bool] = False

    def __init__(
        self,
        classifier: nn.Module | Classifier,
        latent_model: LatentModel | None = None,
        *,
        threshold: ThresholdSpec = AUTO,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        self.classifier = as_classifier(classifier)
        from vcex.explainers.registry import check_black_box  # the registry imports this module

        check_black_box(type(self), is_black_box(self.classifier))
        if self.needs_latent_model:
            if latent_model is None:
                raise InputError(f"{type(self).__name__} needs a latent model (an object with encode/decode)")
            self.latent_model = as_latent_model(latent_model)
        else:
            self.latent_model = as_latent_model(latent_model) if latent_model is not None else None
        self.threshold = check_threshold(threshold)
        # the threshold of the explain call under way ("auto" resolved) and why; None outside a call
        self._call_threshold: float | tuple[float, ...] | None = None
        self._threshold_reason: str | None = None
        # why the threshold is what it is, where the caller decided it (e.g. from training images); recorded
        self.threshold_reason: str | None = None
        self.batch_size = check_count("batch_size", batch_size, 1)
        self.device = check_device(device) if device is not None else self.classifier.device
        self.progress = progress

    def settings(self) -> dict:
        """The explainer's settings, recorded with every result."""
        settings = {"threshold": self.threshold, "batch_size": self.batch_size}
        reason = self._threshold_reason or self.threshold_reason
        if reason is not None:
            settings["threshold_reason"] = reason
        return settings

    def explain(
        self, images: torch.Tensor, target: TargetSpec = "second", *, lower: bool = False
    ) -> CounterfactualResult:
        """Counterfactuals for ``images`` (N, C, H, W) in the classifier's range.

        ``target``: a class index, a (N,) tensor of them, ``"second"`` or ``"flip"``. With
        ``lower=True`` the target class's probability is pushed below ``1 - threshold`` instead.
        """
        started = time.perf_counter()
        images = check_classifier_images(self.classifier, images)
        input_device = images.device
        with evaluating(*self._models()):
            images = images.to(self.device)
            probs = self.predict_proba(images)
            targets = resolve_targets(target, probs, lower)
            if isinstance(self.threshold, tuple) and len(self.threshold) != probs.shape[1]:
                raise InputError(
                    f"{len(self.threshold)} per-class thresholds were given, but the classifier has "
                    f"{probs.shape[1]} classes; give one threshold per class, or a single one"
                )
            if self.threshold == AUTO:
                self._call_threshold, self._threshold_reason = explained_thresholds(probs)
            try:
                self._prepare(images)
                # once per classifier: a probe forward on every call would cost ~1% of a one-image explain
                if self.needs_gradients and getattr(self, "_differentiable", None) is not self.classifier:
                    check_differentiable(self.classifier, images, type(self).__name__)
                    self._differentiable = self.classifier
                builder = ResultBuilder(len(images))
                for chunk in torch.arange(len(images), device=self.device).split(self.batch_size):
                    chunk_images, chunk_targets = images[chunk], targets[chunk]
                    outputs = self._explain_batch(chunk_images, chunk_targets, lower)
                    chunk_probs = probs[chunk]
                    builder.add(
                        CounterfactualResult(
                            method=self.name,
                            originals=chunk_images,
                            target=chunk_targets,
                            original_class=chunk_probs.argmax(1),
                            original_prob=chunk_probs.gather(1, chunk_targets[:, None])[:, 0],
                            threshold=self.active_threshold,
                            lower=lower,
                            seconds=0.0,
                            settings=self.settings(),
                            **outputs,
                        )
                    )
            finally:
                self._call_threshold = self._threshold_reason = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        result = builder.result(seconds=time.perf_counter() - started)
        return result.to(input_device)

    def _prepare(self, images: torch.Tensor) -> None:
        """Once per ``explain`` call, before the chunks: work that needs every image (e.g. a latent bound)."""

    @property
    def active_threshold(self) -> float | tuple[float, ...]:
        """The threshold in force: ``threshold``, or inside an ``explain`` call what ``"auto"`` resolved to."""
        if self._call_threshold is not None:
            return self._call_threshold
        if self.threshold == AUTO:
            raise InputError(
                f"{type(self).__name__}'s threshold is 'auto': it is decided from the images of an explain call "
                "(or the images of a fit); pass a number or per-class thresholds to use it outside one"
            )
        return self.threshold

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        """Return counterfactuals, target_prob, success, steps, forward/backward passes (and latents)."""
        raise NotImplementedError

    def stop_threshold(self, target: torch.Tensor, lower: bool) -> float | torch.Tensor:
        """The probability each image must pass: ``threshold`` to raise, ``1 - threshold`` to lower; a float,
        or (B,) on ``target``'s device with per-class thresholds (each image's target class's)."""
        threshold = self.active_threshold
        if isinstance(threshold, float):
            return 1.0 - threshold if lower else threshold
        per_image = torch.tensor(threshold, device=target.device)[target]
        return 1.0 - per_image if lower else per_image

    def reached(self, target_prob: torch.Tensor, target: torch.Tensor, lower: bool = False) -> torch.Tensor:
        """(B,) bool: where ``target_prob`` (B,) passed the threshold of each image's ``target`` (B,)."""
        threshold = self.stop_threshold(target, lower)
        return target_prob < threshold if lower else target_prob > threshold

    def threshold_logit(self, target: torch.Tensor) -> float | torch.Tensor:
        """``logit(threshold)`` of each image's target (B,): the logit margin at which p_target = threshold."""
        threshold = self.stop_threshold(target, lower=False)
        if isinstance(threshold, torch.Tensor):
            return torch.logit(threshold.double()).to(torch.get_default_dtype())
        return math.log(threshold / (1 - threshold))

    @property
    def lowest_threshold(self) -> float:
        """The threshold, or the lowest of the per-class ones."""
        threshold = self.active_threshold
        return threshold if isinstance(threshold, float) else min(threshold)

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Classifier probabilities (N, K), in chunks; the first chunk checks the output's shape."""
        return predict_proba(self.classifier, images, self.batch_size)

    def _decode_checked(self, latents: torch.Tensor, like: torch.Tensor | torch.Size) -> torch.Tensor:
        """Decode once at the edge and check the images match what the classifier takes (``like``: images
        of the expected shape, or that shape)."""
        decoded = self.latent_model.decode(latents)
        shape = like if isinstance(like, torch.Size) else like.shape
        if not isinstance(decoded, torch.Tensor) or decoded.shape != shape:
            got = tuple(decoded.shape) if isinstance(decoded, torch.Tensor) else type(decoded).__name__
            raise ModelError(
                f"the latent model decodes to {got}, but the images are {tuple(shape)}; "
                "use a latent model made for these images"
            )
        return decoded

    def _models(self) -> tuple[object, ...]:
        """The models ``explain`` (and a fit) runs, kept in eval mode with frozen parameters while it runs
        and restored exactly afterwards (:func:`vcex.models.state.evaluating`)."""
        return (self.classifier, self.latent_model)
