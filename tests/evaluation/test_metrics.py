import pytest
import torch

from vcex.errors import InputError
from vcex.evaluation import agreement, changed_fraction, evaluate, im_scores, l1_distance, l2_distance, latent_distance
from vcex.models import ClassAutoencoders


def test_identical_images_have_zero_distance():
    images = torch.rand(4, 1, 5, 5)
    for metric in (l1_distance, l2_distance, changed_fraction):
        assert torch.equal(metric(images, images), torch.zeros(4))
    assert torch.equal(latent_distance(torch.ones(4, 3), torch.ones(4, 3)), torch.zeros(4))


def test_known_distances():
    a = torch.zeros(2, 1, 2, 2)
    b = a.clone()
    b[0, 0, 0, 0] = 1.0
    assert l1_distance(a, b).tolist() == [0.25, 0.0]
    assert l2_distance(a, b).tolist() == [1.0, 0.0]
    assert changed_fraction(a, b).tolist() == [0.25, 0.0]
    assert latent_distance(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]])).tolist() == [5.0]


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError, match="same shape"):
        l1_distance(torch.zeros(2, 1, 2, 2), torch.zeros(3, 1, 2, 2))


def test_agreement_raise_and_lower():
    target = torch.tensor([1, 2, 3])
    assert agreement(target.clone(), target).tolist() == [1, 1, 1]  # a perfect oracle agrees always
    assert agreement(torch.tensor([1, 0, 0]), target).tolist() == [1, 0, 0]
    assert agreement(torch.tensor([1, 0, 0]), target, lower=True).tolist() == [0, 1, 1]


def test_im1_prefers_the_class_whose_autoencoder_reconstructs_best():
    model = ClassAutoencoders(2, (1, 2, 2), hidden=4, code=2)

    def fake(images):  # class 0's autoencoder is perfect, class 1's returns zeros
        out = torch.zeros(len(images), 3, 1, 2, 2)
        out[:, 0] = images
        out[:, 2] = images
        return out

    model.forward = fake
    images = torch.full((2, 1, 2, 2), 0.5)
    scores = im_scores(model, images, torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert scores["im1"][0] < 1e-6 and scores["im1"][1] > 1e6
    assert scores["im2"][0] == 0 and scores["im2"][1] > 0


def test_evaluate_leaves_missing_oracles_empty(tiny_classifier, tiny_vae, mnist_small):
    from vcex import CounterfactualAttack

    _, _, images, _ = mnist_small
    result = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.9, max_steps=100).explain(images[:4])
    record = evaluate(result, dataset="mnist")
    assert record["oracle_agreement"] is None and record["knn_agreement"] is None and record["realism"] is None
    assert record["validity"] == result.validity and record["n"] == 4
    full = evaluate(result, dataset="mnist", oracle=tiny_classifier, latent_model=tiny_vae)
    # the classifier as its own oracle agrees wherever it passed the threshold (and maybe where it just reached argmax)
    assert full["oracle_agreement"] >= result.validity
    assert full["latent_distance"] > 0


def test_evaluate_scores_identity_and_collapse(tiny_classifier, tiny_vae, mnist_small):
    import dataclasses

    from vcex import CounterfactualAttack
    from vcex.evaluation import diversity_reference, penultimate_features

    train_images, train_labels, images, _ = mnist_small
    result = CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.9, max_steps=100).explain(images[:20])
    features = penultimate_features(tiny_classifier)
    reference = diversity_reference(train_images, train_labels, features, per_class=50)
    assert evaluate(result, dataset="mnist")["identity_preservation"] is None  # no features: no made-up value
    # counterfactuals that are their originals: every one is nearest its own, and they vary as real images do
    unchanged = evaluate(
        dataclasses.replace(result, counterfactuals=result.originals.clone()),
        features=features,
        diversity_reference=reference,
    )
    assert unchanged["identity_preservation"] == 1.0 and unchanged["identity_chance"] == 0.05
    assert unchanged["identity_n"] == 20 and unchanged["diversity"] > 0.3
    assert unchanged["identity_preservation_pixels"] == 1.0
    # one training image of the target class for every counterfactual of that class: a collapsed explainer
    templates = torch.stack([train_images[train_labels == t][0] for t in result.target.tolist()])
    collapsed = evaluate(
        dataclasses.replace(result, counterfactuals=templates), features=features, diversity_reference=reference
    )
    assert collapsed["identity_preservation"] <= 0.25 and collapsed["diversity"] == 0.0
    assert collapsed["identity_preservation_pixels"] <= 0.25
    assert set(collapsed["diversity_per_class"]) == {str(t) for t in result.target.unique().tolist()}
