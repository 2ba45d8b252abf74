import torch

from vcex.explainers.loop import optimise_until_confident


def _toy_classifier(images):
    # class 1's logit grows with the mean pixel value: a smooth, fully known objective
    mean = images.flatten(1).mean(1)
    return torch.stack([torch.zeros_like(mean), 20 * (mean - 0.5)], dim=1)


def test_adam_matches_torch_optim_when_nothing_stops():
    start = torch.full((3, 1, 2, 2), 0.1)
    ours = optimise_until_confident(
        start,
        lambda v: v,
        _toy_classifier,
        torch.ones(3, dtype=torch.long),
        threshold=0.999999,
        lr=0.01,
        max_steps=5,
        objective="log_prob",
    )
    variable = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([variable], lr=0.01)
    for _ in range(5):
        loss = -torch.log_softmax(_toy_classifier(variable), 1)[:, 1].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.allclose(ours.variables, variable.detach(), atol=1e-6)
    assert ours.steps.tolist() == [5, 5, 5] and not bool(ours.success.any())


def test_images_stop_at_their_first_confident_step_and_stay_there():
    start = torch.stack([torch.full((1, 2, 2), v) for v in (0.2, 0.45, 0.7)])
    out = optimise_until_confident(
        start, lambda v: v, _toy_classifier, torch.ones(3, dtype=torch.long), threshold=0.9, lr=0.05, max_steps=100
    )
    assert out.success.tolist() == [True, True, True]
    assert out.steps[2] == 0  # already past the threshold: zero steps, unchanged
    assert torch.equal(out.images[2], start[2])
    assert out.steps[0] > out.steps[1] > 0
    assert bool((out.target_prob > 0.9).all())
    assert torch.equal(out.forward_passes, out.steps + 1)
    # an image that finishes at step s was in the batch for s + 1 backward passes (the last one is the
    # batch's pass in which it finished), except when nothing else needed one
    assert torch.equal(out.backward_passes, torch.tensor([out.steps[0], out.steps[1] + 1, 1]))


def test_lowering_and_projection():
    start = torch.full((2, 1, 2, 2), 0.9)
    out = optimise_until_confident(
        start,
        lambda v: v,
        _toy_classifier,
        torch.ones(2, dtype=torch.long),
        threshold=0.1,
        lr=0.05,
        max_steps=200,
        lower=True,
        project=lambda v: v.clamp(0.3, 1),
    )
    assert bool(out.success.all()) and bool((out.target_prob < 0.1).all())
    assert float(out.images.min()) >= 0.3


def test_check_every_gives_the_same_outcome():
    start = torch.stack([torch.full((1, 2, 2), v) for v in (0.1, 0.3, 0.45)])
    target = torch.ones(3, dtype=torch.long)
    every = optimise_until_confident(
        start, lambda v: v, _toy_classifier, target, threshold=0.95, lr=0.05, max_steps=100
    )
    sparse = optimise_until_confident(
        start, lambda v: v, _toy_classifier, target, threshold=0.95, lr=0.05, max_steps=100, check_every=7
    )
    assert torch.equal(every.steps, sparse.steps)
    assert torch.allclose(every.images, sparse.images)
    assert bool((sparse.forward_passes >= every.forward_passes).all())  # frozen rows ride along until a check


def test_finished_rows_pad_the_batch_to_few_sizes_without_changing_any_outcome():
    # 11 images that finish at different steps: the active set passes through sizes that are not buckets,
    # so finished rows are kept (masked) as padding; each image's outcome must be what it gets alone
    start = torch.stack([torch.full((1, 2, 2), 0.05 + 0.04 * k) for k in range(11)])
    target = torch.ones(11, dtype=torch.long)
    seen = []

    def render(variables):
        seen.append(variables.shape[0])
        return variables

    together = optimise_until_confident(start, render, _toy_classifier, target, threshold=0.9, lr=0.02, max_steps=300)
    assert set(seen) <= {1, 2, 3, 4, 6, 8, 11, 12} and len(set(seen)) < len(set(range(1, 12)))
    assert any(size < 11 for size in seen)  # the batch did shrink
    for k in range(11):
        alone = optimise_until_confident(
            start[k : k + 1], lambda v: v, _toy_classifier, target[:1], threshold=0.9, lr=0.02, max_steps=300
        )
        assert int(alone.steps[0]) == int(together.steps[k])
        torch.testing.assert_close(alone.variables[0], together.variables[k])
        assert int(alone.forward_passes[0]) == int(together.forward_passes[k])
    assert torch.equal(together.forward_passes, together.steps + 1)


def test_bucket_sizes():
    from vcex.explainers.loop import _bucket

    assert [_bucket(n) for n in (1, 2, 3, 4, 5, 7, 9, 13, 17, 100, 129, 193, 256)] == [
        1, 2, 3, 4, 6, 8, 12, 16, 24, 128, 192, 256, 256,
    ]  # fmt: skip
