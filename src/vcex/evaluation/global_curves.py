"""Curves for global explanations: one latent direction (or a ranked set) applied to every image.

- :func:`flip_rate_curve`: share of images whose prediction flips after ``z + step * direction``, for
  each step size; the sweep GCD applies when it transfers a direction to new images (research note
  gcd-diffae-metrics.md, section A3; the paper's own globality protocol was not retrievable).
- :func:`sufficiency_curve`: share of images flipped when the top-k directions are applied together,
  for k = 1..M (sufficiency@k, research note disc-stylex-eigenfind.md, section B.3; the GCD note does
  not define sufficiency).

Both return plain tensors in a dict. Put the classifier and latent model in eval mode first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vcex.errors import InputError
from vcex.models.latent import LatentModel, as_latent_model
from vcex.models.state import evaluates

Scorer = Callable[[torch.Tensor], torch.Tensor]


def _start(
    classifier: Scorer,
    latent_model: LatentModel,
    images: torch.Tensor,
    target: int | torch.Tensor | None,
    threshold: float | None,
    batch_size: int,
    name: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Encode, predict the originals and resolve the target: (latents, original, target, kept)."""
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{name}: images must be a non-empty batch (N, C, H, W), got {shape}")
    if batch_size < 1:
        raise InputError(f"{name}: batch_size must be at least 1, got {batch_size}")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InputError(f"{name}: threshold must lie in (0, 1) or be None for argmax, got {threshold}")
    as_latent_model(latent_model)
    latents = torch.cat([latent_model.encode(chunk) for chunk in images.split(batch_size)])
    logits = torch.cat([classifier(chunk) for chunk in images.split(batch_size)])
    if logits.dim() != 2 or logits.shape[0] != len(images):
        raise InputError(f"{name}: the classifier must return logits (N, K), got {tuple(logits.shape)}")
    original = logits.argmax(1)
    if target is None:
        return latents, original, None, torch.ones_like(original, dtype=torch.bool)
    target = torch.as_tensor(target, device=original.device).long()
    if target.dim() == 0:
        target = target.expand(len(images))
    if target.shape != (len(images),):
        raise InputError(f"{name}: target must be an int or a ({len(images)},) tensor, got {tuple(target.shape)}")
    if bool(((target < 0) | (target >= logits.shape[1])).any()):
        raise InputError(f"{name}: targets must lie in [0, {logits.shape[1] - 1}]")
    # images the classifier already puts in the target class cannot flip toward it
    return latents, original, target, original != target


def _flipped(
    logits: torch.Tensor, original: torch.Tensor, target: torch.Tensor | None, threshold: float | None
) -> torch.Tensor:
    if threshold is None:
        predicted = logits.argmax(1)
        return predicted != original if target is None else predicted == target
    probs = logits.softmax(1)
    rows = torch.arange(len(logits), device=logits.device)
    score = 1 - probs[rows, original] if target is None else probs[rows, target]
    return score >= threshold


def _per_image(
    directions: torch.Tensor, latent_shape: torch.Size, target: torch.Tensor | None, rank: int, name: str
) -> torch.Tensor:
    """Directions of shape (*extra, *latent) shared, or (K, *extra, *latent) per class -> (N, *extra, *latent)."""
    shared = rank + len(latent_shape)
    if directions.dim() == shared and directions.shape[rank:] == latent_shape:
        return directions.unsqueeze(0)
    if directions.dim() == shared + 1 and directions.shape[1 + rank :] == latent_shape:
        if target is None:
            raise InputError(f"{name}: one direction per class needs a target to choose the row")
        if int(target.max()) >= directions.shape[0]:
            raise InputError(f"{name}: {directions.shape[0]} class directions but a target of {int(target.max())}")
        return directions[target]
    raise InputError(
        f"{name}: directions of shape {tuple(directions.shape)} do not match latents of shape "
        f"{tuple(latent_shape)} (expected the latent shape, optionally with a leading class dimension)"
    )


def _classify_latents(
    classifier: Scorer, latent_model: LatentModel, latents: torch.Tensor, batch_size: int
) -> torch.Tensor:
    return torch.cat([classifier(latent_model.decode(chunk)) for chunk in latents.split(batch_size)])


@torch.no_grad()
@evaluates("classifier", "latent_model")
def flip_rate_curve(
    classifier: Scorer,
    latent_model: LatentModel,
    images: torch.Tensor,
    direction: torch.Tensor,
    steps: Sequence[float] | torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    threshold: float | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Flip rate of a global latent direction against step size.

    Each image is encoded, moved to ``z + step * direction`` for every step and decoded; the step is a
    flip when the classifier then predicts ``target`` (or, with ``target=None``, any class but its
    original prediction). With ``threshold`` set, a flip instead needs the target's probability (or
    1 - the original class's probability) to reach it; 0.5 with two classes is GCD's rule. The original
    prediction is taken on the images themselves, so a step of 0 shows what reconstruction alone flips.
    Images already predicted as their target are left out of the rates. Costs N * S decodes and passes.

    Args:
        classifier: images -> logits (N, K); latent_model: ``encode``/``decode`` (see LatentModel).
        images: (N, C, H, W) in the classifier's range.
        direction: the latent shape (e.g. (D,)) shared by all images, or (K, *latent) one per target class.
            Used as given: normalise it first if steps should be in latent units.
        steps: (S,) step sizes, any sign.
        target: int or (N,) classes; None counts any change of prediction.

    Returns:
        ``steps`` (S,); ``flip_rate`` (S,) in [0, 1], the share of kept images flipped at each step;
        ``reached`` (S,) in [0, 1], the share flipped by at least one step no larger in magnitude (GCD's
        counterfactual is the smallest flipping step), non-decreasing in |step|; ``flipped`` (N, S) bool;
        ``smallest_step`` (N,), the flipping step of smallest magnitude per image (NaN if none or left out);
        ``kept`` (N,) bool. Higher rates at smaller steps are better: the direction explains the classifier
        globally and cheaply.
    """
    name = "flip_rate_curve"
    steps = torch.as_tensor(steps, dtype=torch.float32).flatten().cpu()
    if len(steps) == 0 or not bool(torch.isfinite(steps).all()):
        raise InputError(f"{name}: steps must be a non-empty list of finite numbers")
    latents, original, target, kept = _start(classifier, latent_model, images, target, threshold, batch_size, name)
    if not bool(kept.any()):
        raise InputError(f"{name}: every image is already predicted as its target; nothing can flip")
    direction = torch.as_tensor(direction).to(latents.device, latents.dtype)
    moves = _per_image(direction, latents.shape[1:], target, 0, name)
    flipped = torch.stack(
        [
            _flipped(
                _classify_latents(classifier, latent_model, latents + float(step) * moves, batch_size),
                original,
                target,
                threshold,
            )
            for step in steps
        ],
        dim=1,
    ).cpu()
    kept = kept.cpu()
    magnitude = steps.abs()
    within = magnitude[None, :] <= magnitude[:, None]  # within[j, i]: step i is no larger than step j
    reached_by = (flipped[:, None, :] & within[None]).any(2)  # (N, S)
    candidates = torch.where(flipped, magnitude[None, :], torch.full_like(flipped, float("inf"), dtype=torch.float32))
    best = candidates.argmin(1)
    smallest_step = torch.where(flipped.any(1) & kept, steps[best], torch.full((len(flipped),), float("nan")))
    return {
        "steps": steps,
        "flip_rate": flipped[kept].float().mean(0),
        "reached": reached_by[kept].float().mean(0),
        "flipped": flipped,
        "smallest_step": smallest_step,
        "kept": kept,
    }


@torch.no_grad()
@evaluates("classifier", "latent_model")
def sufficiency_curve(
    classifier: Scorer,
    latent_model: LatentModel,
    images: torch.Tensor,
    directions: torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    step: float | Sequence[float] | torch.Tensor = 1.0,
    threshold: float | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Sufficiency@k: share of images flipped when the top-k ranked directions are applied together.

    For k = 1..M the latent moves to ``z + sum_{j<k} step_j * directions[j]`` and the flip rule of
    :func:`flip_rate_curve` applies (argmax reaches ``target``, or leaves the original class when
    ``target=None``; ``threshold`` as there). This follows the StylEx re-implementation's sufficiency
    (research note disc-stylex-eigenfind.md, section B.3: top-10 attributes applied together), with
    any latent model standing in for StyleSpace. Costs N * M decodes and passes.

    Args:
        directions: (M, *latent) ranked directions shared by all images, or (K, M, *latent) one ranked
            list per target class.
        step: one step size for all directions, or (M,) per direction (e.g. signed shifts).

    Returns:
        ``k`` (M,) = 1..M; ``sufficiency`` (M,) in [0, 1] over kept images, higher is better (fewer
        attributes suffice to change the decision); ``flipped`` (N, M) bool; ``kept`` (N,) bool.
    """
    name = "sufficiency_curve"
    latents, original, target, kept = _start(classifier, latent_model, images, target, threshold, batch_size, name)
    if not bool(kept.any()):
        raise InputError(f"{name}: every image is already predicted as its target; nothing can flip")
    directions = torch.as_tensor(directions).to(latents.device, latents.dtype)
    ranked = _per_image(directions, latents.shape[1:], target, 1, name)
    count = ranked.shape[1]
    if count == 0:
        raise InputError(f"{name}: directions hold no direction (M = 0)")
    steps = torch.as_tensor(step, dtype=latents.dtype, device=latents.device).flatten()
    if len(steps) == 1:
        steps = steps.expand(count)
    if len(steps) != count or not bool(torch.isfinite(steps).all()):
        raise InputError(f"{name}: step must be one finite number or {count} of them, got {len(steps)}")
    scaled = ranked * steps.view(1, count, *([1] * (ranked.dim() - 2)))
    cumulative = scaled.cumsum(1)  # (N or 1, M, *latent): the first k directions together
    flipped = torch.stack(
        [
            _flipped(
                _classify_latents(classifier, latent_model, latents + cumulative[:, k], batch_size),
                original,
                target,
                threshold,
            )
            for k in range(count)
        ],
        dim=1,
    ).cpu()
    kept = kept.cpu()
    return {
        "k": torch.arange(1, count + 1),
        "sufficiency": flipped[kept].float().mean(0),
        "flipped": flipped,
        "kept": kept,
    }
