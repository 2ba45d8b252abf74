"""Realism of counterfactuals as a set: Frechet distance, split Frechet distance and KID on features,
and the distance to the nearest training images of the target class.

Features come from any function images -> (N, D); :func:`vcex.evaluation.penultimate_features` gives
one from a classifier trained on the dataset (Inception weights cannot be downloaded here, so values
are comparable between methods in one run, not with published FID numbers).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vcex.errors import InputError


def checked_features(features: torch.Tensor, name: str, minimum: int = 2) -> torch.Tensor:
    """``features`` checked to be a finite (N, D) float tensor of at least ``minimum`` rows, as float64."""
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise InputError(f"{name} must be a (N, D) tensor of features, got {shape}")
    if features.shape[0] < minimum:
        raise InputError(f"{name} needs at least {minimum} rows (feature vectors), got {features.shape[0]}")
    if not features.is_floating_point():
        raise InputError(f"{name} must be floating point, got {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        raise InputError(f"{name} contains NaN or inf values")
    return features.detach().to(torch.float64)


def _same_width(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise InputError(f"{name}: both feature sets need the same dimension D, got {a.shape[1]} and {b.shape[1]}")


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def _frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    mean_gap = (a.mean(0) - b.mean(0)).pow(2).sum()
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    # tr((A B)^1/2) = tr((A^1/2 B A^1/2)^1/2): the right side is symmetric PSD, so eigh is exact and stable
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = mean_gap + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(value), 0.0)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula), >= 0.

    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` with sample means and unbiased covariances,
    computed in float64. Lower is better: the counterfactuals' features are distributed like real data.
    The value is biased upwards for small sets; compare methods at the same N.

    Args:
        features_a: (N, D), N >= 2, e.g. real images' features.
        features_b: (M, D), M >= 2, e.g. counterfactuals' features.
    """
    a = checked_features(features_a, "frechet_distance: features_a")
    b = checked_features(features_b, "frechet_distance: features_b")
    _same_width(a, b, "frechet_distance")
    return _frechet(a, b)


def split_frechet_distance(
    real_features: torch.Tensor, counterfactual_features: torch.Tensor, repeats: int = 10, seed: int = 0
) -> float:
    """sFID as in the DiME/ACE protocol: Frechet distance between disjoint halves, >= 0.

    Row i of both sets must come from the same source image. The rows are split at random into halves
    H1, H2; the score is the mean of FD(real[H1], cf[H2]) and FD(real[H2], cf[H1]), averaged over
    ``repeats`` splits. Pairing an image with its own counterfactual is excluded, so a method cannot
    score well by barely changing its inputs. Lower is better.

    Args:
        real_features: (N, D) features of the originals, N >= 4.
        counterfactual_features: (N, D) features of their counterfactuals, same order.
    """
    real = checked_features(real_features, "split_frechet_distance: real_features", minimum=4)
    counterfactual = checked_features(
        counterfactual_features, "split_frechet_distance: counterfactual_features", minimum=4
    )
    if real.shape != counterfactual.shape:
        raise InputError(
            f"split_frechet_distance: real and counterfactual features must be paired row by row with the same "
            f"shape, got {tuple(real.shape)} and {tuple(counterfactual.shape)}"
        )
    if repeats < 1:
        raise InputError(f"split_frechet_distance: repeats must be at least 1, got {repeats}")
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(repeats):
        order = torch.randperm(len(real), generator=generator)
        first, second = order[: len(real) // 2], order[len(real) // 2 :]
        scores.append(_frechet(real[first], counterfactual[second]))
        scores.append(_frechet(real[second], counterfactual[first]))
    return sum(scores) / len(scores)


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # KID's kernel (Binkowski et al., 2018, Sec. 4): k(x, y) = (x.y / D + 1)^3
    return (x @ y.T / x.shape[1] + 1).pow(3)


def _unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kid(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance on any features: (mean, std) of the unbiased MMD^2 over random subsets.

    Kernel ``k(x, y) = (x.y / D + 1)^3`` (Binkowski et al., 2018). Each of ``subsets`` draws
    ``min(subset_size, N, M)`` rows from each set without replacement. Unbiased, so unlike FD it has
    no small-sample bias and can be slightly negative when both sets come from one distribution.
    Lower is better; 0 means the same distribution.

    Args:
        features_a: (N, D), N >= 2; features_b: (M, D), M >= 2.
        seed: seeds the subset draws, so a run is repeatable.

    Returns:
        (mean, std) over the subsets; std is 0 for a single subset.
    """
    a = checked_features(features_a, "kid: features_a")
    b = checked_features(features_b, "kid: features_b")
    _same_width(a, b, "kid")
    if subsets < 1 or subset_size < 2:
        raise InputError(f"kid: need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, len(a), len(b))
    generator = torch.Generator().manual_seed(seed)
    scores = torch.tensor(
        [
            _unbiased_mmd2(
                a[torch.randperm(len(a), generator=generator)[:size]],
                b[torch.randperm(len(b), generator=generator)[:size]],
            )
            for _ in range(subsets)
        ],
        dtype=torch.float64,
    )
    std = float(scores.std()) if subsets > 1 else 0.0
    return float(scores.mean()), std


def knn_target_distance(
    counterfactuals: torch.Tensor,
    targets: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    k: int = 5,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Mean L2 distance from each counterfactual to its k nearest training images of its target class, (N,).

    Lower is better: the counterfactual lies among real examples of the class it claims to be. Distances
    are in the images' own units (pixel L2 over all of C*H*W). Neighbours are found in chunks of
    ``batch_size`` counterfactuals, so 10,000 counterfactuals against 60,000 training images fit in memory;
    the returned distances are recomputed exactly for the chosen neighbours.

    Args:
        counterfactuals: (N, ...) images; targets: (N,) int target class of each.
        train_images: (M, ...) images of the same shape; train_labels: (M,) int classes.
        k: neighbours per counterfactual; every target class needs at least k training images.
    """
    if not isinstance(counterfactuals, torch.Tensor) or counterfactuals.dim() < 2 or len(counterfactuals) == 0:
        raise InputError("knn_target_distance: counterfactuals must be a non-empty (N, ...) tensor")
    if not isinstance(train_images, torch.Tensor) or train_images.shape[1:] != counterfactuals.shape[1:]:
        shape = tuple(train_images.shape) if isinstance(train_images, torch.Tensor) else type(train_images).__name__
        raise InputError(
            f"knn_target_distance: train_images must have shape (M, {', '.join(map(str, counterfactuals.shape[1:]))})"
            f" like the counterfactuals, got {shape}"
        )
    targets, train_labels = torch.as_tensor(targets), torch.as_tensor(train_labels)
    if targets.shape != (len(counterfactuals),) or train_labels.shape != (len(train_images),):
        raise InputError(
            f"knn_target_distance: need targets ({len(counterfactuals)},) and train_labels ({len(train_images)},), "
            f"got {tuple(targets.shape)} and {tuple(train_labels.shape)}"
        )
    if k < 1 or batch_size < 1:
        raise InputError(f"knn_target_distance: k and batch_size must be at least 1, got {k} and {batch_size}")
    device = counterfactuals.device
    queries = counterfactuals.detach().flatten(1).float()
    points = train_images.detach().flatten(1).float().to(device)
    targets, train_labels = targets.to(device).long(), train_labels.to(device).long()
    distances = torch.empty(len(queries), dtype=torch.float32, device=device)
    for target in targets.unique().tolist():
        pool = points[train_labels == target]
        if len(pool) < k:
            raise InputError(
                f"knn_target_distance: target class {target} has {len(pool)} training images, fewer than k={k}"
            )
        pool_norms = pool.pow(2).sum(1)
        rows = (targets == target).nonzero().flatten()
        for chunk in rows.split(batch_size):
            query = queries[chunk]
            # squared distances by expansion pick the neighbours; their distances are then computed directly
            approx = query.pow(2).sum(1, keepdim=True) - 2 * query @ pool.T + pool_norms
            nearest = approx.topk(k, dim=1, largest=False).indices
            exact = torch.stack([(query - pool[nearest[:, j]]).norm(dim=1) for j in range(k)], dim=1)
            distances[chunk] = exact.mean(1)
    return distances


def target_class_reference(
    targets: torch.Tensor, train_images: torch.Tensor, train_labels: torch.Tensor, reference_size: int = 2000
) -> torch.Tensor:
    """Real training images of the classes the counterfactuals now claim to be: (R, C, H, W), R ~ reference_size.

    Each target class gets a share of ``reference_size`` in proportion to how many counterfactuals target it
    (at least 2; the first ones of the class, so the set is deterministic). Used by
    :func:`target_class_frechet` and :func:`target_class_kid`, so both compare against the same images.

    Args:
        targets: (N,) int target class of each counterfactual.
        train_images: (M, C, H, W) real images; train_labels: (M,) their classes.
    """
    targets, train_labels = torch.as_tensor(targets), torch.as_tensor(train_labels)
    if targets.dim() != 1 or len(targets) == 0 or train_labels.shape != (len(train_images),):
        raise InputError(
            "target_class_reference: targets must be (N,) with N >= 1 and train_labels (M,) for M training images, "
            f"got {tuple(targets.shape)} and {tuple(train_labels.shape)}"
        )
    reference = []
    for target, count in zip(*targets.unique(return_counts=True)):
        members = (train_labels == target).nonzero().flatten()
        if len(members) < 2:
            raise InputError(f"target_class_reference: class {int(target)} has {len(members)} training images; needs 2")
        take = max(2, round(reference_size * int(count) / len(targets)))
        reference.append(train_images[members[:take]])
    return torch.cat(reference)


def _target_class_features(
    counterfactuals: torch.Tensor,
    targets: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    reference_size: int,
    what: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of the target-class reference images and of the counterfactuals, after a shape check."""
    if torch.as_tensor(targets).shape != (len(counterfactuals),):
        raise InputError(
            f"{what}: targets must be (N,) for N = {len(counterfactuals)} counterfactuals, "
            f"got {tuple(torch.as_tensor(targets).shape)}"
        )
    reference = target_class_reference(targets, train_images, train_labels, reference_size)
    with torch.no_grad():
        return features(reference), features(counterfactuals)


def target_class_frechet(
    counterfactuals: torch.Tensor,
    targets: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    reference_size: int = 2000,
) -> float:
    """Frechet distance between counterfactuals and real images of the classes they now claim to be, >= 0.

    The reference set is :func:`target_class_reference` (up to ``reference_size`` training images, shared
    out over the target classes as the counterfactuals are). Lower is better: the counterfactuals' features
    are distributed like real images of their target classes. Biased upward for small N: compare methods on
    the same images and targets only.

    Args:
        counterfactuals: (N, C, H, W), N >= 2; targets: (N,) int target class of each.
        train_images: (M, C, H, W) real images; train_labels: (M,) their classes.
        features: images -> (N, D), e.g. :func:`vcex.evaluation.penultimate_features` of an oracle.
        reference_size: the reference set's size (before per-class rounding; >= 2 per class).
    """
    real, counterfactual = _target_class_features(
        counterfactuals, targets, train_images, train_labels, features, reference_size, "target_class_frechet"
    )
    return frechet_distance(real, counterfactual)


def target_class_kid(
    counterfactuals: torch.Tensor,
    targets: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    reference_size: int = 2000,
    subsets: int = 100,
    subset_size: int = 1000,
) -> tuple[float, float]:
    """KID, (mean, std) over subsets, between counterfactuals and real images of their target classes.

    The same reference set as :func:`target_class_frechet`. Unbiased, so unlike the Frechet distance it
    can be compared across different N; near 0 (possibly slightly negative) when the counterfactuals'
    features are distributed like real images of their target classes. Lower is better.

    Args: as :func:`target_class_frechet`; ``subsets`` and ``subset_size`` as :func:`kid`.
    """
    real, counterfactual = _target_class_features(
        counterfactuals, targets, train_images, train_labels, features, reference_size, "target_class_kid"
    )
    return kid(real, counterfactual, subsets=subsets, subset_size=subset_size)
