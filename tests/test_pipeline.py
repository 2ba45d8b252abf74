"""Streamed explain runs (issue 30 item 2): chunks on disk, one result file, exact metrics, resume after SIGKILL,
--status, vcex report and vcex global --from-run. The shipped MNIST models, a few images, few steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vcex import pipeline
from vcex.attribution import LocalAttribution
from vcex.cli import main
from vcex.errors import InputError
from vcex.explainers.result import load_run
from vcex.report.paths import ExplorerPaths

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[1] / "src"
# metrics.json fields that measure the machine or the run's history, not the explanation
VOLATILE = {"seconds_per_cf", "wall_seconds", "attribution_seconds", "versions", "device", "resumed_chunks"}
# 12 images in chunks of 4, an attack that runs its 200 steps on most images (a chunk takes about a second)
KILLED = ["explain", "--method", "attack", "--n", "12", "--chunk-size", "4", "--max-steps", "200"]
KILLED += ["--threshold", "0.999", "--quiet", "--threads", "1"]


def stable(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in VOLATILE}


@pytest.mark.parametrize(("n", "size"), [(1, 8), (12, 8), (40, 10), (399, 100), (60_000, 100)])
def test_default_chunks_are_a_quarter_of_the_run_within_8_and_100(n, size):
    assert pipeline.default_chunk_size(n) == size


def test_a_run_killed_after_its_first_chunk_resumes_to_the_same_bytes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    child = subprocess.Popen([sys.executable, "-m", "vcex.cli", *KILLED, "--out", str(killed)], env=env)
    deadline = time.monotonic() + 600  # a loaded machine starts python slowly
    while not list(killed.glob("chunks/*/00000000.safetensors")):
        assert child.poll() is None and time.monotonic() < deadline, "the run ended before its first chunk"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it was killed"
    done = sorted(path.name for path in killed.glob("chunks/*/0*.safetensors"))
    assert 1 <= len(done) < 3

    assert main([*KILLED, "--out", str(killed)]) == 0
    assert main([*KILLED, "--out", str(whole)]) == 0
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["resumed_chunks"] == len(done)
    assert stable(resumed) == stable(json.loads((whole / "metrics.json").read_text()))
    same = (killed / "counterfactuals.safetensors").read_bytes() == (whole / "counterfactuals.safetensors").read_bytes()
    assert same
    assert not list(killed.glob("*.tmp")), "a finished run leaves no temporary file in its folder"


@pytest.fixture(scope="module")
def bench():
    return pipeline.prepare("mnist", progress=False)


def test_a_streamed_run_has_the_metrics_of_its_whole_result(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "COMPARISON_SAMPLE", 4)
    monkeypatch.setattr(pipeline, "EVALUATION_BLOCK", 3)
    out = tmp_path / "run"
    result, metrics = pipeline.run_explain(
        bench, "attack", 10, "second", out, chunk_size=4, progress=False, threshold=0.9, max_steps=20
    )
    assert len(list(out.glob("chunks/*/0*.safetensors"))) == 3 and metrics["chunk_size"] == 4
    whole = pipeline.evaluate_result(result, bench)
    compared = {"identity_preservation", "identity_preservation_pixels", "identity_chance", "identity_n"}
    compared |= {"diversity", "diversity_per_class"}
    for key in set(whole) - VOLATILE - compared:
        assert metrics[key] == whole[key], key
    # identity and diversity on the evenly spaced sample: rows 0, 3, 6, 9
    assert metrics["comparison_sample"]["n"] == 4 and metrics["identity_n"] == 4
    sample = pipeline.evaluate_result(result.select(torch.tensor([0, 3, 6, 9])), bench)
    assert metrics["identity_preservation"] == sample["identity_preservation"]
    assert torch.equal(load_run(out, rows=slice(2, 7)).counterfactuals, result.counterfactuals[2:7])


def test_status_says_how_far_each_run_is_and_which_one_the_arguments_ask_for(bench, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["explain", "--method", "attack", "--n", "10", "--chunk-size", "4", "--max-steps", "5", "--out", str(out)]
    assert main([*args, "--status"]) == 0
    assert "no run of these arguments" in capsys.readouterr().out and not out.exists()
    assert main([*args, "--quiet"]) == 0
    other = ["explain", "--method", "linear", "--n", "10", "--chunk-size", "4", "--out", str(out)]
    assert main([*other, "--quiet"]) == 0
    # a chunk of the attack's run lost: the run is no longer whole
    (attack_run,) = [p.parent.name for p in out.glob("chunks/*/run.json") if '"attack"' in p.read_text()]
    (out / "chunks" / attack_run / "00000004.safetensors").unlink()
    capsys.readouterr()
    assert main([*args, "--status"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    (mine,) = [line for line in lines if "<- these arguments" in line]
    assert mine.startswith(f"{attack_run}: 2/3 chunks, 6/10 images, last write 20")
    (theirs,) = [line for line in lines if line is not mine]
    assert "3/3 chunks, 10/10 images" in theirs and "(finished)" in theirs and "linear on 10 mnist test" in theirs


def test_report_rebuilds_a_runs_files_and_global_reads_its_counterfactuals(bench, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["explain", "--method", "attack", "--n", "24", "--threshold", "0.9", "--max-steps", "40", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    first = json.loads((out / "metrics.json").read_text())
    for name in ("metrics.json", "grid.png", "report.html"):
        (out / name).unlink()
    assert main(["report", str(out), "--quiet"]) == 0
    rebuilt = json.loads((out / "metrics.json").read_text())
    assert stable(rebuilt) == stable(first) and "wall_seconds" not in rebuilt
    assert (out / "grid.png").stat().st_size > 0 and "attack" in (out / "report.html").read_text()
    # the attributions are read from their file, not computed again, and shown as the run showed them
    assert rebuilt["attributions"] == first["attributions"] and 'class="changes"' in (out / "report.html").read_text()

    capsys.readouterr()
    assert main(["global", "--dataset", "fashion", "--from-run", str(out), "--out", str(tmp_path / "g")]) == 2
    assert "explained mnist, not fashion" in capsys.readouterr().err
    assert main(["global", "--from-run", str(out), "--max-steps", "3", "--out", str(tmp_path / "g")]) == 2
    assert "--max-steps" in capsys.readouterr().err
    assert main(["global", "--from-run", str(out), "--out", str(tmp_path / "g"), "--quiet"]) == 0
    record = json.loads((tmp_path / "g" / "global.json").read_text())
    assert record["n"] == 24 and record["valid_counterfactuals"] == round(first["validity"] * 24)
    assert record["from_run"] == str(out.resolve()) and record["attack_settings"]["max_steps"] == 40
    # the run's images for vcex serve, their paths decoded by the command's models, with their local attributions
    paths = ExplorerPaths.load(tmp_path / "g" / "explained")
    assert (paths.kind, len(paths), paths.local_scores.shape[1]) == ("latent", 24, len(record["probes"]))


def test_report_of_a_folder_without_a_finished_run_is_one_line(tmp_path, capsys):
    (tmp_path / "chunks").mkdir()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished vcex explain run" in err and "rerun the same" in err


def test_n_all_counts_every_image_of_the_split_asked_for(tmp_path, capsys):
    from vcex.data import load_dataset

    for split in ("train", "test"):
        argv = ["explain", "--method", "linear", "--n", "all", "--split", split, "--out", str(tmp_path), "--status"]
        assert main(argv) == 0
        assert f"(0 of {len(load_dataset('mnist', split))} images done)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["explain", "--n", "most", "--out", str(tmp_path)])
    assert "a whole number >= 1 or all, got 'most'" in capsys.readouterr().err


MORPHOMETRICS = ["thickness", "length", "slant", "width", "height", "area", "intensity"]


def test_explain_writes_every_counterfactuals_ranked_attributions_and_shows_them(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "EVALUATION_BLOCK", 3)  # attributions are read from the run's file in blocks too
    out = tmp_path / "run"
    result, metrics = pipeline.run_explain(
        bench, "attack", 10, "second", out, chunk_size=4, progress=False, threshold=0.9, max_steps=20
    )
    local, record = LocalAttribution.load(out / pipeline.ATTRIBUTIONS_FILE)
    assert len(local) == 10 and record["fingerprint"] == metrics["fingerprint"] and local.names == MORPHOMETRICS
    assert metrics["attributions"]["read"] == "the counterfactuals' latents"
    assert metrics["attributions"]["names"] == MORPHOMETRICS and metrics["attribution_seconds"] >= 0
    # each row against its own original, from the attack's own latents, as vcex global reads them
    probes, source = pipeline.latent_probes(bench)
    expected = probes.probabilities(result.counterfactual_latents) - probes.probabilities(result.original_latents)
    torch.testing.assert_close(local.scores, expected)
    torch.testing.assert_close(pipeline.counterfactual_attributions(bench, result, probes).scores, local.scores)
    assert source == "morphometrics"
    assert float(local.scores.abs().max()) > 0.1  # the counterfactuals do change their descriptors
    # rank 1, 2, ... by decreasing |change| among the usable descriptors
    for scores, ranks in zip(local.scores, local.ranks()):
        by_rank = scores[local.usable][ranks[local.usable].argsort()].abs()
        assert sorted(ranks[local.usable].tolist()) == list(range(1, int(local.usable.sum()) + 1))
        assert bool((by_rank[:-1] >= by_rank[1:]).all())
    text = (out / "report.html").read_text()
    first = ", ".join(f"{row['rank']}. {row['name']} {row['change']:+.2f}" for row in local.ranked(3)[0])
    assert first.replace("-", "−") + "</span>" in text and text.count('class="changes"') == 8
    paths = ExplorerPaths.load(out)  # vcex serve shows them too
    assert paths.local_names == MORPHOMETRICS and torch.equal(paths.local_scores, local.scores)


def test_a_method_without_latents_gets_its_images_encoded(bench, tmp_path):
    _, metrics = pipeline.run_explain(bench, "pixel", 3, "second", tmp_path, progress=False, max_steps=10)
    assert metrics["attributions"]["read"] == "encoded originals and counterfactuals"
    assert len(LocalAttribution.load(tmp_path / pipeline.ATTRIBUTIONS_FILE)[0]) == 3


def test_a_resumed_run_keeps_its_attributions_whole_and_turning_them_off_removes_them(bench, tmp_path, capsys):
    settings = {"chunk_size": 4, "progress": False, "threshold": 0.9, "max_steps": 20}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    pipeline.run_explain(bench, "attack", 12, "second", whole, **settings)
    pipeline.run_explain(bench, "attack", 12, "second", resumed, **settings)
    # what a run killed after its first two chunks leaves: the third chunk and the run folder's files are missing
    (chunk_dir,) = resumed.glob("chunks/*/")
    (chunk_dir / "00000008.safetensors").unlink()
    for name in ("counterfactuals.safetensors", pipeline.ATTRIBUTIONS_FILE, "run.json", "metrics.json"):
        (resumed / name).unlink()
    _, metrics = pipeline.run_explain(bench, "attack", 12, "second", resumed, **settings)
    saved = (whole / pipeline.ATTRIBUTIONS_FILE).read_bytes()
    assert metrics["resumed_chunks"] == 2 and (resumed / pipeline.ATTRIBUTIONS_FILE).read_bytes() == saved
    _, metrics = pipeline.run_explain(bench, "attack", 12, "second", resumed, **settings)  # all chunks reused
    assert metrics["resumed_chunks"] == 3 and (resumed / pipeline.ATTRIBUTIONS_FILE).read_bytes() == saved
    assert len(LocalAttribution.load(resumed / pipeline.ATTRIBUTIONS_FILE)[0]) == 12  # never appended to

    argv = ["explain", "--n", "12", "--chunk-size", "4", "--threshold", "0.9", "--max-steps", "20"]
    assert main([*argv, "--out", str(resumed), "--quiet", "--no-attributions"]) == 0
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["resumed_chunks"] == 3 and metrics["attributions"]["reason"] == "turned off (--no-attributions)"
    assert not (resumed / pipeline.ATTRIBUTIONS_FILE).exists() and ExplorerPaths.load(resumed).local_scores is None
    assert "No attributions: turned off (--no-attributions)." in (resumed / "report.html").read_text()
    assert "no attributions" not in capsys.readouterr().err  # asked for: nothing to warn about


def test_colour_folders_have_no_descriptors_and_their_runs_say_so_without_failing(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    for name in ("red", "blue"):
        (tmp_path / "rgb" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (200, 10 * i, 0) if name == "red" else (0, 10 * i, 200)).save(
                tmp_path / "rgb" / name / f"{i}.png"
            )
    dataset = f"folder:{tmp_path / 'rgb'}"
    # nothing but the dataset is read: no probe, no model
    record = pipeline.write_run_attributions(SimpleNamespace(dataset=dataset), tmp_path, "abc")
    assert record["file"] is None and "3-channel images" in record["reason"]
    # nor does GCD's "fewest" rule get a reader of their changes
    with pytest.raises(InputError, match="3-channel images"):
        pipeline.descriptor_change(SimpleNamespace(dataset=dataset))
    assert not (tmp_path / pipeline.ATTRIBUTIONS_FILE).exists()
    assert pipeline.no_descriptors_reason("mnist") is None


def test_descriptor_change_sums_each_attributes_largest_change_once(bench, tmp_path):
    result, _ = pipeline.run_explain(
        bench, "attack", 6, "second", tmp_path, progress=False, threshold=0.9, max_steps=20, attributions=False
    )
    change = pipeline.descriptor_change(bench)(result)
    local = pipeline.counterfactual_attributions(bench, result)
    # digits: every morphometric is its own attribute
    assert torch.allclose(change, local.scores[:, local.usable].abs().sum(1), atol=1e-6)
    # faces: a continuous factor's two descriptors (factor and label) count once, a binary factor's one once
    names = ["smiling", "lipstick", "smile", "eyes_open", "factor:bangs", "eye_openness", "bangs"]
    assert pipeline.descriptor_groups(names, faces=True) == [[0, 2], [1], [3, 5], [4, 6]]
    assert pipeline.descriptor_groups(names[:2], faces=False) == [[0], [1]]


def test_descriptor_change_besides_the_label_leaves_the_classes_own_attribute_out(monkeypatch):
    from types import SimpleNamespace

    from vcex.attribution import LocalAttribution

    names = ["smiling", "lipstick", "smile", "eyes_open", "eye_openness", "beard"]
    scores = torch.tensor([[0.5, -0.2, 0.4, 0.1, 0.3, 0.05], [-0.1, 0.0, -0.3, 0.2, 0.0, 0.0]])
    usable = torch.tensor([True, True, True, True, True, False])  # beard's reader is not usable: never counted
    zeros = torch.zeros_like(scores)
    local = LocalAttribution(scores, names, usable, {"beard": "chance"}, zeros, zeros, torch.ones(6), torch.ones(6))
    monkeypatch.setattr(pipeline, "local_reader", lambda bench, reader="latent", **_: ((lambda result: local), "x"))
    bench = SimpleNamespace(dataset="faces-smiling", label_attributes=("smiling",))
    result = None  # the reader above ignores it
    # every attribute once (smile: the larger of smiling and smile), then the same without the smile
    everything = pipeline.descriptor_change(bench)(result)
    besides = pipeline.descriptor_change(bench, besides_label=True)(result)
    assert torch.allclose(everything, torch.tensor([0.5 + 0.2 + 0.3, 0.3 + 0.0 + 0.2]))
    assert torch.allclose(besides, torch.tensor([0.2 + 0.3, 0.0 + 0.2]))
    # a classifier whose label is no face attribute of the table loses nothing
    other = SimpleNamespace(dataset="faces-smiling", label_attributes=())
    assert torch.allclose(pipeline.descriptor_change(other, besides_label=True)(result), everything)


def test_descriptor_change_reads_images_when_asked(bench, tmp_path, shrink_profile):
    shrink_profile("mnist", image_reader_epochs=1)
    result, _ = pipeline.run_explain(
        bench, "attack", 5, "second", tmp_path, progress=False, threshold=0.9, max_steps=20, attributions=False
    )
    change = pipeline.descriptor_change(bench, reader="images")(result)
    found = pipeline.training_descriptors(bench)
    readers = pipeline.image_readers("mnist", found.table(), found.images, progress=False)
    local = readers.local(result)  # each counterfactual against its reconstruction
    assert change.shape == (5,)
    assert torch.allclose(change, local.scores[:, local.usable].abs().sum(1), atol=1e-5)
    # a direction's attributions read by the same image readers
    goal = int(result.target[0])
    flipped = result.select(result.success)
    by_images = pipeline.direction_attributions(bench, result, goal, k=2, reader="images")
    sign = torch.where(flipped.target == goal, 1.0, -1.0)[:, None]
    mean = (readers.local(flipped).scores * sign).mean(0)
    assert by_images["reader"] == "images" and by_images["counterfactuals"] == len(flipped) > 0
    for item in by_images["top"]:
        assert item["change"] == pytest.approx(float(mean[local.names.index(item["name"])]), abs=1e-4)
    # "auto" is the latent probes for digits (as vcex global's), an unknown reader is refused by name
    assert torch.allclose(
        pipeline.descriptor_change(bench, reader="auto")(result), pipeline.descriptor_change(bench)(result)
    )
    with pytest.raises(InputError, match="unknown reader 'pixels'"):
        pipeline.descriptor_change(bench, reader="pixels")


def test_a_directions_attributions_are_its_flips_mean_change_signed_its_own_way(bench, tmp_path):
    result, _ = pipeline.run_explain(
        bench, "attack", 8, "second", tmp_path, progress=False, threshold=0.9, max_steps=20, attributions=False
    )
    goal = int(result.target[0])
    found = pipeline.direction_attributions(bench, result, goal, k=3)
    flipped = result.select(result.success)
    local = pipeline.counterfactual_attributions(bench, flipped)
    # rows moved to the goal count as they are, the others (moved back along -d) negated
    sign = torch.where(flipped.target == goal, 1.0, -1.0)[:, None]
    mean = (local.scores * sign).mean(0)
    assert found["counterfactuals"] == len(flipped) > 0 and found["descriptors"] == "morphometrics"
    assert (
        len(found["top"]) == 3
        and [item["name"] for item in found["top"]][0]
        == local.names[int(torch.where(local.usable, mean.abs(), -1.0).argmax())]
    )
    for item in found["top"]:
        assert item["change"] == pytest.approx(float(mean[local.names.index(item["name"])]), abs=1e-4)
    assert found["reader"] == "latent"
    none = result.select(torch.zeros(len(result), dtype=torch.bool))
    assert pipeline.direction_attributions(bench, none, goal) == {"reason": "no counterfactual flipped"}


def test_the_faces_image_readers_ship_and_load_without_training(monkeypatch, shrink_profile):
    from vcex.attribution import Descriptors, ImageAttributes
    from vcex.data.faces_tasks import load_face_table

    faces = load_face_table("train")
    table = Descriptors.from_faces(faces)
    shipped, cached = pipeline.image_reader_paths("faces", table, faces.images)
    assert shipped.exists(), f"{shipped.name} is not shipped: run scripts/ship_readers.py after changing the readers"
    monkeypatch.setattr(ImageAttributes, "fit", lambda *args, **kwargs: pytest.fail("the shipped readers trained"))
    readers = pipeline.image_readers("faces", table, faces.images, progress=False)
    assert readers.names == list(table.names) and not cached.exists()
    assert all(report["usable"] for report in readers.summary())
    # other settings or another table are not the shipped readers' (they would train, and be cached)
    shrink_profile("faces", image_reader_epochs=1)
    assert pipeline.image_reader_paths("faces", table, faces.images)[0] != shipped
    other_table = Descriptors.from_faces(load_face_table("test"))
    assert pipeline.image_reader_paths("faces", other_table, faces.images)[0] != shipped
