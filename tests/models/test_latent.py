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


class MeanLogVarVAE(torch.nn.Module):
    """A VAE-like model whose encode returns (mean, log-variance), as many VAEs do: the tiny VAE's own."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.latent_dim = vae.latent_dim

    def encode(self, images):
        return self.vae.encode_distribution(images)

    def decode(self, latents):
        return self.vae.decode(latents)


def test_an_encoder_returning_mean_and_log_variance_is_attacked_on_its_mean(tiny_classifier, tiny_vae, mnist_small):
    from vcex import CounterfactualAttack

    _, _, images, _ = mnist_small
    images = images[:6]
    model = MeanLogVarVAE(tiny_vae).eval()
    # unbounded: this wrapper declares no latent radius, the VAE does, and the test compares the two
    attack = CounterfactualAttack(tiny_classifier, model, threshold=0.9, max_steps=300, latent_bound=None)
    with pytest.warns(UserWarning, match="encode\\(\\) returns a tuple of 2 .*first element is taken as the latent"):
        result = attack.explain(images)
    plain = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.9, max_steps=300, latent_bound=None)
    plain = plain.explain(images)
    assert torch.equal(result.original_latents, plain.original_latents) and result.original_latents.shape == (6, 8)
    assert torch.equal(result.success, plain.success) and result.validity >= 0.5
    assert attack.latent_model.latent_dim == 8  # the wrapped model's own attributes are there
    assert not model.training  # its mode is restored, not the wrapper's default


def test_the_wrapper_keeps_each_mode_of_the_model_and_warns_once(tiny_vae):
    model = MeanLogVarVAE(tiny_vae)
    model.train()
    wrapped = as_latent_model(model)
    assert wrapped.training and as_latent_model(wrapped) is wrapped
    wrapped.eval()
    assert not model.training and not wrapped.training
    model.train()  # changed by its owner afterwards: the wrapper reads it, not a copy
    assert wrapped.training
    model.eval()
    with pytest.warns(UserWarning, match="first element"):
        wrapped.encode(torch.rand(2, 1, 28, 28))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wrapped.encode(torch.rand(3, 1, 28, 28)).shape == (3, 8)
    assert as_latent_model(tiny_vae) is tiny_vae  # vcex's own models are used as they are


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (lambda x: {"mean": x.flatten(1)}, "returned a dict"),
        (lambda x: x.flatten(1)[:1], r"returned a tensor of shape \(1, 16\) for 2 images"),
        (lambda x: (x.flatten(1)[:1], x), r"returned a tuple of 2 \(a tensor of shape \(1, 16\)"),
        (lambda x: (), "returned a tuple of 0"),
        (lambda x: None, "returned a NoneType"),
    ],
)
def test_an_unusable_encoder_output_is_refused_with_the_reason(encoded, message):
    from vcex.errors import ModelError

    class Odd:
        def encode(self, images):
            return encoded(images)

        def decode(self, latents):
            return latents

    with pytest.raises(ModelError, match=message):
        as_latent_model(Odd()).encode(torch.rand(2, 1, 4, 4))
