"""Explaining away: global explanations in rounds, each holding what the earlier rounds found.

A counterfactual attack finds the classifier's *cheapest* route to the other class, so a global
explanation averages mostly one route: when a classifier reads a smile strongly and a background
shortcut less strongly, its counterfactuals change the smile and the shortcut never shows. Explaining
away asks the next question directly. Round 1 is the ordinary global explanation; its top descriptor
group wins the round. Round r attacks the same images again (the same attack, or ``later``, e.g. in a
whitened latent) with every group won so far held at its start value (the image readers'
probabilities, :meth:`ImageAttributes.hold`, as a penalty in the attack's loss), so the attack must
flip the classifier some other way, and that round's top group wins it. The ranking is the winners
in order, then the other groups by the last round's |S|.

Holding a factor does not always close its route: holding the smile, an attack can still reach a
smile-reading classifier through what changes *with* a smile (eyes, lipstick), and those would win
the next round. With ``residual=True`` a later round is scored by what the earlier rounds' patterns do
not explain: its group scores S_r (over the groups not held) are fitted as a non-negative mix of the
earlier rounds' scores on the same groups, and the winner is the largest |residual|. A route already
won, showing again through its side effects, is explained away; a new route, absent from the earlier
patterns, is not. This suits a first round that found one route cleanly (the attack in raw W); when
round 1 already mixes two routes, the second is in round 1's pattern and the residual removes it too,
and when round 1's winner is itself a side effect (lipstick before the smile), the true factor is
explained away with it.

On 40 synthetic-face classifiers that rely on a planted background shortcut (docs/benchmarks/faces-global.md
and its confirmation pages), three rounds (round 1 in W, read from the images) put the background in the
top 3 for 36 with raw scores and for all 40 with the residual (20 of 20 fresh after it was designed),
against 4 for one round in raw W and 27 for one round in whitened W; the raw misses are the side-effect
case above, and the residual's cost is the smile for the 4 whose round 1 put another factor first.

>>> readers = ImageAttributes(max_blur=1.2).fit(train_images, Descriptors.from_faces(train_faces))
>>> away = explain_away(CounterfactualAttack(classifier, style), readers, images, rounds=2)
>>> away.ranking()[:3], away.winners
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from vcex.attribution.global_scores import DEFAULT_RESAMPLES, GlobalExplanation, directions_from_result, global_scores
from vcex.attribution.image_attributes import ImageAttributes
from vcex.cache import data_fingerprint, parameter_fingerprint
from vcex.errors import InputError
from vcex.explainers.counterfactual_attack import CounterfactualAttack
from vcex.explainers.result import CounterfactualResult

Groups = Mapping[str, str] | Callable[[str], str]


@dataclass
class ExplainAway:
    """The rounds of :func:`explain_away`.

    Attributes:
        rounds: one :class:`GlobalExplanation` per round that had counterfactuals to average.
        held: for each round, the groups held during its attack (none in round 1).
        winners: each round's top group (not held before).
        valid: valid counterfactuals per round (of ``n`` images).
        groups: descriptor name -> group, for every descriptor.
        n: images explained per round.
        stopped: why fewer rounds than asked were run (None when all ran).
        results: each round's counterfactuals (round 1's is ``first`` when it was given).
        residual: whether later rounds were scored by their residual (:func:`residual_scores`).
        scores: each round's group scores that chose its winner (round 1's and every round's without
            ``residual``: :func:`group_scores`; else the residuals over the groups not held).
        mix: for each round, the non-negative weights of the earlier rounds' patterns in its scores.
    """

    rounds: list[GlobalExplanation]
    held: list[list[str]]
    winners: list[str]
    valid: list[int]
    groups: dict[str, str]
    n: int
    stopped: str | None = None
    results: list[CounterfactualResult] = field(default_factory=list, repr=False)
    residual: bool = False
    scores: list[dict[str, float]] = field(default_factory=list)
    mix: list[list[float]] = field(default_factory=list)

    def ranking(self) -> list[str]:
        """Groups in order: the rounds' winners, then every other ranked group by the last round's scores
        (|S|, or |residual| with ``residual``)."""
        last = sorted(self.scores[-1].items(), key=lambda item: -abs(item[1]))
        return [*self.winners, *(group for group, _ in last if group not in self.winners)]

    def to_json(self) -> dict:
        """A JSON-ready dict: the ranking, winners, and each round's held groups, counts and explanation."""
        return {
            "ranking": self.ranking(),
            "winners": self.winners,
            "n": self.n,
            "stopped": self.stopped,
            "residual": self.residual,
            "rounds": [
                {
                    "held": held,
                    "valid_counterfactuals": valid,
                    "group_scores": group_scores(explanation, self.groups),
                    **({"residual_scores": scores, "mix": mix} if self.residual else {}),
                    "explanation": explanation.to_json(),
                }
                for held, valid, explanation, scores, mix in zip(
                    self.held, self.valid, self.rounds, self.scores, self.mix
                )
            ],
        }


def group_scores(explanation: GlobalExplanation, groups: Mapping[str, str]) -> dict[str, float]:
    """Group -> the S of its descriptor with the largest |S| (sign kept), over usable descriptors, by
    decreasing |S|."""
    merged: dict[str, float] = {}
    for name, score, *_ in explanation.ranked():
        group = groups[name]
        if group not in merged:  # ranked() is in decreasing |S|, so the first is the group's largest
            merged[group] = score
    return merged


def residual_scores(
    scores: Mapping[str, float], earlier: list[Mapping[str, float]], held: list[str]
) -> tuple[dict[str, float], list[float]]:
    """What a round's group scores leave unexplained by the earlier rounds' patterns.

    Over the groups of ``scores`` not in ``held``, S is fitted as a non-negative mix of the earlier rounds'
    scores on the same groups (a group an earlier round did not rank counts 0): S ~ sum_k c_k S_k with
    c_k >= 0 (non-negative least squares), and the residual S - sum_k c_k S_k is returned, by decreasing
    |residual|, with the weights c. The weights are non-negative because a route that shows again moves
    its side effects the same way; a later round that undoes an earlier pattern is not explained by it.
    """
    free = [group for group in scores if group not in held]
    if not free:
        return {}, [0.0] * len(earlier)
    target = np.array([scores[group] for group in free], dtype=np.float64)
    if earlier:
        patterns = np.array([[pattern.get(group, 0.0) for pattern in earlier] for group in free], dtype=np.float64)
        weights, _ = nnls(patterns, target)
        target = target - patterns @ weights
    else:
        weights = np.zeros(0)
    order = np.argsort(-np.abs(target), kind="stable")
    return {free[i]: float(target[i]) for i in order}, [float(w) for w in weights]


def _group_map(names: list[str], groups: Groups | None) -> dict[str, str]:
    if groups is None:
        return {name: name for name in names}
    lookup = groups if callable(groups) else groups.get
    mapped = {}
    for name in names:
        group = lookup(name)
        mapped[name] = name if group is None else str(group)
    return mapped


def _round_path(
    folder: Path, attack: CounterfactualAttack, readers: ImageAttributes, images: torch.Tensor, held_names: list[str]
) -> Path:
    """Where a later round's result is kept: named by everything it depends on (the attack's settings and
    models, the readers, the images and what is held)."""
    key = {
        "settings": attack.settings(),
        "classifier": parameter_fingerprint(attack.classifier),
        "latent_model": parameter_fingerprint(attack.latent_model),
        "readers": parameter_fingerprint(readers.network),
        "images": data_fingerprint(images),
        "held": held_names,
        "hold_weight": attack.hold_weight,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return folder / f"round-{digest}.safetensors"


def explain_away(
    attack: CounterfactualAttack,
    readers: ImageAttributes,
    images: torch.Tensor,
    *,
    rounds: int = 2,
    groups: Groups | None = None,
    first: CounterfactualResult | None = None,
    later: CounterfactualAttack | None = None,
    checkpoint: str | Path | None = None,
    valid_only: bool = True,
    residual: bool = False,
    resamples: int = DEFAULT_RESAMPLES,
    label: str | None = "CounterfactualAttack",
) -> ExplainAway:
    """Global explanations of a binary classifier in ``rounds`` rounds, each holding the earlier winners.

    Args:
        attack: the attack of every round (its own ``hold`` is replaced; target: flip).
        readers: fitted image readers: they score each round's counterfactuals (s_a = p_a(x_cf) -
            p_a(x_start)) and are what a round holds.
        images: (N, C, H, W) images to explain, the same in every round.
        rounds: number of rounds (1: the ordinary global explanation).
        groups: descriptor name -> group (a dict, or a function), so that descriptors reading one
            factor win and are held together (the faces' ``smiling`` and ``smile``:
            :func:`vcex.evaluation.ground_truth.descriptor_factor`); default each descriptor alone.
        first: round 1's result when it is already computed (the attack on ``images``, target flip).
        later: the attack of rounds 2 and on (default ``attack``), e.g. the same classifier in a whitened
            latent (:class:`vcex.WhitenedLatentModel`), whose equal steps follow the data's spread and
            find other routes more often than raw W's (docs/benchmarks/faces-global.md).
        checkpoint: a folder where each later round's result is written as soon as it is done and found
            again on a rerun (named by the attack's settings and models, the readers, the images and
            what is held), so an interrupted run resumes and runs that share rounds compute them once.
        valid_only: average only counterfactuals that passed the threshold (as ``vcex global``), or
            every one (as the reference code).
        residual: choose each later round's winner by what the earlier rounds' patterns leave unexplained
            (:func:`residual_scores`), so a won route showing again through its side effects does not win
            again under another name. Suits a first round in raw W; see the module's docstring.
        resamples, label: bootstrap resamples and the explanations' label.
    Returns:
        :class:`ExplainAway`; a round without valid counterfactuals (``valid_only``), or one that would
        hold every usable group, ends the rounds and says so in ``stopped``.
    """
    later = attack if later is None else later
    for given in (attack, later):
        if not isinstance(given, CounterfactualAttack):
            raise InputError(f"explain_away needs a CounterfactualAttack, got {type(given).__name__}")
    if not isinstance(readers, ImageAttributes):
        raise InputError(
            f"explain_away holds descriptors through image readers (ImageAttributes), got {type(readers).__name__}"
        )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be an integer >= 1, got {rounds!r}")
    readers._check_fitted()
    mapped = _group_map(readers.names, groups)
    if first is not None and len(first) != len(images):
        raise InputError(f"first has {len(first)} counterfactuals but {len(images)} images are explained")
    away = ExplainAway([], [], [], [], mapped, len(images), residual=bool(residual))
    usable = dict(zip(readers.names, readers.usable.tolist()))
    rankable = {mapped[name] for name in readers.names if usable[name]}
    for round_index in range(rounds):
        held = list(away.winners)
        if not rankable - set(held):
            away.stopped = f"round {round_index + 1} would hold every usable group: nothing left to rank"
            break
        names = [name for name in readers.names if mapped[name] in held and usable[name]]
        if round_index == 0 and first is not None:
            result = first
        elif round_index == 0:
            result = attack.holding(None).explain(images, target="flip")
        else:
            result = _later_round(later, readers, images, names, checkpoint)
        away.results.append(result)
        counted = result.select(result.success) if valid_only else result
        if len(counted) == 0:
            away.stopped = f"round {round_index + 1} had no valid counterfactuals"
            break
        explanation = global_scores(
            readers.local(counted), directions_from_result(counted), resamples=resamples, label=label
        )
        scores, mix = group_scores(explanation, mapped), []
        if residual:
            scores, mix = residual_scores(scores, [group_scores(done, mapped) for done in away.rounds], held)
        away.rounds.append(explanation)
        away.held.append(held)
        away.valid.append(int(result.success.sum()))
        away.scores.append(scores)
        away.mix.append(mix)
        # ranked() lists usable descriptors only, and a usable group not held is always among them
        away.winners.append(next(group for group in scores if group not in held))
    if not away.rounds:
        raise InputError(f"{away.stopped}, so there is nothing to rank; lower the threshold or raise max_steps")
    return away


def _later_round(
    attack: CounterfactualAttack,
    readers: ImageAttributes,
    images: torch.Tensor,
    names: list[str],
    checkpoint: str | Path | None,
) -> CounterfactualResult:
    """A round that holds ``names``: loaded from ``checkpoint`` when it was run before, else run (and saved)."""
    path = None if checkpoint is None else _round_path(Path(checkpoint), attack, readers, images, names)
    if path is not None and path.exists():
        return CounterfactualResult.load(path)
    result = attack.holding(readers.hold(names)).explain(images, target="flip")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        result.save(path)
    return result
