"""Attribution: which human descriptors a counterfactual changes, locally and globally.

>>> from vcex.attribution import Descriptors, LatentAttributes, global_scores, directions_from_result
>>> probes = LatentAttributes(vae).fit(images, Descriptors.from_morphometrics(images))
>>> local = probes.local(result)  # (N, A) signed changes in probe probability
>>> global_scores(local, directions_from_result(result)).ranked()
>>> readers = ImageAttributes().fit(images, descriptors)  # reads counterfactual images instead
"""

from vcex.attribution.descriptors import Descriptors
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
    "GlobalExplanation",
    "ImageAttributes",
    "LatentAttributes",
    "LocalAttribution",
    "ProbeReport",
    "bootstrap_interval",
    "directions_from_result",
    "global_scores",
    "global_scores_by_class",
    "linear_direction_scores",
]
