"""Models for the synthetic faces that are not classifiers of one label.

- :class:`AttributeOracle`: one network reading every binary attribute, used only for evaluation
  (MNAC, and whether a reconstruction keeps a face's attributes).
- :class:`FactorRegressor`: reads the continuous content factors; its features are the perceptual
  term when the style generator is trained (no VGG/LPIPS weights can be downloaded, so the
  perceptual space is one we train on faces ourselves).
- ``train_*`` functions the model zoo calls, each returning the held-out figures it records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vcex.checks import check_images
from vcex.data.faces_tasks import ATTRIBUTE_NAMES, CONTENT_FACTORS, attribute_matrix, factor_matrix
from vcex.data.synthetic_faces import FacesDataset
from vcex.errors import InputError
from vcex.models.classifiers import FaceCNN
from vcex.models.training import fit, gaussian_blur, random_blur, random_shift


def conv_pair_net(outputs: int, width: int = 16, in_channels: int = 3) -> nn.Sequential:
    """The faces' oracle design: (N, C, S, S) normalised -> (N, outputs). A 3x3 conv, then two stages of
    paired 3x3 convs with batch norm and GELU, max-pooling between stages and no stride before the first
    pooling, so features of a few pixels (the mouth's bend, the eyelids) survive; global 2x2 pooling."""

    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]

    def stage(cin: int, cout: int) -> list[nn.Module]:
        return [*conv(cin, cout), *conv(cout, cout), nn.MaxPool2d(2)]

    return nn.Sequential(
        *conv(in_channels, width),
        nn.MaxPool2d(2),
        *stage(width, 2 * width),
        *stage(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(16 * width, outputs),
    )


class AttributeOracle(nn.Module):
    """Multi-label reader of the faces' binary attributes.

    ``forward(images (N, 3, S, S) in [0, 1]) -> logits (N, A)``, one column per name in
    ``attribute_names``; ``predict`` thresholds them to 0/1. A different design from the classifiers
    it judges: pairs of 3x3 convolutions with batch norm and GELU per stage, and no stride before the
    first pooling, so features of a few pixels (the mouth's bend, the eyelids) survive.
    """

    def __init__(self, attribute_names: Sequence[str] = ATTRIBUTE_NAMES, width: int = 16) -> None:
        super().__init__()
        self.attribute_names = tuple(attribute_names)

        self.body = conv_pair_net(len(self.attribute_names), width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images * 2 - 1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, 3, S, S) in [0, 1] -> (N, A) int64 in {0, 1}."""
        check_images(images, channels=3, name="images")
        device = next(self.parameters()).device
        return (
            torch.cat([(self(chunk.to(device)) > 0).long().cpu() for chunk in images.split(batch_size)])
            if len(images)
            else torch.zeros(0, len(self.attribute_names), dtype=torch.long)
        )

    def index(self, names: Sequence[str]) -> list[int]:
        """Column indices of attribute ``names``; unknown names raise listing the known ones."""
        unknown = [name for name in names if name not in self.attribute_names]
        if unknown:
            raise InputError(f"unknown attribute(s) {unknown}; known: {', '.join(self.attribute_names)}")
        return [self.attribute_names.index(name) for name in names]


class FactorRegressor(nn.Module):
    """Reads the content factors scaled to [0, 1]: (N, 3, S, S) in [0, 1] -> (N, F) in [0, 1].

    ``features`` returns the perceptual embedding used to train the style generator: its three
    conv stages, hidden layer and outputs, each scaled to contribute comparably.
    """

    def __init__(self, factor_names: Sequence[str] = CONTENT_FACTORS, image_size: int = 32) -> None:
        super().__init__()
        self.factor_names = tuple(factor_names)
        self.net = FaceCNN(3, len(self.factor_names), image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(images * 2 - 1))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, D) embedding: spatial features, hidden layer and factor read-outs."""
        maps = self.net.features(images * 2 - 1)
        hidden = self.net.head[:3](maps)
        out = torch.sigmoid(self.net.head[3:](hidden))
        return torch.cat([maps.flatten(1) * 0.05, hidden * 0.2, out * 3.0], 1)


class WarmthReadings(nn.Module):
    """A factor reader's readings with the circular ``background_hue`` replaced by ``background_warmth`` in
    [0, 1]: ``(1 + cos(2 pi (hue - 0.05))) / 2``, 1 at orange-red (the middle of the warm half of the hue circle,
    where the attribute ``warm_background`` is on), 0 at cyan. A hue cannot be moved by a fixed amount by any
    colour offset (it wraps: +0.7 from 0.1 lands on the same warm side), so the alignment term asks a
    coordinate to move the warmth, which an added colour can. ``(N, 3, S, S) -> (N, F)``; other factors as read.
    """

    def __init__(self, reader: nn.Module, hue: str = "background_hue") -> None:
        super().__init__()
        names = tuple(reader.factor_names)
        if hue not in names:
            raise InputError(f"the factor reader has no {hue!r} to turn into a warmth; its factors: {', '.join(names)}")
        self.reader, self.hue = reader, names.index(hue)
        self.factor_names = tuple("background_warmth" if name == hue else name for name in names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        readings = self.reader(images)
        warmth = (1 + torch.cos(2 * math.pi * (readings[:, self.hue] - 0.05))) / 2
        return torch.cat([readings[:, : self.hue], warmth[:, None], readings[:, self.hue + 1 :]], dim=1)


def alignment_regions(
    factors: dict[str, torch.Tensor], factor_names: Sequence[str], size: int, chunk: int = 2048
) -> torch.Tensor:
    """Where moving each named factor may change each face: (N, M, size, size) bool for ``factor_names`` (M
    content factors; ``background_warmth`` is the background hue's) of faces with ``factors`` (N per name).

    A pixel may change if the factor's attribute parts (``ATTRIBUTE_REGIONS``: the mouth for the smile, the hair,
    bangs, brows and beard for the hair colour...) cover it in the face as drawn or with the factor at its lowest or
    highest value (glasses on and off, the broadest smile and frown), grown by one pixel for the decoder's blur.
    """
    from vcex.data.synthetic_faces import ATTRIBUTE_REGIONS, BINARY_ATTRIBUTES, FACTORS, face_regions

    n = len(next(iter(factors.values())))
    plans = []  # (factor, its parts) per name, checked before any drawing
    for name in factor_names:
        factor = "background_hue" if name == "background_warmth" else name
        attributes = [key for key, attribute in BINARY_ATTRIBUTES.items() if attribute.factor == factor]
        parts = {part for key in attributes for part in ATTRIBUTE_REGIONS[key]}
        if factor not in FACTORS or not parts:
            raise InputError(f"no face parts known for factor {name!r}; content factors: {', '.join(CONTENT_FACTORS)}")
        plans.append((factor, parts))
    out = torch.zeros(n, len(factor_names), size, size, dtype=torch.bool)
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        drawn = {key: tensor[rows] for key, tensor in factors.items()}
        as_drawn = face_regions(drawn, size=size)  # once per chunk, shared by every factor
        for index, (factor, parts) in enumerate(plans):
            spec = FACTORS[factor]
            extremes = [{**drawn, factor: torch.full_like(drawn[factor], v)} for v in (spec.low, spec.high)]
            for regions in (as_drawn, *(face_regions(values, size=size) for values in extremes)):
                out[rows, index] |= sum(regions[part] for part in parts) > 0.05
    grown = F.max_pool2d(out.flatten(0, 1).unsqueeze(1).float(), 3, stride=1, padding=1)
    return grown.view(out.shape) > 0


class FaceEdits:
    """True single-factor edits of known faces, drawn again by the renderer: the edit term's targets.

    ``FaceEdits(factors)`` holds the factors of N faces (every name of the renderer, (N,) each; the training
    table's, in its order). ``edits(indices (n,), names (m,), amounts (m, n) in [-1, 1], shifts (m,))`` draws
    face ``indices[j]`` with factor ``names[i]`` moved by ``amounts[i, j]``: (m, n, 3, S, S) in [0, 1].
    A continuous factor moves by ``amount * shift`` of its range (clamped to it); a binary one is switched on
    (amount > 0) or off, whatever the amount (``shift`` unused: a face half in glasses is no face of the data,
    and blending toward one taught a decoder to draw glasses as dark smudges); the
    ``background_hue`` turns by ``amount * shift`` (it wraps); ``background_warmth`` moves the hue by up to
    ``|amount| * shift`` of a turn toward orange-red (amount > 0, the warm half's middle, 0.05) or cyan (0.55),
    the short way round and without passing it.
    """

    def __init__(self, factors: dict[str, torch.Tensor], size: int = 32) -> None:
        from vcex.data.synthetic_faces import FACTORS

        missing = [name for name in FACTORS if name not in factors]
        if missing:
            raise InputError(f"FaceEdits needs every factor of the renderer; missing: {', '.join(missing)}")
        self.factors, self.size = {name: factors[name] for name in FACTORS}, size
        self.factor_names = (*CONTENT_FACTORS, "background_warmth")

    def __len__(self) -> int:
        return len(self.factors["smile"])

    def details(self, indices: torch.Tensor) -> torch.Tensor:
        """Where faces ``indices`` (n,) show their mouth, eyes or eyebrows (at least a quarter of the pixel):
        (n, S, S) bool, the few pixels the oracle reads smiling and eye openness from."""
        indices = indices.cpu()
        return _detail_coverage({key: value[indices] for key, value in self.factors.items()}, self.size) >= 0.25

    def moved(self, name: str, values: torch.Tensor, amounts: torch.Tensor, shift: float) -> torch.Tensor:
        """The factor ``name`` (the renderer's, or ``background_warmth``) at ``values`` (n,) moved by ``amounts``
        (n,)."""
        from vcex.data.synthetic_faces import FACTORS

        if name == "background_warmth":
            goal = torch.where(amounts > 0, torch.full_like(values, 0.05), torch.full_like(values, 0.55))
            gap = torch.remainder(goal - values + 0.5, 1.0) - 0.5  # signed short way, in (-0.5, 0.5]
            step = gap.sign() * torch.minimum(gap.abs(), amounts.abs() * shift)
            return torch.remainder(values + step, 1.0)
        spec = FACTORS[name]
        if spec.binary:
            return (amounts > 0).to(values.dtype)
        if name == "background_hue":
            return torch.remainder(values + amounts * shift, 1.0)
        return (values + amounts * shift * (spec.high - spec.low)).clamp(spec.low, spec.high)

    def __call__(
        self, indices: torch.Tensor, names: Sequence[str], amounts: torch.Tensor, shifts: Sequence[float]
    ) -> torch.Tensor:
        from vcex.data.synthetic_faces import render_faces

        unknown = [name for name in names if name not in self.factor_names]
        if unknown:
            raise InputError(f"FaceEdits cannot move {', '.join(unknown)}; it moves {', '.join(self.factor_names)}")
        if amounts.shape != (len(names), len(indices)):
            expected = (len(names), len(indices))
            raise InputError(f"amounts must be (factors, images) = {expected}, got {tuple(amounts.shape)}")
        indices, amounts = indices.cpu(), amounts.detach().cpu().float()
        drawn = {key: value[indices] for key, value in self.factors.items()}
        edited = {key: value.repeat(len(names)) for key, value in drawn.items()}  # pair-major: (m * n,) each
        for row, (name, amount, shift) in enumerate(zip(names, amounts, shifts)):
            factor = "background_hue" if name == "background_warmth" else name
            edited[factor][row * len(indices) : (row + 1) * len(indices)] = self.moved(
                name, drawn[factor], amount, float(shift)
            )
        return render_faces(edited, size=self.size).view(len(names), len(indices), 3, self.size, self.size)


def detail_weights(faces: FacesDataset, size: int, boost: float = 4.0) -> torch.Tensor:
    """Per-pixel reconstruction weights (N, 1, S, S): 1 everywhere, ``1 + boost`` on the mouth, eyes and
    eyebrows, the small parts that carry smiling and eye openness in a few pixels."""
    return (1 + boost * _detail_coverage(faces.factors, size)).unsqueeze(1)


def _detail_coverage(factors: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """(N, S, S) in [0, 1]: how much of each pixel the renderer's mouth, eyes and eyebrows cover."""
    from vcex.data.synthetic_faces import face_regions

    regions = face_regions(factors, size=size)
    return regions["mouth"] + regions["eyes"] + regions["eyebrows"]


def train_attribute_oracle(
    model: AttributeOracle,
    train: FacesDataset,
    test: FacesDataset,
    *,
    epochs: int,
    seed: int,
    progress: bool,
    batch_size: int = 64,
    blur_sigma: float = 0.0,
) -> dict:
    """Binary cross-entropy on every attribute, with 1-pixel shifts and, if ``blur_sigma`` > 0, half of
    each batch blurred (sigma up to ``blur_sigma`` pixels), so that the oracle reads attributes rather
    than edge sharpness. Returns held-out accuracy per attribute and their mean, on the sharp test
    faces and on the same faces blurred with sigma 0.6 and 1.0 (``test_accuracy_blur_0.6``, ...)."""
    targets = attribute_matrix(train, model.attribute_names)

    def step(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_blur(random_shift(images, 1, generator), blur_sigma, generator)
        return F.binary_cross_entropy_with_logits(model(images), labels)

    fit(
        model,
        step,
        train.images,
        targets,
        epochs=epochs,
        lr=3e-3,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc="training faces attribute oracle",
    )
    truth = attribute_matrix(test, model.attribute_names).long()
    correct = (model.predict(test.images) == truth).float().mean(0)
    per_attribute = {name: round(float(value), 4) for name, value in zip(model.attribute_names, correct)}
    figures = {"test_accuracy": round(float(correct.mean()), 4), "test_accuracy_per_attribute": per_attribute}
    for sigma in (0.6, 1.0):
        blurred = torch.cat([gaussian_blur(chunk, sigma) for chunk in test.images.split(512)])
        blurred_correct = (model.predict(blurred) == truth).float().mean(0)
        figures[f"test_accuracy_blur_{sigma}"] = round(float(blurred_correct.mean()), 4)
        if sigma == 1.0:
            figures["test_accuracy_blur_1.0_per_attribute"] = {
                name: round(float(value), 4) for name, value in zip(model.attribute_names, blurred_correct)
            }
    return figures


def train_factor_regressor(
    model: FactorRegressor,
    train: FacesDataset,
    test: FacesDataset,
    *,
    epochs: int,
    seed: int,
    progress: bool,
    batch_size: int = 64,
) -> dict:
    """Mean squared error on the scaled factors; returns held-out mean absolute error per factor."""
    targets = factor_matrix(train, model.factor_names)

    def step(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.mse_loss(model(images), labels)

    fit(
        model,
        step,
        train.images,
        targets,
        epochs=epochs,
        lr=2e-3,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc="training faces factor regressor",
    )
    with torch.no_grad():
        error = torch.cat([model(chunk) for chunk in test.images.split(512)]) - factor_matrix(test, model.factor_names)
    per_factor = {name: round(float(value), 4) for name, value in zip(model.factor_names, error.abs().mean(0))}
    return {"test_mae": round(float(error.abs().mean()), 4), "test_mae_per_factor": per_factor}


@torch.no_grad()
def attribute_agreement(
    oracle: AttributeOracle,
    images: torch.Tensor,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
) -> dict:
    """How often the oracle reads each binary attribute the same on x and on ``reconstruct(x)``.

    Returns ``{"mean": share over all (image, attribute) pairs, "per_attribute": {name: share}}``.
    """
    same = []
    for chunk in images.split(batch_size):
        same.append(oracle.predict(chunk) == oracle.predict(reconstruct(chunk).clamp(0, 1)))
    rate = torch.cat(same).float().mean(0)
    return {
        "mean": round(float(rate.mean()), 4),
        "per_attribute": {name: round(float(value), 4) for name, value in zip(oracle.attribute_names, rate)},
    }
