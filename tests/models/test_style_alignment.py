"""The supervised alignment term (vcex.models.style_alignment, recipe.align_*): the map is parsed and checked,
minimising the term makes one coordinate move its factor alone on a toy generator, it is off by default, and
training with it logs its terms, changes the generator and resumes bit-identically."""

from __future__ import annotations

import math

import pytest
import torch
from test_stylex import assert_resumes_bit_identically, faces_like, tiny_model  # shared helpers (folder on path)

from vcex.cli import main
from vcex.cli.train_style import recipe_from
from vcex.errors import InputError
from vcex.models.faces import WarmthReadings
from vcex.models.style_alignment import alignment_loss, parse_alignment
from vcex.models.stylex import StylExRecipe, train_stylex

pytestmark = pytest.mark.usefixtures("one_thread")


class ChannelMeans(torch.nn.Module):
    """A factor reader for tests: (N, 3, H, W) -> (N, 3) mean of each colour channel, in [0, 1]."""

    factor_names = ("red", "green", "blue")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean((2, 3))


def test_the_map_is_parsed_and_bad_maps_are_refused():
    names, factors = ["4.conv0:0", "4.conv0:1", "8.torgb:3"], ("smile", "eyeglasses")
    plan = parse_alignment("smile=8.torgb:3; eyeglasses=4.conv0:0", names, factors)
    assert plan.coordinates.tolist() == [2, 0] and plan.factors.tolist() == [0, 1]
    assert plan.labels == ("smile=8.torgb:3", "eyeglasses=4.conv0:0")
    assert parse_alignment("smile=4.conv0:1,eyeglasses=8.torgb:3", names, factors).coordinates.tolist() == [1, 2]
    own = parse_alignment("smile=4.conv0:1@0.5;eyeglasses=8.torgb:3", names, factors)
    assert own.shifts[0] == 0.5 and own.shifts[1].isnan() and own.labels[0] == "smile=4.conv0:1@0.5"
    for bad, message in (
        ("", "empty"),
        ("beard=4.conv0:0", "no factor 'beard'.*smile, eyeglasses"),
        ("smile=4.conv9:0", "no style coordinate.*4.conv0, 8.torgb"),
        ("smile=4.conv0:0;eyeglasses=4.conv0:0", "coordinate twice"),
        ("smile=4.conv0:0;smile=4.conv0:1", "factor twice"),
        ("smile=4.conv0:0@1.5", "in \\(0, 1\\]"),
        ("smile=4.conv0:0@x", "in \\(0, 1\\]"),
    ):
        with pytest.raises(InputError, match=message):
            parse_alignment(bad, names, factors)


def test_minimising_it_makes_one_coordinate_move_its_factor_alone():
    g = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(0.3 * torch.randn(3, 6, generator=g))  # factors (3) from styles (6): all entangled

    def decode(styles: torch.Tensor) -> torch.Tensor:
        return styles @ weight.T

    reader = torch.sigmoid
    plan = parse_alignment("a=s:4;c=s:1", [f"s:{i}" for i in range(6)], ("a", "b", "c"))

    def effects() -> torch.Tensor:
        """(2, 3): the mean change of each factor when each aligned coordinate moves by +3 stds."""
        styles = torch.randn(256, 6, generator=torch.Generator().manual_seed(5))
        std = styles.std(0)
        rows = []
        with torch.no_grad():
            for coordinate in plan.coordinates.tolist():
                moved = styles.clone()
                moved[:, coordinate] += 3 * std[coordinate]
                rows.append((reader(decode(moved)) - reader(decode(styles))).mean(0))
        return torch.stack(rows)

    before = effects()
    optimiser = torch.optim.Adam([weight], lr=0.03)
    rng = torch.Generator().manual_seed(1)
    for _ in range(600):
        loss, terms = alignment_loss(decode, reader, torch.randn(32, 6, generator=rng), plan, rng, images=16)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = effects()
    off_before = before.abs().sum(1) - before.abs()[[0, 1], [0, 2]]
    on, off = after[[0, 1], [0, 2]], after.abs().sum(1) - after.abs()[[0, 1], [0, 2]]
    assert (off_before > 0.1).all()  # entangled at the start: the checks below could fail
    assert (on > 0.3).all()  # each moves its own factor up (the target is 0.7 at 3 stds, less where it clamps)
    assert (off < 0.2 * on).all()  # ... and the others little
    assert set(terms) == {"align_on", "align_off"}


def test_off_by_default_on_it_is_logged_and_changes_training():
    assert StylExRecipe().align_weight == 0
    images = faces_like()
    on = StylExRecipe(batch_size=8, r1_interval=2, align_weight=1.0, align_map="red=8.conv0:1;blue=16.torgb:0")
    off_model, on_model = tiny_model(), tiny_model()
    off = train_stylex(off_model, images, epochs=1, recipe=StylExRecipe(batch_size=8, r1_interval=2), progress=False)
    trained = train_stylex(on_model, images, epochs=1, recipe=on, progress=False, factor_reader=ChannelMeans())
    assert "align_on" not in off.history[0]
    assert math.isfinite(trained.history[0]["align_on"]) and trained.history[0]["align_off"] >= 0
    assert not torch.equal(
        off_model.generator.layers["8_conv0"].conv.weight, on_model.generator.layers["8_conv0"].conv.weight
    )
    with pytest.raises(InputError, match="needs a factor reader"):
        train_stylex(tiny_model(), images, epochs=1, recipe=on, progress=False)
    with pytest.raises(InputError, match="no style coordinate"):
        bad = StylExRecipe(batch_size=8, align_weight=1.0, align_map="red=99.conv0:1")
        train_stylex(tiny_model(), images, epochs=1, recipe=bad, progress=False, factor_reader=ChannelMeans())


def test_on_gan_batches_too_it_is_logged_apart_and_changes_training():
    images = faces_like()
    plain = {"batch_size": 8, "r1_interval": 2, "align_weight": 1.0, "align_map": "red=8.conv0:1;blue=16.torgb:0"}
    encoder_only, both = tiny_model(), tiny_model()
    first = train_stylex(encoder_only, images, epochs=1, recipe=StylExRecipe(**plain), progress=False,
                         factor_reader=ChannelMeans())  # fmt: skip
    second = train_stylex(both, images, epochs=1, recipe=StylExRecipe(**plain, align_gan_weight=2.0), progress=False,
                          factor_reader=ChannelMeans())  # fmt: skip
    assert "gan_align_on" not in first.history[0]
    assert math.isfinite(second.history[0]["gan_align_on"]) and second.history[0]["gan_align_off"] >= 0
    assert not torch.equal(
        encoder_only.generator.layers["8_conv0"].conv.weight, both.generator.layers["8_conv0"].conv.weight
    )
    for extension in ("align_gan_weight", "align_region_weight"):
        with pytest.raises(InputError, match=f"{extension} extends the alignment term: set align_weight > 0 too"):
            StylExRecipe(**{extension: 1.0}, align_map="red=8.conv0:1")


def test_the_off_weight_scales_the_other_factors_change_and_a_pair_may_carry_its_own_shift():
    styles = torch.randn(16, 6, generator=torch.Generator().manual_seed(2))
    weight = 0.3 * torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    plan = parse_alignment("a=s:4", [f"s:{i}" for i in range(6)], ("a", "b", "c"))

    def loss(off_weight: float) -> tuple[float, dict]:
        value, terms = alignment_loss(lambda s: s @ weight.T, torch.sigmoid, styles, plan,
                                      torch.Generator().manual_seed(1), off_weight=off_weight)  # fmt: skip
        return float(value), terms

    (one, terms), (three, _) = loss(1.0), loss(3.0)
    on, off = terms["align_on"] ** 2, terms["align_off"] ** 2  # the mean squared errors the loss averages
    assert off > 0 and one == pytest.approx(on + off, rel=1e-5) and three == pytest.approx(on + 3 * off, rel=1e-5)
    for text, same in (("a=s:4@0.7", True), ("a=s:4@0.2", False)):  # 0.7 is the loss's default shift
        own = parse_alignment(text, [f"s:{i}" for i in range(6)], ("a", "b", "c"))
        _, own_terms = alignment_loss(lambda s: s @ weight.T, torch.sigmoid, styles, own,
                                      torch.Generator().manual_seed(1))  # fmt: skip
        assert (own_terms["align_on"] == pytest.approx(terms["align_on"], rel=1e-6)) is same


def test_training_with_the_term_resumes_bit_identically(tmp_path):
    recipe = StylExRecipe(batch_size=8, r1_interval=2, align_weight=1.0, align_map="green=8.conv1:0")
    history = assert_resumes_bit_identically(tmp_path, recipe, seed=3, factor_reader=ChannelMeans())
    assert "align_on" in history[1]


def test_the_cli_set_takes_the_map_as_text_and_checks_the_fields():
    text = "smile=32.conv0:10;bangs=16.conv0:16"
    recipe = recipe_from(["align_weight=2", f"align_map={text}", "align_factors=2"], 32)
    assert (recipe.align_weight, recipe.align_map, recipe.align_factors) == (2.0, text, 2)
    with pytest.raises(InputError, match="needs align_map"):
        StylExRecipe(align_weight=1.0)
    for bad in ({"align_weight": -1.0}, {"align_factors": 0}, {"align_shift": 0.0}, {"align_off_weight": -1.0}):
        with pytest.raises(InputError, match=next(iter(bad))):
            StylExRecipe(**bad)


def test_the_cli_refuses_the_term_on_a_dataset_without_known_factors(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["train-style", "--dataset", "mnist", "--config", "tiny", "--n-train", "16", "--epochs", "1", "--quiet"]
    code = main([*args, "--set", "align_weight=1", "--set", "align_map=smile=4.conv0:0", "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 2 and "needs a dataset with known factors" in error and "Traceback" not in error
    assert not out.exists()


def test_the_background_hue_is_read_as_its_warmth_for_the_term():
    class HueReader(torch.nn.Module):
        factor_names = ("smile", "background_hue")

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean((2, 3))[:, :2]

    reader = WarmthReadings(HueReader())
    assert reader.factor_names == ("smile", "background_warmth")
    hues = torch.tensor([0.05, 0.55, 0.30, 1.0])  # orange-red, cyan, the warm/cool edges (a quarter turn away)
    images = torch.stack([torch.full((4, 2, 2), 0.4), hues[:, None, None].expand(4, 2, 2), torch.zeros(4, 2, 2)], 1)
    readings = reader(images)
    assert readings[:, 0].tolist() == pytest.approx([0.4] * 4)
    assert readings[:, 1].tolist() == pytest.approx([1.0, 0.0, 0.5, 0.9755], abs=1e-3)
    with pytest.raises(InputError, match="no 'background_hue'.*red, green, blue"):
        WarmthReadings(ChannelMeans())


def test_the_region_term_counts_pixel_changes_outside_each_pairs_parts_only():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(3 * 4 * 4, 4, generator=g)  # every style coordinate paints every pixel

    def decode(styles: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(styles @ mixing.T).view(-1, 3, 4, 4)

    def reader(images: torch.Tensor) -> torch.Tensor:
        return images.mean((2, 3))

    plan = parse_alignment("r=s:0;g=s:2", [f"s:{i}" for i in range(4)], ("r", "g", "b"))
    styles = torch.randn(8, 4, generator=g)
    everywhere = torch.ones(8, 2, 4, 4, dtype=torch.bool)
    left = everywhere.clone()
    left[..., 2:] = False

    def leak(regions: torch.Tensor) -> float:
        _, terms = alignment_loss(decode, reader, styles, plan, torch.Generator().manual_seed(1), regions=regions,
                                  region_weight=1.0)  # fmt: skip
        return terms["align_leak"]

    assert leak(everywhere) == 0 and leak(left) > 0.01
    _, terms = alignment_loss(decode, reader, styles, plan, torch.Generator().manual_seed(1), regions=left)
    assert "align_leak" not in terms  # weight 0: not computed


def test_region_weight_needs_regions_of_the_right_shape():
    images = faces_like()
    recipe = StylExRecipe(batch_size=8, align_weight=1.0, align_map="red=8.conv0:1", align_region_weight=5.0)
    with pytest.raises(InputError, match="needs a factor reader and alignment_regions"):
        train_stylex(tiny_model(), images, epochs=1, recipe=recipe, progress=False, factor_reader=ChannelMeans())
    wrong = torch.ones(len(images), 2, *images.shape[2:], dtype=torch.bool)
    with pytest.raises(InputError, match="must be bool of shape"):
        train_stylex(tiny_model(), images, epochs=1, recipe=recipe, progress=False, factor_reader=ChannelMeans(),
                     alignment_regions=wrong)  # fmt: skip
    regions = torch.ones(len(images), 1, *images.shape[2:], dtype=torch.bool)
    regions[..., : images.shape[2] // 2, :] = False
    state = train_stylex(tiny_model(), images, epochs=1, recipe=recipe, progress=False, factor_reader=ChannelMeans(),
                         alignment_regions=regions)  # fmt: skip
    assert math.isfinite(state.history[0]["align_leak"])


def test_faces_alignment_regions_cover_each_factors_parts():
    from vcex.data.synthetic_faces import face_regions, make_faces
    from vcex.models.faces import alignment_regions

    faces = make_faces(6, seed=4, size=32)
    regions = alignment_regions(faces.factors, ["smile", "background_warmth", "eyeglasses"], 32)
    parts = face_regions(faces.factors, size=32)
    assert regions.shape == (6, 3, 32, 32) and regions.dtype == torch.bool
    assert regions[:, 0][parts["mouth"] > 0.5].all() and not regions[:, 0][parts["background"] > 0.99].any()
    assert regions[:, 1][parts["background"] > 0.5].all()
    assert regions[:, 2].float().mean() > 0.05  # the glasses' place, also on faces drawn without them
    with pytest.raises(InputError, match="no face parts known for factor 'nose'"):
        alignment_regions(faces.factors, ["nose"], 32)


def test_the_cli_reads_the_warmth_only_when_the_map_names_it(monkeypatch):
    import vcex.models
    from vcex.cli.train_style import _factor_reader

    class FacesFactors(torch.nn.Module):
        factor_names = ("smile", "background_hue")

    monkeypatch.setattr(vcex.models, "load_model", lambda name, progress=True: FacesFactors())

    def reader(text: str) -> torch.nn.Module:
        return _factor_reader("faces", recipe_from(["align_weight=1", f"align_map={text}"], 32), progress=False)

    hue, warm = reader("background_hue=32.torgb:2@0.5"), reader("background_warmth = 32.torgb:2")
    assert hue.factor_names == ("smile", "background_hue")  # maps written before the warmth still parse
    assert isinstance(warm, WarmthReadings) and warm.factor_names == ("smile", "background_warmth")
