"""Counterfactual Attacks: an adversarial attack in a generative model's latent space."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from vcex.checks import check_count, check_positive_finite
from vcex.errors import InputError, ModelError
from vcex.explainers.base import PAPER_THRESHOLD, Explainer, ThresholdSpec
from vcex.explainers.loop import LoopOutput, Penalty, optimise_until_confident
from vcex.explainers.thresholds import AUTO
from vcex.models.classifiers import Classifier
from vcex.models.latent import LatentModel

# precision name -> the autocast dtype of the decoder and classifier (None: plain float32)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
# weight of the squared change of held quantities (probabilities in [0, 1]) against the loss -p in [-1, 0]:
# at 10, moving one held probability by 0.1 costs as much as 0.1 of target probability. Set on two
# shortcut classifiers of the faces ground-truth run (docs/benchmarks/faces-global.md), not tuned further
DEFAULT_HOLD_WEIGHT = 10.0
# the latent bound is this many times the radius of the data that the latent model declares: loose for an edit
# (no MNIST counterfactual of the zoo's VAE reaches it), tight
# enough to stop the drift of an image that never reaches its target (to norms of 18-57 against 3 for encoded
# Fashion-MNIST images, which decode to flat white silhouettes: docs/benchmarks/user-classifier.md)
BOUND_FACTOR = 1.5
LATENT_BOUNDS = ("auto",)

Hold = Callable[[torch.Tensor], torch.Tensor]


def hold_penalty(hold: Hold, start_images: torch.Tensor, weight: float) -> Penalty:
    """The loop's penalty that keeps ``hold(image)`` at its value on the start image:
    ``weight * sum_m (hold(x)_m - hold(x_start)_m)^2`` per image.

    ``hold``: images (b, C, H, W) -> (b, M) differentiable values (e.g. descriptor probabilities,
    :meth:`vcex.attribution.ImageAttributes.hold`); ``start_images`` (N, C, H, W), the images the loop's
    rows start from."""
    with torch.no_grad():
        start = hold(start_images)
    if not isinstance(start, torch.Tensor) or start.dim() != 2 or start.shape[0] != start_images.shape[0]:
        got = tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__
        raise ModelError(
            f"hold must map images (N, C, H, W) to values (N, M), one row per image; got {got} for "
            f"{start_images.shape[0]} images"
        )
    start = start.detach()

    def penalty(variables: torch.Tensor, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        change = hold(images) - start[index]
        return weight * change.pow(2).sum(1)

    return penalty


def latent_attack(
    latents: torch.Tensor,
    latent_model: LatentModel,
    classifier: Classifier,
    target: torch.Tensor,
    *,
    threshold: float | torch.Tensor,
    lr: float,
    max_steps: int,
    lower: bool = False,
    objective: str = "prob",
    check_every: int = 1,
    progress: bool = False,
    residual: torch.Tensor | None = None,
    autocast: torch.dtype | None = None,
    penalty: Penalty | None = None,
    radius: float | None = None,
) -> LoopOutput:
    """The attack's loop from given start latents (N, ...): Adam on z through ``decode`` and the
    classifier, per-image early stop. Shared by :class:`CounterfactualAttack` and warm-started methods.
    With ``residual`` (N, C, H, W) the image is ``decode(z) + residual`` (clamped to the classifier's range);
    ``penalty`` is added to each image's loss (:func:`hold_penalty`); with ``radius`` every latent is kept in
    the ball ``|z| <= radius`` (projected after each step)."""
    low, high = classifier.value_range
    if residual is None:
        render, rows = (lambda z: latent_model.decode(z).clamp(low, high)), False
    else:
        render, rows = (lambda z, index: (latent_model.decode(z) + residual[index]).clamp(low, high)), True
    return optimise_until_confident(
        latents,
        render,
        classifier,
        target,
        threshold=threshold,
        lr=lr,
        max_steps=max_steps,
        lower=lower,
        objective=objective,
        check_every=check_every,
        progress=progress,
        render_rows=rows,
        autocast=autocast,
        penalty=penalty,
        project=None if radius is None else (lambda z: project_to_ball(z, radius)),
    )


def project_to_ball(latents: torch.Tensor, radius: float) -> torch.Tensor:
    """Latents (N, ...) scaled back onto the ball of ``radius`` where their norm (over all but dim 0) exceeds it."""
    norms = latents.flatten(1).norm(dim=1).clamp_min(1e-12)
    scale = (radius / norms).clamp(max=1.0)
    return latents * scale.view(-1, *([1] * (latents.dim() - 1)))


def declared_radius(latent_model: object) -> float | None:
    """The radius of the region a latent model was trained on, where it declares one (``latent_radius``)."""
    radius = getattr(latent_model, "latent_radius", None)
    return float(radius) if radius is not None else None


class CounterfactualAttack(Explainer):
    """Counterfactual Attacks (Goldwasser & Hooker, 2025, arXiv:2504.15479).

    Encode each image to a latent z, then run Adam on z to raise the target-class probability of
    ``classifier(decode(z))``, stopping each image at the first step where that probability passes
    ``threshold``. Distance: none explicit; the generative model keeps the path on the data
    manifold and early stopping keeps the change small.

    Args:
        classifier: (N, C, H, W) images in [0, 1] -> logits (N, K); must be differentiable.
        latent_model: ``encode(images) -> z``, ``decode(z) -> images`` in [0, 1].
        threshold: target probability to pass (default 0.998, chosen by measurement; the paper used 0.75), or
            one per class (e.g. :func:`vcex.class_thresholds`).
        lr: Adam learning rate on the latents (0.1, the paper's MNIST value).
        max_steps: step budget per image (1000).
        objective: ``"prob"`` (default, the paper's -p: with Adam it needs the fewest steps to a high
            threshold) or ``"log_prob"`` (cross-entropy: better when the target starts near 0).
        check_every: steps between drops of finished images (1 on CPU; more on GPU saves host syncs).
        residual: keep what the generator cannot reconstruct: the counterfactual is
            ``x + decode(z') - decode(z)`` (clamped), the decoded change added to the original, and the
            classifier is attacked on exactly that image. Unchanged latents give back x itself, so the
            generator's reconstruction error (blur, lost details) no longer counts as part of the change.
            The result's ``reconstructions`` are then the originals. Off by default (the paper's method).
        latent_bound: keep every latent where the generator was trained, so an image that does not reach its
            target fails as a plausible image rather than drifting off the manifold: ``"auto"`` (default) uses
            1.5 times the radius of the data that the latent model declares as ``latent_radius`` (the zoo's
            VAEs: the radius holding 99.9% of their N(0, I) prior; a model that declares none is not bounded,
            as the settings record); a float is the bound itself; None turns it off (the paper's method).
        precision: ``"fp32"`` (default) or ``"bf16"``: decoder and classifier run under bfloat16 autocast
            (for GPUs with bf16 units; the latents, Adam's state and the outputs stay float32). Mixed
            precision changes the numbers slightly, so a row of a benchmark records it.
        batch_size, device, progress: see :class:`Explainer`.

    Shape: images (N, C, H, W) -> result with counterfactuals (N, C, H, W), latents (N, d).

    Example:
        >>> from vcex import CounterfactualAttack, load_classifier, load_latent_model
        >>> attack = CounterfactualAttack(load_classifier("mnist-cnn"), load_latent_model("mnist-vae"))
        >>> result = attack.explain(images, target="second")
        >>> result.counterfactuals, result.success, result.steps
    """

    name = "attack"
    needs_latent_model = True

    def __init__(
        self,
        classifier: nn.Module,
        latent_model: LatentModel,
        *,
        threshold: ThresholdSpec = AUTO,
        lr: float = 0.1,
        max_steps: int = 1000,
        objective: str = "prob",
        check_every: int | None = None,
        residual: bool = False,
        precision: str = "fp32",
        latent_bound: float | str | None = "auto",
        hold: Hold | None = None,
        hold_weight: float = DEFAULT_HOLD_WEIGHT,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(
            classifier, latent_model, threshold=threshold, batch_size=batch_size, device=device, progress=progress
        )
        self._set_hold(hold, hold_weight)
        self.lr = check_positive_finite("lr", lr)
        self.max_steps = check_count("max_steps", max_steps)
        self.objective = objective
        self.residual = bool(residual)
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        self.precision = precision
        if latent_bound is not None and latent_bound not in LATENT_BOUNDS:
            if isinstance(latent_bound, str) or isinstance(latent_bound, bool) or not float(latent_bound) > 0:
                raise InputError(f"latent_bound must be 'auto', a radius > 0 or None (no bound), got {latent_bound!r}")
            latent_bound = float(latent_bound)
        self.latent_bound = latent_bound
        self._radius: float | None = None  # the bound of the explain call under way
        self._radius_source = ""
        self.check_every = check_every or (1 if self.device.type == "cpu" else 8)

    @classmethod
    def paper(cls, classifier: nn.Module, latent_model: LatentModel, **overrides) -> CounterfactualAttack:
        """The reference code's MNIST settings: threshold 0.75, lr 0.1, 1000 steps, loss -p."""
        settings = {"threshold": PAPER_THRESHOLD, "lr": 0.1, "max_steps": 1000, "objective": "prob", **overrides}
        return cls(classifier, latent_model, **settings)

    def holding(self, hold: Hold | None, weight: float | None = None) -> CounterfactualAttack:
        """A copy of this attack that keeps ``hold(image)`` unchanged (see ``hold``); None holds nothing."""
        other = copy.copy(self)
        other._set_hold(hold, self.hold_weight if weight is None else weight)
        return other

    def _set_hold(self, hold: Hold | None, weight: float) -> None:
        if hold is not None and not callable(hold):
            raise InputError(f"hold must be a function images -> (N, M) values, got {type(hold).__name__}")
        if not weight > 0:
            raise InputError(f"hold_weight must be > 0, got {weight}")
        self.hold, self.hold_weight = hold, float(weight)

    def settings(self) -> dict:
        settings = {**super().settings(), "lr": self.lr, "max_steps": self.max_steps, "objective": self.objective}
        if self.residual:
            settings["residual"] = True
        if self.precision != "fp32":
            settings["precision"] = self.precision
        settings["latent_bound"] = self.latent_bound
        if self._radius is not None:  # inside an explain call: what the bound resolved to, and from what
            settings["latent_bound_radius"] = round(self._radius, 6)
        if self._radius_source:
            settings["latent_bound_source"] = self._radius_source
        if self.hold is not None:
            settings["hold"] = str(self.hold)
            settings["hold_weight"] = self.hold_weight
        return settings

    def _prepare(self, images: torch.Tensor) -> None:
        """The latent bound of this call: given, or 1.5x the radius the latent model declares (else none)."""
        self._radius, self._radius_source = None, ""
        if self.latent_bound is None:
            return
        if isinstance(self.latent_bound, float):
            self._radius, self._radius_source = self.latent_bound, "given"
            return
        radius = declared_radius(self.latent_model)
        if radius is None:
            # a radius guessed from a few dozen explained images would be guesswork: a tiny test generator's
            # faces needed far more than 3x their largest encoded norm to flip at all
            self._radius_source = (
                "none: the latent model declares no latent_radius (the radius its training data lie in); "
                "give it one, or pass latent_bound=R"
            )
            return
        self._radius = BOUND_FACTOR * radius
        self._radius_source = f"{BOUND_FACTOR} x the radius the latent model declares (latent_radius {radius:.4g})"

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            latents = self.latent_model.encode(images)
            reconstructions = self._decode_checked(latents, images)
        low, high = self.classifier.value_range
        # the generator's reconstruction error, added back to every decoded image (residual mode)
        residual = images - reconstructions.clamp(low, high) if self.residual else None
        start = images if self.residual else reconstructions.clamp(low, high)
        penalty = None if self.hold is None else hold_penalty(self.hold, start, self.hold_weight)
        loop = latent_attack(
            latents,
            self.latent_model,
            self.classifier,
            target,
            threshold=self.stop_threshold(target, lower),
            lr=self.lr,
            max_steps=self.max_steps,
            lower=lower,
            objective=self.objective,
            check_every=self.check_every,
            progress=self.progress,
            residual=residual,
            autocast=PRECISIONS[self.precision],
            penalty=penalty,
            radius=self._radius,
        )
        return {
            **loop.result_fields(),
            "original_latents": latents,
            "counterfactual_latents": loop.variables,
            "reconstructions": start,
        }
