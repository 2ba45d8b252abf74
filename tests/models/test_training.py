"""Augmentations in vcex.models.training: shapes, identities and known answers."""

import pytest
import torch

from vcex.models.training import fit, gaussian_blur, random_blur


def test_zero_sigma_is_the_identity() -> None:
    images = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(gaussian_blur(images, 0.0), images)


def test_blur_keeps_constant_images_and_their_mean() -> None:
    constant = torch.full((2, 3, 8, 8), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, 1.0), constant)
    images = torch.rand(2, 1, 16, 16)
    blurred = gaussian_blur(images, 0.8)
    # replicated edges change the mean a little; the interior's mass is conserved
    assert blurred.std() < images.std()
    assert abs(float(blurred.mean() - images.mean())) < 0.02


def test_blur_spreads_a_point_by_the_gaussian() -> None:
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0
    out = gaussian_blur(image, 1.0)[0, 0]
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    # separable Gaussian: the ratio of a direct neighbour to the centre is exp(-1 / (2 sigma^2))
    assert float(out[4, 5] / out[4, 4]) == pytest.approx(torch.exp(torch.tensor(-0.5)).item(), rel=1e-4)
    torch.testing.assert_close(out, out.t())


def test_per_image_sigmas() -> None:
    images = torch.rand(2, 3, 8, 8)
    out = gaussian_blur(images, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[0], images[0])
    torch.testing.assert_close(out[1:], gaussian_blur(images[1:], 1.0))


def test_random_blur_leaves_a_share_sharp_and_is_seeded() -> None:
    images = torch.rand(200, 1, 8, 8)
    out = random_blur(images, 1.2, torch.Generator().manual_seed(0))
    sharp = (out == images).flatten(1).all(1).float().mean()
    assert 0.35 < float(sharp) < 0.65
    torch.testing.assert_close(out, random_blur(images, 1.2, torch.Generator().manual_seed(0)))
    assert random_blur(images, 0.0, torch.Generator()) is images


def test_fit_on_an_explicit_device_equals_the_default() -> None:
    images, labels = torch.rand(40, 1, 8, 8), torch.randint(0, 2, (40,))

    def trained(**device: object) -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        loss = lambda x, y, _g: torch.nn.functional.cross_entropy(model(x), y)  # noqa: E731
        return fit(model, loss, images, labels, epochs=2, batch_size=8, progress=False, **device)

    default, placed = trained(), trained(device="cpu")
    for name, tensor in default.state_dict().items():
        assert torch.equal(placed.state_dict()[name], tensor), name
    assert not placed.training
