import pytest
import torch
from torch import nn

from vcex.errors import InputError
from vcex.evaluation import CostCounter, per_counterfactual


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def test_hooks_count_forward_and_backward_images_inside_the_block_only():
    model = tiny_model()
    with CostCounter(model) as cost:
        model(torch.rand(3, 1, 2, 2))
        scores = model(torch.rand(5, 1, 2, 2))
        scores[:, 0].sum().backward()
        with torch.no_grad():
            model(torch.rand(2, 1, 2, 2))
    model(torch.rand(7, 1, 2, 2)).sum().backward()  # after the block: not counted
    assert (cost.calls, cost.forward_images, cost.backward_images, cost.queries) == (3, 10, 5, 0)
    assert cost.seconds >= 0 and not cost.hooked


def test_entering_again_resets_the_counts():
    model = tiny_model()
    counter = CostCounter(model)
    with counter:
        model(torch.rand(3, 1, 2, 2))
    with counter:
        model(torch.rand(2, 1, 2, 2))
    assert (counter.calls, counter.forward_images) == (1, 2)


def test_calling_the_counter_counts_once_with_or_without_hooks():
    model = tiny_model()
    counter = CostCounter(model)
    counter(torch.rand(4, 1, 2, 2))
    with counter:
        counter(torch.rand(2, 1, 2, 2))
        model(torch.rand(1, 1, 2, 2))
    assert (counter.calls, counter.forward_images) == (2, 3)


def test_plain_functions_are_counted_when_called_through_the_counter():
    counter = CostCounter(lambda images: images.flatten(1)[:, :2])
    counter(torch.rand(6, 1, 2, 2))
    counter(torch.rand(1, 1, 2, 2))
    assert (counter.calls, counter.forward_images) == (2, 7)


def test_black_box_mode_counts_queries_and_withholds_gradients():
    model = tiny_model()
    images = torch.rand(4, 1, 2, 2, requires_grad=True)
    with CostCounter(model, black_box=True) as cost:
        scores = model(images)
        assert not scores.requires_grad
    wrapped = CostCounter(model, black_box=True)
    assert not wrapped(images).requires_grad
    assert cost.queries == 4 and wrapped.queries == 4 and cost.backward_images == 0


def test_counts_match_an_explainers_own_bookkeeping():
    from vcex import CounterfactualAttack
    from vcex.models import VAE, Classifier, SmallCNN

    torch.manual_seed(0)
    classifier, vae = Classifier(SmallCNN()).eval(), VAE(latent_dim=4, width=8).eval()
    images = torch.rand(3, 1, 28, 28)
    with CostCounter(classifier) as cost:
        result = CounterfactualAttack(classifier, vae, max_steps=5).explain(images)
    assert cost.backward_images == int(result.backward_passes.sum())
    assert cost.forward_images >= int(result.forward_passes.sum())  # plus the explainer's checks at the edge


def test_per_counterfactual():
    assert per_counterfactual(10.0, 50, 5) == {"seconds_per_cf": 2.0, "passes_per_cf": 10.0}
    assert per_counterfactual(1.0, 8, 4, queries=100)["queries_per_cf"] == 25.0
    counter = CostCounter(tiny_model())
    counter(torch.rand(4, 1, 2, 2))
    assert counter.summary(2)["passes_per_cf"] == 2.0
    with pytest.raises(InputError, match="at least 1"):
        per_counterfactual(1.0, 1, 0)
    with pytest.raises(InputError, match="negative"):
        per_counterfactual(-1.0, 1, 1)
    with pytest.raises(InputError, match="classifier"):
        CostCounter(3)
