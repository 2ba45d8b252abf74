import pytest
import torch

from vcex import CounterfactualAttack, InputError
from vcex.attribution import LocalAttribution
from vcex.errors import CacheError
from vcex.explainers.disc import DISC
from vcex.explainers.pixel_attack import PixelAttack
from vcex.report.paths import PATHS_FILE, PATHS_RECORD, ExplorerPaths, compute_paths, write_paths

pytestmark = pytest.mark.usefixtures("one_thread")


def _bytes(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def attack(tiny_classifier, tiny_vae):
    return CounterfactualAttack(tiny_classifier, tiny_vae, threshold=0.9, max_steps=60, latent_bound=None)


@pytest.fixture(scope="module")
def attack_result(attack, mnist_small):
    return attack.explain(mnist_small[2][:6])


def _target_prob(classifier, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return classifier(images).softmax(1).gather(1, target[:, None])[:, 0]


def test_latent_path_runs_from_the_reconstruction_to_the_counterfactual(attack, attack_result, tiny_classifier):
    paths = compute_paths(attack_result, tiny_classifier, attack.latent_model, points=5)
    assert paths.kind == "latent" and paths.path.shape == (6, 5, 1, 28, 28) and paths.path.dtype == torch.uint8
    assert torch.equal(paths.path[:, 0], _bytes(attack_result.reconstructions))
    assert (paths.path[:, -1].int() - _bytes(attack_result.counterfactuals).int()).abs().max() <= 1
    assert torch.allclose(paths.path_prob[:, -1], attack_result.target_prob, atol=1e-4)
    start = _target_prob(tiny_classifier, attack_result.reconstructions, attack_result.target)
    assert torch.allclose(paths.path_prob[:, 0], start, atol=1e-4)
    # the middle point is the decoded midpoint of the two latents, scored by the classifier
    middle = attack.latent_model.decode((attack_result.original_latents + attack_result.counterfactual_latents) / 2)
    assert torch.allclose(paths.path_prob[:, 2], _target_prob(tiny_classifier, middle, attack_result.target), atol=1e-4)
    assert torch.equal(paths.path_position, torch.linspace(0, 1, 5))
    assert torch.equal(paths.success, attack_result.success) and torch.equal(paths.target, attack_result.target)
    assert torch.allclose(paths.threshold, torch.full((6,), 0.9))


def test_paths_are_computed_in_batches_with_the_same_result(attack, attack_result, tiny_classifier):
    whole = compute_paths(attack_result, tiny_classifier, attack.latent_model, points=4)
    pieces = compute_paths(attack_result, tiny_classifier, attack.latent_model, points=4, batch_size=4)  # 1 per batch
    assert torch.equal(whole.path, pieces.path)
    assert torch.allclose(whole.path_prob, pieces.path_prob, atol=1e-6)


def test_paths_keep_at_most_max_images_and_the_run_size(attack, attack_result, tiny_classifier):
    paths = compute_paths(attack_result, tiny_classifier, attack.latent_model, max_images=4)
    assert len(paths) == 4 and paths.total == 6 and paths.indices.tolist() == [0, 1, 2, 3]
    assert paths.originals.shape == (4, 1, 28, 28) and paths.path_prob.shape == (4, 8)


def test_computing_paths_leaves_the_models_as_they_were(attack, attack_result, tiny_classifier, tiny_vae):
    tiny_vae.train()
    try:
        flags = [p.requires_grad for p in tiny_vae.parameters()]
        compute_paths(attack_result, tiny_classifier, attack.latent_model, points=3)
        assert tiny_vae.training and all(m.training for m in tiny_vae.modules())
        assert [p.requires_grad for p in tiny_vae.parameters()] == flags
    finally:
        tiny_vae.eval()


def test_pixel_path_is_the_straight_line_in_pixel_space(tiny_classifier, mnist_small):
    images = mnist_small[2][:4]
    result = PixelAttack(tiny_classifier, threshold=0.9, max_steps=40).explain(images)
    paths = compute_paths(result, tiny_classifier, points=3)
    assert paths.kind == "pixel" and paths.reconstructions is None
    assert torch.equal(paths.path[:, 0], _bytes(images))
    middle = (result.originals + result.counterfactuals) / 2
    assert torch.allclose(paths.path_prob[:, 1], _target_prob(tiny_classifier, middle, result.target), atol=1e-4)
    assert torch.allclose(paths.path_prob[:, 0], result.original_prob, atol=1e-4)


def test_disc_path_is_its_sequence_and_needs_no_model(tiny_classifier, mnist_small, tmp_path):
    result = DISC(tiny_classifier, parameterisation="pixels", threshold=0.9, max_steps=40).explain(mnist_small[2][:3])
    assert write_paths(tmp_path, result, None) == tmp_path / PATHS_FILE
    paths = ExplorerPaths.load(tmp_path)
    stages = result.sequence.shape[1]
    assert paths.kind == "sequence" and paths.path.shape[1] == stages + 1
    assert torch.equal(paths.path[:, 0], _bytes(result.originals))
    assert torch.equal(paths.path[:, 1:], _bytes(result.sequence))
    assert torch.allclose(paths.path_prob[:, 1:], result.sequence_prob)


def test_write_paths_needs_the_models_of_a_latent_run(attack, attack_result, tmp_path):
    assert write_paths(tmp_path / "none", attack_result, None) is None
    assert write_paths(tmp_path / "off", attack_result, attack, max_images=0) is None
    assert not (tmp_path / "none").exists() and not (tmp_path / "off").exists()
    assert write_paths(tmp_path / "run", attack_result, attack, max_images=2) == tmp_path / "run" / PATHS_FILE
    assert len(ExplorerPaths.load(tmp_path / "run")) == 2


def test_paths_round_trip_with_local_attributions(attack, attack_result, tmp_path):
    local = LocalAttribution(
        scores=torch.linspace(-1, 1, 12).view(6, 2),
        names=["thickness", "slant"],
        usable=torch.tensor([True, False]),
        reasons={"slant": "at chance"},
        original_probs=torch.zeros(6, 2),
        counterfactual_probs=torch.zeros(6, 2),
        accuracy=torch.ones(2),
        chance=torch.full((2,), 0.5),
    )
    write_paths(tmp_path, attack_result, attack, max_images=3, local=local)
    paths = ExplorerPaths.load(tmp_path)
    assert paths.local_names == ["thickness", "slant"] and torch.equal(paths.local_usable, torch.tensor([True, False]))
    assert torch.equal(paths.local_scores, local.scores[:3])
    assert paths.method == "attack" and paths.total == 6
    with pytest.raises(InputError, match="3 rows for a result of 6"):
        compute_paths(attack_result, attack.classifier, attack.latent_model, local=local.select(torch.arange(3)))


def test_damaged_paths_raise_a_cache_error(attack, attack_result, tmp_path):
    write_paths(tmp_path, attack_result, attack, max_images=2)
    (tmp_path / PATHS_RECORD).write_text("[1, 2]")
    with pytest.raises(CacheError, match="cannot read the explorer's paths"):
        ExplorerPaths.load(tmp_path)
    (tmp_path / PATHS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CacheError, match="cannot read"):
        ExplorerPaths.load(tmp_path)


def test_bad_settings_are_refused(attack, attack_result, tiny_classifier):
    with pytest.raises(InputError, match="at least 2 points"):
        compute_paths(attack_result, tiny_classifier, attack.latent_model, points=1)
    with pytest.raises(InputError, match="max_images must be >= 1"):
        compute_paths(attack_result, tiny_classifier, attack.latent_model, max_images=0)
    with pytest.raises(InputError, match="pass classifier="):
        compute_paths(attack_result, None, attack.latent_model)


def test_paths_keep_the_classifier_class_names(attack, attack_result, tiny_classifier, monkeypatch):
    assert compute_paths(attack_result, tiny_classifier, attack.latent_model, points=2).class_names is None
    names = [f"digit {k}" for k in range(10)]
    monkeypatch.setattr(tiny_classifier, "class_names", names)
    assert compute_paths(attack_result, tiny_classifier, attack.latent_model, points=2).class_names == names
