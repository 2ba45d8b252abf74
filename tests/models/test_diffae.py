"""Tests for the diffusion autoencoder: shapes, DDIM inversion, determinism, batching, gradients, errors, the zoo."""

from __future__ import annotations

import pytest
import torch

from vcex.errors import InputError
from vcex.models import load_latent_model, load_model, model_names, model_spec, zoo
from vcex.models.diffae import (
    DIFFAE_RECIPES,
    DiffAEConfig,
    DiffAERecipe,
    DiffusionAutoencoder,
    reconstruction_figures,
    train_diffae,
)
from vcex.models.latent import LatentModel
from vcex.models.stylegan import psnr

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def untrained() -> DiffusionAutoencoder:
    torch.manual_seed(0)
    return DiffusionAutoencoder(DiffAEConfig.tiny(decode_steps=4)).eval()


@pytest.fixture(scope="module")
def overfitted(mnist_small) -> tuple[DiffusionAutoencoder, torch.Tensor]:
    """The tiny model overfitted to 8 training digits (~4 s of CPU on one thread)."""
    images = mnist_small[0][:8]
    torch.manual_seed(0)
    model = DiffusionAutoencoder(DiffAEConfig.tiny())
    train_diffae(model, images, epochs=60, batch_size=8, lr=3e-3, progress=False)
    return model, images


@pytest.mark.parametrize("n", [1, 3])
def test_shapes_and_range(untrained: DiffusionAutoencoder, n: int) -> None:
    images = torch.rand(n, 1, 28, 28)
    latents = untrained.encode(images)
    assert latents.shape == (n, 8)
    x_T = untrained.encode_stochastic(images, latents)
    assert x_T.shape == (n, 1, 28, 28)
    decoded = untrained.decode(latents, x_T=x_T)
    assert decoded.shape == (n, 1, 28, 28) and 0 <= decoded.min() and decoded.max() <= 1
    assert isinstance(untrained, LatentModel)
    assert untrained.latent_radius is None  # not measured before training


def test_padding_to_the_unets_levels_is_cropped_back() -> None:
    model = DiffusionAutoencoder(DiffAEConfig.tiny(channels=3, image_size=30, channel_mults=(1, 2, 2))).eval()
    assert model.config.padded_size == 32
    images = torch.rand(2, 3, 30, 30)
    assert model.encode_stochastic(images).shape == (2, 3, 32, 32)
    assert model.decode(model.encode(images), steps=2).shape == (2, 3, 30, 30)


def test_ddim_timesteps_span_the_training_steps(untrained: DiffusionAutoencoder) -> None:
    assert untrained.ddim_timesteps(4) == [0, 333, 666, 999]
    assert untrained.ddim_timesteps(1) == [0]


def test_inversion_then_decoding_reconstructs_the_training_images(overfitted) -> None:
    model, images = overfitted
    with torch.no_grad():
        latents = model.encode(images)
        x_T = model.encode_stochastic(images, latents, steps=20)
        inverted = model.decode(latents, x_T=x_T, steps=20)
        # the same z_sem from another x_T: what a wrong or skipped inversion would give
        other = model.decode(latents, x_T=torch.randn(x_T.shape, generator=torch.Generator().manual_seed(5)), steps=20)
    assert float(psnr(inverted, images).mean()) > 25.0
    assert float((inverted - images).abs().mean()) < 0.03
    assert float(psnr(other, images).mean()) < 20.0
    figures = reconstruction_figures(model, images, steps=20)
    assert figures["inverted_psnr"] == pytest.approx(float(psnr(inverted, images).mean()), abs=0.01)
    assert model.latent_radius == pytest.approx(float(latents.norm(dim=1).max()), rel=1e-5)


def test_decode_is_deterministic_for_a_fixed_x_T(untrained: DiffusionAutoencoder) -> None:
    latents = torch.randn(3, 8)
    x_T = torch.randn(3, 1, 28, 28)
    assert torch.equal(untrained.decode(latents, x_T=x_T), untrained.decode(latents, x_T=x_T))
    # without x_T: the fixed seeded noise, the same for every call and every image of the batch
    assert torch.equal(untrained.decode(latents), untrained.decode(latents, x_T=untrained.fixed_noise))
    assert torch.equal(DiffusionAutoencoder(untrained.config).fixed_noise, untrained.fixed_noise)


def test_batched_decode_and_inversion_equal_per_image(untrained: DiffusionAutoencoder) -> None:
    images = torch.rand(4, 1, 28, 28)
    latents = untrained.encode(images)
    x_T = untrained.encode_stochastic(images, latents)
    singles = torch.cat([untrained.encode_stochastic(images[i : i + 1], latents[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(x_T, singles, atol=1e-5, rtol=1e-5)
    batched = untrained.decode(latents, x_T=x_T)
    one_by_one = torch.cat([untrained.decode(latents[i : i + 1], x_T=x_T[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_latents_through_ddim(overfitted) -> None:
    model, images = overfitted
    latents = model.encode(images[:2]).detach().requires_grad_(True)
    model.decode(latents, steps=5).sum().backward()
    assert latents.grad is not None and torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0


def test_reconstruct_leaves_the_models_mode_and_parameters_as_they_were(untrained: DiffusionAutoencoder) -> None:
    model = DiffusionAutoencoder(untrained.config).train()
    model.unet.output.requires_grad_(False)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.reconstruct(torch.rand(2, 1, 28, 28), steps=2)
    assert model.training and all(m.training for m in model.modules())
    assert not model.unet.output[-1].weight.requires_grad and model.unet.input.weight.requires_grad
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.encode(torch.rand(2, 3, 28, 28)), r"images of shape \(N, 1, 28, 28\), got \(2, 3, 28, 28\)"),
        (lambda m: m.encode(torch.rand(0, 1, 28, 28)), "empty batch"),
        (lambda m: m.encode(torch.full((1, 1, 28, 28), float("nan"))), "NaN"),
        (lambda m: m.decode(torch.rand(2, 5)), r"latents of shape \(N >= 1, 8\), got \(2, 5\)"),
        (lambda m: m.decode(torch.rand(2, 8), x_T=torch.rand(3, 1, 28, 28)), r"x_T must have shape \(2 or 1, 1, 28"),
        (lambda m: m.decode(torch.rand(2, 8), steps=0), "DDIM steps must be an integer in 1..1000"),
        (lambda m: m.decode(torch.rand(2, 8), steps=2.5), "DDIM steps"),
        (lambda m: m.encode_stochastic(torch.rand(2, 1, 28, 28), torch.rand(3, 8)), "2 images but 3 latents"),
        (lambda m: DiffAEConfig(decode_steps=0), "decode_steps must be in 1..1000"),
        (lambda m: DiffAEConfig(base_channels=12), "multiple of groups=8"),
    ],
)
def test_bad_input_gets_one_clear_line(untrained: DiffusionAutoencoder, call, message: str) -> None:
    with pytest.raises(InputError, match=message) as raised:
        call(untrained)
    assert "\n" not in str(raised.value)


def test_the_attack_runs_on_it(overfitted, tiny_classifier) -> None:
    from vcex import CounterfactualAttack

    model, images = overfitted
    attack = CounterfactualAttack(tiny_classifier, model, max_steps=2)
    result = attack.explain(images[:2], target=torch.tensor([3, 5]))
    assert result.counterfactuals.shape == (2, 1, 28, 28) and result.counterfactual_latents.shape == (2, 8)
    moved = (result.counterfactual_latents - result.original_latents).norm(dim=1) > 0
    assert torch.equal(moved, result.steps > 0)


def test_the_zoo_trains_caches_and_loads_it(monkeypatch) -> None:
    monkeypatch.setitem(
        DIFFAE_RECIPES, "mnist", DiffAERecipe(DiffAEConfig.tiny(decode_steps=3), epochs=1, batch_size=256)
    )
    monkeypatch.setattr(zoo, "DIFFAE_TEST_IMAGES", 4)
    assert {"mnist-diffae", "faces-diffae"} <= set(model_names())
    model = load_latent_model("mnist-diffae", progress=False)
    record = model.training_record
    assert isinstance(model, DiffusionAutoencoder) and record["role"] == "diffae" and record["config"]["epochs"] == 1
    assert record["latent_radius"] > 0 and "test_inverted_psnr" in record and "test_fixed_noise_l1" in record
    assert model_spec("mnist-diffae").path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("should load from the cache, not train")

    monkeypatch.setattr(zoo, "train_diffae", no_training)
    again = load_model("mnist-diffae", progress=False)
    latents = torch.randn(2, 8)
    assert torch.equal(again.decode(latents), model.decode(latents)) and again.latent_radius == model.latent_radius
    faces = model_spec("faces-diffae")
    assert faces.dataset == "faces" and faces.config["channels"] == 3 and faces.config["latent_dim"] == 64
