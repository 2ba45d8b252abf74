"""``vcex benchmark``: every method on the same images and targets, one table and one JSON file.

The targets (the runner-up class on MNIST/Fashion, the other class on faces) are computed once from
the explained classifier before any method runs, so every row explains exactly the same task. Each
finished row is saved under ``out/rows/<key>/`` at once; a rerun on the same images, targets, models
and explainer settings reuses it, and a row cut short resumes from its saved chunks.

Example:
    >>> from vcex.benchmark import run_suite
    >>> record = run_suite("mnist", 200, "bench", methods=["attack", "pixel"])  # also bench/benchmark.md
    >>> record["rows"][0]["metrics"]["validity"], record["reused"]
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vcex.cache import parameter_fingerprint
from vcex.data import canonical_dataset_name
from vcex.data.folder import FOLDER_PREFIX
from vcex.data.profiles import profile_for
from vcex.errors import CacheError, InputError, VcexError
from vcex.evaluation import (
    frechet_distance,
    identity_metrics,
    identity_preservation,
    kid,
    knn_target_distance,
    target_class_reference,
    versions,
)
from vcex.evaluation.metrics import CHANGED_TOLERANCE
from vcex.explainers import CounterfactualResult
from vcex.explainers.base import CALL_SETTINGS, resolve_targets
from vcex.explainers.registry import METHODS
from vcex.explainers.thresholds import DEFAULT_THRESHOLD
from vcex.models.classifiers import predict_proba
from vcex.pipeline import Workbench, build_explainer, prepare, run_explain
from vcex.records import write_json

# real training images of the target classes the counterfactuals' Frechet distance is measured against
FRECHET_REFERENCE = 2000
# random subsets KID averages over (each of min(1000, N, reference) images per side)
KID_SUBSETS = 100


@dataclass(frozen=True)
class Row:
    """One table row: an explainer by CLI name with its preset and ``build_explainer`` options."""

    key: str
    label: str
    method: str
    preset: str = "vcex"
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A dataset, the classifier explained on it, the target rule and the rows compared."""

    dataset: str
    classifier: str | None
    target: str
    rows: tuple[Row, ...]
    description: str


def _every_method(rows: tuple[Row, ...], stylespace: bool = False) -> tuple[Row, ...]:
    """``rows`` plus one row at its defaults for each registered method (vcex.explainers.registry) that has none,
    so a new method is benchmarked without an edit here; a row naming no registered method is a bug. Methods that
    need a StyleSpace get a row only where the suite's latent model has one (``stylespace``)."""
    unknown = sorted({row.method for row in rows} - set(METHODS))
    if unknown:
        raise AssertionError(f"benchmark rows name unregistered methods: {', '.join(unknown)}")
    covered = {row.method for row in rows}
    extra = [
        Row(name, method.explainer.__name__, name)
        for name, method in METHODS.items()
        if name not in covered and (stylespace or not method.needs_stylespace)
    ]
    return (*rows, *extra)


_DIGIT_ROWS = (
    Row("attack", "CounterfactualAttack, VAE latent (threshold 0.998, loss -p)", "attack"),
    Row("attack-paper", "CounterfactualAttack, paper preset (threshold 0.75)", "attack", preset="paper"),
    Row("attack-t0.99", "CounterfactualAttack, threshold 0.99", "attack", options={"threshold": 0.99}),
    Row(
        "attack-auto",
        'CounterfactualAttack, per-class thresholds (`threshold="auto"`, the default)',
        "attack",
        options={"threshold": "auto"},
    ),
    Row("attack-logp", "CounterfactualAttack, loss -log p", "attack", options={"objective": "log_prob"}),
    Row("pixel", "Pixel attack", "pixel"),
    Row("pixel-paper", "Pixel attack, paper preset (threshold 0.75)", "pixel", preset="paper"),
    Row("linear", "Linear latent edit", "linear"),
    Row("linear-paper", "Linear latent edit, paper preset (threshold 0.75)", "linear", preset="paper"),
    Row("amortized", "Amortized (one pass)", "amortized"),
    Row("amortized-refine", "Amortized + 100 attack steps", "amortized", options={"refine_steps": 100}),
    Row(
        "amortized-auto",
        'Amortized (one pass), per-class thresholds (`threshold="auto"`)',
        "amortized",
        options={"threshold": "auto"},
    ),
    Row("disc", "DISC (energy consistency)", "disc"),
)
_FACE_ROWS = (
    Row("attack", "CounterfactualAttack in W", "attack", options={"space": "w"}),
    Row("attack-style", "CounterfactualAttack in StyleSpace", "attack", options={"space": "style"}),
    Row("pixel", "Pixel attack", "pixel"),
    Row("linear", "Linear latent edit in W (InterFaceGAN rule)", "linear"),
    Row("disc", "DISC (energy consistency)", "disc"),
    Row("amortized", "Amortized in W (one pass)", "amortized"),
    Row(
        "stylespace-direction",
        "StyleSpace direction (learned, top 5% of coordinates)",
        "stylespace-direction",
        options={"mode": "learned", "sparsity": 0.05},
    ),
)
SUITES: dict[str, Suite] = {
    "mnist": Suite("mnist", None, "second", _every_method(_DIGIT_ROWS), "vcex's MNIST test split"),
    "fashion": Suite("fashion", None, "second", _every_method(_DIGIT_ROWS), "vcex's Fashion-MNIST test split"),
    "faces": Suite(
        "faces",
        "smiling",
        "flip",
        _every_method(_FACE_ROWS, stylespace=True),
        "the synthetic faces' test split (smiling task)",
    ),
}
_TARGET_TEXT = {"second": "the explained classifier's runner-up class", "flip": "the other class"}


def _threshold_text(threshold: float | list[float]) -> str:
    """A row's threshold: the number, or per-class thresholds as their range and each class's value."""
    if isinstance(threshold, (int, float)):
        return f"{threshold}"
    values = ", ".join(f"{c}: {t:.3f}" for c, t in enumerate(threshold))
    return f"per class {min(threshold):.3f}-{max(threshold):.3f} ({values})"


def suite_rows(suite: str, methods: Sequence[str] | None = None) -> tuple[Suite, tuple[Row, ...]]:
    """The suite by name and its rows, restricted to the keys in ``methods`` (suite order kept).

    Raises:
        InputError: an unknown suite or row key; the message lists the known ones.
    """
    if suite.startswith(FOLDER_PREFIX):  # the user's images: the digit rows, toward the runner-up class
        dataset = canonical_dataset_name(suite)
        spec = Suite(dataset, None, "second", _every_method(_DIGIT_ROWS), f"the test split of {dataset}")
    elif suite not in SUITES:
        raise InputError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)}, or folder:PATH")
    else:
        spec = SUITES[suite]
    if methods is None:
        return spec, spec.rows
    keys = [row.key for row in spec.rows]
    unknown = [key for key in methods if key not in keys]
    if unknown or not methods:
        raise InputError(
            f"unknown method key(s) {', '.join(map(repr, unknown)) or '(none given)'} for suite {suite}; "
            f"its rows are {', '.join(keys)}"
        )
    return spec, tuple(row for row in spec.rows if row.key in methods)


def _sha1(payload: object, *tensors: torch.Tensor) -> str:
    digest = hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode())
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def _models_fingerprint(bench: Workbench) -> dict[str, str]:
    """Parameter fingerprints of every model a row's numbers depend on (explained, generator, evaluation)."""
    roles = {
        "classifier": bench.classifier,
        "latent_model": bench.latent_model,
        "oracle": bench.oracle,
        "autoencoders": bench.autoencoders,
        "attributes": bench.attributes,
    }
    return {role: parameter_fingerprint(model) for role, model in roles.items() if model is not None}


def _row_fingerprint(data: str, row: Row, settings: dict, device: str) -> str:
    """What a saved row is valid for: the data (images, targets, models), the row and the explainer's settings
    (without those an explain call resolves from its images)."""
    settings = {k: v for k, v in settings.items() if k not in CALL_SETTINGS}
    return _sha1(
        {
            "data": data,
            "key": row.key,
            "method": row.method,
            "preset": row.preset,
            "options": dict(row.options),
            "settings": settings,
            "device": device,
        }
    )


def _saved_row(row_dir: Path, fingerprint: str, targets: torch.Tensor) -> tuple[dict, CounterfactualResult] | None:
    """The metrics and counterfactuals of a finished row saved under ``row_dir`` for this fingerprint, else None."""
    try:
        marker = json.loads((row_dir / "row.json").read_text())
        if marker.get("status") != "done" or marker.get("fingerprint") != fingerprint:
            return None
        metrics = json.loads((row_dir / "metrics.json").read_text())
        result = CounterfactualResult.load(row_dir / "counterfactuals.safetensors")
    except (OSError, ValueError, CacheError):
        return None
    return (metrics, result) if torch.equal(result.target, targets) else None


# the metrics _target_class_metrics adds to a row (a saved row without them gets them on reuse)
TARGET_CLASS_METRICS = ("frechet", "kid", "kid_std", "knn_target_distance")
# evaluate's identity and diversity entries: a row saved before they existed gets them on reuse
IDENTITY_METRICS = (
    "identity_preservation",
    "identity_preservation_pixels",
    "identity_chance",
    "identity_n",
    "diversity",
    "diversity_per_class",
)


def _identity_metrics(result: CounterfactualResult, task: _Task) -> dict:
    """Identity preservation and diversity of a saved row's counterfactuals, as ``evaluate`` records them."""
    with torch.no_grad():
        originals, counterfactuals = task.features(result.originals), task.features(result.counterfactuals)
    reference = None if result.lower else task.bench.diversity_reference()
    pixels = identity_preservation(result.originals.flatten(1).float(), result.counterfactuals.flatten(1).float())
    return {
        **identity_metrics(originals, counterfactuals, result.target, reference),
        "identity_preservation_pixels": round(float(pixels.float().mean()), 4),
    }


def _target_class_metrics(result: CounterfactualResult, task: _Task) -> dict[str, float | None]:
    """How much the counterfactuals look like real training images of their target classes: the Frechet
    distance and KID (mean, std over subsets) in the oracle's features against the same reference images,
    and the mean L2 distance to the 5 nearest target-class training images. None below 2 counterfactuals."""
    if len(result) < 2:
        return dict.fromkeys(TARGET_CLASS_METRICS)
    real = task.reference_features()
    with torch.no_grad():
        counterfactual = task.features(result.counterfactuals)
    kid_mean, kid_std = kid(real, counterfactual, subsets=KID_SUBSETS)
    train = task.bench.train
    near = knn_target_distance(result.counterfactuals, result.target, train.images, train.labels)
    return {
        "frechet": round(frechet_distance(real, counterfactual), 4),
        "kid": round(kid_mean, 6),
        "kid_std": round(kid_std, 6),
        "knn_target_distance": round(float(near.mean()), 4),
    }


@dataclass
class _Task:
    """What every row of one run shares: the workbench, images (N, C, H, W), targets (N,) and fingerprints."""

    bench: Workbench
    images: torch.Tensor
    targets: torch.Tensor
    rule: str
    data: str
    features: Callable[[torch.Tensor], torch.Tensor]  # images (N, C, H, W) -> oracle features (N, D), for FD
    options: dict  # build_explainer options every row gets (the device)
    progress: bool
    _reference_features: torch.Tensor | None = None

    def reference_features(self) -> torch.Tensor:
        """Oracle features of the real target-class images FD and KID compare against, (R, D): every row has
        the same targets, so they are computed once per run (on first use: a failure stays that row's)."""
        if self._reference_features is None:
            bench = self.bench
            reference = target_class_reference(self.targets, bench.train.images, bench.train.labels, FRECHET_REFERENCE)
            with torch.no_grad():
                self._reference_features = self.features(reference)
        return self._reference_features


def _run_row(row: Row, task: _Task, row_dir: Path) -> tuple[dict, bool]:
    """Reuse the row saved in ``row_dir`` if it is valid for these data and settings, else run it.

    Returns the row's metrics and whether they were reused.
    """
    bench, data, progress = task.bench, task.data, task.progress
    # rows compare methods at one fixed threshold unless they name theirs (the -auto rows: vcex's default)
    fixed = {"threshold": DEFAULT_THRESHOLD} if row.preset != "paper" else {}
    options = {**fixed, **row.options, **task.options}
    marker_path = row_dir / "row.json"
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError):
        marker = {}
    if marker.get("data") == data and marker.get("status") == "done":
        # the explainer's settings decide whether the saved row still stands; building it trains nothing new
        # (an amortized network is loaded from the cache, a linear edit refits its probe)
        explainer = build_explainer(
            row.method, bench, preset=row.preset, progress=progress and row.method == "amortized", **options
        )
        fingerprint = _row_fingerprint(data, row, explainer.settings(), str(explainer.device))
        saved = _saved_row(row_dir, fingerprint, task.targets)
        if saved is not None:
            metrics, result = saved
            stale = False
            for compute, keys in ((_target_class_metrics, TARGET_CLASS_METRICS), (_identity_metrics, IDENTITY_METRICS)):
                if any(key not in metrics for key in keys):
                    # saved before these metrics existed: computed from the saved counterfactuals, none re-explained
                    metrics.update(compute(result, task))
                    stale = True
            if stale:
                write_json(row_dir / "metrics.json", metrics)
            return metrics, True
    if marker.get("data") != data or marker.get("status") == "done":
        # chunks of other images, targets or models (or of a superseded run) must not be resumed
        shutil.rmtree(row_dir, ignore_errors=True)
    row_dir.mkdir(parents=True, exist_ok=True)
    marker_path.write_text(json.dumps({"key": row.key, "data": data, "status": "running"}))
    started = time.perf_counter()
    result, metrics = run_explain(
        bench, row.method, len(task.images), task.targets, row_dir, preset=row.preset, progress=progress, **options
    )
    metrics.update(_target_class_metrics(result, task))
    metrics["row_seconds"] = round(time.perf_counter() - started, 3)
    # how the row's ms / CF was measured: a reused row keeps the conditions of the run that computed it
    metrics["torch_threads"] = torch.get_num_threads()
    metrics["load_average"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    metrics["target_rule"] = task.rule  # run_explain saw the targets as a tensor
    metrics["row"] = {"key": row.key, "label": row.label, "preset": row.preset, "options": dict(row.options)}
    fingerprint = _row_fingerprint(data, row, json.loads(json.dumps(result.settings, default=str)), metrics["device"])
    metrics["fingerprint"] = fingerprint
    write_json(row_dir / "metrics.json", metrics)
    marker_path.write_text(json.dumps({"key": row.key, "data": data, "status": "done", "fingerprint": fingerprint}))
    return metrics, False


@torch.no_grad()
def real_validity(bench: Workbench, targets: torch.Tensor, thresholds: Sequence[float]) -> dict[str, float]:
    """The validity real images would get: for each threshold, the share of real test images of the target
    classes, mixed as the targets are, that the explained classifier puts above it.

    A reference for the counterfactuals' validity: a threshold that few real images of a class pass (the
    classifier is seldom that sure of a Fashion-MNIST shirt) asks a counterfactual to be surer of its class
    than real images of it are.

    Args:
        targets: (N,) the counterfactuals' target classes; thresholds: the rows' thresholds.

    Returns:
        ``{str(threshold): share}``; empty when a target class has no test image.
    """
    images, labels = bench.test.images, bench.test.labels
    probs = predict_proba(bench.classifier, images, 512)
    classes, counts = targets.unique(return_counts=True)
    if any(not (labels == c).any() for c in classes.tolist()):
        return {}
    own = [probs[labels == c, c] for c in classes.tolist()]
    weights = counts.double() / counts.sum()
    return {
        str(threshold): round(float(sum(w * (p > threshold).double().mean() for w, p in zip(weights, own))), 4)
        for threshold in thresholds
    }


def _explained(dataset: str, data: dict) -> str:
    """The explained classifier in benchmark.md: the zoo's with its test accuracy, or a user's by its source."""
    source = data.get("classifier")
    if source is None:
        return f"`{dataset}-cnn` (test accuracy {_fmt(data['classifier_test_accuracy'])})"
    if "entry_point" in source:
        weights = f", weights sha256 {source['weights_sha256'][:12]}" if "weights_sha256" in source else ""
        return f"your classifier `{source['entry_point']}`{weights}"
    return f"your classifier `{Path(source['file']).name}` (sha256 {source['sha256'][:12]})"


def _command(
    suite: str,
    n: int,
    out: Path,
    methods: Sequence[str] | None,
    device: str | None,
    classifier: dict | None = None,
    latent_model: dict | None = None,
) -> str:
    from vcex.models.user import latent_source_arguments, source_arguments

    words = ["vcex", "benchmark", "--suite", suite, "--n", str(n), "--out", str(out)]
    words += source_arguments(classifier) if classifier is not None else []
    words += latent_source_arguments(latent_model) if latent_model is not None else []
    if methods is not None:
        words += ["--methods", *methods]
    if device is not None:
        words += ["--device", device]
    return shlex.join(words)


def _machine(device: str | None) -> dict:
    record = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device or "cpu",
    }
    if device is not None and torch.device(device).type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return record


def _check_device(device: str | None) -> None:
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise InputError(f"--device {device!r} is not a torch device ({error}); use cpu, cuda or cuda:1 ...") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device} was asked for, but torch sees no CUDA device here; use --device cpu")


def run_suite(
    suite: str,
    n: int,
    out: str | Path,
    *,
    methods: Sequence[str] | None = None,
    progress: bool = False,
    device: str | None = None,
    classifier: torch.nn.Module | None = None,
    latent_model: torch.nn.Module | None = None,
) -> dict:
    """Run every row of ``suite`` on its first ``n`` test images; write ``benchmark.json`` and ``benchmark.md``.

    Args:
        suite: ``mnist``, ``fashion`` (target: the runner-up class), ``faces`` (the smiling classifier,
            target: the other class) or ``folder:PATH[@SIZE]`` (the user's images, as ``mnist``).
        n: test images to explain, 1 <= n <= the test split's size.
        out: output folder; finished rows go to ``out/rows/<key>/`` (metrics.json, counterfactuals.safetensors,
            grid.png) as soon as they finish, and a rerun reuses them.
        methods: row keys to run (default: every row of the suite), e.g. ``["attack", "pixel"]``.
        progress: progress bars and one line per row on stderr.
        device: where the explainers run (default: the CPU); models for evaluation stay on the CPU.
        classifier: a user's classifier (vcex.models.user.load_user_classifier) explained instead of the suite's
            zoo classifier; the oracles and latent model stay the suite's.
        latent_model: a user's latent model (vcex.models.user.load_user_latent_model) instead of the suite's.

    Returns:
        The ``benchmark.json`` record: suite, n, command, machine, versions, fingerprints and one entry per
        row with its metrics (``status`` "done") or its error message (``status`` "failed"; any
        :class:`VcexError` a method raises), and ``reused``, the keys of rows taken from an earlier run.

    Raises:
        InputError: unknown suite or row key, ``n`` out of range, an unusable device.
    """
    spec, rows = suite_rows(suite, methods)
    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    _check_device(device)
    out = Path(out)
    started = time.perf_counter()
    task, fingerprints = _suite_task(spec, n, device, progress, classifier, latent_model)
    record = _suite_record(suite, spec, task, fingerprints, out, methods, device)
    _run_rows(rows, task, out, record)
    record["data"]["real_validity"] = real_validity(task.bench, task.targets, _fixed_thresholds(record))
    record["complete"] = True
    record["wall_seconds"] = round(time.perf_counter() - started, 3)
    write_reports(out, record)
    return record


def _suite_task(
    spec: Suite,
    n: int,
    device: str | None,
    progress: bool,
    classifier: torch.nn.Module | None,
    latent_model: torch.nn.Module | None,
) -> tuple[_Task, dict[str, object]]:
    """The suite's workbench, its first ``n`` test images and their targets (fixed here, before any method runs),
    and the fingerprints that name them: ``targets_fingerprint``, ``models_fingerprint``, ``data_fingerprint``."""
    bench = prepare(
        spec.dataset,
        progress=progress,
        classifier=classifier if classifier is not None else spec.classifier,
        latent_model=latent_model,
    )
    if n > len(bench.test):
        raise InputError(f"--n must lie in [1, {len(bench.test)}] for {bench.dataset}'s test split, got {n}")
    images = bench.test.images[:n]
    targets = resolve_targets(spec.target, predict_proba(bench.classifier, images, 256))
    models = _models_fingerprint(bench)
    targets_fingerprint = _sha1({"dataset": bench.dataset, "rule": spec.target}, images, targets)
    data = _sha1({"targets": targets_fingerprint, "models": models})
    options = {"device": device} if device is not None else {}
    task = _Task(bench, images, targets, spec.target, data, bench.features(), options, progress)
    return task, {"targets_fingerprint": targets_fingerprint, "models_fingerprint": models, "data_fingerprint": data}


def _suite_record(
    suite: str,
    spec: Suite,
    task: _Task,
    fingerprints: dict[str, object],
    out: Path,
    methods: Sequence[str] | None,
    device: str | None,
) -> dict:
    """The ``benchmark.json`` record before any row has run: the suite, data, models, machine and versions."""
    bench, targets = task.bench, task.targets
    return {
        "suite": suite,
        "dataset": bench.dataset,
        "n": len(task.images),
        "command": _command(
            suite, len(task.images), out, methods, device, bench.classifier_source, bench.latent_source
        ),
        "machine": _machine(device),
        "versions": versions(),
        "data": {
            "description": spec.description,
            "target_rule": spec.target,
            "target_counts": {
                bench.test.class_names[int(k)]: int(c) for k, c in zip(*targets.unique(return_counts=True))
            },
            **fingerprints,
            # a user's classifier has no training record: its accuracy is not vcex's to know
            "classifier_test_accuracy": getattr(bench.classifier, "training_record", {}).get("test_accuracy"),
            **({"classifier": bench.classifier_source} if bench.classifier_source is not None else {}),
            "oracle_test_accuracy": bench.oracle.training_record.get("test_accuracy"),
            "label_attributes": list(bench.label_attributes),
        },
        "rows": [],
        "reused": [],
        "failed": [],
        "complete": False,
    }


def _run_rows(rows: Sequence[Row], task: _Task, out: Path, record: dict) -> None:
    """Run (or reuse) each row into ``out/rows/<key>/``, appending its entry to ``record`` and rewriting the
    reports after every row, so an interrupted run leaves a partial table. A method's :class:`VcexError` fails
    only its own row."""
    for row in rows:
        row_started = time.perf_counter()
        entry = {"key": row.key, "label": row.label, "method": row.method, "preset": row.preset}
        try:
            metrics, reused = _run_row(row, task, out / "rows" / row.key)
            entry.update(status="done", reused=reused, metrics=metrics)
            if reused:
                record["reused"].append(row.key)
        except VcexError as error:
            entry.update(status="failed", reused=False, error=str(error))
            record["failed"].append(row.key)
        record["rows"].append(entry)
        if task.progress:
            print(_row_summary(entry, time.perf_counter() - row_started), file=sys.stderr)
        write_reports(out, record)


def _fixed_thresholds(record: dict) -> list[float]:
    """The distinct single thresholds of the record's finished rows, sorted (per-class ones are left out)."""
    return sorted(
        {
            entry["metrics"]["threshold"]
            for entry in record["rows"]
            if entry["status"] == "done" and isinstance(entry["metrics"]["threshold"], float)
        }
    )


def _row_summary(entry: dict, seconds: float) -> str:
    if entry["status"] == "failed":
        return f"{entry['key']}: failed ({entry['error']})"
    m = entry["metrics"]
    reused = " (reused)" if entry["reused"] else f" in {seconds:.1f} s"
    return (
        f"{entry['key']}: validity {m['validity']:.3f} oracle {_fmt(m['oracle_agreement'])} "
        f"kNN {_fmt(m['knn_agreement'])} identity {_fmt(m.get('identity_preservation'))} "
        f"diversity {_fmt(m.get('diversity'))} FD {_fmt(m.get('frechet'), 2)}{reused}"
    )


def write_reports(out: str | Path, record: dict) -> tuple[Path, Path]:
    """Write ``benchmark.json`` and ``benchmark.md`` (rendered from the record alone) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out / "benchmark.json", out / "benchmark.md"
    write_json(json_path, record)
    markdown_path.write_text(render_markdown(record), encoding="utf-8")
    return json_path, markdown_path


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_markdown(record: dict) -> str:
    """The benchmark page: command, machine, versions, data, one table and a legend of its columns."""
    faces = profile_for(record["dataset"]).faces
    info, machine, data = record["versions"], record["machine"], record["data"]
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    lines = [
        f"# vcex benchmark: {record['suite']} ({record['n']} images)",
        "",
        f"- Command: `{record['command']}`",
        f"- Machine: {machine['processor']}, {machine['cpu_count']} CPU cores, torch threads "
        f"{machine['torch_threads']}, explainers on {machine['device']}{gpu} ({machine['platform']})",
        f"- Versions: vcex {info['vcex']}, torch {info['torch']}, Python {info['python']}",
        f"- Data: the first {record['n']} images of {data['description']}; target = "
        f"{_TARGET_TEXT.get(data['target_rule'], data['target_rule'])}, fixed before any method ran and the same "
        f"for every row (fingerprint {data['targets_fingerprint']}; images per target class: "
        + ", ".join(f"{k}: {v}" for k, v in data["target_counts"].items())
        + ").",
        f"- Explained: {_explained(record['dataset'], data)}. "
        f"Evaluation only: `{record['dataset']}-oracle` (test accuracy {_fmt(data['oracle_test_accuracy'])}), a "
        f"5-NN on the training images, `{record['dataset']}-im-ae`"
        + (", the attribute oracle `faces-attributes`" if faces else "")
        + ".",
    ]
    if record["reused"]:
        lines.append(f"- Rows reused from an earlier run on the same data and settings: {', '.join(record['reused'])}.")
    if not record.get("complete", True):
        lines.append("- Incomplete: the run has not finished every row yet.")
    return "\n".join([*lines, "", *render_table(record)]) + "\n"


def _timing_conditions(done: list[dict]) -> str | None:
    """A sentence on the torch threads and load under which the rows' ms / CF were measured, grouped by
    thread count; None when no row recorded them (rows saved before they were recorded)."""
    by_threads: dict[int, list[dict]] = {}
    for entry in done:
        if entry["metrics"].get("torch_threads") is not None:
            by_threads.setdefault(entry["metrics"]["torch_threads"], []).append(entry)
    if not by_threads:
        return None
    parts = []
    for threads, entries in sorted(by_threads.items()):
        loads = [e["metrics"]["load_average"][0] for e in entries if e["metrics"].get("load_average")]
        load = f", 1-minute load average {min(loads):.1f}-{max(loads):.1f} at the row's end" if loads else ""
        keys = "every row" if len(entries) == len(done) else ", ".join(f"`{e['key']}`" for e in entries)
        parts.append(f"{keys} with {threads} torch thread{'s' if threads != 1 else ''}{load}")
    return "Timing conditions (ms / CF): " + "; ".join(parts) + "."


def _kid_cell(m: dict) -> str:
    if m.get("kid") is None:
        return "–"
    return f"{m['kid']:.4f} ± {m['kid_std']:.4f}"


def _more_metrics_table(done: list[dict], faces: bool) -> list[str]:
    """The second table: the rest of each row's metrics (closeness, realism against the target class, passes)."""
    fourth = "MNAC vs reconstruction ↓" if faces else "IM2 ↓"
    header = (
        f"| method | mean p(target) | pixels changed ↓ | latent distance ↓ | {fourth} | KID ↓ | kNN distance ↓ "
        "| forward + backward passes / CF |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for entry in done:
        m = entry["metrics"]
        fourth_value = (
            _fmt(m.get("mnac_vs_reconstruction"), 2) if faces else _fmt((m.get("realism") or {}).get("im2"), 4)
        )
        lines.append(
            f"| `{entry['key']}` | {_fmt(m.get('mean_target_prob'))} | {_fmt(m.get('changed_fraction'))} "
            f"| {_fmt(m.get('latent_distance'), 2)} | {fourth_value} | {_kid_cell(m)} "
            f"| {_fmt(m.get('knn_target_distance'), 2)} | {m['forward_passes_per_cf']:.1f} + "
            f"{m['backward_passes_per_cf']:.1f} |"
        )
    return lines


def render_table(record: dict) -> list[str]:
    """The table of a ``benchmark.json`` record with its notes (thresholds, fits, failures) and column legend,
    as Markdown lines; ``benchmarks/mnist_counterfactuals.py`` puts it into docs/BENCHMARKS.md."""
    faces = profile_for(record["dataset"]).faces
    data = record["data"]
    realism = "MNAC ↓" if faces else "IM1 ↓"
    header = (
        "| method | validity ↑ | oracle agreement ↑ | kNN agreement ↑ | identity ↑ | identity (pixels) ↑ | diversity "
        "| L1 ↓ | L2 ↓ | FD ↓ "
        f"| {realism} | mean steps | passes / CF ↓ | ms / CF ↓ |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for entry in record["rows"]:
        label = f"`{entry['key']}`: {entry['label']}"
        if entry["status"] == "failed":
            lines.append(f"| {label} | failed, see below |" + " – |" * 12)
            continue
        m = entry["metrics"]
        fourth = _fmt(m.get("mnac"), 2) if faces else _fmt((m.get("realism") or {}).get("im1"))
        lines.append(
            f"| {label} | {_fmt(m['validity'])} | {_fmt(m['oracle_agreement'])} | {_fmt(m['knn_agreement'])} "
            f"| {_fmt(m.get('identity_preservation'))} | {_fmt(m.get('identity_preservation_pixels'))} "
            f"| {_fmt(m.get('diversity'), 2)} | {_fmt(m['l1'])} "
            f"| {_fmt(m['l2'])} | {_fmt(m.get('frechet'), 2)} | {fourth} | {m['mean_steps']:.1f} "
            f"| {m['passes_per_cf']:.1f} | {m['seconds_per_cf'] * 1000:.1f} |"
        )
    done = [entry for entry in record["rows"] if entry["status"] == "done"]
    failed = [entry for entry in record["rows"] if entry["status"] == "failed"]
    chance = f"{1 / record['n']:.3f}" if record.get("n") else "1/n"
    lines += ["", *_more_metrics_table(done, faces)]
    lines.append("")
    if done:
        lines.append(
            "Thresholds (target confidence a counterfactual must pass to count as valid): "
            + ", ".join(f"`{e['key']}` {_threshold_text(e['metrics']['threshold'])}" for e in done)
            + "."
        )
    reference = data.get("real_validity")
    if reference:
        lines.append(
            "For reference, real test images of the target classes (mixed as the targets are) that the explained "
            "classifier puts above each threshold: "
            + ", ".join(f"{threshold}: {share:.3f}" for threshold, share in reference.items())
            + " (where few real images pass a threshold, it asks the counterfactuals to be surer of their class than "
            "real images of it are)."
        )
    fits = [e for e in done if e["metrics"].get("recorded_fit_seconds") is not None]
    if fits:
        lines.append(
            "One-off fits, not in ms / CF: "
            + ", ".join(f"`{e['key']}` {e['metrics']['recorded_fit_seconds']:.1f} s" for e in fits)
            + " (a fitted network is cached and shared by the rows with the same fitting settings; other thresholds "
            "fit their own, and per-class thresholds that are all equal count as their one value)."
        )
    conditions = _timing_conditions(done)
    if conditions:
        lines.append(conditions)
    for entry in failed:
        lines.append(f"- `{entry['key']}` failed: {entry['error']}")
    lines += [
        "",
        "Columns: *validity*: share of counterfactuals the explained classifier puts in the target class "
        "above the row's threshold. *Oracle agreement*: share that an independent classifier (another "
        "architecture and seed) also puts in the target class. *kNN agreement*: the same for a 5-NN on raw "
        "training pixels. *Identity*: share of counterfactuals whose nearest original among the run's "
        f"{record.get('n', 'n')} (in the oracle's penultimate features) is their own (chance {chance}; it "
        "depends on n: compare rows of one table only). *Diversity*: per target class, the mean pairwise feature "
        "distance of the counterfactuals over that of real training images of the class, averaged over the "
        "classes with 2 or more counterfactuals: ~1 varies as real images do, ~0 is one template per class "
        "(which both agreements can rate highly). *L1*, *L2*: mean absolute pixel change and Euclidean norm of "
        "the change, per image. "
        "*FD*: Frechet distance in the oracle's penultimate features between the counterfactuals and up to "
        f"{FRECHET_REFERENCE} real training images of their target classes (biased upward for small n: compare "
        "rows of one table only). "
        + (
            "*MNAC*: mean number of the other binary attributes the attribute oracle reads differently after "
            f"the change ({', '.join(data['label_attributes'])} excluded). "
            if faces
            else "*IM1*: reconstruction error under the target class's autoencoder over that under the original "
            "class's (below 1: the counterfactual looks more like its new class). "
        )
        + "*Mean p(target)*: the explained classifier's mean target probability on the counterfactuals. "
        f"*Pixels changed*: share of pixels moved by more than {CHANGED_TOLERANCE} (sparsity). *Latent distance*: "
        "L2 between the encodings of the original and the counterfactual, every method's images re-encoded by "
        "the same model. "
        + (
            "*MNAC vs reconstruction*: the same count against the generator's reconstruction of the original "
            "(the edit's side effects alone; latent methods only). "
            if faces
            else "*IM2*: disagreement between the target class's autoencoder and one trained on every class, "
            "over the image's L1 norm (lower: more realistic). "
        )
        + f"*KID*: kernel distance (mean ± std over {KID_SUBSETS} subsets) in the oracle's features to the same "
        "target-class images as FD; unbiased, so near 0 means indistinguishable from real images of the target "
        "class. *kNN distance*: mean L2 to the 5 nearest training images of the target class. "
        + "*Mean steps*: optimisation steps per image (0 for one-pass methods). *Passes / CF*: classifier "
        "forward plus backward passes per counterfactual. *ms / CF*: explaining time per counterfactual on this "
        "machine, without one-off fits and evaluation. ↑: higher is better, ↓: lower is better.",
    ]
    return lines
