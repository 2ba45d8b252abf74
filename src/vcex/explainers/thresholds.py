"""Per-class confidence thresholds taken from how sure the classifier is of real images.

A fixed threshold asks the same confidence of every target class, but a classifier is much less sure
of some classes than of others: on Fashion-MNIST, 27% of real test images of the runner-up classes
pass 0.998, against 75% on MNIST (docs/BENCHMARKS.md). :func:`class_thresholds` asks a counterfactual
to be as sure of its target class as a typical real image of that class is.
"""

from __future__ import annotations

import torch
from torch import nn

from vcex.errors import InputError
from vcex.explainers.base import DEFAULT_THRESHOLD
from vcex.models.classifiers import Classifier, as_classifier, check_classifier_images, predict_proba


def class_thresholds(
    classifier: nn.Module | Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    quantile: float = 0.5,
    cap: float = DEFAULT_THRESHOLD,
    floor: float = 0.5,
    batch_size: int = 512,
) -> torch.Tensor:
    """One threshold per class: the ``quantile`` of the classifier's p(c) over the images labelled c.

    With the default ``quantile=0.5`` a counterfactual counts as valid when the classifier is at least as
    sure of its target class as of the median real image of that class. The thresholds are clipped to
    ``[floor, cap]``: never stricter than vcex's default (0.998), never below 0.5 (where the target
    would not have to be the top class). Pass the result as ``threshold=`` to any explainer.

    Args:
        classifier: the classifier to explain (logits (N, K) for images in its range).
        images: (N, C, H, W) real images, e.g. the training set; every class needs at least one.
        labels: (N,) int64 their true classes in [0, K).
        quantile: in [0, 1]; higher asks more (0.5: the median real image).
        cap, floor: bounds of the thresholds, 0 < floor <= cap < 1.
    Returns:
        (K,) float64 thresholds on the CPU (float64, so that a capped one is the cap exactly).
    """
    if not 0.0 <= quantile <= 1.0:
        raise InputError(f"quantile must lie in [0, 1], got {quantile}")
    if not 0.0 < floor <= cap < 1.0:
        raise InputError(f"need 0 < floor <= cap < 1, got floor {floor} and cap {cap}")
    model = as_classifier(classifier)
    images = check_classifier_images(model, images)
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise InputError(f"labels must be a (N,) tensor with one class per image, N = {len(images)}; got {got}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise InputError(f"labels must be integer class indices, got dtype {labels.dtype}; use labels.long()")
    probs = predict_proba(model, images.to(model.device), batch_size).double().cpu()  # in eval mode, restored
    classes = probs.shape[1]
    labels = labels.cpu().long()
    if labels.min() < 0 or labels.max() >= classes:
        raise InputError(f"labels must lie in [0, {classes}) for this {classes}-class classifier")
    own = probs.gather(1, labels[:, None])[:, 0]
    counts = torch.bincount(labels, minlength=classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0)[:, 0].tolist()
        raise InputError(
            f"no image labelled {missing[0]}{' (and others)' if len(missing) > 1 else ''}: class thresholds need "
            "real images of every class; add some, or use one threshold for all classes"
        )
    thresholds = torch.stack([own[labels == c].quantile(quantile) for c in range(classes)])
    return thresholds.clamp(floor, cap)
