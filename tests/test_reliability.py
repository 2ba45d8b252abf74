"""The reliability table (docs/benchmarks/reliability.md), each row a test.

Bad inputs (tests/reliability_cases.py, shared with benchmarks/reliability_table.py): each, through the CLI or the
API, gets one line naming the problem, never a traceback. Faults: a job SIGKILLed mid-run, a full disk, a corrupt or
truncated cache file; after each, a rerun finishes with outputs bit-identical to an undisturbed run (nothing lost).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability_cases import CASES, attempt, failing_writes, problems

import vcex
from vcex import pipeline
from vcex.cli import main
from vcex.explainers import CounterfactualAttack, CounterfactualResult

pytestmark = pytest.mark.usefixtures("one_thread")

# chunks of 2 images, so a 6-image job has 3 chunks to lose or keep (the CLI's own chunks hold 100)
CHUNK = 2
EXPLAIN = ["explain", "--n", "6", "--max-steps", "5", "--quiet"]
# metrics that differ between two runs of the same job by design
VOLATILE = ("seconds", "versions", "device", "resumed_chunks")

# a job in its own process that SIGKILLs itself instead of making its (K+1)-th result write (K = argv[1]; -1:
# never), with chunks of argv[2] images, running `vcex` with the rest of argv
DRIVER = """
import os, signal, sys
from vcex import pipeline
from vcex.explainers import CounterfactualResult
kill_after, chunk = int(sys.argv[1]), int(sys.argv[2])
save, saves = CounterfactualResult.save, []
def save_or_die(self, path):
    if len(saves) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    saves.append(path)
    return save(self, path)
CounterfactualResult.save = save_or_die
run_explain = pipeline.run_explain
pipeline.run_explain = lambda *args, **kwargs: run_explain(*args, **{**kwargs, "chunk_size": chunk})
from vcex.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_clear_line(case, tmp_path):
    outcome = attempt(case, tmp_path)
    assert problems(case, outcome, tmp_path) == []


def test_the_table_has_forty_inputs_or_more_through_both_doors():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
    assert {case.where for case in CASES} == {"CLI", "API"}


def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's explain jobs in chunks of CHUNK images (as DRIVER does in its own process)."""
    run_explain = pipeline.run_explain

    def in_small_chunks(*args, **kwargs):
        return run_explain(*args, **{**kwargs, "chunk_size": CHUNK})

    monkeypatch.setattr(pipeline, "run_explain", in_small_chunks)


def run_driver(kill_after: int, argv: list[str]) -> subprocess.CompletedProcess:
    """``vcex argv`` in a fresh process (this worktree's vcex, this test's VCEX_HOME), killed as DRIVER says."""
    source = str(Path(vcex.__file__).parents[1])
    path = os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", DRIVER, str(kill_after), str(CHUNK), *argv, "--threads", "1"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def saved_bytes(out: Path) -> dict[str, bytes]:
    """Every counterfactual file of a run (chunks, rows and the final ones) by its path under ``out``."""
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*.safetensors"))}


def steady_metrics(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not any(word in k for word in VOLATILE)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An undisturbed explain job (6 images, 3 chunks): what every fault's rerun must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("VCEX_HOME", str(tmp_path_factory.getbasetemp() / "vcex-home"))
        small_chunks(monkeypatch)
        assert main([*EXPLAIN, "--out", str(out)]) == 0
    assert len(list(out.glob("chunks/*/*.safetensors"))) == 3
    return out


def test_seeded_cpu_runs_reproduce_bit_for_bit(reference, tmp_path):
    out = tmp_path / "again"
    finished = run_driver(-1, [*EXPLAIN, "--out", str(out)])
    assert finished.returncode == 0, finished.stderr
    final = "counterfactuals.safetensors"
    assert (out / final).read_bytes() == (reference / final).read_bytes()
    assert saved_bytes(out) == saved_bytes(reference)  # and every chunk
    assert steady_metrics(out / "metrics.json") == steady_metrics(reference / "metrics.json")


def test_sigkill_mid_explain_then_rerun_resumes_and_loses_nothing(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "killed"
    killed = run_driver(2, [*EXPLAIN, "--out", str(out)])  # dies as it would write its third chunk
    assert killed.returncode == -9
    kept = saved_bytes(out)
    assert len(kept) == 2 and not (out / "counterfactuals.safetensors").exists()
    assert all(kept[name] == saved_bytes(reference)[name] for name in kept)

    small_chunks(monkeypatch)
    assert main([*EXPLAIN, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_chunks"] == 2
    assert saved_bytes(out) == saved_bytes(reference)
    assert steady_metrics(out / "metrics.json") == steady_metrics(reference / "metrics.json")


def test_full_disk_gives_one_line_keeps_finished_chunks_and_a_rerun_completes(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "full"
    small_chunks(monkeypatch)
    with failing_writes(errno.ENOSPC, after=1)(tmp_path):  # the second chunk's write finds the disk full
        assert main([*EXPLAIN, "--out", str(out)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vcex: error: No space left on device") and "rerun" in lines[0]
    chunks = sorted(out.glob("chunks/*/*.safetensors"))
    assert len(chunks) == 2 and chunks[1].stat().st_size == 10  # the finished chunk, and half a chunk
    first = str(chunks[0].relative_to(out))
    assert chunks[0].read_bytes() == saved_bytes(reference)[first]

    assert main([*EXPLAIN, "--out", str(out)]) == 0  # space again: the half chunk is recomputed
    assert json.loads((out / "metrics.json").read_text())["resumed_chunks"] == 1
    assert saved_bytes(out) == saved_bytes(reference)


def test_ctrl_c_mid_job_says_so_in_one_line_and_a_rerun_resumes(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "interrupted"
    small_chunks(monkeypatch)
    save, saves = CounterfactualResult.save, []

    def save_then_interrupt(self, path):
        if len(saves) == 1:
            raise KeyboardInterrupt  # the user's Ctrl-C, as the second chunk is about to be written
        saves.append(path)
        return save(self, path)

    with monkeypatch.context() as patch:
        patch.setattr(CounterfactualResult, "save", save_then_interrupt)
        assert main([*EXPLAIN, "--out", str(out)]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["vcex: interrupted; finished chunks are kept and a rerun resumes from them"]
    assert main([*EXPLAIN, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_chunks"] == 1
    assert saved_bytes(out) == saved_bytes(reference)


@pytest.mark.slow
def test_sigkill_mid_benchmark_then_rerun_keeps_finished_rows_and_loses_nothing(tmp_path, monkeypatch):
    argv = ["benchmark", "--suite", "mnist", "--n", "2", "--methods", "attack", "pixel", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0
    clean = saved_bytes(tmp_path / "clean")
    out = tmp_path / "killed"
    # one result save per row (its chunk; the row's own file is streamed into place): killed at pixel's chunk, when
    # attack's row is whole and pixel's has nothing yet
    killed = run_driver(1, [*argv, "--out", str(out)])
    assert killed.returncode == -9
    kept = saved_bytes(out)
    assert set(kept) == {name for name in clean if name.startswith("rows/attack/")}
    assert all(kept[name] == clean[name] for name in kept)

    def refuse(self, *args, **kwargs):
        raise AssertionError("the finished attack row was explained again")

    monkeypatch.setattr(CounterfactualAttack, "explain", refuse)
    assert main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "benchmark.json").read_text())["reused"] == ["attack"]
    assert saved_bytes(out) == clean


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_file_is_retrained_to_the_same_weights(damage, tmp_path, bar_folder):
    from vcex.cache import load_weights
    from vcex.models import load_model, model_spec

    name = f"folder:{bar_folder(tmp_path / 'bars')}-cnn"
    trained = load_model(name, progress=False).state_dict()
    path = model_spec(name).path
    damaged = b"not safetensors" if damage == "garbage" else path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(damaged)
    with pytest.warns(UserWarning, match="is unusable .*not a readable safetensors file"):
        retrained = load_model(name, progress=False).state_dict()
    assert all(torch.equal(retrained[key], trained[key]) for key in trained)
    assert all(torch.equal(load_weights(path)[0][key], trained[key]) for key in trained)  # the cache is whole again


def test_a_corrupt_cache_file_of_a_shipped_model_falls_back_to_the_shipped_weights():
    from vcex.cache import load_weights
    from vcex.models import load_model, model_spec

    # the shipped file itself: an earlier test may have cached a model of its own under this name
    shipped = load_weights(model_spec("mnist-cnn").shipped_path)[0]
    model_spec("mnist-cnn").path.write_bytes(b"\x00" * 64)
    with pytest.warns(UserWarning, match="cached mnist-cnn is unusable"):
        loaded = load_model("mnist-cnn", progress=False).state_dict()
    assert all(torch.equal(loaded[key], shipped[key]) for key in shipped)
