"""StylEx training (vcex.models.stylex): tiny configs train in seconds, losses stay finite, a resumed run is
bit-identical to an uninterrupted one, the conditioning classifier is never changed, bad input gets one line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from vcex.cli import main
from vcex.cli.stylespace import load_style_model
from vcex.cli.train_style import classifier_name, preset_values, recipe_from
from vcex.errors import InputError
from vcex.evaluation.stylespace import stylespace_probe
from vcex.models.latent import LatentModel
from vcex.models.stylegan import StyleAutoencoder, StyleSpaceModel
from vcex.models.stylex import (
    StylExAutoencoder,
    StylExRecipe,
    fit_mapping,
    load_stylex,
    mixed_latents,
    new_state,
    set_phase,
    stylex_config,
    train_stylex,
    warm_start,
)

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = StylExRecipe(batch_size=8, r1_interval=2)  # R1 on every other D step, so a few steps exercise it


def faces_like(n: int = 24, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 32) images in [0, 1] with some structure (a bright disc of random size and colour)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    radius = 6 + 8 * torch.rand(n, 1, 1, 1, generator=g)
    disc = (((yy - 16) ** 2 + (xx - 16) ** 2).sqrt() < radius).float()
    return (0.2 + 0.7 * disc * torch.rand(n, 3, 1, 1, generator=g)).clamp(0, 1)


class TwoClassNet(nn.Module):
    """A classifier with batch norm and dropout, so a training mode or a statistics update would show."""

    def __init__(self, channels: int = 3, side: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
            nn.Flatten(), nn.Linear(4 * (side // 2) ** 2, 2),
        )  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def tiny_model(label_dim: int = 0, classifier: nn.Module | None = None, channels: int = 3, pad: int = 0):
    torch.manual_seed(0)
    config = stylex_config("tiny", image_size=32, channels=channels, label_dim=label_dim)
    return StylExAutoencoder(config, pad=pad, classifier=classifier)


def all_finite(history: list[dict]) -> bool:
    return all(math.isfinite(value) for epoch in history for value in epoch.values())


def test_plain_training_runs_and_changes_the_generator():
    images = faces_like()
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = train_stylex(model, images, epochs=2, recipe=RECIPE, progress=False)
    assert state.epoch == 2 and state.step == 6
    assert all_finite(state.history)
    # both kinds of batch ran: GAN terms, encoder terms and the lazy R1 penalty are logged
    assert {"g_adv", "l1", "latent", "e_adv", "d_loss", "r1"} <= set(state.history[-1])
    assert not torch.equal(model.generator.const, before["generator.const"])
    assert not torch.equal(model.encoder.head[0].weight, before["encoder.head.0.weight"])
    assert not model.training and isinstance(model, LatentModel)


def test_conditioned_training_logs_the_classifier_kl_and_takes_labels():
    images = faces_like()
    classifier = TwoClassNet().eval()
    model = tiny_model(label_dim=2, classifier=classifier)
    state = train_stylex(model, images, epochs=1, recipe=RECIPE, progress=False)
    assert all_finite(state.history) and "kl" in state.history[0]
    latents = model.encode(images[:5])
    assert latents.shape == (5, 16 + 2)
    # the label part is the classifier's softmax on the images
    assert torch.allclose(latents[:, 16:], torch.softmax(classifier(images[:5]), 1), atol=1e-6)
    assert model.decode(latents).shape == (5, 3, 32, 32)
    assert model.styles(latents).shape == (5, model.style_dim)


def test_the_conditioning_classifier_is_untouched():
    classifier = TwoClassNet()
    classifier.train()
    classifier.body[3].training = False  # mixed modes: each must come back as it was
    classifier.body[0].weight.requires_grad_(False)
    state_before = {k: v.clone() for k, v in classifier.state_dict().items()}
    modes = [m.training for m in classifier.modules()]
    grads = [p.requires_grad for p in classifier.parameters()]
    model = tiny_model(label_dim=2, classifier=classifier)
    train_stylex(model, faces_like(), epochs=1, recipe=RECIPE, progress=False)
    model.encode(faces_like(4))
    assert all(torch.equal(classifier.state_dict()[k], v) for k, v in state_before.items())  # BN stats too
    assert [m.training for m in classifier.modules()] == modes
    assert [p.requires_grad for p in classifier.parameters()] == grads
    assert all(p.grad is None for p in classifier.parameters())
    assert "classifier" not in dict(model.named_children())  # nor in the generator's state dict
    assert not any(key.startswith("classifier") for key in model.state_dict())


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    images = faces_like()
    classifier = TwoClassNet().eval()
    straight = tiny_model(label_dim=2, classifier=classifier)
    reference = train_stylex(straight, images, epochs=3, recipe=RECIPE, seed=3, progress=False)
    first = tiny_model(label_dim=2, classifier=classifier)
    train_stylex(first, images, epochs=1, recipe=RECIPE, seed=3, checkpoint=tmp_path, progress=False)
    resumed_model = tiny_model(label_dim=2, classifier=classifier)
    resumed = train_stylex(
        resumed_model, images, epochs=3, recipe=RECIPE, seed=3, checkpoint=tmp_path, resume=True, progress=False
    )
    assert resumed.epoch == 3 and resumed.step == reference.step
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    for name, tensor in reference.discriminator.state_dict().items():
        assert torch.equal(resumed.discriminator.state_dict()[name], tensor), name
    assert resumed.history == reference.history
    # the folder loads as the trained model
    loaded = load_stylex(tmp_path, classifier=classifier)
    assert torch.equal(loaded.decode(loaded.encode(images[:3])), resumed_model.decode(resumed_model.encode(images[:3])))


def test_an_explicit_cpu_device_trains_as_the_default():
    images = faces_like()
    classifier = TwoClassNet().eval()
    default = tiny_model(label_dim=2, classifier=classifier)
    train_stylex(default, images, epochs=1, recipe=RECIPE, seed=5, progress=False)
    placed = tiny_model(label_dim=2, classifier=classifier)
    train_stylex(placed, images, epochs=1, recipe=RECIPE, seed=5, progress=False, device="cpu")
    for name, tensor in default.state_dict().items():
        assert torch.equal(placed.state_dict()[name], tensor), name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_trains_on_cuda_and_resumes_on_the_cpu(tmp_path):
    images = faces_like()
    classifier = TwoClassNet().eval().cuda()
    model = tiny_model(label_dim=2, classifier=classifier)
    state = train_stylex(model, images, epochs=1, recipe=RECIPE, progress=False, device="cuda", checkpoint=tmp_path)
    assert model.generator.const.is_cuda and next(state.discriminator.parameters()).is_cuda
    resumed = tiny_model(label_dim=2, classifier=TwoClassNet().eval())
    resumed.classifier.load_state_dict(classifier.state_dict())
    state = train_stylex(resumed, images, epochs=2, recipe=RECIPE, progress=False, checkpoint=tmp_path, resume=True)
    assert state.epoch == 2 and not resumed.generator.const.is_cuda


def test_style_mixing_takes_the_second_w_after_the_cut():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    mixed = mixed_latents(model, None, 64, 1.0, g)
    assert mixed.shape == (64, model.num_ws, 16)
    assert not torch.equal(mixed[:, 0], mixed[:, -1])  # every image mixes: its last layer is the second w's
    unmixed = mixed_latents(model, None, 8, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(unmixed, unmixed[:, :1].expand_as(unmixed))


def test_padded_digits_round_trip_and_work_as_stylespace_and_w_latents(tmp_path):
    images = faces_like(16)[:, :1, 2:30, 2:30]  # (16, 1, 28, 28)
    model = tiny_model(channels=1, pad=2)
    train_stylex(model, images, epochs=1, recipe=RECIPE, checkpoint=tmp_path, progress=False)
    assert model.image_shape == (1, 28, 28)
    assert model(images[:2]).shape == (2, 1, 28, 28)
    style_space = StyleSpaceModel(model)
    s = style_space.encode(images[:2])
    assert s.shape == (2, model.style_dim) and style_space.decode(s).shape == (2, 1, 28, 28)
    assert isinstance(load_style_model(str(tmp_path)), StylExAutoencoder)
    assert isinstance(load_style_model(str(tmp_path / "weights.safetensors")), StylExAutoencoder)


def test_the_probe_reads_a_trained_folder(tmp_path):
    images = faces_like(8)
    model = tiny_model()
    train_stylex(model, images, epochs=1, recipe=RECIPE, checkpoint=tmp_path, progress=False)
    oracle = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    probe = stylespace_probe(load_stylex(tmp_path), oracle, images[:4], coordinates=[0, 1, 2])
    assert probe.purity.shape == (3,) and bool(torch.isfinite(probe.purity).all())


def test_bad_input_gets_one_clear_line(tmp_path, capsys):
    with pytest.raises(InputError, match="unknown StylEx config 'huge'; known configs: tiny, small"):
        stylex_config("huge", image_size=32, channels=3)
    with pytest.raises(InputError, match="conditioned on 3 classes, and the classifier returns \\(2,\\) outputs"):
        tiny_model(label_dim=3, classifier=TwoClassNet())
    with pytest.raises(InputError, match="does not take this generator's images"):
        tiny_model(label_dim=2, classifier=TwoClassNet(channels=1))
    with pytest.raises(InputError, match="mnist-cnn classifies mnist images, not faces"):
        classifier_name("faces", "mnist-cnn")
    assert classifier_name("faces", "smiling") == "faces-smiling-cnn"
    code = main(["train-style", "--dataset", "faces", "--classifier", "mnist-cnn", "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "o").exists()
    code = main(["train-style", "--dataset", "mnist", "--resume", "--out", str(tmp_path / "none"), "--quiet"])
    assert code == 2 and "holds no training run to continue" in capsys.readouterr().err
    code = main(["train-style", "--dataset", "mnist", "--device", "gpu0", "--out", str(tmp_path / "d"), "--quiet"])
    assert code == 2 and "--device 'gpu0' is no torch device: use cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        code = main(["train-style", "--dataset", "mnist", "--device", "cuda", "--out", str(tmp_path / "d"), "--quiet"])
        assert code == 2 and "torch sees no CUDA GPU here" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert recipe_from(["r1_gamma=1", "r1_interval=4"], 16) == StylExRecipe(batch_size=16, r1_gamma=1.0, r1_interval=4)
    with pytest.raises(InputError, match="NAME one of batch_size, lr"):
        recipe_from(["gamma=1"], 16)
    with pytest.raises(InputError, match="'x' is not a number"):
        recipe_from(["lr=x"], 16)


def test_cli_trains_conditioned_digits_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["train-style", "--dataset", "mnist", "--classifier", "mnist-cnn", "--config", "tiny", "--n-train", "16"]
    assert main([*common, "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["classifier"] == "mnist-cnn" and recipe["model"]["label_dim"] == 10 and recipe["model"]["pad"] == 2
    assert recipe["command"].startswith("vcex train-style --dataset mnist --config tiny --epochs 1")
    assert "--preset cpu" in recipe["command"] and recipe["recipe"]["warmup_epochs"] == 1  # the default preset
    assert recipe["recipe"]["lr"] == 2e-4 and recipe["recipe"]["mapping_fit_steps"] == 1000
    assert {"test_psnr"} <= set(recipe["figures"]) and (out / "samples.png").exists()
    code = main([*common, "--epochs", "1", "--out", str(out), "--quiet"])
    assert code == 2 and "already holds a training run" in capsys.readouterr().err
    assert main([*common, "--epochs", "2", "--out", str(out), "--resume", "--quiet"]) == 0
    assert json.loads((out / "recipe.json").read_text())["epochs_done"] == 2
    loaded = load_stylex(out)  # its classifier comes back from the zoo by the recipe's name
    assert loaded.conditioned and loaded.encode(torch.zeros(2, 1, 28, 28)).shape == (2, 16 + 10)


@pytest.mark.parametrize("space", ["w", "style"])
def test_the_attack_runs_in_w_and_stylespace_of_a_conditioned_model(space):
    from vcex import CounterfactualAttack

    classifier = TwoClassNet().eval()
    model = tiny_model(label_dim=2, classifier=classifier)
    train_stylex(model, faces_like(16), epochs=1, recipe=RECIPE, progress=False)
    latent_model = model if space == "w" else StyleSpaceModel(model)
    attack = CounterfactualAttack(classifier, latent_model, threshold=0.6, max_steps=3, latent_bound=None)
    result = attack.explain(faces_like(4), target="second")
    assert result.counterfactuals.shape == (4, 3, 32, 32) and result.success.shape == (4,)
    assert bool(torch.isfinite(result.target_prob).all())


def test_warm_start_copies_an_autoencoder_and_a_conditioned_copy_starts_as_its_function():
    torch.manual_seed(1)
    source = StyleAutoencoder(stylex_config("tiny", image_size=32, channels=3))
    images = faces_like(6)
    with torch.no_grad():
        expected = source(images)
    for label_dim, classifier in ((0, None), (2, TwoClassNet().eval())):
        model = tiny_model(label_dim=label_dim, classifier=classifier)
        warm_start(model, source)
        with torch.no_grad():
            assert torch.allclose(model(images), expected, atol=1e-5), label_dim  # the labels start ignored
    conditioned = tiny_model(label_dim=2, classifier=TwoClassNet().eval())
    warm_start(conditioned, source)
    affine = conditioned.generator.layers["4_conv0"].affine.weight
    assert torch.equal(affine[:, 16:], torch.zeros_like(affine[:, 16:]))
    other = StyleAutoencoder(stylex_config("small", image_size=32, channels=3))
    with pytest.raises(InputError, match="w_dim 16 vs 64.*--config of the same size"):
        warm_start(tiny_model(), other)


class GaussianLatents(nn.Module):
    """An encoder stand-in whose latents (one per image, in order) follow N(mean, L L^T): the fit's target."""

    def __init__(self, n: int, w_dim: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.mean = torch.linspace(-1.0, 1.0, w_dim)
        self.mix = torch.randn(w_dim, w_dim, generator=g) / w_dim**0.5
        self.latents = self.mean + torch.randn(n, w_dim, generator=g) @ self.mix.T
        self.seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.latents[self.seen : self.seen + len(images)]
        self.seen += len(images)
        return out


def test_fit_mapping_brings_samples_to_the_encoded_latents_distribution():
    model = tiny_model()
    model.encoder = GaussianLatents(2000)
    target = model.encoder.latents
    fitted = fit_mapping(model, torch.zeros(2000, 3, 32, 32), steps=400, rng=torch.Generator().manual_seed(0))
    assert fitted["mapping_fit_relative_mse"] < 0.3 and fitted["mapping_fit_steps"] == 400
    with torch.no_grad():
        samples = model.generator.mapping(torch.randn(4000, 16, generator=torch.Generator().manual_seed(1)))
    spread = target.std(0)
    assert float(((samples.mean(0) - target.mean(0)).abs() / spread).max()) < 0.3  # centred where E puts images
    assert 0.7 < float((samples.std(0) / spread).mean()) < 1.3
    with torch.no_grad():
        untrained = tiny_model().generator.mapping(torch.randn(4000, 16, generator=torch.Generator().manual_seed(1)))
    assert float(((untrained.mean(0) - target.mean(0)).abs() / spread).max()) > 0.3  # the fit did the work


def test_warm_up_epochs_are_an_autoencoder_and_leave_the_discriminator_alone():
    images = faces_like()
    recipe = StylExRecipe(batch_size=8, r1_interval=2, warmup_epochs=1, mapping_fit_steps=20)
    model = tiny_model()
    state = new_state(model, recipe, seed=0)
    set_phase(state, recipe)
    assert [g["lr"] for g in state.optimiser.param_groups] == [2e-3, 2e-5, 1.5e-2]
    assert state.optimiser.param_groups[0]["betas"] == (0.9, 0.99)
    state.epoch = 1
    set_phase(state, recipe)
    assert [g["lr"] for g in state.optimiser.param_groups] == [2e-3, 2e-5, 2e-3]
    assert state.optimiser.param_groups[2]["betas"] == (0.0, 0.99)
    # one warm-up epoch alone: encoder terms only, D unchanged
    state = train_stylex(tiny_model(), images, epochs=1, recipe=recipe, seed=0, progress=False)
    assert set(state.history[0]) == {"l1", "latent"} and all_finite(state.history)
    fresh = new_state(tiny_model(), recipe, seed=0).discriminator.state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in state.discriminator.state_dict().items())
    # the next epoch fits the mapping network, then trains as a GAN (with the anchor term when asked)
    anchored = StylExRecipe(batch_size=8, r1_interval=2, warmup_epochs=1, mapping_fit_steps=20, anchor_weight=0.1)
    state = train_stylex(tiny_model(), images, epochs=2, recipe=anchored, seed=0, progress=False)
    assert {"mapping_fit_relative_mse", "g_adv", "anchor", "d_loss", "e_adv"} <= set(state.history[1])
    assert all_finite(state.history)


def assert_resumes_bit_identically(tmp_path, recipe: StylExRecipe, seed: int, **options) -> list[dict]:
    """Two epochs straight vs one epoch, a checkpoint, then a resume to two: the same history and weights.
    ``options`` go to every train_stylex call. Returns the resumed run's history."""
    images = faces_like()
    straight = tiny_model()
    reference = train_stylex(straight, images, epochs=2, recipe=recipe, seed=seed, progress=False, **options)
    train_stylex(
        tiny_model(), images, epochs=1, recipe=recipe, seed=seed, checkpoint=tmp_path, progress=False, **options
    )
    resumed_model = tiny_model()
    resumed = train_stylex(
        resumed_model, images, epochs=2, recipe=recipe, seed=seed, checkpoint=tmp_path, resume=True, progress=False,
        **options,
    )  # fmt: skip
    assert resumed.history == reference.history
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name
    return resumed.history


def test_resume_across_the_warm_up_is_bit_identical(tmp_path):
    recipe = StylExRecipe(batch_size=8, r1_interval=2, warmup_epochs=1, mapping_fit_steps=10, anchor_weight=0.1)
    assert_resumes_bit_identically(tmp_path, recipe, seed=5)


def test_cli_warm_starts_from_a_train_style_folder(tmp_path, capsys):
    common = ["train-style", "--dataset", "mnist", "--config", "tiny", "--n-train", "16", "--quiet"]
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "plain")]) == 0
    source = load_stylex(tmp_path / "plain")
    out = tmp_path / "conditioned"
    args = [*common, "--classifier", "mnist-cnn", "--epochs", "1", "--set", "warmup_epochs=1"]
    assert main([*args, "--init-from", str(tmp_path / "plain"), "--out", str(out)]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["init_from"] == str(tmp_path / "plain") and "--init-from" in recipe["command"]
    assert recipe["recipe"]["warmup_epochs"] == 1
    trained = load_stylex(out)
    assert not torch.equal(trained.generator.const, source.generator.const)  # copied, then trained
    code = main([*common, "--epochs", "1", "--init-from", str(tmp_path), "--out", str(tmp_path / "x")])
    assert code == 2 and "not a vcex train-style folder" in capsys.readouterr().err
    code = main([*common, "--epochs", "1", "--init-from", "mnist-cnn", "--out", str(tmp_path / "y")])
    assert code == 2 and "is no style autoencoder" in capsys.readouterr().err


def test_explain_takes_a_train_style_folder_as_latent_model(tmp_path):
    from vcex.models.user import load_user_latent_model

    out = tmp_path / "run"
    args = ["train-style", "--dataset", "mnist", "--config", "tiny", "--n-train", "16", "--epochs", "1", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    loaded = load_user_latent_model(str(out))
    assert isinstance(loaded, StylExAutoencoder) and loaded.source["train_style"] == str(out.resolve())
    explained = tmp_path / "explained"
    common = ["explain", "--dataset", "mnist", "--n", "2", "--max-steps", "2", "--quiet", "--latent-model", str(out)]
    assert main([*common, "--space", "style", "--out", str(explained)]) == 0
    metrics = json.loads((explained / "metrics.json").read_text())
    assert metrics["latent_model"]["train_style"] == str(out.resolve())
    with pytest.raises(InputError, match="holds its own weights"):
        load_user_latent_model(str(out), weights=str(out / "weights.safetensors"))


def test_a_shipped_generator_loads_by_name_as_a_latent_model():
    from vcex.errors import CacheError
    from vcex.models.stylex import resolve_stylex, shipped_stylex_folder
    from vcex.models.user import load_user_latent_model

    loaded = load_user_latent_model("mnist-stylex")
    assert isinstance(loaded, StylExAutoencoder) and loaded.source["stylex"] == "mnist-stylex"
    assert len(loaded.source["sha256"]) == 64
    assert resolve_stylex("not-a-generator") is None and shipped_stylex_folder("mnist-cnn") is None
    assert json.loads((shipped_stylex_folder("mnist-stylex") / "recipe.json").read_text())["dataset"] == "mnist"
    faces = load_stylex("faces-stylex")  # its classifier comes from the zoo by the recipe's name
    assert faces.conditioned and faces.image_shape == (3, 32, 32) and faces.config.label_dim == 2
    with pytest.raises(CacheError, match="missing from this vcex installation"):
        import vcex.models.stylex as stylex

        stylex.SHIPPED_STYLEX["faces-nothing"] = "a name without files"
        try:
            shipped_stylex_folder("faces-nothing")
        finally:
            del stylex.SHIPPED_STYLEX["faces-nothing"]


def test_presets_set_the_warm_up_and_the_set_overrides_win():
    assert preset_values("cpu", 36, warm_started=False)["warmup_epochs"] == 12
    assert preset_values("cpu", 36, warm_started=True)["warmup_epochs"] == 0
    assert preset_values("stylegan2", 36, warm_started=False) == {}
    recipe = recipe_from(["lr=0.001"], 8, preset_values("cpu", 9, warm_started=False))
    assert recipe.lr == 0.001 and recipe.encoder_lr == 2e-4 and recipe.warmup_epochs == 3
