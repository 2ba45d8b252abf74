import pytest
import torch

from vcex.errors import InputError
from vcex.models import VAE, ClassAutoencoders, as_latent_model


@pytest.mark.parametrize("batch", [1, 4])
def test_vae_shapes_and_range(batch):
    vae = VAE(latent_dim=6, width=8).eval()
    images = torch.rand(batch, 1, 28, 28)
    with torch.no_grad():
        latents = vae.encode(images)
        decoded = vae.decode(latents)
    assert latents.shape == (batch, 6) and decoded.shape == images.shape
    assert float(decoded.min()) >= 0 and float(decoded.max()) <= 1
    assert vae.loss(images).dim() == 0


def test_vae_decoder_is_differentiable_in_the_latent():
    vae = VAE(latent_dim=4, width=8).double()
    latents = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: vae.decode(z).sum(dim=(1, 2, 3)), (latents,), eps=1e-6, atol=1e-4)


def test_trained_vae_reconstructs(tiny_vae, mnist_small):
    _, _, test_images, _ = mnist_small
    with torch.no_grad():
        error = (tiny_vae.decode(tiny_vae.encode(test_images)) - test_images).pow(2).mean()
    assert float(error) < 0.06  # a blank image scores ~0.1


def test_latent_protocol_accepts_duck_types_and_refuses_others():
    class Duck:
        def encode(self, x):
            return x

        def decode(self, z):
            return z

    assert as_latent_model(Duck())
    with pytest.raises(InputError, match="encode"):
        as_latent_model(object())


def test_class_autoencoders_shapes():
    model = ClassAutoencoders(3, (1, 4, 4), hidden=8, code=2)
    assert model(torch.rand(5, 1, 4, 4)).shape == (5, 4, 1, 4, 4)
