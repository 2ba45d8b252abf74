"""``vcex gcd`` on the shipped MNIST models: its files, the page, and its one-line errors."""

import json

import pytest

from vcex.cli import main


def test_the_lig_baseline_and_source_rule_choices_are_the_libraries():
    from vcex import pipeline
    from vcex.attribution import bblig
    from vcex.cli import gcd, options
    from vcex.explainers import gcd as explainers_gcd

    assert gcd.BASELINES == bblig.BASELINES
    assert gcd.SELECTION_RULES == explainers_gcd.SELECTION_RULES
    assert options.READERS == pipeline.READERS


def test_a_source_index_outside_the_test_set_gets_one_line(capsys, tmp_path):
    code = main(["gcd", "--dataset", "mnist", "--source-index", "99999", "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "--source-index 99999 is outside" in error and "Traceback" not in error


# a small discovery (64 samples), a transfer to 30 test images and BB-LIG on 2: a minute on one CPU thread
@pytest.mark.slow
def test_gcd_writes_directions_transfer_curves_and_the_page(tmp_path, capsys):
    out = tmp_path / "gcd"
    options = ["--samples", "128", "--n", "30", "--lig", "2", "--h-directions", "1", "--threads", "1", "--quiet"]
    options += ["--lig-baseline", "paper_or_flip"]
    assert main(["gcd", "--dataset", "mnist", "--target", "9", "--out", str(out), *options]) == 0
    directions = json.loads((out / "directions.json").read_text())
    assert directions["direction_names"] == ["g0", "g20", "h1"] and directions["discovery_queries"] > 128
    # --samples as given, --radius the MNIST default (the public code's 1)
    assert (directions["settings"]["samples"], directions["settings"]["radius"]) == (128, 1.0)
    record = json.loads((out / "transfer.json").read_text())
    for name in ("g0", "g20"):
        curve = record["directions"][name]["curve"]
        assert len(curve["alpha"]) == len(curve["flip_rate"]) == 64
        assert record["directions"][name]["queries_per_image"] == 130
        # what the direction changes, by the digits' descriptors (morphometrics), where anything flipped
        found = record["directions"][name]["descriptors"]
        assert found.get("reason") == "no counterfactual flipped" or found["descriptors"] == "morphometrics"
    lig = record["bblig"]
    assert lig["estimator"] == "path_sum" and lig["baseline"] == "paper_or_flip"
    assert lig["paths_below_0.01"] + lig["paths_first_flip"] + lig["paths_none"] == lig["images"] == 2
    # a white-box classifier: the path sum's agreement with the white-box map is reported beside it
    assert {"cosine_to_white_box_median", "top10_overlap_with_white_box_median"} <= set(lig)
    page = (out / "gcd.html").read_text()
    assert page.count("<polyline") == 2 and "BB-LIG" in page and "top descriptors" in page
    assert (out / "directions.safetensors").exists()
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["flip_rate"]) == {"g0", "g20"}


@pytest.mark.parametrize(
    "options, message",
    [
        (["--dataset", "mnist", "--latent-model", "mnist-difae"], "no zoo latent model of that name"),
        (["--dataset", "mnist", "--latent-model", "faces-diffae"], "made for the faces images, not mnist's"),
        (["--dataset", "mnist", "--latent-model", "mnist-cnn"], "not a latent model"),
        (["--dataset", "faces", "--latent-model", "mnist-diffae"], "for faces use faces-eyeglasses-vae or"),
        (["--dataset", "mnist", "--decode-steps", "10"], "--decode-steps is for a diffusion autoencoder"),
        (["--dataset", "mnist", "--latent-model", "mnist-diffae", "--invert-steps", "5"], "drop --invert-steps"),
    ],
)
def test_a_wrong_latent_model_or_decode_steps_gets_one_line(capsys, tmp_path, options, message):
    code = main(["gcd", *options, "--black-box", "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and message in error and "Traceback" not in error
    if "mnist-difae" in options:  # the line names the zoo's latent models, the right one among them
        assert "mnist-diffae" in error and "faces-diffae" in error


# the shipped MNIST diffusion autoencoder at 2 DDIM steps: a small discovery, a transfer to 20 test images
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:GCD transfer")  # 2 DDIM steps: the direction may flip none; the run is checked
def test_gcd_runs_on_the_zoos_diffusion_autoencoder(tmp_path, capsys):
    out = tmp_path / "gcd"
    options = ["--samples", "128", "--n", "20", "--lig", "0", "--h-directions", "0", "--decode-steps", "2"]
    command = ["gcd", "--dataset", "mnist", "--latent-model", "mnist-diffae", "--black-box", "--target", "9"]
    assert main([*command, "--out", str(out), *options, "--threads", "1", "--quiet"]) == 0
    record = json.loads((out / "transfer.json").read_text())
    assert record["latent_model"] == "DiffusionAutoencoder" and record["latent_source"] == {"zoo": "mnist-diffae"}
    assert record["decode_steps"] == 2 and record["settings"]["decode_steps"] == 2
    assert record["settings"]["stochastic_code"] and record["black_box"] is True
    assert set(record["directions"]) == {"g0", "g20"} and record["directions"]["g0"]["eligible"] > 0
    assert json.loads(capsys.readouterr().out)["queries"] > 128


def test_a_negative_invert_steps_gets_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["gcd", "--dataset", "mnist", "--invert-steps", "-1", "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and "--invert-steps: expected a whole number >= 0, got -1" in error
    assert len(error.strip().splitlines()) == 1


# a small discovery and a transfer to 40 test images, without and with 30 inversion steps: ~20 s on one CPU thread
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:GCD transfer")  # a 64-sample direction may flip nothing; the encodings are checked
def test_invert_steps_refines_the_encodings_the_directions_move_from(tmp_path, capsys):
    from vcex.explainers.result import CounterfactualResult

    options = ["--dataset", "mnist", "--target", "9", "--samples", "64", "--n", "40", "--lig", "0"]
    options += ["--h-directions", "0", "--threads", "1", "--quiet"]
    runs = {}
    for steps in (0, 30):
        out = tmp_path / f"steps{steps}"
        assert main(["gcd", *options, "--invert-steps", str(steps), "--out", str(out)]) == 0
        directions = json.loads((out / "directions.json").read_text())
        assert directions["invert_steps"] == steps
        runs[steps] = (directions, CounterfactualResult.load(out / "counterfactuals.safetensors"))
    (plain, plain_result), (refined, refined_result) = runs[0], runs[30]
    # alpha's unit is the plain encoder's spread on the training images either way
    assert refined["unit"] == pytest.approx(plain["unit"], rel=1e-6)
    # the test images' latents moved: their reconstructions came closer to the images (the eligible images, whose
    # reconstruction keeps the class, may differ between the runs, so the mean error of each run's own)
    assert len(plain_result) > 0 and len(refined_result) > 0

    def error(result: CounterfactualResult) -> float:
        return float((result.reconstructions - result.originals).pow(2).mean())

    assert error(refined_result) < 0.9 * error(plain_result)


# two candidate sources among 40 validation images, a transfer to 20 test images: ~10 s on one CPU thread
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:GCD transfer")
def test_source_candidates_choose_the_source_by_validation(tmp_path, capsys):
    out = tmp_path / "gcd"
    options = ["--dataset", "mnist", "--target", "9", "--samples", "64", "--n", "20", "--lig", "0", "--quiet"]
    options += ["--h-directions", "0", "--threads", "1", "--source-candidates", "2", "--validation", "40"]
    assert main(["gcd", *options, "--out", str(out)]) == 0
    record = json.loads((out / "directions.json").read_text())
    selection = record["source_selection"]
    # the candidates are validation images (after the 20 test images), in the source's class; the chosen one is the
    # best by validation flip rate, and it is the record's source
    assert len(selection["candidates"]) == 2 and all(20 <= i < 60 for i in selection["candidates"])
    rates = selection["validation_flip_rates"]
    assert selection["chosen"] == record["source_index"] == selection["candidates"][rates.index(max(rates))]
    assert selection["validation_images"] == 40 and record["discovery_queries"] == selection["queries"]
    # MNIST's default rule; the candidates' descriptor changes are still read (latent probes) and recorded
    assert selection["rule"] == "flips" and selection["change_reader"] == "latent"
    assert any(change is not None for change in selection["validation_attribute_changes"])


@pytest.mark.filterwarnings("ignore:GCD transfer")
def test_descriptors_no_reader_fits_cost_only_the_rule_that_reads_them(tmp_path, capsys, monkeypatch):
    from vcex import pipeline
    from vcex.errors import InputError

    def unreadable(bench, reader="latent", besides_label=False):
        raise InputError("no probe beats chance on held-out images")

    monkeypatch.setattr(pipeline, "descriptor_change", unreadable)  # as a folder whose descriptors no reader fits
    options = ["--dataset", "mnist", "--target", "9", "--samples", "64", "--n", "20", "--lig", "0", "--quiet"]
    options += ["--h-directions", "0", "--threads", "1", "--source-candidates", "2", "--validation", "40"]
    # the flip rate reads no descriptors: the run stands, with no changes recorded
    assert main(["gcd", *options, "--out", str(tmp_path / "flips")]) == 0
    selection = json.loads((tmp_path / "flips" / "directions.json").read_text())["source_selection"]
    assert selection["rule"] == "flips" and selection["change_reader"] is None
    assert not any(selection["validation_attribute_changes"] or [])
    # fewest needs them: one line naming the reason and the way out
    code = main(["gcd", *options, "--source-rule", "fewest", "--out", str(tmp_path / "fewest")])
    error = capsys.readouterr().err
    assert code == 2 and "cannot read the descriptors: no probe beats chance" in error and "use flips" in error
    assert "Traceback" not in error


# the same with the rule "fewest": ~10 s on one CPU thread
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:GCD transfer")
@pytest.mark.parametrize(("reader", "source_reader"), [("auto", "latent"), ("images", "images")])
def test_the_fewest_rule_keeps_the_candidate_whose_flips_change_the_descriptors_least(
    tmp_path, capsys, shrink_profile, reader, source_reader
):
    # the first case leaves the rule to the dataset profile's default, made "fewest" here as it is for faces
    shrink_profile("mnist", image_reader_epochs=1, gcd_source_rule="fewest")
    out = tmp_path / "gcd"
    options = ["--dataset", "mnist", "--target", "9", "--samples", "64", "--n", "20", "--lig", "0", "--quiet"]
    options += ["--h-directions", "0", "--threads", "1", "--source-candidates", "3", "--validation", "40"]
    # tolerance 1: every candidate whose direction flips something is near enough; the least change wins
    options += ["--source-tolerance", "1", "--reader", reader, "--source-reader", source_reader]
    options += [] if source_reader == "latent" else ["--source-rule", "fewest"]
    assert main(["gcd", *options, "--out", str(out)]) == 0
    record = json.loads((out / "directions.json").read_text())
    # the directions' descriptor changes are read by --reader (auto: the latent probes, for digits), the rule's by
    # --source-reader
    directions = json.loads((out / "transfer.json").read_text())["directions"]
    assert (record["reader"], record["source_selection"]["change_reader"]) == (reader, source_reader)
    read_by = {found.get("reader") for found in (d["descriptors"] for d in directions.values())}
    assert read_by <= {"latent" if reader == "auto" else "images", None} and read_by - {None}
    selection = record["source_selection"]
    assert selection["rule"] == "fewest changes within 1"
    changes = selection["validation_attribute_changes"]
    read = [(change, i) for i, change in enumerate(changes) if change is not None]
    assert read and selection["chosen"] == record["source_index"] == selection["candidates"][min(read)[1]]
    assert "descriptor change" in (out / "gcd.html").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source-rule", "closest"], "add --source-candidates"),
        (["--source-candidates", "2", "--source-tolerance", "1.5"], "--source-tolerance"),
    ],
)
def test_source_rule_options_that_cannot_apply_get_one_line(capsys, tmp_path, extra, message):
    code = main(["gcd", "--dataset", "mnist", *extra, "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and message in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_gcd_sampling_defaults_follow_the_dataset_and_a_bad_radius_gets_one_line(capsys, tmp_path):
    from vcex.data.profiles import profile_for

    assert dict(profile_for("faces-smiling").gcd_sampling) == {"radius": 0.5, "samples": 1024}
    assert dict(profile_for("mnist").gcd_sampling) == {"radius": 1.0, "samples": 512}
    # the source rule measured on faces is their default; elsewhere the flip rate
    assert (profile_for("faces-smiling").gcd_source_rule, profile_for("mnist").gcd_source_rule) == ("fewest", "flips")
    for radius in ("0", "nan"):
        code = main(["gcd", "--dataset", "mnist", "--radius", radius, "--out", str(tmp_path / "out"), "--quiet"])
        error = capsys.readouterr().err
        assert code == 2 and "--radius must be a positive number" in error and "Traceback" not in error


def test_source_candidates_without_room_for_validation_get_one_line(capsys, tmp_path):
    options = ["--dataset", "mnist", "--source-candidates", "4", "--validation", "99999"]
    code = main(["gcd", *options, "--out", str(tmp_path / "out"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 2 and "lower --n or --validation" in error and "Traceback" not in error
