"""The faces pipeline end to end, on a few hundred faces and one-epoch models (the real recipes take minutes)."""

import json

import pytest
from safetensors.torch import load_file

from vcex.cli import main
from vcex.data import faces_tasks
from vcex.data.profiles import profile_for
from vcex.models import zoo
from vcex.report.paths import ExplorerPaths

# each test trains its own tiny face models (tens of seconds to minutes on one CPU thread): `pytest -m "not slow"` skips
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*close to chance"),  # tiny_faces trains its models for a step or two
]


@pytest.fixture
def tiny_faces(monkeypatch, tmp_path_factory, shrink_profile):
    monkeypatch.setattr(faces_tasks, "FACES_TRAIN_SIZE", 400)
    monkeypatch.setattr(faces_tasks, "FACES_TEST_SIZE", 48)
    faces = profile_for("faces")
    shrink_profile(
        "faces",
        zoo_epochs={"cnn": 8, "oracle": 2, "vae": 1, "im-ae": 1, "attributes": 1, "factors": 1},
        style_recipe={**faces.style_recipe, "epochs": 2},
    )
    # the shipped generator belongs to the full recipe; these tests train their own
    monkeypatch.setattr(zoo, "SHIPPED_WEIGHTS", tmp_path_factory.mktemp("no-shipped-weights"))
    faces_tasks.load_faces.cache_clear()
    faces_tasks.load_face_table.cache_clear()
    yield
    faces_tasks.load_faces.cache_clear()
    faces_tasks.load_face_table.cache_clear()


@pytest.mark.filterwarnings("ignore:.*close to chance")  # the tiny recipes' one-epoch oracle
@pytest.mark.parametrize(
    ("space", "whiten", "reader"), [("w", False, "latent"), ("style", False, "latent"), ("style", True, "auto")]
)
def test_explain_faces_writes_metrics_with_mnac(tiny_faces, tmp_path, capsys, space, whiten, reader):
    out = tmp_path / space
    argv = ["explain", "--dataset", "faces", "--classifier", "smiling", "--space", space, "--n", "6"]
    argv += (["--whiten"] if whiten else []) + ["--reader", reader]
    assert main(argv + ["--threshold", "0.9", "--max-steps", "60", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "faces-smiling" and metrics["space"] == space and metrics["n"] == 6
    assert metrics["whiten"] is whiten
    assert metrics["label_attributes"] == ["smiling"]
    assert 0 <= metrics["mnac"] <= len(metrics["attribute_change_rate"]) - 1
    assert "smiling" in metrics["attribute_change_rate"]
    # one-epoch models rarely reach the threshold in 60 steps, but the attack must push toward the target
    saved = load_file(str(out / "counterfactuals.safetensors"))
    assert float(saved["target_prob"].mean()) > float(saved["original_prob"].mean())
    assert saved["counterfactuals"].shape == (6, 3, 32, 32) and (out / "grid.png").exists()
    assert "mnac" in json.loads(capsys.readouterr().out)
    # each face's changes in the factor table: by default (auto) read from the images by the image readers; by
    # latent probes in W when asked, where a StyleSpace attack's faces are encoded to W first
    attributions = metrics["attributions"]
    assert attributions["descriptors"] == "synthetic faces factor table" and "smiling" in attributions["names"]
    if reader == "auto":
        assert attributions["reader"] == "image readers"
        assert attributions["read"] == "the counterfactual images against the images they started from"
    else:
        latents = "the counterfactuals' latents" if space == "w" else "encoded originals and counterfactuals"
        assert attributions["reader"] == "latent probes" and attributions["read"] == latents
    assert load_file(str(out / "attributions.safetensors"))["scores"].shape == (6, len(attributions["names"]))


def test_amortized_on_faces_fits_in_w_and_refines(tiny_faces, tmp_path, shrink_profile):
    shrink_profile("faces", amortized_fit={"epochs": 2, "batch_size": 64, "lr": 3e-3, "seed": 0})
    out = tmp_path / "amortized"
    argv = ["explain", "--dataset", "faces", "--method", "amortized", "--refine", "40", "--n", "6"]
    assert main(argv + ["--threshold", "0.9", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "amortized" and metrics["refine_steps"] == 40 and metrics["fit_seconds"] > 0
    saved = load_file(str(out / "counterfactuals.safetensors"))
    # the network's shift is in W (the style generator's 128-d latent), and it pushes toward the target
    assert saved["counterfactual_latents"].shape == saved["original_latents"].shape == (6, 128)
    assert float(saved["target_prob"].mean()) > float(saved["original_prob"].mean())


# the tiny faces' classifier may read every decode as one class; the explainer then says it fits on the images' own
@pytest.mark.filterwarnings("ignore:StyleSpaceDirection. the classifier puts every decode")
def test_stylespace_direction_on_faces_writes_the_metrics_table_and_its_sweep(tiny_faces, tmp_path):
    out = tmp_path / "direction"
    argv = ["explain", "--dataset", "faces", "--method", "stylespace-direction", "--mode", "learned"]
    argv += ["--sparsity", "0.05", "--max-steps", "20", "--n", "6", "--threshold", "0.9"]
    assert main(argv + ["--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "stylespace-direction" and metrics["n"] == 6 and "mnac" in metrics
    assert metrics["settings"]["mode"] == "learned" and metrics["settings"]["sparsity"] == 0.05
    saved = load_file(str(out / "counterfactuals.safetensors"))
    # the offset lives in StyleSpace, where only the kept 5% of coordinates move (beyond float noise: the saved
    # original codes come from their own encoding pass)
    change = saved["counterfactual_latents"] - saved["original_latents"]
    assert change.shape[1] > 128 and int((change.abs().amax(0) > 1e-3).sum()) <= round(0.05 * change.shape[1])
    assert saved["sequence_prob"].shape == (6, 31)
    assert float(saved["sequence_prob"][:, -1].mean()) > float(saved["sequence_prob"][:, 0].mean())


def test_demo_on_faces_writes_the_shared_report(tiny_faces, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--dataset", "faces", "--out", str(out), "--n", "4", "--examples", "2", "--quiet"]) == 0
    text = (out / "report.html").read_text()
    assert "faces-smiling" in text and "MNAC" in text
    assert {record["method"] for record in json.loads((out / "metrics.json").read_text())} >= {"attack", "pixel"}
    # the faces' global explanation: the attack's counterfactuals beside the linear-edit baseline, read from images
    explanation = json.loads((out / "global" / "global.json").read_text())
    assert set(explanation["classes"]) == {"attack", "linear baseline"} and explanation["reader"] == "images"
    assert "<h2>Global explanation</h2>" in text and "linear baseline" in text


def test_global_on_faces_ranks_factors_for_the_attack_and_the_linear_baseline(tiny_faces, tmp_path, capsys):
    out = tmp_path / "global"
    argv = [
        "global",
        "--dataset",
        "faces",
        "--classifier",
        "smiling",
        "--n",
        "30",
        "--threshold",
        "0.6",
        "--max-steps",
        "300",
        "--rounds",
        "2",
    ]
    assert main(argv + ["--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "global.json").read_text())
    assert record["descriptors"] == "synthetic faces factor table" and record["valid_counterfactuals"] >= 1
    # explaining away: round 2 holds round 1's winning factor (a factor, e.g. smile for smiling and smile)
    away = record["explain_away"]
    first = away["winners"][0]
    assert away["rounds"][0]["held"] == [] and away["ranking"][0] == first
    assert first == next(iter(away["rounds"][0]["group_scores"]))
    assert away["later_rounds"] == "whitened"  # the default: rounds 2 and on in the whitened latent
    assert away["round_scores"] == "residual" and away["residual"]  # the default without --whiten
    if away["stopped"] is None:
        assert away["rounds"][1]["held"] == [first] and len(away["winners"]) == 2
        residual = away["rounds"][1]["residual_scores"]
        assert first not in residual and away["winners"][1] == next(iter(residual))
        assert len(away["rounds"][1]["mix"]) == 1 and away["rounds"][1]["mix"][0] >= 0
        assert len(list((out / "rounds").glob("round-*.safetensors"))) == 1  # kept for a rerun
        assert set(record["classes"]) == {"attack", f"round 2, holding {first}", "linear baseline"}
    else:  # one-epoch models may leave round 2 without a valid counterfactual; the record says so
        assert away["stopped"] == "round 2 had no valid counterfactuals"
        assert set(record["classes"]) == {"attack", "linear baseline"}
    assert "Explaining away" in (out / "global.html").read_text()
    assert "explaining away" in json.loads(capsys.readouterr().out)["top_descriptors"]
    names = {row["name"] for row in record["classes"]["attack"]["descriptors"]}
    assert {"smiling", "smile", "eyeglasses"} <= names
    for row in record["classes"]["attack"]["descriptors"]:
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert (out / "global.html").exists() and list(out.glob("global-*.png"))
    # for vcex serve: round 1's images with their local attributions as the image readers see them
    paths = ExplorerPaths.load(out / "explained")
    assert len(paths) == 30 and paths.kind == "latent" and {"smiling", "smile"} <= set(paths.local_names)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "--dataset", "faces", "--classifier", "attractive"], "unknown faces task"),
        (["explain", "--dataset", "mnist", "--classifier", "smiling"], "does not belong"),
        (["explain", "--dataset", "mnist", "--space", "style"], "needs a style generator"),
        (["explain", "--dataset", "faces", "--space", "pixels"], "unknown latent space"),
        (["explain", "--dataset", "mnist", "--method", "stylespace-direction"], "needs a style generator's StyleSpace"),
        (["global", "--dataset", "faces", "--reader", "latent", "--rounds", "2"], "use --reader images"),
        (["global", "--dataset", "mnist", "--rounds", "2"], "use --dataset faces"),
    ],
)
def test_bad_face_arguments_give_one_line_errors(tiny_faces, tmp_path, capsys, argv, message):
    monkey_free = argv + ["--n", "2", "--out", str(tmp_path / "x"), "--quiet"]
    assert main(monkey_free) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vcex: error:") and message in err[-1]


def test_global_options_are_checked_before_anything_trains():
    from vcex.errors import InputError
    from vcex.pipeline import check_global_options, resolve_round_scores

    assert check_global_options("faces", "auto", 3) == "images"
    with pytest.raises(InputError, match="unknown --round-scores 'best'; use one of auto, residual, raw"):
        check_global_options("faces", "auto", 3, round_scores="best")
    with pytest.raises(InputError, match="unknown --later-rounds"):
        check_global_options("faces", "auto", 3, later_rounds="pixels")
    with pytest.raises(InputError, match="--rounds must be an integer >= 1"):
        check_global_options("faces", "auto", 0)
    # the later rounds' settings with one round would be dropped without a word: refused
    with pytest.raises(InputError, match="--round-scores sets how explaining away's rounds 2 and on run"):
        check_global_options("faces", "auto", 1, round_scores="raw")
    assert check_global_options("faces", "auto", 3, later_rounds="same", round_scores="raw") == "images"
    assert (
        resolve_round_scores("auto", whiten=False) == "residual" and resolve_round_scores("auto", whiten=True) == "raw"
    )
    assert (
        resolve_round_scores("raw", whiten=False) == "raw"
        and resolve_round_scores("residual", whiten=True) == "residual"
    )


def test_a_one_round_faces_report_says_how_to_look_behind_the_top_route():
    from vcex.pipeline import _away_paragraph

    assert "--rounds 3" in _away_paragraph(None, faces=True)
    assert _away_paragraph(None, faces=False) == ""  # digits: explaining away needs a binary classifier
