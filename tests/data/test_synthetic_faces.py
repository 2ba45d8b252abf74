"""Tests for the procedural faces: shapes, determinism, local interventions, shortcuts, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vcex.data.synthetic_faces as sf
from vcex.data.synthetic_faces import (
    ATTRIBUTE_REGIONS,
    BINARY_ATTRIBUTES,
    FACTOR_NAMES,
    FACTORS,
    NUISANCE_FACTORS,
    NUISANCE_IDENTITY,
    REGION_NAMES,
    FacesDataset,
    Spurious,
    compute_attributes,
    face_regions,
    make_faces,
    preview_faces,
    render_faces,
    sample_factors,
)
from vcex.errors import InputError

SIZE = 64


def _pixel_centres(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(size, size) x and y of the pixel centres in [-1, 1] (x right, y down)."""
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    return grid.view(1, size).expand(size, size), grid.view(size, 1).expand(size, size)


def _box(x0: float, x1: float, y0: float, y1: float, mirror: bool = False) -> torch.Tensor:
    """Boolean (SIZE, SIZE) mask of a box in image coordinates; mirror=True also takes -x."""
    x, y = _pixel_centres()
    xs = x.abs() if mirror else x
    return (xs >= x0) & (xs <= x1) & (y >= y0) & (y <= y1)


def _pair(
    factor: str, low: float, high: float, n: int = 6, seed: int = 3, **fixed: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same n canonical faces (no nuisance) rendered with factor=low and factor=high."""
    base = {**NUISANCE_IDENTITY, **fixed}
    a = render_faces(sample_factors(n, seed, **base, **{factor: low}), SIZE)
    b = render_faces(sample_factors(n, seed, **base, **{factor: high}), SIZE)
    return a, b


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, S, S) bool: pixels whose colour differs at all."""
    return (a - b).abs().amax(dim=1) > 0


# ---------------------------------------------------------------------------------------------
# shapes, ranges, determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 32])
def test_render_shape_dtype_and_range(size: int) -> None:
    images = render_faces(sample_factors(10, 0), size=size)
    assert images.shape == (10, 3, size, size)
    assert images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert torch.isfinite(images).all()


def test_chunking_does_not_change_the_images() -> None:
    factors = sample_factors(20, 5)
    whole = render_faces(factors, SIZE, chunk_size=20)
    pieces = render_faces(factors, SIZE, chunk_size=3)
    torch.testing.assert_close(whole, pieces, rtol=0, atol=1e-6)


def test_feature_windows_never_cut_a_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    # Extreme nuisance values stress the face-space boxes the renderer restricts work to.
    n = 24
    factors = sample_factors(n, 11)
    corners = torch.tensor([-1.0, 1.0]).repeat(n // 2)
    for name in ("shift_x", "shift_y", "rotation"):
        spec = FACTORS[name]
        factors[name] = corners[torch.randperm(n, generator=torch.Generator().manual_seed(1))] * (spec.high)
    factors["scale"] = torch.where(corners > 0, FACTORS["scale"].high, FACTORS["scale"].low)
    factors["hair_length"] = torch.ones(n)
    factors["face_width"] = torch.ones(n)
    windowed = render_faces(factors, SIZE, chunk_size=1)
    monkeypatch.setattr(sf, "_USE_WINDOWS", False)
    full = render_faces(factors, SIZE)
    torch.testing.assert_close(windowed, full, rtol=0, atol=1e-6)


def test_same_seed_same_faces_and_different_seeds_differ() -> None:
    a, b = sample_factors(16, 7), sample_factors(16, 7)
    for name in FACTOR_NAMES:
        assert torch.equal(a[name], b[name])
    assert torch.equal(render_faces(a, 32), render_faces(b, 32))
    c = sample_factors(16, 8)
    assert not torch.equal(a["smile"], c["smile"])
    assert not torch.equal(render_faces(a, 32), render_faces(c, 32))
    assert torch.equal(make_faces(8, seed=2, size=32).images, make_faces(8, seed=2, size=32).images)


def test_sample_factors_ranges_and_binary_values() -> None:
    factors = sample_factors(2000, 0)
    assert tuple(factors) == FACTOR_NAMES
    for name, spec in FACTORS.items():
        values = factors[name]
        assert values.shape == (2000,) and values.dtype == torch.float32
        assert values.min() >= spec.low and values.max() <= spec.high
        if spec.binary:
            assert set(values.unique().tolist()) == {0.0, 1.0}
        else:
            assert values.unique().numel() > 1000
    assert set(NUISANCE_FACTORS) <= set(FACTOR_NAMES)
    assert {attr.factor for attr in BINARY_ATTRIBUTES.values()}.isdisjoint(NUISANCE_FACTORS)


def test_override_changes_only_that_factor() -> None:
    plain = sample_factors(50, 4)
    fixed = sample_factors(50, 4, smile=0.8, hair_color=torch.linspace(0, 1, 50))
    assert torch.all(fixed["smile"] == 0.8)
    assert torch.equal(fixed["hair_color"], torch.linspace(0, 1, 50))
    for name in FACTOR_NAMES:
        if name not in ("smile", "hair_color"):
            assert torch.equal(plain[name], fixed[name])


def test_factors_are_independent() -> None:
    factors = sample_factors(5000, 0)
    matrix = np.stack([factors[name].numpy() for name in FACTOR_NAMES])
    corr = np.corrcoef(matrix)
    off_diagonal = corr[~np.eye(len(FACTOR_NAMES), dtype=bool)]
    # The standard error at n = 5000 is about 0.014; 0.06 is over four of them.
    assert np.abs(off_diagonal).max() < 0.06


def test_binary_attributes_are_balanced_and_follow_their_rules() -> None:
    factors = sample_factors(4000, 1)
    attributes = compute_attributes(factors)
    assert set(attributes) == set(BINARY_ATTRIBUTES)
    for name, values in attributes.items():
        assert values.dtype == torch.int64
        assert 0.4 < values.float().mean().item() < 0.6, name
    assert torch.equal(attributes["smiling"], (factors["smile"] > 0).long())
    assert torch.equal(attributes["dark_hair"], (factors["hair_color"] < 0.5).long())
    hue = factors["background_hue"]
    assert torch.equal(attributes["warm_background"], ((hue < 0.3) | (hue >= 0.8)).long())


# ---------------------------------------------------------------------------------------------
# interventions change only their own visual element
# ---------------------------------------------------------------------------------------------

MOUTH = _box(-0.32, 0.32, 0.2, 0.66)
MOUTH_CORE = _box(-0.2, 0.2, 0.25, 0.55)  # stays clear of a narrow chin's edge
EYES = _box(0.06, 0.38, -0.13, 0.13, mirror=True)
EYE_CENTRES = _box(0.12, 0.32, -0.04, 0.04, mirror=True)
FACE_MIDDLE = _box(-0.2, 0.2, -0.15, 0.45)
CORNERS = _box(-1, -0.85, -1, -0.85) | _box(0.85, 1, -1, -0.85)


def test_smile_changes_only_the_mouth() -> None:
    a, b = _pair("smile", -0.8, 0.8)
    changed = _changed(a, b)
    assert changed.any(dim=(1, 2)).all()
    assert not (changed & ~MOUTH).any()


def test_lipstick_changes_only_the_mouth() -> None:
    a, b = _pair("lipstick", 0.0, 1.0)
    changed = _changed(a, b)
    assert changed.any(dim=(1, 2)).all()
    assert not (changed & ~MOUTH).any()
    # Lipstick is red: the red channel dominates in the mouth of every lipstick face.
    red = b[:, 0][:, MOUTH] - b[:, 1][:, MOUTH]
    assert (red.amax(dim=1) > 0.5).all()


def test_glasses_change_the_eye_band_not_the_mouth() -> None:
    a, b = _pair("eyeglasses", 0.0, 1.0)
    changed = _changed(a, b)
    assert changed.any(dim=(1, 2)).all()
    assert not (changed & ~_box(-1, 1, -0.25, 0.2)).any()
    assert not (changed & MOUTH).any()
    # The frames are dark and clearly visible: many pixels get much darker.
    darker = (a - b).mean(dim=1) > 0.3
    assert (darker.sum(dim=(1, 2)) > 40).all()


def test_eye_openness_changes_only_the_eyes() -> None:
    a, b = _pair("eye_openness", 0.05, 0.95, eyeglasses=0.0)
    changed = _changed(a, b)
    assert (changed & EYE_CENTRES).any(dim=(1, 2)).all()
    assert not (changed & ~EYES).any()


def test_beard_changes_the_lower_face_only() -> None:
    a, b = _pair("beard", 0.0, 1.0)
    changed = _changed(a, b)
    assert changed.any(dim=(1, 2)).all()
    assert not (changed & ~_box(-1, 1, -0.25, 0.9)).any()
    assert not (changed & EYE_CENTRES).any()


def test_bangs_change_only_the_forehead() -> None:
    a, b = _pair("bangs", 0.0, 1.0)
    changed = _changed(a, b)
    assert changed.any(dim=(1, 2)).all()
    assert not (changed & ~_box(-1, 1, -0.9, -0.15)).any()


def test_hair_length_changes_hair_beside_the_face_not_the_face() -> None:
    a, b = _pair("hair_length", 0.05, 0.95)
    changed = _changed(a, b)
    assert changed.any(dim=(1, 2)).all()
    assert not (changed & _box(-0.3, 0.3, -0.45, 0.5)).any()
    # Long hair reaches below the chin on both sides.
    assert (changed & _box(0.5, 1.0, 0.4, 0.8, mirror=True)).any(dim=(1, 2)).all()


def test_hair_colour_leaves_the_eyes_and_mouth_alone() -> None:
    a, b = _pair("hair_color", 0.05, 0.95, beard=0.0)
    changed = _changed(a, b)
    assert (changed & _box(-0.5, 0.5, -0.9, -0.5)).any(dim=(1, 2)).all()
    assert not (changed & (MOUTH_CORE | EYE_CENTRES)).any()
    # Blond is brighter than black.
    assert b.mean() > a.mean()


def test_skin_tone_leaves_the_background_alone() -> None:
    a, b = _pair("skin_tone", 0.05, 0.95)
    changed = _changed(a, b)
    assert (changed & FACE_MIDDLE).any(dim=(1, 2)).all()
    assert not (changed & CORNERS).any()


def test_face_width_leaves_the_middle_of_the_face_alone() -> None:
    a, b = _pair("face_width", 0.05, 0.95, beard=0.0, eyeglasses=0.0)
    changed = _changed(a, b)
    assert changed.any(dim=(1, 2)).all()
    assert not (changed & FACE_MIDDLE).any()


def test_background_hue_changes_only_the_background() -> None:
    a, b = _pair("background_hue", 0.05, 0.55)
    changed = _changed(a, b)
    assert (changed & CORNERS).any(dim=(1, 2)).all()
    assert not (changed & _box(-0.3, 0.3, -0.4, 0.5)).any()


@pytest.mark.parametrize("attribute", sorted(BINARY_ATTRIBUTES))
def test_intervention_stays_inside_the_attribute_regions(attribute: str) -> None:
    factor = BINARY_ATTRIBUTES[attribute].factor
    spec = FACTORS[factor]
    low, high = (0.05, 0.55) if factor == "background_hue" else (spec.low, spec.high)
    # Random nuisance on purpose: the regions follow the face wherever it is.
    fa, fb = sample_factors(6, 9, **{factor: low}), sample_factors(6, 9, **{factor: high})
    changed = _changed(render_faces(fa, SIZE), render_faces(fb, SIZE))
    ra, rb = face_regions(fa, SIZE), face_regions(fb, SIZE)
    inside = torch.zeros_like(changed)
    for region in ATTRIBUTE_REGIONS[attribute]:
        inside |= (ra[region] > 0) | (rb[region] > 0)
    assert changed.any()
    assert not (changed & ~inside).any()


def test_regions_sum_to_one_and_name_every_layer() -> None:
    regions = face_regions(sample_factors(5, 2), 32)
    assert tuple(regions) == REGION_NAMES
    total = sum(regions.values())
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)
    for mask in regions.values():
        assert mask.shape == (5, 32, 32) and mask.min() >= 0 and mask.max() <= 1 + 1e-6


def test_edges_are_anti_aliased() -> None:
    factors = sample_factors(8, 6, hair_length=0.0, **NUISANCE_IDENTITY)
    face = face_regions(factors, SIZE)["face"]
    partial = (face > 0.02) & (face < 0.98)
    assert (partial.sum(dim=(1, 2)) >= 8).all()
    # Along the row at y = 0.3 the face meets the plain background: the first pixel that is not
    # background is a blend, strictly between the background and the face pixel next to it.
    images = render_faces(factors, SIZE)
    row = int((0.3 + 1.0) / 2.0 * SIZE)
    for image in images:
        line = image[:, row, :]
        background = line[:, 0]
        first = int(((line - background[:, None]).abs().amax(dim=0) > 0).nonzero()[0])
        edge, inner = line[:, first], line[:, first + 1]
        channel = int((inner - background).abs().argmax())
        lo, hi = sorted((background[channel].item(), inner[channel].item()))
        assert lo < edge[channel].item() < hi


# ---------------------------------------------------------------------------------------------
# datasets, labels, shortcuts, errors
# ---------------------------------------------------------------------------------------------


def test_make_faces_fields() -> None:
    data = make_faces(40, seed=1, size=32, label="eyeglasses")
    assert isinstance(data, FacesDataset) and len(data) == 40
    assert data.images.shape == (40, 3, 32, 32)
    assert set(data.attributes) == set(BINARY_ATTRIBUTES)
    assert data.labels is not None and data.labels.dtype == torch.int64
    assert torch.equal(data.labels, data.attributes["eyeglasses"])
    table = data.factor_table()
    assert all(isinstance(col, np.ndarray) and col.shape == (40,) for col in table.values())
    assert "factor:smile" in table and "attribute:smiling" in table and "label" in table
    dataset = data.to_image_dataset("train")
    assert dataset.class_names == ["not_eyeglasses", "eyeglasses"]
    assert dataset.images.shape == (40, 3, 32, 32)
    sub = data.subset([3, 1])
    assert torch.equal(sub.images[1], data.images[1]) and sub.labels.tolist() == [
        data.labels[3].item(),
        data.labels[1].item(),
    ]
    assert make_faces(5, size=32).labels is None


def test_composite_label_function() -> None:
    def young(factors: dict[str, torch.Tensor]) -> torch.Tensor:
        return (factors["beard"] < 0.5) & (factors["hair_color"] < 0.8)

    data = make_faces(60, seed=0, size=32, label=young)
    assert data.label_name == "young"
    expected = ((data.factors["beard"] < 0.5) & (data.factors["hair_color"] < 0.8)).long()
    assert torch.equal(data.labels, expected)


@pytest.mark.parametrize("agreement", [0.9, 0.75, 0.2])
def test_spurious_reaches_the_requested_agreement(agreement: float) -> None:
    n, seed = 2000, 4
    data = make_faces(
        n, seed=seed, size=32, label="smiling", spurious={"attribute": "warm_background", "agreement": agreement}
    )
    share = (data.attributes["warm_background"] == data.labels).float().mean().item()
    assert abs(share - agreement) <= 0.03
    # Only the spurious factor was redrawn.
    plain = sample_factors(n, seed)
    for name in FACTOR_NAMES:
        if name != "background_hue":
            assert torch.equal(plain[name], data.factors[name])
    assert data.info["spurious"] == f"warm_background@{agreement:g}"


def test_spurious_accepts_a_pair_and_the_dataclass() -> None:
    a = make_faces(300, seed=1, size=32, label="eyeglasses", spurious=("dark_skin", 0.95))
    b = make_faces(300, seed=1, size=32, label="eyeglasses", spurious=Spurious("dark_skin", 0.95))
    assert torch.equal(a.images, b.images)
    share = (a.attributes["dark_skin"] == a.labels).float().mean().item()
    assert abs(share - 0.95) <= 0.03


def test_spurious_errors() -> None:
    with pytest.raises(InputError, match="needs a label"):
        make_faces(50, size=32, spurious=("warm_background", 0.9))
    with pytest.raises(InputError, match="feeds the label"):
        make_faces(50, size=32, label="smiling", spurious=("smiling", 0.9))
    with pytest.raises(InputError, match="agreement"):
        make_faces(50, size=32, label="smiling", spurious=("warm_background", 1.5))
    with pytest.raises(InputError, match="valid attributes"):
        make_faces(50, size=32, label="smiling", spurious=("warm_bg", 0.9))
    with pytest.raises(InputError, match="overridden"):
        make_faces(50, size=32, label="smiling", spurious=("warm_background", 0.9), overrides={"background_hue": 0.1})


def test_single_class_label_raises() -> None:
    with pytest.raises(InputError, match="single class"):
        make_faces(30, size=32, label="smiling", overrides={"smile": 0.5})
    with pytest.raises(InputError, match="single class"):
        make_faces(30, size=32, label=lambda f: f["smile"] > 5)


def test_unknown_names_raise_and_list_the_valid_ones() -> None:
    with pytest.raises(InputError, match=r"'smiel'.*smile"):
        sample_factors(10, 0, smiel=0.3)
    with pytest.raises(InputError, match=r"'smilling'.*smiling"):
        make_faces(10, size=32, label="smilling")
    with pytest.raises(InputError, match=r"'glases'.*eyeglasses"):
        make_faces(10, size=32, overrides={"glases": 1.0})
    factors = sample_factors(3, 0)
    factors["extra"] = torch.zeros(3)
    with pytest.raises(InputError, match="'extra'"):
        render_faces(factors)
    del factors["extra"], factors["smile"]
    with pytest.raises(InputError, match="missing: smile"):
        render_faces(factors)


def test_bad_override_values_raise() -> None:
    with pytest.raises(InputError, match="binary"):
        sample_factors(4, 0, eyeglasses=0.5)
    with pytest.raises(InputError, match="must lie in"):
        sample_factors(4, 0, smile=2.0)
    with pytest.raises(InputError, match="one per image"):
        sample_factors(4, 0, smile=torch.zeros(3))


def test_preview_captions_name_the_attributes_that_are_on() -> None:
    images, captions = preview_faces(n=12, seed=0, size=32)
    assert images.shape == (12, 3, 32, 32) and len(captions) == 12
    attributes = compute_attributes(sample_factors(12, 0))
    for i, caption in enumerate(captions):
        words = set(caption.split())
        assert ("smile" in words) == bool(attributes["smiling"][i])
        assert ("glasses" in words) == bool(attributes["eyeglasses"][i])
        assert ("beard" in words) == bool(attributes["beard"][i])
