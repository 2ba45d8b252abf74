import pytest
import torch

from vcex.checks import check_images, short_list
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
