"""Ground truth for global explanations on the synthetic faces: what a classifier really reads.

A factor's true influence on a classifier is measured by intervening in the renderer: each face is
rendered again with only that factor changed (:func:`vcex.data.synthetic_faces.sample_factors`
keeps everything else pixel-identical), and the classifier's positive-class probability is recorded.
Rankings from an explainer (descriptor name -> S_a) are then scored against the label's true drivers
(:func:`driver_rank`, :func:`precision_at_k`) and against the measured influence (:func:`spearman`).
Descriptors are merged per factor first (:func:`factor_scores`): ``smiling`` and ``smile`` both
read the ``smile`` factor, and one factor should not take two places in a ranking.

>>> from vcex.data.faces_tasks import load_face_table
>>> faces = load_face_table("test")
>>> truth = intervention_influence(classifier, faces.subset(range(200)).factors)  # {"smile": 0.71, ...}
>>> merged = factor_scores({name: s for name, s, *_ in explanation.ranked()})
>>> driver_rank(merged, ["smile"]), spearman({k: abs(v) for k, v in merged.items()}, truth)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torch import nn

from vcex.data.synthetic_faces import BINARY_ATTRIBUTES, FACTORS, NUISANCE_FACTORS, render_faces
from vcex.errors import InputError
from vcex.models.classifiers import checked_logits
from vcex.models.state import evaluating

Tensor = torch.Tensor

#: Grid points per continuous factor. Five evenly spaced values include both ends and the middle, so
#: a threshold anywhere in the range is crossed; two values would miss background_hue entirely (its
#: ends, 0 and 1, are both red).
DEFAULT_LEVELS = 5

#: The factors a face is made of, in FACTORS order: the default set for :func:`intervention_influence`.
CONTENT_FACTORS: tuple[str, ...] = tuple(name for name in FACTORS if name not in NUISANCE_FACTORS)
# faces rendered per call when intervening: per-call overhead dominates small calls, memory large ones
RENDER_BLOCK = 2048


# --------------------------------------------------------------------------------------------
# intervention influence
# --------------------------------------------------------------------------------------------


def factor_levels(name: str, levels: int = DEFAULT_LEVELS) -> Tensor:
    """Values an intervention sets factor ``name`` to: (2,) = [0, 1] for a binary factor, else
    (levels,) evenly spaced over the factor's range, both ends included (factors are uniform on
    their range, so these are also its 0, 1/(L-1), ..., 1 quantiles)."""
    if name not in FACTORS:
        raise InputError(f"unknown factor {name!r}; valid factors: {', '.join(FACTORS)}")
    spec = FACTORS[name]
    if spec.binary:
        return torch.tensor([0.0, 1.0])
    if int(levels) < 2:
        raise InputError(f"levels must be at least 2 (the two ends of the range), got {levels}")
    return torch.linspace(spec.low, spec.high, int(levels))


def _checked_factors(factors: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    if not isinstance(factors, Mapping) or not factors:
        raise InputError(
            "factors must be a dict factor name -> (N,) tensor with every factor, e.g. sample_factors(n, seed) "
            f"or a FacesDataset's .factors; got {type(factors).__name__}"
        )
    missing = [name for name in FACTORS if name not in factors]
    if missing:
        raise InputError(f"factors miss {', '.join(missing)}; give every factor (see sample_factors)")
    out = {name: torch.as_tensor(factors[name], dtype=torch.float32).flatten().cpu() for name in FACTORS}
    sizes = sorted({int(value.shape[0]) for value in out.values()})
    if len(sizes) != 1:
        raise InputError(f"factors have different lengths {sizes}; give the same N faces for every factor")
    if sizes[0] == 0:
        raise InputError("factors describe 0 faces; give at least one")
    return out, sizes[0]


def _checked_names(names: Sequence[str] | None) -> list[str]:
    if names is None:
        return list(CONTENT_FACTORS)
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise InputError("names is empty; give at least one factor (or None for every content factor)")
    unknown = [name for name in names if name not in FACTORS]
    if unknown:
        raise InputError(f"unknown factor {unknown[0]!r}; valid factors: {', '.join(FACTORS)}")
    if len(set(names)) != len(names):
        raise InputError(f"names repeats a factor: {names}")
    return names


def intervention_images(
    factors: Mapping[str, Tensor],
    names: Sequence[str] | None = None,
    size: int = 32,
    levels: int = DEFAULT_LEVELS,
) -> dict[str, Tensor]:
    """The faces re-rendered with one factor set to each of its :func:`factor_levels`.

    Render once and pass the result to :func:`intervention_influence` for several classifiers.

    Args:
        factors: every factor -> (N,) values, e.g. a FacesDataset's ``factors``.
        names: factors to intervene on; None: every content factor (nuisance factors such as
            position or lighting are left out unless named).
        size: image side in pixels.
        levels: grid points per continuous factor (binary factors take 0 and 1).

    Returns:
        factor name -> (L, N, 3, size, size) float32 in [0, 1], L levels of that factor.
    """
    values, _ = _checked_factors(factors)
    return {name: _render_levels(values, name, factor_levels(name, levels), size) for name in _checked_names(names)}


def _render_levels(values: dict[str, Tensor], name: str, grid: Tensor, size: int) -> Tensor:
    """(L, N, 3, size, size): every face at every level of ``name``, a few big render calls rather than L."""
    n, count = int(values[name].shape[0]), len(grid)
    out = torch.empty(count, n, 3, size, size)
    block = max(1, RENDER_BLOCK // count)
    for start in range(0, n, block):
        part = {key: value[start : start + block].repeat(count) for key, value in values.items()}
        rows = part[name].shape[0] // count
        part[name] = grid.repeat_interleave(rows)
        out[:, start : start + rows] = render_faces(part, size=size).view(count, rows, 3, size, size)
    return out


@torch.no_grad()
def intervention_influence(
    classifier: nn.Module | Callable[[Tensor], Tensor],
    factors: Mapping[str, Tensor],
    names: Sequence[str] | None = None,
    size: int = 32,
    *,
    levels: int = DEFAULT_LEVELS,
    images: Mapping[str, Tensor] | None = None,
    positive_class: int = 1,
    batch_size: int = 512,
) -> dict[str, float]:
    """Each factor's true influence on ``classifier``, measured by intervening in the renderer.

    For face i and factor f, the face is rendered at every level v of f (everything else unchanged)
    and p_i(v), the classifier's ``positive_class`` probability, recorded. The influence of f is
    ``mean_i [max_v p_i(v) - min_v p_i(v)]``: the mean absolute change of the probability when f moves
    across its range (for a binary factor, ``mean_i |p_i(1) - p_i(0)|``).

    Args:
        classifier: (N, 3, size, size) images in [0, 1] -> logits (N, K); an ``nn.Module`` is run in
            eval mode (restored afterwards), on the device of its parameters.
        factors: every factor -> (N,) values of the faces to intervene on.
        names: factors to measure; None: every content factor (nuisance factors only when named).
        size: image side the classifier takes.
        levels: grid points per continuous factor (see :func:`factor_levels`).
        images: renders from :func:`intervention_images` for the same factors, names, size and
            levels, to skip rendering (checked for shape).
        positive_class: the class whose probability is tracked.
        batch_size: images per classifier call.

    Returns:
        factor name -> influence in [0, 1], in ``names`` order. 0: the factor never changes the
        output; 1: moving it always swings the probability from 0 to 1. Higher means the
        classifier relies on the factor more.
    """
    probs = _level_probabilities(
        classifier, factors, names, size, levels, images, positive_class, batch_size, with_base=False
    )
    return {name: float((p.max(0).values - p.min(0).values).mean()) for name, (p, _) in probs.items()}


@torch.no_grad()
def intervention_flip_share(
    classifier: nn.Module | Callable[[Tensor], Tensor],
    factors: Mapping[str, Tensor],
    names: Sequence[str] | None = None,
    size: int = 32,
    *,
    levels: int = DEFAULT_LEVELS,
    images: Mapping[str, Tensor] | None = None,
    positive_class: int = 1,
    batch_size: int = 512,
) -> dict[str, float]:
    """For each factor, the share of faces whose decision that factor *alone* can flip.

    Face i's decision is ``p_i > 0.5`` for the ``positive_class`` probability of its unchanged render;
    factor f flips it when some level v of f (everything else unchanged) gives the other decision. Where
    a factor flips few faces, a counterfactual that changes only that factor rarely exists, so a
    counterfactual method cannot be expected to find one, however much the classifier relies on it
    (compare :func:`intervention_influence`). Arguments as for :func:`intervention_influence`.

    Returns:
        factor name -> share in [0, 1], in ``names`` order; higher: the factor alone decides more faces.
    """
    probs = _level_probabilities(classifier, factors, names, size, levels, images, positive_class, batch_size)
    return {name: float(((p > 0.5) != (base > 0.5)).any(0).float().mean()) for name, (p, base) in probs.items()}


def _level_probabilities(
    classifier: nn.Module | Callable[[Tensor], Tensor],
    factors: Mapping[str, Tensor],
    names: Sequence[str] | None,
    size: int,
    levels: int,
    images: Mapping[str, Tensor] | None,
    positive_class: int,
    batch_size: int,
    with_base: bool = True,
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """factor -> ((L, N) positive-class probabilities at each level, (N,) on the unchanged faces, or None
    without ``with_base``: the unchanged faces are rendered and classified only when asked for)."""
    values, n = _checked_factors(factors)
    names = _checked_names(names)
    if int(batch_size) < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if not callable(classifier):
        raise InputError(f"classifier must be an nn.Module or a callable returning logits, got {type(classifier)}")
    device = torch.device("cpu")
    if isinstance(classifier, nn.Module):
        device = next((p.device for p in classifier.parameters()), device)
    with evaluating(classifier):
        base = (
            _positive_prob(classifier, render_faces(values, size=size), positive_class, batch_size, device)
            if with_base
            else None
        )
        out = {}
        for name in names:
            grid = factor_levels(name, levels)
            if images is not None:
                if name not in images:
                    raise InputError(f"images has no renders for factor {name!r}; render it with intervention_images")
                stack = images[name]
                expected = (len(grid), n, 3, size, size)
                if tuple(stack.shape) != expected:
                    raise InputError(
                        f"images[{name!r}] has shape {tuple(stack.shape)}, expected {expected} "
                        "(levels, faces, 3, size, size); render with the same factors, size and levels"
                    )
                renders = list(stack)
            else:
                renders = list(_render_levels(values, name, grid, size))
            probs = torch.stack([_positive_prob(classifier, r, positive_class, batch_size, device) for r in renders])
            out[name] = (probs, base)
        return out


def _positive_prob(
    classifier: Callable[[Tensor], Tensor], images: Tensor, positive_class: int, batch_size: int, device: torch.device
) -> Tensor:
    parts = []
    for chunk in images.split(batch_size):
        logits = checked_logits(classifier, chunk.to(device))
        if not 0 <= positive_class < logits.shape[1]:
            raise InputError(f"positive_class must lie in [0, {logits.shape[1] - 1}], got {positive_class}")
        parts.append(logits.float().softmax(1)[:, positive_class].cpu())
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# descriptors -> factors
# --------------------------------------------------------------------------------------------


def descriptor_factor(name: str) -> str:
    """The factor a face descriptor reads: a binary attribute (``"smiling"``) maps to its source
    factor (``"smile"``, see BINARY_ATTRIBUTES), a factor name (``"smile"``, or ``"factor:bangs"`` as
    Descriptors.from_faces writes clashing names) to itself."""
    if name in BINARY_ATTRIBUTES:
        return BINARY_ATTRIBUTES[name].factor
    factor = name.removeprefix("factor:")
    if factor in FACTORS:
        return factor
    raise InputError(
        f"descriptor {name!r} is neither a face attribute ({', '.join(BINARY_ATTRIBUTES)}) nor a factor "
        f"({', '.join(FACTORS)})"
    )


def factor_scores(scores: Mapping[str, float]) -> dict[str, float]:
    """Merge descriptor scores per factor: descriptor name -> S_a becomes factor -> the S_a of the
    descriptor with the largest |S_a| reading that factor (sign kept), in order of first appearance."""
    scores = _checked_scores(scores, "scores")
    merged: dict[str, float] = {}
    for name, value in scores.items():
        factor = descriptor_factor(name)
        if factor not in merged or abs(value) > abs(merged[factor]):
            merged[factor] = value
    return merged


# --------------------------------------------------------------------------------------------
# scoring a ranking
# --------------------------------------------------------------------------------------------


def _checked_scores(scores: Mapping[str, float], what: str) -> dict[str, float]:
    if not isinstance(scores, Mapping) or not scores:
        raise InputError(f"{what} must be a non-empty dict name -> score, got {scores!r}")
    out = {}
    for name, value in scores.items():
        number = float(value)
        if not math.isfinite(number):
            raise InputError(f"{what}[{name!r}] is {value}; scores must be finite numbers")
        out[str(name)] = number
    return out


def _checked_truth(scores: Mapping[str, float], true_set: Collection[str], what: str) -> set[str]:
    if isinstance(true_set, str):
        true_set = [true_set]
    truth = set(true_set)
    if not truth:
        raise InputError(f"{what} is empty; name at least one true factor")
    if not truth & set(scores):
        raise InputError(f"none of the {what} {sorted(truth)} is among the scored names {sorted(scores)}")
    return truth


def _ranking(scores: dict[str, float], truth: set[str]) -> list[str]:
    # By decreasing |score|; a tie goes against the true set (the pessimistic reading), then by name.
    return sorted(scores, key=lambda name: (-abs(scores[name]), name in truth, name))


def driver_rank(scores: Mapping[str, float], drivers: Collection[str]) -> int:
    """Rank (1 = first) of the best-placed true driver when ``scores`` are sorted by decreasing |score|.

    Ties are broken against the drivers: a driver tied with another name ranks below it. Lower is
    better; 1 means a true driver is ranked first. Merge descriptors with :func:`factor_scores` first
    when the drivers are factors.
    """
    scores = _checked_scores(scores, "scores")
    truth = _checked_truth(scores, drivers, "drivers")
    order = _ranking(scores, truth)
    return next(k for k, name in enumerate(order, start=1) if name in truth)


def precision_at_k(scores: Mapping[str, float], true_set: Collection[str], k: int | None = None) -> float:
    """Share of the k names with the largest |score| that are in ``true_set``, in [0, 1] (1 is best).

    ``k`` defaults to the size of ``true_set``; ties at the cut are broken against the true set.
    """
    scores = _checked_scores(scores, "scores")
    truth = _checked_truth(scores, true_set, "true_set")
    k = len(truth) if k is None else int(k)
    if not 1 <= k <= len(scores):
        raise InputError(f"k must lie in [1, {len(scores)}] (the number of scored names), got {k}")
    return sum(name in truth for name in _ranking(scores, truth)[:k]) / k


def spearman(scores_a: Mapping[str, float], scores_b: Mapping[str, float]) -> float:
    """Spearman rank correlation between two scorings of the same names, in [-1, 1] (1: same order).

    Values are used as given (pass |S_a| to compare magnitudes); ties get average ranks. Both dicts
    must hold the same names (at least two). NaN when either scoring is constant (no order to compare).
    """
    from scipy.stats import spearmanr

    a, b = _checked_scores(scores_a, "scores_a"), _checked_scores(scores_b, "scores_b")
    if set(a) != set(b):
        raise InputError(
            f"spearman needs the same names in both scorings; only in scores_a: {sorted(set(a) - set(b))}, "
            f"only in scores_b: {sorted(set(b) - set(a))}"
        )
    if len(a) < 2:
        raise InputError(f"spearman needs at least two names, got {len(a)}")
    names = sorted(a)
    if len({a[n] for n in names}) == 1 or len({b[n] for n in names}) == 1:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = spearmanr([a[n] for n in names], [b[n] for n in names]).statistic
    return float(value)


def score_ranking(
    scores: Mapping[str, float],
    drivers: Collection[str],
    influence: Mapping[str, float] | None = None,
) -> dict[str, float | int | bool]:
    """All ground-truth scores of one global explanation at once.

    Args:
        scores: descriptor (or factor) name -> S_a; merged per factor with :func:`factor_scores`.
        drivers: the factors the label is made of.
        influence: factor -> true influence (:func:`intervention_influence`); Spearman is computed over
            its factors. A factor here without a score counts as S = 0 (ranked last on ties).

    Returns:
        ``driver_rank`` (1 best), ``driver_first`` (bool), ``precision_at_k`` (k = number of drivers,
        1 best) and, with ``influence``, ``spearman`` (|S| vs influence, 1 best; NaN if either is constant).
    """
    merged = factor_scores(scores)
    if influence is not None:
        influence = _checked_scores(influence, "influence")
        # a factor without a (usable) descriptor is ranked as if it scored 0, not left out
        merged = {**{factor: 0.0 for factor in influence}, **merged}
    if isinstance(drivers, str):
        drivers = [drivers]
    rank = driver_rank(merged, drivers)
    out: dict[str, float | int | bool] = {
        "driver_rank": rank,
        "driver_first": rank == 1,
        "precision_at_k": precision_at_k(merged, drivers),
    }
    if influence is not None:
        out["spearman"] = spearman({factor: abs(merged[factor]) for factor in influence}, influence)
    return out


__all__ = [
    "CONTENT_FACTORS",
    "DEFAULT_LEVELS",
    "descriptor_factor",
    "driver_rank",
    "factor_levels",
    "factor_scores",
    "intervention_images",
    "intervention_influence",
    "precision_at_k",
    "score_ranking",
    "spearman",
]
