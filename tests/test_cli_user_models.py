"""``--classifier`` with a user's own model: a TorchScript file or an entry point with safetensors weights, checked
once before any work; explained with the zoo's oracles and latent model (the shipped MNIST weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vcex.cli import main
from vcex.models import Classifier

pytestmark = pytest.mark.usefixtures("one_thread")
TESTS = Path(__file__).resolve().parent
# a short attack on 4 images: enough to compare two runs exactly
RUN = ["--method", "attack", "--n", "4", "--threshold", "0.9", "--max-steps", "30", "--quiet"]


@pytest.fixture
def scripted(tiny_classifier, tmp_path):
    """The tiny classifier's network, which expects input normalised by 0.1307/0.3081, as a TorchScript file."""
    path = tmp_path / "user.pt"
    torch.jit.save(torch.jit.script(tiny_classifier.network), str(path))
    return path


def explain(out: Path, *options: str) -> int:
    return main(["explain", "--dataset", "mnist", *RUN, *options, "--out", str(out)])


def test_torchscript_with_normalize_explains_as_the_python_wrapper_does(tiny_classifier, scripted, tmp_path, capsys):
    from vcex.pipeline import prepare, run_explain

    assert explain(tmp_path / "cli", "--classifier", str(scripted), "--normalize", "0.1307/0.3081") == 0
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["classifier"]["file"] == str(scripted.resolve()) and metrics["classifier"]["std"] == [0.3081]
    wrapper = Classifier(tiny_classifier.network, mean=[0.1307], std=[0.3081])
    bench = prepare("mnist", progress=False, classifier=wrapper)
    run_explain(bench, "attack", 4, "second", tmp_path / "python", progress=False, threshold=0.9, max_steps=30)
    cli, python = (load_file(str(tmp_path / d / "counterfactuals.safetensors")) for d in ("cli", "python"))
    assert torch.equal(cli["counterfactuals"], python["counterfactuals"])
    # without --normalize the same file sees unnormalised images: another classifier, other counterfactuals
    assert explain(tmp_path / "raw", "--classifier", str(scripted)) == 0
    raw = load_file(str(tmp_path / "raw" / "counterfactuals.safetensors"))
    assert not torch.equal(raw["counterfactuals"], cli["counterfactuals"])


def test_entry_point_with_weights(tiny_classifier, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    import user_model_factory

    torch.manual_seed(0)
    weights = tmp_path / "weights.safetensors"
    save_file(user_model_factory.make().state_dict(), str(weights))
    options = ["--classifier", "user_model_factory:make", "--weights", str(weights)]
    assert explain(tmp_path / "run", *options) == 0
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["classifier"]
    assert recorded["entry_point"] == "user_model_factory:make" and recorded["weights"] == str(weights.resolve())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.pt", "missing.pt does not exist"),
        (lambda tmp: "no_such_package.models:make", "cannot import module 'no_such_package.models'"),
    ],
)
def test_bad_classifier_gets_one_line(make, message, tmp_path, capsys):
    assert explain(tmp_path / "out", "--classifier", str(make(tmp_path))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_wrong_number_of_classes_is_refused_before_any_work(tmp_path, capsys):
    path = tmp_path / "two.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))), str(path))
    assert explain(tmp_path / "out", "--classifier", str(path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "returns 2 classes but the dataset has 10" in err[0]


def test_user_model_options_need_a_user_model(tmp_path, capsys):
    assert explain(tmp_path / "out", "--normalize", "0.5/0.5") == 2
    assert "--normalize go with your own --classifier" in capsys.readouterr().err


def test_benchmark_explains_the_user_model_and_says_so(scripted, tmp_path):
    out = tmp_path / "bench"
    options = ["--classifier", str(scripted), "--normalize", "0.1307/0.3081", "--methods", "pixel", "--quiet"]
    assert main(["benchmark", "--suite", "mnist", "--n", "4", "--out", str(out), *options]) == 0
    record = json.loads((out / "benchmark.json").read_text())
    assert record["data"]["classifier"]["file"] == str(scripted.resolve())
    assert "--classifier" in record["command"] and "--normalize 0.1307/0.3081" in record["command"]
    assert "your classifier `user.pt`" in (out / "benchmark.md").read_text()


def test_benchmark_refuses_a_zoo_task_name(tmp_path, capsys):
    assert main(["benchmark", "--suite", "mnist", "--classifier", "smiling", "--out", str(tmp_path), "--quiet"]) == 2
    assert "takes your own model" in capsys.readouterr().err


def test_global_records_the_user_model(scripted, tmp_path):
    out = tmp_path / "global"
    options = ["--classifier", str(scripted), "--normalize", "0.1307/0.3081", "--max-steps", "40", "--quiet"]
    assert main(["global", "--dataset", "mnist", "--n", "20", "--threshold", "0.9", "--out", str(out), *options]) == 0
    assert json.loads((out / "global.json").read_text())["classifier"]["file"] == str(scripted.resolve())


def test_the_documented_example_makes_a_model_that_explains(tmp_path, capsys):
    """examples/make_user_classifier.py, then the README's command on its file (fewer images and steps)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_user_classifier", TESTS.parent / "examples" / "make_user_classifier.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path = tmp_path / "user.pt"
    example.main(str(path))
    accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split(")")[0])
    assert accuracy > 0.8  # one epoch on 5,000 images: 0.94 when measured
    assert explain(tmp_path / "run", "--classifier", str(path), "--normalize", "0.1307/0.3081") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n"] == 4 and metrics["classifier"]["mean"] == [0.1307]
