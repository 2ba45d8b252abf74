"""Counterfactual explainers: one method per file on the shared :class:`Explainer` base."""

from vcex.explainers.amortized import AmortizedCounterfactual
from vcex.explainers.base import PAPER_THRESHOLD, Explainer, resolve_targets
from vcex.explainers.counterfactual_attack import CounterfactualAttack
from vcex.explainers.disc import DISC
from vcex.explainers.linear_edit import LinearLatentEdit
from vcex.explainers.loop import LoopOutput, optimise_until_confident
from vcex.explainers.pixel_attack import PixelAttack
from vcex.explainers.result import CounterfactualResult
from vcex.explainers.stylespace_direction import StyleSpaceDirection
from vcex.explainers.thresholds import DEFAULT_THRESHOLD, class_thresholds, explained_thresholds

__all__ = [
    "AmortizedCounterfactual",
    "DEFAULT_THRESHOLD",
    "DISC",
    "PAPER_THRESHOLD",
    "CounterfactualAttack",
    "CounterfactualResult",
    "Explainer",
    "LinearLatentEdit",
    "LoopOutput",
    "PixelAttack",
    "StyleSpaceDirection",
    "class_thresholds",
    "explained_thresholds",
    "optimise_until_confident",
    "resolve_targets",
]
