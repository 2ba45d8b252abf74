import pytest
import torch
from torch import nn

from vcex.errors import InputError, ModelError
from vcex.evaluation import penultimate_features
from vcex.models import Classifier, OracleNet, SmallCNN
from vcex.models.classifiers import FaceCNN


def test_small_cnn_features_are_the_input_of_its_last_linear():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    images = torch.rand(5, 1, 28, 28)
    features = penultimate_features(model)(images)
    assert features.shape == (5, 128)
    with torch.no_grad():
        expected = model.head[:-1](model.features(images))
    assert torch.allclose(features, expected)


def test_classifier_wrapper_normalises_before_the_features():
    torch.manual_seed(0)
    network = SmallCNN().eval()
    classifier = Classifier(network, (0.5,), (0.25,))
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = network.head[:-1](network.features((images - 0.5) / 0.25))
    assert torch.allclose(penultimate_features(classifier)(images), expected, atol=1e-6)


def test_face_cnn_runs_in_eval_mode_and_restores_training():
    torch.manual_seed(0)
    model = FaceCNN(image_size=16).train()
    images = torch.rand(4, 3, 16, 16)
    extract = penultimate_features(model)
    first, second = extract(images), extract(images)
    assert first.shape == (4, 512)
    assert torch.equal(first, second)  # dropout is off while extracting
    assert model.training and model.head[3].training
    with torch.no_grad():
        expected = model.eval().head[:-1](model.features(images))
    assert torch.allclose(first, expected)


def test_oracle_net_uses_running_batch_norm_statistics():
    torch.manual_seed(0)
    model = OracleNet(width=8)
    model(torch.rand(16, 1, 28, 28))  # move the running statistics away from their initial values
    images = torch.rand(3, 1, 28, 28)
    features = penultimate_features(model)(images)
    assert features.shape == (3, 32)
    with torch.no_grad():
        expected = model.eval().body[:-1](images)
    assert torch.allclose(features, expected, atol=1e-6)


def test_generic_module_and_chunking():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 3))
    images = torch.rand(5, 3, 2, 2)
    features = penultimate_features(model, batch_size=2)(images)
    with torch.no_grad():
        expected = model[:3](images)
    assert torch.allclose(features, expected)


def test_binary_classifier_with_one_logit():
    torch.manual_seed(0)
    classifier = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)))
    images = torch.rand(2, 1, 2, 2)
    with torch.no_grad():
        expected = classifier.network[:3](images)
    assert torch.allclose(penultimate_features(classifier)(images), expected)


def test_models_without_a_final_linear_are_refused():
    with pytest.raises(InputError, match="feature function"):
        penultimate_features(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()))
    with pytest.raises(InputError, match="feature function"):
        penultimate_features(lambda images: images.flatten(1))
    probabilities = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=1))
    with pytest.raises(ModelError, match="feature function"):
        penultimate_features(probabilities)(torch.rand(2, 1, 2, 2))


def test_empty_batch_is_refused():
    with pytest.raises(InputError, match="non-empty"):
        penultimate_features(SmallCNN())(torch.zeros(0, 1, 28, 28))
