"""A tiny style autoencoder with one planted StyleSpace coordinate that alone makes the image red: shared by the
StyleSpace probe's and StyleSpaceDirection's tests (tests/ is on sys.path, as for user_model_factory)."""

from __future__ import annotations

import torch

from vcex.models.stylegan import StyleAutoencoder, StyleGeneratorConfig

TINY = StyleGeneratorConfig(image_size=16, w_dim=16, base_channels=4, max_channels=8, mapping_layers=2)
PLANTED_CHANNEL = 1  # of the last toRGB layer


def planted_model(images: torch.Tensor) -> StyleAutoencoder:
    """A tiny style autoencoder whose image colour is made by the last toRGB layer alone, where one channel
    writes red only and every other channel writes grey (all colours alike); the planted style is centred
    on ``images`` so their red sits mid-range."""
    torch.manual_seed(0)
    model = StyleAutoencoder(TINY).eval()
    layers = model.generator.layers
    with torch.no_grad():
        for name, layer in layers.items():
            if name.endswith("torgb") and name != "16_torgb":
                layer.conv.weight.zero_()
        last = layers["16_torgb"].conv.weight  # (3, C, 1, 1)
        last.copy_(torch.ones_like(last) * 0.5)
        last[:, PLANTED_CHANNEL] = torch.tensor([0.2, 0.0, 0.0])[:, None, None]
        # a large bias keeps the planted channel's features positive, so its style moves red one way
        layers["16_conv1"].bias[PLANTED_CHANNEL] = 4.0
        # a random encoder maps every image to nearly one w; a steep affine row makes the planted style differ
        # between images more than the features it scales do, so its +-k std shifts cross the mean colour
        affine = layers["16_torgb"].affine
        affine.weight[PLANTED_CHANNEL] *= 300
        affine.bias[PLANTED_CHANNEL] = -(affine.effective_weight()[PLANTED_CHANNEL] @ model.encode(images).mean(0))
    return model


def planted_index(model: StyleAutoencoder) -> int:
    offset = dict((name, offset) for name, offset, _ in model.style_layout())["16.torgb"]
    return offset + PLANTED_CHANNEL
