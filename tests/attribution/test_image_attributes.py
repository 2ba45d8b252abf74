"""Image descriptor readers, on drawn images whose descriptors are known by construction."""

from __future__ import annotations

import pytest
import torch

from vcex.attribution import Descriptors, ImageAttributes, global_scores
from vcex.errors import CacheError, InputError
from vcex.explainers.result import CounterfactualResult

SIZE = 12


def draw(bar: torch.Tensor, brightness: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, 12, 12) images: background at ``brightness``, a bright vertical bar at the left where ``bar``."""
    n = len(bar)
    images = brightness.view(n, 1, 1, 1) * 0.5 + 0.05 * torch.rand(n, 1, SIZE, SIZE, generator=generator)
    images[bar.bool(), :, 2:10, 2:4] = 1.0
    return images.clamp(0, 1)


def synthetic(n: int = 600, seed: int = 0) -> tuple[torch.Tensor, Descriptors]:
    """bar: drawn or not; brightness: continuous; coin: independent of the image."""
    generator = torch.Generator().manual_seed(seed)
    bar = torch.randint(0, 2, (n,), generator=generator)
    brightness = torch.rand(n, generator=generator)
    coin = torch.randint(0, 2, (n,), generator=generator)
    images = draw(bar, brightness, generator)
    return images, Descriptors({"bar": bar, "brightness": brightness, "coin": coin})


@pytest.fixture(scope="module")
def fitted() -> ImageAttributes:
    images, descriptors = synthetic()
    return ImageAttributes(epochs=4, width=8, device="cpu").fit(images, descriptors)


def test_readers_learn_drawn_descriptors_and_flag_chance(fitted):
    accuracy = dict(zip(fitted.names, fitted.accuracy.tolist()))
    assert accuracy["bar"] > 0.95 and accuracy["brightness"] > 0.85
    assert fitted.usable.tolist() == [True, True, False]
    assert "coin" in fitted.reasons and "chance" in fitted.reasons["coin"]
    report = {r["name"]: r for r in fitted.summary()}
    assert report["brightness"]["kind"] == "continuous" and 0.3 < report["brightness"]["threshold"] < 0.7
    assert fitted.train_seconds is not None and fitted.train_seconds > 0


def test_local_reads_what_the_counterfactual_image_shows(fitted):
    generator = torch.Generator().manual_seed(5)
    n = 16
    brightness = torch.full((n,), 0.3)
    without = draw(torch.zeros(n), brightness, generator)
    with_bar = draw(torch.ones(n), brightness, generator)
    local = fitted.local(without, with_bar)
    bar = local.scores[:, fitted.names.index("bar")]
    assert bool((bar > 0.5).all())
    torch.testing.assert_close(local.scores, local.counterfactual_probs - local.original_probs)
    assert local.top(0, k=1)[0][0] == "bar"
    assert "coin" not in [name for name, _ in local.top(0, k=3)]  # unusable: left out of rankings
    brighter = fitted.local(without, draw(torch.zeros(n), torch.full((n,), 0.9), generator))
    assert float(brighter.scores[:, fitted.names.index("brightness")].mean()) > 0.5


def _result(originals: torch.Tensor, counterfactuals: torch.Tensor, reconstructions: torch.Tensor | None):
    n = len(originals)
    return CounterfactualResult(
        "hand", originals, counterfactuals, torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long),
        torch.full((n,), 0.2), torch.full((n,), 0.8), torch.tensor([True, False] * (n // 2)),
        torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long),
        0.0, 0.75, reconstructions=reconstructions,
    )  # fmt: skip


def test_local_from_a_result_starts_from_the_reconstruction_when_there_is_one(fitted):
    generator = torch.Generator().manual_seed(6)
    n = 8
    brightness = torch.full((n,), 0.3)
    plain, barred = draw(torch.zeros(n), brightness, generator), draw(torch.ones(n), brightness, generator)
    bar = fitted.names.index("bar")
    # a pixel method: the originals are the start
    assert bool((fitted.local(_result(plain, barred, None)).scores[:, bar] > 0.5).all())
    # a latent method whose reconstruction already had the bar: the counterfactual did not add it
    local = fitted.local(_result(plain, barred, barred.clone()))
    assert float(local.scores[:, bar].abs().max()) < 1e-6
    explanation = global_scores(fitted.local(_result(plain, barred, None)), torch.ones(n), resamples=50)
    assert explanation.ranked()[0][0] == "bar"


def test_bad_input_is_refused_with_the_fix(fitted):
    images, descriptors = synthetic(n=40)
    with pytest.raises(InputError, match="not fitted"):
        ImageAttributes().probabilities(images)
    with pytest.raises(InputError, match="descriptors for 40 images but 39"):
        ImageAttributes(epochs=1).fit(images[:39], descriptors)
    with pytest.raises(InputError, match="1 channel"):
        fitted.probabilities(images.repeat(1, 3, 1, 1))
    with pytest.raises(InputError, match="12x12 pixels"):
        fitted.probabilities(images[:, :, :10, :10])
    with pytest.raises(InputError, match="range|lie in"):
        fitted.probabilities(images * 255)
    with pytest.raises(InputError, match="one counterfactual per image"):
        fitted.local(images[:3], images[:4])
    with pytest.raises(InputError, match="epochs >= 1"):
        ImageAttributes(epochs=0)
    with pytest.raises(InputError, match="no descriptors"):
        ImageAttributes(epochs=1).fit(images)


def test_nan_rows_are_dropped_with_a_note():
    images, descriptors = synthetic(n=200)
    values = dict(descriptors.values)
    brightness = values["brightness"].clone().double()
    brightness[:5] = float("nan")
    values["brightness"] = brightness
    with pytest.warns(UserWarning, match="dropped 5 row"):
        readers = ImageAttributes(epochs=1, width=4, device="cpu").fit(images, Descriptors(values))
    assert any("dropped 5 row" in note for note in readers.notes)
    assert readers.probabilities(images[:3]).shape == (3, 3)


def test_saved_readers_read_the_same(fitted, tmp_path):
    path = fitted.save(tmp_path / "readers.safetensors")
    loaded = ImageAttributes.load(path, device="cpu")
    images, _ = synthetic(n=20, seed=3)
    torch.testing.assert_close(loaded.probabilities(images), fitted.probabilities(images))
    assert loaded.names == fitted.names and loaded.summary() == fitted.summary()
    assert loaded.max_blur == fitted.max_blur and loaded.width == fitted.width
    with pytest.raises(CacheError, match="does not exist"):
        ImageAttributes.load(tmp_path / "missing.safetensors")
