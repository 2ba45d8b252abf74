"""vcex.models.blackbox: any callable as a query-only classifier: no gradients, counted and batched queries,
checked answers; from TorchScript and ONNX files; refused by the methods that need gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vcex.errors import InputError, ModelError
from vcex.explainers import CounterfactualAttack, LinearLatentEdit
from vcex.explainers.registry import METHODS, check_black_box
from vcex.models.blackbox import BlackBoxClassifier, is_black_box
from vcex.models.user import check_user_classifier

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # the tests make TorchScript files as a user's are made; torch 2.13 deprecates making them, not loading them
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    # ... and ONNX files with the legacy exporter (dynamo=False: no onnxscript here)
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]


class Recorder:
    """A box that answers the tiny classifier's logits (or probabilities) and records each batch it is asked."""

    def __init__(self, classifier: nn.Module, probabilities: bool = False) -> None:
        self.classifier, self.probabilities, self.batches, self.saw_grad = classifier, probabilities, [], False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(images.shape[0])
        self.saw_grad |= images.requires_grad or torch.is_grad_enabled()
        logits = self.classifier(images)
        return logits.softmax(1) if self.probabilities else logits


@pytest.fixture
def images(mnist_small) -> torch.Tensor:
    return mnist_small[2][:10]


def test_answers_logits_without_gradients_in_counted_batches(tiny_classifier, images):
    recorder = Recorder(tiny_classifier)
    box = BlackBoxClassifier(recorder, 10, batch_size=4)
    probe = images.clone().requires_grad_(True)
    logits = box(probe)
    with torch.no_grad():
        assert torch.allclose(logits, tiny_classifier(images), atol=1e-6)
    assert not logits.requires_grad and not recorder.saw_grad
    assert recorder.batches == [4, 4, 2] and box.queries == 10
    box(images[:3])
    assert box.queries == 13
    box.reset_queries()
    assert box.queries == 0


def test_probabilities_become_log_probabilities(tiny_classifier, images):
    box = BlackBoxClassifier(Recorder(tiny_classifier, probabilities=True), 10, outputs="probabilities")
    with torch.no_grad():
        expected = tiny_classifier(images).log_softmax(1)
    assert torch.allclose(box(images), expected, atol=1e-4)


def test_normalisation_is_applied_before_the_box(tiny_classifier, images):
    box = BlackBoxClassifier(tiny_classifier.network, 10, mean=[0.1307], std=[0.3081])
    with torch.no_grad():
        assert torch.allclose(box(images), tiny_classifier(images), atol=1e-6)


def test_num_classes_is_learned_once_then_held(images):
    answers = iter([torch.zeros(10, 3), torch.zeros(2, 4)])
    box = BlackBoxClassifier(lambda x: next(answers)[: len(x)], None)
    assert box(images).shape == (10, 3) and box.num_classes == 3
    with pytest.raises(ModelError, match=r"answered shape \(2, 4\) for 2 images; it must answer \(2, 3\)"):
        box(images[:2])


@pytest.mark.parametrize(
    ("answer", "outputs", "message"),
    [
        (
            lambda x: torch.zeros(len(x), 3),
            "logits",
            r"answered shape \(10, 3\) for 10 images; it must answer \(10, 10\)",
        ),
        (lambda x: torch.zeros(len(x) - 1, 10), "logits", r"answered shape \(9, 10\) for 10 images"),
        (lambda x: torch.zeros(len(x)), "logits", r"answered shape \(10,\)"),
        (lambda x: torch.full((len(x), 10), float("nan")), "logits", "NaN or inf for images 0, 1, 2"),
        (lambda x: "ok", "logits", "must answer a tensor or array"),
        (lambda x: torch.randn(len(x), 10), "probabilities", "not in \\[0, 1\\] summing to 1"),
        (lambda x: x.view(3, -1), "logits", "the black box failed on images of shape"),
    ],
)
def test_bad_answers_get_one_line(answer, outputs, message, images):
    box = BlackBoxClassifier(answer, 10, outputs=outputs)
    with pytest.raises(ModelError, match=message) as caught:
        box(images)
    assert "\n" not in str(caught.value)


def test_bad_construction_is_refused():
    with pytest.raises(InputError, match="callable"):
        BlackBoxClassifier("model.onnx", 10)
    with pytest.raises(InputError, match="num_classes"):
        BlackBoxClassifier(lambda x: x, 1)
    with pytest.raises(InputError, match="outputs"):
        BlackBoxClassifier(lambda x: x, 10, outputs="scores")
    with pytest.raises(InputError, match="N >= 1"):
        BlackBoxClassifier(lambda x: x, 10)(torch.zeros(0, 1, 28, 28))


def test_a_binary_box_may_answer_one_probability(images):
    box = BlackBoxClassifier(lambda x: x.mean((1, 2, 3))[:, None], 2, outputs="probabilities")
    p = images.mean((1, 2, 3))
    assert torch.allclose(box(images).exp(), torch.stack([1 - p, p], 1), atol=1e-6)


def test_the_user_model_check_catches_class_count_and_nan(tiny_classifier, images):
    check_user_classifier(BlackBoxClassifier(tiny_classifier, 10), images, 10)
    with pytest.raises(ModelError, match="returns 10 classes but the dataset has 2"):
        check_user_classifier(BlackBoxClassifier(tiny_classifier, None), images, 2)
    with pytest.raises(ModelError, match="NaN or inf"):
        check_user_classifier(BlackBoxClassifier(lambda x: torch.full((len(x), 10), float("nan")), None), images, 10)


def test_a_torchscript_box_leaves_the_model_as_found(tiny_classifier, images, tmp_path):
    path = tmp_path / "user.pt"
    network = tiny_classifier.network
    torch.jit.save(torch.jit.script(network), str(path))
    box = BlackBoxClassifier.from_torchscript(path, mean=[0.1307], std=[0.3081])
    scripted = box.network.function
    scripted.train()
    before = {name: tensor.clone() for name, tensor in scripted.state_dict().items()}
    check_user_classifier(box, images, 10)
    assert scripted.training and all(torch.equal(before[k], v) for k, v in scripted.state_dict().items())
    assert box.source["sha256"] and box.source["black_box"]
    with torch.no_grad():
        assert torch.allclose(box(images), tiny_classifier(images), atol=1e-5)


def test_onnx_file_answers_as_the_model_does(tiny_classifier, images, tmp_path):
    path = tmp_path / "user.onnx"
    torch.onnx.export(
        tiny_classifier.network, (torch.zeros(1, 1, 28, 28),), str(path), dynamic_axes={"x": {0: "n"}},
        input_names=["x"], dynamo=False,
    )  # fmt: skip
    box = BlackBoxClassifier.from_onnx(path, mean=[0.1307], std=[0.3081], batch_size=3)
    assert box.num_classes == 10 and box.input_shape == (1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(box(images), tiny_classifier(images), atol=1e-4)
    assert box.queries == 10 and is_black_box(box)


def test_an_onnx_file_with_a_fixed_batch_is_queried_in_its_batches(tiny_classifier, images, tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(tiny_classifier.network, (torch.zeros(4, 1, 28, 28),), str(path), dynamo=False)
    box = BlackBoxClassifier.from_onnx(path, mean=[0.1307], std=[0.3081])
    with torch.no_grad():
        assert torch.allclose(box(images), tiny_classifier(images), atol=1e-4)  # 10 images: 4 + 4 + 2 padded
    assert box.queries == 10


def test_bad_onnx_files_get_one_line(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="does not exist"):
        BlackBoxClassifier.from_onnx(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="is not an ONNX model onnxruntime can run") as caught:
        BlackBoxClassifier.from_onnx(junk)
    assert "\n" not in str(caught.value)


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnxruntime)
    with pytest.raises(InputError, match=r'pip install "vcex\[onnx\]"'):
        BlackBoxClassifier.from_onnx(tmp_path / "user.onnx")


def test_gradient_methods_refuse_a_black_box_naming_those_that_can(tiny_classifier):
    box = BlackBoxClassifier(tiny_classifier, 10)
    assert is_black_box(box) and is_black_box(nn.Sequential(box)) and not is_black_box(tiny_classifier)
    usable = [name for name, method in METHODS.items() if method.black_box]
    assert "linear" in usable and "attack" not in usable
    for name, method in METHODS.items():
        if method.black_box:
            check_black_box(name, True)
            continue
        with pytest.raises(InputError, match=rf"--method {name} .*needs the classifier's gradients.*linear") as caught:
            check_black_box(name, True)
        assert "\n" not in str(caught.value)
        check_black_box(name, False)  # a differentiable classifier passes


def test_a_black_box_method_explains_a_box_and_the_attack_cannot(tiny_classifier, tiny_vae, mnist_small):
    train_images, _, test_images, _ = mnist_small
    box = BlackBoxClassifier(tiny_classifier, 10)
    edit = LinearLatentEdit(box, tiny_vae, threshold=0.6).fit(train_images[:300])
    box.reset_queries()
    result = edit.explain(test_images[:6])
    assert box.queries > 0 and result.counterfactuals.shape == (6, 1, 28, 28)
    box.reset_queries()
    with pytest.raises(InputError, match=r"^CounterfactualAttack needs the classifier's gradients.*linear \(Linear"):
        CounterfactualAttack(box, tiny_vae, max_steps=2)
    assert box.queries == 0  # refused on construction, before any query


def test_an_explainer_outside_the_registry_is_judged_by_its_declaration(tiny_classifier):
    from vcex.explainers.base import Explainer
    from vcex.explainers.registry import accepts_black_box

    class QueriesOnly(Explainer):
        needs_gradients = False

    class Differentiates(Explainer):
        pass

    box = BlackBoxClassifier(tiny_classifier, 10)
    assert accepts_black_box(QueriesOnly) and not accepts_black_box(Differentiates)
    QueriesOnly(box)
    with pytest.raises(InputError, match="^Differentiates needs the classifier's gradients"):
        Differentiates(box)
    Differentiates(tiny_classifier)  # a differentiable classifier passes


def test_a_copy_of_an_onnx_box_shares_its_session_and_answers_alike(tiny_classifier, images, tmp_path):
    """``--device`` gives the explainer its own copy of the classifier (copy.deepcopy); a session cannot be copied."""
    import copy

    path = tmp_path / "user.onnx"
    torch.onnx.export(tiny_classifier.network, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False)
    box = BlackBoxClassifier.from_onnx(path, mean=[0.1307], std=[0.3081])
    twin = copy.deepcopy(box)
    assert twin.network.function.session is box.network.function.session
    assert torch.equal(twin(images[:1]), box(images[:1])) and twin.queries == box.queries == 1
