"""Is a counterfactual still *this* image? Identity preservation and diversity on features.

Validity and oracle agreement cannot see collapse: a class template returned for every input is a very
typical member of its class, so both judges agree with it. These two metrics can (DESIGN.md section 6):

- :func:`identity_preservation`: a counterfactual keeps its identity when, among the originals of the same
  run, its nearest one (in an oracle's features) is its own original. Chance is 1/N, so the share depends
  on N: compare methods on the same images only.
- :func:`diversity`: per target class, the mean pairwise distance between counterfactuals of that class
  over the mean pairwise distance between real images of it: ~1 when counterfactuals vary as real images
  do, ~0 when they collapse onto one template.

Features come from any function images -> (N, D); :func:`vcex.evaluation.penultimate_features` of an
oracle (a classifier trained on the dataset, not the one explained) gives one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vcex.errors import InputError
from vcex.evaluation.realism import checked_features

# rows of the distance matrix computed at once: 1,024 x N floats per chunk, so 10,000 originals fit in memory
_CHUNK = 1024
# real images per class the diversity reference takes (the first ones, so the reference is deterministic);
# a mean over 500 * 499 / 2 pairs moves little with more
DIVERSITY_REFERENCE_PER_CLASS = 500


def _check_features(features: torch.Tensor, name: str, minimum: int = 1) -> torch.Tensor:
    """(N, D) finite float features as float64, the check the realism metrics use."""
    return checked_features(features, name, minimum)


def _check_labels(labels: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.shape != (rows,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"{name} must be ({rows},) integer class indices, got {tuple(labels.shape)} {labels.dtype}")
    return labels.long()


def nearest_original(original_features: torch.Tensor, counterfactual_features: torch.Tensor) -> torch.Tensor:
    """Index of each counterfactual's nearest original by Euclidean distance in feature space, (N,) int64.

    Args:
        original_features: (N, D) features of the explained originals, N >= 1.
        counterfactual_features: (N, D) features of their counterfactuals, row i from original i.
    """
    originals, counterfactuals = _paired(original_features, counterfactual_features, "nearest_original")
    return torch.cat([torch.cdist(chunk, originals).argmin(1) for chunk in counterfactuals.split(_CHUNK)])


def _paired(
    original_features: torch.Tensor, counterfactual_features: torch.Tensor, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    originals = _check_features(original_features, f"{name}: original_features")
    counterfactuals = _check_features(counterfactual_features, f"{name}: counterfactual_features")
    if originals.shape != counterfactuals.shape:
        raise InputError(
            f"{name}: original and counterfactual features must be paired row by row with the same shape, "
            f"got {tuple(originals.shape)} and {tuple(counterfactuals.shape)}"
        )
    return originals, counterfactuals


def identity_preservation(original_features: torch.Tensor, counterfactual_features: torch.Tensor) -> torch.Tensor:
    """Whether each counterfactual's nearest original (among all N of the run) is its own, (N,) bool.

    The share ``.float().mean()`` is the identity preservation of the run: 1.0 when every counterfactual is
    still recognisably its own image, about 1/N (chance) for a method that returns one template per class.
    A tie with another original counts as preserved (duplicated originals are not the method's fault).
    Higher is better; the share depends on N (more originals, more chances to be nearer another one), so
    compare methods on the same originals only.

    Args:
        original_features: (N, D) features of the explained originals, N >= 1, e.g. an oracle's penultimate
            features (:func:`vcex.evaluation.penultimate_features`).
        counterfactual_features: (N, D) features of their counterfactuals, row i from original i.
    """
    originals, counterfactuals = _paired(original_features, counterfactual_features, "identity_preservation")
    matched = []
    for start in range(0, len(counterfactuals), _CHUNK):
        distances = torch.cdist(counterfactuals[start : start + _CHUNK], originals)
        own = distances.diagonal(offset=start)
        matched.append(own <= distances.min(1).values)
    return torch.cat(matched)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over all pairs i < j of the rows of ``features`` (N, D), N >= 2; >= 0."""
    points = _check_features(features, "mean_pairwise_distance", minimum=2)
    n = len(points)
    total = sum(float(torch.cdist(chunk, points).sum()) for chunk in points.split(_CHUNK))
    return total / (n * (n - 1))  # the diagonal is 0, each pair is counted twice


def diversity(
    counterfactual_features: torch.Tensor,
    targets: torch.Tensor,
    real_features: torch.Tensor,
    real_labels: torch.Tensor,
) -> dict[int, float | None]:
    """Per target class: mean pairwise feature distance of its counterfactuals over that of real images of it.

    ~1: the counterfactuals of a class differ from each other as much as real images of that class do;
    ~0: they collapse onto one template (however typical of the class it is). Above 1 is possible (e.g.
    counterfactuals that keep much of their varied originals). A class with fewer than 2 counterfactuals
    gets None (no pair to measure); see :func:`mean_diversity` for the mean over the others.

    Args:
        counterfactual_features: (N, D) features of the counterfactuals.
        targets: (N,) int target class of each counterfactual.
        real_features: (M, D) features of real images (e.g. training images), same feature function.
        real_labels: (M,) int class of each real image; each target class with >= 2 counterfactuals needs
            at least 2 real images with a non-zero mean distance.

    Returns:
        ``{target class: ratio or None}`` for every class in ``targets``, in ascending order.
    """
    counterfactuals = _check_features(counterfactual_features, "diversity: counterfactual_features")
    real = _check_features(real_features, "diversity: real_features")
    if counterfactuals.shape[1] != real.shape[1]:
        raise InputError(
            f"diversity: counterfactual and real features need the same dimension D, "
            f"got {counterfactuals.shape[1]} and {real.shape[1]}"
        )
    targets = _check_labels(targets, len(counterfactuals), "diversity: targets").to(counterfactuals.device)
    real_labels = _check_labels(real_labels, len(real), "diversity: real_labels").to(real.device)
    ratios: dict[int, float | None] = {}
    for target in targets.unique().tolist():
        members = counterfactuals[targets == target]
        if len(members) < 2:
            ratios[target] = None
            continue
        reference = real[real_labels == target]
        if len(reference) < 2:
            raise InputError(
                f"diversity: target class {target} has {len(reference)} real images; the reference needs at least 2"
            )
        spread = mean_pairwise_distance(reference)
        if spread == 0:
            raise InputError(f"diversity: the real images of class {target} all have the same features")
        ratios[target] = mean_pairwise_distance(members) / spread
    return ratios


def mean_diversity(per_class: dict[int, float | None]) -> float | None:
    """Mean of :func:`diversity`'s ratios over the classes that have one (>= 2 counterfactuals); None if none."""
    values = [value for value in per_class.values() if value is not None]
    return sum(values) / len(values) if values else None


def diversity_reference(
    images: torch.Tensor,
    labels: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    per_class: int = DIVERSITY_REFERENCE_PER_CLASS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (R, D) and labels (R,) of up to ``per_class`` real images of every class (the first ones).

    Args:
        images: (M, C, H, W) real images, e.g. a dataset's training split; labels: (M,) their classes.
        features: images -> (N, D), the same function the counterfactuals are measured with.
    """
    labels = _check_labels(labels, len(images), "diversity_reference: labels")
    if per_class < 2:
        raise InputError(f"diversity_reference: per_class must be at least 2, got {per_class}")
    keep = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in labels.unique().tolist()])
    if len(keep) == 0:
        raise InputError("diversity_reference: no real images given")
    with torch.no_grad():
        return features(images[keep]), labels[keep]


def identity_metrics(
    original_features: torch.Tensor,
    counterfactual_features: torch.Tensor,
    targets: torch.Tensor,
    real: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """The identity and diversity entries of a metrics record (JSON-ready).

    Keys: ``identity_preservation`` (share), ``identity_chance`` (1/N), ``identity_n`` (N, the originals each
    counterfactual is compared with) and, with ``real`` = (features (M, D), labels (M,)) of real images,
    ``diversity`` (mean over classes with >= 2 counterfactuals, or None) and ``diversity_per_class``
    (``{"class": ratio or None}``); without ``real`` both are None.
    """
    matched = identity_preservation(original_features, counterfactual_features)
    record: dict = {
        "identity_preservation": round(float(matched.float().mean()), 6),
        "identity_chance": round(1 / len(matched), 6),
        "identity_n": len(matched),
        "diversity": None,
        "diversity_per_class": None,
    }
    if real is not None:
        per_class = diversity(counterfactual_features, targets, *real)
        mean = mean_diversity(per_class)
        record["diversity"] = None if mean is None else round(mean, 6)
        record["diversity_per_class"] = {
            str(k): None if value is None else round(value, 6) for k, value in per_class.items()
        }
    return record


__all__ = [
    "DIVERSITY_REFERENCE_PER_CLASS",
    "diversity",
    "diversity_reference",
    "identity_metrics",
    "identity_preservation",
    "mean_diversity",
    "mean_pairwise_distance",
    "nearest_original",
]
