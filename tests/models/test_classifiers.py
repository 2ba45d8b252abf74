import pytest
import torch
from torch import nn

from vcex.errors import InputError, ModelError
from vcex.models import Classifier, KNNOracle, OracleNet, SmallCNN, as_classifier
from vcex.models.classifiers import check_differentiable, checked_logits


def test_normalisation_lives_in_the_wrapper():
    network = nn.Sequential(nn.Flatten(), nn.Identity())
    classifier = Classifier(network, mean=(0.5,), std=(0.25,))
    images = torch.full((2, 1, 2, 2), 0.75)
    assert torch.allclose(classifier(images), torch.ones(2, 4))


def test_single_logit_becomes_binary():
    classifier = as_classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)))
    logits = classifier(torch.rand(3, 1, 2, 2))
    assert logits.shape == (3, 2) and torch.equal(logits[:, 0], torch.zeros(3))


@pytest.mark.parametrize("batch", [1, 5])
def test_zoo_architectures_shapes(batch):
    images = torch.rand(batch, 1, 28, 28)
    assert SmallCNN()(images).shape == (batch, 10)
    assert OracleNet().eval()(images).shape == (batch, 10)


def test_checked_logits_refuses_wrong_output_shape():
    with pytest.raises(ModelError, match=r"\(N, classes\)"):
        checked_logits(as_classifier(lambda x: x.sum()), torch.rand(2, 1, 4, 4))
    with pytest.raises(ModelError, match="at least 2"):
        checked_logits(as_classifier(lambda x: torch.zeros(2, 1)[:, :0]), torch.rand(2, 1, 4, 4))


def test_checked_logits_turns_torch_errors_into_one_line():
    classifier = as_classifier(SmallCNN(in_channels=3))
    with pytest.raises(ModelError, match="channels"):
        checked_logits(classifier, torch.rand(2, 1, 28, 28))


def test_non_differentiable_classifier_is_refused():
    knn = KNNOracle(torch.rand(10, 1, 4, 4), torch.arange(10) % 2)
    with pytest.raises(ModelError, match="not differentiable"):
        check_differentiable(as_classifier(knn.votes), torch.rand(2, 1, 4, 4), "CounterfactualAttack")


def test_knn_oracle_finds_nearest_class():
    points = torch.cat([torch.zeros(5, 1, 2, 2), torch.ones(5, 1, 2, 2)])
    labels = torch.tensor([0] * 5 + [1] * 5)
    knn = KNNOracle(points, labels, k=3)
    queries = torch.stack([torch.full((1, 2, 2), 0.1), torch.full((1, 2, 2), 0.9)])
    assert knn.predict(queries).tolist() == [0, 1]
    assert torch.allclose(knn.votes(queries).sum(1), torch.ones(2))


def test_knn_oracle_bad_arguments():
    with pytest.raises(InputError, match="labels"):
        KNNOracle(torch.rand(4, 1, 2, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="k must"):
        KNNOracle(torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long), k=9)


@pytest.mark.parametrize("size", [32, 64])
def test_face_cnn_shapes(size):
    from vcex.models.classifiers import FaceCNN

    assert FaceCNN(3, 2, size).eval()(torch.rand(2, 3, size, size)).shape == (2, 2)


def test_a_classifier_that_returns_probabilities_is_refused_with_the_fix():
    softmax = as_classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Softmax(dim=1)))
    with pytest.raises(ModelError, match=r'returns probabilities .*not logits.*outputs="probabilities"'):
        checked_logits(softmax, torch.rand(4, 1, 4, 4))
    with pytest.raises(ModelError, match="not logits"):  # one image is enough
        checked_logits(softmax, torch.rand(1, 1, 4, 4))


def test_log_softmax_and_ordinary_logits_are_not_mistaken_for_probabilities():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 4, 4)
    log_softmax = as_classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.LogSoftmax(dim=1)))
    assert checked_logits(log_softmax, images).shape == (4, 3)
    # logits in [0, 1] whose rows do not sum to 1 are logits
    assert checked_logits(as_classifier(lambda x: torch.full((len(x), 3), 0.2)), images).shape == (4, 3)


def test_probability_outputs_become_log_probabilities():
    network = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Softmax(dim=1))
    classifier = Classifier(network, outputs="probabilities")
    images = torch.rand(4, 1, 4, 4)
    logits = checked_logits(classifier, images)
    with torch.no_grad():
        assert torch.allclose(logits, network(images).log()) and torch.allclose(logits.softmax(1), network(images))
    # one sigmoid output p is the binary classifier (1 - p, p)
    sigmoid = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Sigmoid()), outputs="probabilities")
    with torch.no_grad():
        p = sigmoid.network(images)[:, 0]
        assert torch.allclose(sigmoid(images).softmax(1)[:, 1], p)
    # a probability that underflowed to 0 gives a finite logit, not -inf
    zero = Classifier(lambda x: torch.tensor([[1.0, 0.0]]).expand(len(x), 2), outputs="probabilities")
    assert bool(torch.isfinite(checked_logits(zero, images)).all())
    with pytest.raises(InputError, match="outputs must be one of"):
        Classifier(network, outputs="softmax")
