"""Classifiers: the wrapper every explainer sees, the zoo's architectures and the kNN oracle."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vcex.checks import check_images
from vcex.errors import InputError, ModelError
from vcex.models.state import evaluates

OUTPUTS = ("logits", "probabilities")  # what a Classifier's network may return
# how far a row of outputs may sum from 1 and still be taken for probabilities (float32 softmax rows sum to 1
# within ~1e-6; real logits landing in [0, 1] and summing to 1 this closely on every image is no accident)
PROBABILITY_SUM_TOLERANCE = 1e-4


class Classifier(nn.Module):
    """A classifier that takes images in ``value_range`` and returns logits (N, num_classes).

    Input normalisation lives here, so a decoder's [0, 1] output can be fed straight in and is
    never mistaken for normalised input. A network with one output logit is treated as a binary
    classifier: its logit l becomes the two logits (0, l), so softmax gives (1 - sigmoid(l), sigmoid(l)).

    Args:
        network: module mapping normalised (N, C, H, W) images to logits (N, K) or (N, 1).
        mean, std: per-channel normalisation applied before ``network`` (None: none).
        input_shape: (C, H, W) the network expects, if known; checked at the public edge.
        value_range: range of the images it accepts.
        class_names: optional names, one per class.
        outputs: what ``network`` returns: ``"logits"`` (default), or ``"probabilities"`` (a final softmax,
            or one sigmoid output p for a binary classifier, read as (1 - p, p)), whose log is taken here,
            so explainers get log-probabilities, which are valid logits.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=1))  # ends in a softmax
        >>> classifier = Classifier(model, outputs="probabilities")
    """

    def __init__(
        self,
        network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: tuple[int, int, int] | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
        class_names: Sequence[str] | None = None,
        outputs: str = "logits",
    ) -> None:
        super().__init__()
        if outputs not in OUTPUTS:
            raise InputError(f"outputs must be one of {', '.join(map(repr, OUTPUTS))}, got {outputs!r}")
        self.outputs = outputs
        self.network = network if isinstance(network, nn.Module) else _CallableModule(network)
        channels = len(mean) if mean is not None else 1
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(1, -1, 1, 1))
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.value_range = value_range
        self.class_names = list(class_names) if class_names is not None else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.network((images - self.mean) / self.std)
        if self.outputs == "probabilities" and isinstance(logits, torch.Tensor):
            if logits.dim() == 2 and logits.shape[1] == 1:
                logits = torch.cat([1 - logits, logits], dim=1)
            # the smallest normal float: only a probability that underflowed to 0 is raised, so gradients
            # still flow through every representable one
            return logits.clamp_min(torch.finfo(logits.dtype).tiny).log()
        if isinstance(logits, torch.Tensor) and logits.dim() == 2 and logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return self.mean.device


class _CallableModule(nn.Module):
    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.function(images)


def as_classifier(model: nn.Module | Callable[[torch.Tensor], torch.Tensor] | Classifier) -> Classifier:
    """Accept a :class:`Classifier`, any ``nn.Module`` or a callable returning logits."""
    if isinstance(model, Classifier):
        return model
    if isinstance(model, nn.Module) or callable(model):
        return Classifier(model)
    raise InputError(f"classifier must be an nn.Module or a callable returning logits, got {type(model).__name__}")


def checked_logits(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    """Run the classifier once at the edge and check that it returns finite (N, K) logits, K >= 2."""
    try:
        logits = classifier(images)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"the classifier failed on images of shape {tuple(images.shape)}: {first_line}; "
            "check the number of channels and the image size it expects"
        ) from error
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(
            f"the classifier must return logits of shape (N, classes) = ({images.shape[0]}, K), got {shape}"
        )
    if logits.shape[1] < 2:
        raise ModelError(f"the classifier returned {logits.shape[1]} classes; it needs at least 2")
    if not bool(torch.isfinite(logits).all()):
        raise ModelError("the classifier returned NaN or inf logits on these images")
    in_unit_range = bool(((logits >= 0) & (logits <= 1)).all())
    if in_unit_range and bool(((logits.sum(1) - 1).abs() <= PROBABILITY_SUM_TOLERANCE).all()):
        raise ModelError(
            "the classifier returns probabilities (every row in [0, 1], summing to 1), not logits, so the "
            "explainers would softmax them again and barely move them; wrap it as "
            'vcex.Classifier(model, outputs="probabilities"), which takes their log, or drop its final softmax'
        )
    return logits


def check_classifier_images(classifier: Classifier, images: torch.Tensor) -> torch.Tensor:
    """``images`` checked against what ``classifier`` takes: its channels and size (where known) and its range."""
    shape = classifier.input_shape
    return check_images(
        images,
        channels=shape[0] if shape else None,
        size=tuple(shape[1:]) if shape else None,
        value_range=classifier.value_range,
    )


@torch.no_grad()
@evaluates("classifier")
def predict_proba(classifier: Classifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Probabilities (N, K) in chunks of ``batch_size`` on the images' device; the first chunk checks the logits.
    The classifier runs in eval mode; its modes are restored afterwards."""
    outputs = []
    for i, chunk in enumerate(images.split(batch_size)):
        logits = checked_logits(classifier, chunk) if i == 0 else classifier(chunk)
        outputs.append(logits.softmax(1))
    return torch.cat(outputs)


def check_differentiable(classifier: Classifier, images: torch.Tensor, method: str) -> None:
    """Refuse a classifier whose output carries no gradient w.r.t. its input (a black box)."""
    probe = images[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        try:
            logits = classifier(probe)
        except RuntimeError as error:  # pragma: no cover - checked_logits ran first
            raise ModelError(f"the classifier failed on a probe image: {error}") from error
        if not isinstance(logits, torch.Tensor) or not logits.requires_grad:
            raise ModelError(
                f"{method} needs gradients of the classifier's output w.r.t. its input, but this classifier "
                "is not differentiable (a black box, or it runs under no_grad / detaches); use a "
                "differentiable model, or a black-box method"
            )


class SmallCNN(nn.Module):
    """The Counterfactual Attacks paper's MNIST classifier: Conv32-pool-Conv64-pool-FC128-FC(K).

    Input (N, C, 28, 28) normalised images; output logits (N, K).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 2) // 2 - 2) // 2
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class FaceCNN(nn.Module):
    """The Counterfactual Attacks paper's CelebA classifier shape: three [conv3x3, ReLU, max-pool]
    blocks (32/64/128 channels), FC512, dropout 0.3, FC(K). Input (N, C, S, S), S divisible by 8."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, image_size: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((in_channels, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        side = image_size // 8
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * side * side, 512), nn.ReLU(), nn.Dropout(0.3), nn.Linear(512, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class OracleNet(nn.Module):
    """An evaluation oracle of a different design from :class:`SmallCNN`: 5x5 convs with batch norm,
    strided downsampling and global average pooling. Input (N, C, H, W); output logits (N, K)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 5, stride, 2, bias=False), nn.BatchNorm2d(cout), nn.GELU())

        self.body = nn.Sequential(
            block(in_channels, width, 2),
            block(width, 2 * width, 1),
            block(2 * width, 2 * width, 2),
            block(2 * width, 4 * width, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(4 * width, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class KNNOracle:
    """k-nearest-neighbour classifier on training images (pixel L2). Not differentiable on purpose:
    adversarial pixel noise that fools a network rarely moves an image to another class's neighbours.

    Args:
        images: (M, C, H, W) training images; labels: (M,) int64.
        k: neighbours that vote; ties go to the class of the nearest voter.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        k: int = 5,
        num_classes: int | None = None,
        chunk_size: int = 512,
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise InputError(f"{images.shape[0]} images but {labels.shape[0]} labels for the kNN oracle")
        if k < 1 or k > images.shape[0]:
            raise InputError(f"k must lie in [1, {images.shape[0]}], got {k}")
        self.points = images.flatten(1).float()
        self.sq_norms = self.points.pow(2).sum(1)
        self.labels = labels.long()
        self.k = k
        self.num_classes = int(num_classes or int(labels.max()) + 1)
        self.chunk_size = chunk_size
        self.input_shape = tuple(images.shape[1:])

    def votes(self, images: torch.Tensor) -> torch.Tensor:
        """Share of the k neighbours in each class: (N, K), rows sum to 1."""
        shares = []
        for chunk in images.flatten(1).float().to(self.points.device).split(self.chunk_size):
            distances = chunk.pow(2).sum(1, keepdim=True) - 2 * chunk @ self.points.T + self.sq_norms
            nearest = distances.topk(self.k, largest=False).indices
            one_hot = F.one_hot(self.labels[nearest], self.num_classes).float()
            # a tiny bonus for closer voters breaks ties in favour of the nearest neighbour
            weights = 1.0 + 1e-3 * torch.linspace(1, 0, self.k, device=chunk.device)
            shares.append((one_hot * weights[None, :, None]).sum(1) / weights.sum())
        return torch.cat(shares).to(images.device)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class per image: (N,) int64."""
        return self.votes(images).argmax(1)

    __call__ = votes

    def to(self, device: torch.device | str) -> KNNOracle:
        self.points, self.sq_norms, self.labels = (t.to(device) for t in (self.points, self.sq_norms, self.labels))
        return self
