"""Procedural face images whose true attributes are known: a stand-in for CelebA.

Every image is drawn from a handful of independent ground-truth factors (smile, glasses, hair
colour and length, bangs, face width, skin tone, eye openness, beard, lipstick, background hue)
plus nuisance factors (position, scale, rotation, lighting). Because the factors are known, an
explanation of a classifier trained on these images can be scored against the truth: render the
same face with one factor changed (``sample_factors(n, seed, smile=0.8)``) and everything else is
pixel-identical except that factor's visual element.

Rendering is vectorised over the batch: each shape is a signed distance field evaluated on a pixel
grid and turned into a one-pixel linear ramp (anti-aliased coverage), then the layers are
alpha-composited back to front. Coordinates inside the renderer are "face coordinates": x to the
right, y downwards, the image spanning [-1, 1] on both axes before the nuisance transform.

Typical use::

    data = make_faces(10_000, seed=0, label="smiling")
    data.images      # (10000, 3, 64, 64) float32 in [0, 1]
    data.attributes  # {"smiling": (10000,) int64, "eyeglasses": ..., ...}
    data.labels      # (10000,) int64, equal to data.attributes["smiling"]

    # a shortcut: the background is warm in 90% of smiling faces and cold in 90% of the others
    biased = make_faces(10_000, label="smiling",
                        spurious={"attribute": "warm_background", "agreement": 0.9})

    # the true influence of a factor: the same faces with only the smile changed
    frown = render_faces(sample_factors(500, seed=1, smile=-0.8))
    smile = render_faces(sample_factors(500, seed=1, smile=0.8))

    # where each element is visible, to score attributions (see ATTRIBUTE_REGIONS)
    regions = face_regions(sample_factors(500, seed=1))  # {"mouth": (500, 64, 64), ...}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from vcex.data.base import ImageDataset
from vcex.errors import InputError

Tensor = torch.Tensor
FactorValue = float | int | bool | Tensor | np.ndarray


# --------------------------------------------------------------------------------------------
# factors and attributes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorSpec:
    """How one factor is drawn: uniform on [low, high], or Bernoulli(0.5) on {0, 1} if binary."""

    low: float
    high: float
    binary: bool
    doc: str


FACTORS: dict[str, FactorSpec] = {
    "smile": FactorSpec(-1.0, 1.0, False, "mouth bend: -1 frown, 0 neutral, +1 broad open smile"),
    "eyeglasses": FactorSpec(0.0, 1.0, True, "dark frames around both eyes with a bridge"),
    "hair_color": FactorSpec(0.0, 1.0, False, "0 black, 0.5 brown, 1 blond (also brows and beard)"),
    "hair_length": FactorSpec(0.0, 1.0, False, "0 short crop, 1 long hair down to the shoulders"),
    "bangs": FactorSpec(0.0, 1.0, True, "fringe over the forehead"),
    "face_width": FactorSpec(0.0, 1.0, False, "0 narrow oval, 1 wide round face"),
    "skin_tone": FactorSpec(0.0, 1.0, False, "0 light, 1 dark skin"),
    "eye_openness": FactorSpec(0.0, 1.0, False, "0 closed (lid line only), 1 wide open"),
    "beard": FactorSpec(0.0, 1.0, True, "jaw, chin and upper lip covered in hair colour"),
    "lipstick": FactorSpec(0.0, 1.0, True, "red lips instead of darker skin"),
    "background_hue": FactorSpec(0.0, 1.0, False, "hue of the plain background (0 and 1 red)"),
    "shift_x": FactorSpec(-0.05, 0.05, False, "horizontal offset, fraction of the image width"),
    "shift_y": FactorSpec(-0.05, 0.05, False, "vertical offset (down), fraction of the height"),
    "scale": FactorSpec(0.92, 1.08, False, "face size multiplier"),
    "rotation": FactorSpec(-10.0, 10.0, False, "in-plane rotation in degrees (clockwise)"),
    "lighting": FactorSpec(-1.0, 1.0, False, "left-right shading: -1 lit from the left, +1 right"),
    "brightness": FactorSpec(0.85, 1.15, False, "overall brightness multiplier"),
}

#: Every factor, in the order they are drawn.
FACTOR_NAMES: tuple[str, ...] = tuple(FACTORS)

#: Factors that move or light the whole picture but carry no attribute.
NUISANCE_FACTORS: tuple[str, ...] = (
    "shift_x",
    "shift_y",
    "scale",
    "rotation",
    "lighting",
    "brightness",
)

#: Values of the nuisance factors that leave the canonical face untouched.
NUISANCE_IDENTITY: dict[str, float] = {
    "shift_x": 0.0,
    "shift_y": 0.0,
    "scale": 1.0,
    "rotation": 0.0,
    "lighting": 0.0,
    "brightness": 1.0,
}


def _warm_hue(hue: Tensor) -> Tensor:
    # Half of the hue circle centred on orange: magenta/pink, red, orange, yellow.
    return (hue < 0.3) | (hue >= 0.8)


@dataclass(frozen=True)
class BinaryAttribute:
    """A binarised attribute: ``rule(factors[factor])`` gives a bool tensor (N,)."""

    factor: str
    rule: Callable[[Tensor], Tensor]
    doc: str

    def __call__(self, factors: Mapping[str, Tensor]) -> Tensor:
        return self.rule(factors[self.factor])


BINARY_ATTRIBUTES: dict[str, BinaryAttribute] = {
    "smiling": BinaryAttribute("smile", lambda v: v > 0, "smile > 0"),
    "eyeglasses": BinaryAttribute("eyeglasses", lambda v: v > 0.5, "eyeglasses == 1"),
    "dark_hair": BinaryAttribute("hair_color", lambda v: v < 0.5, "hair_color < 0.5"),
    "long_hair": BinaryAttribute("hair_length", lambda v: v > 0.5, "hair_length > 0.5"),
    "bangs": BinaryAttribute("bangs", lambda v: v > 0.5, "bangs == 1"),
    "wide_face": BinaryAttribute("face_width", lambda v: v > 0.5, "face_width > 0.5"),
    "dark_skin": BinaryAttribute("skin_tone", lambda v: v > 0.5, "skin_tone > 0.5"),
    "eyes_open": BinaryAttribute("eye_openness", lambda v: v > 0.5, "eye_openness > 0.5"),
    "beard": BinaryAttribute("beard", lambda v: v > 0.5, "beard == 1"),
    "lipstick": BinaryAttribute("lipstick", lambda v: v > 0.5, "lipstick == 1"),
    "warm_background": BinaryAttribute(
        "background_hue", _warm_hue, "background_hue < 0.3 or >= 0.8 (pink, red, orange, yellow)"
    ),
}

#: Short words for captions (:func:`preview_faces`).
SHORT_NAMES: dict[str, str] = {
    "smiling": "smile",
    "eyeglasses": "glasses",
    "dark_hair": "dark-hair",
    "long_hair": "long",
    "bangs": "bangs",
    "wide_face": "wide",
    "dark_skin": "dark-skin",
    "eyes_open": "open-eyes",
    "beard": "beard",
    "lipstick": "lipstick",
    "warm_background": "warm-bg",
}

#: Regions (see :func:`face_regions`) where each attribute's visual element lives.
ATTRIBUTE_REGIONS: dict[str, tuple[str, ...]] = {
    "smiling": ("mouth",),
    "eyeglasses": ("glasses",),
    "dark_hair": ("hair", "bangs", "eyebrows", "beard"),
    "long_hair": ("hair",),
    "bangs": ("bangs",),
    # The face outline also moves the hair around it, the beard line and the glasses' arms.
    "wide_face": ("face", "hair", "bangs", "beard", "glasses"),
    # Eyelids and plain lips are shades of the skin.
    "dark_skin": ("face", "nose", "eyes", "mouth"),
    "eyes_open": ("eyes",),
    "beard": ("beard",),
    "lipstick": ("mouth",),
    "warm_background": ("background",),
}

#: Names of the regions :func:`face_regions` returns (their masks sum to 1 at every pixel).
REGION_NAMES: tuple[str, ...] = (
    "background",
    "hair",
    "clothes",
    "face",
    "eyes",
    "eyebrows",
    "nose",
    "beard",
    "mouth",
    "bangs",
    "glasses",
)


def _unknown(kind: str, name: object, valid: tuple[str, ...] | list[str]) -> InputError:
    return InputError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid)}")


def _check_override(name: str, value: FactorValue, n: int) -> Tensor:
    if name not in FACTORS:
        raise _unknown("factor", name, FACTOR_NAMES)
    spec = FACTORS[name]
    tensor = torch.as_tensor(value, dtype=torch.float32).flatten()
    if tensor.numel() == 1:
        tensor = tensor.expand(n).clone()
    if tensor.shape != (n,):
        raise InputError(f"factor {name!r} was given {tensor.numel()} values; give one value or one per image ({n})")
    if not torch.isfinite(tensor).all():
        raise InputError(f"factor {name!r} has non-finite values")
    if spec.binary and not ((tensor == 0) | (tensor == 1)).all():
        raise InputError(f"factor {name!r} is binary: give 0 or 1")
    lo, hi = tensor.min().item(), tensor.max().item()
    if lo < spec.low - 1e-6 or hi > spec.high + 1e-6:
        raise InputError(f"factor {name!r} must lie in [{spec.low:g}, {spec.high:g}]; got values in [{lo:g}, {hi:g}]")
    return tensor


def _draw(name: str, n: int, generator: torch.Generator) -> Tensor:
    spec = FACTORS[name]
    if spec.binary:
        return (torch.rand(n, generator=generator) < 0.5).float()
    return spec.low + (spec.high - spec.low) * torch.rand(n, generator=generator)


def sample_factors(n: int, seed: int = 0, **overrides: FactorValue) -> dict[str, Tensor]:
    """Draw every factor independently for ``n`` faces.

    Continuous factors are uniform on their range, binary ones Bernoulli(0.5) as 0./1. (see
    :data:`FACTORS`). Every factor is drawn whether or not it is overridden, so
    ``sample_factors(n, seed, smile=0.8)`` equals ``sample_factors(n, seed)`` except for ``smile``:
    that is how an intervention on one factor is made.

    Args:
        n: number of faces.
        seed: seed of the draw; the same seed gives the same factors.
        **overrides: factor name -> a scalar (used for every face) or a tensor/array of n values.

    Returns:
        factor name -> (n,) float32 tensor, in :data:`FACTOR_NAMES` order.
    """
    if int(n) < 1:
        raise InputError(f"n must be a positive number of faces; got {n}")
    n = int(n)
    checked = {name: _check_override(name, value, n) for name, value in overrides.items()}
    generator = torch.Generator().manual_seed(int(seed))
    factors = {name: _draw(name, n, generator) for name in FACTOR_NAMES}
    factors.update(checked)
    return factors


def compute_attributes(factors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Binarise the factors (see :data:`BINARY_ATTRIBUTES`): name -> (N,) int64 in {0, 1}."""
    return {name: attr(factors).long() for name, attr in BINARY_ATTRIBUTES.items()}


# --------------------------------------------------------------------------------------------
# signed distance helpers (negative inside; all arguments broadcast). In-place ops on fresh
# temporaries keep allocations down: rendering speed is bound by memory traffic.
# --------------------------------------------------------------------------------------------


def _ellipse(x: Tensor, y: Tensor, inv_a: Tensor | float, inv_b: Tensor | float) -> Tensor:
    """Ellipse with semi-axes 1/inv_a, 1/inv_b centred at the origin."""
    px, py = x * inv_a, y * inv_b
    # First-order distance f/|grad f|: exact on the boundary, good enough for a one-pixel ramp.
    grad = torch.hypot(px * inv_a, py * inv_b).mul_(2.0).clamp_min_(1e-6)
    return px.mul_(px).addcmul_(py, py).sub_(1.0).div_(grad)


def _box(x: Tensor, y: Tensor, hx: Tensor | float, hy: Tensor | float, r: float = 0.0) -> Tensor:
    """Rectangle of half-sizes hx, hy with corners rounded by r, centred at the origin."""
    qx = x.abs().sub_(hx - r)
    qy = y.abs().sub_(hy - r)
    inside = torch.maximum(qx, qy).clamp_max_(0.0)
    return torch.hypot(qx.clamp_min_(0.0), qy.clamp_min_(0.0)).add_(inside).sub_(r)


def _band(
    x: Tensor,
    y: Tensor,
    curve: Tensor,
    inv_norm: Tensor,
    top: Tensor | float,
    bottom: Tensor | float,
    half_width: float,
) -> Tensor:
    """Region between ``curve - top`` and ``curve + bottom`` for |x| < half_width."""
    vertical = torch.maximum((curve - top).sub_(y), (y - curve).sub_(bottom))
    # inv_norm = 1/sqrt(1 + slope^2) turns the vertical gap into a distance on slanted parts.
    return torch.maximum(vertical.mul_(inv_norm), x.abs().sub_(half_width))


def _palette(t: Tensor, stops: Tensor) -> Tensor:
    """Piecewise-linear colour ramp: t (B,) in [0, 1], stops (K, 3) -> (B, 3)."""
    pos = t.clamp(0.0, 1.0) * (stops.shape[0] - 1)
    index = pos.floor().long().clamp_max(stops.shape[0] - 2)
    frac = (pos - index).unsqueeze(1)
    return stops[index] * (1.0 - frac) + stops[index + 1] * frac


def _hsv(hue: Tensor, saturation: float, value: float) -> Tensor:
    """Hue (B,) in [0, 1] -> RGB (B, 3)."""
    n = torch.tensor([5.0, 3.0, 1.0])
    k = (n + hue.unsqueeze(1) * 6.0) % 6.0
    return value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


_SKIN = torch.tensor(
    [
        [0.98, 0.84, 0.74],
        [0.91, 0.71, 0.57],
        [0.72, 0.50, 0.35],
        [0.45, 0.29, 0.19],
    ]
)
_HAIR = torch.tensor(
    [
        [0.07, 0.05, 0.04],
        [0.27, 0.16, 0.08],
        [0.52, 0.34, 0.17],
        [0.80, 0.62, 0.34],
        [0.97, 0.87, 0.58],
    ]
)
_CLOTHES = torch.tensor([0.20, 0.25, 0.36])
_FRAME = torch.tensor([0.04, 0.04, 0.05])
_LIPSTICK = torch.tensor([0.82, 0.06, 0.16])
_LIP_PLAIN = torch.tensor([0.78, 0.55, 0.55])  # times the skin colour
_SCLERA = torch.tensor([0.97, 0.97, 0.97])
_IRIS = torch.tensor([0.30, 0.20, 0.12])
_PUPIL = torch.tensor([0.03, 0.03, 0.03])
_MOUTH_INSIDE = torch.tensor([0.30, 0.05, 0.07])
_TEETH = torch.tensor([0.98, 0.98, 0.95])
_LENS = torch.tensor([0.80, 0.90, 1.00])
_BROW_DARK = torch.tensor([0.18, 0.11, 0.07])

# Canonical layout in face coordinates (image half-width = 1).
_FACE_CY, _FACE_B = 0.05, 0.72
_EYE_X, _EYE_Y = 0.22, 0.0
_MOUTH_Y, _MOUTH_W = 0.40, 0.2

# Face-coordinate boxes (x0, x1, y0, y1) outside which a feature is exactly transparent; only
# the pixels they cover (after the nuisance transform) are evaluated, which is most of the speed.
# "face" contains "beard" and "hair_front" so their face distance is a slice of the face's.
_BOXES: dict[str, tuple[float, float, float, float]] = {
    "hair": (-0.86, 0.86, -0.86, 0.98),
    "clothes": (-1.4, 1.4, 0.78, 1.4),  # reaches past the image edge under any nuisance
    "neck": (-0.26, 0.26, 0.42, 1.4),
    "ears": (-0.80, 0.80, -0.16, 0.22),
    "face": (-0.72, 0.72, -0.82, 0.84),
    "eyes": (-0.40, 0.40, -0.11, 0.11),
    "eyebrows": (-0.40, 0.40, -0.30, -0.13),
    "nose": (-0.12, 0.12, 0.06, 0.26),
    "mouth": (-0.26, 0.26, 0.24, 0.62),
    "beard": (-0.72, 0.72, -0.20, 0.84),
    "hair_front": (-0.72, 0.72, -0.80, -0.10),
    "glasses": (-0.70, 0.70, -0.20, 0.15),
}
_USE_WINDOWS = True  # tests switch this off to check that the boxes never cut a shape
_CORNER_X = torch.tensor([0.0, 0.0, 1.0, 1.0])  # a box's four corners, as fractions of its sides
_CORNER_Y = torch.tensor([0.0, 1.0, 0.0, 1.0])


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

_Window = tuple[slice, slice]


class _Canvas:
    """Back-to-front compositing onto (B, 3, S, S); optionally tracks visible region coverage."""

    def __init__(self, image: Tensor, background: Tensor, track: bool) -> None:
        batch, _, size, _ = image.shape
        self.image = image
        self.image.copy_(background[:, :, None, None].expand_as(image))
        self.masks: dict[str, Tensor] | None = None
        if track:
            self.masks = {name: torch.zeros(batch, size, size) for name in REGION_NAMES}
            self.masks["background"].fill_(1.0)

    def paint(self, alpha: Tensor, color: Tensor, region: str, window: _Window) -> None:
        """Composite colour (B, 3) or (B, 3, h, w) with coverage alpha (B, h, w) inside window."""
        rows, cols = window
        target = self.image[:, :, rows, cols]
        if color.dim() == 2:
            color = color[:, :, None, None].expand_as(target)
        # lerp with weight exactly 0 returns the start exactly, so untouched pixels stay bit-equal.
        target.lerp_(color, alpha.unsqueeze(1).expand_as(target))
        if self.masks is not None:
            keep = 1.0 - alpha
            for mask in self.masks.values():
                mask[:, rows, cols].mul_(keep)
            self.masks[region][:, rows, cols].add_(alpha)


def _span(lo: float, hi: float, size: int) -> slice:
    """Pixel rows (or columns) of an image of side ``size`` covering [lo, hi] in image coordinates, plus a margin."""
    a = max(0, math.floor((lo + 1.0) * size / 2.0) - 2)
    b = min(size, math.ceil((hi + 1.0) * size / 2.0) + 2)
    return slice(a, max(a, b))


def _within(inner: _Window, outer: _Window) -> _Window:
    """``inner`` relative to ``outer``; inner is clipped to outer (it lies inside by design)."""
    rows = slice(max(inner[0].start, outer[0].start), min(inner[0].stop, outer[0].stop))
    cols = slice(max(inner[1].start, outer[1].start), min(inner[1].stop, outer[1].stop))
    return (
        slice(rows.start - outer[0].start, max(rows.start, rows.stop) - outer[0].start),
        slice(cols.start - outer[1].start, max(cols.start, cols.stop) - outer[1].start),
    )


def _clip(inner: _Window, outer: _Window) -> _Window:
    """``inner`` clipped to ``outer``, in image pixels."""
    rel = _within(inner, outer)
    return (
        slice(rel[0].start + outer[0].start, rel[0].stop + outer[0].start),
        slice(rel[1].start + outer[1].start, rel[1].stop + outer[1].start),
    )


@dataclass
class _Frame:
    """The shared coordinate grids of one chunk: the inverse nuisance transform from image pixels to face
    coordinates, and the windows and coverage ramp measured in it. Build with :meth:`build`.

    ``grid`` (S,) pixel centres in [-1, 1]; ``u``, ``v`` (B, S, S) face coordinates of every pixel;
    ``neg_inv_pixel`` (B, 1, 1) minus one over the pixel width in face coordinates; ``shift_x``, ``shift_y``
    (B, 1, 1) image offsets and ``c2``, ``s2`` (B, 1) scaled cosine and sine, for :meth:`window`.
    """

    factors: Mapping[str, Tensor]
    batch: int
    size: int
    grid: Tensor
    u: Tensor
    v: Tensor
    neg_inv_pixel: Tensor
    shift_x: Tensor
    shift_y: Tensor
    c2: Tensor
    s2: Tensor

    @classmethod
    def build(cls, factors: Mapping[str, Tensor], batch: int, size: int) -> _Frame:
        """The frame of factor values (B,) (the nuisance ones: shift, scale, rotation) for S x S images."""

        def p(name: str) -> Tensor:
            return factors[name].view(batch, 1, 1)

        # Inverse nuisance transform: image coordinates -> face coordinates.
        grid = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
        theta = p("rotation") * (math.pi / 180.0)
        scale = p("scale")
        cos, sin = torch.cos(theta), torch.sin(theta)
        shift_x, shift_y = 2.0 * p("shift_x"), 2.0 * p("shift_y")
        dx = grid.view(1, 1, size) - shift_x
        dy = grid.view(1, size, 1) - shift_y
        u = (cos / scale * dx) + (sin / scale * dy)
        v = (cos / scale * dy) - (sin / scale * dx)
        # Coverage ramp: 0.5 - sdf / pixel_width, pixel width measured in face coordinates.
        neg_inv_pixel = scale * (-size / 2.0)
        c2, s2 = (cos * scale).view(-1, 1), (sin * scale).view(-1, 1)
        return cls(factors, batch, size, grid, u, v, neg_inv_pixel, shift_x, shift_y, c2, s2)

    def p(self, name: str) -> Tensor:
        """Factor ``name`` as (B, 1, 1), to broadcast over pixels."""
        return self.factors[name].view(self.batch, 1, 1)

    def window(self, box: str) -> _Window:
        """Image-space bounding box of the face-space box ``_BOXES[box]`` over the whole chunk, plus a margin."""
        if not _USE_WINDOWS:
            return slice(0, self.size), slice(0, self.size)
        x0, x1, y0, y1 = _BOXES[box]
        cx = x0 + (x1 - x0) * _CORNER_X
        cy = y0 + (y1 - y0) * _CORNER_Y
        xs = self.c2 * cx - self.s2 * cy + self.shift_x.view(-1, 1)
        ys = self.s2 * cx + self.c2 * cy + self.shift_y.view(-1, 1)
        return _span(ys.min().item(), ys.max().item(), self.size), _span(xs.min().item(), xs.max().item(), self.size)

    def coords(self, win: _Window) -> tuple[Tensor, Tensor]:
        """Face coordinates u, v (B, h, w) of the pixels in ``win`` (views: never change them in place)."""
        return self.u[:, win[0], win[1]], self.v[:, win[0], win[1]]

    def cover(self, sdf: Tensor) -> Tensor:
        """Signed distance (B, h, w) -> coverage in [0, 1], in place: a linear ramp one pixel wide, exactly 0 or 1
        away from edges and fractional on them."""
        return sdf.mul_(self.neg_inv_pixel).add_(0.5).clamp_(0.0, 1.0)

    def flat(self, color: Tensor) -> Tensor:
        """One colour (3,) -> (B, 3)."""
        return color.expand(self.batch, 3)


class _FaceShape(NamedTuple):
    """The face's window, signed distance (B, h, w) and (x / half-width)^2 (B, h, w) there: the beard and the
    hairline are slices of them."""

    window: _Window
    sdf: Tensor
    ratio2: Tensor


def _paint_back_hair(frame: _Frame, canvas: _Canvas, hair: Tensor, half_w: Tensor) -> None:
    """Hair behind the head: a cap over the skull, plus a curtain down the sides whose length is hair_length
    (short hair stops at ear level). ``hair`` (B, 3) colour, ``half_w`` (B, 1, 1) face half-width."""
    win = frame.window("hair")
    u, v = frame.coords(win)
    length = frame.p("hair_length")
    cap = torch.maximum(_ellipse(u, v + 0.03, 1.0 / (half_w + 0.08), 1.0 / 0.78), v - 0.05)
    bottom = 0.02 + 0.86 * length
    curtain = _box(u, v - (bottom - 0.3) / 2, half_w + 0.09 + 0.05 * length, (bottom + 0.3) / 2, r=0.14)
    strands = torch.cos(u * 9.0).square_().mul_(-0.12).add_(1.0).unsqueeze(1)  # soft shading
    canvas.paint(frame.cover(torch.minimum(cap, curtain)), hair[:, :, None, None] * strands, "hair", win)


def _paint_body(frame: _Frame, canvas: _Canvas, skin: Tensor, half_w: Tensor) -> None:
    """Shoulders, neck and ears (mirrored, so one evaluation draws both). ``skin`` (B, 3)."""
    win = frame.window("clothes")
    u, v = frame.coords(win)
    clothes = _ellipse(u, v - 1.38, 1.0 / 0.88, 1.0 / 0.52)
    canvas.paint(frame.cover(clothes), frame.flat(_CLOTHES), "clothes", win)
    win = frame.window("neck")
    u, v = frame.coords(win)
    canvas.paint(frame.cover(_box(u, v - 0.78, 0.19, 0.3, r=0.05)), skin * 0.8, "face", win)
    win = frame.window("ears")
    u, v = frame.coords(win)
    ears = _ellipse(u.abs().sub_(half_w - 0.03), v - 0.03, 1.0 / 0.075, 1.0 / 0.12)
    canvas.paint(frame.cover(ears), skin * 0.88, "face", win)


def _paint_face(frame: _Frame, canvas: _Canvas, skin: Tensor, half_w: Tensor) -> _FaceShape:
    """Face: an egg whose half-width narrows towards the chin; darker towards its rim so it separates from hair
    of a similar colour. Returns its shape, which the beard and the hairline reuse."""
    inv_half_w = 1.0 / half_w
    face_win = frame.window("face")
    u, v = frame.coords(face_win)
    rel = (v - _FACE_CY).mul_(1.0 / _FACE_B).clamp_min_(0.0)
    inv_width = rel.square_().mul_(-0.22).add_(1.0).reciprocal_().mul_(inv_half_w)
    face = _ellipse(u, v - _FACE_CY, inv_width, 1.0 / _FACE_B)
    ratio2 = (u * inv_half_w).square_()
    rim = (face * (1.0 / 0.14)).add_(1.0).clamp_(0.0, 1.0).square_().mul_(-0.16).add_(1.0)
    face_color = skin[:, :, None, None] * rim.unsqueeze(1)
    canvas.paint(frame.cover(face.clone()), face_color, "face", face_win)
    return _FaceShape(face_win, face, ratio2)


def _paint_eyes(frame: _Frame, canvas: _Canvas, skin: Tensor) -> None:
    """Eyes: sclera whose height is the openness, iris and pupil clipped to it, and a lid line along the top
    that is all that remains when the eye is closed."""
    win = frame.window("eyes")
    u, v = frame.coords(win)
    ex, ey = u.abs().sub_(_EYE_X), v - _EYE_Y
    open_h = 0.082 * (0.08 + 0.92 * frame.p("eye_openness"))
    # The first-order distance of a nearly closed (very flat) ellipse stays small along its
    # axis far beyond the tips; the bounding box's distance, also a lower bound, cuts that off.
    sclera = torch.maximum(_ellipse(ex, ey, 1.0 / 0.125, 1.0 / open_h), ex.abs().sub_(0.125))
    radius = torch.hypot(ex, ey)
    iris = torch.maximum(radius - 0.062, sclera)
    pupil = torch.maximum(radius.sub_(0.03), sclera)
    lid = torch.maximum(sclera.abs().sub_(0.016), ey.sub_(0.25 * open_h))
    lid = torch.maximum(lid, ex.abs().sub_(0.125))  # |sclera| is small beyond the tips too
    canvas.paint(frame.cover(sclera), frame.flat(_SCLERA), "eyes", win)
    canvas.paint(frame.cover(iris), frame.flat(_IRIS), "eyes", win)
    canvas.paint(frame.cover(pupil), frame.flat(_PUPIL), "eyes", win)
    canvas.paint(frame.cover(lid), skin * 0.3, "eyes", win)


def _paint_eyebrows(frame: _Frame, canvas: _Canvas, hair: Tensor) -> None:
    """Eyebrows: arched strokes, darkened so that blond brows still show on light skin."""
    win = frame.window("eyebrows")
    u, v = frame.coords(win)
    bx = u.abs().sub_(_EYE_X)
    t = bx * (1.0 / 0.12)
    curve = (1.0 - t * t).mul_(-0.035).add_(t, alpha=0.012).sub_(0.205)
    inv_norm = (t * (0.07 / 0.12)).add_(0.1).square_().add_(1.0).rsqrt_()
    thickness = t.clamp(-1.0, 1.0).mul_(-0.3 * 0.026).add_(0.026)
    brows = _band(bx, v, curve, inv_norm, thickness, thickness, 0.12)
    canvas.paint(frame.cover(brows), 0.55 * hair + 0.45 * _BROW_DARK, "eyebrows", win)


def _paint_nose(frame: _Frame, canvas: _Canvas, skin: Tensor) -> None:
    """Nose hint: a soft shadow under the tip."""
    win = frame.window("nose")
    u, v = frame.coords(win)
    nose = _ellipse(u, v - 0.19, 1.0 / 0.065, 1.0 / 0.032)
    canvas.paint(frame.cover(nose).mul_(0.55), skin * 0.62, "nose", win)


def _paint_beard(frame: _Frame, canvas: _Canvas, face: _FaceShape, hair: Tensor) -> None:
    """Beard: the face below a line that dips to the chin and climbs to the sideburns, in hair colour."""
    win = _clip(frame.window("beard"), face.window)
    rows, cols = _within(win, face.window)
    u, v = frame.coords(win)
    line = face.ratio2[:, rows, cols].square().mul_(-0.3).add_(0.26)
    beard = torch.maximum(face.sdf[:, rows, cols] - 0.02, line.sub_(v))
    canvas.paint(frame.cover(beard).mul_(0.92 * frame.p("beard")), hair * 0.8, "beard", win)


def _paint_mouth(frame: _Frame, canvas: _Canvas, skin: Tensor) -> None:
    """Mouth: lips (red with lipstick) along a parabola whose bend is the smile; a smile also opens the mouth
    (dark inside, teeth on top) so it stays readable at 32 x 32."""
    win = frame.window("mouth")
    u, v = frame.coords(win)
    smile = frame.p("smile")
    mx2 = (u * (1.0 / _MOUTH_W)).square_()
    bend = 0.085 * smile
    curve = (1.0 - 2.0 * mx2).mul_(bend).add_(_MOUTH_Y)
    slope = u * (-4.0 / _MOUTH_W**2) * bend
    inv_norm = slope.square_().add_(1.0).rsqrt_()
    lip = (1.0 - 0.6 * mx2).clamp_min_(0.0).mul_(0.034)
    opening = (1.0 - mx2).clamp_min_(0.0).mul_(0.075 * smile.clamp_min(0.0))
    lips = _band(u, v, curve, inv_norm, lip, lip + opening, _MOUTH_W)
    lipstick = frame.factors["lipstick"].view(-1, 1) > 0.5
    lip_color = torch.where(lipstick, frame.flat(_LIPSTICK), skin * _LIP_PLAIN)
    canvas.paint(frame.cover(lips), lip_color, "mouth", win)
    inside = _band(u, v, curve + 0.012, inv_norm, 0.0, opening - 0.012, _MOUTH_W * 0.82)
    teeth = torch.maximum(inside, v - curve.add_(0.012).add_(opening, alpha=0.45))
    canvas.paint(frame.cover(inside), frame.flat(_MOUTH_INSIDE), "mouth", win)
    canvas.paint(frame.cover(teeth), frame.flat(_TEETH), "mouth", win)


def _paint_front_hair(frame: _Frame, canvas: _Canvas, face: _FaceShape, hair: Tensor) -> None:
    """Hair over the head top (hairline) and, with bangs, a scalloped fringe down to the brows."""
    win = _clip(frame.window("hair_front"), face.window)
    rows, cols = _within(win, face.window)
    u, v = frame.coords(win)
    head = face.sdf[:, rows, cols] - 0.02
    r2 = face.ratio2[:, rows, cols]
    strands = torch.cos(u * 9.0).square_().mul_(-0.12).add_(1.0).unsqueeze(1)
    hair_front = hair[:, :, None, None] * strands
    front = torch.maximum(head, v - r2.mul(0.36).sub_(0.56))
    canvas.paint(frame.cover(front), hair_front, "hair", win)
    fringe = torch.cos(u * (math.pi / 0.09)).mul_(0.025).add_(r2, alpha=0.06).sub_(0.30)
    bangs = torch.maximum(head, fringe.sub_(v).neg_())
    canvas.paint(frame.cover(bangs).mul_(frame.p("bangs")), hair_front.mul_(0.92), "bangs", win)


def _paint_glasses(frame: _Frame, canvas: _Canvas, half_w: Tensor) -> None:
    """Glasses: a faint lens tint, then rounded-rectangle frames, a bridge and the temple arms."""
    win = frame.window("glasses")
    u, v = frame.coords(win)
    gy = v - (_EYE_Y - 0.01)
    lens = _box(u.abs().sub_(_EYE_X), gy, 0.14, 0.105, r=0.06)
    frames = lens.abs().sub_(0.024)
    bridge = _box(u, gy + 0.02, 0.09, 0.018)
    arm_len = (half_w - 0.36) / 2
    arms = _box(u.abs().sub_(arm_len + 0.36), gy + 0.03, arm_len, 0.016)
    frames = torch.minimum(frames, torch.minimum(bridge, arms))
    glasses = frame.p("eyeglasses")
    canvas.paint(frame.cover(lens).mul_(0.18 * glasses), frame.flat(_LENS), "glasses", win)
    canvas.paint(frame.cover(frames).mul_(glasses), frame.flat(_FRAME), "glasses", win)


def _apply_lighting(frame: _Frame, out: Tensor) -> None:
    """Left-right shading and brightness on ``out`` (B, 3, S, S), in place, clamped to [0, 1]. Lighting
    multiplies every pixel, so an intervention still changes only its own element."""
    gain = (frame.grid.view(1, 1, frame.size) * (0.18 * frame.p("lighting"))).add_(1.0).mul_(frame.p("brightness"))
    out.mul_(gain.unsqueeze(1)).clamp_(0.0, 1.0)


def _render_chunk(f: Mapping[str, Tensor], out: Tensor, track: bool) -> dict[str, Tensor] | None:
    """Render faces for factor values (B,) into ``out`` (B, 3, S, S); returns region masks (B, S, S) if
    ``track``. The layers are painted back to front on the background."""
    frame = _Frame.build(f, out.shape[0], out.shape[-1])
    skin = _palette(f["skin_tone"], _SKIN)
    hair = _palette(f["hair_color"], _HAIR)
    canvas = _Canvas(out, _hsv(f["background_hue"], 0.45, 0.88), track)
    half_w = 0.48 + 0.16 * frame.p("face_width")  # face half-width at eye level
    _paint_back_hair(frame, canvas, hair, half_w)
    _paint_body(frame, canvas, skin, half_w)
    face = _paint_face(frame, canvas, skin, half_w)
    _paint_eyes(frame, canvas, skin)
    _paint_eyebrows(frame, canvas, hair)
    _paint_nose(frame, canvas, skin)
    _paint_beard(frame, canvas, face, hair)
    _paint_mouth(frame, canvas, skin)
    _paint_front_hair(frame, canvas, face, hair)
    _paint_glasses(frame, canvas, half_w)
    _apply_lighting(frame, out)
    return canvas.masks


def _check_factors(factors: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    unknown = [name for name in factors if name not in FACTORS]
    if unknown:
        raise _unknown("factor", unknown[0], FACTOR_NAMES)
    missing = [name for name in FACTOR_NAMES if name not in factors]
    if missing:
        raise InputError(f"factors missing: {', '.join(missing)}; draw them with sample_factors(n, seed, ...)")
    out = {name: torch.as_tensor(factors[name], dtype=torch.float32).flatten().cpu() for name in FACTOR_NAMES}
    sizes = {value.shape[0] for value in out.values()}
    if len(sizes) != 1:
        raise InputError(f"factors have different lengths: {sorted(sizes)}; give N values each")
    return out, sizes.pop()


def _chunk(chunk_size: int | None, size: int) -> int:
    # About 130,000 pixels per chunk keeps the temporaries inside the CPU caches.
    if chunk_size is None:
        return max(16, (1 << 17) // (size * size))
    if int(chunk_size) < 1:
        raise InputError(f"chunk_size must be positive; got {chunk_size}")
    return int(chunk_size)


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, restoring the previous setting afterwards.

    The renderer issues many small element-wise ops: measured on 2 cores, one thread is as fast
    as two, and it avoids OpenMP's 20-40x slow-down when another process shares the cores.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _check_size(size: int) -> int:
    if int(size) < 8:
        raise InputError(f"size must be at least 8 pixels; got {size}")
    return int(size)


def render_faces(factors: Mapping[str, Tensor], size: int = 64, chunk_size: int | None = None) -> Tensor:
    """Render one face per row of ``factors``.

    Args:
        factors: every name in :data:`FACTOR_NAMES` -> (N,) values (see :func:`sample_factors`).
        size: side of the square images in pixels (64 and 32 are the intended sizes).
        chunk_size: images rendered at once (default: 32 at 64 x 64, 128 at 32 x 32); bounds
            the working memory to about 100 * chunk_size * size**2 bytes besides the output.

    Rendering runs on one torch thread (restored afterwards): as fast as two on small
    element-wise ops, and immune to the slow-down when the cores are shared. About 0.3 ms per
    64 x 64 image on one core.

    Returns:
        (N, 3, size, size) float32 in [0, 1].
    """
    values, n = _check_factors(factors)
    size = _check_size(size)
    out = torch.empty(n, 3, size, size)
    step = _chunk(chunk_size, size)
    with torch.no_grad(), _single_thread():
        for start in range(0, n, step):
            chunk = {name: value[start : start + step] for name, value in values.items()}
            _render_chunk(chunk, out[start : start + step], track=False)
    return out


def face_regions(factors: Mapping[str, Tensor], size: int = 64, chunk_size: int | None = None) -> dict[str, Tensor]:
    """Where each visual element is visible, for scoring explanations against the truth.

    Returns:
        region name (:data:`REGION_NAMES`) -> (N, size, size) float32 in [0, 1]: the share of each
        pixel that the element covers after occlusion by later layers. The masks sum to 1 at
        every pixel. :data:`ATTRIBUTE_REGIONS` says which regions belong to each attribute.
    """
    values, n = _check_factors(factors)
    size = _check_size(size)
    out = {name: torch.empty(n, size, size) for name in REGION_NAMES}
    step = _chunk(chunk_size, size)
    with torch.no_grad(), _single_thread():
        for start in range(0, n, step):
            chunk = {name: value[start : start + step] for name, value in values.items()}
            image = torch.empty(min(step, n - start), 3, size, size)
            masks = _render_chunk(chunk, image, track=True)
            assert masks is not None
            for name in REGION_NAMES:
                out[name][start : start + step] = masks[name]
    return out


# --------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spurious:
    """A shortcut planted in the data: ``attribute`` equals the label in ``agreement`` of images.

    ``attribute`` is a name in :data:`BINARY_ATTRIBUTES` whose source factor does not feed the
    label (typically ``"warm_background"``); ``agreement`` is in [0, 1] (0.5 = no shortcut).
    """

    attribute: str
    agreement: float


SpuriousSpec = Spurious | Mapping[str, object] | tuple[str, float]
LabelSpec = str | Callable[[Mapping[str, Tensor]], Tensor]


def _parse_spurious(spec: SpuriousSpec) -> Spurious:
    if isinstance(spec, Spurious):
        parsed = spec
    elif isinstance(spec, Mapping):
        extra = set(spec) - {"attribute", "agreement"}
        if extra or "attribute" not in spec or "agreement" not in spec:
            raise InputError(
                f"spurious must look like {{'attribute': 'warm_background', 'agreement': 0.9}}; got keys {sorted(spec)}"
            )
        agreement = spec["agreement"]
        parsed = Spurious(str(spec["attribute"]), float(agreement))  # type: ignore[arg-type]
    elif isinstance(spec, tuple) and len(spec) == 2:
        parsed = Spurious(str(spec[0]), float(spec[1]))
    else:
        raise InputError(
            "spurious must be Spurious(attribute, agreement), a dict with 'attribute' and "
            f"'agreement', or an (attribute, agreement) pair; got {spec!r}"
        )
    if parsed.attribute not in BINARY_ATTRIBUTES:
        raise _unknown("attribute", parsed.attribute, tuple(BINARY_ATTRIBUTES))
    if not 0.0 <= parsed.agreement <= 1.0:
        raise InputError(f"spurious agreement must be in [0, 1]; got {parsed.agreement}")
    return parsed


def _label_fn(label: LabelSpec) -> tuple[Callable[[Mapping[str, Tensor]], Tensor], str]:
    if isinstance(label, str):
        if label not in BINARY_ATTRIBUTES:
            raise _unknown("attribute", label, tuple(BINARY_ATTRIBUTES))
        return BINARY_ATTRIBUTES[label], label
    if callable(label):
        return label, getattr(label, "__name__", "label")
    raise InputError(f"label must be an attribute name or a function of the factors; got {label!r}")


def _evaluate_label(fn: Callable[[Mapping[str, Tensor]], Tensor], factors: Mapping[str, Tensor], n: int) -> Tensor:
    value = torch.as_tensor(fn(factors)).flatten()
    if value.shape != (n,):
        raise InputError(f"the label function must return {n} values (one per face); got {value.numel()}")
    return value.bool()


def _plant_shortcut(factors: dict[str, Tensor], labels: Tensor, spurious: Spurious, seed: int) -> None:
    """Resample the spurious attribute's factor so it equals the label in the asked share."""
    attribute = BINARY_ATTRIBUTES[spurious.attribute]
    n = labels.shape[0]
    # A separate stream keeps the other factors identical to the plain draw with this seed.
    generator = torch.Generator().manual_seed(int(seed) + 0x5EED5)
    agree = torch.zeros(n, dtype=torch.bool)
    agree[torch.randperm(n, generator=generator)[: round(spurious.agreement * n)]] = True
    target = torch.where(agree, labels, ~labels)
    values = factors[attribute.factor].clone()
    todo = attribute.rule(values) != target
    # Rejection sampling from the factor's own prior gives the prior restricted to each side.
    for _ in range(200):
        if not todo.any():
            break
        index = todo.nonzero().flatten()
        values[index] = _draw(attribute.factor, index.numel(), generator)
        todo[index] = attribute.rule(values[index]) != target[index]
    if todo.any():  # pragma: no cover - every attribute has both sides with probability >= 0.2
        raise InputError(f"could not resample {attribute.factor!r} to plant the shortcut")
    factors[attribute.factor] = values


@dataclass
class FacesDataset:
    """Synthetic faces with their ground truth.

    Attributes:
        images: (N, 3, S, S) float32 in [0, 1].
        factors: factor name -> (N,) float32 (binary factors 0./1.), :data:`FACTOR_NAMES` order.
        attributes: attribute name -> (N,) int64 in {0, 1}, see :data:`BINARY_ATTRIBUTES`.
        labels: (N,) int64 in {0, 1}, or None when no label was asked for.
        label_name: the attribute name or the label function's name; None without a label.
        info: provenance (seed, size, spurious setting).
    """

    images: Tensor
    factors: dict[str, Tensor]
    attributes: dict[str, Tensor]
    labels: Tensor | None = None
    label_name: str | None = None
    info: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def factor_table(self) -> dict[str, np.ndarray]:
        """Columns for a table, one row per image: ``"factor:<name>"`` (float32),
        ``"attribute:<name>"`` (int64) and ``"label"`` (int64, when there is a label).

        Each column is a numpy array of length N (``pandas.DataFrame(table)`` works as is).
        """
        table = {f"factor:{name}": value.numpy().copy() for name, value in self.factors.items()}
        table.update({f"attribute:{name}": value.numpy().copy() for name, value in self.attributes.items()})
        if self.labels is not None:
            table["label"] = self.labels.numpy().copy()
        return table

    def subset(self, indices: Tensor | list[int]) -> FacesDataset:
        """The faces at ``indices``, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return FacesDataset(
            self.images[index],
            {k: v[index] for k, v in self.factors.items()},
            {k: v[index] for k, v in self.attributes.items()},
            None if self.labels is None else self.labels[index],
            self.label_name,
            dict(self.info),
        )

    def to_image_dataset(self, split: str = "train") -> ImageDataset:
        """The images and labels as a :class:`vcex.data.base.ImageDataset` (needs a label)."""
        if self.labels is None:
            raise InputError("this FacesDataset has no labels; use make_faces(..., label=...)")
        name = self.label_name or "label"
        return ImageDataset(self.images, self.labels, "synthetic_faces", split, [f"not_{name}", name], dict(self.info))


def make_faces(
    n: int,
    seed: int = 0,
    size: int = 64,
    label: LabelSpec | None = None,
    spurious: SpuriousSpec | None = None,
    overrides: Mapping[str, FactorValue] | None = None,
    chunk_size: int | None = None,
) -> FacesDataset:
    """Sample factors, plant an optional shortcut, and render ``n`` faces.

    Args:
        n: number of faces.
        seed: seed of the factor draw (same seed, same dataset).
        size: image side in pixels (64 or 32).
        label: a name in :data:`BINARY_ATTRIBUTES`, or a function factors -> (N,) bool tensor for a
            composite label. It must give both classes on the sample, else :class:`InputError`.
        spurious: plant a shortcut, e.g. ``{"attribute": "warm_background", "agreement": 0.9}``
            (or ``Spurious(...)``, or ``("warm_background", 0.9)``): the attribute's source factor
            is redrawn from its own prior, restricted to one side of the threshold, so that the
            attribute equals the label in exactly ``round(agreement * n)`` images, chosen at
            random. Needs ``label``; the factor must not feed the label nor be overridden. The
            other factors stay as drawn, so only this pair becomes correlated.
        overrides: factor name -> fixed value or (n,) values, as in :func:`sample_factors`.
        chunk_size: images rendered at once.

    Returns:
        a :class:`FacesDataset`; ``labels`` is int64 0/1 when ``label`` is given.
    """
    overrides = dict(overrides or {})
    label_fn, label_name = _label_fn(label) if label is not None else (None, None)
    plan = _parse_spurious(spurious) if spurious is not None else None
    if plan is not None:
        if label_fn is None:
            raise InputError("spurious needs a label: the shortcut is planted against the label")
        source = BINARY_ATTRIBUTES[plan.attribute].factor
        if source in overrides:
            raise InputError(f"factor {source!r} is overridden, so it cannot carry the shortcut")
    factors = sample_factors(n, seed, **overrides)

    labels = None
    if label_fn is not None:
        labels = _evaluate_label(label_fn, factors, n)
        positives = int(labels.sum())
        if positives in (0, n):
            raise InputError(
                f"label {label_name!r} gives a single class on these {n} faces "
                f"({positives} positive); change the label, the overrides or n"
            )
        if plan is not None:
            _plant_shortcut(factors, labels, plan, seed)
            if not torch.equal(_evaluate_label(label_fn, factors, n), labels):
                raise InputError(
                    f"the spurious attribute {plan.attribute!r} feeds the label {label_name!r}; "
                    "pick an attribute whose factor the label does not use"
                )
        labels = labels.long()

    images = render_faces(factors, size=size, chunk_size=chunk_size)
    info = {"source": "vcex.data.synthetic_faces", "seed": str(seed), "size": str(size)}
    if plan is not None:
        info["spurious"] = f"{plan.attribute}@{plan.agreement:g}"
    return FacesDataset(images, factors, compute_attributes(factors), labels, label_name, info)


def preview_faces(n: int = 16, seed: int = 0, size: int = 64) -> tuple[Tensor, list[str]]:
    """Faces for a preview grid: images (n, 3, size, size) and one caption per image naming the
    attributes that are on (short words from :data:`SHORT_NAMES`, e.g. ``"smile glasses long"``).
    """
    factors = sample_factors(n, seed)
    attributes = compute_attributes(factors)
    captions = [" ".join(SHORT_NAMES[name] for name, value in attributes.items() if value[i]) or "-" for i in range(n)]
    return render_faces(factors, size=size), captions


__all__ = [
    "ATTRIBUTE_REGIONS",
    "BINARY_ATTRIBUTES",
    "BinaryAttribute",
    "FACTORS",
    "FACTOR_NAMES",
    "FactorSpec",
    "FacesDataset",
    "NUISANCE_FACTORS",
    "NUISANCE_IDENTITY",
    "REGION_NAMES",
    "SHORT_NAMES",
    "Spurious",
    "compute_attributes",
    "face_regions",
    "make_faces",
    "preview_faces",
    "render_faces",
    "sample_factors",
]
