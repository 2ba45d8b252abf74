"""Counterfactual metrics as plain batched functions, checked at the edge.

Each per-image function maps (N, ...) tensors to (N,) scores; :func:`evaluate` turns a result into
the ``metrics.json`` record.
"""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch

from vcex._version import __version__
from vcex.errors import InputError
from vcex.evaluation.identity import identity_metrics, identity_preservation
from vcex.explainers.result import CounterfactualResult
from vcex.models.state import evaluates


def _pair(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{name}: both inputs need the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2:
        raise InputError(f"{name}: inputs need a batch dimension first, got shape {tuple(a.shape)}")


def l1_distance(originals: torch.Tensor, counterfactuals: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel change per image, (N,). Lower is closer to the original."""
    _pair(originals, counterfactuals, "l1_distance")
    return (counterfactuals - originals).abs().flatten(1).mean(1)


def l2_distance(originals: torch.Tensor, counterfactuals: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the pixel change per image, (N,). Lower is closer to the original."""
    _pair(originals, counterfactuals, "l2_distance")
    return (counterfactuals - originals).flatten(1).norm(dim=1)


# the pixel change (in [0, 1] units) beyond which changed_fraction counts a pixel as changed
CHANGED_TOLERANCE = 0.1


def changed_fraction(
    originals: torch.Tensor, counterfactuals: torch.Tensor, tolerance: float = CHANGED_TOLERANCE
) -> torch.Tensor:
    """Share of pixels changed by more than ``tolerance`` per image, (N,). Lower is sparser."""
    _pair(originals, counterfactuals, "changed_fraction")
    return ((counterfactuals - originals).abs().flatten(1) > tolerance).float().mean(1)


def latent_distance(original_latents: torch.Tensor, counterfactual_latents: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between latents per image, (N,). Lower is a smaller semantic change."""
    _pair(original_latents, counterfactual_latents, "latent_distance")
    return (counterfactual_latents - original_latents).flatten(1).norm(dim=1)


def agreement(predicted: torch.Tensor, target: torch.Tensor, lower: bool = False) -> torch.Tensor:
    """Per-image agreement of an oracle with the counterfactual's intent, (N,) float 0/1.

    Raising: the oracle predicts the target. Lowering: the oracle predicts anything but the target.
    Higher mean is better: the change is real, not an artefact that fools only one classifier.
    """
    if predicted.shape != target.shape or predicted.dim() != 1:
        raise InputError(f"agreement: need two (N,) tensors, got {tuple(predicted.shape)} and {tuple(target.shape)}")
    hit = predicted != target if lower else predicted == target
    return hit.float()


@torch.no_grad()
@evaluates("model")
def predict_labels(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Argmax predictions of any (N, K)-scoring model, in chunks: (N,) int64."""
    return torch.cat([model(chunk).argmax(1) for chunk in images.split(batch_size)])


@torch.no_grad()
def im_scores(
    autoencoders: torch.nn.Module,
    counterfactuals: torch.Tensor,
    counterfactual_class: torch.Tensor,
    original_class: torch.Tensor,
    eps: float = 1e-8,
) -> dict[str, torch.Tensor]:
    """IM1 and IM2 (Van Looveren & Klaise, 2021) from class autoencoders, each (N,). Lower is more realistic.

    IM1 = |x' - AE_t(x')|^2 / (|x' - AE_o(x')|^2 + eps): below 1 when the counterfactual looks more
    like its new class t than its old class o. IM2 = |AE_t(x') - AE(x')|^2 / (|x'|_1 + eps), with AE
    trained on all classes: small when class t's model and the general model agree.
    """
    reconstructions = torch.cat([autoencoders(chunk) for chunk in counterfactuals.split(256)])
    rows = torch.arange(len(counterfactuals), device=counterfactuals.device)
    shared = reconstructions[:, -1]
    to_target = reconstructions[rows, counterfactual_class]
    to_original = reconstructions[rows, original_class]
    flat = counterfactuals.flatten(1)
    im1 = (flat - to_target.flatten(1)).pow(2).sum(1) / ((flat - to_original.flatten(1)).pow(2).sum(1) + eps)
    im2 = (to_target.flatten(1) - shared.flatten(1)).pow(2).sum(1) / (flat.abs().sum(1) + eps)
    return {"im1": im1, "im2": im2}


def versions() -> dict[str, str]:
    """Versions recorded with every metrics file."""
    return {
        "vcex": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": str(torch.get_num_threads()),
        "machine": platform.machine(),
    }


def _mean(values: torch.Tensor) -> float:
    return round(float(values.float().mean()), 6) if values.numel() else float("nan")


@torch.no_grad()
@evaluates("oracle", "knn", "autoencoders", "latent_model", "attributes")
def image_scores(
    result: CounterfactualResult,
    *,
    oracle: Callable[[torch.Tensor], torch.Tensor] | None = None,
    knn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autoencoders: torch.nn.Module | None = None,
    latent_model: object | None = None,
    attributes: torch.nn.Module | None = None,
    label_attributes: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Every per-image score of :func:`evaluate`, each (N,) (``attribute_changed``: (N, A)), on the CPU.

    Each image's scores depend on that image alone, so scores of chunks concatenated are the scores of the
    whole run, and :func:`scores_record` of them is the record :func:`evaluate` writes (a streamed run's
    metrics are exact, not an average of rounded chunk means). Keys present only with their model:
    ``oracle_agreement``, ``knn_agreement``, ``latent_distance``, ``mnac``, ``mnac_vs_reconstruction``
    (latent methods), ``attribute_changed``, ``im1`` and ``im2`` (not for a lowering run).
    """
    originals, counterfactuals = result.originals, result.counterfactuals
    scores = {
        "success": result.success,
        "target_prob": result.target_prob,
        "l1": l1_distance(originals, counterfactuals),
        "l2": l2_distance(originals, counterfactuals),
        "changed_fraction": changed_fraction(originals, counterfactuals),
        "steps": result.steps,
        "forward_passes": result.forward_passes,
        "backward_passes": result.backward_passes,
    }
    if oracle is not None:
        scores["oracle_agreement"] = agreement(predict_labels(oracle, counterfactuals), result.target, result.lower)
    if knn is not None:
        scores["knn_agreement"] = agreement(predict_labels(knn, counterfactuals), result.target, result.lower)
    if latent_model is not None:
        # every method's images are re-encoded, so the distance is comparable across methods
        z_original = torch.cat([latent_model.encode(c) for c in originals.split(256)])
        z_counterfactual = torch.cat([latent_model.encode(c) for c in counterfactuals.split(256)])
        scores["latent_distance"] = latent_distance(z_original, z_counterfactual)
    if attributes is not None:
        from vcex.evaluation.attributes import mnac

        names = list(attributes.attribute_names)
        unknown = [name for name in label_attributes if name not in names]
        if unknown:
            raise InputError(f"label attributes {unknown} are not read by the attribute oracle ({', '.join(names)})")
        before = torch.cat([torch.sigmoid(attributes(c)) for c in originals.split(256)])
        after = torch.cat([torch.sigmoid(attributes(c)) for c in counterfactuals.split(256)])
        excluded = [names.index(name) for name in label_attributes]
        scores["mnac"] = mnac(before, after, exclude=excluded or None)
        if result.reconstructions is not None:
            # the edit's side effects alone: a generator's counterfactual also carries its reconstruction error
            rebuilt = torch.cat([torch.sigmoid(attributes(c)) for c in result.reconstructions.split(256)])
            scores["mnac_vs_reconstruction"] = mnac(rebuilt, after, exclude=excluded or None)
        scores["attribute_changed"] = (before > 0.5) != (after > 0.5)
    if autoencoders is not None and not result.lower:
        scores.update(im_scores(autoencoders, counterfactuals, result.target, result.original_class))
    return {name: values.detach().cpu() for name, values in scores.items()}


def scores_record(
    scores: dict[str, torch.Tensor],
    *,
    method: str,
    threshold: float | tuple[float, ...],
    lower: bool,
    seconds: float,
    settings: dict,
    dataset: str = "",
    device: str | torch.device = "cpu",
    attribute_names: list[str] | None = None,
    label_attributes: tuple[str, ...] = (),
) -> dict:
    """The ``metrics.json`` record of :func:`image_scores` (of one result, or of chunks concatenated), without
    the entries that compare images with each other (identity, diversity: :func:`evaluate` adds them)."""
    n = len(scores["success"])
    record = {
        "method": method,
        "dataset": dataset,
        "n": n,
        "threshold": threshold,
        "lower": lower,
        "validity": _mean(scores["success"]),
        "mean_target_prob": _mean(scores["target_prob"]),
        "oracle_agreement": _mean(scores["oracle_agreement"]) if "oracle_agreement" in scores else None,
        "knn_agreement": _mean(scores["knn_agreement"]) if "knn_agreement" in scores else None,
        "l1": _mean(scores["l1"]),
        "l2": _mean(scores["l2"]),
        "changed_fraction": _mean(scores["changed_fraction"]),
        "latent_distance": _mean(scores["latent_distance"]) if "latent_distance" in scores else None,
        "realism": None,
        "identity_preservation": None,
        "identity_preservation_pixels": None,
        "identity_chance": None,
        "identity_n": None,
        "diversity": None,
        "diversity_per_class": None,
        "mean_steps": _mean(scores["steps"]),
        "seconds_per_cf": round(seconds / max(n, 1), 6),
        "passes_per_cf": _mean(scores["forward_passes"] + scores["backward_passes"]),
        "forward_passes_per_cf": _mean(scores["forward_passes"]),
        "backward_passes_per_cf": _mean(scores["backward_passes"]),
        "device": str(device),
        "settings": settings,
        "versions": versions(),
    }
    if "mnac" in scores:
        record["mnac"] = _mean(scores["mnac"])
        if "mnac_vs_reconstruction" in scores:
            record["mnac_vs_reconstruction"] = _mean(scores["mnac_vs_reconstruction"])
        changed = scores["attribute_changed"].float().mean(0)
        record["attribute_change_rate"] = {name: round(float(v), 4) for name, v in zip(attribute_names or [], changed)}
        record["label_attributes"] = list(label_attributes)
    if "im1" in scores:
        record["realism"] = {name: _mean(scores[name]) for name in ("im1", "im2")}
    return record


@torch.no_grad()
def evaluate(
    result: CounterfactualResult,
    *,
    dataset: str = "",
    oracle: Callable[[torch.Tensor], torch.Tensor] | None = None,
    knn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autoencoders: torch.nn.Module | None = None,
    latent_model: object | None = None,
    attributes: torch.nn.Module | None = None,
    label_attributes: tuple[str, ...] = (),
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    diversity_reference: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> dict:
    """Every metric of one run as a JSON-ready dict (``metrics.json``).

    Oracles and autoencoders that are not given leave their keys as None, never a made-up value.
    ``attributes`` is a multi-label attribute oracle (images -> (N, A) logits, with ``attribute_names``);
    with it the record adds ``mnac`` (mean number of attributes the oracle reads differently after the
    change, ``label_attributes`` excluded: lower is better), ``attribute_change_rate`` per attribute and,
    for latent methods, ``mnac_vs_reconstruction`` (the same count against decode(encode(x)), which
    separates the edit's side effects from the generator's reconstruction error).
    ``features`` (images -> (N, D), e.g. :func:`vcex.evaluation.penultimate_features` of the oracle) adds
    ``identity_preservation`` (share of counterfactuals whose nearest original of this run is their own; chance
    ``identity_chance`` = 1/N) and, with ``diversity_reference`` = (features (M, D), labels (M,)) of real
    images (:func:`vcex.evaluation.diversity_reference`), ``diversity`` and ``diversity_per_class``
    (counterfactuals' spread per target class over real images' spread; ~0 is collapse onto a template).
    Per-image scores: :func:`image_scores`; the record of them: :func:`scores_record`.
    """
    scores = image_scores(
        result,
        oracle=oracle,
        knn=knn,
        autoencoders=autoencoders,
        latent_model=latent_model,
        attributes=attributes,
        label_attributes=label_attributes,
    )
    record = scores_record(
        scores,
        method=result.method,
        threshold=result.threshold,
        lower=result.lower,
        seconds=result.seconds,
        settings=result.settings,
        dataset=dataset,
        device=device,
        attribute_names=list(attributes.attribute_names) if attributes is not None else None,
        label_attributes=label_attributes,
    )
    record.update(comparison_metrics(result, features, diversity_reference))
    return record


@torch.no_grad()
def comparison_metrics(
    result: CounterfactualResult,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    diversity_reference: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """The entries of a metrics record that compare a result's images with each other, not per image:
    ``identity_preservation_pixels`` and, with ``features``, identity and diversity (see :func:`evaluate`)."""
    originals, counterfactuals = result.originals, result.counterfactuals
    record: dict = {
        # the same in pixels: an oracle's penultimate features are organised by class, so there every convincing
        # counterfactual is nearest to originals of its new class (near chance for every method,
        # docs/benchmarks/identity.md); in pixels a collapse onto a class template still shows
        "identity_preservation_pixels": _mean(
            identity_preservation(originals.flatten(1).float(), counterfactuals.flatten(1).float())
        )
        if len(result)
        else None,
    }
    if features is not None:
        # diversity groups counterfactuals by the class they now claim; a lowering run claims none
        reference = None if result.lower else diversity_reference
        record.update(identity_metrics(features(originals), features(counterfactuals), result.target, reference))
    return record
