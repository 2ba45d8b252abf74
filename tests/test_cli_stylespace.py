"""``vcex stylespace probe`` on the shipped faces models: its files, and its one-line errors for bad input."""

import json
import warnings

import pytest
import torch

from vcex.cli import main


@pytest.fixture(scope="module")
def digit_generator(tmp_path_factory):
    """A tiny digits style generator trained once (one epoch on 16 digits) for the commands' digit tests."""
    style = tmp_path_factory.mktemp("style")
    train = ["train-style", "--dataset", "mnist", "--config", "tiny", "--n-train", "16", "--epochs", "1", "--quiet"]
    assert main([*train, "--out", str(style)]) == 0
    return style


def test_a_latent_model_without_stylespace_gets_one_line(capsys):
    code = main(["stylespace", "probe", "--dataset", "faces", "--latent-model", "mnist-vae", "--n", "4", "--out", "x"])
    error = capsys.readouterr().err
    assert code == 2
    assert "has no StyleSpace: it lacks styles(), decode_styles(), style_layout()" in error
    assert "Traceback" not in error


def test_a_dataset_without_a_style_generator_is_told_how_to_get_one(capsys, tmp_path):
    code = main(["stylespace", "probe", "--dataset", "fashion", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    assert "fashion has no style generator in the zoo: train one with vcex train-style" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_shipped_digit_generator_is_the_digits_default(tmp_path, capsys):
    from vcex.models.stylex import load_stylex, resolve_stylex

    model = load_stylex("mnist-stylex")
    assert model.conditioned and model.image_shape == (1, 28, 28) and resolve_stylex("mnist-stylex").is_dir()
    digits = torch.zeros(3, 1, 28, 28)
    digits[:, :, 6:22, 12:16] = 1.0  # three "1"s
    with torch.no_grad():
        assert float((model(digits) - digits).abs().mean()) < 0.1  # it reconstructs a stroke, not a blank
    out = tmp_path / "probe"
    args = ["stylespace", "probe", "--dataset", "mnist", "--n", "2", "--batch-size", "1024", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    record = json.loads((out / "probe.json").read_text())
    assert record["latent_model"] == "mnist-stylex" and record["invert_steps"] == 0
    capsys.readouterr()


def test_the_digits_probe_reads_the_oracle_one_vs_all_per_class(digit_generator, tmp_path, capsys):
    style = digit_generator
    out = tmp_path / "probe"
    args = ["stylespace", "probe", "--dataset", "mnist", "--latent-model", str(style), "--n", "3", "--quiet"]
    assert main([*args, "--invert-steps", "2", "--out", str(out)]) == 0
    record = json.loads((out / "probe.json").read_text())
    assert record["invert_steps"] == 2
    assert record["attribute_names"] == [str(digit) for digit in range(10)]
    assert record["attribute_oracle"] == "mnist-oracle (one-vs-all per class)"
    assert {row["factor"] for row in record["coordinates"]} <= set(record["attribute_names"])
    assert all(0 <= row["purity"] <= 1 for row in record["coordinates"])
    capsys.readouterr()


# every one of the shipped generator's 832 coordinates, twice, on two faces: seconds on one CPU thread
@pytest.mark.slow
def test_probe_writes_the_table_and_the_page(tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["stylespace", "probe", "--dataset", "faces", "--n", "2", "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "probe.json").read_text())
    kinds = record["summary"]["kinds"]
    assert kinds["conv"]["coordinates"] + kinds["torgb"]["coordinates"] == len(record["coordinates"])
    assert {row["kind"] for row in record["coordinates"]} == {"conv", "torgb"}
    assert set(record["summary"]["best_per_factor"]) == set(record["attribute_names"])
    assert "logit_change_plus" in record["coordinates"][0]
    page = (out / "probe.html").read_text()
    assert "Best channel per factor" in page and page.count("data:image/png") >= 1
    assert json.loads(capsys.readouterr().out)["out"] == str(out)


# 2 x 592 conv coordinates on three faces, then the probe on the found ones: seconds on one CPU thread
def oracle_names() -> set[str]:
    """The attribute oracle's names: the factors an attribute can be labelled with."""
    from vcex.models import load_model

    return set(load_model("faces-attributes", progress=False).attribute_names)


@pytest.mark.slow
def test_attfind_writes_ranked_attributes_with_factor_and_purity(tmp_path, capsys):
    out = tmp_path / "attfind"
    argv = ["stylespace", "attfind", "--dataset", "faces", "--n", "3", "--top", "2", "--out", str(out), "--quiet"]
    assert main([*argv, "--resume-dir", str(tmp_path / "resume")]) == 0
    record = json.loads((out / "attributes.json").read_text())
    assert record["method"] == "attfind" and record["coordinates_searched"] == 592  # toRGB left out
    explained = set(record["attributes"]) | set(record["unexplained"])
    assert explained == {"0", "1"}  # every class is either explained or says why not
    for target, rows in record["attributes"].items():
        assert 1 <= len(rows) <= 2 and ".torgb" not in rows[0]["coordinate"]
        assert rows[0]["factor"] in oracle_names()
        assert 0 < rows[0]["purity"] <= 1
        assert len(record["sufficiency"][target]) == len(rows)
    assert "data:image/png" in (out / "attributes.html").read_text()
    assert json.loads(capsys.readouterr().out)["out"] == str(out)


def test_eigenfind_cli_defaults_are_the_librarys():
    from vcex.attribution import stylespace_attributes as library
    from vcex.cli import build_parser

    args = build_parser().parse_args(["stylespace", "eigenfind", "--dataset", "faces", "--out", "x"])
    assert (args.alpha, args.alpha_unit) == (library.EIGEN_ALPHA, library.EIGEN_ALPHA_UNIT) == (3.0, "std")
    assert args.directions == library.EIGEN_DIRECTIONS and args.top == library.NUM_ATTRIBUTES
    published = ["--alpha", "5", "--alpha-unit", "w"]
    args = build_parser().parse_args(["stylespace", "eigenfind", "--dataset", "faces", *published, "--out", "x"])
    assert (args.alpha, args.alpha_unit) == (library.PUBLISHED_EIGEN_ALPHA, library.PUBLISHED_EIGEN_ALPHA_UNIT)


@pytest.mark.slow
def test_eigenfind_writes_directions_with_explained_share(tmp_path, capsys):
    out = tmp_path / "eigenfind"
    argv = ["stylespace", "eigenfind", "--dataset", "faces", "--n", "6", "--directions", "4", "--top", "2"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "attributes.json").read_text())
    # the default step is the measured 3 std (not the published 5 in W), and the record says so
    assert record["method"] == "eigenfind" and (record["alpha"], record["alpha_unit"]) == (3.0, "std")
    for target, rows in record["attributes"].items():
        assert 1 <= len(rows) <= 2 and {"eigenvector", "sign", "factor", "purity"} <= set(rows[0])
        assert 0 <= record["explained_share"][target] <= 1
    assert "Toward class" in (out / "attributes.html").read_text()
    assert record["invert_steps"] == 0 and record["device"] == "cpu"
    assert "6 encoded test images" in (out / "attributes.html").read_text()
    capsys.readouterr()


def test_attfind_and_eigenfind_search_inverted_styles(digit_generator, tmp_path, capsys):
    style = digit_generator
    common = ["--dataset", "mnist", "--latent-model", str(style), "--n", "4", "--top", "2", "--invert-steps", "2"]
    extras = {"attfind": ["--resume-dir", str(tmp_path / "resume")], "eigenfind": ["--directions", "3"]}
    for method, extra in extras.items():
        out = tmp_path / method
        assert main(["stylespace", method, *common, *extra, "--out", str(out), "--quiet"]) == 0
        record = json.loads((out / "attributes.json").read_text())
        assert record["method"] == method and record["invert_steps"] == 2
        assert "encoded and inverted (2 steps)" in (out / "attributes.html").read_text()
    capsys.readouterr()


def test_direction_writes_each_classs_coordinates_and_its_flip_curve(digit_generator, tmp_path, capsys):
    style = digit_generator
    out = tmp_path / "direction"
    argv = ["stylespace", "direction", "--dataset", "mnist", "--latent-model", str(style), "--n", "12", "--top", "3"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, "--n-fit", "64", "--sparsity", "0.5", "--out", str(out), "--quiet"]) == 0
    # the tiny generator may draw every digit as one class: the fit then says it reads the images' own classes
    assert all("fitted on the images' own classes" in str(w.message) for w in caught)
    record = json.loads((out / "attributes.json").read_text())
    assert record["method"] == "direction" and (record["mode"], record["sparsity"]) == ("mean", 0.5)
    assert set(record["attributes"]) | set(record["unexplained"]) == {str(digit) for digit in range(10)}
    assert record["attributes"]  # at least one digit has a direction
    for target, rows in record["attributes"].items():
        assert 1 <= len(rows) <= 3 and {"weight_in_stds", "effect", "factor", "purity"} <= set(rows[0])
        effects = [row["effect"] for row in rows]
        assert effects == sorted(effects, reverse=True)  # ranked by what they do to the class's logit
        whole = record["whole_direction"][target]
        assert whole["alphas"][0] == 0 and whole["flip_share"][0] == 0 and 0 <= whole["purity"] <= 1
    page = (out / "attributes.html").read_text()
    assert "the whole direction (every coordinate at once)" in page and "data:image/png" in page
    assert "Strips: the first test images outside the class" in page
    capsys.readouterr()
    code = main([*argv, "--sparsity", "2", "--out", str(out), "--quiet"])
    assert code == 2 and "--sparsity is the share of coordinates kept" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no CUDA device")
@pytest.mark.parametrize("method", ["probe", "attfind", "eigenfind"])
def test_a_missing_device_is_refused_before_loading(method, capsys):
    code = main(["stylespace", method, "--dataset", "faces", "--device", "cuda", "--n", "4", "--out", "x"])
    error = capsys.readouterr().err
    assert code == 2 and "no CUDA device" in error and "Traceback" not in error


@pytest.mark.parametrize("kind", ["missing", "other folder"])
def test_a_latent_model_path_that_is_no_generator_folder_is_refused_as_a_path(tmp_path, capsys, kind):
    path = tmp_path / "nothing" if kind == "missing" else tmp_path
    out = str(tmp_path / "out")
    code = main(["stylespace", "probe", "--dataset", "faces", "--latent-model", str(path), "--out", out, "--quiet"])
    error = capsys.readouterr().err
    reason = "no such file or folder" if kind == "missing" else "not a vcex train-style folder"
    assert code == 2 and f"{path}: {reason}" in error and "faces-style, faces-stylex" in error
    assert "Traceback" not in error and "faces-smiling-cnn" not in error  # only style generators are offered


def test_attfind_without_stylespace_gets_one_line(capsys):
    code = main(
        ["stylespace", "attfind", "--dataset", "faces", "--latent-model", "mnist-vae", "--n", "4", "--out", "x"]
    )
    error = capsys.readouterr().err
    assert code == 2 and "has no StyleSpace" in error and "Traceback" not in error
