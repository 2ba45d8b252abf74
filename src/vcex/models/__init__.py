"""Models: the classifier wrapper, the zoo's architectures, latent backends and the train-or-load cache."""

from vcex.models.classifiers import Classifier, KNNOracle, OracleNet, SmallCNN, as_classifier
from vcex.models.diffae import DiffAEConfig, DiffusionAutoencoder
from vcex.models.latent import VAE, ClassAutoencoders, LatentModel, as_latent_model
from vcex.models.whitening import WhitenedLatentModel
from vcex.models.zoo import (
    load_classifier,
    load_duq,
    load_knn_oracle,
    load_latent_model,
    load_model,
    model_names,
    model_spec,
)

__all__ = [
    "VAE",
    "ClassAutoencoders",
    "Classifier",
    "DiffAEConfig",
    "DiffusionAutoencoder",
    "KNNOracle",
    "LatentModel",
    "OracleNet",
    "SmallCNN",
    "WhitenedLatentModel",
    "as_classifier",
    "as_latent_model",
    "load_classifier",
    "load_duq",
    "load_knn_oracle",
    "load_latent_model",
    "load_model",
    "model_names",
    "model_spec",
]
