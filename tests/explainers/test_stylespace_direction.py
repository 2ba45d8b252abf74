"""Tests for StyleSpaceDirection: on a tiny style generator where one planted StyleSpace coordinate alone makes the
image red and a toy classifier reads redness, the learned sparse direction's top coordinate is the planted one, the
mean difference flips the images, the sweep raises the target probability monotonically, and bad input is refused."""

from __future__ import annotations

import copy

import pytest
import torch
from planted_style import planted_index, planted_model
from torch import nn

from vcex import StyleSpaceDirection
from vcex.errors import InputError
from vcex.models.stylegan import StyleAutoencoder, StyleSpaceModel

pytestmark = pytest.mark.usefixtures("one_thread")


class Redness(nn.Module):
    """Two classes: 1 = redder than ``reference`` (red minus the mean of green and blue), as logits (N, 2)."""

    def __init__(self, reference: float) -> None:
        super().__init__()
        self.reference = reference

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        colour = images.mean(dim=(2, 3))
        red = 200 * (colour[:, 0] - colour[:, 1:].mean(1) - self.reference)
        return torch.stack([torch.zeros_like(red), red], 1)


@pytest.fixture(scope="module")
def toy() -> tuple[StyleAutoencoder, Redness, torch.Tensor, torch.Tensor]:
    """(generator, classifier, 48 training images, 12 test images)."""
    images = torch.rand(60, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model = planted_model(images)
    with torch.no_grad():
        colour = model.decode_styles(model.styles(model.encode(images))).mean(dim=(2, 3))
    redness = colour[:, 0] - colour[:, 1:].mean(1)
    return model, Redness(float(redness.median())), images[:48], images[48:]


def explainer(toy, **options) -> StyleSpaceDirection:
    model, classifier, train, _ = toy
    settings = {"threshold": 0.9, "alpha_max": 4.0, "alpha_steps": 40, **options}
    return StyleSpaceDirection(classifier, model, **settings).fit(train)


def test_the_learned_sparse_directions_top_coordinate_is_the_planted_one(toy):
    model = toy[0]
    fitted = explainer(toy, mode="learned", sparsity=0.02, max_steps=60, lr=0.1)
    result = fitted.explain(toy[3], target="flip")
    for (source, target), direction in fitted.directions.items():
        scaled = (direction / fitted.style_std).abs()
        assert int(scaled.argmax()) == planted_index(model), (source, target)
        assert int((direction != 0).sum()) == max(1, round(0.02 * direction.numel()))
    assert result.validity >= 0.9


def test_the_mean_difference_flips_the_images(toy):
    fitted = explainer(toy, mode="mean")
    result = fitted.explain(toy[3], target="flip")
    assert result.validity >= 0.9
    assert set(fitted.directions) <= {(0, 1), (1, 0)} and len(fitted.directions) == 2
    # the red class's mean code has the larger planted style: the two directions point opposite ways there
    planted = planted_index(toy[0])
    assert fitted.directions[(0, 1)][planted] * fitted.directions[(1, 0)][planted] < 0


def test_a_direction_toward_a_class_starts_from_every_code_outside_it(toy):
    fitted = explainer(toy, mode="mean")
    toward_red = fitted.direction(None, 1)
    assert (-1, 1) in fitted.directions
    # two classes: every code outside class 1 is class 0's, so it is the pair's direction
    torch.testing.assert_close(toward_red, fitted.direction(0, 1))


def test_the_sweep_is_monotone_in_the_target_probability(toy):
    result = explainer(toy, mode="mean").explain(toy[3], target="flip")
    assert result.sequence.shape == (12, 41, 3, 16, 16) and result.sequence_prob.shape == (12, 41)
    assert (result.sequence_prob.diff(dim=1) >= -1e-4).all()
    # the counterfactual is the sweep's first image that passes the threshold
    for row in range(12):
        step = int(result.steps[row])
        assert torch.equal(result.counterfactuals[row], result.sequence[row, step])
        if result.success[row]:
            assert result.sequence_prob[row, step] > 0.9 and (result.sequence_prob[row, :step] <= 0.9).all()


def test_the_models_are_left_as_found(toy):
    model, classifier, train, test = toy
    model = copy.deepcopy(model).train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fitted = StyleSpaceDirection(classifier, model, mode="learned", max_steps=3, threshold=0.9).fit(train)
    fitted.explain(test[:3], target="flip")
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_a_stylespace_model_is_taken_as_it_is(toy):
    model, classifier, train, test = toy
    wrapped = StyleSpaceModel(model)
    assert StyleSpaceDirection(classifier, wrapped, threshold=0.9).latent_model is wrapped


def test_bad_input_is_refused_in_one_line(toy, tiny_vae, tiny_classifier):
    model, classifier, train, test = toy
    with pytest.raises(InputError, match=r"needs a style generator's StyleSpace.*lacks styles\(\)"):
        StyleSpaceDirection(tiny_classifier, tiny_vae)
    with pytest.raises(InputError, match="unknown mode 'median'"):
        StyleSpaceDirection(classifier, model, mode="median")
    for sparsity in (0.0, 1.5, True):
        with pytest.raises(InputError, match="sparsity is the share of coordinates kept"):
            StyleSpaceDirection(classifier, model, sparsity=sparsity)
    with pytest.raises(InputError, match="call .fit"):
        StyleSpaceDirection(classifier, model, threshold=0.9).explain(test[:2], target="flip")
    with pytest.raises(InputError, match="raises a target class"):
        explainer(toy).explain(test[:2], target="flip", lower=True)


def test_a_class_no_training_image_reaches_is_reported_as_such(toy):
    model, classifier, train, test = toy

    class ThreeClasses(nn.Module):  # class 2 is never predicted
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            logits = classifier(images)
            return torch.cat([logits, torch.full_like(logits[:, :1], -100.0)], 1)

    fitted = StyleSpaceDirection(ThreeClasses(), model, threshold=0.9).fit(train)
    with pytest.raises(InputError, match="class 2 cannot be moved toward: the classifier puts no training"):
        fitted.explain(test[:2], target=2)


def test_decodes_all_of_one_class_fall_back_to_the_images_own_classes(toy, monkeypatch):
    model, classifier, train, _ = toy
    direction = StyleSpaceDirection(classifier, model, threshold=0.9)
    # a generator that draws one grey image whatever the code: every decode is "not red"
    monkeypatch.setattr(direction.latent_model, "decode", lambda codes: torch.full((len(codes), 3, 16, 16), 0.5))
    with pytest.warns(UserWarning, match="images' own classes"):
        direction.fit(train)
    with torch.no_grad():
        own = classifier(train).argmax(1)
    assert len(own.unique()) == 2 and torch.equal(direction.labels, own)
