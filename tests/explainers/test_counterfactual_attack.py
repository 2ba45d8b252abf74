import pytest
import torch

from vcex import CounterfactualAttack, CounterfactualResult, InputError, ModelError
from vcex.explainers.counterfactual_attack import project_to_ball
from vcex.models import Classifier, KNNOracle


@pytest.fixture(scope="module")
def attack_result(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    # the loop's mechanics, unbounded here and in the tests that compare with it: the tiny VAE (6 epochs) is far
    # from its prior, and half of its counterfactuals at 0.75 lie beyond the default latent bound (tested below)
    attack = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.75, max_steps=300, latent_bound=None)
    return attack.explain(images[:32])


def test_reaches_the_target_for_most_images(attack_result, tiny_classifier):
    assert attack_result.validity >= 0.75
    with torch.no_grad():
        probs = tiny_classifier(attack_result.counterfactuals).softmax(1)
    target_prob = probs.gather(1, attack_result.target[:, None])[:, 0]
    assert torch.allclose(target_prob, attack_result.target_prob, atol=1e-4)
    changed = probs.argmax(1) != attack_result.original_class
    assert bool(changed[attack_result.success].all())


def test_counterfactual_is_the_decoded_latent_at_the_stopping_step(attack_result, tiny_vae):
    with torch.no_grad():
        decoded = tiny_vae.decode(attack_result.counterfactual_latents)
    assert torch.allclose(decoded, attack_result.counterfactuals, atol=1e-5)
    assert attack_result.original_latents.shape == attack_result.counterfactual_latents.shape == (32, 8)
    assert attack_result.reconstructions.shape == attack_result.originals.shape


def test_residual_mode_adds_the_decoded_change_to_the_original(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    images = images[:16]
    attack = CounterfactualAttack(
        tiny_classifier, tiny_vae, threshold=0.75, max_steps=300, residual=True, latent_bound=None
    )
    result = attack.explain(images)
    assert result.validity >= 0.75 and attack.settings()["residual"] is True
    with torch.no_grad():
        change = tiny_vae.decode(result.counterfactual_latents) - tiny_vae.decode(result.original_latents)
        probs = tiny_classifier(result.counterfactuals).softmax(1)
    # the counterfactual is the original plus the decoded change, and it is what the classifier was attacked on
    assert torch.allclose(result.counterfactuals, (images + change).clamp(0, 1), atol=1e-5)
    assert torch.allclose(probs.gather(1, result.target[:, None])[:, 0], result.target_prob, atol=1e-4)
    assert torch.equal(result.reconstructions, images)
    # the generator's blur is not part of the change: far closer to the original than the plain attack
    plain = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.75, max_steps=300).explain(images)
    assert float((result.counterfactuals - images).abs().mean()) < float((plain.counterfactuals - images).abs().mean())
    # with no steps the "counterfactual" is the original itself
    untouched = CounterfactualAttack(tiny_classifier, tiny_vae, max_steps=0, residual=True).explain(images[:4])
    assert torch.allclose(untouched.counterfactuals, images[:4], atol=1e-6)


def test_bf16_autocast_keeps_float32_outputs_and_reaches_the_target(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    attack = CounterfactualAttack(
        tiny_classifier, tiny_vae, threshold=0.75, max_steps=300, precision="bf16", latent_bound=None
    )
    result = attack.explain(images[:16])
    assert attack.settings()["precision"] == "bf16"
    assert "precision" not in CounterfactualAttack(tiny_classifier, tiny_vae).settings()  # fp32 rows unchanged
    assert result.counterfactuals.dtype == result.counterfactual_latents.dtype == result.target_prob.dtype
    assert result.counterfactuals.dtype == torch.float32
    assert result.validity >= 0.75
    with torch.no_grad():
        probs = tiny_classifier(result.counterfactuals).softmax(1)
    # the stop was decided on bf16 arithmetic: a float32 pass reads nearly the same probability
    assert torch.allclose(probs.gather(1, result.target[:, None])[:, 0], result.target_prob, atol=0.05)
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        CounterfactualAttack(tiny_classifier, tiny_vae, precision="fp8")


def test_early_stop_per_image(attack_result):
    steps = attack_result.steps
    assert int(steps.min()) < int(steps.max())  # images stop at different steps
    succeeded = attack_result.success
    assert torch.equal(attack_result.forward_passes[succeeded], steps[succeeded] + 1)
    backward = attack_result.backward_passes[succeeded]
    assert bool(((backward == steps[succeeded]) | (backward == steps[succeeded] + 1)).all())


def test_batch_of_one_matches_batch(attack_result, tiny_classifier, tiny_vae):
    attack = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.75, max_steps=300, latent_bound=None)
    for i in (0, 5):
        single = attack.explain(attack_result.originals[i : i + 1], target=attack_result.target[i : i + 1])
        assert int(single.steps[0]) == int(attack_result.steps[i])
        # batched convolutions round differently; over many Adam steps that drifts a little, no more
        assert float((single.counterfactuals[0] - attack_result.counterfactuals[i]).abs().mean()) < 0.01


def test_failed_images_never_fail_the_batch(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    result = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.9999, max_steps=2).explain(images[:8])
    assert len(result) == 8 and not bool(result.success.all())
    assert bool((result.steps <= 2).all()) and torch.isfinite(result.counterfactuals).all()


def test_lower_mode_pushes_the_class_down(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    result = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.75, max_steps=300).explain(
        images[:8], target="second", lower=True
    )
    assert torch.equal(result.target, result.original_class)
    assert result.validity >= 0.75 and bool((result.target_prob[result.success] < 0.25).all())


def test_targets_as_int_tensor_and_rules(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, labels = mnist_small
    attack = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.6, max_steps=50)
    not_three = images[labels != 3][:4]
    assert attack.explain(not_three, target=3).target.tolist() == [3] * 4
    explicit = torch.tensor([7, 1, 2, 0])
    picked = images[(labels != 7) & (labels != 1) & (labels != 2) & (labels != 0)][:4]
    assert attack.explain(picked, target=explicit).target.tolist() == explicit.tolist()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (10, "out of range"),
        (-1, "out of range"),
        ("third", "unknown target rule"),
        ("flip", "binary"),
        (torch.tensor([1.0, 2.0]), "integer"),
        (torch.tensor([1, 2, 3]), "one class per image"),
    ],
)
def test_bad_targets(tiny_classifier, tiny_vae, mnist_small, target, message):
    _, _, images, _ = mnist_small
    with pytest.raises(InputError, match=message):
        CounterfactualAttack(tiny_classifier, tiny_vae).explain(images[:2], target=target)


def test_target_equal_to_prediction_is_refused(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    predicted = tiny_classifier(images[:3]).argmax(1)
    with pytest.raises(InputError, match="nothing to change"):
        CounterfactualAttack(tiny_classifier, tiny_vae).explain(images[:3], target=predicted)


def test_bad_models_are_refused(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    with pytest.raises(InputError, match="latent model"):
        CounterfactualAttack(tiny_classifier, None)
    knn = KNNOracle(images[:50], torch.arange(50) % 10)
    # the kNN's votes are probabilities, so it is wrapped as such: then its lack of gradients is what is refused
    black_box = Classifier(knn.votes, outputs="probabilities")
    with pytest.raises(ModelError, match="not differentiable"):
        CounterfactualAttack(black_box, tiny_vae).explain(images[:2])
    # the probe runs once per classifier: a black box swapped in later is still caught
    explainer = CounterfactualAttack(tiny_classifier, tiny_vae, max_steps=1)
    explainer.explain(images[:2])
    explainer.classifier = black_box
    with pytest.raises(ModelError, match="not differentiable"):
        explainer.explain(images[:2])

    class WrongSize:
        def encode(self, x):
            return torch.zeros(len(x), 4)

        def decode(self, z):
            return torch.zeros(len(z), 1, 32, 32)

    with pytest.raises(ModelError, match="decodes to"):
        CounterfactualAttack(tiny_classifier, WrongSize()).explain(images[:2])
    with pytest.raises(InputError, match="threshold"):
        CounterfactualAttack(tiny_classifier, tiny_vae, threshold=1.5)


def test_paper_preset(tiny_classifier, tiny_vae):
    paper = CounterfactualAttack.paper(tiny_classifier, tiny_vae)
    assert paper.threshold == 0.75 and paper.objective == "prob" and paper.lr == 0.1 and paper.max_steps == 1000


def test_models_are_restored_after_explaining(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    tiny_classifier.train()
    try:
        CounterfactualAttack(tiny_classifier, tiny_vae, max_steps=2).explain(images[:2])
        assert tiny_classifier.training
        assert all(p.requires_grad for p in tiny_classifier.parameters())
    finally:
        tiny_classifier.eval()


def test_result_save_load_round_trip(attack_result, tmp_path):
    path = attack_result.save(tmp_path / "cf.safetensors")
    loaded = CounterfactualResult.load(path)
    assert loaded.method == "attack" and loaded.threshold == attack_result.threshold
    for name, tensor in attack_result.tensors().items():
        assert torch.equal(getattr(loaded, name), tensor), name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    import copy

    attack = CounterfactualAttack(
        copy.deepcopy(tiny_classifier).cuda(), copy.deepcopy(tiny_vae).cuda(), threshold=0.9, max_steps=300
    )
    result = attack.explain(images[:16].cuda())
    assert result.counterfactuals.is_cuda and result.validity >= 0.9


def test_project_to_ball_scales_only_the_latents_outside_it():
    latents = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    projected = project_to_ball(latents, 1.0)
    torch.testing.assert_close(projected, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))
    spatial = torch.randn(4, 2, 3, 3) * 10
    assert bool((project_to_ball(spatial, 2.0).flatten(1).norm(dim=1) <= 2.0 + 1e-5).all())


def test_latent_bound_keeps_a_failing_image_near_the_data(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    images = images[:16]
    # an unreachable threshold: every image runs its whole budget, which unbounded drifts the latents far out
    explain = lambda bound: CounterfactualAttack(  # noqa: E731
        tiny_classifier, tiny_vae, threshold=1 - 1e-7, lr=0.5, max_steps=60, latent_bound=bound
    ).explain(images)
    free, bounded = explain(None), explain("auto")
    radius = 1.5 * tiny_vae.latent_radius
    assert bounded.settings["latent_bound_radius"] == pytest.approx(radius, rel=1e-5)
    assert (
        "declares" in bounded.settings["latent_bound_source"]
        and free.settings["latent_bound"] is None
        and "latent_bound_radius" not in free.settings
    )
    assert float(free.counterfactual_latents.norm(dim=1).max()) > radius
    assert bool((bounded.counterfactual_latents.norm(dim=1) <= radius + 1e-4).all())
    # a latent model that declares no radius is not bounded, and the settings say why
    plain = CounterfactualAttack(
        tiny_classifier, _Undeclared(tiny_vae), threshold=1 - 1e-7, lr=0.5, max_steps=60
    ).explain(images)
    assert "latent_bound_radius" not in plain.settings and "declares no" in plain.settings["latent_bound_source"]
    assert torch.equal(plain.counterfactual_latents, free.counterfactual_latents)
    given = explain(2.0)
    assert given.settings["latent_bound"] == given.settings["latent_bound_radius"] == 2.0
    assert bool((given.counterfactual_latents.norm(dim=1) <= 2.0 + 1e-4).all())


class _Undeclared:
    """A latent model that declares no radius (encode/decode only)."""

    def __init__(self, model):
        self.model = model

    def encode(self, images):
        return self.model.encode(images)

    def decode(self, latents):
        return self.model.decode(latents)


@pytest.mark.parametrize("bound", [0.0, -1.0, "far", True])
def test_bad_latent_bounds_are_refused(tiny_classifier, tiny_vae, bound):
    with pytest.raises(InputError, match="latent_bound"):
        CounterfactualAttack(tiny_classifier, tiny_vae, latent_bound=bound)


def test_a_classifier_ending_in_softmax_is_refused_then_explained_once_wrapped(tiny_classifier, tiny_vae, mnist_small):
    _, _, images, _ = mnist_small
    images = images[:8]
    softmax_model = torch.nn.Sequential(tiny_classifier, torch.nn.Softmax(dim=1))
    with pytest.raises(ModelError, match=r'not logits.*Classifier\(model, outputs="probabilities"\)'):
        CounterfactualAttack(softmax_model, tiny_vae, threshold=0.9, max_steps=300).explain(images)
    wrapped = Classifier(softmax_model, outputs="probabilities")
    result = CounterfactualAttack(wrapped, tiny_vae, threshold=0.9, max_steps=300).explain(images)
    # the same attack as on the model's own logits: the same images reach the target, at the same steps
    plain = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.9, max_steps=300).explain(images)
    assert result.validity >= 0.5 and torch.equal(result.success, plain.success)
    assert torch.equal(result.steps, plain.steps)
    with torch.no_grad():
        probs = tiny_classifier(result.counterfactuals).softmax(1)
    assert torch.allclose(probs.gather(1, result.target[:, None])[:, 0], result.target_prob, atol=1e-4)
    # log-softmax outputs are logits: accepted as they are
    log_softmax = torch.nn.Sequential(tiny_classifier, torch.nn.LogSoftmax(dim=1))
    accepted = CounterfactualAttack(log_softmax, tiny_vae, threshold=0.9, max_steps=300).explain(images)
    assert torch.equal(accepted.success, plain.success)


@pytest.mark.parametrize("lr", [-1, 0, float("nan"), float("inf")])
def test_every_explainer_refuses_a_learning_rate_that_is_not_positive_and_finite(tiny_classifier, tiny_vae, lr):
    from vcex import DISC, AmortizedCounterfactual, PixelAttack
    from vcex.attribution import ImageAttributes
    from vcex.explainers.inversion import FourierINR
    from vcex.models.refined import RefinedEncoder

    constructors = {
        "lr": [
            lambda: CounterfactualAttack(tiny_classifier, tiny_vae, lr=lr),
            lambda: PixelAttack(tiny_classifier, lr=lr),
            lambda: DISC(tiny_classifier, lr=lr),
            lambda: RefinedEncoder(tiny_vae, lr=lr),
            lambda: ImageAttributes(lr=lr),
            lambda: AmortizedCounterfactual(tiny_classifier, tiny_vae).fit(torch.rand(4, 1, 28, 28), lr=lr),
        ],
        "lr_refine": [lambda: AmortizedCounterfactual(tiny_classifier, tiny_vae, lr_refine=lr)],
        "fit_lr": [lambda: FourierINR((1, 28, 28), fit_lr=lr)],  # DISC's INR parameterisation
    }
    for name, builds in constructors.items():
        for build in builds:
            with pytest.raises(InputError, match=f"{name} must be a positive finite number"):
                build()


def test_step_budgets_and_batch_sizes_are_checked_when_the_explainer_is_built(tiny_classifier, tiny_vae):
    from vcex import PixelAttack

    with pytest.raises(InputError, match="max_steps must be >= 0, got -1"):
        CounterfactualAttack(tiny_classifier, tiny_vae, max_steps=-1)
    with pytest.raises(InputError, match="max_steps must be a whole number"):
        PixelAttack(tiny_classifier, max_steps=float("nan"))
    with pytest.raises(InputError, match="batch_size must be >= 1, got 0"):
        CounterfactualAttack(tiny_classifier, tiny_vae, batch_size=0)
