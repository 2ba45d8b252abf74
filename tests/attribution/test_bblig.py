"""BB-LIG on the quadrant toy of tests/explainers/test_gcd.py: the black box reads quadrants 0 and 1 only."""

from __future__ import annotations

import pytest
import torch
from gcd_toy import BlackBox, Quadrants, faces, reader

from vcex.attribution.bblig import bb_lig, compare_attributions, latent_path, white_box_lig
from vcex.errors import InputError
from vcex.explainers.gcd import GCD

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def toy():
    return BlackBox, Quadrants, faces, reader


def test_bb_lig_credits_the_quadrants_the_black_box_reads_and_matches_the_white_box(toy):
    BlackBox, Quadrants, faces, reader = toy
    black_box = BlackBox()
    gcd = GCD(black_box, Quadrants(), unit=2.0, threshold=0.5)  # alpha 3 reaches p < 0.01 on both
    images = faces([[-1.0, -0.5, 0.3, 0.0], [0.8, 0.4, -0.2, 0.1]])  # class 0 and class 1
    direction = torch.tensor([2.0, 1.0, 0.0, 0.0])
    before = black_box.queries
    maps, path = bb_lig(gcd, direction, images, source_class=0, goal_class=1)
    assert black_box.queries - before == 2 * maps.queries_per_image
    assert bool(maps.found.all()) and maps.maps.shape == (2, 8, 8)
    assert path.goal.tolist() == [1, 0] and path.images.shape[:2] == (2, 128)
    # nothing the black box cannot see gets any credit
    assert float(maps.maps[:, 4:].abs().max()) == 0.0
    assert float(maps.maps[:, :4].abs().sum()) > 0
    # each path goes from the image's own class to below 1% of it: the log-odds fall by at least log(99) - margin
    assert bool((maps.logit_change > 4.0).all())
    white = white_box_lig(gcd, path, reader)
    assert bool((white.relative_completeness_error < 0.1).all())
    assert torch.allclose(white.logit_change, maps.logit_change, atol=1e-4)
    comparison = compare_attributions(maps, white)
    assert comparison["images"] == 2 and comparison["cosine_median"] > 0.9
    paper, _ = bb_lig(gcd, direction, images, source_class=0, goal_class=1, path=path, estimator="paper")
    # the paper's estimator credits every changed pixel with the whole step's change: far from complete
    assert float(paper.relative_completeness_error.median()) > float(maps.relative_completeness_error.median())


def test_a_direction_that_never_reaches_a_baseline_gives_empty_maps(toy):
    BlackBox, Quadrants, faces, _ = toy
    gcd = GCD(BlackBox(), Quadrants(), unit=1.0, threshold=0.5)
    images = faces([[-1.0, -0.5, 0.3, 0.0]])
    maps, _ = bb_lig(gcd, torch.tensor([0.0, 0.0, 1.0, 0.0]), images, source_class=0, goal_class=1)
    assert not bool(maps.found.any()) and float(maps.maps.abs().max()) == 0.0
    assert maps.summary()["relative_completeness_error_median"] is None
    assert bool(maps.relative_completeness_error.isnan().all())


def test_bad_input_is_refused(toy):
    BlackBox, Quadrants, faces, _ = toy
    gcd = GCD(BlackBox(), Quadrants(), unit=1.0)
    images = faces([[-1.0, -0.5, 0.3, 0.0]])
    with pytest.raises(InputError, match="estimator"):
        bb_lig(gcd, torch.ones(4), images, source_class=0, goal_class=1, estimator="exact")
    with pytest.raises(InputError, match="neither"):
        latent_path(gcd, torch.ones(4), images, source_class=1, goal_class=2)
    with pytest.raises(InputError, match="at least one"):
        latent_path(gcd, torch.ones(4), images[:0], source_class=0, goal_class=1)
    with pytest.raises(InputError, match="numbers"):
        latent_path(gcd, torch.ones(3), images, source_class=0, goal_class=1)
