import pytest
import torch

from vcex.errors import DatasetNotFoundError, InputError
from vcex.models import load_classifier, load_model, model_spec, zoo

TINY = {"cnn": 1, "oracle": 1, "vae": 1, "im-ae": 1}


@pytest.fixture
def tiny_recipes(shrink_profile):
    shrink_profile("mnist", zoo_epochs=TINY)


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


@pytest.fixture
def tiny_folder_recipes(shrink_profile):
    shrink_profile("folder", folder_epochs=(1, 1))


@pytest.mark.filterwarnings("ignore:.*close to chance")  # one-epoch models
def test_a_folder_of_the_users_images_gets_zoo_models(tiny_folder_recipes, bar_folder, tmp_path, monkeypatch):
    root = bar_folder(tmp_path / "bars")
    classifier = load_classifier(f"folder:{root}-cnn", progress=False)
    assert classifier.class_names == ["horizontal", "vertical"] and classifier.input_shape == (1, 16, 16)
    spec = model_spec(f"folder:{root}-cnn")
    assert spec.path.exists() and spec.path.name.startswith("folder-bars-") and ":" not in spec.path.name
    record = classifier.training_record
    # 12 images per class, 2 of each held out for the test split
    assert record["dataset"] == f"folder:{root}" and record["config"]["train_images"] == 20
    monkeypatch.chdir(tmp_path)  # a relative path names the same dataset, hence the same cached model
    assert model_spec("folder:bars-cnn").path == spec.path
    vae = load_model("folder:bars-vae", progress=False)
    assert vae.decode(vae.encode(torch.rand(2, 1, 16, 16))).shape == (2, 1, 16, 16)

    # new images make a new recipe fingerprint: the old model is not reused for other data
    (root / "vertical" / "0.png").rename(root / "vertical" / "extra.png")
    assert model_spec(f"folder:{root}-cnn").path != spec.path


def test_folder_images_the_zoo_cannot_take_are_refused_with_the_fix(tiny_folder_recipes, bar_folder, tmp_path):
    root = bar_folder(tmp_path / "odd", side=18)
    with pytest.raises(InputError, match=r"multiple of 4.*18x18.*@32"):
        model_spec(f"folder:{root}-vae")
    assert model_spec(f"folder:{root}@20-vae").config["train_images"] == 20  # resized when read
    with pytest.raises(DatasetNotFoundError, match="one subfolder of images per class"):
        model_spec(f"folder:{tmp_path / 'missing'}-cnn")
    with pytest.raises(InputError, match="known models"):
        model_spec(f"folder:{root}-resnet")


@pytest.mark.filterwarnings("ignore:.*close to chance")  # one-epoch models
def test_rgb_folders_get_the_oracle_design_that_reads_small_features(tiny_folder_recipes, bar_folder, tmp_path):
    from PIL import Image

    from vcex.models.faces import conv_pair_net

    gray = bar_folder(tmp_path / "gray")
    assert model_spec(f"folder:{gray}-oracle").config["arch"] == "OracleNet"
    for name in ("red", "blue"):
        (tmp_path / "rgb" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (16, 16), (250, i, 0) if name == "red" else (0, i, 250)).save(
                tmp_path / "rgb" / name / f"{i}.png"
            )
    assert model_spec(f"folder:{tmp_path / 'rgb'}-oracle").config["arch"] == "conv_pair_net"
    oracle = load_classifier(f"folder:{tmp_path / 'rgb'}-oracle", progress=False)
    assert [type(m) for m in oracle.network] == [type(m) for m in conv_pair_net(2)]  # the design, layer by layer


def test_a_classifier_trained_near_chance_is_reported(tiny_folder_recipes, tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for name in ("a", "b"):  # the same noise in both classes: nothing to learn
        (tmp_path / "noise" / name).mkdir(parents=True)
        for i in range(20):
            pixels = (torch.rand(16, 16, generator=generator) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "noise" / name / f"{i}.png")
    with pytest.warns(UserWarning, match=r"close to chance \(0.500 for 2 classes\).*oracle agreement"):
        load_model(f"folder:{tmp_path / 'noise'}-oracle", progress=False)
