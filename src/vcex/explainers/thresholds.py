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
from vcex.models.classifiers import Classifier, as_classifier, check_classifier_images, predict_proba

# vcex's fixed threshold, chosen by measurement (docs/BENCHMARKS.md): the paper's 0.75 leaves many
# counterfactuals on the decision boundary, where independent oracles disagree. Per-class thresholds never ask more.
DEFAULT_THRESHOLD = 0.998
THRESHOLD_FLOOR = 0.5  # below it the target would not have to be the top class
AUTO = "auto"
# a class needs this many explained images predicted as it for its own median; fewer use the pooled median
MIN_CLASS_IMAGES = 5


def class_thresholds(
    classifier: nn.Module | Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    quantile: float = 0.5,
    cap: float = DEFAULT_THRESHOLD,
    floor: float = THRESHOLD_FLOOR,
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


def training_thresholds(
    classifier: nn.Module | Classifier, images: torch.Tensor, labels: torch.Tensor
) -> tuple[float | tuple[float, ...], str]:
    """The CLI's default threshold: :func:`class_thresholds` on labelled (training) images, one float where they are
    all equal (0.998 on MNIST), with the reason recorded beside the results."""
    thresholds = class_thresholds(classifier, images, labels)
    values = tuple(float(t) for t in thresholds)
    below = [c for c, t in enumerate(values) if t < DEFAULT_THRESHOLD]
    rule = (
        f"per class, the classifier's confidence on the median of the {len(labels)} labelled training images of "
        f"that class, clipped to [{THRESHOLD_FLOOR}, {DEFAULT_THRESHOLD}]"
    )
    if not below:
        return values[0] if len(set(values)) == 1 else values, (
            f"auto: {DEFAULT_THRESHOLD} for every class ({rule}: the classifier is at least that sure of the "
            "median training image of every class)"
        )
    return values, (
        f"auto: {rule}; classes {_short(below)} are below {DEFAULT_THRESHOLD}, since the classifier is less sure "
        "of their real images"
    )


def explained_thresholds(
    probs: torch.Tensor, *, cap: float = DEFAULT_THRESHOLD, floor: float = THRESHOLD_FLOOR
) -> tuple[float | tuple[float, ...], str]:
    """``threshold="auto"`` without labelled real images: thresholds from the images being explained.

    Per class c, the median of p(c) over the explained images the classifier puts in class c; a class with
    fewer than ``MIN_CLASS_IMAGES`` such images takes the median top-class probability over all of them.
    Clipped to ``[floor, cap]``, so a classifier that is sure of real images keeps ``cap`` (0.998) everywhere.

    Args:
        probs: (N, K) the classifier's probabilities on the explained (real) images, N >= 1.
    Returns:
        ``(threshold, reason)``: one float when every class gets the same value, else a tuple of K floats;
        ``reason`` says which rule gave them and how sure the classifier is of these images.
    """
    confidence, predicted = probs.double().cpu().max(1)
    classes = probs.shape[1]
    pooled = float(confidence.median())
    values = []
    own_classes = []
    for c in range(classes):
        mine = confidence[predicted == c]
        if len(mine) >= MIN_CLASS_IMAGES:
            values.append(float(mine.quantile(0.5)))
            own_classes.append(c)
        else:
            values.append(pooled)
    clipped = tuple(min(max(value, floor), cap) for value in values)
    share = float((confidence > cap).double().mean())
    sure = f"the classifier puts {share:.0%} of the {len(confidence)} explained images above {cap}"
    if len(set(clipped)) == 1:
        if clipped[0] == cap:
            return cap, f"auto: {cap}, as the classifier is at least that sure of the typical explained image ({sure})"
        return clipped[0], (
            f"auto: {clipped[0]:.4g} for every class, the median confidence of the classifier on the explained "
            f"images ({sure}); pass threshold=class_thresholds(classifier, train_images, train_labels) to take "
            "them from labelled training images instead"
        )
    pooled_classes = sorted(set(range(classes)) - set(own_classes))
    pooled_note = (
        f"; classes with fewer than {MIN_CLASS_IMAGES} such images ({_short(pooled_classes)}) "
        "the median over all of them"
        if len(own_classes) < classes
        else ""
    )
    return clipped, (
        f"auto: per class, the median confidence of the classifier on the explained images it puts in that class"
        f"{pooled_note}, clipped to [{floor}, {cap}], since {sure}; pass "
        "threshold=class_thresholds(classifier, train_images, train_labels) to take them from labelled training "
        "images instead"
    )


def _short(classes: list[int]) -> str:
    return ", ".join(map(str, classes)) if classes else "none"
