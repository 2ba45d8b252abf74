"""``vcex benchmark`` end to end on a few MNIST images, with one- to three-epoch models."""

import dataclasses
import json

import pytest
import torch

from vcex import pipeline
from vcex.cli import main
from vcex.explainers import CounterfactualResult
from vcex.explainers.base import Explainer
from vcex.models import load_classifier

ROWS = ["attack", "pixel", "amortized"]


@pytest.fixture
def tiny_recipes(shrink_profile):
    shrink_profile(
        "mnist",
        zoo_epochs={"cnn": 2, "oracle": 1, "vae": 3, "im-ae": 2, "duq": 1},
        amortized_fit={"epochs": 1, "batch_size": 64, "lr": 3e-3, "seed": 0},
    )


def metrics_targets(out, key: str) -> list[int]:
    """The distinct target classes of a finished benchmark row."""
    return CounterfactualResult.load(out / "rows" / key / "counterfactuals.safetensors").target.unique().tolist()


def test_benchmark_runs_every_row_on_the_same_targets_and_reuses_them(tiny_recipes, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    argv = ["benchmark", "--suite", "mnist", "--n", "4", "--out", str(out), "--methods", *ROWS, "--quiet"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == str(out / "benchmark.md")
    record = json.loads((out / "benchmark.json").read_text())
    assert record["suite"] == "mnist" and record["n"] == 4 and record["complete"] and record["reused"] == []
    assert record["machine"]["cpu_count"] >= 1 and record["versions"]["vcex"]
    assert "--methods attack pixel amortized" in record["command"]
    assert [row["key"] for row in record["rows"]] == ROWS
    for row in record["rows"]:
        assert row["status"] == "done" and not row["reused"]
        metrics = row["metrics"]
        assert 0.0 <= metrics["validity"] <= 1.0 and metrics["n"] == 4
        assert metrics["frechet"] >= 0 and metrics["row_seconds"] > 0
        assert metrics["torch_threads"] == torch.get_num_threads()
        assert 0.0 <= metrics["identity_preservation"] <= 1.0 and metrics["identity_chance"] == 0.25
        assert metrics["diversity"] is None or metrics["diversity"] >= 0
        assert set(metrics["diversity_per_class"]) == {str(t) for t in metrics_targets(out, row["key"])}
    assert record["rows"][2]["metrics"]["fit_seconds"] > 0  # amortized: fitted in this run
    thresholds = sorted({str(row["metrics"]["threshold"]) for row in record["rows"]})
    assert list(record["data"]["real_validity"]) == thresholds
    assert all(0.0 <= share <= 1.0 for share in record["data"]["real_validity"].values())

    # every row explained the same images toward the classifier's runner-up class, fixed up front
    images = pipeline.prepare("mnist", progress=False).test.images[:4]
    with torch.no_grad():
        runner_up = load_classifier("mnist-cnn", progress=False)(images).topk(2, dim=1).indices[:, 1]
    for key in ROWS:
        saved = CounterfactualResult.load(out / "rows" / key / "counterfactuals.safetensors")
        assert torch.equal(saved.target, runner_up) and torch.equal(saved.originals, images)

    markdown = (out / "benchmark.md").read_text()
    tables = [block.splitlines() for block in markdown.split("\n\n") if block.startswith("| method |")]
    table, more = [[line for line in lines if not line.startswith("|---")] for lines in tables]
    assert table[0].startswith("| method | validity") and "IM1" in table[0] and "MNAC" not in table[0]
    assert "| identity ↑ | identity (pixels) ↑ | diversity |" in table[0] and "(chance 0.250;" in markdown
    assert len(table) == 1 + len(ROWS) and all(line.startswith(f"| `{key}`: ") for line, key in zip(table[1:], ROWS))
    assert "KID" in more[0] and "IM2" in more[0] and len(more) == 1 + len(ROWS)
    for line, row in zip(more[1:], record["rows"]):
        m = row["metrics"]
        assert line.startswith(f"| `{row['key']}` |") and f"{m['kid']:.4f} ± {m['kid_std']:.4f}" in line
        assert m["knn_target_distance"] > 0 and m["kid_std"] >= 0
    assert "Command: `vcex benchmark --suite mnist" in markdown and "Columns:" in markdown
    threads = torch.get_num_threads()
    assert f"Timing conditions (ms / CF): every row with {threads} torch thread" in markdown

    # a rerun explains nothing: every row comes back from out/rows, bit for bit
    def refuse(*args, **kwargs):
        raise AssertionError("a finished row was explained again")

    monkeypatch.setattr(Explainer, "explain", refuse)
    saved_at = {key: (out / "rows" / key / "counterfactuals.safetensors").stat().st_mtime_ns for key in ROWS}
    assert main(argv) == 0
    again = json.loads((out / "benchmark.json").read_text())
    assert again["reused"] == ROWS and all(row["reused"] for row in again["rows"])
    assert [row["metrics"] for row in again["rows"]] == [row["metrics"] for row in record["rows"]]
    assert saved_at == {k: (out / "rows" / k / "counterfactuals.safetensors").stat().st_mtime_ns for k in ROWS}
    assert "reused from an earlier run" in (out / "benchmark.md").read_text()

    # a row saved before KID, the kNN distance, identity and diversity were recorded gets them from its saved
    # counterfactuals, with the values evaluate gave
    later = ("kid", "kid_std", "knn_target_distance", "identity_preservation", "diversity", "diversity_per_class")
    metrics_path = out / "rows" / "pixel" / "metrics.json"
    old = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({k: v for k, v in old.items() if k not in later}))
    assert main(argv) == 0
    completed = json.loads((out / "benchmark.json").read_text())["rows"][1]
    assert completed["reused"] and all(completed["metrics"][key] == old[key] for key in later)
    assert json.loads(metrics_path.read_text())["identity_preservation"] == old["identity_preservation"]


def test_benchmark_reruns_changed_rows_and_lists_failing_ones(tiny_recipes, tmp_path, monkeypatch):
    from vcex.benchmark import SUITES, Row, run_suite

    first = run_suite("mnist", 2, tmp_path, methods=["pixel"])
    assert first["rows"][0]["metrics"]["settings"]["max_steps"] == 1000
    # the same row key with another step budget (the explainer's settings differ, so the saved row is stale),
    # and a row whose method raises a VcexError: it is listed as failed and the run goes on
    rows = (
        Row("broken", "Attack in StyleSpace", "attack", options={"space": "style"}),
        Row("pixel", "Pixel attack", "pixel", options={"max_steps": 3}),
    )
    monkeypatch.setitem(SUITES, "mnist", dataclasses.replace(SUITES["mnist"], rows=rows))
    record = run_suite("mnist", 2, tmp_path)
    broken, pixel = record["rows"]
    assert record["failed"] == ["broken"] and broken["status"] == "failed" and "style generator" in broken["error"]
    assert record["reused"] == [] and pixel["status"] == "done" and pixel["metrics"]["settings"]["max_steps"] == 3
    assert pixel["metrics"]["mean_steps"] <= 3
    assert "`broken` failed: --space style needs a style generator" in (tmp_path / "benchmark.md").read_text()


def test_a_saved_row_from_another_version_is_reused_or_recomputed(tiny_recipes, tmp_path, monkeypatch):
    from vcex.benchmark import run_suite

    first = run_suite("mnist", 2, tmp_path, methods=["pixel"])
    scalars_path = tmp_path / "rows" / "pixel" / "counterfactuals.safetensors.json"
    scalars = json.loads(scalars_path.read_text())
    # a key this version does not know (written by a later one) is ignored: the row is reused as it is
    scalars_path.write_text(json.dumps({**scalars, "from_a_later_vcex": [1, 2]}))
    again = run_suite("mnist", 2, tmp_path, methods=["pixel"])
    assert again["reused"] == ["pixel"] and again["rows"][0]["metrics"] == first["rows"][0]["metrics"]
    # a key it needs is missing: the row is explained again, not a TypeError on every rerun
    scalars_path.write_text(json.dumps({k: v for k, v in scalars.items() if k != "threshold"}))
    recomputed = run_suite("mnist", 2, tmp_path, methods=["pixel"])
    assert recomputed["reused"] == [] and recomputed["failed"] == [] and recomputed["rows"][0]["status"] == "done"
    assert recomputed["rows"][0]["metrics"]["validity"] == first["rows"][0]["metrics"]["validity"]
    assert "threshold" in json.loads(scalars_path.read_text())


def test_real_validity_mixes_the_target_classes_real_images_as_the_targets_are():
    from types import SimpleNamespace

    from vcex.benchmark import real_validity

    # class 0's test images get p(0) of 0.9, 0.999, 0.999, 0.999; class 1's get p(1) of 0.5, 0.999
    p0 = torch.tensor([0.9, 0.999, 0.999, 0.999, 0.5, 0.001])
    images = torch.arange(6.0).view(6, 1, 1, 1)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])

    def classifier(x):
        p = p0[x.flatten().long()]
        return torch.stack([p, 1 - p], 1).log()  # logits whose softmax is (p, 1 - p)

    bench = SimpleNamespace(test=SimpleNamespace(images=images, labels=labels), classifier=classifier)
    targets = torch.tensor([0, 0, 0, 1])  # three quarters toward class 0
    shares = real_validity(bench, targets, [0.75, 0.998])
    assert shares == {"0.75": pytest.approx(0.75 * 1.0 + 0.25 * 0.5), "0.998": pytest.approx(0.75 * 0.75 + 0.25 * 0.5)}
    assert real_validity(bench, torch.tensor([2]), [0.5]) == {}  # no real image of the target class


def test_timing_conditions_name_the_rows_measured_under_each_thread_count():
    from vcex.benchmark import _timing_conditions

    def entry(key, threads, load):
        return {"key": key, "metrics": {"torch_threads": threads, "load_average": [load, 0.0, 0.0]}}

    rows = [entry("attack", 2, 1.5), entry("pixel", 1, 2.25), entry("disc", 2, 0.5)]
    assert _timing_conditions(rows) == (
        "Timing conditions (ms / CF): `pixel` with 1 torch thread, 1-minute load average 2.2-2.2 at the row's end; "
        "`attack`, `disc` with 2 torch threads, 1-minute load average 0.5-1.5 at the row's end."
    )
    # rows saved before the conditions were recorded say nothing rather than something wrong
    assert _timing_conditions([{"key": "attack", "metrics": {}}]) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suite", "cifar"], "unknown suite"),
        (["--suite", "mnist", "--methods", "attack", "magic"], "unknown method key"),
        (["--suite", "mnist", "--methods", "attack-style"], "unknown method key"),
        (["--suite", "mnist", "--n", "100000"], "--n must lie in"),
    ],
)
def test_benchmark_bad_arguments_give_one_line_errors(tiny_recipes, tmp_path, capsys, argv, message):
    assert main(["benchmark", *argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vcex: error:") and message in err[0]
    assert not (tmp_path / "x").exists()


def test_faces_tables_show_mnac_and_its_side_effect_count():
    from vcex.benchmark import render_table

    metrics = {
        "validity": 1.0, "oracle_agreement": 0.9, "knn_agreement": 0.5, "l1": 0.04, "l2": 2.0, "frechet": 3.0,
        "mnac": 1.42, "mnac_vs_reconstruction": 1.34, "mean_steps": 20.0, "passes_per_cf": 41.0,
        "forward_passes_per_cf": 21.0, "backward_passes_per_cf": 20.0, "seconds_per_cf": 0.07, "threshold": 0.998,
        "mean_target_prob": 0.999, "changed_fraction": 0.01, "latent_distance": 1.5, "kid": 0.0123,
        "kid_std": 0.002, "knn_target_distance": 4.5, "realism": None,
    }  # fmt: skip
    pixel = {**metrics, "mnac_vs_reconstruction": None, "latent_distance": 0.2, "kid": None}
    record = {
        "dataset": "faces-smiling",
        "data": {"label_attributes": ["smiling"]},
        "rows": [
            {"key": "attack", "label": "CounterfactualAttack in W", "status": "done", "metrics": metrics},
            {"key": "pixel", "label": "Pixel attack", "status": "done", "metrics": pixel},
        ],
    }
    lines = render_table(record)
    assert "MNAC ↓" in lines[0] and "IM1" not in lines[0]
    more = lines[lines.index("") + 1 :]
    assert "MNAC vs reconstruction ↓" in more[0] and "IM2" not in more[0]
    assert more[2] == "| `attack` | 0.999 | 0.010 | 1.50 | 1.34 | 0.0123 ± 0.0020 | 4.50 | 21.0 + 20.0 |"
    assert more[3] == "| `pixel` | 0.999 | 0.010 | 0.20 | – | – | 4.50 | 21.0 + 20.0 |"
    assert any("(smiling excluded)" in line for line in lines)


def test_benchmark_runs_on_a_folder_of_the_users_images(tiny_recipes, bar_folder, tmp_path, shrink_profile):
    shrink_profile("folder", folder_epochs=(20, 20))
    root = bar_folder(tmp_path / "bars", per_class=20)
    out = tmp_path / "bench"
    argv = ["benchmark", "--suite", f"folder:{root}", "--n", "6", "--out", str(out), "--methods", "attack", "pixel"]
    assert main(argv + ["--quiet"]) == 0
    record = json.loads((out / "benchmark.json").read_text())
    assert record["dataset"] == f"folder:{root}" and record["complete"]
    assert [row["key"] for row in record["rows"]] == ["attack", "pixel"]
    assert set(record["data"]["target_counts"]) <= {"horizontal", "vertical"}
    assert all(0 <= row["metrics"]["validity"] <= 1 for row in record["rows"])


def test_a_registered_method_without_a_row_gets_one_at_its_defaults(monkeypatch):
    from vcex.benchmark import SUITES, _every_method
    from vcex.explainers.registry import METHODS

    rows = SUITES["faces"].rows
    assert {row.method for row in rows} == set(METHODS)  # every method has its declared rows
    monkeypatch.setitem(METHODS, "newmethod", dataclasses.replace(METHODS["pixel"], name="newmethod"))
    extended = _every_method(rows)
    assert extended[: len(rows)] == rows and extended[-1].key == "newmethod" and extended[-1].method == "newmethod"
    with pytest.raises(AssertionError, match="unregistered methods: gone"):
        _every_method((*rows, dataclasses.replace(rows[0], method="gone")))
