import pytest
import torch

from vcex.errors import InputError
from vcex.evaluation import (
    diversity,
    diversity_reference,
    identity_metrics,
    identity_preservation,
    mean_diversity,
    mean_pairwise_distance,
    nearest_original,
)


def spread_features(n: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """n well-separated feature vectors (N, dim)."""
    return 10 * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def two_class_reference(dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Real features of classes 0 and 1, 50 each, labels (100,)."""
    return spread_features(100, dim, seed=1), torch.arange(2).repeat_interleave(50)


def test_small_edits_keep_identity_and_diversity():
    originals = spread_features(20)
    counterfactuals = originals + 0.1 * torch.randn(20, 8, generator=torch.Generator().manual_seed(3))
    matched = identity_preservation(originals, counterfactuals)
    assert matched.shape == (20,) and matched.dtype == torch.bool and bool(matched.all())
    assert torch.equal(nearest_original(originals, counterfactuals), torch.arange(20))
    targets = torch.arange(2).repeat(10)
    real, labels = two_class_reference()
    per_class = diversity(counterfactuals, targets, real, labels)
    # the same random distribution as the reference: ratios near 1
    assert set(per_class) == {0, 1} and all(0.7 < value < 1.3 for value in per_class.values())


def test_one_template_per_class_collapses_both_scores():
    originals = spread_features(20)
    targets = torch.arange(2).repeat(10)
    templates = spread_features(2, seed=5)
    counterfactuals = templates[targets] + 1e-4 * torch.randn(20, 8, generator=torch.Generator().manual_seed(4))
    matched = identity_preservation(originals, counterfactuals)
    # each template is nearest to one original at most: at most 2 of 20 keep their identity (chance 1/20)
    assert int(matched.sum()) <= 2
    real, labels = two_class_reference()
    per_class = diversity(counterfactuals, targets, real, labels)
    assert all(value < 1e-3 for value in per_class.values())
    assert mean_diversity(per_class) < 1e-3


def test_identity_is_judged_against_every_original_not_only_the_own_class():
    originals = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # the first counterfactual moved next to the second original: it lost its identity
    counterfactuals = torch.tensor([[9.0, 0.0], [10.0, 1.0], [0.0, 9.0]])
    assert identity_preservation(originals, counterfactuals).tolist() == [False, True, True]
    assert nearest_original(originals, counterfactuals).tolist() == [1, 1, 2]


def test_a_tie_with_a_duplicated_original_counts_as_preserved():
    originals = torch.tensor([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    assert identity_preservation(originals, originals + 0.1).tolist() == [True, True, True]


def test_batch_of_one_and_chunked_batches():
    one = torch.randn(1, 4)
    assert identity_preservation(one, one + 5).tolist() == [True]  # the only original is its own
    originals = spread_features(2500, dim=4)
    counterfactuals = originals.clone()
    counterfactuals[2000] = originals[7]  # past the first chunk of 1,024 rows
    matched = identity_preservation(originals, counterfactuals)
    assert int(matched.sum()) == 2499 and not bool(matched[2000])


def test_mean_pairwise_distance_known_value():
    # a right triangle with sides 3, 4, 5
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert mean_pairwise_distance(points) == pytest.approx(4.0)


def test_class_with_one_counterfactual_has_no_ratio_and_is_left_out_of_the_mean():
    real, labels = two_class_reference()
    counterfactuals = spread_features(5, seed=2)
    per_class = diversity(counterfactuals, torch.tensor([0, 0, 0, 0, 1]), real, labels)
    assert per_class[1] is None and per_class[0] is not None
    assert mean_diversity(per_class) == pytest.approx(per_class[0])
    assert mean_diversity({3: None}) is None


def test_identity_metrics_record():
    originals = spread_features(10)
    real, labels = two_class_reference()
    targets = torch.tensor([0] * 9 + [1])
    record = identity_metrics(originals, originals.clone(), targets, (real, labels))
    assert record["identity_preservation"] == 1.0 and record["identity_chance"] == 0.1 and record["identity_n"] == 10
    assert record["diversity_per_class"]["1"] is None and record["diversity"] == record["diversity_per_class"]["0"]
    without = identity_metrics(originals, originals, targets)
    assert without["diversity"] is None and without["diversity_per_class"] is None


def test_diversity_reference_takes_the_first_images_of_each_class():
    images = torch.arange(12.0).view(12, 1, 1, 1)
    labels = torch.tensor([0, 1] * 6)
    features, kept = diversity_reference(images, labels, lambda x: x.flatten(1), per_class=2)
    assert features.flatten().tolist() == [0.0, 2.0, 1.0, 3.0] and kept.tolist() == [0, 0, 1, 1]
    with pytest.raises(InputError, match="per_class"):
        diversity_reference(images, labels, lambda x: x.flatten(1), per_class=1)


@pytest.mark.parametrize(
    ("originals", "counterfactuals", "message"),
    [
        (torch.zeros(0, 4), torch.zeros(0, 4), "at least 1 row"),
        (torch.zeros(3, 4), torch.zeros(2, 4), "paired row by row"),
        (torch.zeros(3, 4), torch.zeros(3, 5), "paired row by row"),
        (torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2), r"\(N, D\)"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4), "floating point"),
        (torch.full((3, 4), float("nan")), torch.zeros(3, 4), "NaN"),
    ],
)
def test_identity_refuses_bad_features(originals, counterfactuals, message):
    with pytest.raises(InputError, match=message):
        identity_preservation(originals, counterfactuals)


def test_diversity_refuses_bad_input():
    real, labels = two_class_reference()
    counterfactuals = spread_features(4)
    with pytest.raises(InputError, match=r"targets must be \(4,\)"):
        diversity(counterfactuals, torch.tensor([0, 1]), real, labels)
    with pytest.raises(InputError, match="integer"):
        diversity(counterfactuals, torch.zeros(4), real, labels)
    with pytest.raises(InputError, match="same dimension"):
        diversity(counterfactuals, torch.zeros(4, dtype=torch.long), real[:, :4], labels)
    with pytest.raises(InputError, match="class 2 has 0 real images"):
        diversity(counterfactuals, torch.full((4,), 2), real, labels)
    with pytest.raises(InputError, match="same features"):
        zeros = torch.zeros(10, dtype=torch.long)
        diversity(counterfactuals, torch.zeros(4, dtype=torch.long), torch.ones(10, 8), zeros)
    with pytest.raises(InputError, match="at least 2 rows"):
        mean_pairwise_distance(torch.zeros(1, 3))
