"""The worked example of a new explainer (examples/latent_sign_attack.py) runs on the shared base and does its job."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from vcex.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "latent_sign_attack.py"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("latent_sign_attack", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reaches_the_target_and_fills_the_result(example, tiny_classifier, tiny_vae, mnist_small):
    images = mnist_small[2][:8]
    before = {name: tensor.clone() for name, tensor in tiny_classifier.state_dict().items()}
    attack = example.LatentSignAttack(tiny_classifier, tiny_vae, threshold=0.9, step_size=0.1, max_steps=60)
    result = attack.explain(images, target="second")
    assert result.method == "latent-sign" and len(result) == 8
    # 5 of the 8 reach 0.9 in about 30 steps; fixed-size sign steps leave the other 3 oscillating below it
    assert result.validity >= 0.5
    predicted = tiny_classifier(result.counterfactuals).argmax(1)
    assert torch.equal(predicted[result.success], result.target[result.success])
    assert (result.steps <= 60).all() and torch.equal(result.forward_passes, result.steps + 1)
    assert result.counterfactual_latents.shape == result.original_latents.shape == (8, 8)
    assert result.settings["step_size"] == 0.1 and result.settings["threshold"] == 0.9
    assert all(torch.equal(before[name], tensor) for name, tensor in tiny_classifier.state_dict().items())
    assert not tiny_classifier.training


def test_lower_pushes_the_prediction_down(example, tiny_classifier, tiny_vae, mnist_small):
    images = mnist_small[2][:4]
    predicted = tiny_classifier(images).argmax(1)
    result = example.LatentSignAttack(tiny_classifier, tiny_vae, threshold=0.9, step_size=0.1, max_steps=60).explain(
        images, target=predicted, lower=True
    )
    assert result.success.any()
    assert (result.target_prob[result.success] < 0.1).all()


def test_bad_step_size_is_one_clear_line(example, tiny_classifier, tiny_vae):
    with pytest.raises(InputError, match="step_size"):
        example.LatentSignAttack(tiny_classifier, tiny_vae, step_size=0)
    with pytest.raises(InputError, match="latent model"):
        example.LatentSignAttack(tiny_classifier, None)
