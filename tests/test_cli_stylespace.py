"""``vcex stylespace probe`` on the shipped faces models: its files, and its one-line errors for bad input."""

import json

import pytest

from vcex.cli import main


def test_a_latent_model_without_stylespace_gets_one_line(capsys):
    code = main(["stylespace", "probe", "--dataset", "faces", "--latent-model", "mnist-vae", "--n", "4", "--out", "x"])
    error = capsys.readouterr().err
    assert code == 2
    assert "has no StyleSpace: it lacks styles(), decode_styles(), style_layout()" in error
    assert "Traceback" not in error


def test_a_dataset_without_attribute_oracle_is_refused(capsys, tmp_path):
    code = main(["stylespace", "probe", "--dataset", "mnist", "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 2
    assert "reads an attribute oracle, and --dataset mnist has none" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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
