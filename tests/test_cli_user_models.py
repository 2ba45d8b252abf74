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

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # the tests make TorchScript files as a user's are made; torch 2.13 deprecates making them, not loading them
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    # ... and ONNX files with the legacy exporter (dynamo=False: no onnxscript here)
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
    # the folders here are a few dozen flat bars: their oracles may stay near chance, which the CLI warns about
    pytest.mark.filterwarnings("ignore:.*close to chance:UserWarning"),
]
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
    # the ONNX file it writes beside (onnx, onnxscript and onnxruntime are in the test extra): the guide's command
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["user.onnx", "user.pt"]  # self-contained
    argv = ["explain", "--classifier", str(tmp_path / "user.onnx"), *NORMALIZE, *LINEAR, "--out", str(tmp_path / "box")]
    assert main(argv) == 0
    assert json.loads((tmp_path / "box" / "metrics.json").read_text())["classifier"]["black_box"]


def test_the_documented_latent_model_example_explains(tmp_path, capsys):
    """examples/make_user_latent_model.py (two epochs), then the guide's --latent-model command on its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_user_latent_model", TESTS.parent / "examples" / "make_user_latent_model.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    path = tmp_path / "latent.pt"
    example.main(str(path), epochs=2)
    error = float(capsys.readouterr().out.split("reconstruction L1 ")[1].split(")")[0])
    # measured: 0.069 after 2 epochs (0.047 after the example's 5); a blank image scores 0.131
    assert error < 0.09
    assert explain(tmp_path / "run", "--latent-model", str(path)) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["latent_model"]["file"] == str(path.resolve()) and metrics["validity"] >= 0.5


# --- black boxes (ONNX files, --black-box) and --latent-model ---

LINEAR = ["--method", "linear", "--n", "4", "--threshold", "0.9", "--quiet"]
NORMALIZE = ["--normalize", "0.1307/0.3081"]


def export_onnx(network: torch.nn.Module, path: Path) -> Path:
    torch.onnx.export(
        network, (torch.zeros(1, 1, 28, 28),), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False
    )
    return path


@pytest.fixture
def onnx_file(tiny_classifier, tmp_path):
    """The tiny classifier's network (expects normalised input) as an ONNX file."""
    return export_onnx(tiny_classifier.network, tmp_path / "user.onnx")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_onnx_file_is_explained_by_a_black_box_method_with_its_queries(onnx_file, tmp_path):
    out = tmp_path / "run"
    argv = ["explain", "--dataset", "mnist", "--classifier", str(onnx_file), *NORMALIZE, *LINEAR, "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classifier"]["black_box"] and metrics["classifier"]["file"] == str(onnx_file.resolve())
    # the edit queries the originals, their reconstructions and the counterfactuals: 3 to 4 images per image
    assert 3 <= metrics["queries_per_cf"] <= 4 and metrics["queries_counted_over"] == 4
    # a rerun reuses the chunk: no queries spent, none reported
    assert main(argv) == 0
    assert "queries_per_cf" not in json.loads((out / "metrics.json").read_text())


def test_a_torchscript_file_as_a_black_box_explains_as_the_onnx_file_does(scripted, onnx_file, tmp_path):
    options = [*NORMALIZE, *LINEAR]
    assert main(["explain", "--classifier", str(scripted), "--black-box", *options, "--out", str(tmp_path / "ts")]) == 0
    assert main(["explain", "--classifier", str(onnx_file), *options, "--out", str(tmp_path / "onnx")]) == 0
    ts, onnx = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ts", "onnx"))
    assert ts["classifier"]["black_box"] and ts["queries_per_cf"] == onnx["queries_per_cf"]
    assert ts["validity"] == onnx["validity"]


@pytest.mark.parametrize("method", ["attack", "pixel", "amortized", "disc"])
def test_gradient_methods_refuse_a_black_box_before_any_work(method, onnx_file, scripted, tmp_path, capsys):
    for classifier in (
        ["--classifier", str(onnx_file)],
        ["--classifier", str(scripted), "--black-box"],
        ["--black-box"],
    ):
        argv = ["explain", "--method", method, *classifier, "--quiet", "--out", str(tmp_path / "out")]
        assert main(argv) == 2
        line = one_line_error(capsys)
        assert f"--method {method}" in line and "needs the classifier's gradients" in line and "linear" in line
        assert not (tmp_path / "out").exists()


def test_global_refuses_a_black_box(onnx_file, tmp_path, capsys):
    assert main(["global", "--classifier", str(onnx_file), *NORMALIZE, "--out", str(tmp_path / "g"), "--quiet"]) == 2
    assert "--method attack (CounterfactualAttack) needs the classifier's gradients" in one_line_error(capsys)


def test_the_zoo_classifier_as_a_black_box(tmp_path):
    out = tmp_path / "zoo"
    assert main(["explain", "--dataset", "mnist", "--black-box", *LINEAR, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classifier"] == {"model": "mnist-cnn", "black_box": True} and metrics["queries_per_cf"] >= 3


def test_benchmark_runs_only_the_black_box_rows(onnx_file, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--suite", "mnist", "--n", "4", "--classifier", str(onnx_file), *NORMALIZE, "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    record = json.loads((out / "benchmark.json").read_text())
    # the rows of the methods that need no gradients
    assert [row["key"] for row in record["rows"]] == ["linear", "linear-paper", "gcd"]
    assert all(row["metrics"]["queries_per_cf"] >= 3 for row in record["rows"])
    assert main([*argv, "--methods", "pixel", "--quiet"]) == 2
    assert "--method pixel (PixelAttack) needs the classifier's gradients" in one_line_error(capsys)


def nan_network() -> torch.nn.Module:
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        network[1].weight.fill_(float("nan"))
    return network


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2)),
            "returns 2 classes but the dataset has 10",
        ),
        (
            lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Unflatten(1, (784, 1))),
            "answered shape (8, 784, 1)",
        ),
        (nan_network, "NaN or inf"),
    ],
)
def test_a_bad_onnx_model_is_refused_before_any_work(make, message, tmp_path, capsys):
    path = export_onnx(make(), tmp_path / "bad.onnx")
    assert main(["explain", "--classifier", str(path), *LINEAR, "--out", str(tmp_path / "out")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_latent_model_from_torchscript_and_entry_point(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    import user_model_factory

    torch.manual_seed(0)
    autoencoder = user_model_factory.make_latent()
    weights = tmp_path / "latent.safetensors"
    save_file(autoencoder.state_dict(), str(weights))
    scripted_latent = tmp_path / "latent.pt"
    torch.jit.save(torch.jit.script(autoencoder), str(scripted_latent))
    runs = {
        "script": ["--latent-model", str(scripted_latent)],
        "entry": ["--latent-model", "user_model_factory:make_latent", "--latent-weights", str(weights)],
    }
    for name, options in runs.items():
        assert explain(tmp_path / name, *options) == 0
    script, entry = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in runs)
    assert script["latent_model"]["file"] == str(scripted_latent.resolve())
    assert entry["latent_model"]["entry_point"] == "user_model_factory:make_latent"
    # the same autoencoder both ways: the same counterfactuals; the zoo's VAE gives others
    cfs = [load_file(str(tmp_path / d / "counterfactuals.safetensors"))["counterfactuals"] for d in runs]
    assert torch.equal(*cfs)
    assert explain(tmp_path / "zoo") == 0
    assert not torch.equal(cfs[0], load_file(str(tmp_path / "zoo" / "counterfactuals.safetensors"))["counterfactuals"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--latent-model", "user_model_factory:make_half_size_latent"], "failed on images of shape (8, 1, 28, 28)"),
        (["--latent-model", "user_model_factory:make"], "has no encode or decode method"),
        (["--latent-model", "user_model_factory:nowhere"], "has no function 'nowhere'"),
        (["--latent-weights", "w.safetensors"], "--latent-weights goes with --latent-model"),
    ],
)
def test_bad_latent_models_get_one_line(options, message, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    assert explain(tmp_path / "out", *options) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_a_latent_model_that_decodes_outside_the_image_range_is_refused(tmp_path, capsys):
    class Tanh(torch.nn.Module):
        @torch.jit.export
        def encode(self, images: torch.Tensor) -> torch.Tensor:
            return images.flatten(1)

        @torch.jit.export
        def decode(self, latents: torch.Tensor) -> torch.Tensor:
            return torch.tanh(latents.view(-1, 1, 28, 28) * 4 - 2)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.decode(self.encode(images))

    path = tmp_path / "tanh.pt"
    torch.jit.save(torch.jit.script(Tanh()), str(path))
    assert explain(tmp_path / "out", "--latent-model", str(path)) == 2
    assert "decodes to values in [-0.96" in one_line_error(capsys)


def test_a_folder_says_which_latent_model_it_trains_and_how_to_pass_ones_own(
    bar_folder, tmp_path, shrink_profile, capsys
):
    shrink_profile("folder", folder_epochs=(2, 2))
    root = bar_folder(tmp_path / "bars", per_class=6)
    argv = ["explain", "--dataset", f"folder:{root}", "--method", "linear", "--n", "2", "--threshold", "0.9", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "first")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "--latent-model" in line]
    assert len(said) == 1 and "training it now (cached at" in said[0] and str(root) in said[0]
    assert main([*argv, "--out", str(tmp_path / "again")]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "--latent-model" in line]
    assert len(said) == 1 and "using the one trained for it earlier" in said[0]


@pytest.mark.parametrize("form", ["onnx", "torchscript --black-box", "entry point --black-box"])
def test_every_black_box_form_is_checked_for_class_count_and_class_names(form, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TESTS))
    two = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))
    if form == "onnx":
        classifier = [str(export_onnx(two, tmp_path / "two.onnx"))]
    elif form.startswith("torchscript"):
        torch.jit.save(torch.jit.script(two), str(tmp_path / "two.pt"))
        classifier = [str(tmp_path / "two.pt"), "--black-box"]
    else:
        classifier = ["user_model_factory:make", "--black-box"]  # 10 classes: the --classes file is what is wrong
    classes = tmp_path / "classes.txt"
    classes.write_text("zero\none\ntwo\n")
    out = str(tmp_path / "out")
    assert main(["explain", "--classifier", *classifier, "--classes", str(classes), *LINEAR, "--out", out]) == 2
    line = one_line_error(capsys)
    if form.startswith("entry"):
        assert "--classes names 3 classes but the dataset and the classifier have 10" in line
    else:
        assert "returns 2 classes but the dataset has 10" in line
