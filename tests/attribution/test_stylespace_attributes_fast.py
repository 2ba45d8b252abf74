"""AttFind's fast path on a tiny real style generator: decoding from the cached synthesis state before the edited
layer gives the same logit changes as decoding every shifted style from the start, and runs fewer layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from vcex.attribution.stylespace_attributes import stylespace_effects
from vcex.evaluation.stylespace import coordinate_names, decode_coordinate_shifts
from vcex.models.stylegan import StyleAutoencoder, StyleGeneratorConfig
from vcex.models.stylex import StylExAutoencoder

SIZE = 8  # generator resolutions 4 and 8: 6 styled layers, conv coordinates in 4 of them


def tiny_model(pad: int) -> StyleAutoencoder:
    torch.manual_seed(0)
    config = StyleGeneratorConfig(image_size=SIZE, w_dim=8, base_channels=4, max_channels=8, mapping_layers=1)
    return StylExAutoencoder(config, pad=pad) if pad else StyleAutoencoder(config)


def tiny_classifier(side: int) -> nn.Module:
    torch.manual_seed(1)
    classifier = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * side * side, 3))
    with torch.no_grad():
        classifier[3].weight.mul_(100)  # an untrained generator's decodes differ little: read them sharply
    return classifier


@pytest.mark.parametrize("pad", [0, 1])  # 1: a StylEx generator that crops its decodes
def test_fast_effects_match_decoding_every_shift_from_the_start(pad: int, tmp_path: Path) -> None:
    model, side = tiny_model(pad), SIZE - 2 * pad
    classifier = tiny_classifier(side)
    images = torch.rand(5, 3, side, side, generator=torch.Generator().manual_seed(2))
    model.train()  # the search runs it in eval mode and must put it back
    effects = stylespace_effects(model, classifier, images, batch_size=7, resume_dir=tmp_path, progress=False)
    assert model.training

    # the plain table: one full decode per (image, direction, coordinate), read by the classifier
    with torch.no_grad():
        styles = model.styles(model.encode(images))
        before = classifier(model.decode_styles(styles))
        expected = torch.zeros_like(effects.effects)
        for slot, coordinate in enumerate(effects.coordinates.tolist()):
            for direction in (0, 1):
                shifted = styles.clone()
                shifted[:, coordinate] = effects.extremes[slot, direction]
                expected[:, direction, slot] = classifier(model.decode_styles(shifted)) - before
    assert expected.abs().max() > 1e-2  # the shifts do move the logits, so the comparison means something
    torch.testing.assert_close(effects.effects, expected, atol=1e-5, rtol=1e-4)


def _layer_passes(model: StyleAutoencoder) -> list[int]:
    """A counter of images run through the generator's styled layers, filled by forward hooks."""
    passes = [0]
    for layer in model.generator.layers.values():
        layer.register_forward_hook(lambda module, inputs, output: passes.__setitem__(0, passes[0] + len(output)))
    return passes


def test_shift_decodes_match_the_plain_path_in_any_coordinate_order_and_run_fewer_layers() -> None:
    model = tiny_model(0).eval()
    with torch.no_grad():
        styles = model.styles(model.encode(torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))))
    _, is_torgb = coordinate_names(model)
    # every coordinate (toRGB too), shuffled, so chunks cross layers back and forth
    coordinates = torch.randperm(len(is_torgb), generator=torch.Generator().manual_seed(4))
    offsets = torch.randn(len(coordinates), 2, generator=torch.Generator().manual_seed(5))
    passes = _layer_passes(model)
    runs = {}
    for reuse in (False, True):
        passes[0] = 0
        with torch.no_grad():
            chunks = decode_coordinate_shifts(
                model, styles, coordinates, offsets, batch_size=11, start=5, stop=400, reuse_prefix=reuse
            )
            runs[reuse] = [(image, edit, after) for image, edit, after in chunks]
        runs[reuse, "passes"] = passes[0]
    assert len(runs[True]) == len(runs[False])
    for (image, edit, after), (plain_image, plain_edit, plain_after) in zip(runs[True], runs[False]):
        assert torch.equal(image, plain_image) and torch.equal(edit, plain_edit)
        assert after.is_contiguous()
        torch.testing.assert_close(after, plain_after, atol=1e-5, rtol=1e-4)
    assert runs[True, "passes"] < 0.9 * runs[False, "passes"]
