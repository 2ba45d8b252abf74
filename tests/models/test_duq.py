import pytest
import torch

from vcex.data import ImageDataset
from vcex.errors import InputError, ModelError
from vcex.models.duq import (
    DUQNet,
    build_duq,
    certainty_score,
    duq_loss,
    duq_network,
    energy_score,
    train_duq,
)


def _dataset(images: torch.Tensor, labels: torch.Tensor, split: str) -> ImageDataset:
    return ImageDataset(images, labels, "mnist", split, [str(k) for k in range(10)])


@pytest.fixture(scope="module")
def tiny_duq(mnist_small):
    images, labels, test_images, test_labels = mnist_small
    model = build_duq(_dataset(images, labels, "train"), mean=(0.1307,), std=(0.3081,), width=8, feature_dim=64)
    record = train_duq(
        model,
        _dataset(images, labels, "train"),
        epochs=2,
        lr=3e-3,
        progress=False,
        test_dataset=_dataset(test_images, test_labels, "test"),
    )
    return model, record


def test_duq_trains_well_above_chance_and_reports_certainty(tiny_duq):
    model, record = tiny_duq
    assert not model.training
    assert record["test_accuracy"] > 0.6  # chance is 0.1
    assert 0.0 < record["test_true_class_certainty"] <= 1.0


def test_duq_certainties_are_kernel_values_and_logits_are_their_log(tiny_duq, mnist_small):
    model, _ = tiny_duq
    _, _, images, labels = mnist_small
    with torch.no_grad():
        certainty = certainty_score(model, images[:32])
        logits = model(images[:32])
    assert certainty.shape == (32, 10)
    assert bool((certainty > 0).all()) and bool((certainty <= 1).all())
    torch.testing.assert_close(logits.exp(), certainty)
    # the true class is on average far more certain than the others
    true = certainty.gather(1, labels[:32, None]).mean()
    assert float(true) > 2 * float(certainty.mean())


def test_duq_noise_is_less_certain_than_digits(tiny_duq, mnist_small):
    model, _ = tiny_duq
    _, _, images, _ = mnist_small
    noise = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        noise_certainty = certainty_score(model, noise).max(1).values.mean()
        digit_certainty = certainty_score(model, images[:32]).max(1).values.mean()
    assert float(noise_certainty) < float(digit_certainty)


def test_centroid_update_moves_centroids_toward_the_batch():
    torch.manual_seed(0)
    network = DUQNet(1, 3, 8, width=4, feature_dim=8, embedding_dim=4, momentum=0.5)
    embeddings = torch.ones(6, 4, 3) * 5.0
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    before = network.centroids.clone()
    network.update_centroids(embeddings, labels)
    after = network.centroids
    assert float((after[:, 0] - 5).abs().mean()) < float((before[:, 0] - 5).abs().mean())
    assert float((after[:, 1] - 5).abs().mean()) < float((before[:, 1] - 5).abs().mean())
    # class 2 had no images: its centroid only decays with its count, so it stays put
    torch.testing.assert_close(after[:, 2], before[:, 2])


def test_gradient_penalty_step_is_finite_and_trains_the_extractor(mnist_small):
    images, labels, _, _ = mnist_small
    model = build_duq(_dataset(images[:64], labels[:64], "train"), width=4, feature_dim=16, embedding_dim=8)
    model.train()
    step = duq_loss(model, gradient_penalty=0.5)
    loss = step(images[:32], labels[:32], torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.network.features[0][0].weight.grad is not None


def test_non_duq_models_are_refused_with_a_pointer_to_the_fix(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    assert duq_network(tiny_classifier) is None
    with pytest.raises(ModelError, match="energy_score"):
        certainty_score(tiny_classifier, images[:2])
    with pytest.raises(ModelError, match="build_duq"):
        duq_loss(tiny_classifier)
    with pytest.raises(InputError, match="divisible by 4"):
        DUQNet(1, 10, 30)


def test_energy_score_is_minus_logsumexp(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    with torch.no_grad():
        energy = energy_score(tiny_classifier, images[:8])
        expected = -torch.logsumexp(tiny_classifier(images[:8]), 1)
    assert energy.shape == (8,)
    torch.testing.assert_close(energy, expected)
