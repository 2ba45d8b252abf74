"""``vcex explain`` on a Ray cluster: workers fill a run's chunk folder in parallel, then the normal run assembles it.

A run's results live in chunk files, ``out/chunks/<fingerprint>/<start>.safetensors`` (vcex.pipeline.chunk_path),
and :func:`vcex.pipeline.run_explain` reuses every finished chunk it finds. So the Ray path only has to write those
same files: a Ray Data dataset of chunk starts goes through ``map_batches`` with :class:`ChunkWorker`, an actor that
loads the models and builds the explainer once, then explains the chunks it is handed (:func:`explain_chunk`).
The driver then calls ``run_explain``, which finds every chunk and assembles and evaluates the run exactly as a
single-process run does: the files and metrics are the same by construction.

Ray is an optional extra (``pip install "vcex[ray]"``), imported only here and only when a Ray run is asked for.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vcex.errors import InputError, VcexError
from vcex.explainers.base import TargetSpec

if TYPE_CHECKING:
    from vcex.explainers import CounterfactualResult
    from vcex.pipeline import Workbench

# what --workers means without it: two actors (on one machine with a few cores, more only fight for them)
DEFAULT_WORKERS = 2
# chunks are cut so every worker gets several (the last ones finish close together), and never above the
# single-process run's 100 images, which bounds what a worker holds and what a killed worker loses
MAX_CHUNK = 100
CHUNKS_PER_WORKER = 4
INSTALL = 'pip install "vcex[ray]"'

# a zoo task name (or None), or what gives the user's classifier in each worker: a function called there (a
# module-level function or functools.partial, which Ray sends by reference) or a module Ray can serialise; the
# function may also return prepare()'s model keywords as a dict (classifier, latent_model, black_box: the CLI's)
ClassifierSource = str | torch.nn.Module | Callable[[], "str | torch.nn.Module | dict | None"] | None


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or an InputError naming the extra that brings it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is a separate part of the ray package: ray[data])
    except ImportError:
        raise InputError(f"running on Ray needs the ray package with Ray Data: {INSTALL}") from None
    return ray


def default_chunk_size(n: int, workers: int) -> int:
    """Images per chunk for ``n`` images on ``workers`` workers: about CHUNKS_PER_WORKER chunks each, at most
    MAX_CHUNK images (the single-process run's chunk)."""
    return max(1, min(MAX_CHUNK, math.ceil(n / (CHUNKS_PER_WORKER * workers))))


def _models(source: ClassifierSource) -> dict:
    """``prepare``'s model keywords from a :data:`ClassifierSource` (a loader is called here)."""
    loaded = source if source is None or isinstance(source, (str, torch.nn.Module)) else source()
    return loaded if isinstance(loaded, dict) else {"classifier": loaded}


def _workbench(dataset: str, classifier: ClassifierSource, progress: bool) -> Workbench:
    from vcex.pipeline import prepare

    return prepare(dataset, progress=progress, **_models(classifier))


class ChunkWorker:
    """A Ray Data actor (``map_batches(ChunkWorker, ...)``): prepares the workbench and builds the explainer once,
    then explains the chunks whose starts it is handed, writing each chunk's file as a single-process run does.

    It builds the explainer from the same settings as the driver and refuses to write anything unless its chunk
    folder's fingerprint is the driver's: another model cache, another dataset or other images on a node would
    otherwise fill the folder with chunks of another run.
    """

    def __init__(self, *, cache: str, cwd: str, threads: int, **job: object) -> None:
        """``job``: :meth:`_prepare`'s arguments (the driver's run); ``cache``, ``cwd``: the driver's model cache and
        working folder; ``threads``: torch threads in this worker."""
        torch.set_num_threads(threads)
        self.node = os.uname().nodename
        try:
            # the driver's model cache, so every worker explains with the driver's models and never trains its own
            if not Path(cache).is_dir():
                raise InputError(
                    f"the model cache {cache} is not on Ray node {self.node}: set VCEX_HOME to a folder "
                    "every node shares (e.g. next to the shared output folder) and run again"
                )
            os.environ["VCEX_HOME"] = cache
            if Path(cwd).is_dir():
                os.chdir(cwd)  # relative paths (a model file, folder:PATH) mean what they meant on the driver
            self._prepare(**job)
            self.error: VcexError | None = None
        except VcexError as error:
            # said by the first call instead, as a row (see __call__)
            self.error = error

    def _prepare(
        self,
        dataset: str,
        classifier: ClassifierSource,
        method: str,
        n: int,
        target: TargetSpec,
        chunk_dir: str,
        chunk_size: int,
        preset: str,
        options: dict[str, object],
        images: torch.Tensor | None,
        split: str = "test",
    ) -> None:
        """The workbench and explainer, and the check that this worker's chunk folder is the driver's."""
        from vcex.pipeline import METHOD_OPTIONS, build_explainer, explain_fingerprint, explain_images

        options = dict(options)
        if torch.cuda.is_available() and options.get("device") is None and "device" in METHOD_OPTIONS[method]:
            options["device"] = "cuda"  # Ray gave this actor a GPU (CUDA_VISIBLE_DEVICES holds just that one)
        bench = _workbench(dataset, classifier, progress=False)
        self.images = explain_images(bench, n, images, split)
        self.explainer = build_explainer(method, bench, preset=preset, progress=False, **options)
        self.target, self.chunk_size, self.chunk_dir = target, chunk_size, Path(chunk_dir)
        fingerprint = explain_fingerprint(bench, method, preset, target, self.explainer, self.images, options)
        if fingerprint != self.chunk_dir.name:
            raise InputError(
                f"a Ray worker on {self.node} would explain another run than the driver's (chunk folder "
                f"{fingerprint}, the driver's is {self.chunk_dir.name}): its models, data or vcex version differ; "
                "give every node the same vcex, data and VCEX_HOME"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Explain (or find finished) the chunks that begin at ``batch["start"]``; one row per chunk back.

        A VcexError (bad input, a model that does not fit) comes back as the row's ``error`` and ``error_class``:
        Ray Data would hand the driver only its text, wrapped in a traceback, and vcex says it in one line.
        """
        from vcex.pipeline import explain_chunk

        keys = ("start", "images", "reused", "seconds", "error", "error_class", "node")
        rows: dict[str, list] = {key: [] for key in keys}
        for start in batch["start"].tolist():
            try:
                if self.error is not None:
                    raise self.error
                part, was_reused = explain_chunk(
                    self.explainer, self.images, self.target, start, self.chunk_size, self.chunk_dir
                )
                row = (start, len(part), was_reused, part.seconds, "", "", self.node)
            except VcexError as error:
                row = (start, 0, False, 0.0, str(error), type(error).__name__, self.node)
            for key, value in zip(rows, row):
                rows[key].append(value)
        return {key: np.array(values) for key, values in rows.items()}


@contextmanager
def ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Ray, connected: to ``address`` (``ray.init(address)``; "auto" finds a cluster started on this node), or to
    a new local instance with a CPU for each worker and one for the driver's side of Ray Data. A session that was
    already connected (e.g. by the caller) is used as it is and left open."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    settings: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    try:
        if address is None:
            ray.init(num_cpus=workers + 1, **settings)
        else:
            ray.init(address=address, **settings)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise InputError(
            f"could not start or reach {where} ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "on a cluster, `ray start --head` on one node and pass its HEAD:6379"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_explain_ray(
    dataset: str | Workbench,
    method: str,
    n: int,
    target: TargetSpec,
    out: str | Path,
    *,
    address: str | None = None,
    workers: int = DEFAULT_WORKERS,
    classifier: ClassifierSource = None,
    preset: str = "vcex",
    chunk_size: int | None = None,
    threads: int = 1,
    images: torch.Tensor | None = None,
    progress: bool = True,
    split: str = "test",
    load_result: bool = True,
    attributions: bool = True,
    reader: str = "auto",
    **options: object,
) -> tuple[CounterfactualResult | None, dict]:
    """:func:`vcex.pipeline.run_explain` with the chunks explained by ``workers`` Ray actors.

    Args:
        dataset: a dataset name as ``vcex.pipeline.prepare`` takes it, or the driver's workbench when the caller
            has prepared it (the workers prepare their own, of its dataset and ``classifier``).
        method, n, target, out, preset, images, attributions, reader, options: as ``run_explain`` takes them (the
            first ``n`` test images, or ``images`` (n, C, H, W)); the driver writes the attributions.
        address: a Ray cluster (``HEAD:6379``, ``"auto"``); None starts a local instance for this run. Ray is used
            as it is when the caller has connected already.
        workers: actors, each with the models loaded once: one GPU each where the cluster has GPUs (and then at
            most one per GPU), else one CPU.
        classifier: a zoo task name, or the user's classifier: a function that loads it (called once in every
            worker; its files must be readable there) or a module Ray can serialise.
        chunk_size: images per chunk file (default :func:`default_chunk_size`); a rerun with the same chunk size,
            on Ray or not, resumes from the finished chunks.
        threads: torch threads per CPU worker.

    Returns:
        the result and metrics of ``run_explain`` (metrics.json also in ``out``), whose ``resumed_chunks`` counts
        the chunks found finished before this run, with a ``ray`` record: workers, chunks, nodes, seconds.
    """
    from vcex.cache import cache_dir
    from vcex.pipeline import build_explainer, check_method_options, explain_fingerprint, explain_images, run_explain
    from vcex.records import write_json

    import_ray()  # a missing extra is said before any model is loaded
    _check_counts(workers, threads, chunk_size)
    options = check_method_options(method, options)
    started = time.perf_counter()
    bench = _driver_workbench(dataset, classifier, progress)
    run_images = explain_images(bench, n, images, split)
    explainer = build_explainer(method, bench, preset=preset, progress=progress and method == "amortized", **options)
    chunk_dir = Path(out).resolve() / "chunks"
    chunk_dir /= explain_fingerprint(bench, method, preset, target, explainer, run_images, options)
    del explainer
    chunk_size = default_chunk_size(n, workers) if chunk_size is None else chunk_size
    starts = list(range(0, n, chunk_size))
    worker_settings = {
        "dataset": bench.dataset,
        "classifier": classifier,
        "method": method,
        "n": n,
        "target": target,
        "chunk_dir": str(chunk_dir),
        "chunk_size": chunk_size,
        "preset": preset,
        "options": options,
        "images": images,
        "cache": str(cache_dir()),
        "cwd": os.getcwd(),
        "threads": threads,
        "split": split,
    }
    prepared = time.perf_counter()
    with ray_session(address, workers) as ray:
        chunks = _explain_chunks(ray, starts, worker_settings, workers, f"{method} on {n} images", progress)
    result, metrics = run_explain(
        bench, method, n, target, out, preset=preset, chunk_size=chunk_size, progress=False, images=images,
        split=split, load_result=load_result, attributions=attributions, reader=reader, **options,
    )  # fmt: skip
    metrics["resumed_chunks"] = int(sum(bool(row["reused"]) for row in chunks.rows))
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    metrics["ray"] = {
        "address": address or "local",
        "workers": chunks.actors,
        "gpus_per_worker": 1 if chunks.gpus else 0,
        "threads_per_worker": threads,
        "chunk_size": chunk_size,
        "chunks": len(starts),
        "nodes": sorted({str(row["node"]) for row in chunks.rows}),
        # from starting (or joining) Ray: to the first chunk written (Ray's and the workers' start-up in it), and
        # to the last
        "first_chunk_seconds": round(chunks.finished[0] - prepared, 3),
        "explain_wall_seconds": round(chunks.finished[-1] - prepared, 3),
    }
    write_json(Path(out) / "metrics.json", metrics)
    return result, metrics


def _check_counts(workers: object, threads: object, chunk_size: object) -> None:
    """Ray's counts, refused before any model is loaded: ``workers``, ``threads`` and ``chunk_size`` (None: the
    default) must be whole numbers >= 1."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"--workers must be a whole number >= 1, got {workers!r}")
    for name, value in (("threads per worker", threads), ("chunk_size", 1 if chunk_size is None else chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a whole number >= 1, got {value!r}")


def _driver_workbench(dataset: str | Workbench, classifier: ClassifierSource, progress: bool) -> Workbench:
    """The driver's workbench: prepared here from a dataset name, or the caller's, whose own classifier the
    workers can load only through a function."""
    if isinstance(dataset, str):
        # the driver loads (or trains, once) every model before a worker starts: workers only read the cache
        return _workbench(dataset, classifier, progress)
    if dataset.classifier_source is not None and not callable(classifier):
        raise InputError(
            "the workbench explains your own classifier: pass classifier= a function that loads it, so each Ray "
            "worker loads it too"
        )
    return dataset


@dataclass
class _ExplainedChunks:
    """What the Ray workers did: one row per chunk (start, images, reused, seconds, error, error_class, node) in
    the order they finished, ``finished`` each one's ``time.perf_counter()``, and the actors and GPUs used."""

    rows: list[dict]
    finished: list[float]
    actors: int
    gpus: int


def _explain_chunks(
    ray: Any, starts: list[int], worker_settings: dict, workers: int, what: str, progress: bool
) -> _ExplainedChunks:
    """Explain the chunks starting at ``starts`` on ``workers`` :class:`ChunkWorker` actors (one per GPU where the
    cluster has GPUs, at most ``workers``) through Ray Data; a worker's VcexError is raised here as its own class."""
    from vcex.progress import track

    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = min(workers, gpus) if gpus else workers
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # vcex's own bar below counts chunks
    # ... and Ray Data's notes on each run (its plan, that its bars are off) would bury vcex's own lines
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    chunks = ray.data.from_items([{"start": start} for start in starts], override_num_blocks=len(starts))
    explained = chunks.map_batches(
        ChunkWorker,
        batch_size=1,
        fn_constructor_kwargs=worker_settings,
        # one chunk in flight per actor, so a slow chunk never holds others queued behind it
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        num_cpus=0 if gpus else 1,
        num_gpus=1 if gpus else 0,
    )
    done = _ExplainedChunks([], [], actors, gpus)
    desc = f"{what}, {actors} Ray worker{'s' if actors > 1 else ''}"
    for row in track(explained.iter_rows(), desc=desc, enabled=progress, total=len(starts)):
        if row["error"]:
            raise _worker_error(str(row["error_class"]), str(row["error"]))
        done.rows.append(row)
        done.finished.append(time.perf_counter())
    return done


def _worker_error(name: str, message: str) -> VcexError:
    """The VcexError a worker reported by class name and message (:mod:`vcex.errors`'s class, else VcexError)."""
    from vcex import errors

    kind = getattr(errors, name, VcexError)
    return kind(message) if isinstance(kind, type) and issubclass(kind, VcexError) else VcexError(message)
