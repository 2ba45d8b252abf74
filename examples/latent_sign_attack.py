"""A new explainer on vcex's shared base, in one file: iterative gradient-sign steps in a latent space.

The worked example of CONTRIBUTING.md and docs/architecture.md. The base (:class:`vcex.Explainer`) checks the
images, resolves targets ("second", "flip", class indices), resolves ``threshold="auto"``, keeps the models in
eval mode with frozen parameters (restored afterwards), splits the work into chunks of ``batch_size`` and times
it; the method only says what one chunk's counterfactuals are, in ``_explain_batch``.

Run it on the MNIST models that ship with vcex (a few seconds on one CPU thread):

    PYTHONPATH=src python examples/latent_sign_attack.py
"""

from __future__ import annotations

import torch
from torch import nn

from vcex import Explainer
from vcex.checks import check_count, check_positive_finite
from vcex.models import LatentModel


class LatentSignAttack(Explainer):
    """Iterative fast gradient sign (Goodfellow et al., 2015, arXiv:1412.6572) on a latent z instead of pixels.

    Each step moves every coordinate of z by ``step_size`` in the direction that raises the target's
    log-probability, ``z <- z + step_size * sign(grad_z log p_target(decode(z)))``, and each image stops at the
    first step where its target probability passes the threshold. Distance: none explicit; the fixed step and
    early stop keep the change small, the generator keeps it on the data manifold.

    Args:
        classifier: differentiable (N, C, H, W) images in [0, 1] -> logits (N, K).
        latent_model: ``encode(images) -> z``, ``decode(z) -> images`` in [0, 1].
        step_size: change of every latent coordinate per step (0.05).
        max_steps: step budget per image (200).
        threshold, batch_size, device, progress: see :class:`vcex.Explainer`.

    Example:
        >>> sign = LatentSignAttack(load_classifier("mnist-cnn"), load_latent_model("mnist-vae"))
        >>> result = sign.explain(images, target="second")
    """

    name = "latent-sign"
    needs_latent_model = True  # the base refuses a missing latent model before any work starts

    def __init__(
        self,
        classifier: nn.Module,
        latent_model: LatentModel,
        *,
        step_size: float = 0.05,
        max_steps: int = 200,
        **base_options,
    ) -> None:
        super().__init__(classifier, latent_model, **base_options)
        # checked at the public edge: one clear line naming the argument, never a traceback from deep inside
        self.step_size = check_positive_finite("step_size", step_size)
        self.max_steps = check_count("max_steps", max_steps)

    def settings(self) -> dict:
        """Recorded with every result (and in metrics.json), so a run can be told apart and repeated."""
        return {**super().settings(), "step_size": self.step_size, "max_steps": self.max_steps}

    def _target_prob(self, latents: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded images (B, C, H, W), clamped to the classifier's range, and their target probability (B,)."""
        low, high = self.classifier.value_range
        images = self.latent_model.decode(latents).clamp(low, high)
        log_probs = self.classifier(images).log_softmax(1)
        return images, log_probs.gather(1, target[:, None])[:, 0]

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            original_latents = self.latent_model.encode(images)
            reconstructions = self._decode_checked(original_latents, images)  # one clear error on a wrong decoder
        latents = original_latents.detach().clone()
        active = torch.ones(len(images), dtype=torch.bool, device=images.device)
        steps = torch.zeros(len(images), dtype=torch.long, device=images.device)
        backward_passes = torch.zeros_like(steps)
        direction = -1.0 if lower else 1.0  # lower=True pushes the target's probability down instead
        for _ in range(self.max_steps):
            latents.requires_grad_(True)
            _, log_prob = self._target_prob(latents, target)
            # checked before stepping: an image that already passes is not changed (as in the shared loop)
            active &= ~self.reached(log_prob.detach().exp(), target, lower)
            if not active.any():
                break
            (gradient,) = torch.autograd.grad(log_prob.sum(), latents)
            mask = active.view(-1, *([1] * (latents.dim() - 1)))
            latents = (latents + direction * self.step_size * gradient.sign() * mask).detach()
            steps += active
            backward_passes += active
        with torch.no_grad():
            counterfactuals, log_prob = self._target_prob(latents.detach(), target)
        target_prob = log_prob.exp()
        return {
            "counterfactuals": counterfactuals,
            "target_prob": target_prob,
            "success": self.reached(target_prob, target, lower),
            "steps": steps,
            "forward_passes": steps + 1,  # one pass per step, and the final check
            "backward_passes": backward_passes,
            "original_latents": original_latents,
            "counterfactual_latents": latents.detach(),
            "reconstructions": reconstructions,
        }


def main() -> None:
    from vcex import load_classifier, load_latent_model
    from vcex.data import load_dataset
    from vcex.evaluation import evaluate

    torch.set_num_threads(1)
    classifier = load_classifier("mnist-cnn", progress=False)  # shipped with vcex
    vae = load_latent_model("mnist-vae", progress=False)
    images = load_dataset("mnist", "test").images[:32]
    result = LatentSignAttack(classifier, vae).explain(images, target="second")
    metrics = evaluate(result, dataset="mnist", oracle=load_classifier("mnist-oracle", progress=False))
    print(
        f"validity {metrics['validity']:.3f}, oracle agreement {metrics['oracle_agreement']:.3f}, "
        f"mean steps {metrics['mean_steps']:.1f}"
    )


if __name__ == "__main__":
    main()
