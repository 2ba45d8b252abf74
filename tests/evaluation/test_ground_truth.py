"""Ground truth on the synthetic faces: intervention influence and scores of a ranking, on known answers."""

import math

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from vcex.data.synthetic_faces import sample_factors
from vcex.errors import InputError, ModelError
from vcex.evaluation.ground_truth import (
    CONTENT_FACTORS,
    descriptor_factor,
    driver_rank,
    factor_levels,
    factor_scores,
    intervention_flip_share,
    intervention_images,
    intervention_influence,
    precision_at_k,
    score_ranking,
    spearman,
)


class CornerReader(nn.Module):
    """Reads only the top-left pixel, which is always background: red minus blue, as the positive logit."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(8.0))
        self.dropout = nn.Dropout(0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixel = images[:, :, 0, 0]
        logit = self.gain * (pixel[:, 0] - pixel[:, 2])
        return torch.stack([torch.zeros_like(logit), self.dropout(logit)], 1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def factors() -> dict[str, torch.Tensor]:
    return sample_factors(12, seed=3)


def test_a_classifier_reading_the_background_is_influenced_by_the_background_hue_only(factors):
    influence = intervention_influence(CornerReader(), factors)
    assert list(influence) == list(CONTENT_FACTORS)
    assert influence["background_hue"] > 0.3
    for name, value in influence.items():
        if name != "background_hue":
            assert value == pytest.approx(0.0, abs=1e-6), name
    assert all(0.0 <= value <= 1.0 for value in influence.values())


def test_two_levels_miss_the_hue_because_both_ends_of_the_circle_are_red(factors):
    influence = intervention_influence(CornerReader(), factors, ["background_hue"], levels=2)
    assert influence["background_hue"] == pytest.approx(0.0, abs=1e-5)


def test_rendered_once_equals_rendered_on_the_fly_and_the_mode_is_restored(factors):
    classifier = CornerReader().train()
    names = ["background_hue", "smile", "eyeglasses"]
    images = intervention_images(factors, names)
    assert images["eyeglasses"].shape == (2, 12, 3, 32, 32) and images["smile"].shape == (5, 12, 3, 32, 32)
    cached = intervention_influence(classifier, factors, names, images=images)
    assert cached == intervention_influence(classifier, factors, names)  # dropout is off while measuring
    assert classifier.training


class BiasedCornerReader(CornerReader):
    """CornerReader with a logit offset: the background still moves the probability, but never past 0.5."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = super().forward(images)
        return logits + torch.tensor([0.0, -6.0])


def test_only_the_background_flips_a_background_reader_and_cached_renders_agree(factors):
    shares = intervention_flip_share(CornerReader(), factors)
    assert list(shares) == list(CONTENT_FACTORS)
    # every face passes through red and blue backgrounds as the hue goes round the circle
    assert shares["background_hue"] == 1.0
    assert all(value == 0.0 for name, value in shares.items() if name != "background_hue")
    names = ["background_hue", "smile"]
    assert intervention_flip_share(CornerReader(), factors, names, images=intervention_images(factors, names)) == {
        "background_hue": 1.0,
        "smile": 0.0,
    }


def test_influence_without_a_flip_when_the_factor_cannot_cross_the_decision(factors):
    classifier = BiasedCornerReader()
    assert intervention_influence(classifier, factors, ["background_hue"])["background_hue"] > 0.01
    assert intervention_flip_share(classifier, factors, ["background_hue"]) == {"background_hue": 0.0}


def test_a_constant_classifier_has_no_influence_and_nuisance_factors_come_only_when_named(factors):
    def constant(images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], 2)

    influence = intervention_influence(constant, factors, ["rotation", "smile"])
    assert influence == {"rotation": 0.0, "smile": 0.0}


def test_factor_levels_cover_the_range():
    assert factor_levels("eyeglasses").tolist() == [0.0, 1.0]
    assert factor_levels("smile", 3).tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"names": ["smiles"]}, "unknown factor"),
        ({"names": []}, "names is empty"),
        ({"levels": 1}, "levels must be at least 2"),
        ({"positive_class": 2}, "positive_class"),
        ({"batch_size": 0}, "batch_size"),
        ({"names": ["smile"], "images": {"smile": torch.zeros(2, 12, 3, 32, 32)}}, "expected (5, 12, 3, 32, 32)"),
        ({"names": ["smile"], "images": {}}, "no renders for factor 'smile'"),
    ],
)
def test_bad_arguments_are_refused(factors, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        intervention_influence(CornerReader(), factors, **kwargs)


def test_bad_factors_and_classifiers_are_refused(factors):
    with pytest.raises(InputError, match="factors miss smile"):
        intervention_influence(CornerReader(), {k: v for k, v in factors.items() if k != "smile"})
    with pytest.raises(InputError, match="0 faces"):
        intervention_influence(CornerReader(), {k: v[:0] for k, v in factors.items()})
    with pytest.raises(InputError, match="different lengths"):
        intervention_influence(CornerReader(), {**factors, "smile": factors["smile"][:5]})
    with pytest.raises(ModelError, match="logits of shape"):
        intervention_influence(lambda images: images.mean((1, 2, 3)), factors, ["smile"])


# ------------------------------------------------------------------------------- rankings


def test_descriptors_map_to_the_factor_they_read():
    assert descriptor_factor("smiling") == "smile"
    assert descriptor_factor("warm_background") == "background_hue"
    assert descriptor_factor("smile") == "smile"
    assert descriptor_factor("factor:hair_length") == "hair_length"
    with pytest.raises(InputError, match="neither a face attribute"):
        descriptor_factor("thickness")


def test_attribute_and_factor_descriptors_merge_to_the_largest_magnitude_with_its_sign():
    merged = factor_scores({"smiling": 0.2, "smile": -0.5, "warm_background": 0.1, "background_hue": 0.05})
    assert merged == {"smile": -0.5, "background_hue": 0.1}


def test_driver_rank_and_precision_on_a_hand_made_ranking():
    scores = {"a": 0.9, "b": -0.7, "c": 0.3, "d": 0.0}
    assert driver_rank(scores, ["a"]) == 1
    assert driver_rank(scores, ["c", "d"]) == 3
    assert driver_rank(scores, "b") == 2
    assert precision_at_k(scores, ["a", "c"]) == 0.5
    assert precision_at_k(scores, ["a", "b"]) == 1.0
    assert precision_at_k(scores, ["c"], k=3) == pytest.approx(1 / 3)


def test_ties_count_against_the_true_set():
    scores = {"a": 0.5, "b": -0.5, "c": 0.1}
    assert driver_rank(scores, ["a"]) == 2 and driver_rank(scores, ["b"]) == 2
    assert precision_at_k(scores, ["a"]) == 0.0
    assert driver_rank({"a": 0.0, "b": 0.0}, ["a"]) == 2


def test_spearman_known_values_and_scipy_agreement():
    a = {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0}
    assert spearman(a, {"x": 10.0, "y": 20.0, "z": 30.0, "w": 40.0}) == pytest.approx(1.0)
    assert spearman(a, {"x": 4.0, "y": 3.0, "z": 2.0, "w": 1.0}) == pytest.approx(-1.0)
    generator = torch.Generator().manual_seed(0)
    names = [f"f{i}" for i in range(9)]
    first, second = torch.rand(9, generator=generator).tolist(), torch.rand(9, generator=generator).tolist()
    expected = spearmanr(first, second).statistic
    assert spearman(dict(zip(names, first)), dict(zip(reversed(names), reversed(second)))) == pytest.approx(expected)
    assert math.isnan(spearman(a, dict.fromkeys(a, 0.0)))


def test_score_ranking_merges_descriptors_and_fills_unscored_factors_with_zero():
    scores = {"smiling": 0.4, "smile": 0.6, "eyeglasses": -0.1, "warm_background": 0.3}
    influence = {"smile": 0.8, "eyeglasses": 0.01, "background_hue": 0.2, "bangs": 0.0}
    out = score_ranking(scores, ["smile"], influence)
    assert out["driver_rank"] == 1 and out["driver_first"] and out["precision_at_k"] == 1.0
    assert out["spearman"] == pytest.approx(1.0)
    assert score_ranking(scores, ["bangs"], influence)["driver_rank"] == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: driver_rank({}, ["a"]), "non-empty dict"),
        (lambda: driver_rank({"a": float("nan")}, ["a"]), "finite"),
        (lambda: driver_rank({"a": 1.0}, []), "drivers is empty"),
        (lambda: driver_rank({"a": 1.0}, ["b"]), "none of the drivers"),
        (lambda: precision_at_k({"a": 1.0, "b": 0.5}, ["a"], k=3), "k must lie in"),
        (lambda: spearman({"a": 1.0, "b": 2.0}, {"a": 1.0, "c": 2.0}), "same names"),
        (lambda: spearman({"a": 1.0}, {"a": 1.0}), "at least two"),
    ],
)
def test_bad_rankings_are_refused(call, message):
    with pytest.raises(InputError, match=message):
        call()
