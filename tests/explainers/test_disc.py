import copy
import functools
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from vcex.data import ImageDataset
from vcex.errors import InputError, ModelError
from vcex.explainers.disc import DISC
from vcex.explainers.inversion import DeepImagePrior, FourierINR, PixelParameterisation, total_variation
from vcex.explainers.result import CounterfactualResult
from vcex.models import Classifier
from vcex.models.duq import build_duq, certainty_score, energy_score, train_duq
from vcex.models.training import classification_loss, fit


class BNNet(nn.Module):
    """A tiny CNN with batch norm: what the DeepInversion prior needs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@pytest.fixture(scope="module")
def bn_classifier(mnist_small) -> Classifier:
    images, labels, _, _ = mnist_small
    torch.manual_seed(0)
    model = Classifier(BNNet(), (0.1307,), (0.3081,), input_shape=(1, 28, 28))
    fit(model, classification_loss(model), images, labels, epochs=2, lr=3e-3, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_duq(mnist_small) -> Classifier:
    images, labels, _, _ = mnist_small
    data = ImageDataset(images, labels, "mnist", "train", [str(k) for k in range(10)])
    model = build_duq(data, mean=(0.1307,), std=(0.3081,), width=8, feature_dim=64)
    train_duq(model, data, epochs=1, lr=3e-3, progress=False)
    return model


def test_disc_pixels_reaches_validity_and_raises_the_target(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    result = DISC(tiny_classifier, parameterisation="pixels", threshold=0.9, max_steps=150).explain(images[:8])
    assert result.method == "disc"
    assert result.validity >= 0.75
    assert bool((result.target_prob > result.original_prob).all())
    assert float(result.counterfactuals.min()) >= 0 and float(result.counterfactuals.max()) <= 1


def test_disc_inr_reaches_validity_starting_exactly_at_the_image(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    disc = DISC(tiny_classifier, parameterisation="inr", threshold=0.9, max_steps=150, fit_steps=60, tv_weight=0.1)
    result = disc.explain(images[:6])
    assert result.validity >= 0.6
    assert float(result.target_prob.mean()) > float(result.original_prob.mean()) + 0.4
    assert result.settings["parameterisation"] == "inr" and result.settings["tv_weight"] == 0.1


@pytest.mark.parametrize("kind", [DeepImagePrior, FourierINR])
def test_network_parameterisations_reproduce_the_image_after_their_fit(kind, mnist_small):
    _, _, images, _ = mnist_small
    parameterisation = kind((1, 28, 28), fit_steps=60)
    variables = parameterisation.initial(images[:4])
    assert variables.shape == (4, parameterisation.num_parameters + 28 * 28)
    # the fit alone explains most of the image; the kept residual makes the start exact
    weights = variables[:, : parameterisation.num_parameters]
    fit_error = (parameterisation.network(weights) - images[:4]).abs().flatten(1).mean(1)
    torch.testing.assert_close(fit_error, parameterisation.fit_error)
    assert bool((fit_error < 0.5 * images[:4].flatten(1).mean(1)).all())
    torch.testing.assert_close(parameterisation.render(variables), images[:4], atol=1e-5, rtol=0)
    # each image has its own weights: the batch is four fits, not one
    assert float((weights[0] - weights[1]).abs().max()) > 0


def test_network_parameterisation_changes_only_through_its_weights(mnist_small):
    _, _, images, _ = mnist_small
    parameterisation = FourierINR((1, 28, 28), fit_steps=10)
    variables = parameterisation.initial(images[:2]).requires_grad_(True)
    parameterisation.render(variables).sum().backward()
    residual_grad = variables.grad[:, parameterisation.num_parameters :]
    assert float(residual_grad.abs().max()) == 0.0
    assert float(variables.grad[:, : parameterisation.num_parameters].abs().max()) > 0


def test_progressive_stages_rise_and_stop_at_the_first_stage_that_meets_the_target(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    stages = (0.3, 0.6)
    # a large step overshoots: many images pass the final threshold in the first stage already
    disc = DISC(tiny_classifier, parameterisation="pixels", stages=stages, threshold=0.95, lr=1.0, max_steps=100)
    result = disc.explain(images[:8])
    assert result.sequence.shape == (8, 3, 1, 28, 28) and result.sequence_prob.shape == (8, 3)
    assert bool((result.sequence_prob[:, 0] > 0.3).all())
    assert bool((result.sequence_prob[:, 1:] >= result.sequence_prob[:, :-1] - 1e-6).all())
    torch.testing.assert_close(result.sequence[:, -1], result.counterfactuals)
    early = result.sequence_prob[:, 0] > 0.95
    assert bool(early.any())
    # an image that met the target after stage 1 was not optimised further
    torch.testing.assert_close(result.sequence[early, 1], result.sequence[early, 0])
    torch.testing.assert_close(result.sequence_prob[early, 2], result.sequence_prob[early, 0])
    single = DISC(tiny_classifier, parameterisation="pixels", stages=(), threshold=0.95, lr=1.0, max_steps=100)
    assert single.explain(images[:2]).sequence.shape[1] == 1


def test_progressive_sequence_survives_save_and_load(tiny_classifier, mnist_small, tmp_path):
    _, _, images, _ = mnist_small
    result = DISC(tiny_classifier, parameterisation="pixels", threshold=0.9, max_steps=100).explain(images[:3])
    loaded = CounterfactualResult.load(result.save(tmp_path / "disc.safetensors"))
    torch.testing.assert_close(loaded.sequence, result.sequence)
    torch.testing.assert_close(loaded.sequence_prob, result.sequence_prob)
    assert loaded.settings["stages"] == [0.6]  # the default stages below the threshold


def test_batch_norm_prior_needs_batch_norm_layers(tiny_classifier, bn_classifier):
    with pytest.warns(UserWarning, match="no batch-norm layers"):
        disc = DISC(tiny_classifier, parameterisation="pixels", bn_weight=0.1)
    assert disc.bn_weight == 0.0
    assert DISC(tiny_classifier, parameterisation="pixels").bn_weight == 0.0  # auto: silently off
    assert DISC(bn_classifier, parameterisation="pixels").bn_weight > 0  # auto: on


def compiled(model: nn.Module, kind: str) -> torch.jit.ScriptModule:
    """``model`` (in eval mode) as TorchScript: ``"script"`` (torch.jit.script) or ``"trace"`` (torch.jit.trace)."""
    model = copy.deepcopy(model).eval()
    return torch.jit.script(model) if kind == "script" else torch.jit.trace(model, torch.rand(2, 1, 28, 28))


def user_warnings(build: Callable[[], object]) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = build()
    return made, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_classifier_says_once_that_the_batch_norm_prior_is_off(bn_classifier, mnist_small, kind):
    _, _, images, _ = mnist_small
    network = compiled(bn_classifier.network, kind)
    classifier = Classifier(network, (0.1307,), (0.3081,), input_shape=(1, 28, 28))
    for given in (network, classifier):  # the TorchScript module itself, or a Classifier around it
        disc, messages = user_warnings(functools.partial(DISC, given, parameterisation="pixels", max_steps=20))
        assert len(messages) == 1
        assert f"{'traced' if kind == 'trace' else 'scripted'} (torch.jit.{kind}) TorchScript module" in messages[0]
        assert "with 1 batch-norm layer," in messages[0] and "prior is off" in messages[0]
        assert "settings['bn_weight'] records 0.0" in messages[0]
        assert disc.bn_weight == 0.0
    assert disc.explain(images[:2]).settings["bn_weight"] == 0.0
    # asked for explicitly: the same message, not "has no batch-norm layers"
    disc, messages = user_warnings(lambda: DISC(network, parameterisation="pixels", bn_weight=0.05))
    assert len(messages) == 1 and "with 1 batch-norm layer," in messages[0] and "no batch-norm" not in messages[0]
    assert disc.bn_weight == 0.0
    _, messages = user_warnings(lambda: DISC(network, parameterisation="pixels", bn_weight=0.0))
    assert messages == []  # turned off by the caller: nothing to say


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_batch_norm_layers_outside_torchscript_keep_the_prior_on(bn_classifier):
    mixed = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1), compiled(bn_classifier.network, "script")).eval()
    disc, messages = user_warnings(lambda: DISC(mixed, parameterisation="pixels"))
    assert len(messages) == 1 and "uses only the 1 batch-norm layer outside TorchScript" in messages[0]
    assert disc.bn_weight > 0 and len(disc.norms) == 1


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_feature_layers_are_refused_in_the_constructor(bn_classifier, kind):
    network = compiled(bn_classifier.network, kind)
    with pytest.raises(InputError, match=r"'features.0' is inside a .*TorchScript module.*original nn.Module"):
        DISC(network, parameterisation="pixels", feature_layers=["features.0"], feature_weight=1.0)


def test_train_mode_classifier_is_explained_in_eval_mode_and_left_unchanged(bn_classifier, mnist_small):
    _, _, images, _ = mnist_small
    bn_classifier.train()
    norm = bn_classifier.network.features[1]
    before = (norm.running_mean.clone(), norm.running_var.clone(), int(norm.num_batches_tracked))
    try:
        disc = DISC(bn_classifier, parameterisation="pixels", bn_weight=0.05, threshold=0.9, max_steps=100)
        result = disc.explain(images[:6])
        assert bn_classifier.training  # the caller's mode is restored
    finally:
        bn_classifier.eval()
    torch.testing.assert_close(norm.running_mean, before[0])
    torch.testing.assert_close(norm.running_var, before[1])
    assert int(norm.num_batches_tracked) == before[2]
    assert result.validity >= 0.5
    assert result.settings["bn_weight"] == 0.05


def test_feature_preservation_keeps_the_chosen_layer_closer(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    options = {"parameterisation": "pixels", "threshold": 0.9, "max_steps": 200, "stages": ()}
    free = DISC(tiny_classifier, **options).explain(images[:6])
    kept = DISC(tiny_classifier, feature_layers=["features.2"], feature_weight=2.0, **options).explain(images[:6])
    assert kept.validity >= 0.5
    layer = tiny_classifier.network.features[2]
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        with torch.no_grad():
            for result in (free, kept):
                tiny_classifier(result.originals)
                tiny_classifier(result.counterfactuals)
    finally:
        handle.remove()
    free_distance = float((captured[1] - captured[0]).abs().mean())
    kept_distance = float((captured[3] - captured[2]).abs().mean())
    assert kept_distance < free_distance


def test_unknown_feature_layer_lists_the_valid_names(tiny_classifier):
    with pytest.raises(InputError, match="valid layer names: .*features.0") as error:
        DISC(tiny_classifier, feature_layers=["conv9"], feature_weight=1.0)
    assert "'conv9'" in str(error.value)
    # the Classifier wrapper's prefix is optional
    assert DISC(tiny_classifier, feature_layers=["network.features.0"], feature_weight=1.0).feature_weight == 1.0


def test_duq_consistency_raises_the_duq_certainty_of_the_target(tiny_classifier, tiny_duq, mnist_small):
    _, _, images, _ = mnist_small
    options = {"parameterisation": "pixels", "threshold": 0.9, "max_steps": 150, "stages": ()}
    plain = DISC(tiny_classifier, **options).explain(images[:6])
    consistent = DISC(
        tiny_classifier, consistency="duq", consistency_model=tiny_duq, consistency_weight=1.0, **options
    ).explain(images[:6])
    assert consistent.validity >= 0.5
    assert not tiny_duq.training

    def certainty(result: CounterfactualResult) -> float:
        with torch.no_grad():
            certainties = certainty_score(tiny_duq, result.counterfactuals)
        return float(certainties.gather(1, result.target[:, None]).mean())

    assert certainty(consistent) > certainty(plain)


def test_energy_consistency_keeps_the_energy_from_rising(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    options = {"parameterisation": "pixels", "threshold": 0.9, "max_steps": 150, "stages": ()}
    plain = DISC(tiny_classifier, **options).explain(images[:4])
    held = DISC(tiny_classifier, consistency="energy", consistency_weight=5.0, **options).explain(images[:4])
    assert held.settings["consistency"] == "energy"
    assert bool((held.target_prob > held.original_prob).all())

    def energy_rise(result: CounterfactualResult) -> float:
        with torch.no_grad():
            before = energy_score(tiny_classifier, result.originals)
            after = energy_score(tiny_classifier, result.counterfactuals)
        return float((after - before).clamp_min(0).mean())

    assert energy_rise(held) < energy_rise(plain)


def test_bad_settings_are_refused_with_the_fix(tiny_classifier):
    with pytest.raises(InputError, match="parameterisation"):
        DISC(tiny_classifier, parameterisation="gan")
    with pytest.raises(InputError, match="consistency"):
        DISC(tiny_classifier, consistency="vae")
    with pytest.raises(ModelError, match="build_duq"):
        DISC(tiny_classifier, consistency="duq")
    with pytest.raises(ModelError, match="DUQ"):
        DISC(tiny_classifier, consistency="duq", consistency_model=tiny_classifier)
    with pytest.raises(InputError, match="stages"):
        DISC(tiny_classifier, stages=(0.9, 0.6))
    with pytest.raises(InputError, match="stages"):
        DISC(tiny_classifier, stages=(0.5, 0.999), threshold=0.99)
    with pytest.raises(InputError, match="tv_weight"):
        DISC(tiny_classifier, tv_weight=-1.0)


def test_lowering_and_a_single_image_work(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    disc = DISC(tiny_classifier, parameterisation="pixels", threshold=0.9, max_steps=150)
    result = disc.explain(images[:1])
    assert len(result) == 1 and result.sequence.shape[0] == 1
    lowered = disc.explain(images[:4], target="second", lower=True)
    assert bool((lowered.target_prob <= lowered.original_prob + 1e-6).all())
    assert lowered.validity >= 0.75


def test_total_variation_is_zero_for_flat_images_and_grows_with_noise():
    flat = torch.full((2, 1, 8, 8), 0.5)
    noisy = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert bool((total_variation(flat) == 0).all())
    assert bool((total_variation(noisy) > 0.2).all())
    assert PixelParameterisation((1, 8, 8)).project(torch.full((1, 64), 2.0)).max() == 1.0
