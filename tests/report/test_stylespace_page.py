"""The StyleSpace probe's page: tables from the summary, one strip per factor, 'none' where a factor has no channel."""

import torch

from vcex.report.stylespace import write_probe_page


def row(name: str, kind: str) -> dict:
    return {
        "coordinate": name, "kind": kind, "purity": 0.8, "flip_share": 0.6,
        "factor_shift_minus": -0.3, "factor_shift_plus": 0.4,
    }  # fmt: skip


def test_page_has_both_tables_and_one_strip_per_factor(tmp_path):
    kinds = {
        kind: {
            "coordinates": 4,
            "purity_quantiles": {"min": 0.1, "p10": 0.2, "median": 0.3, "p90": 0.5, "max": 0.8},
            "purity_at_least_0.70": 1,
        }
        for kind in ("conv", "torgb")
    }
    best = {
        "red": {"conv": row("8.conv0:3", "conv"), "torgb": None, "any": row("8.conv0:3", "conv")},
        "blue": {"conv": None, "torgb": None, "any": None},
    }
    record = {
        "latent_model": "tiny", "dataset": "colours", "k": 3.0, "n": 5, "attribute_oracle": "colour oracle",
        "attribute_names": ["red", "blue"], "summary": {"kinds": kinds, "best_per_factor": best},
    }  # fmt: skip
    strips = {"red": (best["red"]["any"], torch.rand(3, 2, 3, 8, 8))}
    page = write_probe_page(tmp_path / "probe.html", record, strips).read_text()
    assert page.count("data:image/png") == 1
    assert "8.conv0:3" in page and "-0.30 / +0.40" in page
    assert page.count("<td>none</td>") == 3  # red's toRGB, blue's conv and toRGB
    assert "purity at least 0.70" in page
    assert "5 encoded test images" in page
    record["invert_steps"] = 100
    page = write_probe_page(tmp_path / "inverted.html", record, strips).read_text()
    assert "5 encoded and inverted (100 steps) test images" in page


def test_attributes_page_has_a_table_per_class_the_strips_and_the_unexplained_reason(tmp_path):
    from vcex.report.stylespace import write_attributes_page

    rows = [{"coordinate": "8.conv0:3", "direction": "max", "effect": 1.5, "factor": "red", "purity": 0.8}]
    record = {
        "method": "attfind", "classifier": "colour-cnn", "latent_model": "tiny", "n": 5,
        "attribute_oracle": "colour oracle", "attributes": {"1": rows}, "sufficiency": {"1": [0.4]},
        "unexplained": {"0": "no stable image is outside class 0: AttFind has nothing to move toward it"},
    }  # fmt: skip
    strip = torch.rand(2, 3, 3, 8, 8)
    page = write_attributes_page(
        tmp_path / "a.html", record, [("class 1, #1", strip, [["p=0.1"] * 3, ["p=0.9"] * 3])]
    ).read_text()
    assert "Toward class 1" in page and "8.conv0:3" in page and "[0.4]" in page
    assert "nothing to move toward it" in page
    assert page.count("data:image/png") == 1


def test_eigenfinds_page_states_its_step(tmp_path):
    from vcex.report.stylespace import write_attributes_page

    record = {
        "method": "eigenfind", "classifier": "faces-smiling-cnn", "latent_model": "faces-style", "n": 5,
        "attribute_oracle": "faces oracle", "attributes": {}, "alpha": 5.0, "alpha_unit": "w",
    }  # fmt: skip
    page = write_attributes_page(tmp_path / "e.html", record, []).read_text()
    assert "stepped by alpha = 5 W units" in page
    record.pop("alpha")
    assert "stepped by" not in write_attributes_page(tmp_path / "a.html", record, []).read_text()
