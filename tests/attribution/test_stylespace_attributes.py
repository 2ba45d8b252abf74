"""Tests for AttFind and EigenFind on a tiny linear style generator with planted coordinates and a planted
eigen-direction: the planted ones come first, toRGB is left out unless asked, batching does not change the
table, an interrupted run resumes from its saved partial table, and bad input gets one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vcex.attribution.stylespace_attributes import (
    apply_attributes,
    attfind,
    decode_with_offset,
    direction_attributes,
    direction_flip_shares,
    discriminator_filter,
    eigenfind,
    merge_binary,
    per_image,
    stylespace_effects,
    sufficiency,
)
from vcex.errors import InputError

W_DIM = 4
CONV = 8  # conv style coordinates 0..7, then toRGB 8..9
PLANTED = 5  # the conv coordinate that drives the classifier most
SECOND = 6  # a weaker one
TORGB_PLANTED = 8  # a toRGB coordinate stronger than both: found only with include_torgb


class LinearStyleModel(nn.Module):
    """A style generator whose StyleSpace coordinate j paints pixel column j: encode(images (N, 1, 4, 10)) -> w
    (N, 4), the first pixels; styles(w) = A w + b (N, 10); decode_styles(s) -> sigmoid(s) per column. The conv
    affine's singular values are (10, 3, 2, 1) on coordinates 0-3, so its top eigen-direction in W moves
    coordinate 0."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"w_dim": W_DIM})()
        generator = torch.Generator().manual_seed(0)
        conv = torch.zeros(CONV, W_DIM)
        conv[:W_DIM] = torch.diag(torch.tensor([10.0, 3.0, 2.0, 1.0]))
        conv[W_DIM:] = torch.eye(W_DIM)  # coordinates 4-7 follow w_0..w_3 too, so they differ between images
        torgb = 0.5 * torch.randn(2, W_DIM, generator=generator)
        self.register_buffer("conv_weight", conv)
        self.register_buffer("torgb_weight", torgb)
        self.register_buffer("bias", torch.zeros(CONV + 2))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :W_DIM] - 0.5

    def affine_weights(self, include_torgb: bool = True) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        layers = [("4_conv0", self.conv_weight, self.bias[:CONV])]
        if include_torgb:
            layers.append(("4_torgb", self.torgb_weight, self.bias[CONV:]))
        return layers

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return torch.cat([w @ a.T + b for _, a, b in self.affine_weights()], dim=1)

    def style_layout(self, include_torgb: bool = True) -> list[tuple[str, int, int]]:
        return [("4_conv0", 0, CONV), ("4_torgb", CONV, 2)][: 2 if include_torgb else 1]

    def decode_styles(self, s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(s)[:, None, None, :].expand(-1, 1, 4, -1).contiguous()


class ColumnClassifier(nn.Module):
    """Two logits (-score / 2, score / 2), score a weighted read of pixel columns minus a bias: most images start
    in class 0."""

    def __init__(self, weights: dict[int, float], bias: float = 3.0) -> None:
        super().__init__()
        reader = torch.zeros(CONV + 2)
        for column, weight in weights.items():
            reader[column] = weight
        self.register_buffer("reader", reader)
        self.bias = bias
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        score = (images.mean(dim=(1, 2)) - 0.5) @ self.reader - self.bias
        return torch.stack([-score / 2, score / 2], dim=1)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(24, 1, 4, CONV + 2, generator=torch.Generator().manual_seed(1))


def planted_classifier() -> ColumnClassifier:
    return ColumnClassifier({PLANTED: 10.0, SECOND: 4.0, TORGB_PLANTED: 40.0})


def test_attfind_top_attribute_is_the_planted_conv_coordinate(images: torch.Tensor, tmp_path: Path) -> None:
    model, classifier = LinearStyleModel(), planted_classifier()
    effects = stylespace_effects(model, classifier, images, resume_dir=tmp_path, progress=False)
    assert effects.effects.shape == (len(images), 2, CONV, 2)
    found = attfind(effects, target=1, num_attributes=3)
    assert [a.coordinate for a in found[:2]] == [PLANTED, SECOND]
    assert found[0].direction == 1  # the max raises class 1's logit: the classifier reads the column with + sign
    assert found[0].effect > found[1].effect > 0
    # the toRGB coordinate is stronger, and found first only when toRGB is included
    with_torgb = stylespace_effects(model, classifier, images, include_torgb=True, resume_dir=tmp_path, progress=False)
    assert attfind(with_torgb, target=1)[0].coordinate == TORGB_PLANTED


def test_attfind_pushed_images_drop_out_and_reject_vetoes(images: torch.Tensor, tmp_path: Path) -> None:
    model, classifier = LinearStyleModel(), planted_classifier()
    effects = stylespace_effects(model, classifier, images, resume_dir=tmp_path, progress=False)
    # once every image is pushed past a tiny bar, the greedy search stops instead of listing more coordinates
    assert len(attfind(effects, target=1, max_image_effect=1e-6)) == 1
    vetoed = attfind(effects, target=1, reject=lambda direction, slot, affected: slot == PLANTED)
    assert PLANTED not in [a.coordinate for a in vetoed] and vetoed[0].coordinate == SECOND


def test_binary_merge_and_per_image(images: torch.Tensor, tmp_path: Path) -> None:
    model, classifier = LinearStyleModel(), ColumnClassifier({PLANTED: 10.0, SECOND: 4.0}, bias=0.0)
    effects = stylespace_effects(model, classifier, images, resume_dir=tmp_path, progress=False)
    toward_0, toward_1 = attfind(effects, target=0), attfind(effects, target=1)
    merged = merge_binary(effects, toward_0, toward_1)
    assert merged[0].coordinate == PLANTED and merged[0].direction == 0  # toward class 0: its min
    assert len({a.coordinate for a in merged}) == len(merged)
    image = int(torch.nonzero(effects.logits.argmax(1) == 0)[0])
    ranked = per_image(effects, image, target=1, top=3)
    assert ranked[0].coordinate == PLANTED and ranked[0].effect >= ranked[1].effect


def test_effects_do_not_depend_on_batch_size(images: torch.Tensor, tmp_path: Path) -> None:
    model, classifier = LinearStyleModel(), planted_classifier()
    small = stylespace_effects(model, classifier, images, batch_size=7, resume_dir=tmp_path, progress=False)
    large = stylespace_effects(model, classifier, images, batch_size=4096, resume_dir=tmp_path, progress=False)
    torch.testing.assert_close(small.effects, large.effects)
    assert small.effects.abs().sum() > 0


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_its_partial_table(images: torch.Tensor, tmp_path: Path) -> None:
    model, classifier = LinearStyleModel(), planted_classifier()
    complete = stylespace_effects(model, classifier, images, batch_size=16, resume_dir=tmp_path, progress=False)
    chunks = 2 * CONV * len(images) // 16
    stopping = planted_classifier()
    forward = stopping.forward

    def stop_after_ten(batch: torch.Tensor) -> torch.Tensor:
        if stopping.calls >= 12:  # 2 unshifted-decode calls (24 images in chunks of 16), then 10 chunks
            raise Interrupt
        return forward(batch)

    stopping.forward = stop_after_ten
    with pytest.raises(Interrupt):
        stylespace_effects(model, stopping, images, batch_size=16, resume_dir=tmp_path, save_every=4, progress=False)
    assert len(list(tmp_path.glob("attfind-*.pt"))) == 1  # saved after chunk 8
    resumed_classifier = planted_classifier()
    resumed = stylespace_effects(
        model, resumed_classifier, images, batch_size=16, resume_dir=tmp_path, save_every=4, progress=False
    )
    torch.testing.assert_close(resumed.effects, complete.effects)
    assert resumed_classifier.calls == 2 + chunks - 8  # the first 8 chunks were not redone
    assert not list(tmp_path.glob("attfind-*.pt"))  # a complete table leaves no partial file


def test_sufficiency_grows_with_the_planted_attributes(images: torch.Tensor, tmp_path: Path) -> None:
    model, classifier = LinearStyleModel(), planted_classifier()
    effects = stylespace_effects(model, classifier, images, resume_dir=tmp_path, progress=False)
    found = attfind(effects, target=1, num_attributes=2)
    shares = sufficiency(model, classifier, images, effects, found, target=1)
    assert len(shares) == 2 and 0 <= shares[0] <= shares[1] <= 1 and shares[1] > 0


def test_every_search_starts_from_given_styles(images: torch.Tensor, tmp_path: Path) -> None:
    # styles as an inversion would give them: not the encoder's (the planted coordinate raised on every image)
    model, classifier = LinearStyleModel(), planted_classifier()
    encoded = model.styles(model.encode(images))
    moved = encoded.clone()
    moved[:, PLANTED] += 0.5
    effects = stylespace_effects(model, classifier, images, styles=moved, resume_dir=tmp_path, progress=False)
    plain = stylespace_effects(model, classifier, images, resume_dir=tmp_path, progress=False)
    torch.testing.assert_close(effects.styles, moved)
    torch.testing.assert_close(plain.styles, encoded)
    torch.testing.assert_close(effects.logits, classifier(model.decode_styles(moved)))
    assert not torch.allclose(effects.logits, plain.logits)
    assert float(effects.extremes[PLANTED, 1]) == pytest.approx(float(moved[:, PLANTED].max()))
    torch.testing.assert_close(apply_attributes(model, images, {}, styles=moved), model.decode_styles(moved))
    # sufficiency applies the attributes to the styles searched
    found = attfind(effects, target=1, num_attributes=1)
    outside = effects.logits.argmax(dim=1) != 1
    start = moved[outside].clone()
    start[:, found[0].coordinate] = effects.extremes[found[0].coordinate, found[0].direction]
    expected = float((classifier(model.decode_styles(start)).argmax(dim=1) == 1).float().mean())
    assert sufficiency(model, classifier, images, effects, found, target=1) == [pytest.approx(expected)]
    # the discriminator filter reads decodes of those styles too
    seen = []
    reject = discriminator_filter(model, lambda x: seen.append(x) or x.mean(dim=(1, 2, 3)), images, effects)
    reject(1, PLANTED, torch.arange(3))
    torch.testing.assert_close(seen[0], model.decode_styles(moved[:3]))
    # EigenFind steps from them, and keeps them for its strips
    result = eigenfind(model, classifier, images, target=1, top=2, styles=moved)
    torch.testing.assert_close(result.styles, moved)
    assert result.num_images == int(outside.sum())
    offset = torch.zeros(CONV + 2)
    offset[0] = 1.0
    torch.testing.assert_close(
        decode_with_offset(model, images, offset, styles=moved), model.decode_styles(moved + offset)
    )
    with pytest.raises(InputError, match="one row per image"):
        stylespace_effects(model, classifier, images, styles=moved[:3], resume_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match="NaN"):
        eigenfind(model, classifier, images, target=1, styles=torch.full_like(moved, float("nan")))


def test_a_classifier_on_another_device_is_refused_by_name(images: torch.Tensor, tmp_path: Path) -> None:
    elsewhere = nn.Linear(2, 2).to("meta")  # parameters on another device than the generator's CPU
    for search in (
        lambda: stylespace_effects(LinearStyleModel(), elsewhere, images, resume_dir=tmp_path, progress=False),
        lambda: eigenfind(LinearStyleModel(), elsewhere, images, target=1),
    ):
        with pytest.raises(InputError, match="classifier is on meta but the style generator on cpu: move both"):
            search()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_searches_on_cuda_match_the_cpu(images: torch.Tensor, tmp_path: Path) -> None:
    # CPU images, models on the GPU: the same tables as on the CPU, back on the CPU
    cpu = stylespace_effects(LinearStyleModel(), planted_classifier(), images, resume_dir=tmp_path, progress=False)
    model, classifier = LinearStyleModel().cuda(), planted_classifier().cuda()
    gpu = stylespace_effects(model, classifier, images, batch_size=7, resume_dir=tmp_path, progress=False)
    assert gpu.effects.device.type == gpu.styles.device.type == "cpu"
    torch.testing.assert_close(gpu.effects, cpu.effects, atol=1e-5, rtol=1e-5)
    found = attfind(gpu, target=1, num_attributes=2)
    assert found == attfind(cpu, target=1, num_attributes=2)
    assert sufficiency(model, classifier, images, gpu, found, 1) == pytest.approx(
        sufficiency(LinearStyleModel(), planted_classifier(), images, cpu, found, 1)
    )
    assert apply_attributes(model, images, {PLANTED: 1.0}).device.type == "cpu"
    eigen = eigenfind(model, classifier, images, target=1, top=2)
    assert eigen.styles.device.type == "cpu"
    on_cpu = eigenfind(LinearStyleModel(), planted_classifier(), images, target=1, top=2)
    assert eigen.explained_share == on_cpu.explained_share


def test_a_directions_coordinates_are_ranked_by_their_effect_with_their_weight(images: torch.Tensor) -> None:
    model, classifier = LinearStyleModel(), planted_classifier()
    std = model.styles(model.encode(images)).std(dim=0)
    direction = torch.zeros(CONV + 2)
    direction[PLANTED] = 2.0 * std[PLANTED]  # raises class 1: first
    direction[SECOND] = -1.0 * std[SECOND]  # lowers it: last
    direction[0] = 3.0 * std[0]  # the largest weight, read by no one: between them
    found = direction_attributes(model, classifier, images, direction, target=1, alpha=1.0, top=3)
    assert [a.coordinate for a in found] == [PLANTED, 0, SECOND]
    assert [a.weight for a in found] == pytest.approx([2.0, 3.0, -1.0], rel=1e-4)
    assert found[0].effect > 0 > found[2].effect and found[1].effect == pytest.approx(0.0, abs=1e-6)
    outside = int((classifier(model.decode_styles(model.styles(model.encode(images)))).argmax(1) != 1).sum())
    assert found[0].images_moved == outside and found[0].row()["weight_in_stds"] == pytest.approx(2.0, rel=1e-3)
    assert [a.coordinate for a in direction_attributes(model, classifier, images, direction, 1, top=1)] == [PLANTED]
    with pytest.raises(InputError, match="zero everywhere"):
        direction_attributes(model, classifier, images, torch.zeros(CONV + 2), target=1)
    with pytest.raises(InputError, match="one offset per style coordinate, \\(10,\\); got list"):
        direction_attributes(model, classifier, images, [1.0] * (CONV + 2), target=1)
    with pytest.raises(InputError, match="NaN"):
        direction_attributes(model, classifier, images, torch.full((CONV + 2,), float("nan")), target=1)
    # the flip curve starts at none and grows with the step (along the strongest-read coordinate)
    strongest = torch.zeros(CONV + 2)
    strongest[TORGB_PLANTED] = std[TORGB_PLANTED]
    shares = direction_flip_shares(model, classifier, images, strongest, 1, torch.tensor([0.0, 0.5, 2.0, 8.0]))
    assert shares[0] == 0.0 and shares == sorted(shares) and shares[-1] == 1.0
    with pytest.raises(InputError, match="one offset per style coordinate"):
        direction_attributes(model, classifier, images, direction[:3], target=1)
    with pytest.raises(InputError, match="target 4 is not a class"):
        direction_flip_shares(model, classifier, images, direction, 4, torch.tensor([1.0]))
    every_image = ColumnClassifier({}, bias=-3.0)  # every decode already in class 1
    with pytest.raises(InputError, match="every image is already in class 1"):
        direction_attributes(model, every_image, images, direction, target=1)


def test_eigenfind_finds_the_planted_direction(images: torch.Tensor) -> None:
    # the classifier reads coordinate 0 only: the top eigen-direction (singular value 10) moves it
    model, classifier = LinearStyleModel(), ColumnClassifier({0: 10.0}, bias=2.0)
    result = eigenfind(model, classifier, images, target=1, top=4, alpha=1.0)
    top = result.directions[0]
    assert top.index == 0
    # the chosen sign moves w along the eigenvector so that coordinate 0 (w_0 scaled by 10) rises
    assert top.sign * float(result.eigenvectors[0, 0]) > 0
    assert 0 < result.explained_share <= 1
    assert [d.explained for d in result.directions] == sorted(d.explained for d in result.directions)


class ScaledWStyleModel(LinearStyleModel):
    """The same generator with W stretched 10x: encode returns 10 w and the affines are 10x smaller, so every
    image has the same styles, but a step of alpha in W reaches 10x less far in StyleSpace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_weight /= 10
        self.torgb_weight /= 10

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return 10 * super().encode(images)


def test_eigenfind_alpha_in_std_units_does_not_depend_on_the_w_scale(images: torch.Tensor) -> None:
    classifier = ColumnClassifier({0: 10.0}, bias=2.0)
    plain, stretched = LinearStyleModel(), ScaledWStyleModel()
    in_std = [
        eigenfind(model, classifier, images, 1, top=4, alpha=1.0, alpha_unit="std") for model in (plain, stretched)
    ]
    # the step is alpha times the std of the images' w along each direction, 10x longer in the stretched W
    w = plain.encode(images)
    torch.testing.assert_close(in_std[0].steps, (w @ in_std[0].eigenvectors.T).std(dim=0))
    torch.testing.assert_close(in_std[1].steps, 10 * in_std[0].steps)
    assert [d.row() for d in in_std[0].directions] == [d.row() for d in in_std[1].directions]
    # in W units the same alpha reaches 10x less far in the stretched generator: smaller effects
    in_w = [eigenfind(model, classifier, images, 1, top=4, alpha=1.0, alpha_unit="w") for model in (plain, stretched)]
    assert in_w[1].directions[0].effect < 0.5 * in_w[0].directions[0].effect
    with pytest.raises(InputError, match="alpha_unit must be one of w, std"):
        eigenfind(plain, classifier, images, 1, alpha_unit="sigma")


def test_eigenfind_defaults_to_the_measured_step_and_keeps_the_published_one(images: torch.Tensor) -> None:
    # default: alpha 3 in std units (measured on faces-style); published: alpha 5 in W, reachable by arguments
    model, classifier = ScaledWStyleModel(), ColumnClassifier({0: 10.0}, bias=2.0)
    default = eigenfind(model, classifier, images, 1, top=4)
    spread = (model.encode(images) @ default.eigenvectors.T).std(dim=0)
    assert (default.alpha, default.alpha_unit) == (3.0, "std")
    torch.testing.assert_close(default.steps, 3 * spread)
    published = eigenfind(model, classifier, images, 1, top=4, alpha=5.0, alpha_unit="w")
    assert (published.alpha, published.alpha_unit) == (5.0, "w")
    torch.testing.assert_close(published.steps, torch.full((4,), 5.0))
    # in this stretched W, 5 in W is a shorter step than 3 std: it explains less (as on faces-style)
    assert published.directions[0].effect < default.directions[0].effect


def test_bad_input_is_one_clear_error(images: torch.Tensor, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no StyleSpace"):
        stylespace_effects(nn.Linear(2, 2), planted_classifier(), images, progress=False)
    model = LinearStyleModel()
    # a classifier that reads nothing: no coordinate moves class 1
    effects = stylespace_effects(model, ColumnClassifier({}, bias=3.0), images, resume_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match="no StyleSpace coordinate raises class 1"):
        attfind(effects, target=1)
    with pytest.raises(InputError, match="target 5"):
        attfind(effects, target=5)
    with pytest.raises(InputError, match="at least 2 images"):
        stylespace_effects(model, planted_classifier(), images[:1], progress=False)
