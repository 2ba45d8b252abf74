import pytest
import torch
from torch import nn

from vcex import InputError
from vcex.models.refined import RefinedEncoder


class SloppyEncoder(nn.Module):
    """Toy latent model: images (1, 2, 3) = sigmoid(z M); its encoder returns only half of the right latent."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.mixing = nn.Parameter(torch.randn(4, 6, generator=generator))

    def true_latent(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.logit(images.flatten(1).clamp(1e-5, 1 - 1e-5))
        return torch.linalg.lstsq(self.mixing.T.detach(), logits.T).solution.T

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.true_latent(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(latents @ self.mixing).view(-1, 1, 2, 3)


def images_of(model: SloppyEncoder, n: int = 12) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(torch.randn(n, 4, generator=torch.Generator().manual_seed(1)))


def error(model: nn.Module, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.decode(model.encode(images)) - images).pow(2).mean())


def test_refinement_recovers_what_the_encoder_misses_even_under_no_grad():
    base = SloppyEncoder()
    images = images_of(base)
    refined = RefinedEncoder(base, steps=300, lr=0.05)
    assert error(refined, images) < error(base, images) / 20
    # the model's own parameters are neither trained nor left with gradients, and keep their flags
    assert base.mixing.requires_grad and base.mixing.grad is None


def test_zero_steps_is_the_encoder_and_images_are_refined_independently_of_their_batch():
    base = SloppyEncoder()
    images = images_of(base)
    torch.testing.assert_close(RefinedEncoder(base, steps=0).encode(images), base.encode(images))
    together = RefinedEncoder(base, steps=50, lr=0.05, batch_size=12).encode(images)
    apart = RefinedEncoder(base, steps=50, lr=0.05, batch_size=1).encode(images)
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=0)


def test_bad_arguments_are_refused():
    base = SloppyEncoder()
    with pytest.raises(InputError, match="steps must be >= 0"):
        RefinedEncoder(base, steps=-1)
    with pytest.raises(InputError, match="encode"):
        RefinedEncoder(object())
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        RefinedEncoder(base).encode(torch.rand(2, 6))
