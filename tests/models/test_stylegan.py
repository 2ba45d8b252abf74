"""Tests for the StyleGAN2-like autoencoder: shapes, StyleSpace bookkeeping, demodulation, training, errors."""

from __future__ import annotations

import pytest
import torch

from vcex.cache import load_weights, save_weights
from vcex.errors import CacheError, InputError
from vcex.models.latent import LatentModel
from vcex.models.stylegan import (
    ModulatedConv2d,
    StyleAutoencoder,
    StyleDiscriminator,
    StyleGenerator,
    StyleGeneratorConfig,
    train_style_autoencoder,
)

TINY = StyleGeneratorConfig(image_size=16, w_dim=16, base_channels=4, max_channels=8, mapping_layers=2)


@pytest.fixture(scope="module")
def model() -> StyleAutoencoder:
    torch.manual_seed(0)
    return StyleAutoencoder(TINY).eval()


@pytest.mark.parametrize("n", [1, 5])
def test_shapes(model: StyleAutoencoder, n: int) -> None:
    images = torch.rand(n, 3, 16, 16)
    w = model.encode(images)
    assert w.shape == (n, TINY.w_dim)
    s = model.styles(w)
    assert s.shape == (n, model.style_dim)
    assert model.decode(w).shape == (n, 3, 16, 16)
    assert model.decode_styles(s).shape == (n, 3, 16, 16)
    assert isinstance(model, LatentModel)


def test_w_plus_encoder_shapes() -> None:
    config = StyleGeneratorConfig(
        image_size=16, w_dim=16, base_channels=4, max_channels=8, mapping_layers=2, w_plus=True
    )
    autoencoder = StyleAutoencoder(config)
    w = autoencoder.encode(torch.rand(2, 3, 16, 16))
    assert w.shape == (2, config.num_ws, 16) and config.num_ws == 9
    assert autoencoder.decode(w).shape == (2, 3, 16, 16)


def test_decode_equals_decode_styles(model: StyleAutoencoder) -> None:
    w = torch.randn(3, TINY.w_dim)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(w), model.decode_styles(model.styles(w)))


def test_w_plus_with_identical_layers_equals_w(model: StyleAutoencoder) -> None:
    w = torch.randn(3, TINY.w_dim)
    w_plus = w.unsqueeze(1).repeat(1, model.num_ws, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(w_plus), model.decode(w))
        # and a W+ code with different per-layer w is honoured
        other = w_plus.clone()
        other[:, 0] += 1.0
        assert not torch.allclose(model.decode(other), model.decode(w))


def test_style_layout_covers_styles(model: StyleAutoencoder) -> None:
    layout = model.style_layout()
    assert len(layout) == model.num_ws == 3 * len(TINY.resolutions)
    position = 0
    for _, offset, length in layout:
        assert offset == position and length > 0
        position += length
    assert position == model.style_dim == model.styles(torch.randn(1, TINY.w_dim)).shape[1]
    conv_only = model.style_layout(include_torgb=False)
    assert len(conv_only) == 2 * len(TINY.resolutions)
    assert all(not name.endswith("torgb") for name, _, _ in conv_only)
    assert int(model.conv_style_mask().sum()) == sum(length for _, _, length in conv_only)


def test_style_slices_match_affine_weights(model: StyleAutoencoder) -> None:
    w = torch.randn(2, TINY.w_dim)
    s = model.styles(w)
    weights = model.affine_weights()
    assert len(weights) == len(model.style_layout()) == model.num_ws
    assert len(model.affine_weights(include_torgb=False)) == 2 * len(TINY.resolutions)
    for (name, offset, length), (weight_name, matrix, bias) in zip(model.style_layout(), weights):
        assert name == weight_name and matrix.shape == (length, TINY.w_dim) and bias.shape == (length,)
        torch.testing.assert_close(s[:, offset : offset + length], w @ matrix.t() + bias)


@pytest.mark.parametrize("fused", [True, False])
def test_demodulation_is_invariant_to_style_scale(fused: bool) -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, demodulate=True)
    conv.fused = fused
    x, style = torch.randn(2, 6, 8, 8), torch.randn(2, 6)
    torch.testing.assert_close(conv(x, 3.7 * style), conv(x, style), rtol=1e-4, atol=1e-5)
    # without demodulation the output scales with the style
    conv.demodulate = False
    torch.testing.assert_close(conv(x, 3.7 * style), 3.7 * conv(x, style), rtol=1e-4, atol=1e-5)


def test_style_scale_invariance_inside_the_generator(model: StyleAutoencoder) -> None:
    s = model.styles(torch.randn(2, TINY.w_dim))
    _, offset, length = model.style_layout()[1]  # a demodulated conv layer
    scaled = s.clone()
    scaled[:, offset : offset + length] *= 2.5
    with torch.no_grad():
        torch.testing.assert_close(model.decode_styles(scaled), model.decode_styles(s), rtol=1e-4, atol=1e-5)


def test_fused_and_unfused_modconv_agree() -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 3, 3)
    x, style = torch.randn(3, 4, 6, 6), torch.randn(3, 4)
    conv.fused = True
    fused = conv(x, style)
    conv.fused = False
    torch.testing.assert_close(conv(x, style), fused, rtol=1e-4, atol=1e-5)


def test_gradient_flows_from_image_to_w(model: StyleAutoencoder) -> None:
    w = torch.randn(2, TINY.w_dim, requires_grad=True)
    model.decode(w).sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0
    s = model.styles(torch.randn(2, TINY.w_dim)).detach().requires_grad_(True)
    model.decode_styles(s).mean().backward()
    assert s.grad.abs().sum() > 0


def test_output_range(model: StyleAutoencoder) -> None:
    with torch.no_grad():
        images = model.decode(10 * torch.randn(4, TINY.w_dim))
        samples = model.generator(torch.randn(4, TINY.w_dim))
    for out in (images, samples):
        assert out.min() >= 0 and out.max() <= 1


def test_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    images = torch.rand(1, 3, 1, 1) * torch.ones(24, 3, 16, 16)  # one flat colour: learnable in a few steps
    images = (images + 0.3 * torch.rand(24, 1, 16, 16)).clamp(0, 1)
    autoencoder = StyleAutoencoder(TINY)
    with torch.no_grad():
        before = float((autoencoder(images[:20]) - images[:20]).abs().mean())
    metrics = train_style_autoencoder(autoencoder, images, epochs=4, batch_size=8, lr=3e-3, progress=False)
    with torch.no_grad():
        after = float((autoencoder(images[:20]) - images[:20]).abs().mean())
    assert after < before
    assert {"loss", "l1", "psnr", "train_psnr", "seconds", "seconds_per_epoch"} <= set(metrics)


def test_generator_lr_sets_the_generators_rate_apart_from_the_encoders() -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 3, 16, 16)
    autoencoder = StyleAutoencoder(TINY)
    generator_before = [p.detach().clone() for p in autoencoder.generator.parameters()]
    encoder_before = [p.detach().clone() for p in autoencoder.encoder.parameters()]
    train_style_autoencoder(autoencoder, images, epochs=1, batch_size=8, lr=3e-3, generator_lr=0.0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(generator_before, autoencoder.generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(encoder_before, autoencoder.encoder.parameters()))


def test_training_with_all_terms_is_deterministic() -> None:
    images = torch.rand(12, 3, 16, 16)

    def features(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1)

    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    results = []
    for _ in range(2):
        torch.manual_seed(1)
        autoencoder = StyleAutoencoder(TINY)
        metrics = train_style_autoencoder(
            autoencoder,
            images,
            epochs=1,
            batch_size=6,
            lr=1e-3,
            perceptual=features,
            adversarial=True,
            r1_gamma=1.0,
            classifier=classifier,
            stylex_weight=1.0,
            progress=False,
            seed=3,
        )
        results.append((metrics["loss"], autoencoder.decode(torch.ones(1, TINY.w_dim))))
    assert results[0][0] == results[1][0]
    torch.testing.assert_close(results[0][1], results[1][1])


def test_discriminator_shape() -> None:
    assert StyleDiscriminator(TINY)(torch.rand(3, 3, 16, 16)).shape == (3,)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 16, 16), (3, 16, 16)])
def test_wrong_images_raise(model: StyleAutoencoder, shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=r"expects images of shape \(N, 3, 16, 16\)"):
        model.encode(torch.rand(*shape))


def test_wrong_latents_raise(model: StyleAutoencoder) -> None:
    with pytest.raises(InputError, match="w must have shape"):
        model.decode(torch.randn(2, TINY.w_dim + 1))
    with pytest.raises(InputError, match="styles must have shape"):
        model.decode_styles(torch.randn(2, 3))


def test_bad_config_raises() -> None:
    with pytest.raises(InputError, match="power of two"):
        StyleGeneratorConfig(image_size=24)


def test_stylex_weight_needs_classifier(model: StyleAutoencoder) -> None:
    with pytest.raises(InputError, match="classifier"):
        train_style_autoencoder(model, torch.rand(4, 3, 16, 16), epochs=1, stylex_weight=1.0, progress=False)


def test_weights_round_trip_and_mismatch(tmp_path, model: StyleAutoencoder) -> None:
    path = save_weights(tmp_path / "ae.safetensors", model.state_dict(), model.record())
    copy = StyleAutoencoder(TINY).load_weights(path).eval()
    w = torch.randn(2, TINY.w_dim)
    with torch.no_grad():
        torch.testing.assert_close(copy.decode(w), model.decode(w))
    wider = StyleAutoencoder(StyleGeneratorConfig(image_size=16, w_dim=16, base_channels=4, max_channels=16))
    with pytest.raises(CacheError, match="do not fit"):
        wider.load_weights(path)
    tensors, _ = load_weights(path)
    with pytest.raises(CacheError, match="shape"):
        StyleAutoencoder(StyleGeneratorConfig(image_size=16, w_dim=8, base_channels=4, max_channels=8)).load_weights(
            tensors
        )


def test_noise_option_changes_samples_only_when_on() -> None:
    torch.manual_seed(0)
    generator = StyleGenerator(
        StyleGeneratorConfig(image_size=8, w_dim=8, base_channels=4, max_channels=4, mapping_layers=1, noise=True)
    )
    for module in generator.modules():
        if hasattr(module, "noise_strength") and module.noise_strength is not None:
            module.noise_strength.data.fill_(1.0)
    w = torch.randn(1, 8)
    with torch.no_grad():
        assert not torch.allclose(generator.decode(w), generator.decode(w))
