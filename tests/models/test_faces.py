import pytest
import torch

from vcex.cache import save_weights
from vcex.data import faces_tasks
from vcex.data.faces_tasks import ATTRIBUTE_NAMES, CONTENT_FACTORS, attribute_matrix, factor_matrix
from vcex.data.synthetic_faces import make_faces
from vcex.errors import InputError
from vcex.models import zoo
from vcex.models.faces import (
    AttributeOracle,
    FactorRegressor,
    attribute_agreement,
    train_attribute_oracle,
    train_factor_regressor,
)
from vcex.models.stylegan import StyleAutoencoder, StyleGeneratorConfig, StyleSpaceModel


@pytest.fixture(scope="module")
def faces_32():
    return make_faces(800, seed=5, size=32), make_faces(200, seed=6, size=32)


@pytest.fixture(scope="module")
def trained_oracle(faces_32):
    train, test = faces_32
    torch.manual_seed(0)
    oracle = AttributeOracle()
    figures = train_attribute_oracle(
        oracle, train, test, epochs=3, seed=0, progress=False, batch_size=16, blur_sigma=1.2
    )
    return oracle.eval(), figures


def test_attribute_oracle_learns_the_easy_attributes(faces_32, trained_oracle):
    _, test = faces_32
    oracle, figures = trained_oracle
    per = figures["test_accuracy_per_attribute"]
    assert set(per) == set(ATTRIBUTE_NAMES)
    # glasses, beards and lipstick are large, high-contrast shapes: far above the majority rate
    for name in ("eyeglasses", "beard"):
        majority = float(attribute_matrix(test, (name,)).mean())
        assert per[name] > max(majority, 1 - majority) + 0.1, (name, per[name], majority)
    # trained with blurred faces, it still reads glasses through a sigma-1 blur (one trained on sharp
    # faces alone read "no glasses" on every face blurred by sigma 0.8)
    blurred = figures["test_accuracy_blur_1.0_per_attribute"]
    majority = float(attribute_matrix(test, ("eyeglasses",)).mean())
    assert blurred["eyeglasses"] > max(majority, 1 - majority) + 0.1
    assert 0 < figures["test_accuracy_blur_0.6"] <= 1 and 0 < figures["test_accuracy_blur_1.0"] <= 1
    predicted = oracle.predict(test.images[:7])
    assert predicted.shape == (7, len(ATTRIBUTE_NAMES)) and set(predicted.unique().tolist()) <= {0, 1}
    assert oracle.index(["beard", "smiling"]) == [ATTRIBUTE_NAMES.index("beard"), ATTRIBUTE_NAMES.index("smiling")]
    with pytest.raises(InputError, match="unknown attribute"):
        oracle.index(["attractive"])


def test_factor_regressor_beats_predicting_the_mean(faces_32):
    train, test = faces_32
    torch.manual_seed(0)
    regressor = FactorRegressor()
    figures = train_factor_regressor(regressor, train, test, epochs=3, seed=0, progress=False, batch_size=16)
    per = figures["test_mae_per_factor"]
    assert set(per) == set(CONTENT_FACTORS)
    # the error of always answering the training mean, per factor
    baseline = (factor_matrix(test) - factor_matrix(train).mean(0)).abs().mean(0)
    for name in ("eyeglasses", "beard", "hair_color"):
        assert per[name] < 0.6 * float(baseline[CONTENT_FACTORS.index(name)]), (name, per[name])
    features = regressor.features(test.images[:4])
    assert features.dim() == 2 and features.shape[0] == 4


def test_attribute_agreement_is_one_for_identity_and_drops_for_a_blank(faces_32, trained_oracle):
    _, test = faces_32
    oracle, _ = trained_oracle
    same = attribute_agreement(oracle, test.images[:64], lambda x: x)
    assert same["mean"] == 1.0
    blank = attribute_agreement(oracle, test.images[:64], lambda x: torch.full_like(x, 0.5))
    assert blank["mean"] < 1.0 and set(blank["per_attribute"]) == set(ATTRIBUTE_NAMES)


def test_stylespace_model_is_the_autoencoder_seen_through_its_styles():
    torch.manual_seed(0)
    autoencoder = StyleAutoencoder(StyleGeneratorConfig(image_size=16, w_dim=16, base_channels=4, max_channels=16))
    view = StyleSpaceModel(autoencoder).eval()
    images = torch.rand(3, 3, 16, 16)
    s = view.encode(images)
    assert s.shape == (3, autoencoder.style_dim)
    torch.testing.assert_close(view.decode(s), autoencoder(images))


def test_face_models_are_in_the_zoo_with_their_recipes():
    names = zoo.model_names()
    assert {"faces-attributes", "faces-factors", "faces-style"} <= set(names)
    style = zoo.model_spec("faces-style")
    assert style.role == "style" and style.config["image_size"] == faces_tasks.FACES_MODEL_SIZE
    assert style.shipped_path.parent == zoo.SHIPPED_WEIGHTS and style.shipped_path.name == style.path.name
    # a face task's classifier is fingerprinted with the size it works at
    assert zoo.model_spec("faces-smiling-cnn").config["image_size"] == faces_tasks.FACES_MODEL_SIZE


def test_shipped_weights_are_used_when_their_recipe_matches(tmp_path, monkeypatch):
    monkeypatch.setenv("VCEX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(zoo, "SHIPPED_WEIGHTS", tmp_path)
    spec = zoo.model_spec("faces-attributes")
    monkeypatch.setattr(zoo, "_face_model_spec", lambda name: _with(spec))
    torch.manual_seed(3)
    model = AttributeOracle()
    save_weights(spec.shipped_path, model.state_dict(), {"fingerprint": spec.fingerprint})
    assert not spec.path.exists()

    def no_training(*args, **kwargs):
        raise AssertionError("shipped weights should have been loaded")

    monkeypatch.setattr(spec, "train", no_training)
    monkeypatch.setattr(spec, "load_data", lambda split: None)
    loaded = zoo.load_model("faces-attributes", progress=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)


def test_shipped_weights_of_another_recipe_are_refused_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("VCEX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(zoo, "SHIPPED_WEIGHTS", tmp_path)
    spec = zoo.model_spec("faces-attributes")
    patched = _with(spec)
    monkeypatch.setattr(zoo, "_face_model_spec", lambda name: patched)
    save_weights(spec.shipped_path, AttributeOracle().state_dict(), {"fingerprint": "other"})
    trained = []

    def fake_train(model, train, test, seed, progress):
        trained.append(True)
        return {}

    patched.train = fake_train
    patched.load_data = lambda split: make_faces(8, seed=0, size=32)
    with pytest.warns(UserWarning, match="another recipe"):
        zoo.load_model("faces-attributes", progress=False)
    assert trained == [True]


def _with(spec: zoo.ModelSpec, **changes) -> zoo.ModelSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def test_every_shipped_file_matches_its_current_recipe_and_loads():
    shipped = sorted(zoo.SHIPPED_WEIGHTS.glob("*.safetensors"))
    assert shipped, "vcex ships the faces models it cannot train quickly on a CPU"
    for path in shipped:
        name = path.stem.rsplit("-", 1)[0]
        spec = zoo.model_spec(name)
        # a recipe change without re-shipping would leave the file unused: this catches it
        assert spec.path.name == path.name, f"{path.name} no longer matches the recipe of {name}"
    model = zoo.load_model("faces-style", progress=False)
    assert model.training_record["test_psnr"] > 20 and not zoo.model_spec("faces-style").path.exists()
