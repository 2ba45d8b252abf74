"""Linear latent edit (InterFaceGAN-style): one step along a probe's direction in latent space."""

from __future__ import annotations

import torch
from torch import nn

from vcex.checks import check_images
from vcex.errors import InputError
from vcex.explainers.base import Explainer, ThresholdSpec
from vcex.explainers.thresholds import AUTO
from vcex.models.latent import LatentModel
from vcex.models.state import evaluating
from vcex.standardize import raw_linear, standardization


class LinearLatentEdit(Explainer):
    """Move each latent along the classifier's own latent direction (Shen et al., InterFaceGAN, 2020).

    ``fit(images)`` encodes training images and fits a multinomial logistic probe on their latents
    to the classifier's predictions. To move an image from class o to target t the edit is
    ``z' = z + eta * beta`` with ``beta = w_t - w_o`` and ``eta = (logit(threshold) - l(z)) / |beta|^2``,
    where ``l(z) = beta . z + b_t - b_o`` is the probe's t-vs-o logit: exactly enough, by the probe, to
    reach the threshold (the Counterfactual Attacks reference code's baseline). One decode and one
    classifier pass per image; validity depends on how well the linear probe matches the classifier.

    Args:
        classifier, latent_model: as for :class:`CounterfactualAttack`.
        threshold: the probe probability the edit aims for (one, or one per class).
        probe_c: inverse L2 strength of the logistic probe (scikit-learn's C).

    Example:
        >>> edit = LinearLatentEdit(classifier, vae).fit(train_images)
        >>> result = edit.explain(images, target="second")
    """

    name = "linear"
    needs_gradients = False
    needs_latent_model = True

    def __init__(
        self,
        classifier: nn.Module,
        latent_model: LatentModel,
        *,
        threshold: ThresholdSpec = AUTO,
        probe_c: float = 1.0,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(
            classifier, latent_model, threshold=threshold, batch_size=batch_size, device=device, progress=progress
        )
        self.probe_c = probe_c
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.probe_accuracy: float | None = None

    def settings(self) -> dict:
        return {**super().settings(), "probe_c": self.probe_c, "probe_accuracy": self.probe_accuracy}

    def fit(self, images: torch.Tensor) -> LinearLatentEdit:
        """Fit the latent probe to the classifier's predictions on ``images`` (N, C, H, W)."""
        from sklearn.linear_model import LogisticRegression

        images = check_images(images, value_range=self.classifier.value_range)
        with evaluating(*self._models()), torch.no_grad():
            images = images.to(self.device)
            latents = torch.cat([self.latent_model.encode(c) for c in images.split(self.batch_size)])
            probs = self.predict_proba(images)
        labels, num_classes = probs.argmax(1), probs.shape[1]
        classes = labels.unique()
        if len(classes) < 2:
            raise InputError("the classifier predicts a single class on these images; the probe needs at least two")
        probe = LogisticRegression(C=self.probe_c, max_iter=2000)
        flat = latents.flatten(1).double().cpu().numpy()
        # fitted on standardised latents (C and lbfgs's convergence would depend on the latent's units),
        # its weights mapped back to raw latents below
        center, spread = standardization(flat)
        standardised = (flat - center) / spread
        probe.fit(standardised, labels.cpu().numpy())
        weight = torch.zeros(num_classes, flat.shape[1], dtype=torch.float64)
        bias = torch.full((num_classes,), -1e4, dtype=torch.float64)  # classes never predicted stay unreachable
        fitted_classes = torch.as_tensor(probe.classes_)
        raw_coefficients, raw_intercepts = raw_linear(probe.coef_, probe.intercept_, center, spread)
        coefficients, intercepts = torch.as_tensor(raw_coefficients), torch.as_tensor(raw_intercepts)
        if len(fitted_classes) == 2:  # scikit-learn keeps one row for two classes: class 1 vs class 0
            coefficients = torch.cat([-coefficients / 2, coefficients / 2])
            intercepts = torch.cat([-intercepts / 2, intercepts / 2])
        weight[fitted_classes] = coefficients
        bias[fitted_classes] = intercepts
        self.weight, self.bias = weight.float().to(self.device), bias.float().to(self.device)
        self.probe_accuracy = float(probe.score(standardised, labels.cpu().numpy()))
        return self

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        if self.weight is None:
            raise InputError("LinearLatentEdit has no probe yet: call .fit(train_images) before .explain")
        if lower:
            raise InputError("LinearLatentEdit raises a target class; to lower class k, raise another class")
        with torch.no_grad():
            latents = self.latent_model.encode(images)
            reconstructions = self._decode_checked(latents, images)
            flat = latents.flatten(1)
            origin = self.predict_proba(reconstructions).argmax(1)
            # a reconstruction that already reads as the target: move away from the original's class
            origin = torch.where(origin == target, self.predict_proba(images).argmax(1), origin)
            direction = self.weight[target] - self.weight[origin]
            logit = (direction * flat).sum(1) + self.bias[target] - self.bias[origin]
            goal = self.threshold_logit(target)
            step = ((goal - logit) / direction.pow(2).sum(1).clamp_min(1e-12)).clamp_min(0)
            edited = (flat + step[:, None] * direction).view_as(latents)
            low, high = self.classifier.value_range
            counterfactuals = self.latent_model.decode(edited).clamp(low, high)
            target_prob = self.predict_proba(counterfactuals).gather(1, target[:, None])[:, 0]
        ones = torch.ones_like(target)
        return {
            "counterfactuals": counterfactuals,
            "target_prob": target_prob,
            "success": self.reached(target_prob, target),
            "steps": torch.zeros_like(target),
            "forward_passes": ones,
            "backward_passes": torch.zeros_like(target),
            "original_latents": latents,
            "counterfactual_latents": edited,
            "reconstructions": reconstructions.clamp(low, high),
        }
