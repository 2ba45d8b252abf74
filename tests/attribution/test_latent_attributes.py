"""Latent attribute probes and local scores, on latents with known linear structure and on real fixtures."""

from __future__ import annotations

import time

import pytest
import torch

from vcex.attribution import Descriptors, LatentAttributes
from vcex.errors import InputError
from vcex.explainers.result import CounterfactualResult


def synthetic(n: int = 1000, dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, Descriptors]:
    """z ~ N(0, I); a = 1[z0 > 0], b = 1[z1 + noise > 0], c independent coin flips, r = z2 + noise."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=generator)
    values = {
        "a": (z[:, 0] > 0).long(),
        "b": (z[:, 1] + 0.3 * torch.randn(n, generator=generator) > 0).long(),
        "c": torch.randint(0, 2, (n,), generator=generator),
        "r": z[:, 2] + 0.1 * torch.randn(n, generator=generator),
    }
    return z, Descriptors(values)


@pytest.fixture(scope="module")
def fitted() -> tuple[LatentAttributes, torch.Tensor]:
    z, descriptors = synthetic()
    return LatentAttributes(None).fit_latents(z, descriptors, test_fraction=0.2, seed=0), z


def test_probes_learn_linear_descriptors_and_flag_chance(fitted):
    probes, _ = fitted
    reports = {r.name: r for r in probes.reports}
    assert reports["a"].accuracy > 0.95 and reports["b"].accuracy > 0.85 and reports["r"].accuracy > 0.9
    assert reports["a"].usable and reports["b"].usable and reports["r"].usable
    assert reports["r"].kind == "continuous" and reports["r"].r2 > 0.9 and reports["a"].r2 is None
    assert not reports["c"].usable and "chance" in reports["c"].reason
    assert probes.reasons == {"c": reports["c"].reason}
    assert probes.weights.shape == (4, 6) and probes.bias.shape == (4,)


def test_probabilities_are_one_batched_matmul(fitted):
    probes, z = fitted
    probs = probes.probabilities(z[:5])
    assert probs.shape == (5, 4)
    expected = torch.sigmoid(z[:5] @ probes.weights.T + probes.bias)
    torch.testing.assert_close(probs, expected)


def test_local_sign_follows_the_latent_move(fitted):
    probes, z = fitted
    moved = z.clone()
    moved[:, 0] += 1.0  # along +z0: descriptor a becomes more likely, b and r barely move
    local = probes.local(z, moved)
    assert local.scores.shape == (1000, 4) and local.names == ["a", "b", "c", "r"]
    a = local.scores[:, 0]
    assert bool((a >= 0).all()) and float(a.mean()) > 0.1
    torch.testing.assert_close(local.scores, local.counterfactual_probs - local.original_probs)
    top = local.top(0, k=5)
    assert top[0][0] == "a" and top[0][1] > 0
    assert "c" not in [name for name, _ in top]  # unusable: excluded by default
    assert "c" in [name for name, _ in local.top(0, k=5, include_unusable=True)]


def test_local_from_result_uses_stored_latents(fitted):
    probes, z = fitted
    n = 4
    images = torch.rand(n, 1, 4, 4)
    moved = z[:n].clone()
    moved[:, 0] -= 2.0
    result = CounterfactualResult(
        "hand", images, images, torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long),
        torch.full((n,), 0.2), torch.full((n,), 0.8), torch.ones(n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long),
        0.0, 0.75, original_latents=z[:n], counterfactual_latents=moved,
    )  # fmt: skip
    local = probes.local(result)  # no latent model: only the stored latents can be used
    assert bool((local.scores[:, 0] < 0).all())


def test_local_and_fit_errors(fitted):
    probes, z = fitted
    with pytest.raises(InputError, match="same shape"):
        probes.local(z[:3], z[:4])
    with pytest.raises(InputError, match="fitted on 6"):
        probes.local(z[:3, :5], z[:3, :5])
    with pytest.raises(InputError, match="not fitted"):
        LatentAttributes(None).probabilities(z)
    _, descriptors = synthetic(n=50)
    with pytest.raises(InputError, match="descriptors for 50 images but 1000"):
        LatentAttributes(None).fit_latents(z, descriptors)
    with pytest.raises(InputError, match="encode"):
        LatentAttributes(object())


def test_nan_rows_are_dropped_with_a_note():
    z, descriptors = synthetic(n=300)
    values = dict(descriptors.values)
    values["r"] = values["r"].clone()
    values["r"][:7] = float("nan")
    with pytest.warns(UserWarning, match="dropped 7 row"):
        probes = LatentAttributes(None).fit_latents(z, Descriptors(values))
    assert any("dropped 7" in note for note in probes.notes)
    assert probes.reports[0].n_train + probes.reports[0].n_test == 293


def test_scoring_1000_counterfactuals_is_cheap(fitted):
    probes, z = fitted
    probes.local(z, z + 0.1)  # warm-up
    start = time.perf_counter()
    probes.local(z, z + 0.1)
    assert time.perf_counter() - start < 0.5  # one matmul; typically ~1 ms


def pixel_result(originals: torch.Tensor, counterfactuals: torch.Tensor) -> CounterfactualResult:
    """A PixelAttack-like result built by hand: images only, no latents."""
    n = originals.shape[0]
    longs = torch.zeros(n, dtype=torch.long)
    return CounterfactualResult(
        "pixel", originals, counterfactuals, longs + 1, longs, torch.full((n,), 0.2), torch.full((n,), 0.8),
        torch.ones(n, dtype=torch.bool), longs, longs, longs, 0.0, 0.75,
    )  # fmt: skip


def test_real_fixtures_pixel_result_without_latents(tiny_vae, mnist_small):
    images = mnist_small[0]
    train = images[16:416]
    probes = LatentAttributes(tiny_vae).fit(train, Descriptors.from_morphometrics(train))
    assert len(probes.names) == 7 and any(r.usable for r in probes.reports)
    # Thicken every stroke (3x3 dilation): a pixel-space edit the VAE has to encode.
    thicker = torch.nn.functional.max_pool2d(images[:16], 3, stride=1, padding=1)
    result = pixel_result(images[:16], thicker)
    local = probes.local(result)
    assert local.scores.shape == (16, 7)
    assert bool(torch.isfinite(local.scores).all())
    torch.testing.assert_close(local.original_probs, probes.probabilities(tiny_vae.encode(images[:16])))
    assert len(local.top(0, k=3)) <= 3
    # the fixtures are seeded, so this probe's usability is fixed: the thickening must read as thicker
    assert probes.reports[probes.names.index("thickness")].usable
    assert float(local.scores[:, probes.names.index("thickness")].mean()) > 0


def test_probes_do_not_depend_on_the_latents_units(fitted):
    # the probes fit standardised coordinates: the same latents in other units give the same read-outs
    probes, z = fitted
    _, descriptors = synthetic()
    z_shift = z * 17.0 + 3.0
    rescaled = LatentAttributes(None).fit_latents(z_shift, descriptors, test_fraction=0.2, seed=0)
    torch.testing.assert_close(rescaled.probabilities(z_shift), probes.probabilities(z), atol=1e-4, rtol=0)
    torch.testing.assert_close(rescaled.accuracy, probes.accuracy)


def test_saved_probes_load_back_to_the_same_probabilities_and_reports(fitted, tmp_path):
    from vcex.errors import CacheError

    probes, z = fitted
    loaded = LatentAttributes.load(probes.save(tmp_path / "probes.safetensors"), None)
    assert torch.equal(loaded.probabilities(z[:7]), probes.probabilities(z[:7]))
    assert loaded.summary() == probes.summary() and loaded.reasons == probes.reasons and loaded.notes == probes.notes
    assert torch.equal(loaded.local(z[:3], z[3:6]).scores, probes.local(z[:3], z[3:6]).scores)
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CacheError, match="not a readable safetensors file"):
        LatentAttributes.load(tmp_path / "garbage.safetensors", None)
