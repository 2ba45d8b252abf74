"""The orthogonal-Jacobian term of StylEx training (vcex.models.stylex.orojar_penalty, recipe.orojar_weight): its
estimate matches the closed form on a linear generator, it is off by default, on it is finite and differentiable,
training with it resumes bit-identically, and minimising it makes a toy generator's Jacobian columns orthogonal."""

from __future__ import annotations

import math

import pytest
import torch
from test_stylex import assert_resumes_bit_identically, faces_like  # shared StylEx test helpers (folder on sys.path)

from vcex.cli.train_style import recipe_from
from vcex.errors import InputError
from vcex.models.stylex import StylExAutoencoder, StylExRecipe, orojar_penalty, stylex_config, train_stylex

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = StylExRecipe(batch_size=8, r1_interval=2)
ON = StylExRecipe(batch_size=8, r1_interval=2, orojar_weight=1.0, orojar_coordinates=16, orojar_images=4)


def tiny_model() -> StylExAutoencoder:
    torch.manual_seed(0)
    return StylExAutoencoder(stylex_config("tiny", image_size=32, channels=3))


def column_cosines(jacobian: torch.Tensor) -> torch.Tensor:
    """Mean |cos| between distinct columns of (P, D) Jacobians: 0 when they are orthogonal."""
    unit = jacobian / jacobian.norm(dim=0, keepdim=True)
    cosines = unit.T @ unit
    off = ~torch.eye(cosines.shape[0], dtype=torch.bool)
    return cosines[off].abs().mean()


def test_the_estimate_matches_the_closed_form_on_a_linear_generator():
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(40, 6, generator=g) + 1.5 * torch.randn(40, 1, generator=g)  # correlated columns
    scale = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    columns = matrix[:, :5] * scale[:5]  # coordinates 0..4 in units of their scale; coordinate 5 is left out
    gram = columns.T @ columns / 40  # |.|^2 is the mean over outputs
    off = ~torch.eye(5, dtype=torch.bool)
    expected = 2 * gram[off].pow(2).sum() / gram.diagonal().sum() ** 2
    styles = torch.randn(1, 6, generator=g)
    estimate, size = orojar_penalty(
        lambda s: s @ matrix.T, styles, torch.arange(5), scale, torch.Generator().manual_seed(1), directions=20000
    )
    assert float(estimate) == pytest.approx(float(expected), rel=0.05)
    assert float(size) == pytest.approx(float(gram.diagonal().sum()), rel=0.05)
    assert 0.1 < float(expected) < 2  # the matrix is far from orthogonal: the check above could fail
    # orthogonal columns: |J v|^2 is the same for every v, so the penalty is 0
    orthogonal, _ = torch.linalg.qr(torch.randn(40, 6, generator=g))
    zero, _ = orojar_penalty(lambda s: s @ orthogonal.T, styles, torch.arange(6), torch.ones(6), g)
    assert float(zero) < 1e-8


def test_off_by_default_on_it_is_logged_finite_and_changes_training():
    images = faces_like()
    assert StylExRecipe().orojar_weight == 0
    off_model, on_model = tiny_model(), tiny_model()
    off = train_stylex(off_model, images, epochs=1, recipe=RECIPE, progress=False)
    on = train_stylex(on_model, images, epochs=1, recipe=ON, progress=False)
    assert "orojar" not in off.history[0] and "orojar_jv_rms" not in off.history[0]
    assert math.isfinite(on.history[0]["orojar"]) and on.history[0]["orojar"] > 0
    assert on.history[0]["orojar_jv_rms"] > 0
    assert all(math.isfinite(value) for value in on.history[0].values())
    assert not torch.equal(
        off_model.generator.layers["8_conv0"].conv.weight, on_model.generator.layers["8_conv0"].conv.weight
    )


def test_the_penalty_is_differentiable_and_its_gradient_lowers_it():
    model = tiny_model()
    styles = model.generator.styles(model.encoder(faces_like(4)).detach())
    coordinates = torch.randperm(model.style_dim, generator=torch.Generator().manual_seed(0))[:24]
    scale = styles.detach().std(0).clamp_min(1e-3)

    def penalty() -> torch.Tensor:  # the same draws every call
        return orojar_penalty(
            model.generator.decode_styles, styles, coordinates, scale, torch.Generator().manual_seed(2)
        )[0]

    synthesis = [p for name, p in model.generator.named_parameters() if not name.startswith("mapping")]
    before = penalty()
    grads = torch.autograd.grad(before, synthesis, allow_unused=True)
    used = [(p, g) for p, g in zip(synthesis, grads) if g is not None]
    assert used and all(torch.isfinite(g).all() for _, g in used)
    assert sum(float(g.abs().sum()) for _, g in used) > 0
    norm = math.sqrt(sum(float(g.pow(2).sum()) for _, g in used))
    with torch.no_grad():
        for p, g in used:
            p -= 1e-3 * g / norm
    assert float(penalty().detach()) < float(before.detach())


def test_training_with_the_term_resumes_bit_identically(tmp_path):
    history = assert_resumes_bit_identically(tmp_path, ON, seed=4)
    assert "orojar" in history[1]


def test_minimising_it_makes_a_toy_generators_jacobian_columns_orthogonal():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(30, 1, generator=g)
    weight = torch.nn.Parameter(0.4 * (torch.randn(30, 5, generator=g) + 2 * shared))  # columns cos ~0.8

    def toy(s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(s @ weight.T)

    points = torch.randn(16, 5, generator=g)

    def mean_cosine() -> float:
        jacobians = [torch.autograd.functional.jacobian(toy, point[None])[0, :, 0] for point in points]
        return float(torch.stack([column_cosines(j) for j in jacobians]).mean())

    def column_norm() -> float:
        return float(weight.detach().norm(dim=0).min())

    cosine_before, norm_before = mean_cosine(), column_norm()
    optimiser = torch.optim.Adam([weight], lr=0.03)
    rng = torch.Generator().manual_seed(1)
    for _ in range(800):
        styles = torch.randn(16, 5, generator=rng)
        loss, _ = orojar_penalty(toy, styles, torch.arange(5), torch.ones(5), rng, directions=4)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert cosine_before > 0.5
    assert mean_cosine() < 0.4 * cosine_before  # 0.51 -> 0.15
    assert column_norm() > 0.5 * norm_before  # won by turning the columns, not by shrinking them


def test_the_cli_set_reaches_the_fields_and_bad_values_are_refused():
    recipe = recipe_from(["orojar_weight=0.5", "orojar_coordinates=128", "orojar_images=16"], 32)
    assert (recipe.orojar_weight, recipe.orojar_coordinates, recipe.orojar_images) == (0.5, 128, 16)
    assert isinstance(recipe.orojar_coordinates, int)
    for bad in ({"orojar_weight": -1.0}, {"orojar_directions": 1}, {"orojar_coordinates": 0}, {"orojar_epsilon": 0.0}):
        with pytest.raises(InputError, match=next(iter(bad))):
            StylExRecipe(**bad)
