"""Metrics for counterfactuals: plain batched functions, and :func:`evaluate` for a whole run."""

from vcex.evaluation.attributes import mnac
from vcex.evaluation.cost import CostCounter, per_counterfactual
from vcex.evaluation.features import PenultimateFeatures, penultimate_features
from vcex.evaluation.global_curves import flip_rate_curve, sufficiency_curve
from vcex.evaluation.identity import (
    diversity,
    diversity_reference,
    identity_metrics,
    identity_preservation,
    mean_diversity,
    mean_pairwise_distance,
    nearest_original,
)
from vcex.evaluation.metrics import (
    agreement,
    changed_fraction,
    evaluate,
    im_scores,
    l1_distance,
    l2_distance,
    latent_distance,
    predict_labels,
    versions,
)
from vcex.evaluation.realism import (
    frechet_distance,
    kid,
    knn_target_distance,
    split_frechet_distance,
    target_class_frechet,
    target_class_kid,
    target_class_reference,
)

__all__ = [
    "CostCounter",
    "PenultimateFeatures",
    "agreement",
    "changed_fraction",
    "diversity",
    "diversity_reference",
    "evaluate",
    "flip_rate_curve",
    "frechet_distance",
    "identity_metrics",
    "identity_preservation",
    "im_scores",
    "kid",
    "knn_target_distance",
    "l1_distance",
    "l2_distance",
    "latent_distance",
    "mean_diversity",
    "mean_pairwise_distance",
    "mnac",
    "nearest_original",
    "penultimate_features",
    "per_counterfactual",
    "predict_labels",
    "split_frechet_distance",
    "target_class_frechet",
    "target_class_kid",
    "target_class_reference",
    "sufficiency_curve",
    "versions",
]
