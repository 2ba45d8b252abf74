import math

import pytest
import torch

from vcex.errors import InputError
from vcex.evaluation import frechet_distance, kid, knn_target_distance, split_frechet_distance


def gaussian_sample(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """A sample whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    noise = noise - noise.mean(0)
    whitened = noise @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(noise.T))).T
    return whitened @ torch.linalg.cholesky(cov).T + mean


def test_identical_sets_have_zero_distance():
    features = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_shift_only_gives_the_squared_shift():
    features = torch.randn(100, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    assert frechet_distance(features, features + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-9)


def test_diagonal_gaussians_match_the_closed_form():
    mean_a, mean_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    a = gaussian_sample(mean_a.double(), torch.diag(var_a).double(), 300, 1)
    b = gaussian_sample(mean_b.double(), torch.diag(var_b).double(), 200, 2)
    # |mu_a - mu_b|^2 + sum (sqrt(var_a) - sqrt(var_b))^2 = 10 + (4 + 1 + 0)
    assert frechet_distance(a, b) == pytest.approx(15.0, rel=1e-9)


def test_correlated_gaussians_match_the_closed_form():
    cov_a = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    cov_b = torch.tensor([[1.0, -0.3], [-0.3, 0.5]], dtype=torch.float64)
    mean_a, mean_b = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([3.0, 4.0], dtype=torch.float64)
    a, b = gaussian_sample(mean_a, cov_a, 150, 3), gaussian_sample(mean_b, cov_b, 150, 4)
    # for 2x2 matrices tr((AB)^1/2) = sqrt(tr(AB) + 2 sqrt(det A det B))
    cross = math.sqrt(float((cov_a @ cov_b).trace()) + 2 * math.sqrt(float(cov_a.det() * cov_b.det())))
    expected = 25.0 + float(cov_a.trace() + cov_b.trace()) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def test_agrees_with_scipy_sqrtm():
    from scipy.linalg import sqrtm

    generator = torch.Generator().manual_seed(5)
    a = torch.randn(60, 6, generator=generator, dtype=torch.float64)
    b = torch.randn(80, 6, generator=generator, dtype=torch.float64) @ torch.randn(6, 6, generator=generator).double()
    cov_a, cov_b = torch.cov(a.T).numpy(), torch.cov(b.T).numpy()
    cross = sqrtm(cov_a @ cov_b).real.trace()
    expected = float((a.mean(0) - b.mean(0)).pow(2).sum()) + cov_a.trace() + cov_b.trace() - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_split_frechet_distance_is_zero_for_identical_sets_only_in_expectation():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(400, 4, generator=generator)
    same = split_frechet_distance(real, real, repeats=3)
    shifted = split_frechet_distance(real, real + 2.0, repeats=3)
    # identical pairs are never compared, so the score is the finite-sample gap between halves, not 0
    assert 0 < same < 0.2
    assert shifted == pytest.approx(16.0 + same, rel=0.05)


def brute_force_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    def k(u, v):
        return (float(u @ v) / len(u) + 1) ** 3

    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_on_whole_sets_equals_the_unbiased_mmd():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator) + 0.5
    mean, std = kid(x, y, subsets=4, subset_size=50)
    assert mean == pytest.approx(brute_force_mmd2(x.double(), y.double()), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12)  # every subset is the whole set, reordered


def test_kid_near_zero_for_one_distribution_and_larger_when_shifted():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 8, generator=generator), torch.randn(300, 8, generator=generator)
    same_mean, same_std = kid(a, b, subsets=20, subset_size=100)
    shifted_mean, _ = kid(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 20 * abs(same_mean) and shifted_mean > 0.1
    assert kid(a, b, subsets=20, subset_size=100) == (same_mean, same_std)  # seeded: repeatable
    assert kid(a, b, subsets=1, subset_size=100)[1] == 0.0


def test_bad_feature_sets_are_refused():
    with pytest.raises(InputError, match=r"\(N, D\)"):
        frechet_distance(torch.randn(5), torch.randn(5, 1))
    with pytest.raises(InputError, match="same dimension"):
        frechet_distance(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(InputError, match="at least 2"):
        kid(torch.randn(1, 2), torch.randn(5, 2))
    with pytest.raises(InputError, match="NaN"):
        frechet_distance(torch.full((3, 2), float("nan")), torch.randn(3, 2))
    with pytest.raises(InputError, match="paired"):
        split_frechet_distance(torch.randn(6, 2), torch.randn(8, 2))


def brute_force_knn(counterfactuals, targets, train_images, train_labels, k):
    rows = []
    for image, target in zip(counterfactuals.flatten(1), targets):
        pool = train_images.flatten(1)[train_labels == target]
        rows.append(sorted(float((image - point).norm()) for point in pool)[:k])
    return torch.tensor(rows).mean(1)


def test_knn_target_distance_matches_brute_force():
    generator = torch.Generator().manual_seed(0)
    train_images = torch.rand(60, 1, 4, 4, generator=generator)
    train_labels = torch.arange(60) % 3
    counterfactuals = torch.rand(11, 1, 4, 4, generator=generator)
    targets = torch.randint(0, 3, (11,), generator=generator)
    expected = brute_force_knn(counterfactuals, targets, train_images, train_labels, 4)
    result = knn_target_distance(counterfactuals, targets, train_images, train_labels, k=4, batch_size=3)
    assert result.shape == (11,)
    assert torch.allclose(result, expected, atol=1e-5)


def test_knn_target_distance_known_values():
    train_images = torch.tensor([0.0, 1.0, 3.0, 10.0, 20.0]).view(5, 1, 1, 1)
    train_labels = torch.tensor([0, 0, 0, 1, 1])
    counterfactuals = torch.tensor([0.0, 0.0, 12.0]).view(3, 1, 1, 1)
    targets = torch.tensor([0, 1, 1])
    result = knn_target_distance(counterfactuals, targets, train_images, train_labels, k=2)
    assert result.tolist() == [0.5, 15.0, 5.0]
    on_a_training_image = knn_target_distance(train_images[:1], torch.tensor([0]), train_images, train_labels, k=1)
    assert on_a_training_image.tolist() == [0.0]


def test_knn_target_distance_refuses_bad_input():
    train_images, train_labels = torch.rand(6, 1, 2, 2), torch.tensor([0, 0, 0, 1, 1, 1])
    with pytest.raises(InputError, match="fewer than k"):
        knn_target_distance(torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), train_images, train_labels, k=4)
    with pytest.raises(InputError, match="train_images must have shape"):
        knn_target_distance(torch.rand(2, 1, 3, 3), torch.tensor([0, 1]), train_images, train_labels)
    with pytest.raises(InputError, match="targets"):
        knn_target_distance(torch.rand(2, 1, 2, 2), torch.tensor([0]), train_images, train_labels, k=1)
    with pytest.raises(InputError, match="non-empty"):
        knn_target_distance(torch.rand(0, 1, 2, 2), torch.tensor([]), train_images, train_labels)


def _dark_and_bright(seed: int):
    """Class 0 images dark, class 1 bright (400 each), their labels, a generator to draw more, and features
    that tell them apart (each image's mean and spread)."""
    generator = torch.Generator().manual_seed(seed)
    dark = torch.rand(400, 1, 4, 4, generator=generator) * 0.3
    bright = 0.7 + torch.rand(400, 1, 4, 4, generator=generator) * 0.3
    labels = torch.cat([torch.zeros(400, dtype=torch.long), torch.ones(400, dtype=torch.long)])

    def features(images):
        return torch.stack([images.flatten(1).mean(1), images.flatten(1).std(1)], 1)

    return dark, bright, labels, generator, features


def test_target_class_frechet_compares_with_the_target_classes_real_images():
    from vcex.evaluation import target_class_frechet

    dark, bright, labels, generator, features = _dark_and_bright(0)
    train = torch.cat([dark, bright])
    bright_cfs = 0.7 + torch.rand(100, 1, 4, 4, generator=generator) * 0.3
    targets = torch.ones(100, dtype=torch.long)
    right = target_class_frechet(bright_cfs, targets, train, labels, features, reference_size=300)
    wrong = target_class_frechet(bright_cfs, 1 - targets, train, labels, features, reference_size=300)
    assert right < 0.01 < wrong
    with pytest.raises(InputError, match="class 2 has 0 training images"):
        target_class_frechet(bright_cfs, torch.full((100,), 2), train, labels, features)


def test_target_class_kid_and_reference_share_the_target_classes_images():
    from vcex.evaluation import kid, target_class_kid, target_class_reference

    dark, bright, labels, _, features = _dark_and_bright(1)
    train = torch.cat([dark, bright])
    # three quarters of the counterfactuals target class 1: the reference takes the classes in that share
    targets = torch.tensor([1, 1, 1, 0] * 25)
    reference = target_class_reference(targets, train, labels, reference_size=200)
    assert reference.shape == (200, 1, 4, 4)
    assert torch.equal(reference[:50], dark[:50]) and torch.equal(reference[50:], bright[:150])

    cfs = torch.where(targets.view(-1, 1, 1, 1) == 1, bright[200:300], dark[200:300])  # real images of the targets
    right_mean, right_std = target_class_kid(cfs, targets, train, labels, features, reference_size=200, subsets=10)
    wrong_mean, _ = target_class_kid(cfs, 1 - targets, train, labels, features, reference_size=200, subsets=10)
    assert abs(right_mean) < 0.01 < wrong_mean and right_std >= 0
    # it is kid() on the reference's and the counterfactuals' features
    expected = kid(features(reference), features(cfs), subsets=10)
    assert target_class_kid(cfs, targets, train, labels, features, reference_size=200, subsets=10) == expected
    with pytest.raises(InputError, match="targets must be"):
        target_class_kid(cfs, targets[:5], train, labels, features)
