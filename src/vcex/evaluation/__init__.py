"""Metrics for counterfactuals: plain batched functions, and :func:`evaluate` for a whole run."""

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

__all__ = [
    "agreement",
    "changed_fraction",
    "evaluate",
    "im_scores",
    "l1_distance",
    "l2_distance",
    "latent_distance",
    "predict_labels",
    "versions",
]
