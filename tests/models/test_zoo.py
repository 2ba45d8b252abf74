import pytest
import torch

from vcex.errors import InputError
from vcex.models import load_classifier, load_model, model_spec, zoo

TINY = {"cnn": 1, "oracle": 1, "vae": 1, "im-ae": 1}


@pytest.fixture
def tiny_recipes(monkeypatch):
    monkeypatch.setitem(zoo._EPOCHS, "mnist", dict(TINY))


def test_trains_once_then_loads_from_cache(tiny_recipes, monkeypatch):
    classifier = load_classifier("mnist-cnn", progress=False)
    record = classifier.training_record
    assert record["dataset"] == "mnist" and record["seed"] == 0 and 0.5 < record["test_accuracy"] <= 1
    assert model_spec("mnist-cnn").path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("should load from the cache, not train")

    monkeypatch.setattr(zoo, "fit", no_training)
    again = load_classifier("mnist-cnn", progress=False)
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(again(images), classifier(images))


def test_corrupt_cache_is_retrained_with_a_warning(tiny_recipes):
    path = model_spec("mnist-im-ae").path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unusable"):
        model = load_model("mnist-im-ae", progress=False)
    assert model.training_record["role"] == "im-ae"
    assert load_model("mnist-im-ae", progress=False) is not None  # now a valid file


def test_unknown_model_name_lists_known_names():
    with pytest.raises(InputError, match="mnist-cnn"):
        load_model("mnist-resnet")
    with pytest.raises(InputError, match="known models"):
        load_model("cifar-cnn")
