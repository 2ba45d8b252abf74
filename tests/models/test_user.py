"""vcex.models.user: a user's TorchScript file or entry point, loaded without unpickling and checked once."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vcex.errors import InputError, ModelError
from vcex.models import Classifier
from vcex.models.user import check_user_classifier, is_user_classifier, load_user_classifier, parse_normalize

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # the tests make TorchScript files as a user's are made; torch 2.13 deprecates making them, not loading them
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
]
TESTS = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture
def factory_path(monkeypatch):
    """``user_model_factory`` (tests/user_model_factory.py) importable, as a user's PYTHONPATH would make it."""
    monkeypatch.syspath_prepend(str(TESTS))


@pytest.fixture
def scripted(tiny_classifier, tmp_path):
    """The tiny classifier's network (expects normalised input) as a TorchScript file."""
    path = tmp_path / "user.pt"
    torch.jit.save(torch.jit.script(tiny_classifier.network), str(path))
    return path


def test_torchscript_file_with_normalize_gives_the_wrapper_logits(tiny_classifier, scripted, mnist_small):
    images = mnist_small[2][:16]
    classifier = load_user_classifier(str(scripted), mean=[0.1307], std=[0.3081], input_shape=(1, 28, 28))
    check_user_classifier(classifier, images, num_classes=10)
    with torch.no_grad():
        assert torch.allclose(classifier(images), tiny_classifier(images), atol=1e-5)
    assert classifier.source["file"] == str(scripted.resolve()) and len(classifier.source["sha256"]) == 64
    assert classifier.source["mean"] == [0.1307]


def test_check_runs_in_eval_mode_and_changes_nothing(scripted, mnist_small):
    classifier = load_user_classifier(str(scripted))
    classifier.train()  # batch norm in train mode would update its running statistics if vcex ran it so
    before = {name: tensor.clone() for name, tensor in classifier.state_dict().items()}
    check_user_classifier(classifier, mnist_small[2], num_classes=10)
    assert all(torch.equal(before[name], tensor) for name, tensor in classifier.state_dict().items())
    assert classifier.training and all(module.training for module in classifier.modules())


def test_wrong_number_of_classes_names_both(scripted, mnist_small):
    classifier = load_user_classifier(str(scripted))
    with pytest.raises(ModelError, match="returns 10 classes but the dataset has 2"):
        check_user_classifier(classifier, mnist_small[2], num_classes=2)


def test_nan_outputs_are_refused(tmp_path, mnist_small):
    path = tmp_path / "nan.pt"
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        network[1].bias.fill_(float("nan"))
    torch.jit.save(torch.jit.script(network), str(path))
    classifier = load_user_classifier(str(path))
    with pytest.raises(ModelError, match="NaN"):
        check_user_classifier(classifier, mnist_small[2], num_classes=10)


def test_missing_file_and_non_torchscript_file_are_named(tmp_path, tiny_classifier):
    with pytest.raises(InputError, match="nowhere.pt does not exist"):
        load_user_classifier(str(tmp_path / "nowhere.pt"))
    pickled = tmp_path / "pickled.pt"
    torch.save(tiny_classifier.network.state_dict(), pickled)
    with pytest.raises(ModelError, match="pickled.pt is not a TorchScript file"):
        load_user_classifier(str(pickled))


def test_entry_point_with_safetensors_weights(factory_path, tmp_path, mnist_small):
    import user_model_factory

    torch.manual_seed(3)
    reference = user_model_factory.make().eval()
    weights = tmp_path / "weights.safetensors"
    save_file(reference.state_dict(), str(weights))
    classifier = load_user_classifier("user_model_factory:make", weights=weights)
    images = mnist_small[2][:8]
    with torch.no_grad():
        assert torch.equal(classifier.eval()(images), reference(images))
    assert classifier.source["entry_point"] == "user_model_factory:make" and "weights_sha256" in classifier.source


def test_missing_and_unexpected_weight_keys_are_named(factory_path, tmp_path):
    import user_model_factory

    state = user_model_factory.make().state_dict()
    state["extra.weight"] = state.pop("4.weight")
    weights = tmp_path / "weights.safetensors"
    save_file(state, str(weights))
    with pytest.raises(ModelError, match=r"missing keys \['4.weight'\], unexpected keys \['extra.weight'\]"):
        load_user_classifier("user_model_factory:make", weights=weights)


def test_bad_entry_points_are_named(factory_path, tmp_path):
    with pytest.raises(InputError, match="cannot import module 'no_such_module'"):
        load_user_classifier("no_such_module:make")
    with pytest.raises(InputError, match="has no function 'missing'"):
        load_user_classifier("user_model_factory:missing")
    with pytest.raises(ModelError, match="must return an nn.Module, got str"):
        load_user_classifier("user_model_factory:not_a_module")
    with pytest.raises(InputError, match="nope.safetensors does not exist"):
        load_user_classifier("user_model_factory:make", weights=tmp_path / "nope.safetensors")


def test_weights_with_a_torchscript_file_are_refused(scripted, tmp_path):
    with pytest.raises(InputError, match="--weights is for an entry point"):
        load_user_classifier(str(scripted), weights=tmp_path / "w.safetensors")


def test_parse_normalize():
    assert parse_normalize("0.286/0.353") == ([0.286], [0.353])
    assert parse_normalize("0.286,0.353") == ([0.286], [0.353])
    assert parse_normalize("0.5,0.4,0.3/0.2,0.2,0.2") == ([0.5, 0.4, 0.3], [0.2, 0.2, 0.2])
    for bad, message in [("0.5", "is not MEAN/STD"), ("0.5,0.5/0.2", "2 means but 1 stds"), ("0.5/0", "positive")]:
        with pytest.raises(InputError, match=message):
            parse_normalize(bad)


def test_class_names_from_a_file_are_counted(scripted, tmp_path, mnist_small):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"digit {k}" for k in range(9)) + "\n")
    classifier = load_user_classifier(str(scripted), classes=classes)
    assert isinstance(classifier, Classifier) and classifier.class_names[0] == "digit 0"
    with pytest.raises(InputError, match="--classes names 9 classes but the dataset and the classifier have 10"):
        check_user_classifier(classifier, mnist_small[2], num_classes=10)


def test_is_user_classifier(scripted):
    assert is_user_classifier(str(scripted)) and is_user_classifier("pkg.mod:factory")
    assert not is_user_classifier("smiling") and not is_user_classifier(None)


def test_a_torchscript_vae_returning_mean_and_log_variance_is_read_by_its_mean(tmp_path, mnist_small):
    from vcex.models.user import check_user_latent_model, load_user_latent_model

    class TupleVAE(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_mean, self.to_logvar, self.decoder = (torch.nn.Linear(784, 4), torch.nn.Linear(784, 4),
                                                          torch.nn.Linear(4, 784))  # fmt: skip

        @torch.jit.export
        def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.to_mean(images.flatten(1)), self.to_logvar(images.flatten(1))

        @torch.jit.export
        def decode(self, latents: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.decoder(latents)).view(-1, 1, 28, 28)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.decode(self.encode(images)[0])

    vae = TupleVAE()
    path = tmp_path / "vae.pt"
    torch.jit.save(torch.jit.script(vae), str(path))
    latent_model = load_user_latent_model(str(path))
    images = mnist_small[2][:8]
    with pytest.warns(UserWarning, match="first element is taken as the latent"):
        check_user_latent_model(latent_model, images)
    with torch.no_grad():
        assert torch.allclose(latent_model.encode(images), vae.to_mean(images.flatten(1)), atol=1e-6)
    assert latent_model.source["sha256"]
    with pytest.raises(InputError, match="an ONNX file is a black box"):
        load_user_latent_model("vae.onnx")
    with pytest.raises(InputError, match="--latent-weights is for an entry point"):
        load_user_latent_model(str(path), weights=tmp_path / "w.safetensors")
