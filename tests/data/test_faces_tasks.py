import pytest
import torch

from vcex.data import load_dataset
from vcex.data.faces_tasks import FACE_TASKS, face_task, load_faces
from vcex.data.synthetic_faces import compute_attributes, sample_factors
from vcex.errors import InputError


def test_test_split_is_unbiased_and_labelled():
    test = load_dataset("faces-smiling", "test")
    assert test.images.shape == (2000, 3, 32, 32) and test.labels.dtype == torch.int64
    assert 0.4 < float(test.labels.float().mean()) < 0.6 and test.class_names == ["not smiling", "smiling"]


def test_young_is_a_function_of_three_factors():
    factors = sample_factors(500, seed=3)
    young = FACE_TASKS["young"].label(factors)
    expected = (factors["beard"] < 0.5) & (factors["eye_openness"] > 0.3) & (factors["hair_color"] < 0.75)
    assert torch.equal(young, expected) and 0.1 < float(young.float().mean()) < 0.5


def test_spurious_task_plants_the_shortcut_only_in_training():
    spec = face_task("smiling-spurious")
    assert spec.spurious == ("warm_background", 0.95)
    small = load_faces("smiling-spurious", "test", size=32)
    assert small.images.shape[-1] == 32 and small.info["spurious"] == "None"


def test_unknown_task():
    with pytest.raises(InputError, match="known tasks"):
        face_task("attractive")
    assert set(compute_attributes(sample_factors(4)).keys()) >= {"smiling", "eyeglasses"}
