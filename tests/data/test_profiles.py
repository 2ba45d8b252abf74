"""Dataset profiles: each name maps to its family's profile, and a test's override is undone afterwards."""

import pytest

from vcex.data.profiles import family_of, override_profile, profile_for
from vcex.errors import InputError


@pytest.mark.parametrize(
    ("name", "family", "faces"),
    [
        ("mnist", "mnist", False),
        ("fmnist", "fashion", False),
        ("faces", "faces", True),
        ("faces-smiling-spurious", "faces", True),
        ("folder:/tmp/x@32", "folder", False),
    ],
)
def test_every_dataset_name_has_its_familys_profile(name, family, faces):
    assert family_of(name) == family
    assert profile_for(name).faces is faces


def test_the_faces_profile_names_its_extra_models_and_metrics():
    faces, mnist = profile_for("faces-young"), profile_for("mnist")
    assert faces.latent_model == "faces-style" and faces.attribute_oracle == "faces-attributes"
    assert "mnac" in faces.metrics and faces.global_target == "flip" and faces.global_reader == "images"
    assert mnist.latent_model is None and mnist.attribute_oracle is None and mnist.global_target == "second"
    assert set(mnist.zoo_epochs) == {"cnn", "oracle", "vae", "im-ae", "duq"}


def test_an_unknown_dataset_is_refused_with_the_known_ones():
    with pytest.raises(InputError, match="known datasets"):
        profile_for("cifar")


def test_an_override_lasts_for_its_block_only():
    before = profile_for("mnist")
    with pytest.raises(RuntimeError), override_profile("mnist", zoo_epochs={"cnn": 1}, image_reader_epochs=1) as now:
        assert profile_for("mnist") is now and now.zoo_epochs == {"cnn": 1} and now.image_reader_epochs == 1
        assert now.attack_lr == before.attack_lr  # fields not named are kept
        raise RuntimeError("the block failed")
    assert profile_for("mnist") is before


def test_an_override_of_an_unknown_family_or_field_is_refused():
    with pytest.raises(InputError, match="unknown dataset family"), override_profile("cifar", zoo_epochs={}):
        pass
    with pytest.raises(InputError, match="unknown profile field"), override_profile("mnist", epochs=3):
        pass


def test_profiles_cannot_be_changed_in_place():
    with pytest.raises(TypeError):
        profile_for("mnist").zoo_epochs["cnn"] = 1
