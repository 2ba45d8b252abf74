import math

import pytest
import torch

from vcex.errors import InputError
from vcex.evaluation import flip_rate_curve, sufficiency_curve


class IdentityLatent:
    """Latents are the pixels: moving z by a step moves the image by the same step."""

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.view(-1, 1, 1, self.size)


def linear(weight, bias=None):
    """A linear classifier on the flattened image: logits = x W^T + b."""
    weight = torch.tensor(weight)
    bias = torch.zeros(len(weight)) if bias is None else torch.tensor(bias)
    return lambda images: images.flatten(1) @ weight.T + bias


def pixels(*rows):
    return torch.tensor(rows).view(len(rows), 1, 1, -1)


def test_flip_rate_of_a_binary_linear_classifier():
    # class 1 when x0 > 0; three images start in class 0 at x0 = -1, -2, -3, one is already class 1
    classifier = linear([[0.0, 0.0], [1.0, 0.0]])
    images = pixels([-1.0, 5.0], [-2.0, 0.0], [-3.0, 1.0], [0.5, 0.0])
    curve = flip_rate_curve(classifier, IdentityLatent(2), images, torch.tensor([1.0, 0.0]), [0, 1.5, 2.5, 3.5], 1)
    assert curve["kept"].tolist() == [True, True, True, False]
    assert torch.allclose(curve["flip_rate"], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    assert torch.allclose(curve["reached"], curve["flip_rate"])
    assert curve["smallest_step"][:3].tolist() == [1.5, 2.5, 3.5]
    assert math.isnan(curve["smallest_step"][3])
    assert curve["flipped"].shape == (4, 4)


def test_overshooting_into_a_third_class_is_not_a_flip_but_stays_reached():
    # logits (-x, 1, x): class 0 below -1, class 1 in (-1, 1), class 2 above 1
    classifier = linear([[-1.0], [0.0], [1.0]], [0.0, 1.0, 0.0])
    images = pixels([-2.0])
    curve = flip_rate_curve(classifier, IdentityLatent(1), images, torch.tensor([1.0]), [0.5, 2.0, 4.0], target=1)
    assert curve["flip_rate"].tolist() == [0.0, 1.0, 0.0]
    assert curve["reached"].tolist() == [0.0, 1.0, 1.0]
    # without a target, leaving class 0 counts, so the overshoot is a flip too
    untargeted = flip_rate_curve(classifier, IdentityLatent(1), images, torch.tensor([1.0]), [0.5, 2.0, 4.0])
    assert untargeted["flip_rate"].tolist() == [0.0, 1.0, 1.0]


def test_reached_orders_steps_by_magnitude():
    classifier = linear([[0.0], [1.0]])
    images = pixels([-1.0], [-3.0])
    curve = flip_rate_curve(classifier, IdentityLatent(1), images, torch.tensor([1.0]), [-3.5, 0.0, 1.5], 1)
    assert curve["flip_rate"].tolist() == [0.0, 0.0, 0.5]
    assert curve["reached"].tolist() == [0.5, 0.0, 0.5]  # by |step|: 0 -> none, 1.5 -> one, 3.5 -> still one


def test_threshold_needs_the_target_probability():
    # p(class 1) = sigmoid(x0) >= 0.9 needs x0 >= log 9 = 2.197
    classifier = linear([[0.0], [1.0]])
    curve = flip_rate_curve(
        classifier, IdentityLatent(1), pixels([-1.0]), torch.tensor([1.0]), [1.5, 3.0, 3.3], 1, threshold=0.9
    )
    assert curve["flip_rate"].tolist() == [0.0, 0.0, 1.0]
    away = flip_rate_curve(
        classifier, IdentityLatent(1), pixels([-1.0]), torch.tensor([1.0]), [3.0, 3.3], threshold=0.9
    )
    assert away["flip_rate"].tolist() == [0.0, 1.0]


def test_one_direction_per_class_and_batching():
    # class k wins when x_k > 0 (class 0's logit is 0): each image moves along its own target's axis
    classifier = linear([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    images = pixels([-1.0, -1.0], [-1.0, -3.0], [-2.0, -2.0])
    directions = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([1, 2, 2])
    curve = flip_rate_curve(classifier, IdentityLatent(2), images, directions, [1.5, 2.5, 3.5], target, batch_size=2)
    assert curve["flipped"].tolist() == [[True, True, True], [False, False, True], [False, True, True]]
    with pytest.raises(InputError, match="needs a target"):
        flip_rate_curve(classifier, IdentityLatent(2), images, directions, [1.0])


def test_sufficiency_counts_directions_applied_together():
    # class 1 when x0 + x1 + x2 > 2.5: from 0 it takes all three unit directions, from 1 two
    classifier = linear([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], [0.0, -2.5])
    images = pixels([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0])
    curve = sufficiency_curve(classifier, IdentityLatent(3), images, torch.eye(3), target=1)
    assert curve["k"].tolist() == [1, 2, 3]
    assert torch.allclose(curve["sufficiency"], torch.tensor([0.0, 1 / 3, 1.0]))
    scaled = sufficiency_curve(classifier, IdentityLatent(3), images, torch.eye(3), target=1, step=[2.25, 0.0, 0.0])
    assert torch.allclose(scaled["sufficiency"], torch.tensor([2 / 3, 2 / 3, 2 / 3]))


def test_sufficiency_with_ranked_lists_per_class():
    classifier = linear([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    images = pixels([-0.5, -0.5], [-0.5, -0.5])
    ranked = torch.zeros(3, 2, 2)
    ranked[1] = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # class 1: two pushes along x0
    ranked[2] = torch.tensor([[0.0, -1.0], [0.0, 1.0]])  # class 2: away, then back
    curve = sufficiency_curve(classifier, IdentityLatent(2), images, ranked, target=torch.tensor([1, 2]), step=0.75)
    assert curve["flipped"].tolist() == [[True, True], [False, False]]


def test_bad_inputs_are_refused():
    classifier = linear([[0.0], [1.0]])
    latent = IdentityLatent(1)
    with pytest.raises(InputError, match="do not match"):
        flip_rate_curve(classifier, latent, pixels([-1.0]), torch.ones(2, 2, 2), [1.0], 1)
    with pytest.raises(InputError, match="already predicted"):
        flip_rate_curve(classifier, latent, pixels([1.0]), torch.ones(1), [1.0], 1)
    with pytest.raises(InputError, match="steps"):
        flip_rate_curve(classifier, latent, pixels([-1.0]), torch.ones(1), [], 1)
    with pytest.raises(InputError, match="non-empty"):
        flip_rate_curve(classifier, latent, torch.zeros(0, 1, 1, 1), torch.ones(1), [1.0], 1)
    with pytest.raises(InputError, match="targets must lie"):
        flip_rate_curve(classifier, latent, pixels([-1.0]), torch.ones(1), [1.0], 5)
    with pytest.raises(InputError, match="encode"):
        flip_rate_curve(classifier, object(), pixels([-1.0]), torch.ones(1), [1.0], 1)
    with pytest.raises(InputError, match="step must be"):
        sufficiency_curve(classifier, latent, pixels([-1.0]), torch.ones(2, 1), 1, step=[1.0, 2.0, 3.0])
