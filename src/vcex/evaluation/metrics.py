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
    """
    originals, counterfactuals = result.originals, result.counterfactuals
    counterfactual_class = result.target
    record = {
        "method": result.method,
        "dataset": dataset,
        "n": len(result),
        "threshold": result.threshold,
        "lower": result.lower,
        "validity": _mean(result.success),
        "mean_target_prob": _mean(result.target_prob),
        "oracle_agreement": None,
        "knn_agreement": None,
        "l1": _mean(l1_distance(originals, counterfactuals)),
        "l2": _mean(l2_distance(originals, counterfactuals)),
        "changed_fraction": _mean(changed_fraction(originals, counterfactuals)),
        "latent_distance": None,
        "realism": None,
        "identity_preservation": None,
        # the same in pixels: an oracle's penultimate features are organised by class, so there every convincing
        # counterfactual is nearest to originals of its new class (near chance for every method,
        # docs/benchmarks/identity.md); in pixels a collapse onto a class template still shows
        "identity_preservation_pixels": _mean(
            identity_preservation(originals.flatten(1).float(), counterfactuals.flatten(1).float())
        )
        if len(result)
        else None,
        "identity_chance": None,
        "identity_n": None,
        "diversity": None,
        "diversity_per_class": None,
        "mean_steps": _mean(result.steps),
        "seconds_per_cf": round(result.seconds / max(len(result), 1), 6),
        "passes_per_cf": _mean(result.forward_passes + result.backward_passes),
        "forward_passes_per_cf": _mean(result.forward_passes),
        "backward_passes_per_cf": _mean(result.backward_passes),
        "device": str(device),
        "settings": result.settings,
        "versions": versions(),
    }
    if oracle is not None:
        record["oracle_agreement"] = _mean(
            agreement(predict_labels(oracle, counterfactuals), result.target, result.lower)
        )
    if knn is not None:
        record["knn_agreement"] = _mean(agreement(predict_labels(knn, counterfactuals), result.target, result.lower))
    if latent_model is not None:
        # every method's images are re-encoded, so the distance is comparable across methods
        z_original = torch.cat([latent_model.encode(c) for c in originals.split(256)])
        z_counterfactual = torch.cat([latent_model.encode(c) for c in counterfactuals.split(256)])
        record["latent_distance"] = _mean(latent_distance(z_original, z_counterfactual))
    if attributes is not None:
        from vcex.evaluation.attributes import mnac

        names = list(attributes.attribute_names)
        unknown = [name for name in label_attributes if name not in names]
        if unknown:
            raise InputError(f"label attributes {unknown} are not read by the attribute oracle ({', '.join(names)})")
        before = torch.cat([torch.sigmoid(attributes(c)) for c in originals.split(256)])
        after = torch.cat([torch.sigmoid(attributes(c)) for c in counterfactuals.split(256)])
        excluded = [names.index(name) for name in label_attributes]
        record["mnac"] = _mean(mnac(before, after, exclude=excluded or None))
        if result.reconstructions is not None:
            # the edit's side effects alone: a generator's counterfactual also carries its reconstruction error
            rebuilt = torch.cat([torch.sigmoid(attributes(c)) for c in result.reconstructions.split(256)])
            record["mnac_vs_reconstruction"] = _mean(mnac(rebuilt, after, exclude=excluded or None))
        changed = ((before > 0.5) != (after > 0.5)).float().mean(0)
        record["attribute_change_rate"] = {name: round(float(v), 4) for name, v in zip(names, changed)}
        record["label_attributes"] = list(label_attributes)
    if features is not None:
        # diversity groups counterfactuals by the class they now claim; a lowering run claims none
        reference = None if result.lower else diversity_reference
        record.update(identity_metrics(features(originals), features(counterfactuals), result.target, reference))
    if autoencoders is not None and not result.lower:
        scores = im_scores(autoencoders, counterfactuals, counterfactual_class, result.original_class)
        record["realism"] = {name: _mean(values) for name, values in scores.items()}
    return record
