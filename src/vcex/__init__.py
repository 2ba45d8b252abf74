"""vcex: visual counterfactual explanations for image classifiers.

>>> from vcex import CounterfactualAttack, load_classifier, load_latent_model
>>> attack = CounterfactualAttack(load_classifier("mnist-cnn"), load_latent_model("mnist-vae"))
>>> result = attack.explain(images, target="second")
"""

from vcex._version import __version__
from vcex.errors import CacheError, DatasetNotFoundError, InputError, ModelError, VcexError
from vcex.explainers import (
    DISC,
    AmortizedCounterfactual,
    CounterfactualAttack,
    CounterfactualResult,
    Explainer,
    LinearLatentEdit,
    PixelAttack,
    StyleSpaceDirection,
    class_thresholds,
)
from vcex.models import (
    Classifier,
    KNNOracle,
    LatentModel,
    WhitenedLatentModel,
    as_classifier,
    load_classifier,
    load_duq,
    load_knn_oracle,
    load_latent_model,
    load_model,
)

__all__ = [
    "AmortizedCounterfactual",
    "CacheError",
    "Classifier",
    "CounterfactualAttack",
    "CounterfactualResult",
    "DISC",
    "DatasetNotFoundError",
    "Explainer",
    "InputError",
    "KNNOracle",
    "LatentModel",
    "LinearLatentEdit",
    "ModelError",
    "PixelAttack",
    "StyleSpaceDirection",
    "VcexError",
    "WhitenedLatentModel",
    "__version__",
    "as_classifier",
    "class_thresholds",
    "load_classifier",
    "load_duq",
    "load_knn_oracle",
    "load_latent_model",
    "load_model",
]
