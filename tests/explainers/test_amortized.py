import pytest
import torch

from vcex import AmortizedCounterfactual, CounterfactualAttack, InputError, ModelError
from vcex.cache import load_weights
from vcex.explainers.amortized import ShiftNetwork
from vcex.models import VAE, Classifier, SmallCNN

# small but meaningful: 1,000 training latents, 32-image minibatches, a few epochs (seconds on a CPU)
FIT = {"epochs": 4, "batch_size": 32, "lr": 1e-2, "progress": False}
THRESHOLD = 0.75  # the tiny models' attack tests use the paper's threshold too


def _target_rate(result: object) -> float:
    return float((result.target_prob > 0.5).float().mean())


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted(tiny_classifier, tiny_vae, mnist_small):
    """Fitted without the identity term: the target term alone, whose mechanics most tests check (on these tiny
    models the identity term holds the one-pass target rate near 0.3; test_identity_term_keeps_... covers it)."""
    images, _, _, _ = mnist_small
    return AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD, identity_weight=0.0).fit(
        images, **FIT
    )


@pytest.fixture(scope="module")
def test_images(mnist_small):
    return mnist_small[2][:48]


def test_fitting_raises_the_one_pass_target_rate(fitted, tiny_classifier, tiny_vae, test_images):
    unfitted = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD)
    torch.manual_seed(0)
    unfitted.network = ShiftNetwork(8, 10).eval()  # the initial state: a shift of ~0
    before = _target_rate(unfitted.explain(test_images))
    result = fitted.explain(test_images, target="second")
    after = _target_rate(result)
    assert after >= 0.5 and after > before + 0.3, (before, after)
    assert bool((result.steps == 0).all()) and bool((result.forward_passes == 1).all())
    assert bool((result.backward_passes == 0).all())
    with torch.no_grad():
        decoded = tiny_vae.decode(result.counterfactual_latents)
        target_prob = tiny_classifier(result.counterfactuals).softmax(1).gather(1, result.target[:, None])[:, 0]
    assert torch.allclose(decoded, result.counterfactuals, atol=1e-5)
    assert torch.allclose(target_prob, result.target_prob, atol=1e-4)
    assert torch.equal(result.success, result.target_prob > THRESHOLD)
    assert result.method == "amortized" and result.original_latents.shape == (48, 8)


def test_batch_of_one_and_explicit_targets(fitted, test_images):
    batch = fitted.explain(test_images[:6])
    single = fitted.explain(test_images[2:3], target=batch.target[2:3])
    assert len(single) == 1
    assert torch.allclose(single.counterfactuals[0], batch.counterfactuals[2], atol=1e-4)
    with pytest.raises(InputError, match="images"):
        fitted.explain(test_images[:0])


def test_without_reconstructions_the_counterfactuals_are_the_same(
    fitted, tiny_classifier, tiny_vae, test_images, tmp_path
):
    path = fitted.save(tmp_path / "net.safetensors")
    lean = AmortizedCounterfactual.load(path, tiny_classifier, tiny_vae, reconstructions=False)
    images = test_images[:8]
    full, bare = fitted.explain(images), lean.explain(images)
    assert full.reconstructions is not None and bare.reconstructions is None
    assert torch.allclose(full.counterfactuals, bare.counterfactuals, atol=1e-5)
    assert torch.equal(full.success, bare.success) and bare.settings["reconstructions"] is False
    with torch.no_grad():
        assert torch.allclose(full.reconstructions, tiny_vae.decode(tiny_vae.encode(images)).clamp(0, 1), atol=1e-5)


def test_fit_refuses_a_black_box(tiny_vae, mnist_small):
    from torch import nn

    class Frozen(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10).index_fill(1, torch.tensor([0]), 1.0)

    explainer = AmortizedCounterfactual(Frozen(), tiny_vae)
    with pytest.raises(ModelError, match="needs gradients"):
        explainer.fit(mnist_small[0][:16], epochs=1, progress=False)


def test_save_load_round_trip_is_exact(fitted, tiny_classifier, tiny_vae, test_images, tmp_path):
    path = fitted.save(tmp_path / "amortized.safetensors")
    loaded = AmortizedCounterfactual.load(path, tiny_classifier, tiny_vae)
    assert loaded.loaded and loaded.threshold == THRESHOLD and loaded.fit_seconds == fitted.fit_seconds
    assert loaded.settings() == fitted.settings()
    expected, got = fitted.explain(test_images), loaded.explain(test_images)
    for name in ("counterfactuals", "counterfactual_latents", "target_prob", "success"):
        assert torch.equal(getattr(expected, name), getattr(got, name)), name
    _, record = load_weights(path)
    assert record["data"]["n"] == 1000 and record["fit"]["epochs"] == FIT["epochs"]
    assert {"classifier", "latent_model", "settings", "num_classes"} <= set(record)


def test_load_refuses_other_models(fitted, tiny_classifier, tiny_vae, tmp_path):
    path = fitted.save(tmp_path / "amortized.safetensors")
    torch.manual_seed(5)
    other_classifier = Classifier(SmallCNN(), (0.1307,), (0.3081,), input_shape=(1, 28, 28)).eval()
    with pytest.raises(InputError, match="another classifier"):
        AmortizedCounterfactual.load(path, other_classifier, tiny_vae)
    other_vae = VAE(latent_dim=8, width=16).eval()
    with pytest.raises(InputError, match="another latent model"):
        AmortizedCounterfactual.load(path, tiny_classifier, other_vae)
    with pytest.raises(InputError, match="cannot change after fitting"):
        AmortizedCounterfactual.load(path, tiny_classifier, tiny_vae, threshold=0.9)


def test_num_classes_mismatch_is_refused(fitted, tiny_vae, tmp_path):
    path = fitted.save(tmp_path / "amortized.safetensors")
    five_classes = Classifier(SmallCNN(num_classes=5), input_shape=(1, 28, 28)).eval()
    with pytest.raises(InputError, match="10 classes, this one has 5"):
        AmortizedCounterfactual.load(path, five_classes, tiny_vae)


def test_refinement_keeps_validity_with_fewer_steps_than_the_attack(fitted, tiny_classifier, tiny_vae, test_images):
    one_pass = fitted.explain(test_images)
    fitted.refine_steps = 100
    try:
        refined = fitted.explain(test_images)
    finally:
        fitted.refine_steps = 0
    cold = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=THRESHOLD, max_steps=100).explain(test_images)
    assert bool(refined.success[one_pass.success].all())  # never loses an image the one pass had
    assert refined.validity >= one_pass.validity
    assert bool((refined.steps[one_pass.success] == 0).all())
    assert float(refined.steps.float().mean()) < float(cold.steps.float().mean())
    succeeded = refined.success
    assert torch.equal(refined.forward_passes[succeeded], refined.steps[succeeded] + 1)
    assert refined.settings["refine_steps"] == 100


def test_explain_or_save_before_fit_is_refused(tiny_classifier, tiny_vae, test_images, tmp_path):
    explainer = AmortizedCounterfactual(tiny_classifier, tiny_vae)
    with pytest.raises(InputError, match=r"call \.fit"):
        explainer.explain(test_images[:2])
    with pytest.raises(InputError, match=r"call \.fit"):
        explainer.save(tmp_path / "x.safetensors")


def test_bad_settings_and_lower_are_refused(fitted, tiny_classifier, tiny_vae, test_images):
    with pytest.raises(InputError, match="latent_norm"):
        AmortizedCounterfactual(tiny_classifier, tiny_vae, latent_norm="l3")
    with pytest.raises(InputError, match="refine_steps"):
        AmortizedCounterfactual(tiny_classifier, tiny_vae, refine_steps=-1)
    with pytest.raises(InputError, match="latent model"):
        AmortizedCounterfactual(tiny_classifier, None)
    with pytest.raises(InputError, match="raise"):
        fitted.explain(test_images[:2], lower=True)
    with pytest.raises(InputError, match="epochs"):
        AmortizedCounterfactual(tiny_classifier, tiny_vae).fit(test_images, epochs=0)


def test_resume_continues_from_the_checkpoint(tiny_classifier, tiny_vae, mnist_small, tmp_path):
    images = mnist_small[0]
    checkpoint = tmp_path / "fit.ckpt"
    settings = {**FIT, "epochs": 1}
    first = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD)
    first.fit(images, **settings, checkpoint=checkpoint)
    assert load_weights(checkpoint)[1]["epoch"] == 1
    resumed = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD)
    resumed.fit(images, **{**settings, "epochs": 2}, checkpoint=checkpoint)
    assert load_weights(checkpoint)[1]["epoch"] == 2
    assert resumed.record["epoch"] == 2 and len(resumed.record["loss_history"]) == 2
    assert resumed.record["loss_history"][0] == first.record["loss_history"][0]
    straight = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD)
    straight.fit(images, **{**settings, "epochs": 2})
    # network, Adam state and random generator are all restored, so resuming changes nothing
    for (name, a), b in zip(resumed.network.state_dict().items(), straight.network.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(InputError, match="another fit"):
        AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=0.9).fit(
            images, **{**settings, "epochs": 3}, checkpoint=checkpoint
        )


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tiny_classifier, tiny_vae, mnist_small, tmp_path, monkeypatch):
    images = mnist_small[0][:300]
    checkpoint = tmp_path / "fit.ckpt"
    settings = {**FIT, "epochs": 1}
    AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD).fit(
        images, **settings, checkpoint=checkpoint
    )

    def nan_objective(self, latents, shift, reconstructions, target):
        return shift.sum(1) * float("nan")

    monkeypatch.setattr(AmortizedCounterfactual, "_objective", nan_objective)
    explainer = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD)
    with pytest.raises(ModelError, match=r"became nan at epoch 2.*after epoch 1\) is kept"):
        explainer.fit(images, **{**settings, "epochs": 2}, checkpoint=checkpoint)
    assert explainer.network is None  # a failed fit leaves nothing half-trained behind
    monkeypatch.undo()
    restored = AmortizedCounterfactual.load(checkpoint, tiny_classifier, tiny_vae)
    assert restored.record["epoch"] == 1
    assert len(restored.explain(mnist_small[2][:4])) == 4


def test_per_class_thresholds_set_each_image_fitting_goal_and_validity(fitted, tiny_vae, test_images):
    thresholds = [THRESHOLD] * 10
    thresholds[3] = 0.55
    with torch.no_grad():
        latents = tiny_vae.encode(test_images).flatten(1)
        reconstructions = tiny_vae.decode(latents).clamp(0, 1)
        targets = torch.arange(len(latents)) % 10
        no_shift = torch.zeros_like(latents)
        uniform = fitted._objective(latents, no_shift, reconstructions, targets)
        fitted.threshold = tuple(thresholds)
        try:
            per_class = fitted._objective(latents, no_shift, reconstructions, targets)
            result = fitted.explain(test_images)
        finally:
            fitted.threshold = THRESHOLD
    # the target term is relu(logit(threshold) + margin - m_t): lower by the logits' gap for class 3 only
    gap = torch.logit(torch.tensor(THRESHOLD)) - torch.logit(torch.tensor(0.55))
    others, easy = targets != 3, (targets == 3) & (uniform > gap)
    assert int(easy.sum()) >= 1
    torch.testing.assert_close(per_class[others], uniform[others])
    torch.testing.assert_close(per_class[easy], uniform[easy] - gap)
    assert torch.equal(result.success, result.target_prob > torch.tensor(thresholds)[result.target])


def test_per_class_thresholds_survive_save_and_load(tiny_classifier, tiny_vae, mnist_small, tmp_path):
    thresholds = torch.full((10,), THRESHOLD, dtype=torch.float64)
    thresholds[3] = 0.55
    explainer = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=thresholds)
    path = explainer.fit(mnist_small[0][:200], **{**FIT, "epochs": 1}).save(tmp_path / "per-class.safetensors")
    # asked for as a tensor, a tuple or nothing: the same thresholds the network was fitted with
    for asked in ({"threshold": thresholds}, {"threshold": tuple(thresholds.tolist())}, {}):
        loaded = AmortizedCounterfactual.load(path, tiny_classifier, tiny_vae, **asked)
        assert loaded.threshold == tuple(thresholds.tolist())
    with pytest.raises(InputError, match="cannot change after fitting"):
        AmortizedCounterfactual.load(path, tiny_classifier, tiny_vae, threshold=THRESHOLD)


def test_equal_per_class_thresholds_share_the_one_threshold_network(fitted, tiny_classifier, tiny_vae, tmp_path):
    uniform = (THRESHOLD,) * 10  # what class_thresholds gives when every class reaches the cap
    same = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=uniform, identity_weight=0.0)
    assert same.fit_settings() == fitted.fit_settings()  # hence the CLI's cache key: no second fit
    path = fitted.save(tmp_path / "amortized.safetensors")
    loaded = AmortizedCounterfactual.load(path, tiny_classifier, tiny_vae, threshold=uniform)
    assert loaded.threshold == uniform and loaded.settings()["threshold"] == uniform  # kept as asked
    assert loaded.settings()["network"] == fitted.settings()["network"]
    with pytest.raises(InputError, match="cannot change after fitting"):
        AmortizedCounterfactual.load(path, tiny_classifier, tiny_vae, threshold=(THRESHOLD,) * 9 + (0.9,))


def test_identity_term_is_low_for_own_originals_and_log_n_for_a_template():
    from vcex.explainers.amortized import _identity_term

    latents = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    kept = _identity_term(latents, latents + 0.01)
    template = _identity_term(latents, latents[:1].expand(16, 8))
    assert kept.shape == (16,) and float(kept.mean()) < 0.25 * float(template.mean())
    # one shared point: the softmax cannot single out any own original, so the mean is at least log N
    assert float(template.mean()) >= torch.log(torch.tensor(16.0)).item() - 1e-4
    shift = torch.zeros(16, 8, requires_grad=True)
    _identity_term(latents, latents + shift).sum().backward()  # no shift yet: the gradient must still be finite
    assert bool(torch.isfinite(shift.grad).all())


def test_network_saved_before_the_identity_term_loads_as_fitted_without_it(fitted, tiny_classifier, tiny_vae, tmp_path):
    from vcex.cache import save_weights

    tensors, record = load_weights(fitted.save(tmp_path / "new.safetensors"))
    assert record["settings"]["identity_weight"] == fitted.identity_weight
    record["settings"].pop("identity_weight")
    old = save_weights(tmp_path / "old.safetensors", tensors, record)
    loaded = AmortizedCounterfactual.load(old, tiny_classifier, tiny_vae)
    assert loaded.identity_weight == 0.0 and loaded.fit_settings()["identity_weight"] == 0.0
    with pytest.raises(InputError, match="identity_weight=0.0"):
        AmortizedCounterfactual.load(old, tiny_classifier, tiny_vae, identity_weight=1.0)
    with pytest.raises(InputError, match="identity_weight"):
        AmortizedCounterfactual(tiny_classifier, tiny_vae, identity_weight=-1.0)


def test_identity_term_keeps_counterfactuals_of_one_target_apart(fitted, tiny_classifier, tiny_vae, mnist_small):
    from vcex.evaluation import mean_pairwise_distance
    from vcex.explainers.amortized import IDENTITY_WEIGHT

    images, _, test, _ = mnist_small
    with_identity = AmortizedCounterfactual(tiny_classifier, tiny_vae, threshold=THRESHOLD).fit(images, **FIT)
    assert with_identity.identity_weight == IDENTITY_WEIGHT > 0  # on by default
    with torch.no_grad():
        images = test[tiny_classifier(test).argmax(1) != 3][:48]
    target = torch.full((len(images),), 3)  # one target for all: a template would put every latent in one place

    def spread(explainer: AmortizedCounterfactual) -> float:
        return mean_pairwise_distance(explainer.explain(images, target=target).counterfactual_latents)

    assert spread(with_identity) > 1.2 * spread(fitted)
    moved = with_identity.explain(images, target=target)
    assert moved.target_prob.mean() > 2 * moved.original_prob.mean()  # still moves toward 3
