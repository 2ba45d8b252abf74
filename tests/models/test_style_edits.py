"""The edit term (vcex.models.style_alignment.edit_loss, recipe.edit_weight) and its targets, the renderer's true
single-factor edits (vcex.models.faces.FaceEdits): each factor moves as documented, minimising the term makes a
coordinate draw its factor's edit and nothing else on a toy decoder, and training with it is checked, logged and
resumable."""

from __future__ import annotations

import math

import pytest
import torch
from test_stylex import assert_resumes_bit_identically, tiny_model  # shared helpers (folder on path)

from vcex.cli import main
from vcex.data.synthetic_faces import render_faces, sample_factors
from vcex.errors import InputError
from vcex.models.faces import FaceEdits
from vcex.models.style_alignment import edit_loss, parse_alignment
from vcex.models.stylex import StylExRecipe, train_stylex

pytestmark = pytest.mark.usefixtures("one_thread")


def drawn_faces(n: int = 24, seed: int = 0) -> tuple[dict, torch.Tensor]:
    factors = sample_factors(n, seed=seed)
    return factors, render_faces(factors, size=32)


def test_each_factor_moves_as_documented():
    factors, _ = drawn_faces(4)
    edits = FaceEdits(factors)
    values = torch.tensor([-0.9, 0.0, 0.5, 0.8])
    assert edits.moved("smile", values, torch.full((4,), 0.5), 0.5).tolist() == pytest.approx([-0.4, 0.5, 1.0, 1.0])
    assert edits.moved("smile", values, torch.full((4,), -1.0), 0.5).tolist() == pytest.approx([-1, -1, -0.5, -0.2])
    assert edits.moved("eyeglasses", torch.tensor([0.0, 1.0]), torch.tensor([0.3, -0.2]), 1.0).tolist() == [1, 0]
    turned = edits.moved("background_hue", torch.tensor([0.9, 0.1]), torch.tensor([1.0, -1.0]), 0.25)
    assert turned.tolist() == pytest.approx([0.15, 0.85])  # wraps
    hues = torch.tensor([0.9, 0.2, 0.5, 0.06])
    warmer = edits.moved("background_warmth", hues, torch.ones(4), 0.35)  # toward 0.05 the short way, not past it
    assert warmer.tolist() == pytest.approx([0.05, 0.05, 0.15, 0.05], abs=1e-6)
    cooler = edits.moved("background_warmth", hues, -torch.ones(4), 0.1)  # toward 0.55
    assert cooler.tolist() == pytest.approx([0.8, 0.3, 0.55, 0.16], abs=1e-6)


def test_the_edits_are_the_renderers_faces():
    factors, images = drawn_faces(6)
    edits = FaceEdits(factors)
    index = torch.tensor([4, 1])
    out = edits(index, ["smile", "eyeglasses"], torch.tensor([[1.0, -0.5], [1.0, 0.5]]), [0.5, 1.0])
    assert out.shape == (2, 2, 3, 32, 32)
    picked = {name: value[index] for name, value in factors.items()}
    smile = (picked["smile"] + torch.tensor([1.0, -0.5])).clamp(-1, 1)
    assert torch.allclose(out[0], render_faces({**picked, "smile": smile}, size=32))
    assert torch.allclose(out[1], render_faces({**picked, "eyeglasses": torch.ones(2)}, size=32))  # on, any amount
    assert (out[1, 0] - images[4]).abs().amax() > 0.2 or factors["eyeglasses"][4] == 1  # glasses drawn on
    with pytest.raises(InputError, match="cannot move age"):
        edits(index, ["age"], torch.zeros(1, 2), [0.5])
    with pytest.raises(InputError, match=r"amounts must be \(factors, images\) = \(1, 2\)"):
        edits(index, ["smile"], torch.zeros(2, 2), [0.5])
    with pytest.raises(InputError, match="missing: smile"):
        FaceEdits({name: value for name, value in factors.items() if name != "smile"})


class PatternEdits:
    """Toy edits for the loss: factor f adds ``amount * pattern_f`` to the image (patterns apart in space)."""

    factor_names = ("left", "right")

    def __init__(self, reals: torch.Tensor) -> None:
        self.reals = reals
        self.patterns = torch.zeros(2, 3, 4, 4)
        self.patterns[0, :, :, :2], self.patterns[1, 0, 1:3, 2:] = 0.5, 0.8

    def __call__(self, indices, names, amounts, shifts):
        rows = [self.factor_names.index(name) for name in names]
        return self.reals[indices] + amounts[:, :, None, None, None] * self.patterns[rows][:, None]


def test_minimising_it_makes_a_coordinate_draw_its_factors_edit_alone():
    g = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(0.3 * torch.randn(48, 6, generator=g))  # every coordinate moves every pixel
    reals = torch.rand(64, 3, 4, 4, generator=g)
    edits = PatternEdits(reals)
    plan = parse_alignment("left=s:4;right=s:1", [f"s:{i}" for i in range(6)], edits.factor_names)

    def decode(styles: torch.Tensor) -> torch.Tensor:
        return (styles @ weight.T).view(-1, 3, 4, 4)

    def change(coordinate: int) -> torch.Tensor:  # a +3 std shift's effect on the picture
        styles = torch.randn(256, 6, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            moved = styles.clone()
            moved[:, coordinate] += 3 * styles.std(0)[coordinate]
            return (decode(moved) - decode(styles)).mean(0)

    before = change(4)
    optimiser, rng = torch.optim.Adam([weight], lr=0.02), torch.Generator().manual_seed(1)
    for _ in range(800):
        indices = torch.randperm(64, generator=rng)[:32]
        styles = torch.randn(32, 6, generator=rng)
        loss, terms = edit_loss(decode, styles, reals[indices], edits, indices, plan, rng, images=16, factors=2)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert (before - edits.patterns[0]).abs().max() > 0.3  # not the edit at the start: the checks could fail
    assert torch.allclose(change(4), edits.patterns[0], atol=0.08)  # +3 stds draws the whole edit, nothing else
    assert torch.allclose(change(1), edits.patterns[1], atol=0.08)
    assert set(terms) == {"edit", "edit_in", "edit_out"} and terms["edit_out"] < 0.05


def test_off_by_default_on_it_is_logged_checked_and_changes_training():
    factors, images = drawn_faces()
    assert StylExRecipe().edit_weight == 0
    with pytest.raises(InputError, match="edit_weight > 0 needs align_map"):
        StylExRecipe(edit_weight=1.0)
    with pytest.raises(InputError, match="edit_weight must be >= 0"):
        StylExRecipe(edit_weight=-1.0, align_map="smile=8.conv0:1")
    on = StylExRecipe(batch_size=8, r1_interval=2, edit_weight=1.0, align_map="smile=8.conv0:1;eyeglasses=16.conv0:2")
    plain, edited = tiny_model(), tiny_model()
    off = train_stylex(plain, images, epochs=1, recipe=StylExRecipe(batch_size=8, r1_interval=2), progress=False)
    trained = train_stylex(edited, images, epochs=1, recipe=on, progress=False, face_edits=FaceEdits(factors))
    assert "edit" not in off.history[0]
    assert math.isfinite(trained.history[0]["edit"]) and trained.history[0]["edit_out"] >= 0
    assert not torch.equal(
        plain.generator.layers["8_conv0"].conv.weight, edited.generator.layers["8_conv0"].conv.weight
    )
    with pytest.raises(InputError, match="needs face_edits"):
        train_stylex(tiny_model(), images, epochs=1, recipe=on, progress=False)
    with pytest.raises(InputError, match="factors of the 24 training images"):
        few = FaceEdits({name: value[:10] for name, value in factors.items()})
        train_stylex(tiny_model(), images, epochs=1, recipe=on, progress=False, face_edits=few)


def test_training_with_the_edit_term_resumes_bit_identically(tmp_path, monkeypatch):
    import test_stylex

    factors, images = drawn_faces()
    monkeypatch.setattr(test_stylex, "faces_like", lambda: images)  # the helper trains on these faces
    recipe = StylExRecipe(batch_size=8, r1_interval=2, edit_weight=1.0, align_map="bangs=8.conv1:0")
    history = assert_resumes_bit_identically(tmp_path, recipe, seed=3, face_edits=FaceEdits(factors))
    assert "edit" in history[1]


def test_the_cli_refuses_the_edit_term_on_a_dataset_without_a_renderer(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["train-style", "--dataset", "mnist", "--config", "tiny", "--n-train", "16", "--epochs", "1", "--quiet"]
    code = main([*args, "--set", "edit_weight=1", "--set", "align_map=smile=4.conv0:0", "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 2 and "has no renderer" in error and "Traceback" not in error
    assert not out.exists()


def test_the_smallest_shift_is_a_setting():
    seen = []

    class Recording(PatternEdits):
        def __call__(self, indices, names, amounts, shifts):
            seen.append(amounts.abs())
            return super().__call__(indices, names, amounts, shifts)

    reals = torch.rand(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    edits = Recording(reals)
    plan = parse_alignment("left=s:0;right=s:1", ["s:0", "s:1"], edits.factor_names)
    styles = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    decode = lambda s: s.repeat(1, 24).view(-1, 3, 4, 4)  # noqa: E731
    for low in (1.0, 2.0):
        edit_loss(decode, styles, reals, edits, torch.arange(16), plan, torch.Generator().manual_seed(2), min_shift=low)
    assert seen[0].min() < 2 / 3 <= seen[1].min() and seen[1].max() <= 1  # amounts are delta / 3
    assert StylExRecipe(edit_min_shift=2.0).edit_min_shift == 2.0
    for bad in (0.0, 3.5):
        with pytest.raises(InputError, match=r"edit_min_shift must be in \(0, 3\]"):
            StylExRecipe(edit_min_shift=bad)


def test_the_ring_term_charges_what_spills_around_the_true_change():
    reals = torch.rand(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    edits = PatternEdits(reals)
    plan = parse_alignment("right=s:0", ["s:0"], edits.factor_names)
    styles = torch.randn(16, 1, generator=torch.Generator().manual_seed(1))
    std = styles.std(0)

    def drawing(spill: float):  # a +delta std shift draws delta / 3 of the pattern, plus ``spill`` everywhere
        pattern = edits.patterns[1] + spill
        return lambda s: (s[:, :1] / std / 3)[:, :, None, None] * pattern[None]

    def loss(decode, ring_weight):
        rng = torch.Generator().manual_seed(2)
        return edit_loss(decode, styles, reals, edits, torch.arange(16), plan, rng, ring_weight=ring_weight, ring=1)

    exact, terms = loss(drawing(0.0), 1.0)
    assert float(exact) < 1e-6 and terms["edit_ring"] < 1e-6
    plain, _ = loss(drawing(0.2), 0.0)
    ringed, terms = loss(drawing(0.2), 3.0)
    assert terms["edit_ring"] > 0.01 and "edit_ring" not in loss(drawing(0.2), 0.0)[1]
    torch.testing.assert_close(ringed, plain + 3.0 * terms["edit_ring"])


def test_the_ring_needs_the_edit_term_and_a_width():
    with pytest.raises(InputError, match="edit_ring_weight extends the edit term"):
        StylExRecipe(edit_ring_weight=1.0)
    with pytest.raises(InputError, match="edit_ring must be >= 1"):
        StylExRecipe(edit_ring=0)
    with pytest.raises(InputError, match="edit_ring_weight must be >= 0"):
        StylExRecipe(edit_ring_weight=-1.0)


def test_the_encoders_share_of_the_edit_gradient():
    from vcex.models.stylex import _edit_plan, _encoder_losses, new_state

    factors, images = drawn_faces(8)
    pairs = "smile=8.conv0:1;eyeglasses=16.conv0:2"

    def encoder_gradient(recipe: StylExRecipe) -> list[torch.Tensor]:
        state = new_state(tiny_model(), recipe, seed=0)
        edit = _edit_plan(state.model, FaceEdits(factors), images, recipe) if recipe.edit_weight else None
        loss, _, _ = _encoder_losses(state, images, None, None, None, recipe, False, edit=edit, indices=torch.arange(8))
        loss.backward()
        return [p.grad.clone() for p in state.model.encoder.parameters()]

    base = {"batch_size": 8, "align_map": pairs, "align_images": 8}
    without = encoder_gradient(StylExRecipe(**base))
    for share, same in ((0.0, True), (1.0, False)):
        with_edit = encoder_gradient(StylExRecipe(**base, edit_weight=10.0, edit_encoder_share=share))
        assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(with_edit, without)) == same
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match=r"edit_encoder_share must be in \[0, 1\]"):
            StylExRecipe(**base, edit_weight=1.0, edit_encoder_share=bad)


def test_the_details_are_the_renderers_mouth_eyes_and_brows():
    from vcex.data.synthetic_faces import face_regions

    factors, _ = drawn_faces(6)
    details = FaceEdits(factors).details(torch.tensor([4, 1]))
    regions = face_regions({name: value[[4, 1]] for name, value in factors.items()}, size=32)
    assert details.shape == (2, 32, 32) and details.dtype == torch.bool
    assert torch.equal(details, regions["mouth"] + regions["eyes"] + regions["eyebrows"] >= 0.25)
    assert 20 < int(details[0].sum()) < 200  # a few dozen pixels of a 1,024-pixel face


def test_the_details_term_charges_changes_to_the_details_the_edit_leaves_alone():
    reals = torch.rand(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    class DetailedEdits(PatternEdits):
        def details(self, indices):  # the bottom-left corner, which the "right" pattern never touches
            mask = torch.zeros(len(indices), 4, 4, dtype=torch.bool)
            mask[:, 3, 0] = True
            return mask

    edits = DetailedEdits(reals)
    plan = parse_alignment("right=s:0", ["s:0"], edits.factor_names)
    styles = torch.randn(16, 1, generator=torch.Generator().manual_seed(1))
    std = styles.std(0)

    def drawing(spill: float):
        pattern = edits.patterns[1].clone()
        pattern[:, 3, 0] += spill
        return lambda s: (s[:, :1] / std / 3)[:, :, None, None] * pattern[None]

    def loss(decode, weight, edits=edits):
        rng = torch.Generator().manual_seed(2)
        return edit_loss(decode, styles, reals, edits, torch.arange(16), plan, rng, detail_weight=weight)

    exact, terms = loss(drawing(0.0), 1.0)
    assert float(exact) < 1e-6 and terms["edit_details"] < 1e-6
    plain, _ = loss(drawing(0.3), 0.0)
    weighted, terms = loss(drawing(0.3), 2.0)
    assert terms["edit_details"] > 0.1
    torch.testing.assert_close(weighted, plain + 2.0 * terms["edit_details"])
    with pytest.raises(InputError, match="detail_weight needs edits with details"):
        loss(drawing(0.3), 1.0, edits=PatternEdits(reals))
    with pytest.raises(InputError, match="edit_detail_weight extends the edit term"):
        StylExRecipe(edit_detail_weight=1.0)
