"""Pixel-space counterfactuals: the baseline that shows why a generative prior matters."""

from __future__ import annotations

import torch
from torch import nn

from vcex.checks import check_count, check_positive_finite
from vcex.explainers.base import Explainer, ThresholdSpec
from vcex.explainers.loop import optimise_until_confident
from vcex.explainers.thresholds import AUTO


class PixelAttack(Explainer):
    """Wachter-style targeted attack on pixels (Wachter, Mittelstadt & Russell, 2018).

    Adam on the image itself minimises ``-log p_target + l1_weight * mean|x' - x|`` and stops each
    image at the first step where p_target passes ``threshold``; pixels are clamped to the
    classifier's range after each step. With no generative model to stay near, the result is
    usually adversarial noise: valid for the classifier, rarely for independent oracles.

    Args:
        classifier: differentiable (N, C, H, W) -> (N, K).
        threshold: target probability to pass (default 0.998, as for the latent attack), or one per class.
        lr: Adam learning rate on pixels (0.01).
        max_steps: step budget per image (1000).
        l1_weight: weight of the mean absolute pixel change (the Wachter distance term).

    Example:
        >>> result = PixelAttack(load_classifier("mnist-cnn")).explain(images, target="second")
    """

    name = "pixel"

    def __init__(
        self,
        classifier: nn.Module,
        *,
        threshold: ThresholdSpec = AUTO,
        lr: float = 0.01,
        max_steps: int = 1000,
        l1_weight: float = 0.1,
        check_every: int | None = None,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(classifier, threshold=threshold, batch_size=batch_size, device=device, progress=progress)
        self.lr = check_positive_finite("lr", lr)
        self.max_steps = check_count("max_steps", max_steps)
        self.l1_weight = l1_weight
        self.check_every = check_every or (1 if self.device.type == "cpu" else 8)

    def settings(self) -> dict:
        return {**super().settings(), "lr": self.lr, "max_steps": self.max_steps, "l1_weight": self.l1_weight}

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        low, high = self.classifier.value_range

        def distance(pixels: torch.Tensor, _images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return self.l1_weight * (pixels - images[index]).abs().flatten(1).mean(1)

        loop = optimise_until_confident(
            images,
            lambda pixels: pixels,
            self.classifier,
            target,
            threshold=self.stop_threshold(target, lower),
            lr=self.lr,
            max_steps=self.max_steps,
            lower=lower,
            penalty=distance,
            project=lambda pixels: pixels.clamp(low, high),
            check_every=self.check_every,
            progress=self.progress,
        )
        return loop.result_fields()
