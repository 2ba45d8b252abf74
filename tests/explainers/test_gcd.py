"""GCD on a toy whose truth is known (tests/gcd_toy.py): four latent coordinates each set one quadrant of an 8x8 image,
and the black box reads quadrants 0 and 1 only, so the true direction of its margin in the latent is known exactly."""

from __future__ import annotations

import pytest
import torch
from gcd_toy import BlackBox, Quadrants, faces, reader
from torch import nn

from vcex.errors import InputError, ModelError
from vcex.explainers.gcd import (
    GCD,
    ProxyEnsemble,
    choose_candidate,
    feature_distance,
    fit_proxies,
    pyramid_distance,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"samples": 96, "max_epochs": 300, "h_directions": 2, "threshold": 0.5}


@pytest.fixture
def sources() -> torch.Tensor:
    return faces([[-1.0, -0.5, 0.3, 0.0], [-0.5, -1.0, -0.2, 0.4], [-1.5, 0.0, 0.0, -0.3]])  # all in class 0


def true_direction(latents: torch.Tensor) -> torch.Tensor:
    """The unit gradient of the margin in the latent at ``latents`` (N, 4)."""
    latents = latents.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(reader(Quadrants().decode(latents))[:, 1].sum(), latents)
    return nn.functional.normalize(grad, dim=1)


def test_the_g_direction_is_the_black_boxs_own_and_queries_are_counted(sources):
    black_box = BlackBox()
    gcd = GCD(black_box, Quadrants(), unit=1.0, **FAST)
    result = gcd.explain(sources, target=1)
    discovery = gcd.discovery
    assert bool(discovery.fit.usable.all()) and float(discovery.fit.logit_r2.min()) > 0.9
    truth = true_direction(Quadrants().encode(sources))
    cosine = (discovery.directions[:, 0] * truth).sum(1)
    assert float(cosine.min()) > 0.95
    # quadrants 2 and 3 are invisible to the black box: the g-direction leaves them (almost) alone
    assert float(discovery.directions[:, 0, 2:].abs().max()) < 0.2
    assert discovery.direction_names == ("g0", "g20", "h1", "h2")
    assert discovery.directions.shape == (3, 4, 4) and discovery.h_eigenvalues.shape == (3, 2)
    # every query the black box saw is accounted for, per image and in total
    assert discovery.settings["black_box_queries"] == black_box.queries == int(result.forward_passes.sum())
    assert bool((result.backward_passes == 0).all())
    assert bool(result.success.all()) and bool((result.target_prob > 0.5).all())
    assert torch.equal(result.target, torch.ones(3, dtype=torch.long))


def test_a_batch_is_the_same_as_its_images_one_by_one(sources):
    both = GCD(BlackBox(), Quadrants(), unit=1.0, **FAST).explain(sources[:2], target=1)
    first = GCD(BlackBox(), Quadrants(), unit=1.0, **FAST).explain(sources[:1], target=1)
    assert torch.equal(both.success[:1], first.success)
    # the proxies are fitted together but independently: same samples and same seed give the same direction
    assert torch.allclose(both.counterfactual_latents[0], first.counterfactual_latents[0], atol=0.3)


def test_a_black_box_returning_the_wrong_shape_or_nan_is_refused(sources):
    for function, message in (
        (lambda images: reader(images)[:, :1].T, "shape"),
        (lambda images: reader(images) * torch.nan, "NaN"),
        (lambda images: reader(images)[:, 1], "shape"),
    ):
        with pytest.raises(ModelError, match=message):
            GCD(BlackBox(function), Quadrants(), unit=1.0, **FAST).explain(sources, target=1)


def test_a_proxy_that_fails_to_fit_is_reported_and_its_directions_not_used(sources):
    generator = torch.Generator().manual_seed(0)

    def noise(images: torch.Tensor) -> torch.Tensor:  # answers unrelated to the image: nothing to fit
        logits = reader(images)
        return logits + torch.randn(logits.shape, generator=generator) * 5

    gcd = GCD(BlackBox(noise), Quadrants(), unit=1.0, **FAST)
    with pytest.warns(UserWarning, match="did not fit"):
        result = gcd.explain(sources, target="flip")
    assert not bool(gcd.discovery.fit.usable.any())
    assert float(gcd.discovery.fit.logit_r2.max()) < 0.5
    assert not bool(result.success.any())
    assert torch.allclose(result.counterfactuals, result.reconstructions)


def test_transfer_flips_with_the_true_direction_and_reports_one_that_flips_nothing(sources):
    gcd = GCD(BlackBox(), Quadrants(), unit=1.0, **FAST)
    direction = gcd.discover(sources[0], target=1).direction("g0")
    test = faces([[a, b, 0.0, 0.0] for a in (-1.0, -0.3, 0.4, 1.2) for b in (-0.5, 0.5)])
    transfer = gcd.transfer(direction, test, source_class=0, goal_class=1)
    summary = transfer.summary()
    assert summary["flip_rate"] == 1.0 and summary["eligible"] == 8
    # images already in class 1 move along -d, so every flip lies on the direction's own side
    assert summary["share_flipped_on_the_direction_side"] == 1.0
    assert len(transfer.result) == 8 and bool(transfer.result.success.all())
    predicted = reader(transfer.result.counterfactuals).argmax(1)
    assert torch.equal(predicted, transfer.result.target)
    assert transfer.queries_per_image == 130
    magnitudes, rate = transfer.flip_curve()
    assert bool((rate[1:] >= rate[:-1]).all()) and float(rate[-1]) == 1.0
    # quadrant 3 is invisible to the black box: moving along it flips nothing, and says so
    with pytest.warns(UserWarning, match="flips none"):
        blind = gcd.transfer(torch.tensor([0.0, 0.0, 0.0, 1.0]), test, source_class=0, goal_class=1)
    assert blind.summary()["flips_nothing"] and blind.flip_rate == 0.0
    assert bool(blind.alpha.isnan().all())


def test_transfer_refuses_bad_input(sources):
    gcd = GCD(BlackBox(), Quadrants(), unit=1.0, **FAST)
    with pytest.raises(InputError, match="numbers"):
        gcd.transfer(torch.ones(5), sources, source_class=0, goal_class=1)
    with pytest.raises(InputError, match="non-zero"):
        gcd.transfer(torch.zeros(4), sources, source_class=0, goal_class=1)
    with pytest.raises(InputError, match="same class"):
        gcd.transfer(torch.ones(4), sources, source_class=1, goal_class=1)
    with pytest.raises(InputError, match="out of range"):
        gcd.transfer(torch.ones(4), sources, source_class=0, goal_class=2)
    with pytest.raises(InputError, match="empty|at least one"):
        gcd.transfer(torch.ones(4), sources[:0], source_class=0, goal_class=1)


def test_the_g_direction_averaged_over_the_neighbourhood_still_points_up_the_margin(sources):
    centre = GCD(BlackBox(), Quadrants(), unit=1.0, **FAST)
    centre.explain(sources, target=1)
    averaged = GCD(BlackBox(), Quadrants(), unit=1.0, g_average_radius=1.0, **FAST)
    averaged.explain(sources, target=1)
    assert averaged.settings()["g_average_radius"] == 1.0
    g_centre, g_averaged = centre.discovery.directions[:, :2], averaged.discovery.directions[:, :2]
    # the same proxies (same seed): the h-directions agree, the g-directions are the average's, not the centre's
    assert torch.allclose(centre.discovery.directions[:, 2:], averaged.discovery.directions[:, 2:], atol=1e-5)
    assert float((g_centre - g_averaged).abs().max()) > 1e-3
    truth = true_direction(Quadrants().encode(sources))
    assert float((g_averaged[:, 0] * truth).sum(1).min()) > 0.9


def test_settings_and_options_are_checked():
    with pytest.raises(InputError, match="samples"):
        GCD(BlackBox(), Quadrants(), samples=2)
    with pytest.raises(InputError, match="radius"):
        GCD(BlackBox(), Quadrants(), radius=-1.0)
    with pytest.raises(InputError, match="latent model"):
        GCD(BlackBox(), None)
    with pytest.raises(InputError, match="g_average_radius"):
        GCD(BlackBox(), Quadrants(), radius=0.5, g_average_radius=1.0)  # beyond where the proxy was fitted
    gcd = GCD(BlackBox(), Quadrants(), **FAST).fit(faces([[0.0] * 4, [1.0, -1.0, 2.0, 0.0]]))
    assert gcd.settings()["unit"] == pytest.approx(
        float(torch.tensor([[0.0] * 4, [1.0, -1.0, 2.0, 0.0]]).var(0).mean().sqrt()), rel=1e-3
    )


class Doubled(Quadrants):
    """The toy's latent space, encoded twice as far from 0 (a stand-in for a refining encoder of the same space)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return 2 * super().encode(images)


def test_the_unit_can_be_measured_by_another_encoder_of_the_same_space():
    images = faces([[0.0] * 4, [1.0, -1.0, 2.0, 0.0]])
    plain = GCD(BlackBox(), Quadrants(), **FAST).fit(images).settings()["unit"]
    # the latent model encodes twice as far, the unit comes from the other encoder: the plain one's
    other = GCD(BlackBox(), Doubled(), **FAST).fit(images, encoder=Quadrants()).settings()["unit"]
    assert other == pytest.approx(plain, rel=1e-6)
    assert GCD(BlackBox(), Doubled(), **FAST).fit(images).settings()["unit"] == pytest.approx(2 * plain, rel=1e-3)


def test_proxy_ensemble_fits_each_proxy_on_its_own_samples():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(2, 200, 3, generator=generator) * 2 - 1
    # proxy 0's logit follows coordinate 0, proxy 1's coordinate 2
    logits = torch.stack(
        [torch.stack([-inputs[0, :, 0], inputs[0, :, 0]], 1), torch.stack([-inputs[1, :, 2], inputs[1, :, 2]], 1)]
    )
    proxies = fit_proxies(inputs, 3 * logits, inputs.norm(dim=2) / 2, max_epochs=400)
    assert bool(proxies.fit.usable.all())
    probe = torch.zeros(2, 1, 3)
    probe[:, 0, 0] = 0.5
    predicted, _ = proxies.logits_and_distance(probe)
    assert float(predicted[0, 0, 1]) > 1.0 and abs(float(predicted[1, 0, 1])) < 0.5
    assert ProxyEnsemble(3, 4, 5)(torch.zeros(3, 7, 4)).shape == (3, 7, 5)


def test_distances_are_zero_for_the_same_image_and_grow_with_change(sources):
    assert torch.allclose(pyramid_distance(sources, sources), torch.zeros(3))
    assert bool((pyramid_distance(sources, 1 - sources) > pyramid_distance(sources, sources * 0.9)).all())
    features = feature_distance(lambda images: images.flatten(1) + 0.1)
    assert float(features(sources, sources).abs().max()) < 1e-5


# --- a diffusion autoencoder: every latent is decoded from the stochastic code of the image it was moved from -------


@pytest.fixture
def diffae():
    """A tiny, untrained diffusion autoencoder whose decode depends on z_sem and x_T (its zero-initialised output
    layers given small random weights), its decode calls recorded: (x_T or None, steps, latents)."""
    from vcex.models.diffae import DiffAEConfig, DiffusionAutoencoder

    torch.manual_seed(0)
    model = DiffusionAutoencoder(DiffAEConfig.tiny(decode_steps=3)).eval()
    with torch.no_grad():
        for name, parameter in model.unet.named_parameters():
            if not parameter.any():
                parameter.normal_(0, 0.3 if name.endswith("weight") else 0.05)
    calls: list[tuple[torch.Tensor | None, int | None, torch.Tensor]] = []
    decode = model.decode

    def recording_decode(latents: torch.Tensor, x_T: torch.Tensor | None = None, steps: int | None = None):
        calls.append((None if x_T is None else x_T.clone(), steps, latents.clone()))
        return decode(latents, x_T=x_T, steps=steps)

    model.decode = recording_decode  # the instance's own: GCD sees DiffusionAutoencoder's signature and type
    model.calls = calls
    return model


def brightness_box(images: torch.Tensor) -> torch.Tensor:
    """Class 0 for every image (a margin of 5), the other logit following the left half's brightness."""
    left = images[..., : images.shape[-1] // 2].mean((1, 2, 3))
    return torch.stack([torch.full_like(left, 5.0), left], 1)


def test_gcd_decodes_every_sample_from_the_sources_own_stochastic_code(diffae, mnist_small):
    image = mnist_small[2][:1]
    gcd = GCD(BlackBox(brightness_box), diffae, unit=1.0, samples=24, max_epochs=5, h_directions=1, min_proxy_r2=-1e9)
    assert gcd.stochastic and gcd.settings()["decode_steps"] is None
    gcd.explain(image, target=1)
    calls = list(diffae.calls)
    with torch.no_grad():
        latents = diffae.encode(image)
        code = diffae.encode_stochastic(image, latents)
        inverted, fixed = diffae.decode(latents, x_T=code), diffae.decode(latents)
    assert float((inverted - fixed).abs().max()) > 0.05  # the two reconstructions differ: the test can tell them apart
    # the reconstruction, the 24 samples, the line search (3 directions x 16) and the counterfactual: all from x_T
    assert sum(len(latents_) for _, _, latents_ in calls) == 1 + 24 + 3 * 16 + 1
    assert all(x_T is not None and torch.allclose(x_T, code.expand_as(x_T), atol=1e-5) for x_T, _, _ in calls)
    # at zero offset GCD's decode is the source's inverted reconstruction, not the fixed-noise one
    at_zero = gcd._decode(latents, latents.shape[1:], gcd.stochastic_codes(image, latents))
    assert torch.allclose(at_zero, inverted, atol=1e-5) and not torch.allclose(at_zero, fixed, atol=1e-3)
    assert torch.allclose(gcd.reconstruct(image)[1], inverted, atol=1e-5)


def test_a_users_diffusion_autoencoder_behind_the_wrapper_gets_its_stochastic_code_too(diffae, mnist_small):
    from vcex.models.latent import UserLatentModel

    image = mnist_small[2][:1]
    wrapped = UserLatentModel(diffae)
    gcd = GCD(BlackBox(brightness_box), wrapped, unit=1.0, samples=8, max_epochs=2, h_directions=1, min_proxy_r2=-1e9)
    assert gcd.stochastic
    gcd.explain(image, target=1)
    with torch.no_grad():
        code = diffae.encode_stochastic(image, diffae.encode(image))
    assert diffae.calls and all(x_T is not None and torch.allclose(x_T, code.expand_as(x_T), atol=1e-5)
                                for x_T, _, _ in diffae.calls)  # fmt: skip


def test_transfer_decodes_each_image_from_its_own_code_with_the_steps_asked(diffae, mnist_small):
    images = mnist_small[2][:3]
    gcd = GCD(BlackBox(brightness_box), diffae, unit=1.0, decode_steps=2, **FAST)
    assert gcd.settings()["decode_steps"] == 2 and gcd.settings()["stochastic_code"]
    direction = nn.functional.normalize(torch.arange(8.0) - 3.5, dim=0)
    with pytest.warns(UserWarning, match="flips none"):  # class 1 is out of reach: the margin is 5
        transfer = gcd.transfer(direction, images, source_class=0, goal_class=1, steps=4)
    assert int(transfer.eligible.sum()) == 3
    with torch.no_grad():
        latents = diffae.encode(images)
        codes = diffae.encode_stochastic(images, latents, steps=2)
    calls = diffae.calls
    assert all(x_T is not None and steps == 2 for x_T, steps, _ in calls)
    decoded = torch.cat([latents_ for _, _, latents_ in calls])
    x_T = torch.cat([code for code, _, _ in calls])
    # the image each decoded latent was moved from: the one it differs from along the direction only
    offsets = decoded[:, None] - latents[None]  # (M, N, D)
    across = offsets - (offsets @ direction)[..., None] * direction
    source = across.norm(dim=2).argmin(1)
    assert float(across.norm(dim=2).min(1).values.max()) < 1e-4
    # the reconstructions, the sweep of each (4 alphas) and the counterfactuals
    assert torch.bincount(source, minlength=3).tolist() == [1 + 4 + 1] * 3
    assert torch.allclose(x_T, codes[source], atol=1e-5)


def test_decode_steps_is_refused_for_a_latent_model_without_them(sources):
    with pytest.raises(InputError, match="decode_steps"):
        GCD(BlackBox(), Quadrants(), decode_steps=10)
    assert not GCD(BlackBox(), Quadrants()).stochastic
    assert "stochastic_code" not in GCD(BlackBox(), Quadrants(), unit=1.0).settings()


def test_a_bblig_path_starts_at_each_images_inverted_reconstruction(diffae, mnist_small):
    from vcex.attribution.bblig import latent_path

    images = mnist_small[2][:2]
    gcd = GCD(BlackBox(brightness_box), diffae, unit=1.0, **FAST)
    direction = nn.functional.normalize(torch.arange(8.0) - 3.5, dim=0)
    path = latent_path(gcd, direction, images, source_class=0, goal_class=1, coarse_steps=3, path_steps=3)
    assert all(x_T is not None for x_T, _, _ in diffae.calls)
    with torch.no_grad():
        latents = diffae.encode(images)
        inverted = diffae.decode(latents, x_T=diffae.encode_stochastic(images, latents))
    # the path's first point (8-bit, as the public code saves it) is the image's own inverted reconstruction
    assert torch.allclose(path.images[:, 0], (inverted * 255).round() / 255, atol=1.5 / 255)


QUADRANTS = [(slice(0, 4), slice(0, 4)), (slice(0, 4), slice(4, 8)), (slice(4, 8), slice(0, 4))]


def regional(images: torch.Tensor) -> torch.Tensor:
    """A black box that reads quadrant 0 where quadrant 2 is dark and quadrant 1 where it is bright: the g-direction
    found around a source depends on the source's region."""
    q0, q1, q2 = (images[:, 0, rows, columns].mean((1, 2)) for rows, columns in QUADRANTS[:3])
    margin = torch.where(q2 < 0.5, 8 * (q0 - 0.5), 8 * (q1 - 0.5))
    return torch.stack([torch.zeros_like(margin), margin], 1)


def test_select_source_keeps_the_candidate_whose_direction_flips_the_validation_images():
    black_box = BlackBox(regional)
    gcd = GCD(black_box, Quadrants(), unit=1.0, **FAST)
    # candidate 0: class 0 in the bright-q2 region (its direction moves q1, which the validation images ignore);
    # candidate 1: class 1 (not a candidate); candidate 2: class 0 in the dark-q2 region, as the validation images
    candidates = faces([[-1.0, -1.0, 1.5, 0.0], [1.0, 1.0, -1.5, 0.0], [-1.0, -1.0, -1.5, 0.0]])
    validation = faces([[a, b, -1.5, 0.0] for a in (-1.0, -0.5, 0.5, 1.0) for b in (-1.0, 1.0)])
    before = black_box.queries
    selection = gcd.select_source(candidates, validation, source_class=0, goal_class=1)
    assert selection.candidates.tolist() == [0, 2] and selection.chosen == 2
    assert selection.flip_rates.tolist() == [0.0, 1.0]
    assert selection.validation_images == 8 and selection.validation_eligible == 8
    # the chosen direction moves quadrant 0; the other one quadrant 1
    assert float(selection.discovery.direction("g0")[0]) > 0.95
    assert float(selection.discoveries.direction("g0", 0)[1]) > 0.95
    assert gcd.discovery is selection.discovery and selection.discovery.directions.shape[0] == 1
    assert len(selection.local) == 1 and bool(selection.local.success[0])
    # every query is counted: the candidates' checks, both discoveries, the validation images and both sweeps
    assert selection.queries == black_box.queries - before
    summary = selection.summary()
    assert summary["chosen"] == 2 and summary["chosen_validation_flip_rate"] == 1.0
    assert summary["validation_flip_rates"] == [0.0, 1.0]
    # limit 1: only the first faithful candidate is tried
    assert gcd.select_source(candidates, validation, source_class=0, goal_class=1, limit=1).chosen == 0
    # no candidates given: the validation images' class-0 ones (a < 0), read from their one encoding and query
    before = black_box.queries
    own = gcd.select_source(None, validation, source_class=0, goal_class=1)
    assert own.candidates.tolist() == [0, 1, 2, 3] and own.flip_rates.tolist() == [1.0] * 4 and own.chosen == 0
    assert own.queries == black_box.queries - before


def test_select_source_refuses_candidates_outside_the_source_class():
    gcd = GCD(BlackBox(regional), Quadrants(), unit=1.0, **FAST)
    validation = faces([[-1.0, 0.0, -1.5, 0.0], [1.0, 0.0, -1.5, 0.0]])
    with pytest.raises(InputError, match="none of the 1 candidates"):
        gcd.select_source(faces([[1.0, 1.0, -1.5, 0.0]]), validation, source_class=0, goal_class=1)
    with pytest.raises(InputError, match="same class"):
        gcd.select_source(faces([[-1.0, 1.0, -1.5, 0.0]]), validation, source_class=0, goal_class=0)


def larger_of_two(images: torch.Tensor) -> torch.Tensor:
    """A black box whose margin is the larger of quadrants 0 and 1: its gradient moves whichever is larger."""
    q0, q1 = (images[:, 0, rows, columns].mean((1, 2)) for rows, columns in QUADRANTS[:2])
    margin = 8 * (torch.maximum(q0, q1) - 0.5)
    return torch.stack([torch.zeros_like(margin), margin], 1)


def quadrant0_change(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """A distance that sees quadrant 0 only."""
    return (images - references)[:, 0, :4, :4].abs().mean((1, 2))


def test_the_closest_rule_keeps_the_near_best_direction_that_moves_the_validation_images_least():
    gcd = GCD(BlackBox(larger_of_two), Quadrants(), unit=1.0, distance=quadrant0_change, **FAST)
    # candidate 0's direction raises quadrant 0, candidate 1's quadrant 1: both flip every validation image, and
    # only candidate 0's flips move quadrant 0 (what the distance sees)
    candidates = faces([[-1.0, -2.5, 0.0, 0.0], [-2.5, -1.0, 0.0, 0.0]])
    validation = faces([[a, b, 0.0, 0.0] for a in (-1.5, -1.0) for b in (-1.5, -1.0)])
    flips = gcd.select_source(candidates, validation, source_class=0, goal_class=1)
    assert flips.flip_rates.tolist() == [1.0, 1.0] and flips.chosen == 0 and flips.rule == "flips"
    closest = gcd.select_source(candidates, validation, source_class=0, goal_class=1, rule="closest", tolerance=0.0)
    assert closest.chosen == 1 and closest.rule == "closest within 0"
    assert float(closest.distances[1]) < 0.2 * float(closest.distances[0])
    summary = closest.summary()
    assert summary["rule"] == "closest within 0" and len(summary["validation_distances"]) == 2
    for rule, tolerance, message in (("nearest", 0.1, "unknown selection rule"), ("closest", 1.5, "tolerance")):
        with pytest.raises(InputError, match=message):
            gcd.select_source(candidates, validation, source_class=0, goal_class=1, rule=rule, tolerance=tolerance)


def test_the_fewest_rule_keeps_the_near_best_direction_whose_flips_change_the_attributes_least():
    gcd = GCD(BlackBox(larger_of_two), Quadrants(), unit=1.0, **FAST)
    candidates = faces([[-1.0, -2.5, 0.0, 0.0], [-2.5, -1.0, 0.0, 0.0]])
    validation = faces([[a, b, 0.0, 0.0] for a in (-1.5, -1.0) for b in (-1.5, -1.0)])

    def quadrant0_attribute(result):  # an attribute reader that sees quadrant 0 only
        return quadrant0_change(result.counterfactuals, result.reconstructions)

    # recorded beside another rule, not used by it
    flips = gcd.select_source(
        candidates, validation, source_class=0, goal_class=1, attribute_change=quadrant0_attribute
    )
    assert flips.chosen == 0 and not bool(flips.attribute_changes.isnan().any())
    fewest = gcd.select_source(
        candidates,
        validation,
        source_class=0,
        goal_class=1,
        rule="fewest",
        tolerance=0.0,
        attribute_change=quadrant0_attribute,
    )
    assert fewest.chosen == 1 and fewest.rule == "fewest changes within 0"
    assert float(fewest.attribute_changes[1]) < 0.2 * float(fewest.attribute_changes[0])
    assert fewest.summary()["validation_attribute_changes"][1] == pytest.approx(
        float(fewest.attribute_changes[1]), abs=1e-4
    )
    # every rule's choice from the same figures
    assert (fewest.chosen_by("flips"), fewest.chosen_by("fewest", 0.0)) == (0, 1)
    assert (
        choose_candidate(
            torch.tensor([0.5, float("nan"), 0.9, 0.85]),
            torch.tensor([0.1, float("nan"), 0.3, 0.2]),
            torch.tensor([1.0, float("nan"), 2.0, float("nan")]),
            rule="fewest",
            tolerance=0.1,
        )
        == 2
    )  # the one within 0.1 of the best whose change was read
    # without a reader the attribute changes are not read, and "fewest" cannot be asked of the selection
    unread = gcd.select_source(candidates, validation, source_class=0, goal_class=1)
    assert bool(unread.attribute_changes.isnan().all())
    with pytest.raises(InputError, match="no attribute changes were read"):
        unread.chosen_by("fewest")
    with pytest.raises(InputError, match="needs attribute_change"):
        gcd.select_source(candidates, validation, source_class=0, goal_class=1, rule="fewest")
    for wrong, message in (
        (lambda result: torch.zeros(len(result), 2), "one number per counterfactual"),
        (lambda result: torch.full((len(result),), float("nan")), "NaN"),
    ):
        with pytest.raises(InputError, match=message):
            gcd.select_source(
                candidates, validation, source_class=0, goal_class=1, rule="fewest", attribute_change=wrong
            )
