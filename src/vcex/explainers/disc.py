"""DISC: counterfactuals from the classifier alone, by deep model inversion."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from vcex.checks import check_count, check_positive_finite
from vcex.errors import InputError, ModelError
from vcex.explainers.base import Explainer, ThresholdSpec
from vcex.explainers.inversion import (
    PARAMETERISATIONS,
    ActivationRecorder,
    Parameterisation,
    batch_norm_layers,
    batch_norm_prior,
    check_hookable,
    feature_distance,
    find_modules,
    make_parameterisation,
    script_batch_norm_count,
    torchscript_kind,
    total_variation,
    warn_no_batch_norm,
    warn_script_batch_norm,
)
from vcex.explainers.loop import optimise_until_confident
from vcex.explainers.thresholds import AUTO
from vcex.models.classifiers import Classifier, as_classifier
from vcex.models.duq import duq_network

CONSISTENCY = ("none", "duq", "energy")
DEFAULT_STAGES = (0.6, 0.9)
# Adam learning rates and fit lengths measured on MNIST (docs/benchmarks/disc.md): a DIP needs ~150 steps to
# reproduce a digit to a mean error of 0.02, an INR ~60 to reach 0.004
_DEFAULT_LR = {"pixels": 0.01, "dip": 0.01, "inr": 0.02}
_DEFAULT_FIT_STEPS = {"pixels": 0, "dip": 150, "inr": 80}
_DEFAULT_CONSISTENCY_WEIGHT = {"duq": 0.1, "energy": 1.0}


class DISC(Explainer):
    """DISC, Deep Inversion for Synthesizing Counterfactuals (Thiagarajan et al., 2021, arXiv:2109.14274).

    Uses only the classifier: no generator, no training data. Each image is re-expressed in a
    parameterisation (its pixels, a deep image prior or an implicit neural representation, the
    networks first fitted to reproduce the image), then Adam on those variables minimises

        -log p_target(x') + feature_weight * sum_l |F_l(x') - F_l(x)|_1 + bn_weight * R_BN(x')
        + tv_weight * TV(x') + l2_weight * mean (x' - x)^2 + consistency_weight * L_mc(x')

    where F_l are the classifier's activations at ``feature_layers``, R_BN is DeepInversion's
    batch-norm statistics prior and L_mc the manifold-consistency loss: ``-log K_target(x')`` of a DUQ
    model (``"duq"``) or the rise of the JEM energy ``-logsumexp(logits)`` over the original's
    (``"energy"``). Optimisation is progressive: stage k stops an image once its target probability
    passes ``stages[k]``, the next stage continues from there with a higher bar, and an image leaves
    at the first stage after which it passes ``threshold``. The image after every stage is kept in
    ``result.sequence`` (N, S, C, H, W), a progressive counterfactual sequence.

    Args:
        classifier: differentiable (N, C, H, W) -> (N, K); run in eval mode while it is explained, every
            submodule's mode restored afterwards.
        parameterisation: ``"dip"`` (default: the best on MNIST), ``"inr"`` or ``"pixels"``.
        feature_layers: names of classifier layers whose activations are preserved (as in
            ``classifier.named_modules()``; a :class:`Classifier`'s ``network.`` prefix is optional). Not
            inside a TorchScript module (refused: its activations cannot be read).
        feature_weight: weight of the feature-preservation term.
        bn_weight: weight of the batch-norm prior; None uses 0.01 when the classifier has BatchNorm
            layers (not tuned: the MNIST benchmark's classifier has none) and 0 otherwise; a positive
            value without BatchNorm layers warns and turns it off. The inputs of BatchNorm layers inside a
            TorchScript (scripted or traced) classifier cannot be read, so there the prior is left out with
            a warning (``settings["bn_weight"]`` records 0.0 when no other BatchNorm layer is left).
        tv_weight: weight of the total variation of x' (0.3; measured on MNIST, docs/benchmarks/disc.md).
        l2_weight: weight of the mean squared change (x' - x)^2 (0).
        consistency: ``"none"``, ``"duq"`` (needs ``consistency_model``, a DUQ classifier, e.g. from
            :func:`vcex.models.duq.build_duq`) or ``"energy"`` (``consistency_model`` or, if None, the
            explained classifier itself).
        consistency_weight: weight of the manifold-consistency term (default 0.1 for ``"duq"``, 1.0 for
            ``"energy"``: the best of those measured on MNIST).
        stages: target confidences of the progressive stages before the final one at ``threshold``;
            ``()`` optimises in one stage. Must rise and lie below ``threshold`` (the lowest one, with
            per-class thresholds). Default: those of (0.6, 0.9) below ``threshold``.
        threshold: target probability a counterfactual must pass (default 0.998), or one per class.
        lr: Adam learning rate (default 0.01 for pixels and DIP, 0.02 for the INR).
        max_steps: step budget of each stage, per image (300).
        fit_steps: Adam steps fitting a DIP/INR to each image before explaining it (150 DIP, 80 INR).
        parameterisation_options: extra options of the parameterisation (e.g. ``{"sigma": 3.0}`` for
            the INR, ``{"width": 16}`` for the DIP); see :mod:`vcex.explainers.inversion`.
        batch_size, device, progress, check_every: see :class:`Explainer` and :class:`PixelAttack`.

    Shape: images (N, C, H, W) -> result with counterfactuals (N, C, H, W), sequence (N, S, C, H, W),
    sequence_prob (N, S), S = len(stages) + 1.

    Example:
        >>> from vcex import DISC, load_classifier
        >>> disc = DISC(load_classifier("mnist-cnn"), consistency="energy")
        >>> result = disc.explain(images, target="second")
        >>> result.counterfactuals, result.sequence, result.success
    """

    name = "disc"

    def __init__(
        self,
        classifier: nn.Module | Classifier,
        *,
        parameterisation: str = "dip",
        feature_layers: Sequence[str] = (),
        feature_weight: float = 0.0,
        bn_weight: float | None = None,
        tv_weight: float = 0.3,
        l2_weight: float = 0.0,
        consistency: str = "none",
        consistency_model: nn.Module | None = None,
        consistency_weight: float | None = None,
        stages: Sequence[float] | None = None,
        threshold: ThresholdSpec = AUTO,
        lr: float | None = None,
        max_steps: int = 300,
        fit_steps: int | None = None,
        parameterisation_options: dict | None = None,
        check_every: int | None = None,
        batch_size: int = 64,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(classifier, threshold=threshold, batch_size=batch_size, device=device, progress=progress)
        if parameterisation not in PARAMETERISATIONS:
            raise InputError(
                f"unknown parameterisation {parameterisation!r}; use one of {', '.join(PARAMETERISATIONS)}"
            )
        if consistency not in CONSISTENCY:
            raise InputError(f"unknown consistency {consistency!r}; use one of {', '.join(CONSISTENCY)}")
        self._stages_asked = None if stages is None else tuple(float(s) for s in stages)
        # with threshold="auto" the stages are checked (or chosen) once the explain call knows its threshold
        self.stages = None if self.threshold == AUTO else self._stages_for(self.lowest_threshold)
        if self.stages is None:
            self._stages_for(1.0)  # rising and in (0, 1) already; the call checks them against its threshold
        if consistency_weight is None:
            consistency_weight = _DEFAULT_CONSISTENCY_WEIGHT.get(consistency, 0.0)
        for label, value in (
            ("feature_weight", feature_weight),
            ("tv_weight", tv_weight),
            ("l2_weight", l2_weight),
            ("consistency_weight", consistency_weight),
        ):
            if value < 0:
                raise InputError(f"{label} must be >= 0, got {value}")
        max_steps = check_count("max_steps", max_steps, 1)
        self.parameterisation = parameterisation
        self.feature_layers = tuple(feature_layers)
        self.feature_modules = find_modules(self.classifier, self.feature_layers)
        check_hookable(self.feature_layers, self.feature_modules)
        self.feature_weight = float(feature_weight) if self.feature_layers else 0.0
        self.norms = batch_norm_layers(self.classifier)
        if bn_weight is not None and bn_weight < 0:
            raise InputError(f"bn_weight must be >= 0, got {bn_weight}")
        compiled_norms = script_batch_norm_count(self.classifier)
        if compiled_norms and bn_weight != 0:  # asked for, or the default, which would use them
            warn_script_batch_norm(torchscript_kind(self.classifier), compiled_norms, len(self.norms))
        elif bn_weight is not None and bn_weight > 0 and not self.norms:
            network = getattr(self.classifier, "network", self.classifier)
            warn_no_batch_norm(getattr(network, "original_name", type(network).__name__))
        if bn_weight is None:
            bn_weight = 0.01 if self.norms else 0.0
        elif not self.norms:
            bn_weight = 0.0
        self.bn_weight = float(bn_weight)
        self.tv_weight = float(tv_weight)
        self.l2_weight = float(l2_weight)
        self.consistency = consistency
        self.consistency_weight = float(consistency_weight) if consistency != "none" else 0.0
        self.consistency_model = self._consistency_model(consistency, consistency_model)
        self.lr = check_positive_finite("lr", lr) if lr is not None else _DEFAULT_LR[parameterisation]
        self.max_steps = max_steps
        self.fit_steps = int(fit_steps) if fit_steps is not None else _DEFAULT_FIT_STEPS[parameterisation]
        if self.fit_steps < 0:
            raise InputError(f"fit_steps must be >= 0, got {fit_steps}")
        self.parameterisation_options = dict(parameterisation_options or {})
        self.check_every = check_every or (1 if self.device.type == "cpu" else 8)

    def _consistency_model(self, consistency: str, model: nn.Module | None) -> Classifier | None:
        if consistency == "duq":
            if model is None or duq_network(model) is None:
                got = "none" if model is None else type(model).__name__
                raise ModelError(
                    f"consistency='duq' needs consistency_model=<a DUQ classifier> (got {got}); build one with "
                    "vcex.models.duq.build_duq and train_duq, or use consistency='energy'"
                )
            return as_classifier(model).to(self.device)
        if consistency == "energy" and model is not None:
            return as_classifier(model).to(self.device)
        return None

    def _stages_for(self, lowest: float) -> tuple[float, ...]:
        """The stages asked for (default: those of ``DEFAULT_STAGES`` below ``lowest``), checked against ``lowest``,
        the lowest threshold in force."""
        stages = self._stages_asked
        if stages is None:
            return tuple(s for s in DEFAULT_STAGES if s < lowest)
        if any(not 0.0 < s < lowest for s in stages) or any(a >= b for a, b in zip(stages, stages[1:])):
            raise InputError(
                f"stages must rise strictly and lie in (0, threshold={lowest}) (the lowest per-class threshold "
                f"where there are several), got {stages}; "
                "e.g. stages=(0.6, 0.9), or () for a single stage"
            )
        return stages

    def _stages_known(self) -> bool:
        return self.stages is not None or self._call_threshold is not None

    def _stages_now(self) -> tuple[float, ...]:
        """The stages of this call: fixed at construction, or chosen below the call's resolved threshold."""
        return self.stages if self.stages is not None else self._stages_for(self.lowest_threshold)

    def settings(self) -> dict:
        return {
            **super().settings(),
            "parameterisation": self.parameterisation,
            "feature_layers": list(self.feature_layers),
            "feature_weight": self.feature_weight,
            "bn_weight": self.bn_weight,
            "tv_weight": self.tv_weight,
            "l2_weight": self.l2_weight,
            "consistency": self.consistency,
            "consistency_weight": self.consistency_weight,
            "stages": list(self._stages_now()) if self._stages_known() else AUTO,
            "lr": self.lr,
            "max_steps": self.max_steps,
            "fit_steps": self.fit_steps,
            "parameterisation_options": self.parameterisation_options,
        }

    def _models(self) -> tuple[object, ...]:
        """The base's models and the consistency model, all frozen while DISC explains."""
        return (*super()._models(), self.consistency_model)

    def make_parameterisation(self, shape: tuple[int, int, int]) -> Parameterisation:
        """The parameterisation for images of ``shape`` (C, H, W)."""
        options = dict(self.parameterisation_options)
        if self.parameterisation != "pixels":
            options.setdefault("fit_steps", self.fit_steps)
        return make_parameterisation(self.parameterisation, shape, self.classifier.value_range, **options)

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        parameterisation = self.make_parameterisation(tuple(images.shape[1:]))
        variables = parameterisation.initial(images)
        # the classifier's own energy is read from its logits in the loop's pass (a hook), not a second pass
        own_energy = self.consistency == "energy" and self.consistency_model is None
        layers = [*self.feature_modules, self.classifier] if own_energy else self.feature_modules
        recorder = ActivationRecorder(layers, self.norms if self.bn_weight > 0 else [])
        with recorder.attached(), torch.no_grad():
            logits = self.classifier(images)
            references = [output.detach() for output in recorder.outputs[: len(self.feature_modules)]]
            reference_energy = None
            if self.consistency == "energy":
                energy_logits = logits if own_energy else self.consistency_model(images)
                reference_energy = -torch.logsumexp(energy_logits, 1)

        batch = len(images)
        counterfactuals = images.clone()
        target_prob = torch.zeros(batch, device=images.device)
        steps = torch.zeros(batch, dtype=torch.long, device=images.device)
        forward = torch.zeros_like(steps)
        backward = torch.zeros_like(steps)
        sequence, sequence_prob = [], []
        active = torch.arange(batch, device=images.device)
        final = self.stop_threshold(target, lower)
        per_image = isinstance(final, torch.Tensor)

        for stage in (*self._stages_now(), None):  # None: the final stage, at each image's own threshold
            if len(active):
                if stage is None:
                    threshold = final[active] if per_image else final
                else:
                    threshold = 1.0 - stage if lower else stage
                penalty = self._penalty(recorder, images, target, active, references, reference_energy, lower)
                with recorder.attached():
                    loop = optimise_until_confident(
                        variables[active],
                        parameterisation.render,
                        self.classifier,
                        target[active],
                        threshold=threshold,
                        lr=self.lr,
                        max_steps=self.max_steps,
                        lower=lower,
                        objective="log_prob",
                        penalty=penalty,
                        project=parameterisation.project,
                        check_every=self.check_every,
                        progress=self.progress,
                    )
                variables[active] = loop.variables
                counterfactuals[active] = loop.images
                target_prob[active] = loop.target_prob
                steps[active] += loop.steps
                forward[active] += loop.forward_passes
                backward[active] += loop.backward_passes
                done = self.reached(loop.target_prob, target[active], lower)
                active = active[~done]
            sequence.append(counterfactuals.clone())
            sequence_prob.append(target_prob.clone())

        return {
            "counterfactuals": counterfactuals,
            "target_prob": target_prob,
            "success": self.reached(target_prob, target, lower),
            "steps": steps,
            "forward_passes": forward,
            "backward_passes": backward,
            "sequence": torch.stack(sequence, 1),
            "sequence_prob": torch.stack(sequence_prob, 1),
        }

    def _penalty(
        self,
        recorder: ActivationRecorder,
        originals: torch.Tensor,
        target: torch.Tensor,
        stage_rows: torch.Tensor,
        references: list[torch.Tensor],
        reference_energy: torch.Tensor | None,
        lower: bool,
    ):  # noqa: ANN202 - a loop Penalty
        """The loop's per-image penalty for one stage; ``index`` maps the loop's rows to ``stage_rows``."""

        def penalty(_variables: torch.Tensor, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            rows = stage_rows[index]
            total = images.new_zeros(len(images))
            if self.feature_weight > 0:
                features = recorder.outputs[: len(references)]
                total = total + self.feature_weight * feature_distance(
                    features, [reference[rows] for reference in references]
                )
            if self.bn_weight > 0:
                # one scalar for the batch, shared equally so the loop's sum over images counts it once
                total = total + self.bn_weight * batch_norm_prior(recorder.norm_inputs, recorder.norms) / len(images)
            if self.tv_weight > 0:
                total = total + self.tv_weight * total_variation(images)
            if self.l2_weight > 0:
                total = total + self.l2_weight * (images - originals[rows]).pow(2).flatten(1).mean(1)
            if self.consistency == "duq":
                log_certainties = self.consistency_model(images)
                if lower:
                    # lowering: be certain of some other class instead
                    masked = log_certainties.scatter(1, target[rows, None], float("-inf"))
                    log_certainty = masked.max(1).values
                else:
                    log_certainty = log_certainties.gather(1, target[rows, None])[:, 0]
                total = total - self.consistency_weight * log_certainty
            elif self.consistency == "energy":
                if self.consistency_model is None:
                    energy_logits = recorder.outputs[-1]  # the loop's own classifier pass
                else:
                    energy_logits = self.consistency_model(images)
                energy = -torch.logsumexp(energy_logits, 1)
                total = total + self.consistency_weight * torch.relu(energy - reference_energy[rows])
            return total

        return penalty
