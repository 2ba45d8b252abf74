"""The Ray path (vcex.distributed, `vcex explain --ray`) and job files (`vcex run`): a local Ray instance with two
workers gives the single-process run's files; a job file runs what `vcex explain` runs; bad jobs get one line."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import pytest
import ray
import torch

from vcex.cache import cache_dir
from vcex.cli import main
from vcex.distributed import ChunkWorker, default_chunk_size, import_ray, run_explain_ray
from vcex.errors import InputError
from vcex.models.user import load_user_classifier
from vcex.pipeline import prepare, run_explain

EXAMPLE_JOB = Path(__file__).resolve().parents[1] / "examples" / "job.toml"
# the example job's run: MNIST's first 24 test images, the attack with 20 steps, runner-up targets, 2 workers
N, MAX_STEPS, WORKERS = 24, 20, 2
# what differs between two runs of the same job: times, and how the chunks came to be there
NOT_COMPARED = {"wall_seconds", "seconds_per_cf", "attribution_seconds", "resumed_chunks", "ray"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory):
    """The session's VCEX_HOME (conftest's) for module-scoped fixtures, which run before its per-test one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VCEX_HOME", str(tmp_path_factory.getbasetemp() / "vcex-home"))
        yield


@pytest.fixture(scope="module")
def local_ray(module_cache):
    """One local Ray instance for the module (starting one takes seconds): run_explain_ray uses it as it is."""
    ray.init(num_cpus=WORKERS + 1, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bench(module_cache):
    return prepare("mnist", progress=False)  # MNIST's models ship with vcex: nothing is trained


@pytest.fixture(scope="module")
def single_process(bench, tmp_path_factory) -> Path:
    """The example job's run in this process, with the Ray run's chunk size."""
    out = tmp_path_factory.mktemp("single")
    chunk_size = default_chunk_size(N, WORKERS)
    run_explain(bench, "attack", N, "second", out, chunk_size=chunk_size, progress=False, max_steps=MAX_STEPS)
    return out


def assert_same_run(out: Path, reference: Path) -> dict:
    """``out`` holds the counterfactuals of ``reference`` byte for byte and its metrics but for times; its metrics."""
    files = "counterfactuals.safetensors"
    assert (out / files).read_bytes() == (reference / files).read_bytes()
    scalars, expected_scalars = (json.loads((run / f"{files}.json").read_text()) for run in (out, reference))
    assert {**scalars, "seconds": 0} == {**expected_scalars, "seconds": 0}
    metrics, expected = (json.loads((run / "metrics.json").read_text()) for run in (out, reference))
    assert {k: v for k, v in metrics.items() if k not in NOT_COMPARED} == {
        k: v for k, v in expected.items() if k not in NOT_COMPARED
    }
    return metrics


@pytest.mark.slow  # a local Ray instance and its workers take tens of seconds to start
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own settings, not vcex's
def test_two_ray_workers_write_the_single_process_run(local_ray, single_process, tmp_path):
    result, metrics = run_explain_ray(
        "mnist", "attack", N, "second", tmp_path, workers=WORKERS, progress=False, max_steps=MAX_STEPS
    )
    assert len(result) == N and metrics == json.loads((tmp_path / "metrics.json").read_text())
    assert_same_run(tmp_path, single_process)
    chunk_size = default_chunk_size(N, WORKERS)
    assert chunk_size < N // WORKERS  # several chunks per worker, so both had work
    ray_record = metrics["ray"]
    assert ray_record["workers"] == WORKERS and ray_record["chunk_size"] == chunk_size
    assert ray_record["chunks"] == len(list(tmp_path.glob("chunks/*/*.safetensors"))) == -(-N // chunk_size)
    assert metrics["resumed_chunks"] == 0  # every chunk was explained by a worker, none found


@pytest.mark.slow  # a local Ray instance and its workers take tens of seconds to start
def test_a_job_file_runs_on_ray_and_resumes(local_ray, single_process, tmp_path, capsys):
    assert main(["run", str(EXAMPLE_JOB), "--out", str(tmp_path), "--quiet"]) == 0
    metrics = assert_same_run(tmp_path, single_process)
    assert metrics["ray"]["workers"] == WORKERS and metrics["resumed_chunks"] == 0
    summary = json.loads(capsys.readouterr().out)  # vcex explain's summary line
    assert summary["n"] == N and summary["method"] == "attack"
    # a rerun finds every chunk (as a killed run's rerun finds the finished ones) and writes the same run
    assert main(["run", str(EXAMPLE_JOB), "--out", str(tmp_path), "--quiet"]) == 0
    metrics = assert_same_run(tmp_path, single_process)
    assert metrics["resumed_chunks"] == metrics["ray"]["chunks"]


@pytest.mark.slow  # a local Ray instance and its workers take tens of seconds to start
def test_a_workers_error_is_one_line(local_ray, bench, tmp_path):
    """A worker that cannot load the classifier says why as the driver would, not as a Ray traceback."""
    missing = tmp_path / "missing.pt"
    with pytest.raises(InputError, match=f"--classifier file {missing} does not exist"):
        run_explain_ray(
            bench,
            "attack",
            4,
            "second",
            tmp_path / "out",
            workers=1,
            classifier=functools.partial(load_user_classifier, str(missing)),
            progress=False,
            max_steps=1,
        )
    assert not list(tmp_path.glob("out/chunks/*/*.safetensors"))


def worker_settings(tmp_path: Path, **changes: object) -> dict:
    settings = {
        "dataset": "mnist",
        "classifier": None,
        "method": "attack",
        "n": 4,
        "target": "second",
        "chunk_dir": str(tmp_path / "chunks" / "000000000000"),
        "chunk_size": 2,
        "preset": "vcex",
        "options": {"max_steps": 1},
        "images": None,
        "cache": str(tmp_path),
        "cwd": str(tmp_path),
        "threads": torch.get_num_threads(),
    }
    return {**settings, **changes}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({}, "would explain another run than the driver's"),  # the chunk folder is not this run's fingerprint
        ({"cache": "/nonexistent/vcex-cache"}, "model cache /nonexistent/vcex-cache is not on Ray node"),
    ],
)
def test_a_worker_refuses_to_write_another_runs_chunks(module_cache, tmp_path, monkeypatch, changes, message):
    monkeypatch.chdir(tmp_path)  # the worker moves to the driver's folder, and sets VCEX_HOME: both undone after
    cache = str(cache_dir())
    monkeypatch.setenv("VCEX_HOME", cache)
    worker = ChunkWorker(**worker_settings(tmp_path, **{"cache": cache, **changes}))
    rows = worker({"start": torch.tensor([0, 2]).numpy()})
    assert list(rows["start"]) == [0, 2] and all(message in error for error in rows["error"])
    assert set(rows["error_class"]) == {"InputError"} and not (tmp_path / "chunks").exists()


def test_without_ray_the_error_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does where ray is not installed
    with pytest.raises(InputError, match=r'pip install "vcex\[ray\]"'):
        import_ray()
    assert main(["explain", "--n", "2", "--out", "unused", "--ray"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and 'pip install "vcex[ray]"' in error


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"workers": 0}, "--workers must be a whole number >= 1, got 0"),
        ({"threads": 0}, "threads per worker must be a whole number >= 1, got 0"),
        ({"chunk_size": 2.5}, "chunk_size must be a whole number >= 1, got 2.5"),
        ({"lrr": 0.1}, "--method attack does not use lrr"),
    ],
)
def test_bad_ray_settings_are_refused_before_any_work(tmp_path, settings, message):
    with pytest.raises(InputError, match=message):
        run_explain_ray("mnist", "attack", 4, "second", tmp_path, progress=False, **settings)
    assert not tmp_path.joinpath("chunks").exists()


def test_workers_without_ray_is_refused(capsys):
    assert main(["explain", "--n", "2", "--out", "unused", "--workers", "3"]) == 2
    assert "--workers sets how many Ray workers --ray starts" in capsys.readouterr().err


def test_a_job_without_ray_runs_here_once_per_target(tmp_path, capsys):
    job = tmp_path / "jobs" / "two-targets.toml"
    job.parent.mkdir()
    job.write_text('dataset = "mnist"\nn = 3\ntarget = ["second", 3]\noutput = "out"\n[options]\nmax_steps = 2\n')
    assert main(["run", str(job), "--quiet"]) == 0
    for target in ("second", "3"):
        # relative to the job file's folder, not to where vcex ran
        metrics = json.loads((tmp_path / "jobs" / "out" / f"target-{target}" / "metrics.json").read_text())
        assert metrics["n"] == 3 and metrics["target_rule"] == target and "ray" not in metrics
    assert len(capsys.readouterr().out.splitlines()) == 2  # one summary line per run


@pytest.mark.parametrize(
    "job, message",
    [
        ('dataset = "mnist"\nmethd = "attack"\noutput = "o"\n', "unknown key 'methd' at the top level; known: output"),
        ('output = "o"\n[options]\nlrr = 0.1\n', "unknown key 'lrr' in [options]; known: threshold, lr, max_steps"),
        ('output = "o"\n[ray]\nnodes = 2\n', "unknown key 'nodes' in [ray]; known: address, workers"),
        ('output = "o"\n[options]\nmax_steps = "x"\n', "key max_steps: expected a whole number >= 0, got 'x'"),
        ('output = "o"\nn = 0\n', "key n: expected a whole number >= 1 or all, got '0'"),
        ('output = "o"\n[options]\nwhiten = 1\n', "whiten must be true or false, got 1"),
        ('output = "o"\nn = [1, 2]\n', "n takes one value, got the list [1, 2]"),
        ('output = "o"\nmethod = true\n', "method must be text or a number, got True"),
        ('output = "o"\noptions = 3\n', "options must be a table, [options], got 3"),
        ('output = "o"\ntarget = []\n', "target is an empty list"),
        ('dataset = "mnist"\n', 'names no output folder: add `output = "results"`'),
        ('dataset = "mnist"\noutput =\n', "is not a valid TOML job file"),
    ],
)
def test_a_bad_job_is_one_line_naming_the_key(tmp_path, capsys, job, message):
    path = tmp_path / "job.toml"
    path.write_text(job)
    assert main(["run", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and str(path) in error


def test_a_missing_job_file_is_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nowhere.toml")]) == 2
    assert "nowhere.toml does not exist; see examples/job.toml" in capsys.readouterr().err
