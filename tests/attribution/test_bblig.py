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
    BlackBox, Quadrants, faces, reader = toy
    gcd = GCD(BlackBox(), Quadrants(), unit=1.0)
    images = faces([[-1.0, -0.5, 0.3, 0.0]])
    with pytest.raises(InputError, match="estimator"):
        bb_lig(gcd, torch.ones(4), images, source_class=0, goal_class=1, estimator="exact")
    with pytest.raises(InputError, match="baseline"):
        latent_path(gcd, torch.ones(4), images, source_class=0, goal_class=1, baseline="halfway")
    path = latent_path(gcd, torch.ones(4), images, source_class=0, goal_class=1)
    with pytest.raises(InputError, match="form"):
        white_box_lig(gcd, path, reader, form="min_norm")
    with pytest.raises(InputError, match="neither"):
        latent_path(gcd, torch.ones(4), images, source_class=1, goal_class=2)
    with pytest.raises(InputError, match="at least one"):
        latent_path(gcd, torch.ones(4), images[:0], source_class=0, goal_class=1)
    with pytest.raises(InputError, match="numbers"):
        latent_path(gcd, torch.ones(3), images, source_class=0, goal_class=1)


class AffineQuadrants(Quadrants):
    """Quadrant k is 0.5 + 0.1 * z_k (clamped to [0, 1]): a latent path is a straight line in pixel space."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return (super().encode(images).sigmoid() - 0.5) / 0.1

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return super().decode(torch.logit((0.5 + 0.1 * latents).clamp(1e-6, 1 - 1e-6)))


def cubic_reader(images: torch.Tensor) -> torch.Tensor:
    """A non-linear black box: class 1's margin is m + m^3 / 4 for the toy reader's margin m."""
    margin = reader(images)[:, 1]
    return torch.stack([torch.zeros_like(margin), margin + margin**3 / 4], 1)


def test_the_path_sum_adds_up_to_the_logit_change_by_construction(toy):
    BlackBox, Quadrants, faces, _ = toy
    gcd = GCD(BlackBox(cubic_reader), Quadrants(), unit=2.0, threshold=0.5)
    images = faces([[-1.0, -0.5, 0.3, 0.0], [0.8, 0.4, -0.2, 0.1]])
    direction = torch.tensor([2.0, 1.0, 0.5, 0.0])
    maps, path = bb_lig(gcd, direction, images, source_class=0, goal_class=1)
    assert bool(maps.found.all()) and bool((maps.logit_change > 4.0).all())
    # every step adds exactly its change df_k: the 8-bit, curved path changes nothing about that
    assert float(maps.relative_completeness_error.max()) < 1e-5
    min_norm, _ = bb_lig(gcd, direction, images, source_class=0, goal_class=1, path=path, estimator="min_norm")
    assert float(min_norm.relative_completeness_error.min()) > 1e-3  # the endpoint form is not complete here
    # the white-box path sum is a Riemann sum: its error shrinks as the path gets more points
    errors = []
    for steps in (8, 64):
        fine = latent_path(gcd, direction, images, source_class=0, goal_class=1, path_steps=steps)
        white = white_box_lig(gcd, fine, lambda x: cubic_reader(x))
        errors.append(float(white.relative_completeness_error.median()))
    assert errors[1] < errors[0] / 3 and errors[1] < 0.05


def test_the_black_and_white_box_path_sums_agree_where_both_are_exact(toy):
    # a linear black box, a straight path along its gradient: the per-step estimate g_k is the true gradient
    BlackBox, _, faces, _ = toy
    gcd = GCD(BlackBox(), AffineQuadrants(), unit=6.0, threshold=0.5)
    images = AffineQuadrants().decode(torch.tensor([[-2.0, -1.0, 0.3, 0.0], [1.0, 0.5, -0.2, 1.0]]))
    path = latent_path(gcd, torch.tensor([2.0, 1.0, 0.0, 0.0]), images, source_class=0, goal_class=1, path_steps=8)
    assert bool(path.found.all())
    black, _ = bb_lig(gcd, torch.ones(4), images, source_class=0, goal_class=1, path=path)
    white = white_box_lig(gcd, path, reader)
    assert torch.allclose(black.maps, white.maps, atol=0.03 * float(white.maps.abs().max()))
    comparison = compare_attributions(black, white)
    assert comparison["cosine_median"] > 0.999 and comparison["top_overlap_median"] == 1.0
    assert comparison["white_box_completeness_median"] < 1e-3


def test_the_first_flipped_point_is_a_named_fallback_baseline(toy):
    BlackBox, Quadrants, faces, _ = toy
    gcd = GCD(BlackBox(), Quadrants(), unit=0.5, threshold=0.5)  # alpha 3 flips the image, never below 0.01
    images = faces([[-1.0, -0.5, 0.3, 0.0]])
    direction = torch.tensor([2.0, 1.0, 0.0, 0.0])
    paper = latent_path(gcd, direction, images, source_class=0, goal_class=1)
    assert paper.baseline_counts() == {"below_0.01": 0, "first_flip": 0, "none": 1}
    for baseline in ("paper_or_flip", "first_flip"):
        path = latent_path(gcd, direction, images, source_class=0, goal_class=1, baseline=baseline)
        assert path.baseline_counts() == {"below_0.01": 0, "first_flip": 1, "none": 0}
        maps, _ = bb_lig(gcd, direction, images, source_class=0, goal_class=1, path=path)
        # the path ends just past the flip: the log-odds fall from the image's side to just over 0
        assert float(maps.logit_change[0]) > 0 and float(reader(path.images[0, -1:])[0, 1]) >= 0
    # where 0.01 is reached, "paper_or_flip" keeps the paper's baseline
    reach = GCD(BlackBox(), Quadrants(), unit=2.0, threshold=0.5)
    both = latent_path(reach, direction, images, source_class=0, goal_class=1, baseline="paper_or_flip")
    alone = latent_path(reach, direction, images, source_class=0, goal_class=1)
    assert both.baseline_counts()["below_0.01"] == 1 and torch.equal(both.baseline_alpha, alone.baseline_alpha)
