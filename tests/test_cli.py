import json

import pytest
import torch
from safetensors.torch import load_file

from vcex.attribution import LocalAttribution
from vcex.cache import cache_dir
from vcex.cli import main
from vcex.errors import InputError
from vcex.explainers import CounterfactualResult
from vcex.models import load_classifier, zoo

REQUIRED_KEYS = {
    "method",
    "dataset",
    "n",
    "validity",
    "oracle_agreement",
    "knn_agreement",
    "l1",
    "l2",
    "realism",
    "seconds_per_cf",
    "passes_per_cf",
    "device",
    "versions",
}


@pytest.fixture
def tiny_recipes(shrink_profile):
    shrink_profile("mnist", zoo_epochs={"cnn": 2, "oracle": 1, "vae": 3, "im-ae": 2, "duq": 1})


@pytest.mark.slow
def test_explain_end_to_end_writes_metrics_and_counterfactuals(tiny_recipes, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "explain",
                "--dataset",
                "mnist",
                "--method",
                "attack",
                "--n",
                "6",
                "--target",
                "second",
                "--threshold",
                "0.9",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert REQUIRED_KEYS <= set(metrics)
    assert metrics["n"] == 6 and metrics["method"] == "attack" and metrics["dataset"] == "mnist"
    assert metrics["validity"] >= 0.5 and set(metrics["realism"]) == {"im1", "im2"}
    saved = load_file(str(out / "counterfactuals.safetensors"))
    classifier = load_classifier("mnist-cnn", progress=False)
    with torch.no_grad():
        before = classifier(saved["originals"]).argmax(1)
        after = classifier(saved["counterfactuals"]).argmax(1)
    flipped = (before != after) & saved["success"]
    assert int(flipped.sum()) == int(saved["success"].sum()) >= 3
    assert (out / "grid.png").stat().st_size > 0
    assert json.loads(capsys.readouterr().out)["n"] == 6

    # a rerun with the same settings resumes from the saved chunks instead of recomputing
    assert main(["explain", "--method", "attack", "--n", "6", "--threshold", "0.9", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_chunks"] == 1


def test_explain_with_automatic_per_class_thresholds(tiny_recipes, tmp_path):
    out = tmp_path / "auto"
    assert main(["explain", "--method", "attack", "--n", "6", "--threshold", "auto", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    thresholds = torch.tensor(metrics["threshold"])
    assert thresholds.shape == (10,) and bool(((thresholds >= 0.5) & (thresholds <= 0.998)).all())
    saved = load_file(str(out / "counterfactuals.safetensors"))
    assert torch.equal(saved["success"], saved["target_prob"] > thresholds[saved["target"]])


@pytest.mark.parametrize(("value", "message"), [("1.5", "strictly between 0 and 1"), ("high", "or 'auto'")])
def test_bad_threshold_is_refused_by_the_parser(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as stop:
        main(["explain", "--threshold", value, "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("method", ["pixel", "linear", "disc"])
def test_explain_baselines(tiny_recipes, tmp_path, method):
    out = tmp_path / method
    assert main(["explain", "--method", method, "--n", "4", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["method"] == method


def test_explain_attack_residual_starts_from_the_original(tiny_recipes, tmp_path):
    out = tmp_path / "residual"
    argv = ["explain", "--residual", "--n", "3", "--threshold", "0.9", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    saved = load_file(str(out / "counterfactuals.safetensors"))
    assert torch.equal(saved["reconstructions"], saved["originals"])
    assert json.loads((out / "metrics.json").read_text())["settings"]["residual"] is True


def test_explain_attack_whitened_saves_the_vaes_own_latents(tiny_recipes, tmp_path):
    out = tmp_path / "whitened"
    argv = ["explain", "--whiten", "--n", "4", "--threshold", "0.9", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["whiten"] is True and metrics["settings"]["lr"] == 0.1 and metrics["validity"] >= 0.5
    saved = load_file(str(out / "counterfactuals.safetensors"))
    vae = zoo.load_latent_model("mnist-vae", progress=False)
    with torch.no_grad():  # the whitened coordinates were mapped back: the VAE decodes them to the images
        decoded = vae.decode(saved["counterfactual_latents"])
        encoded = vae.encode(saved["originals"])
    assert torch.allclose(decoded, saved["counterfactuals"], atol=1e-4)
    assert torch.allclose(encoded, saved["original_latents"], atol=1e-4)


def test_explain_attack_from_refined_latents_starts_closer_to_the_image(tiny_recipes, tmp_path):
    errors = {}
    for steps in (0, 30):
        out = tmp_path / f"invert{steps}"
        argv = ["explain", "--invert-steps", str(steps), "--n", "4", "--threshold", "0.9", "--out", str(out)]
        assert main(argv + ["--quiet"]) == 0
        assert json.loads((out / "metrics.json").read_text())["invert_steps"] == steps
        saved = load_file(str(out / "counterfactuals.safetensors"))
        errors[steps] = float((saved["reconstructions"] - saved["originals"]).pow(2).mean())
    assert errors[30] < 0.9 * errors[0]
    # with --whiten the refined latents are whitened by the encoder's own statistics, and come back unwhitened
    out = tmp_path / "invert-whiten"
    argv = ["explain", "--invert-steps", "30", "--whiten", "--n", "4", "--threshold", "0.9", "--out", str(out)]
    assert main(argv + ["--quiet"]) == 0
    saved = load_file(str(out / "counterfactuals.safetensors"))
    vae = zoo.load_latent_model("mnist-vae", progress=False)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(saved["original_latents"]), saved["reconstructions"], atol=1e-4, rtol=0)
    assert float((saved["reconstructions"] - saved["originals"]).pow(2).mean()) < 0.9 * errors[0]


def test_explain_attack_in_bf16_records_its_precision(tiny_recipes, tmp_path):
    out = tmp_path / "bf16"
    argv = ["explain", "--precision", "bf16", "--n", "3", "--threshold", "0.9", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["precision"] == "bf16" and metrics["n"] == 3


def test_demo_writes_report(tiny_recipes, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "6", "--examples", "3", "--quiet"]) == 0
    text = (out / "report.html").read_text()
    assert "attack" in text and "pixel" in text and "linear" in text and "disc" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["method"] for m in metrics] == ["attack", "pixel", "linear", "disc"]
    # every method's folder is a finished vcex explain run, with its attributions, one row per counterfactual
    for record in metrics:
        run = json.loads((out / record["method"] / "run.json").read_text())
        assert run["fingerprint"] == record["fingerprint"] and run["request"]["n"] == 6
        assert record["attributions"]["file"] == "attributions.safetensors"
    local, _ = LocalAttribution.load(out / "attack" / "attributions.safetensors")
    assert len(local) == 6 and "thickness" in local.names
    # the strips list each counterfactual's top changes, and the global explanation of the attack's is shown
    assert "Each counterfactual&#x27;s top changes" in text and "1. " in text
    explanation = json.loads((out / "global" / "global.json").read_text())
    assert explanation["from_run"] == str((out / "attack").resolve())
    assert "<h2>Global explanation</h2>" in text
    for label, row in explanation["classes"].items():
        assert row["ranking"], label
        assert f"→ {label}" in text
    # a demo run again in the same folder reuses every method's chunks
    assert main(["demo", "--out", str(out), "--n", "6", "--examples", "3", "--quiet"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    chunks = [json.loads((out / m["method"] / "run.json").read_text())["chunks"] for m in again]
    assert [m["resumed_chunks"] for m in again] == chunks
    assert [m["validity"] for m in again] == [m["validity"] for m in metrics]


def test_demo_without_attributions_writes_none_and_says_why(tiny_recipes, tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--n", "4", "--examples", "2", "--no-attributions", "--quiet"]
    assert main(argv) == 0
    assert not (out / "attack" / "attributions.safetensors").exists() and not (out / "global").exists()
    text = (out / "report.html").read_text()
    assert "No attributions: turned off (--no-attributions)." in text
    assert "No global explanation: turned off (--no-attributions)." in text


@pytest.mark.slow
def test_explain_disc_with_the_zoo_duq_model(tiny_recipes, tmp_path):
    out = tmp_path / "disc-duq"
    argv = ["explain", "--method", "disc", "--consistency", "duq", "--n", "3", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["method"] == "disc"
    # the zoo trained and cached the DUQ model on first use (one epoch here: its accuracy is not the point)
    from vcex.models.duq import duq_network

    assert zoo.model_spec("mnist-duq").path.exists()
    duq = zoo.load_duq("mnist", progress=False)
    assert duq_network(duq) is not None and "test_accuracy" in duq.training_record


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "--dataset", "cifar", "--out", "x"], "unknown dataset"),
        (["explain", "--method", "magic", "--out", "x", "--n", "2"], "unknown method"),
        (["explain", "--n", "5000", "--out", "x"], "--n must lie"),
        (["explain", "--target", "12", "--n", "2", "--out", "x"], "out of range"),
        (["explain", "--consistency", "duq", "--n", "2", "--out", "x"], "does not use --consistency (for disc)"),
        (["explain", "--method", "pixel", "--residual", "--n", "2", "--out", "x"], "--residual (for attack)"),
        (["explain", "--method", "pixel", "--precision", "bf16", "--n", "2", "--out", "x"], "--precision (for attack)"),
        (["explain", "--method", "linear", "--whiten", "--n", "2", "--out", "x"], "--whiten (for attack)"),
        (["explain", "--method", "pixel", "--invert-steps", "5", "--n", "2", "--out", "x"], "--invert-steps (for"),
        (["explain", "--precision", "fp8", "--n", "2", "--out", "x"], "unknown precision 'fp8'"),
        (["explain", "--method", "disc", "--consistency", "magic", "--n", "2", "--out", "x"], "unknown consistency"),
        *(
            [(["explain", "--device", "cuda", "--n", "2", "--out", "x"], "no CUDA device")]
            if not torch.cuda.is_available()
            else []
        ),
    ],
)
def test_bad_arguments_give_one_line_errors(tiny_recipes, tmp_path, capsys, argv, message):
    argv = [a if a != "x" else str(tmp_path / "x") for a in argv]
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vcex: error:") and message in err[-1]
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("name", ["faces", "mnist"])
def test_datasets_preview_writes_a_grid(tmp_path, name):
    out = tmp_path / f"{name}.png"
    assert main(["datasets", "preview", name, "--out", str(out), "--n", "4", "--quiet"]) == 0
    from PIL import Image

    assert Image.open(out).size[0] > 4 * 28


def test_datasets_preview_reads_a_folder_of_class_folders(tmp_path, capsys):
    from PIL import Image

    for k, name in enumerate(("cat", "dog")):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 16), (100 * k, 50, i)).save(tmp_path / "pets" / name / f"{i}.png")
    out = tmp_path / "pets.png"
    assert main(["datasets", "preview", f"folder:{tmp_path / 'pets'}", "--out", str(out), "--quiet"]) == 0
    assert Image.open(out).size[0] > 2 * 20  # the test split: one image of each class
    assert main(["datasets", "preview", f"folder:{tmp_path / 'none'}", "--out", str(out), "--quiet"]) == 2
    assert "one subfolder of images per class" in capsys.readouterr().err


@pytest.mark.slow
def test_global_on_mnist_writes_scores_and_charts(tiny_recipes, tmp_path, capsys):
    out = tmp_path / "global"
    assert main(["global", "--n", "20", "--threshold", "0.9", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "global.json").read_text())
    assert record["valid_counterfactuals"] >= 10 and {p["name"] for p in record["probes"]} >= {"thickness", "slant"}
    assert record["reader"] == "latent"  # auto: digits are read by latent probes
    assert record["attack_settings"]["threshold"] == 0.9
    for explanation in record["classes"].values():
        assert explanation["n"] >= 1 and len(explanation["descriptors"]) == 7
        for row in explanation["descriptors"]:
            assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert (out / "global.html").exists() and list(out.glob("global-*.png"))
    assert "top_descriptors" in json.loads(capsys.readouterr().out)

    whitened = tmp_path / "global-whitened"
    assert main(["global", "--whiten", "--n", "20", "--threshold", "0.9", "--out", str(whitened), "--quiet"]) == 0
    record = json.loads((whitened / "global.json").read_text())
    assert record["whiten"] is True and record["valid_counterfactuals"] >= 10


@pytest.mark.slow
def test_global_reads_counterfactual_images_when_asked(tiny_recipes, shrink_profile, tmp_path, capsys, monkeypatch):
    shrink_profile("mnist", image_reader_epochs=1)
    out = tmp_path / "global-images"
    args = ["global", "--reader", "images", "--n", "20", "--threshold", "0.9", "--out", str(out), "--quiet"]
    assert main(args) == 0
    record = json.loads((out / "global.json").read_text())
    assert record["reader"] == "images" and record["reader_train_seconds"] > 0
    assert {r["name"] for r in record["image_readers"]} >= {"thickness", "slant"}
    usable = {r["name"] for r in record["image_readers"] if r["usable"]}
    assert {"area", "thickness"} <= usable  # measured on the images themselves: a CNN reads them easily
    for explanation in record["classes"].values():
        assert len(explanation["descriptors"]) == 7
    assert "image readers" in (out / "global.html").read_text()
    assert len(list(cache_dir().glob("readers-mnist-*.safetensors"))) == 1
    again = tmp_path / "global-images-again"  # the readers are loaded from the cache, not trained again
    monkeypatch.setattr("vcex.attribution.ImageAttributes.fit", lambda *a, **k: pytest.fail("trained twice"))
    assert main([*args[:-2], str(again), "--quiet"]) == 0
    assert json.loads((again / "global.json").read_text())["image_readers"] == record["image_readers"]
    with pytest.raises(SystemExit):
        main(["global", "--reader", "words", "--out", str(again)])


def test_explain_and_demo_on_a_folder_of_the_users_images(bar_folder, tmp_path, shrink_profile, capsys):
    shrink_profile("folder", folder_epochs=(40, 40))
    root = bar_folder(tmp_path / "bars", per_class=20)
    out = tmp_path / "run"
    argv = ["explain", "--dataset", f"folder:{root}", "--n", "4", "--threshold", "0.9", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == f"folder:{root}" and metrics["n"] == 4 and metrics["validity"] >= 0.5
    # the bars' morphometrics hold a constant (intensity): no probes, said, and the run stands
    assert "descriptor 'intensity' has only one class" in metrics["attributions"]["reason"]
    assert main(["demo", "--dataset", f"folder:{root}", "--n", "4", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    demo_report = (tmp_path / "demo" / "report.html").read_text()
    # ... and the demo stands without them, saying why in its report
    assert (
        "No attributions: no latent probes could be fitted" in demo_report and "No global explanation: " in demo_report
    )
    # the amortized explainer's fitted network is cached under a file-name-safe name too
    amortized = ["explain", "--dataset", f"folder:{root}", "--method", "amortized", "--n", "4", "--quiet"]
    assert main(amortized + ["--out", str(tmp_path / "amortized")]) == 0
    assert len(list(cache_dir().glob("amortized-folder-bars-*.safetensors"))) == 1
    capsys.readouterr()
    assert main(["models", "--dataset", f"folder:{root}", "--quiet"]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("folder:")]
    assert [row[:2] for row in listed[:4]] == [[f"folder:{root}-{role}", "cached"] for role in zoo.DATASET_ROLES[:4]]


def test_folder_datasets_the_commands_cannot_use_are_refused_before_training(tmp_path, capsys, monkeypatch):
    from PIL import Image

    def no_training(*args, **kwargs):
        raise AssertionError("nothing should train")

    monkeypatch.setattr(zoo, "fit", no_training)
    for k, name in enumerate(("red", "blue")):
        (tmp_path / "rgb" / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 16), (200 * (1 - k), i, 200 * k)).save(tmp_path / "rgb" / name / f"{i}.png")
    out = str(tmp_path / "out")
    assert main(["global", "--dataset", f"folder:{tmp_path / 'rgb'}@16", "--out", out, "--quiet"]) == 2
    assert "need grayscale images" in capsys.readouterr().err
    assert main(["explain", "--dataset", f"folder:{tmp_path / 'rgb'}", "--out", out, "--quiet"]) == 2
    assert "16x20 (height x width)" in capsys.readouterr().err


def test_global_on_a_folder_reads_the_users_descriptor_csv(bar_folder, tmp_path, shrink_profile, monkeypatch, capsys):
    shrink_profile("folder", folder_epochs=(40, 40))
    root = bar_folder(tmp_path / "bars", per_class=20)
    files = [(name, i) for name in ("horizontal", "vertical") for i in range(20)]
    rows = ["file,horizontal_bar,noise"]
    rows += [f"{name}/{i}.png,{int(name == 'horizontal')},{(7 * i) % 5}" for name, i in files]
    csv_path = tmp_path / "descriptors.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "global"
    argv = ["global", "--dataset", f"folder:{root}", "--descriptors", str(csv_path), "--n", "8", "--out", str(out)]
    assert main(argv + ["--threshold", "0.9", "--quiet"]) == 0
    record = json.loads((out / "global.json").read_text())
    assert record["descriptors"] == f"CSV {csv_path}"
    assert set(record["classes"]) <= {"horizontal", "vertical"} and record["valid_counterfactuals"] >= 1
    # refused before any model trains: a CSV missing images, and --descriptors for a built-in dataset
    monkeypatch.setattr(zoo, "fit", lambda *args, **kwargs: pytest.fail("nothing should train"))
    csv_path.write_text("\n".join(rows[:-3]) + "\n")
    capsys.readouterr()
    assert main(argv + ["--quiet"]) == 2
    assert "has no row for" in capsys.readouterr().err
    assert main(["global", "--descriptors", str(csv_path), "--out", str(out), "--quiet"]) == 2
    assert "for --dataset folder:PATH" in capsys.readouterr().err


def test_explain_the_users_own_image_files(tiny_recipes, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from vcex.data import load_dataset

    test = load_dataset("mnist", "test")
    (tmp_path / "mine").mkdir()
    for i in range(3):  # RGB and twice the size: read as the dataset's images are, 1 channel at 28x28
        pixels = (test.images[i, 0].numpy() * 255).astype(np.uint8)
        Image.fromarray(pixels).resize((56, 56)).convert("RGB").save(tmp_path / "mine" / f"{i}.png")
    out = tmp_path / "run"
    argv = ["explain", "--images", str(tmp_path / "mine" / "2.png"), str(tmp_path / "mine"), "--out", str(out)]
    assert main(argv + ["--threshold", "0.9", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 4  # the file, then the folder's three
    saved = load_file(str(out / "counterfactuals.safetensors"))
    assert saved["originals"].shape == (4, 1, 28, 28)
    assert (saved["originals"][1:] - test.images[:3]).abs().mean() < 0.05  # the digits, down-sized again
    assert torch.equal(saved["originals"][0], saved["originals"][3])
    assert main(["explain", "--images", str(tmp_path / "none.png"), "--out", str(out), "--quiet"]) == 2
    assert "none.png does not exist" in capsys.readouterr().err
    assert main(argv + ["--n", "2", "--quiet"]) == 2
    assert "drop --n" in capsys.readouterr().err


def strict_json(path):
    """The JSON in ``path``, refusing the bare NaN / Infinity that Python's json writes by default."""

    def refuse(constant):
        raise AssertionError(f"{path} holds a bare {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_chunk_or_metrics_from_another_version_resume_or_recompute(tiny_recipes, tmp_path, capsys):
    from vcex import pipeline

    out = tmp_path / "run"
    argv = ["explain", "--method", "pixel", "--n", "3", "--max-steps", "100", "--threshold", "0.9", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    first = strict_json(out / "metrics.json")
    (chunk,) = out.glob("chunks/*/00000000.safetensors.json")
    scalars = json.loads(chunk.read_text())
    chunk.write_text(json.dumps({**scalars, "from_a_later_vcex": {"x": 1}}))
    assert main([*argv, "--quiet"]) == 0  # an unknown key is ignored: the chunk is reused
    assert strict_json(out / "metrics.json")["resumed_chunks"] == 1
    chunk.write_text(json.dumps({k: v for k, v in scalars.items() if k != "threshold"}))
    assert main([*argv, "--quiet"]) == 0  # a missing one: the chunk is computed again
    again = strict_json(out / "metrics.json")
    assert again["resumed_chunks"] == 0 and again["validity"] == first["validity"]
    assert "threshold" in json.loads(chunk.read_text())
    # metrics.json never holds a bare NaN: a number that is not finite is written as null
    result = CounterfactualResult.load(out / "counterfactuals.safetensors")
    pipeline.write_outputs(tmp_path / "nan", result, {**again, "l1": float("nan"), "realism": {"im1": float("inf")}})
    written = strict_json(tmp_path / "nan" / "metrics.json")
    assert written["l1"] is None and written["realism"]["im1"] is None and written["n"] == 3
    capsys.readouterr()


def test_a_descriptor_csv_that_is_not_utf8_is_named_before_training(bar_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "fit", lambda *args, **kwargs: pytest.fail("nothing should train"))
    root = bar_folder(tmp_path / "bars", per_class=4)
    rows = ["file,size"] + [f"{name}/{i}.png,{i}" for name in ("horizontal", "vertical") for i in range(4)]
    csv_path = tmp_path / "größen.csv"
    csv_path.write_bytes(("\n".join(rows).replace("size", "größe") + "\n").encode("latin-1"))
    argv = ["global", "--dataset", f"folder:{root}", "--descriptors", str(csv_path), "--out", str(tmp_path / "g")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{csv_path} is not UTF-8 text: byte 7 (line 1)" in err[0] and "save it as UTF-8" in err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "--lr", "-1"], "argument --lr: expected a positive finite number"),
        (["explain", "--lr", "0"], "argument --lr: expected a positive finite number"),
        (["explain", "--lr", "nan"], "argument --lr: expected a positive finite number such as 0.05, got 'nan'"),
        (["explain", "--lr", "inf"], "argument --lr: expected a positive finite number"),
        (["explain", "--lr", "fast"], "argument --lr: expected a positive finite number"),
        (["explain", "--max-steps", "-1"], "argument --max-steps: expected a whole number >= 0, got -1"),
        (["explain", "--batch-size", "0"], "argument --batch-size: expected a whole number >= 1, got 0"),
        (["explain", "--n", "0"], "argument --n: expected a whole number >= 1"),
        (["explain", "--n", "2.5"], "argument --n: expected a whole number >= 1 or all, got '2.5'"),
        (["explain", "--invert-steps", "-1"], "argument --invert-steps: expected a whole number >= 0"),
        (["explain", "--method", "amortized", "--refine", "-2"], "argument --refine: expected a whole number >= 0"),
        (["global", "--max-steps", "-5"], "argument --max-steps: expected a whole number >= 0"),
        (["global", "--rounds", "0"], "argument --rounds: expected a whole number >= 1"),
        (["demo", "--examples", "0"], "argument --examples: expected a whole number >= 1"),
        (["benchmark", "--suite", "mnist", "--n", "0"], "argument --n: expected a whole number >= 1"),
    ],
)
def test_bad_numbers_are_refused_by_the_parser(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--out", str(tmp_path / "x")] if "--out" not in argv else argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("out", ["", "   "])
@pytest.mark.parametrize(
    "command",
    [["demo"], ["explain"], ["global"], ["benchmark", "--suite", "mnist"], ["datasets", "preview", "mnist"]],
)
def test_an_empty_out_is_refused_for_every_command_before_any_work(tmp_path, capsys, monkeypatch, command, out):
    from vcex import pipeline

    monkeypatch.setattr(pipeline, "prepare", lambda *args, **kwargs: pytest.fail("nothing should load"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*command, "--out", out])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --out: is empty, which would write into the current folder" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "messages"),
    [
        (
            ["explain", "--method", "linear", "--lr", "0.5", "--max-steps", "5"],
            [
                "--method linear does not use --lr (for attack, pixel, amortized, disc, stylespace-direction) or "
                "--max-steps (for attack, pixel, disc, stylespace-direction): drop them",
                "--method linear takes --threshold, --batch-size, --device, --space (and probe_c= from Python)",
            ],
        ),
        (
            ["explain", "--method", "pixel", "--space", "w"],
            ["--method pixel does not use --space (for attack, linear, gcd)"],
        ),
        (["explain", "--method", "disc", "--refine", "3"], ["does not use --refine (for amortized): drop it"]),
        (["explain", "--method", "amortized", "--lr", "0.3"], ["runs only with --refine N > 0"]),
        (["global", "--later-rounds", "same"], ["--later-rounds sets how explaining away's rounds 2 and on run"]),
        (["global", "--round-scores", "raw", "--later-rounds", "same"], ["--later-rounds and --round-scores set"]),
    ],
)
def test_options_the_method_does_not_use_are_refused_before_any_work(tmp_path, capsys, monkeypatch, argv, messages):
    from vcex import pipeline

    monkeypatch.setattr(pipeline, "prepare", lambda *args, **kwargs: pytest.fail("nothing should load"))
    assert main([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vcex: error:")
    assert all(message in err[0] for message in messages), err[0]


def test_build_explainer_passes_each_method_exactly_its_declared_options(tiny_recipes):
    from vcex import pipeline

    bench = pipeline.prepare("mnist", progress=False)
    explainer = pipeline.build_explainer("pixel", bench, lr=0.05, max_steps=7, batch_size=3, threshold=0.8)
    assert (explainer.lr, explainer.max_steps, explainer.batch_size, explainer.threshold) == (0.05, 7, 3, 0.8)
    disc = pipeline.build_explainer("disc", bench, lr=0.02, max_steps=9, consistency="none", space=None)
    assert (disc.lr, disc.max_steps, disc.consistency) == (0.02, 9, "none")
    with pytest.raises(InputError, match="--method linear does not use --lr"):
        pipeline.build_explainer("linear", bench, lr=0.5)
    with pytest.raises(InputError, match=r"--method attack does not use momentum= \(no method takes it\)"):
        pipeline.build_explainer("attack", bench, momentum=0.9)
    # a preset sets the threshold and the objective itself: not refused as options of the method
    paper = pipeline.build_explainer("pixel", bench, preset="paper")
    assert paper.threshold == 0.75


@pytest.mark.filterwarnings("ignore:.*close to chance")  # two epochs on 24 flat colours: the oracle may not learn
def test_explain_on_colour_images_says_there_are_no_descriptors_and_finishes(tmp_path, shrink_profile, capsys):
    from PIL import Image

    shrink_profile("folder", folder_epochs=(2, 2))
    for k, name in enumerate(("red", "blue")):
        (tmp_path / "rgb" / name).mkdir(parents=True)
        for i in range(12):
            colour = [20 * (i % 5)] * 3
            colour[2 * k] = 220
            Image.new("RGB", (16, 16), tuple(colour)).save(tmp_path / "rgb" / name / f"{i}.png")
    out = tmp_path / "run"
    argv = ["explain", "--dataset", f"folder:{tmp_path / 'rgb'}", "--n", "2", "--max-steps", "5", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "vcex: no attributions written: no descriptors:" in err and "3-channel images" in err
    assert json.loads((out / "metrics.json").read_text())["attributions"]["file"] is None
    assert not (out / "attributions.safetensors").exists()
    assert "No attributions: no descriptors" in (out / "report.html").read_text()
