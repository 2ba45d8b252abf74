import pytest
import torch
from torch import nn

from vcex import Classifier, CounterfactualAttack, InputError, PixelAttack, WhitenedLatentModel


class LinearSigmoidLatent(nn.Module):
    """Toy latent model: 6 pixels (1, 2, 3) = sigmoid(z M + b), exactly invertible."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.mixing = nn.Parameter(torch.randn(6, 6, generator=generator) * 0.3 + torch.eye(6), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(6), requires_grad=False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.logit(images.flatten(1).clamp(1e-5, 1 - 1e-5)) - self.bias
        return torch.linalg.solve(self.mixing.T, logits.T).T

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(latents @ self.mixing + self.bias).view(-1, 1, 2, 3)


def data_latents(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents that vary along 2 of 6 directions (spread 1.5) and barely along the others (0.01)."""
    generator = torch.Generator().manual_seed(1)
    directions = torch.linalg.qr(torch.randn(6, 2, generator=generator)).Q  # (6, 2) orthonormal
    latents = 1.5 * torch.randn(n, 2, generator=generator) @ directions.T
    return latents + 0.01 * torch.randn(n, 6, generator=generator), directions


def test_whitened_coordinates_of_the_fitting_data_are_standard():
    base = LinearSigmoidLatent()
    latents, _ = data_latents()
    whitened = WhitenedLatentModel.from_latents(base, latents)
    coordinates = whitened.from_base(latents)
    assert coordinates.mean(0).abs().max() < 1e-4
    covariance = coordinates.T @ coordinates / (len(coordinates) - 1)
    assert torch.allclose(covariance, torch.eye(6), atol=1e-3)
    assert torch.allclose(whitened.to_base(coordinates), latents, atol=1e-4)
    assert whitened.scale[0] > 1.0 > 0.05 > whitened.scale[-1]  # largest spread first


def test_fit_encodes_images_and_decode_inverts_encode():
    base = LinearSigmoidLatent()
    latents, _ = data_latents()
    images = base.decode(latents)
    whitened = WhitenedLatentModel.fit(base, images, batch_size=64)
    assert whitened.encode(images).shape == (len(images), 6)
    assert torch.allclose(whitened.decode(whitened.encode(images[:8])), images[:8], atol=1e-4)


def test_multi_dimensional_latents_come_back_in_their_shape():
    base = LinearSigmoidLatent()
    latents = torch.randn(50, 2, 3)
    whitened = WhitenedLatentModel.from_latents(base, latents)
    assert whitened.to_base(whitened.from_base(latents)).shape == (50, 2, 3)
    assert torch.allclose(whitened.to_base(whitened.from_base(latents)), latents, atol=1e-4)


def test_the_attack_in_whitened_coordinates_stays_where_the_data_varies():
    """Adam's equal steps in raw latents spread the change over every direction; whitened, it follows the data."""
    base = LinearSigmoidLatent()
    latents, directions = data_latents()
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(6, generator=generator)
    classifier = Classifier(lambda x: torch.stack([torch.zeros(len(x)), 10 * (x.flatten(1) - 0.5) @ weight], 1))
    images = base.decode(latents[:40])
    negatives = images[classifier(images).argmax(1) == 0]
    assert len(negatives) >= 5

    def share_along_data(model: nn.Module, lr: float) -> tuple[float, float]:
        result = CounterfactualAttack(classifier, model, lr=lr, max_steps=300).explain(negatives, target=1)
        change = base.encode(result.counterfactuals) - base.encode(result.originals)
        share = (change @ directions).pow(2).sum(1) / change.pow(2).sum(1)
        return float(share.mean()), float(result.success.float().mean())

    raw_share, raw_valid = share_along_data(base, lr=0.05)
    whitened_share, whitened_valid = share_along_data(WhitenedLatentModel.from_latents(base, latents), lr=0.05)
    assert raw_valid == 1.0 and whitened_valid == 1.0
    assert whitened_share > 0.95
    assert raw_share < whitened_share - 0.3


def test_bad_input_is_refused_with_a_clear_error():
    base = LinearSigmoidLatent()
    with pytest.raises(InputError, match="at least 2"):
        WhitenedLatentModel.from_latents(base, torch.randn(1, 6))
    with pytest.raises(InputError, match="NaN"):
        WhitenedLatentModel.from_latents(base, torch.full((4, 6), float("nan")))
    with pytest.raises(InputError, match="identical"):
        WhitenedLatentModel.from_latents(base, torch.ones(4, 6))
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        WhitenedLatentModel.fit(base, torch.rand(4, 6))
    with pytest.raises(InputError, match="encode"):
        WhitenedLatentModel.from_latents(object(), torch.randn(4, 6))
    whitened = WhitenedLatentModel.from_latents(base, torch.randn(20, 6))
    with pytest.raises(InputError, match=r"\(N, 6\)"):
        whitened.decode(torch.randn(3, 5))


def test_a_result_maps_back_to_the_wrapped_models_latents():
    base = LinearSigmoidLatent()
    latents, _ = data_latents()
    whitened = WhitenedLatentModel.from_latents(base, latents)
    classifier = Classifier(lambda x: torch.stack([torch.zeros(len(x)), 10 * (x.flatten(1) - 0.5).sum(1)], 1))
    images = base.decode(latents[:6])
    result = CounterfactualAttack(classifier, whitened, lr=0.1, max_steps=50).explain(images, target="flip")
    in_base = whitened.to_base_result(result)
    assert torch.allclose(base.decode(in_base.counterfactual_latents), result.counterfactuals, atol=1e-4)
    assert torch.allclose(in_base.original_latents, base.encode(images), atol=1e-3)
    assert torch.equal(in_base.counterfactuals, result.counterfactuals)
    pixel = PixelAttack(classifier, max_steps=5).explain(images, target="flip")
    with pytest.raises(InputError, match="no latents"):
        whitened.to_base_result(pixel)
