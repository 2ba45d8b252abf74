"""Explaining away, on drawn images whose two routes to the other class are known by construction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_image_attributes import SIZE, synthetic  # the drawn bar images (this folder is on sys.path)
from torch import nn

from vcex.attribution import ImageAttributes, explain_away, group_scores, residual_scores
from vcex.errors import InputError, ModelError
from vcex.explainers import CounterfactualAttack

pytestmark = pytest.mark.usefixtures("one_thread")

BAR = (slice(2, 10), slice(2, 4))  # where test_image_attributes.draw puts the bar


def bar_mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[:, :, BAR[0], BAR[1]] = 1.0
    return mask


class BarAndBrightness(nn.Module):
    """Latent (N, 2) -> (N, 1, 12, 12): z[0] the bar's strength, z[1] / 4 the background's brightness (as drawn).
    The brightness moves 4x less per unit of latent, so an attack's equal steps reach the bar first."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        bar, background = torch.sigmoid(latents[:, 0]), 0.5 * torch.sigmoid(latents[:, 1] / 4)
        background = background.view(-1, 1, 1, 1)
        return background + bar_mask() * (1 - background) * bar.view(-1, 1, 1, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        mask = bar_mask()
        background = (images * (1 - mask)).sum((1, 2, 3)) / (1 - mask).sum()
        bar = ((images * mask).sum((1, 2, 3)) / mask.sum() - background) / (1 - background)
        return torch.logit(torch.stack([bar, background * 2], 1).clamp(1e-4, 1 - 1e-4)) * torch.tensor([1.0, 4.0])


class ReadsBothRoutes(nn.Module):
    """Class 1 when the bar is drawn or the background is bright: either alone flips it."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mask = bar_mask()
        bar = (images * mask).sum((1, 2, 3)) / mask.sum()
        background = (images * (1 - mask)).sum((1, 2, 3)) / (1 - mask).sum()
        # log P(class 0) = log(1 - p_bar) + log(1 - p_background)
        negative = F.logsigmoid(-20 * (bar - 0.5)) + F.logsigmoid(-40 * (background - 0.2))
        return torch.stack([negative, torch.log((-torch.expm1(negative)).clamp_min(1e-12))], 1)


@pytest.fixture(scope="module")
def readers() -> ImageAttributes:
    images, descriptors = synthetic(n=800)
    return ImageAttributes(epochs=5, width=8, device="cpu").fit(images, descriptors)


def start_images(n: int = 12) -> torch.Tensor:
    latents = torch.stack([torch.full((n,), -4.0), torch.linspace(-9.0, -8.0, n)], 1)
    return BarAndBrightness().decode(latents)


def attack(**options) -> CounterfactualAttack:
    return CounterfactualAttack(ReadsBothRoutes(), BarAndBrightness(), **{"lr": 0.1, "max_steps": 300, **options})


def test_round_two_holds_the_first_winner_and_finds_the_other_route(readers):
    images = start_images()
    away = explain_away(attack(), readers, images, rounds=2, resamples=50)
    assert away.winners == ["bar", "brightness"]
    assert away.ranking()[:2] == ["bar", "brightness"]
    assert away.held == [[], ["bar"]] and away.stopped is None
    assert all(valid == len(images) for valid in away.valid)
    bar = readers.names.index("bar")
    first, second = (readers.local(result).scores[:, bar] for result in away.results)
    assert float(first.mean()) > 0.5  # round 1 draws the bar
    assert float(second.abs().max()) < 0.1  # round 2 flips the classifier without it
    assert away.results[1].settings["hold"] == "descriptors bar (image readers)"
    record = away.to_json()
    assert record["ranking"][:2] == ["bar", "brightness"] and record["rounds"][1]["held"] == ["bar"]
    assert list(record["rounds"][0]["group_scores"])[0] == "bar"


def test_residual_scoring_still_finds_the_other_route(readers):
    images = start_images(6)
    away = explain_away(attack(), readers, images, rounds=2, residual=True, resamples=50)
    assert away.winners == ["bar", "brightness"] and away.residual
    record = away.to_json()
    assert record["residual"] and list(record["rounds"][1]["residual_scores"]) == ["brightness"]
    assert len(record["rounds"][1]["mix"]) == 1 and record["rounds"][1]["mix"][0] >= 0
    assert away.scores[0] == group_scores(away.rounds[0], away.groups)  # round 1 has nothing to explain it


def test_residual_scores_explain_away_an_earlier_pattern_and_keep_a_new_route():
    first = {"smile": 0.5, "eyes": 0.3, "lipstick": 0.2, "background": 0.0}
    # holding the smile, its side effects come back at 0.7x; the background is new
    second = {"eyes": 0.21, "lipstick": 0.14, "background": 0.12, "smile": 0.01}
    residual, mix = residual_scores(second, [first], held=["smile"])
    assert mix == pytest.approx([0.7])
    assert list(residual)[0] == "background" and residual["background"] == pytest.approx(0.12)
    assert abs(residual["eyes"]) < 1e-9 and abs(residual["lipstick"]) < 1e-9 and "smile" not in residual
    # a round that undoes an earlier pattern is not explained by it: the weight stays at 0
    undone, mix = residual_scores({"eyes": -0.3, "lipstick": -0.2}, [first], held=["smile"])
    assert mix == [0.0] and undone == {"eyes": -0.3, "lipstick": -0.2}
    # two earlier patterns: each explains its own share
    third = {"eyes": 0.5 * 0.3, "lipstick": 0.5 * 0.2, "beard": 0.4 * 0.5, "bangs": 0.05, "background": 0.0}
    residual, mix = residual_scores(third, [first, {"beard": 0.5}], held=["smile", "background"])
    assert mix == pytest.approx([0.5, 0.4]) and list(residual)[0] == "bangs"
    assert residual["bangs"] == pytest.approx(0.05) and set(residual) == {"eyes", "lipstick", "beard", "bangs"}
    assert max(abs(residual[group]) for group in ("eyes", "lipstick", "beard")) < 1e-9


def test_groups_win_and_are_held_together(readers):
    images = start_images(6)
    together = {"bar": "drawing", "brightness": "drawing", "coin": "coin"}
    away = explain_away(attack(max_steps=100), readers, images, rounds=3, groups=together, resamples=50)
    # round 1 wins the whole group; the coin's reader is unusable, so nothing is left to hold or rank
    assert away.winners == ["drawing"] and len(away.rounds) == 1
    assert away.stopped == "round 2 would hold every usable group: nothing left to rank"
    assert set(group_scores(away.rounds[0], together)) == {"drawing"}


def test_a_round_without_valid_counterfactuals_ends_the_rounds(readers):
    images = start_images(4)
    first = attack().explain(images, target="flip")
    # two steps are too few to flip anything, so round 2 has nothing valid to average
    away = explain_away(attack(max_steps=2), readers, images, rounds=3, first=first, resamples=50)
    assert away.results[0] is first and away.winners == ["bar"]
    assert away.stopped == "round 2 had no valid counterfactuals" and len(away.rounds) == 1
    with pytest.raises(InputError, match="round 1 had no valid counterfactuals"):
        explain_away(attack(max_steps=2), readers, images, rounds=2, resamples=50)


def test_later_rounds_use_their_own_attack_and_resume_from_the_checkpoint(readers, tmp_path, monkeypatch):
    images = start_images(6)
    folder = tmp_path / "rounds"
    later = attack(max_steps=400)
    away = explain_away(attack(), readers, images, rounds=2, later=later, checkpoint=folder, resamples=50)
    assert away.results[0].settings["max_steps"] == 300 and away.results[1].settings["max_steps"] == 400
    assert len(list(folder.glob("round-*.safetensors"))) == 1  # round 1 is not a held round: not kept

    def refuse(*args, **kwargs):
        raise AssertionError("a round that was checkpointed ran again")

    first = away.results[0]
    monkeypatch.setattr(CounterfactualAttack, "explain", refuse)
    again = explain_away(attack(), readers, images, rounds=2, later=later, first=first, checkpoint=folder, resamples=50)
    assert again.winners == away.winners
    torch.testing.assert_close(again.results[1].counterfactuals, away.results[1].counterfactuals)
    # anything the round depends on names another file: a different hold weight is run, not loaded
    with pytest.raises(AssertionError, match="ran again"):
        explain_away(attack(), readers, images, rounds=2, later=attack(max_steps=400, hold_weight=5.0),
                     first=first, checkpoint=folder)  # fmt: skip


def test_bad_input_is_refused_with_the_fix(readers):
    images = start_images(4)
    with pytest.raises(InputError, match="rounds must be an integer >= 1"):
        explain_away(attack(), readers, images, rounds=0)
    with pytest.raises(InputError, match="image readers"):
        explain_away(attack(), object(), images)
    with pytest.raises(InputError, match="CounterfactualAttack"):
        explain_away(object(), readers, images)
    with pytest.raises(InputError, match="CounterfactualAttack"):
        explain_away(attack(), readers, images, later="whitened")
    with pytest.raises(InputError, match="not fitted"):
        explain_away(attack(), ImageAttributes(), images)
    with pytest.raises(InputError, match="first has 2 counterfactuals but 4 images"):
        explain_away(attack(), readers, images, first=attack().explain(images[:2], target="flip"))
    with pytest.raises(InputError, match="unknown descriptors"):
        readers.hold(["glasses"])
    with pytest.raises(InputError, match="do not beat chance"):
        readers.hold(["coin"])
    with pytest.raises(InputError, match="hold_weight must be > 0"):
        attack(hold_weight=0.0)
    with pytest.raises(InputError, match="hold must be a function"):
        attack(hold="bar")
    with pytest.raises(ModelError, match=r"hold must map images \(N, C, H, W\) to values \(N, M\)"):
        attack(hold=lambda x: x.mean((1, 2, 3))).explain(images, target="flip")
