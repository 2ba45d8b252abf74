"""The contract every registered explainer keeps (vcex.explainers.registry.METHODS), checked for each one as the
CLI builds it: batch of 1 and of N, an empty batch refused, the target rules, CPU results, the user's models left
exactly as found, and a result that saves and loads."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vcex.errors import InputError
from vcex.explainers import CounterfactualResult, Explainer
from vcex.explainers.registry import DEMO_METHODS, METHODS, BuildRequest
from vcex.models.state import modules_of

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # GCD on the tiny models: its proxies often do not fit the black box, which it says in a warning (the tests here
    # check shapes, targets and the models, not GCD's figures: tests/explainers/test_gcd.py does)
    pytest.mark.filterwarnings("ignore:GCD. the proxy of:UserWarning"),
]

# small budgets so each method runs in seconds; a method gets the ones it takes
# (stylespace-direction learns its directions: the tiny VAE's decodes read as only a few of the ten classes, so
# most classes have no mean code to move toward)
FAST = {"max_steps": 5, "threshold": 0.9, "samples": 32, "max_epochs": 20, "h_directions": 1, "mode": "learned"}
AMORTIZED_FIT = {"epochs": 1, "batch_size": 64, "lr": 3e-3, "seed": 0}


@pytest.fixture(scope="module")
def train_images(mnist_small) -> torch.Tensor:
    return mnist_small[0][:256]


@pytest.fixture(scope="module")
def test_images(mnist_small) -> torch.Tensor:
    return mnist_small[2][:6]


class VAEStyles(nn.Module):
    """A VAE seen as a one-layer style generator whose StyleSpace is its latent, for the methods that need one."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images)

    def styles(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def decode_styles(self, styles: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(styles)

    def style_layout(self, include_torgb: bool = True) -> list[tuple[str, int, int]]:
        return [("conv", 0, self.vae.latent_dim)]


STYLESPACE_METHODS = ("stylespace-direction",)


def build(name: str, classifier: nn.Module, latent_model: nn.Module, train_images: torch.Tensor) -> Explainer:
    """The registered method ``name`` built as the CLI builds it (mnist's profile), with small budgets; a method
    that needs a StyleSpace gets the VAE seen as a style generator."""
    options = {key: value for key, value in FAST.items() if key in METHODS[name].options}
    if name in STYLESPACE_METHODS:
        latent_model = VAEStyles(latent_model)
    request = BuildRequest(classifier, latent_model, "mnist", train_images, "vcex", False, options)
    return METHODS[name].build(request)


@pytest.fixture
def explainer_of(tiny_classifier, tiny_vae, train_images, shrink_profile):
    """A maker of each registered explainer over the tiny MNIST models (the amortized one fits for one epoch)."""
    shrink_profile("mnist", amortized_fit=AMORTIZED_FIT)
    return lambda name: build(name, tiny_classifier, tiny_vae, train_images)


def snapshot(*models: nn.Module) -> list:
    """Every parameter and buffer, and each submodule's training flag and each parameter's requires_grad."""
    modules = modules_of(*models)
    return [
        (
            {key: value.clone() for key, value in module.state_dict().items()},
            module.training,
            [p.requires_grad for p in module.parameters(recurse=False)],
        )
        for module in modules
    ]


def assert_same(before: list, after: list) -> None:
    assert len(before) == len(after)
    for (state, mode, grads), (state_now, mode_now, grads_now) in zip(before, after):
        assert mode == mode_now and grads == grads_now
        assert state.keys() == state_now.keys()
        assert all(torch.equal(state[key], state_now[key]) for key in state)


def test_the_registry_declares_each_cli_method_once():
    assert list(METHODS) == ["attack", "pixel", "linear", "amortized", "disc", "gcd", "stylespace-direction"]
    assert DEMO_METHODS == ("attack", "pixel", "linear", "disc")
    for name, method in METHODS.items():
        assert method.name == name and issubclass(method.explainer, Explainer)
        assert "threshold" in method.options and "device" in method.options and method.description


@pytest.mark.parametrize("name", list(METHODS))
def test_batch_of_one_and_of_n_on_cpu(explainer_of, test_images, name):
    explainer = explainer_of(name)
    assert isinstance(explainer, METHODS[name].explainer)
    for images in (test_images[:1], test_images):
        result = explainer.explain(images, target="second")
        assert len(result) == len(images)
        assert result.counterfactuals.shape == images.shape and result.counterfactuals.device.type == "cpu"
        assert result.success.shape == (len(images),) and result.success.dtype == torch.bool
        assert result.target.shape == (len(images),)


@pytest.mark.parametrize("name", list(METHODS))
def test_an_empty_batch_is_refused(explainer_of, test_images, name):
    with pytest.raises(InputError, match="empty|no images|at least one"):
        explainer_of(name).explain(test_images[:0], target="second")


@pytest.mark.parametrize("name", list(METHODS))
def test_target_rules(explainer_of, tiny_classifier, test_images, name):
    explainer = explainer_of(name)
    with torch.no_grad():
        predicted = tiny_classifier(test_images).argmax(1)
    other = int((predicted[0] + 1) % 10)
    assert explainer.explain(test_images[:1], target=other).target.tolist() == [other]
    targets = (predicted + 1) % 10
    assert torch.equal(explainer.explain(test_images, target=targets).target, targets)
    second = explainer.explain(test_images, target="second").target
    assert not (second == predicted).any()
    with pytest.raises(InputError, match="equals the classifier's current prediction"):
        explainer.explain(test_images[:1], target=int(predicted[0]))


@pytest.mark.parametrize("name", list(METHODS))
def test_the_users_models_are_left_as_found(tiny_classifier, tiny_vae, train_images, test_images, shrink_profile, name):
    shrink_profile("mnist", amortized_fit=AMORTIZED_FIT)
    classifier, latent_model = copy.deepcopy(tiny_classifier), copy.deepcopy(tiny_vae)
    # as a user may hand them over: in train mode, one parameter frozen
    classifier.train()
    latent_model.train()
    next(classifier.parameters()).requires_grad_(False)
    before = snapshot(classifier, latent_model)
    explainer = build(name, classifier, latent_model, train_images)  # the amortized explainer fits here
    explainer.explain(test_images, target="second")
    assert_same(before, snapshot(classifier, latent_model))


@pytest.mark.parametrize("name", list(METHODS))
def test_the_result_saves_and_loads(explainer_of, test_images, tmp_path, name):
    result = explainer_of(name).explain(test_images[:3], target="second")
    result.save(tmp_path / "result.safetensors")
    loaded = CounterfactualResult.load(tmp_path / "result.safetensors")
    assert len(loaded) == 3
    assert torch.equal(loaded.counterfactuals, result.counterfactuals)
    assert torch.equal(loaded.success, result.success) and torch.equal(loaded.target, result.target)
