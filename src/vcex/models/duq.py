"""DUQ, a classifier whose per-class certainty says how in-distribution an image is, and energy scores.

Deterministic Uncertainty Quantification (van Amersfoort, Smith, Teh & Gal, ICML 2020): a feature
extractor, then one RBF kernel per class between a learned class embedding of the features and that
class's centroid. The centroids are exponential moving averages of the embeddings of the class's
training images, not trained by gradient. The kernel value ``K_c(x)`` in (0, 1] is the certainty that
``x`` belongs to class ``c``; far from every centroid all certainties fall towards 0, which makes
``K_target`` a manifold-consistency score for counterfactuals (DISC, Thiagarajan et al. 2021).

For any other classifier, :func:`energy_score` gives the JEM-style energy ``-logsumexp(logits)``
(Grathwohl et al., 2020): lower means more typical of the training data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vcex.data import ImageDataset
from vcex.errors import InputError, ModelError
from vcex.models.classifiers import Classifier
from vcex.models.training import accuracy, fit, random_shift

# van Amersfoort et al. 2020, section 4 (FashionMNIST / CIFAR-10): length scale 0.1, EMA momentum 0.999
DUQ_LENGTH_SCALE = 0.1
DUQ_MOMENTUM = 0.999
# the smallest certainty turned into a logit; log K below this carries no useful gradient
_MIN_CERTAINTY = 1e-12


class DUQNet(nn.Module):
    """DUQ network: conv features (with batch norm) -> per-class embeddings -> RBF certainties.

    Input (N, C, H, W) normalised images. ``certainties`` returns K (N, classes) in (0, 1];
    ``forward`` returns ``log K`` as logits, so ``softmax`` gives K normalised over classes and
    ``exp(logits)`` gives the certainties themselves.

    Args:
        in_channels, num_classes, image_size: input and output shape.
        width: channels of the first conv block (doubled in the second).
        feature_dim: size of the feature vector f(x).
        embedding_dim: size of each class's embedding W_c f(x) and centroid e_c.
        length_scale: RBF length scale sigma (0.1, the paper's value).
        momentum: EMA momentum of the centroids (0.999 in the paper; smaller for short training).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        *,
        width: int = 32,
        feature_dim: int = 128,
        embedding_dim: int = 64,
        length_scale: float = DUQ_LENGTH_SCALE,
        momentum: float = DUQ_MOMENTUM,
    ) -> None:
        super().__init__()
        if image_size % 4:
            raise InputError(f"DUQNet needs an image size divisible by 4, got {image_size}")
        self.num_classes = num_classes
        self.length_scale = length_scale
        self.momentum = momentum

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        side = image_size // 4
        self.features = nn.Sequential(
            block(in_channels, width),
            nn.MaxPool2d(2),
            block(width, 2 * width),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * side * side, feature_dim),
            nn.ReLU(),
        )
        self.embedding = nn.Parameter(torch.randn(embedding_dim, num_classes, feature_dim) * feature_dim**-0.5)
        # centroid = centroid_sum / centroid_count; both are EMAs (paper, eq. 3)
        self.register_buffer("centroid_count", torch.full((num_classes,), 13.0))
        self.register_buffer("centroid_sum", torch.randn(embedding_dim, num_classes) * 13.0 * 0.05)

    @property
    def centroids(self) -> torch.Tensor:
        """(embedding_dim, classes) class centroids e_c."""
        return self.centroid_sum / self.centroid_count

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Per-class embeddings W_c f(x): (N, embedding_dim, classes)."""
        return torch.einsum("ij,mnj->imn", self.features(images), self.embedding)

    def kernel(self, embeddings: torch.Tensor) -> torch.Tensor:
        """RBF certainties K (N, classes) in (0, 1] from embeddings (N, embedding_dim, classes)."""
        distances = (embeddings - self.centroids.unsqueeze(0)).pow(2).mean(1)
        return torch.exp(-distances / (2 * self.length_scale**2))

    def certainties(self, images: torch.Tensor) -> torch.Tensor:
        """K_c(x) (N, classes) in (0, 1]: how certain the model is that x is of class c."""
        return self.kernel(self.embed(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.certainties(images).clamp_min(_MIN_CERTAINTY).log()

    @torch.no_grad()
    def update_centroids(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """One EMA step of the centroids from a labelled batch's embeddings (N, embedding_dim, classes)."""
        one_hot = F.one_hot(labels, self.num_classes).to(embeddings.dtype)
        counts = one_hot.sum(0)
        sums = torch.einsum("imn,in->mn", embeddings, one_hot)
        self.centroid_count.mul_(self.momentum).add_(counts, alpha=1 - self.momentum)
        self.centroid_sum.mul_(self.momentum).add_(sums, alpha=1 - self.momentum)


def duq_network(classifier: nn.Module) -> DUQNet | None:
    """The :class:`DUQNet` inside ``classifier`` (itself, or a :class:`Classifier` wrapping one), else None."""
    if isinstance(classifier, DUQNet):
        return classifier
    if isinstance(classifier, Classifier) and isinstance(classifier.network, DUQNet):
        return classifier.network
    return None


def build_duq(
    data: ImageDataset,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    seed: int = 0,
    momentum: float = 0.99,
    **network_options: object,
) -> Classifier:
    """A DUQ classifier for ``data``'s images, wrapped as a :class:`Classifier` (takes [0, 1] images).

    ``momentum`` defaults to 0.99 rather than the paper's 0.999: the zoo trains for a few epochs only,
    and the centroids must follow the features within them.
    """
    torch.manual_seed(seed)
    channels, size = data.image_shape[0], data.image_shape[-1]
    network = DUQNet(channels, data.num_classes, size, momentum=momentum, **network_options)
    mean = mean or (0.5,) * channels
    std = std or (0.5,) * channels
    return Classifier(network, mean, std, input_shape=data.image_shape, class_names=data.class_names)


def duq_loss(model: Classifier, gradient_penalty: float = 0.0, max_shift: int = 0) -> Callable:
    """The DUQ training step: binary cross-entropy of every class's certainty against the one-hot
    label, plus an optional two-sided gradient penalty ``lambda * (|d sum_c K_c / dx|^2 - 1)^2``
    (paper, eq. 6), then an EMA update of the centroids from the batch."""
    network = duq_network(model)
    if network is None:
        raise ModelError("duq_loss needs a DUQ classifier (a Classifier wrapping DUQNet); build one with build_duq")

    def step(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_shift(images, max_shift, generator)
        if gradient_penalty > 0:
            images = images.detach().requires_grad_(True)
        embeddings = network.embed((images - model.mean) / model.std)
        certainty = network.kernel(embeddings)
        one_hot = F.one_hot(labels, network.num_classes).to(certainty.dtype)
        loss = F.binary_cross_entropy(certainty.clamp(1e-7, 1 - 1e-7), one_hot, reduction="sum") / len(images)
        if gradient_penalty > 0:
            (gradient,) = torch.autograd.grad(certainty.sum(), images, create_graph=True)
            loss = loss + gradient_penalty * (gradient.flatten(1).pow(2).sum(1) - 1).pow(2).mean()
        network.update_centroids(embeddings.detach(), labels)
        return loss

    return step


def train_duq(
    model: Classifier,
    train_dataset: ImageDataset,
    epochs: int = 8,
    *,
    batch_size: int = 64,
    lr: float = 2e-3,
    gradient_penalty: float = 0.0,
    max_shift: int = 0,
    seed: int = 0,
    progress: bool = True,
    test_dataset: ImageDataset | None = None,
) -> dict:
    """Train a DUQ classifier (from :func:`build_duq`) in place; returns its record, e.g. test accuracy.

    Args:
        model: the DUQ classifier; left in eval mode.
        train_dataset: labelled images (N, C, H, W) in [0, 1].
        epochs, batch_size, lr, seed: as for the zoo's other classifiers (Adam, one-cycle schedule).
        gradient_penalty: weight of the two-sided input-gradient penalty (0: off; the paper used 0.05
            on FashionMNIST). It roughly triples the cost of a step.
        max_shift: random translation in pixels (augmentation).
        test_dataset: if given, the record holds its accuracy and mean certainty of the true class.
    """
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    fit(
        model,
        duq_loss(model, gradient_penalty, max_shift),
        train_dataset.images,
        train_dataset.labels,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        desc=f"training {train_dataset.name} DUQ classifier",
    )
    record: dict = {"gradient_penalty": gradient_penalty}
    if test_dataset is not None:
        record["test_accuracy"] = round(accuracy(model, test_dataset.images, test_dataset.labels), 4)
        with torch.no_grad():
            certainty = torch.cat([model(chunk).exp() for chunk in test_dataset.images.split(1024)])
        record["test_true_class_certainty"] = round(float(certainty.gather(1, test_dataset.labels[:, None]).mean()), 4)
    return record


def certainty_score(duq: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """DUQ certainty of every class, K (N, classes) in (0, 1], for images in the model's range."""
    if duq_network(duq) is None:
        raise ModelError(
            f"certainty_score needs a DUQ classifier (a Classifier wrapping DUQNet), got {type(duq).__name__}; "
            "use energy_score for other classifiers"
        )
    return duq(images).exp()


def energy_score(classifier: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """JEM energy ``-logsumexp(logits)`` per image, (N,): lower is more typical of the training data."""
    return -torch.logsumexp(classifier(images), dim=1)
