"""Tests for the StyleSpace purity probe: a planted pure channel is found, batching does not change the table,
models come back as they were, and a latent model without a StyleSpace is refused by name."""

from __future__ import annotations

import pytest
import torch
from planted_style import PLANTED_CHANNEL, planted_index, planted_model
from torch import nn

from vcex.errors import InputError
from vcex.evaluation.stylespace import (
    StyleSpaceProbe,
    coordinate_names,
    encoded_styles,
    probe_summary,
    shift_strip,
    stylespace_probe,
    target_log_odds,
)
from vcex.models.stylegan import StyleAutoencoder, StyleSpaceModel


class ColourOracle(nn.Module):
    """Reads 'red', 'green', 'blue': each channel's mean minus its reference, as logits (N, 3)."""

    attribute_names = ("red", "green", "blue")

    def __init__(self, reference: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("reference", reference)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 10 * (images.mean(dim=(2, 3)) - self.reference)


@pytest.fixture(scope="module")
def setup() -> tuple[StyleAutoencoder, ColourOracle, torch.Tensor]:
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model = planted_model(images)
    with torch.no_grad():
        decoded = model.decode_styles(model.styles(model.encode(images)))
    # the mean decoded colour is the threshold, so shifts can flip the readings (a median would put one image on it)
    return model, ColourOracle(decoded.mean(dim=(2, 3)).mean(dim=0)), images


def test_finds_the_planted_pure_channel(setup: tuple) -> None:
    model, oracle, images = setup
    probe = stylespace_probe(model, oracle, images, k=3.0)
    planted = planted_index(model)
    assert probe.names[planted] == f"16.torgb:{PLANTED_CHANNEL}"
    assert bool(probe.is_torgb[planted])
    assert probe.attribute_names[int(probe.top_attribute[planted])] == "red"
    assert float(probe.purity[planted]) > 0.99
    assert float(probe.flip_share[planted]) >= 0.5
    assert int(probe.purity.argmax()) == planted
    # every other coordinate that moves anything moves green and blue too
    others = torch.ones(len(probe.names), dtype=torch.bool)
    others[planted] = False
    assert float(probe.purity[others].max()) < 0.9
    assert probe.best_per_factor()["red"] == planted
    assert probe.best_per_factor(torgb=False)["red"] != planted


def test_table_shapes_and_rows(setup: tuple) -> None:
    model, oracle, images = setup
    classifier = nn.Linear(3 * 16 * 16, 2)
    probe = stylespace_probe(model, oracle, images[:4], classifier=lambda x: classifier(x.flatten(1)))
    s = model.style_dim
    assert isinstance(probe, StyleSpaceProbe)
    assert len(probe.names) == s and probe.is_torgb.shape == (s,)
    assert probe.attribute_change.shape == (s, 3) and probe.attribute_shift.shape == (s, 2, 3)
    assert probe.logit_change.shape == (s, 2)
    assert int((~probe.is_torgb).sum()) == int(model.conv_style_mask().sum())
    assert ((probe.purity >= 0) & (probe.purity <= 1)).all()
    assert ((probe.flip_share >= 0) & (probe.flip_share <= 1)).all()
    rows = probe.rows()
    assert len(rows) == s
    assert {"coordinate", "kind", "factor", "purity", "flip_share", "logit_change_plus"} <= set(rows[0])


def test_batching_does_not_change_the_table(setup: tuple) -> None:
    model, oracle, images = setup
    classifier = nn.Linear(3 * 16 * 16, 2)
    coordinates = torch.cat([torch.arange(0, model.style_dim, 3), torch.tensor([planted_index(model)])])
    tables = [
        stylespace_probe(
            model, oracle, images[:5], classifier=lambda x: classifier(x.flatten(1)), batch_size=size,
            coordinates=coordinates,
        )
        for size in (1, 7, 100_000)
    ]  # fmt: skip
    # purity is a ratio: where a coordinate moves the readings by float noise alone (~1e-7), so is its purity
    clear = tables[0].attribute_change.sum(1) > 1e-4
    assert clear.any()
    for other in tables[1:]:
        assert other.names == tables[0].names
        torch.testing.assert_close(other.attribute_shift, tables[0].attribute_shift, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(other.attribute_change, tables[0].attribute_change, atol=1e-6, rtol=1e-4)
        assert torch.equal(other.top_attribute[clear], tables[0].top_attribute[clear])
        torch.testing.assert_close(other.purity[clear], tables[0].purity[clear], atol=1e-3, rtol=0)
        torch.testing.assert_close(other.flip_share, tables[0].flip_share)
        torch.testing.assert_close(other.logit_change, tables[0].logit_change, atol=1e-4, rtol=1e-4)


def test_a_subset_of_coordinates_matches_the_full_table(setup: tuple) -> None:
    model, oracle, images = setup
    full = stylespace_probe(model, oracle, images[:4])
    chosen = [3, planted_index(model)]
    part = stylespace_probe(model, oracle, images[:4], coordinates=chosen)
    assert part.names == [full.names[i] for i in chosen]
    assert [row["index"] for row in part.rows()] == chosen
    torch.testing.assert_close(part.purity, full.purity[chosen], atol=1e-5, rtol=1e-4)


def test_style_space_model_is_unwrapped_and_models_come_back_unchanged(setup: tuple) -> None:
    model, oracle, images = setup
    model.encoder.train()  # a user's mixed modes must survive
    oracle.train()
    try:
        probe = stylespace_probe(StyleSpaceModel(model), oracle, images[:3], coordinates=[0])
    finally:
        modes = (model.encoder.training, model.generator.training, oracle.training)
        model.encoder.eval()
        oracle.eval()
    assert modes == (True, False, True)
    assert probe.names == [coordinate_names(model)[0][0]]


def test_a_latent_model_without_stylespace_is_refused_by_name() -> None:
    class PlainAutoencoder(nn.Module):
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return z.view(-1, 3, 16, 16)

    with pytest.raises(InputError, match=r"PlainAutoencoder has no StyleSpace: it lacks styles\(\), decode_styles\(\)"):
        stylespace_probe(PlainAutoencoder(), ColourOracle(torch.zeros(3)), torch.rand(4, 3, 16, 16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0.0}, "k"),
        ({"batch_size": 0}, "batch_size"),
        ({"coordinates": [10_000]}, "coordinates"),
        ({"attribute_names": ["a"]}, "1 attribute names for an oracle with 3 outputs"),
        ({"invert_steps": -1}, "invert_steps"),
    ],
)
def test_bad_arguments_are_refused(setup: tuple, kwargs: dict, message: str) -> None:
    model, oracle, images = setup
    with pytest.raises(InputError, match=message):
        stylespace_probe(model, oracle, images[:3], **kwargs)


def test_one_image_is_refused(setup: tuple) -> None:
    model, oracle, images = setup
    with pytest.raises(InputError, match="at least 2 images"):
        stylespace_probe(model, oracle, images[:1])


def test_target_log_odds() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    torch.testing.assert_close(target_log_odds(logits, 1), torch.tensor([2.0, -2.0]))
    torch.testing.assert_close(target_log_odds(torch.tensor([[0.5]]), 0), torch.tensor([0.5]))


def test_summary_counts_the_planted_channel_and_names_it_best(setup: tuple) -> None:
    model, oracle, images = setup
    probe = stylespace_probe(model, oracle, images)
    summary = probe_summary(probe)
    assert summary["kinds"]["torgb"]["purity_at_least_0.70"] == 1
    assert summary["kinds"]["torgb"]["purity_at_least_0.70_and_flip_at_least_0.50"] == 1
    assert summary["kinds"]["conv"]["coordinates"] + summary["kinds"]["torgb"]["coordinates"] == model.style_dim
    assert summary["best_per_factor"]["red"]["torgb"]["index"] == planted_index(model)
    assert summary["best_per_factor"]["red"]["any"]["purity"] > 0.99


def test_shift_strip_moves_only_the_shifted_colour(setup: tuple) -> None:
    model, oracle, images = setup
    strip = shift_strip(model, images[:3], planted_index(model), 2.0)
    assert strip.shape == (3, 3, 3, 16, 16)
    colour = strip.mean(dim=(3, 4))  # (3 rows, n, RGB)
    assert (colour[2, :, 0] > colour[0, :, 0]).all() and (colour[1, :, 0] < colour[0, :, 0]).all()
    torch.testing.assert_close(colour[1:, :, 1:], colour[:1, :, 1:].expand(2, -1, -1))


def test_one_vs_all_oracle_reads_each_class_probability_through_a_sigmoid():
    from vcex.evaluation.stylespace import OneVsAllOracle

    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    oracle = OneVsAllOracle(classifier, ["a", "b", "c", "d"])
    images = torch.rand(5, 3, 2, 2)
    assert torch.allclose(torch.sigmoid(oracle(images)), torch.softmax(classifier(images), 1), atol=1e-5)
    assert oracle.attribute_names == ("a", "b", "c", "d") and oracle.readings_sum_to_one


def test_a_class_probability_reading_counts_the_moved_mass_once():
    from vcex.evaluation.stylespace import _table

    # one coordinate moving 0.4 of probability from class 0 to class 1 on every image, under both signs
    absolute = torch.tensor([[[0.4, 0.4, 0.0], [0.4, 0.4, 0.0]]])
    sums = {"absolute": absolute, "signed": absolute, "odds": None, "flipped": torch.zeros(1, 2, 3, dtype=torch.bool)}
    args = (sums, ("0", "1", "2"), torch.tensor([0]), ["4.conv0:0"], torch.tensor([False]), torch.tensor([1.0]), 3, 2)
    assert float(_table(*args).purity[0]) == pytest.approx(0.5)  # read as independent attributes: two alike
    assert float(_table(*args, moved_twice=True).purity[0]) == pytest.approx(1.0)  # one digit pair alone


def _pixel_error(model: nn.Module, styles: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model.decode_styles(styles) - images).pow(2).flatten(1).mean(1)


class SloppyStyles(nn.Module):
    """Toy style model: images (1, 2, 3) = sigmoid(s M) of 4 styles; its encoder returns half the right styles."""

    def __init__(self) -> None:
        super().__init__()
        self.mixing = nn.Parameter(torch.randn(4, 6, generator=torch.Generator().manual_seed(0)))
        self.encoder = nn.Identity()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.logit(self.encoder(images).flatten(1).clamp(1e-5, 1 - 1e-5))
        return 0.5 * torch.linalg.lstsq(self.mixing.T.detach(), logits.T).solution.T

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def decode_styles(self, styles: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(styles @ self.mixing).view(-1, 1, 2, 3)

    def style_layout(self) -> list[tuple[str, int, int]]:
        return [("4.conv0", 0, 4)]


def test_inversion_brings_every_decode_closer_and_leaves_the_model_as_it_was() -> None:
    model = SloppyStyles().eval()
    with torch.no_grad():
        images = model.decode_styles(torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
    model.encoder.train()  # a user's mixed modes must survive
    try:
        encoded = encoded_styles(model, images)
        inverted = encoded_styles(model, images, invert_steps=200, batch_size=3)
        modes = (model.training, model.encoder.training)
    finally:
        model.encoder.eval()
    assert modes == (False, True)
    assert inverted.shape == encoded.shape == (8, 4) and not inverted.requires_grad
    assert (_pixel_error(model, inverted, images) < 0.1 * _pixel_error(model, encoded, images)).all()
    torch.testing.assert_close(model.mixing, torch.randn(4, 6, generator=torch.Generator().manual_seed(0)))
    assert model.mixing.grad is None and model.mixing.requires_grad
    torch.testing.assert_close(encoded_styles(model, images, invert_steps=0), encoded)


def test_the_probe_reads_given_styles_as_they_are(setup: tuple) -> None:
    model, oracle, images = setup
    planted = planted_index(model)
    with torch.no_grad():
        styles = model.styles(model.encode(images)) + 0.3  # every face moved: not the encoder's
    probe = stylespace_probe(model, oracle, images, styles=styles, coordinates=[planted])
    torch.testing.assert_close(probe.styles, styles)
    torch.testing.assert_close(probe.style_std, styles.std(dim=0)[[planted]])
    with pytest.raises(InputError, match="not both"):
        stylespace_probe(model, oracle, images, styles=styles, invert_steps=2)
    with pytest.raises(InputError, match="one row per image"):
        stylespace_probe(model, oracle, images, styles=styles[:2])
    with pytest.raises(InputError, match="NaN"):
        stylespace_probe(model, oracle, images, styles=torch.full_like(styles, float("nan")))


def test_an_oracle_on_another_device_is_refused_by_name(setup: tuple) -> None:
    model, _, images = setup
    elsewhere = ColourOracle(torch.zeros(3)).to("meta")  # its buffer on another device than the generator's CPU
    with pytest.raises(InputError, match="attribute_oracle is on meta but the style generator on cpu"):
        stylespace_probe(model, elsewhere, images)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_probe_on_cuda_matches_the_cpu(setup: tuple) -> None:
    import copy

    model, oracle, images = setup
    cpu = stylespace_probe(model, oracle, images, invert_steps=3)
    gpu = stylespace_probe(copy.deepcopy(model).cuda(), copy.deepcopy(oracle).cuda(), images, invert_steps=3)
    assert gpu.purity.device.type == gpu.styles.device.type == "cpu"
    torch.testing.assert_close(gpu.purity, cpu.purity, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.styles, cpu.styles, atol=1e-4, rtol=1e-4)
    assert shift_strip(copy.deepcopy(model).cuda(), images[:2], 0, 1.0).device.type == "cpu"


def test_inversion_needs_two_images(setup: tuple) -> None:
    model, _, images = setup
    with pytest.raises(InputError, match="at least 2 images"):
        encoded_styles(model, images[:1], invert_steps=3)


def test_the_probe_measures_shifts_on_the_inverted_styles(setup: tuple) -> None:
    model, oracle, images = setup
    planted = planted_index(model)
    probe = stylespace_probe(model, oracle, images, invert_steps=10, coordinates=[3, planted])
    expected = encoded_styles(model, images, invert_steps=10)
    assert probe.invert_steps == 10
    torch.testing.assert_close(probe.styles, expected)
    torch.testing.assert_close(probe.style_std, expected.std(dim=0)[[3, planted]])
    assert probe.attribute_names[int(probe.top_attribute[1])] == "red" and float(probe.purity[1]) > 0.99
    # the strip of the probe's styles starts from their decodes, not the encoder's
    strip = shift_strip(model, images[:2], planted, 1.0, styles=probe.styles[:2])
    with torch.no_grad():
        torch.testing.assert_close(strip[0], model.decode_styles(probe.styles[:2]))
