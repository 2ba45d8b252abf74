"""Global scores: recovery of a known driver, own-original rows, bootstrap intervals, baselines."""

from __future__ import annotations

import json

import pytest
import torch

from vcex.attribution import (
    Descriptors,
    LatentAttributes,
    bootstrap_interval,
    directions_from_result,
    global_scores,
    global_scores_by_class,
    linear_direction_scores,
)
from vcex.errors import InputError
from vcex.explainers.result import CounterfactualResult


@pytest.fixture(scope="module")
def probes() -> LatentAttributes:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(1000, 6, generator=generator)
    values = {
        "a": (z[:, 0] > 0).long(),
        "b": (z[:, 1] + 0.3 * torch.randn(1000, generator=generator) > 0).long(),
        "c": torch.randint(0, 2, (1000,), generator=generator),
    }
    return LatentAttributes(None).fit_latents(z, Descriptors(values))


def latents(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))


def result_with_targets(target: torch.Tensor, lower: bool = False) -> CounterfactualResult:
    n = target.shape[0]
    images, longs = torch.zeros(n, 1, 2, 2), torch.zeros(n, dtype=torch.long)
    probs = torch.full((n,), 0.5)
    return CounterfactualResult(
        "hand", images, images, target, 1 - target, probs, probs, torch.ones(n, dtype=torch.bool),
        longs, longs, longs, 0.0, 0.75, lower=lower,
    )  # fmt: skip


def test_global_score_recovers_the_driver(probes):
    z = latents(400)
    target = torch.randint(0, 2, (400,), generator=torch.Generator().manual_seed(2))
    direction = directions_from_result(result_with_targets(target))
    moved = z.clone()
    moved[:, 0] += 1.5 * direction  # toward class 1 means +z0, toward class 0 means -z0
    explanation = global_scores(probes.local(z, moved), direction)
    ranked = explanation.ranked()
    assert ranked[0][0] == "a" and ranked[0][1] > 0.2
    assert "c" not in [row[0] for row in ranked] and "c" in explanation.excluded()
    assert "c" in [row[0] for row in explanation.ranked(include_unusable=True)]
    document = json.loads(json.dumps(explanation.to_json()))
    assert document["ranking"][0] == "a" and document["n"] == 400 and len(document["descriptors"]) == 3


def test_each_row_is_compared_with_its_own_original(probes):
    """Counterfactuals move only along z0; b (driven by z1) must score ~0.

    Comparing every counterfactual with one reference latent (the reference notebook's stale
    ``X[idx]``) would give b a large score: mean p_b(z_cf) - p_b(z_ref) with z_ref[1] far from 0.
    """
    z = latents(500)
    z[5, 1] = 3.0  # the stale reference: very likely b
    moved = z.clone()
    moved[:, 0] += 1.0
    local = probes.local(z, moved)
    explanation = global_scores(local, torch.ones(500))
    b = explanation.names.index("b")
    assert abs(float(explanation.scores[b])) < 0.02
    stale = probes.probabilities(moved)[:, b].mean() - probes.probabilities(z[5:6])[0, b]
    assert abs(float(stale)) > 0.3  # what the bug would report
    expected = (probes.probabilities(moved) - probes.probabilities(z)).mean(0)
    torch.testing.assert_close(explanation.scores, expected)


def test_directions_from_result():
    target = torch.tensor([1, 0, 1])
    assert directions_from_result(result_with_targets(target)).tolist() == [1.0, -1.0, 1.0]
    assert directions_from_result(result_with_targets(target, lower=True)).tolist() == [-1.0, 1.0, -1.0]
    with pytest.raises(InputError, match="binary"):
        directions_from_result(result_with_targets(torch.tensor([0, 3])))


def test_bootstrap_contains_estimate_and_shrinks_with_n(probes):
    widths = []
    for n in (50, 800):
        z = latents(n, seed=n)
        moved = z + 0.5 * torch.randn(n, 6, generator=torch.Generator().manual_seed(n + 1))
        explanation = global_scores(probes.local(z, moved), 1.0, resamples=1000, seed=0)
        assert bool((explanation.ci_low <= explanation.scores).all())
        assert bool((explanation.scores <= explanation.ci_high).all())
        widths.append(explanation.ci_high - explanation.ci_low)
    assert bool((widths[1] < widths[0]).all())


def test_bootstrap_is_seeded_and_matches_percentiles():
    values = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    low, high = bootstrap_interval(values, resamples=2000, seed=3)
    low2, high2 = bootstrap_interval(values, resamples=2000, seed=3)
    torch.testing.assert_close(low, low2)
    torch.testing.assert_close(high, high2)
    standard_error = values.std(0) / 200**0.5  # normal approximation as a sanity check
    torch.testing.assert_close(high - low, 2 * 1.96 * standard_error, rtol=0.15, atol=0.0)


def test_global_scores_by_class_and_errors(probes):
    z = latents(30)
    target = torch.tensor([3, 5, 7] * 10)
    moved = z.clone()
    moved[:, 0] += (target == 3).float()  # only target 3 moves along z0
    by_class = global_scores_by_class(probes.local(z, moved), result_with_targets(target), resamples=200)
    assert sorted(by_class) == [3, 5, 7]
    assert by_class[3].n == 10 and by_class[3].label == "target 3"
    a = by_class[3].names.index("a")
    assert float(by_class[3].scores[a]) > 0.1 and abs(float(by_class[5].scores[a])) < 1e-6
    local = probes.local(z, moved)
    with pytest.raises(InputError, match="one entry per counterfactual"):
        global_scores(local, torch.ones(5))
    with pytest.raises(InputError, match=r"\+1"):
        global_scores(local, torch.zeros(30))
    with pytest.raises(InputError, match="same result"):
        global_scores_by_class(local, result_with_targets(torch.tensor([1, 0])))


def test_linear_direction_scores(probes):
    z = latents(300)
    beta = torch.tensor([2.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    explanation = linear_direction_scores(probes, z, beta, eta=1.0, resamples=200)
    assert explanation.method == "linear_direction" and explanation.n == 300
    assert explanation.ranked()[0][0] == "a" and explanation.ranked()[0][1] > 0.1
    flipped = linear_direction_scores(probes, z, -beta, eta=1.0, resamples=200)
    assert float(flipped.scores[0]) < 0
    with pytest.raises(InputError, match="non-zero"):
        linear_direction_scores(probes, z, torch.zeros(6))
    with pytest.raises(InputError, match=r"shape \(6,\)"):
        linear_direction_scores(probes, z, torch.ones(4))
