"""Attribution: which human descriptors a counterfactual changes, locally and globally.

>>> from vcex.attribution import Descriptors, LatentAttributes, global_scores, directions_from_result
>>> probes = LatentAttributes(vae).fit(images, Descriptors.from_morphometrics(images))
>>> local = probes.local(result)  # (N, A) signed changes in probe probability
>>> local.ranked(k=3)[0]  # image 0's top 3: [{"name": "thickness", "change": 0.41, "rank": 1}, ...]
>>> global_scores(local, directions_from_result(result)).ranked()
>>> readers = ImageAttributes().fit(images, descriptors)  # reads counterfactual images instead
>>> explain_away(attack, readers, images, rounds=2).ranking()  # round 2 holds round 1's winner
"""

from vcex.attribution.base import rank_by_magnitude
from vcex.attribution.descriptors import Descriptors
from vcex.attribution.explain_away import ExplainAway, explain_away, group_scores, residual_scores
from vcex.attribution.global_scores import (
    GlobalExplanation,
    bootstrap_interval,
    directions_from_result,
    global_scores,
    global_scores_by_class,
    linear_direction_scores,
)
from vcex.attribution.image_attributes import ImageAttributes
from vcex.attribution.latent_attributes import LatentAttributes, LocalAttribution, ProbeReport

__all__ = [
    "Descriptors",
    "ExplainAway",
    "GlobalExplanation",
    "ImageAttributes",
    "LatentAttributes",
    "LocalAttribution",
    "ProbeReport",
    "bootstrap_interval",
    "directions_from_result",
    "explain_away",
    "global_scores",
    "global_scores_by_class",
    "group_scores",
    "linear_direction_scores",
    "rank_by_magnitude",
    "residual_scores",
]
