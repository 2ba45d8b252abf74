import pytest
import torch

from vcex import InputError, LinearLatentEdit, PixelAttack


def test_pixel_attack_reaches_target_inside_the_valid_range(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    result = PixelAttack(tiny_classifier, threshold=0.9, max_steps=300).explain(images[:16])
    assert result.validity >= 0.9
    assert float(result.counterfactuals.min()) >= 0 and float(result.counterfactuals.max()) <= 1
    assert result.original_latents is None and result.reconstructions is None


def test_pixel_attack_l1_weight_keeps_changes_smaller(tiny_classifier, mnist_small):
    _, _, images, _ = mnist_small
    loose = PixelAttack(tiny_classifier, threshold=0.9, l1_weight=0.0, max_steps=300).explain(images[:8])
    tight = PixelAttack(tiny_classifier, threshold=0.9, l1_weight=5.0, max_steps=300).explain(images[:8])
    both = loose.success & tight.success
    assert bool(both.any())
    change = lambda r: (r.counterfactuals - r.originals).abs().flatten(1).sum(1)[both].mean()  # noqa: E731
    assert float(change(tight)) < float(change(loose))


def test_linear_edit_needs_fit_then_moves_toward_target(tiny_classifier, tiny_vae, mnist_small):
    train_images, _, images, _ = mnist_small
    edit = LinearLatentEdit(tiny_classifier, tiny_vae, threshold=0.9)
    with pytest.raises(InputError, match="fit"):
        edit.explain(images[:4])
    edit.fit(train_images[:500])
    assert edit.probe_accuracy > 0.5
    result = edit.explain(images[:32])
    assert bool((result.steps == 0).all()) and bool((result.forward_passes == 1).all())
    assert float(result.target_prob.mean()) > float(result.original_prob.mean())
    with pytest.raises(InputError, match="raises"):
        edit.explain(images[:4], lower=True)


class ScaledLatent(torch.nn.Module):
    """The same latent model in other units: z' = 17 z + 3 (the faces' W is ~17x wider than a VAE's z)."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return 17 * self.base.encode(images) + 3

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.base.decode((latents - 3) / 17)


def test_linear_edit_does_not_depend_on_the_latents_units(tiny_classifier, tiny_vae, mnist_small):
    train_images, _, images, _ = mnist_small
    plain = LinearLatentEdit(tiny_classifier, tiny_vae, threshold=0.9).fit(train_images[:500])
    scaled = LinearLatentEdit(tiny_classifier, ScaledLatent(tiny_vae), threshold=0.9).fit(train_images[:500])
    assert scaled.probe_accuracy == pytest.approx(plain.probe_accuracy, abs=0.005)
    first, second = plain.explain(images[:16]), scaled.explain(images[:16])
    torch.testing.assert_close(second.counterfactuals, first.counterfactuals, atol=2e-3, rtol=0)
