"""vcex never changes a user's model: every entry point that runs one leaves each submodule's mode, each
parameter's requires_grad and every parameter and buffer (batch-norm statistics included) exactly as found."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vcex.attribution import Descriptors, ImageAttributes, LatentAttributes, explain_away
from vcex.data.synthetic_faces import sample_factors
from vcex.evaluation import penultimate_features
from vcex.evaluation.global_curves import flip_rate_curve, sufficiency_curve
from vcex.evaluation.ground_truth import intervention_flip_share, intervention_influence
from vcex.evaluation.metrics import evaluate, predict_labels
from vcex.evaluation.realism import target_class_frechet
from vcex.explainers import (
    DISC,
    AmortizedCounterfactual,
    CounterfactualAttack,
    LinearLatentEdit,
    PixelAttack,
    class_thresholds,
)
from vcex.models import Classifier, WhitenedLatentModel
from vcex.models.classifiers import predict_proba
from vcex.models.refined import RefinedEncoder
from vcex.models.state import evaluates, evaluating, modules_of
from vcex.models.training import accuracy, classification_loss, fit

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 12


class Residual(nn.Module):
    """x + BN(conv(ReLU(BN(conv(x))))), then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class TinyNet(nn.Module):
    """(N, C, S, S) -> logits (N, 2): conv + BN, a residual block, global average pooling, dropout, linear
    (the shape of the user's Fashion-MNIST classifier in the report, in miniature)."""

    def __init__(self, channels: int = 1, classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.block = Residual(6)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(6, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.block(self.stem(images)).mean((2, 3))))


class TinyAutoencoder(nn.Module):
    """encode (N, 1, 12, 12) -> (N, 4), decode back to [0, 1]; batch norm and dropout on both sides."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
            nn.Dropout(0.2), nn.Linear(4 * 6 * 6, 4),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(4, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, SIZE * SIZE)
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(latents)).view(-1, 1, SIZE, SIZE)


def squares(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 12, 12) noise in [0, 0.3], class 1 with a bright square in the middle; labels (n,) alternate."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=generator)
    labels = torch.arange(n) % 2
    images[labels == 1, :, 3:9, 3:9] += 0.6
    return images, labels


def mix_modes(model: nn.Module) -> nn.Module:
    """The model as a user may hand it over: in train mode except every other batch-norm and dropout layer
    (so both modes are present), and its first parameter frozen."""
    model.train()
    for kind in (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd):
        for layer in [m for m in model.modules() if isinstance(m, kind)][1::2]:
            layer.training = False
    next(model.parameters()).requires_grad_(False)
    return model


Snapshot = tuple[dict[str, torch.Tensor], list[tuple[str, bool]], list[tuple[str, bool]]]


def snapshot(model: nn.Module) -> Snapshot:
    return (
        {name: tensor.clone() for name, tensor in model.state_dict().items()},
        [(name, module.training) for name, module in model.named_modules()],
        [(name, parameter.requires_grad) for name, parameter in model.named_parameters()],
    )


def assert_unchanged(model: nn.Module, before: Snapshot, what: str = "model") -> None:
    state, modes, grads = before
    now = model.state_dict()
    assert list(now) == list(state)
    changed = [name for name in state if not torch.equal(now[name], state[name])]
    assert not changed, f"{what}: tensors changed: {changed}"
    assert [(n, m.training) for n, m in model.named_modules()] == modes, f"{what}: a submodule's mode changed"
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == grads, f"{what}: requires_grad changed"


@dataclass
class Models:
    classifier: TinyNet
    latent: TinyAutoencoder
    oracle: TinyNet  # a second classifier: the evaluation oracle, DISC's consistency model
    images: torch.Tensor
    labels: torch.Tensor


@pytest.fixture(scope="module")
def trained() -> Models:
    images, labels = squares()
    torch.manual_seed(0)
    classifier, oracle, latent = TinyNet(), TinyNet(), TinyAutoencoder()
    for model in (classifier, oracle):
        fit(model, classification_loss(model), images, labels, epochs=6, lr=1e-2, batch_size=16, progress=False)
    fit(latent, lambda x, _y, _g: F.mse_loss(latent.decode(latent.encode(x)), x), images, labels, epochs=6,
        lr=1e-2, batch_size=16, progress=False)  # fmt: skip
    oracle.attribute_names = ("class 0", "class 1")  # read as a two-attribute oracle by evaluate
    return Models(classifier, latent, oracle, images, labels)


@pytest.fixture
def models(trained: Models) -> Models:
    """Fresh copies, in the mixed modes a user may hand them over in."""
    return Models(
        mix_modes(copy.deepcopy(trained.classifier)),
        mix_modes(copy.deepcopy(trained.latent)),
        mix_modes(copy.deepcopy(trained.oracle)),
        trained.images,
        trained.labels,
    )


def _amortized(m: Models, tmp_path) -> None:
    classifier = Classifier(m.classifier, input_shape=(1, SIZE, SIZE))  # a known shape: load probes the class count
    amortized = AmortizedCounterfactual(classifier, m.latent, hidden=8, threshold=0.9)
    amortized.fit(m.images, epochs=1, batch_size=16).explain(m.images[:4])
    path = amortized.save(tmp_path / "amortized.safetensors")
    AmortizedCounterfactual.load(path, classifier, m.latent, refine_steps=2).explain(m.images[:4])


@functools.cache
def _readers() -> ImageAttributes:
    """Image readers of the square and the brightness (vcex's own network, trained here)."""
    images, labels = squares(n=400, seed=1)
    descriptors = Descriptors({"square": labels.float(), "brightness": images.mean((1, 2, 3))})
    readers = ImageAttributes(epochs=5, width=4, lr=1e-2, device="cpu").fit(images, descriptors)
    assert bool(readers.usable.all())
    return readers


def _evaluate(m: Models, _tmp_path) -> None:
    result = PixelAttack(m.classifier, max_steps=2).explain(m.images[:4])
    record = evaluate(result, oracle=m.oracle, knn=m.oracle, latent_model=m.latent, attributes=m.oracle)
    assert record["oracle_agreement"] is not None and record["mnac"] is not None
    predict_labels(m.oracle, m.images)


def _features(m: Models, _tmp_path) -> None:
    features = penultimate_features(m.oracle)
    target_class_frechet(m.images[:8], m.labels[:8], m.images, m.labels, features)


def _curves(m: Models, _tmp_path) -> None:
    flip_rate_curve(m.classifier, m.latent, m.images[:8], torch.ones(4), [0.5, 1.0], target=None)
    sufficiency_curve(m.classifier, m.latent, m.images[:8], torch.eye(4)[:2])


def _latent_attributes(m: Models, _tmp_path) -> None:
    descriptors = Descriptors({"square": m.labels.float(), "brightness": m.images.mean((1, 2, 3))})
    probes = LatentAttributes(m.latent).fit(m.images, descriptors)
    probes.local(PixelAttack(m.classifier, max_steps=2).explain(m.images[:4]))  # no latents: both are encoded


def _disc(m: Models, _tmp_path) -> None:
    disc = DISC(
        m.classifier, parameterisation="pixels", feature_layers=["block"], feature_weight=0.1,
        consistency="energy", consistency_model=m.oracle, max_steps=3,
    )  # fmt: skip
    disc.explain(m.images[:4])
    DISC(m.classifier, parameterisation="dip", fit_steps=2, consistency="energy", max_steps=2).explain(m.images[:2])


def _explain_away(m: Models, _tmp_path) -> None:
    attack = CounterfactualAttack(m.classifier, m.latent, max_steps=3)
    explain_away(attack, _readers(), m.images[:6], rounds=2, valid_only=False, resamples=5)


def _whitened(m: Models, _tmp_path) -> None:
    whitened = WhitenedLatentModel.fit(m.latent, m.images)
    CounterfactualAttack(m.classifier, whitened, max_steps=3).explain(m.images[:4])


ENTRY_POINTS: dict[str, Callable[[Models, object], object]] = {
    "CounterfactualAttack.explain": lambda m, _: CounterfactualAttack(m.classifier, m.latent, max_steps=3).explain(
        m.images[:4]
    ),
    "PixelAttack.explain": lambda m, _: PixelAttack(m.classifier, max_steps=3).explain(m.images[:4]),
    "LinearLatentEdit.fit+explain": lambda m, _: (
        LinearLatentEdit(m.classifier, m.latent).fit(m.images).explain(m.images[:4])
    ),
    "AmortizedCounterfactual.fit+explain+load": _amortized,
    "DISC.explain (pixels and features, dip)": _disc,
    "class_thresholds": lambda m, _: class_thresholds(m.classifier, m.images, m.labels),
    "LatentAttributes.fit+local": _latent_attributes,
    "WhitenedLatentModel.fit+attack": _whitened,
    "RefinedEncoder.encode": lambda m, _: RefinedEncoder(m.latent, steps=2).encode(m.images[:4]),
    "explain_away": _explain_away,
    "evaluate+predict_labels": _evaluate,
    "penultimate_features+target_class_frechet": _features,
    "flip_rate_curve+sufficiency_curve": _curves,
    "predict_proba": lambda m, _: predict_proba(Classifier(m.classifier), m.images, 16),
    "accuracy": lambda m, _: accuracy(m.classifier, m.images, m.labels),
}


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_entry_point_leaves_every_model_exactly_as_it_found_it(entry_point, models, tmp_path):
    before = {name: snapshot(getattr(models, name)) for name in ("classifier", "latent", "oracle")}
    ENTRY_POINTS[entry_point](models, tmp_path)
    for name, state in before.items():
        assert_unchanged(getattr(models, name), state, name)


def test_the_check_catches_a_forward_pass_in_the_users_modes(models):
    """The contract test can fail: the mixed models have batch norm in train mode, which a forward updates."""
    before = snapshot(models.classifier)
    models.classifier(models.images[:4])
    with pytest.raises(AssertionError, match="tensors changed"):
        assert_unchanged(models.classifier, before)


def test_ground_truth_interventions_leave_a_faces_classifier_unchanged():
    classifier = mix_modes(TinyNet(channels=3))
    classifier(torch.rand(8, 3, 32, 32))  # batch-norm statistics that are not the defaults
    before = snapshot(classifier)
    factors = sample_factors(4)
    intervention_influence(classifier, factors, ["smile"], levels=2)
    intervention_flip_share(classifier, factors, ["smile"], levels=2)
    assert_unchanged(classifier, before)


def test_an_eval_mode_classifier_stays_in_eval_mode_after_explaining(trained):
    """The report's case: a plain nn.Module in eval mode is wrapped in a new Classifier (whose own flag is
    True); restoring the wrapper's mode put the user's network in train mode, so later predictions changed."""
    network = copy.deepcopy(trained.classifier).eval()
    images = trained.images
    predictions = network(images).argmax(1)
    PixelAttack(network, max_steps=2).explain(images[:4])
    class_thresholds(network, images, trained.labels)
    assert not any(module.training for module in network.modules())
    assert torch.equal(network(images).argmax(1), predictions)


# ---- the mechanism itself ----------------------------------------------------------------------------


def test_evaluating_sets_eval_and_frozen_and_restores_a_mix_even_after_an_error(models):
    model = models.classifier
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="inside"), evaluating(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("inside")
    assert_unchanged(model, before)


def test_evaluating_nests_and_counts_a_shared_module_once(models):
    shared = models.classifier.block
    before = snapshot(models.classifier)
    with evaluating(models.classifier, shared, None, len), evaluating(shared):
        assert not shared.training
    assert_unchanged(models.classifier, before)
    assert len(modules_of(models.classifier, shared)) == len(list(models.classifier.modules()))


class PlainLatent:
    """A latent model that is no nn.Module, holding its networks as attributes."""

    def __init__(self, autoencoder: TinyAutoencoder) -> None:
        self.encoder, self.decoder = autoencoder.encoder, autoencoder.decoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(latents)).view(-1, 1, SIZE, SIZE)


def test_a_plain_object_latent_model_is_frozen_through_its_module_attributes(models):
    latent = PlainLatent(models.latent)
    before = snapshot(models.latent)
    with evaluating(latent):
        assert not any(m.training for part in (latent.encoder, latent.decoder) for m in part.modules())
    assert_unchanged(models.latent, before)
    result = CounterfactualAttack(models.classifier, latent, max_steps=2).explain(models.images[:4])
    assert result.counterfactuals.shape == (4, 1, SIZE, SIZE)
    assert_unchanged(models.latent, before)


def test_evaluates_reads_arguments_and_their_attributes(models):
    class Holder:
        def __init__(self, model: nn.Module) -> None:
            self.model = model

        @evaluates("self.model", "extra")
        def modes(self, extra: nn.Module | None = None) -> list[bool]:
            return [m.training for m in (*self.model.modules(), *(extra.modules() if extra else ()))]

    before = snapshot(models.classifier), snapshot(models.oracle)
    assert not any(Holder(models.classifier).modes(extra=models.oracle))
    assert_unchanged(models.classifier, before[0])
    assert_unchanged(models.oracle, before[1])


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("compile_kind", ["script", "trace"])
def test_torchscript_models_are_restored_too(models, compile_kind):
    # compiled in eval mode: a trace records the modes it ran in (a batch norm traced in train mode would update
    # its statistics on every call whatever its flag says), a script reads the flags when it runs
    network = copy.deepcopy(models.classifier).eval()
    compiled = torch.jit.script(network) if compile_kind == "script" else torch.jit.trace(network, models.images[:2])
    mix_modes(compiled)
    before = snapshot(compiled)
    DISC(compiled, parameterisation="pixels", bn_weight=0.0, max_steps=2).explain(models.images[:2])
    class_thresholds(compiled, models.images, models.labels)
    assert_unchanged(compiled, before, f"{compile_kind}d classifier")
