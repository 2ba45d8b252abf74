import pytest
import torch

from vcex.checks import check_count, check_images, check_positive_finite, short_list
from vcex.errors import InputError


def test_accepts_valid_batch_and_returns_float32():
    images = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    out = check_images(images, channels=1, size=(28, 28))
    assert out.dtype == torch.float32 and out.shape == (3, 1, 28, 28)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(1, 28, 28), "add a batch dimension"),
        (torch.rand(2, 3, 28, 28), "1 channel"),
        (torch.rand(2, 1, 32, 32), "28x28"),
        (torch.rand(0, 1, 28, 28), "empty batch"),
        (torch.rand(2, 1, 28, 28) * 255, "divide by 255"),
        (torch.full((2, 1, 28, 28), float("nan")), "NaN"),
        ((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8), "uint8"),
        (torch.ones(2, 1, 28, 28, dtype=torch.long), "floating-point"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_images_get_a_clear_error(images, message):
    with pytest.raises(InputError, match=message):
        check_images(images, channels=1, size=(28, 28))


def test_short_list_truncates():
    assert short_list(list(range(3))) == "0, 1, 2"
    assert "(20 in all)" in short_list(list(range(20)))


@pytest.mark.parametrize("value", [0.1, 3, torch.tensor(0.5)])
def test_positive_finite_numbers_pass_as_floats(value):
    assert check_positive_finite("lr", value) == pytest.approx(float(value))
    assert isinstance(check_positive_finite("lr", value), float)


@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan"), float("inf"), -float("inf"), True, "0.1", None])
def test_learning_rates_that_are_not_positive_and_finite_are_refused(value):
    with pytest.raises(InputError, match="lr must be a positive finite number"):
        check_positive_finite("lr", value)


def test_counts_are_whole_numbers_at_or_above_their_minimum():
    assert check_count("max_steps", 0) == 0 and check_count("batch_size", 4.0, 1) == 4
    with pytest.raises(InputError, match="max_steps must be >= 0, got -1"):
        check_count("max_steps", -1)
    with pytest.raises(InputError, match="batch_size must be >= 1, got 0"):
        check_count("batch_size", 0, 1)
    for value in (2.5, float("nan"), float("inf"), True, "3"):
        with pytest.raises(InputError, match="must be a whole number"):
            check_count("max_steps", value)
