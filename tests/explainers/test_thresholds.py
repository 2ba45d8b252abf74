import pytest
import torch
from torch import nn

from vcex import CounterfactualAttack, InputError, LinearLatentEdit, PixelAttack
from vcex.explainers import class_thresholds, explained_thresholds
from vcex.explainers.base import check_threshold
from vcex.explainers.disc import DISC
from vcex.explainers.thresholds import training_thresholds


class MeanReader(nn.Module):
    """Two classes with known probabilities: p(class 1) is the image's mean pixel (clamped away from 0 and 1)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = images.flatten(1).mean(1).clamp(1e-4, 1 - 1e-4)
        return torch.stack([torch.log1p(-p), torch.log(p)], 1)


def _flat_images(values: list[float]) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def test_class_thresholds_are_the_quantile_of_each_class_own_probability():
    # class 1 images have p(1) = 0.7, 0.8, 0.9; class 0 images have p(0) = 1 - mean = 0.6, 0.95, 0.99
    images = _flat_images([0.7, 0.8, 0.9, 0.4, 0.05, 0.01])
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    median = class_thresholds(MeanReader(), images, labels)
    torch.testing.assert_close(median, torch.tensor([0.95, 0.8], dtype=torch.float64), atol=1e-6, rtol=0)
    low = class_thresholds(MeanReader(), images, labels, quantile=0.0)
    torch.testing.assert_close(low, torch.tensor([0.6, 0.7], dtype=torch.float64), atol=1e-6, rtol=0)
    # clipped: never stricter than the cap, never below the floor
    capped = class_thresholds(MeanReader(), images, labels, quantile=1.0, cap=0.85)
    assert capped.tolist() == [0.85, 0.85]  # the cap exactly
    floored = class_thresholds(MeanReader(), images, labels, quantile=0.0, floor=0.65)
    torch.testing.assert_close(floored, torch.tensor([0.65, 0.7], dtype=torch.float64), atol=1e-6, rtol=0)


def test_class_thresholds_refuse_bad_input_with_the_fix():
    images = _flat_images([0.7, 0.8, 0.2])
    with pytest.raises(InputError, match="no image labelled 0"):
        class_thresholds(MeanReader(), images, torch.tensor([1, 1, 1]))
    with pytest.raises(InputError, match="one class per image"):
        class_thresholds(MeanReader(), images, torch.tensor([1, 0]))
    with pytest.raises(InputError, match="integer class indices"):
        class_thresholds(MeanReader(), images, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        class_thresholds(MeanReader(), images, torch.tensor([1, 0, 2]))
    with pytest.raises(InputError, match="quantile"):
        class_thresholds(MeanReader(), images, torch.tensor([1, 0, 1]), quantile=1.5)
    with pytest.raises(InputError, match="floor"):
        class_thresholds(MeanReader(), images, torch.tensor([1, 0, 1]), floor=0.9, cap=0.8)


@pytest.mark.parametrize(
    "threshold, message",
    [
        (1.0, "strictly between 0 and 1"),
        (float("nan"), "strictly between 0 and 1"),
        ([0.9, 1.2], "class 1 has 1.2"),
        ([], "at least one"),
        (torch.full((2, 2), 0.9), "1-D tensor"),
        ("high", "or .auto."),
        (True, "probability"),
    ],
)
def test_bad_thresholds_are_refused(threshold, message):
    with pytest.raises(InputError, match=message):
        check_threshold(threshold)


def test_thresholds_are_kept_as_a_float_or_a_tuple_of_floats():
    assert check_threshold(0.9) == 0.9 and isinstance(check_threshold(torch.tensor(0.9)), float)
    assert check_threshold(torch.tensor([0.5, 0.75])) == (0.5, 0.75)


@pytest.fixture(scope="module")
def per_class(tiny_classifier, mnist_small):
    """The test images with their runner-up targets, and thresholds that ask little of one target class."""
    _, _, images, _ = mnist_small
    images = images[:48]
    with torch.no_grad():
        targets = tiny_classifier(images).softmax(1).topk(2, dim=1).indices[:, 1]
    easy = int(targets.mode().values)  # the commonest target: enough images on both sides
    thresholds = torch.full((10,), 0.9)
    thresholds[easy] = 0.55
    return images, targets, thresholds, easy


def test_attack_stops_each_image_at_its_target_class_threshold(tiny_classifier, tiny_vae, per_class):
    images, targets, thresholds, easy = per_class
    attack = lambda threshold: CounterfactualAttack(tiny_classifier, tiny_vae, threshold=threshold, max_steps=300)  # noqa: E731
    result = attack(thresholds).explain(images, target=targets)
    per_image = thresholds[result.target]
    assert torch.equal(result.success, result.target_prob > per_image)
    assert result.threshold == tuple(thresholds.tolist()) and result.settings["threshold"] == result.threshold
    uniform = attack(0.9).explain(images, target=targets)
    on_easy = (result.target == easy) & result.success & uniform.success
    assert int(on_easy.sum()) >= 2
    # the easy class stops at 0.55: fewer steps and a lower confidence than at 0.9; the others run as before
    # (up to a step where the batch's other sizes round differently)
    assert int(result.steps[on_easy].sum()) < int(uniform.steps[on_easy].sum())
    assert float(result.target_prob[on_easy].min()) < 0.9
    others = result.target != easy
    assert float((result.steps[others] - uniform.steps[others]).abs().float().mean()) <= 1.0


def test_pixel_and_disc_use_per_class_thresholds(tiny_classifier, per_class):
    images, targets, thresholds, _ = per_class
    explainers = [
        PixelAttack(tiny_classifier, threshold=thresholds, max_steps=200),
        DISC(tiny_classifier, threshold=thresholds, max_steps=100),
    ]
    for explainer in explainers:
        result = explainer.explain(images[:16], target=targets[:16])
        assert torch.equal(result.success, result.target_prob > thresholds[result.target]), explainer.name
        assert result.validity > 0, explainer.name
    # DISC's default stages (0.6, 0.9) must lie below the lowest class threshold (0.55 here): none is left
    assert explainers[1].stages == ()


def test_linear_edit_aims_each_image_at_its_target_class_threshold(tiny_classifier, tiny_vae, mnist_small, per_class):
    train_images, _, _, _ = mnist_small
    images, targets, thresholds, easy = per_class
    edit = LinearLatentEdit(tiny_classifier, tiny_vae, threshold=thresholds).fit(train_images[:500])
    result = edit.explain(images, target=targets)
    assert torch.equal(result.success, result.target_prob > thresholds[result.target])
    edit.threshold = 0.9
    uniform = edit.explain(images, target=targets)
    moved = lambda r: (r.counterfactual_latents - r.original_latents).flatten(1).norm(dim=1)  # noqa: E731
    on_easy, others = result.target == easy, result.target != easy
    # the probe's goal is logit(0.55) instead of logit(0.9) for the easy class: a shorter edit; the same elsewhere
    assert bool((moved(result)[on_easy] <= moved(uniform)[on_easy] + 1e-5).all())
    assert float(moved(result)[on_easy].sum()) < float(moved(uniform)[on_easy].sum())
    torch.testing.assert_close(moved(result)[others], moved(uniform)[others])


def test_lowering_uses_one_minus_each_class_threshold(tiny_classifier, tiny_vae, per_class):
    images, _, thresholds, _ = per_class
    attack = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=thresholds, max_steps=300)
    result = attack.explain(images[:16], lower=True)
    assert torch.equal(result.success, result.target_prob < 1 - thresholds[result.target])


def test_per_class_thresholds_must_match_the_classifier(tiny_classifier, tiny_vae, per_class):
    images, _, _, _ = per_class
    with pytest.raises(InputError, match="3 per-class thresholds were given, but the classifier has 10 classes"):
        CounterfactualAttack(tiny_classifier, tiny_vae, threshold=[0.9, 0.9, 0.9]).explain(images[:2])


def _probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_explained_thresholds_keep_the_cap_for_a_sure_classifier():
    probs = _probs([[0.9995, 0.0005]] * 6 + [[0.0001, 0.9999]] * 6)
    threshold, reason = explained_thresholds(probs)
    assert threshold == 0.998 and isinstance(threshold, float)
    assert "100% of the 12 explained images above 0.998" in reason


def test_explained_thresholds_lower_the_classes_the_classifier_is_unsure_of():
    # class 0: six images at 0.99, 0.9, 0.8, 0.7, 0.95, 0.85 (median 0.875); class 1: sure; class 2: two images
    # (fewer than MIN_CLASS_IMAGES), so the pooled median of every image's top probability
    rows = [[p, 1 - p, 0.0] for p in (0.99, 0.9, 0.8, 0.7, 0.95, 0.85)]
    rows += [[0.0, 0.9999, 0.0001]] * 5 + [[0.2, 0.0, 0.8], [0.4, 0.0, 0.6]]
    threshold, reason = explained_thresholds(_probs(rows))
    top = _probs(rows).max(1).values
    assert threshold[0] == pytest.approx(0.875) and threshold[1] == 0.998
    assert threshold[2] == pytest.approx(float(top.median()))
    assert "per class" in reason and "(2)" in reason and "class_thresholds" in reason
    # never below the floor, where the target would not have to be the top class
    low, _ = explained_thresholds(_probs([[0.45, 0.35, 0.2]] * 6))
    assert low == 0.5


def test_auto_is_the_default_and_records_what_it_resolved_to_and_why(tiny_classifier, tiny_vae, per_class):
    images, targets, _, _ = per_class
    attack = CounterfactualAttack(tiny_classifier, tiny_vae, max_steps=20)
    assert attack.threshold == "auto"
    with pytest.raises(InputError, match="decided from the images"):
        attack.active_threshold  # noqa: B018
    result = attack.explain(images, target=targets)
    with torch.no_grad():
        expected, reason = explained_thresholds(tiny_classifier(images).softmax(1))
    assert result.threshold == expected and result.settings["threshold"] == "auto"
    assert result.settings["threshold_reason"] == reason
    assert torch.equal(result.success, result.target_prob > torch.tensor(expected)[result.target])
    assert attack._call_threshold is None  # nothing of the call stays behind
    # DISC's progressive stages lie below the threshold the call resolved
    disc = DISC(tiny_classifier, max_steps=3)
    assert disc.stages is None
    assert all(s < min(expected) for s in disc.explain(images[:4], target=targets[:4]).settings["stages"])


def test_the_cli_default_takes_thresholds_from_labelled_training_images(tiny_classifier, mnist_small):
    images, labels, _, _ = mnist_small
    threshold, reason = training_thresholds(tiny_classifier, images, labels)
    expected = class_thresholds(tiny_classifier, images, labels)
    if len(set(expected.tolist())) == 1:
        assert threshold == float(expected[0])
    else:
        assert threshold == tuple(expected.tolist())
    assert reason.startswith("auto: ") and "training images" in reason
    sure, why = training_thresholds(
        MeanReader(), _flat_images([0.9995, 0.9999, 0.0001, 0.0003]), torch.tensor([1, 1, 0, 0])
    )
    assert sure == 0.998 and "every class" in why
