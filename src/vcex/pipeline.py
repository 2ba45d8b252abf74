"""End-to-end runs shared by the CLI, the demo and the benchmarks: models -> explainer -> metrics -> files."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError

from vcex.cache import cache_dir
from vcex.checks import check_device
from vcex.data import ImageDataset, canonical_dataset_name, dataset_file_stem, load_dataset
from vcex.data.folder import FOLDER_PREFIX
from vcex.data.profiles import profile_for
from vcex.errors import CacheError, InputError
from vcex.evaluation import PenultimateFeatures, diversity_reference, evaluate, penultimate_features
from vcex.evaluation.metrics import comparison_metrics, image_scores, scores_record
from vcex.explainers import (
    AmortizedCounterfactual,
    CounterfactualResult,
    Explainer,
)
from vcex.explainers.base import TargetSpec
from vcex.explainers.registry import METHODS as REGISTRY
from vcex.explainers.registry import BuildRequest, check_black_box
from vcex.explainers.result import COUNTERFACTUALS_FILE, ResultFileWriter, load_run, run_length
from vcex.explainers.thresholds import training_thresholds
from vcex.models import KNNOracle, WhitenedLatentModel, load_knn_oracle, load_model
from vcex.models.blackbox import BlackBoxClassifier, is_black_box
from vcex.models.refined import RefinedEncoder
from vcex.progress import track
from vcex.records import json_text, write_json
from vcex.report import result_grid, save_png
from vcex.report.html import READER_NAMES
from vcex.report.paths import PATH_IMAGES, write_paths

if TYPE_CHECKING:
    from vcex.attribution import Descriptors, ExplainAway, ImageAttributes, LatentAttributes, LocalAttribution

# the options each method takes (build_explainer's keywords), from the registry: the CLI refuses any other before
# any work, and build_explainer passes exactly these on (a preset sets the threshold and the attack's objective itself)
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {name: method.options for name, method in REGISTRY.items()}
METHODS = tuple(REGISTRY)
# the `vcex explain` flag of each option that has one (objective and probe_c are build_explainer's only)
OPTION_FLAGS = {
    **{key: "--" + key.replace("_", "-") for key in ("threshold", "lr", "max_steps", "batch_size", "device")},
    **{key: "--" + key.replace("_", "-") for key in ("space", "residual", "whiten", "invert_steps", "precision")},
    "consistency": "--consistency",
    "refine_steps": "--refine",
    **{key: "--" + key.replace("_", "-") for key in ("mode", "sparsity", "alpha_max")},
}
# latent spaces an attack can run in: the latent model's own (a VAE's z, the style generator's W) and,
# for the style generator, its StyleSpace
SPACES = ("latent", "w", "style")
PRESETS = ("vcex", "paper")
# --whiten: the attack runs in the whitened coordinates of the latent (vcex.WhitenedLatentModel), fitted on the
# encodings of the first WHITEN_FIT_IMAGES training images; its step is in units of each direction's spread. On
# 200 test faces (smiling), lr 0.05 / 0.1 / 0.2 gave oracle agreement 0.935 / 0.955 / 0.94, MNAC 1.67 / 2.04 /
# 2.45 and 87 / 38 / 21 mean steps, all at validity 1.0
WHITENED_ATTACK_LR = 0.1
WHITEN_FIT_IMAGES = 4000


@dataclass
class Workbench:
    """Everything one dataset's runs need, trained or loaded once."""

    dataset: str
    train: ImageDataset
    test: ImageDataset
    classifier: torch.nn.Module
    latent_model: torch.nn.Module
    oracle: torch.nn.Module
    knn: KNNOracle
    autoencoders: torch.nn.Module
    # faces only: the attribute oracle (for MNAC) and the attributes the label is made of (not counted)
    attributes: torch.nn.Module | None = None
    label_attributes: tuple[str, ...] = ()
    # whitened latent models fitted for --whiten, by latent space
    whitened: dict[str, WhitenedLatentModel] = field(default_factory=dict)
    # a user's classifier (vcex.models.user): what was loaded, for metrics.json; None for the zoo's
    classifier_source: dict | None = None
    # a user's latent model (--latent-model): what was loaded, for metrics.json; None for the zoo's
    latent_source: dict | None = None
    # oracle features and labels of real training images, the reference of the diversity metric (once per run)
    _diversity_reference: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def features(self) -> PenultimateFeatures:
        """The oracle's penultimate features, images (N, C, H, W) -> (N, D): the space identity and diversity
        (and the benchmark's FD and KID) are measured in, so the explained classifier cannot game it."""
        return penultimate_features(self.oracle)

    def diversity_reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Oracle features (R, D) and labels (R,) of the first training images of every class, computed once."""
        if self._diversity_reference is None:
            self._diversity_reference = diversity_reference(self.train.images, self.train.labels, self.features())
        return self._diversity_reference

    def whitened_latent_model(self, space: str, latent_model: torch.nn.Module) -> WhitenedLatentModel:
        """``latent_model`` (this workbench's, seen in ``space``) whitened by its training encodings, fitted once."""
        if space not in self.whitened:
            self.whitened[space] = WhitenedLatentModel.fit(latent_model, self.train.images[:WHITEN_FIT_IMAGES])
        return self.whitened[space]


def dataset_for(dataset: str, classifier: str | None = None) -> str:
    """The registry dataset behind ``--dataset`` and ``--classifier``: ``faces`` + ``smiling`` is
    ``faces-smiling`` (the faces' default task is ``smiling``); other datasets take no classifier name."""
    if dataset.lower() == "faces":
        from vcex.data.faces_tasks import face_task

        return f"faces-{face_task(classifier or 'smiling').name}"
    name = canonical_dataset_name(dataset)
    if classifier is not None:
        own = name.removeprefix("faces-") if profile_for(name).faces else "cnn"
        if classifier not in (own, f"{name}-cnn"):
            raise InputError(
                f"--classifier {classifier!r} does not belong to --dataset {dataset}; its classifier is {own!r} "
                "(face tasks: --dataset faces --classifier smiling|eyeglasses|young|smiling-spurious)"
            )
    return name


def prepare(
    dataset: str,
    progress: bool = True,
    classifier: str | torch.nn.Module | None = None,
    *,
    latent_model: torch.nn.Module | None = None,
    black_box: bool = False,
) -> Workbench:
    """Load (training on first use) the classifier, oracles, latent model and realism autoencoders.

    Faces (``dataset="faces"`` with ``classifier`` a task name, or ``"faces-<task>"``) use the shared
    style generator (``faces-style``) as latent model and add the attribute oracle for MNAC.
    ``classifier`` may also be a user's model (vcex.models.user.load_user_classifier): it is checked once on a
    few test images before any zoo model is loaded and explained instead of the zoo's; the oracles, latent
    model and autoencoders stay the zoo's for the dataset. ``latent_model`` (vcex.models.user.load_user_latent_model,
    or any object with encode/decode) replaces the zoo's, checked the same way; without one, a folder dataset's
    latent model is trained for the folder (and a line on stderr says so). ``black_box``: the zoo's classifier is
    queried as a :class:`~vcex.models.blackbox.BlackBoxClassifier` (a user's is loaded as one already).
    """
    from vcex.models.user import check_user_classifier, check_user_latent_model

    user = classifier if isinstance(classifier, torch.nn.Module) else None
    name = dataset_for(dataset, None if user is not None else classifier)
    profile = profile_for(name)
    test = load_dataset(name, "test")
    if user is not None:
        check_user_classifier(user, test.images, test.num_classes)
    if latent_model is not None:
        check_user_latent_model(latent_model, test.images)
    roles = {"oracle": f"{name}-oracle", "im-ae": f"{name}-im-ae"}
    if latent_model is None:
        roles["latent"] = profile.latent_model or f"{name}-vae"
        if name.startswith(FOLDER_PREFIX):
            _say_folder_latent_model(name, roles["latent"])
    if user is None:
        roles = {"cnn": f"{name}-cnn", **roles}
    if profile.attribute_oracle:
        roles["attributes"] = profile.attribute_oracle
    models = {}
    for role in track(list(roles), desc=f"models for {name}", enabled=progress):
        models[role] = load_model(roles[role], progress=progress)
    label_attributes: tuple[str, ...] = ()
    if profile.faces:
        from vcex.data.faces_tasks import face_task, task_attributes

        label_attributes = task_attributes(face_task(name.removeprefix("faces-")))
    explained = user if user is not None else models["cnn"]
    source = getattr(user, "source", {"model": type(user).__name__}) if user is not None else None
    if black_box and not is_black_box(explained):
        # the classifier queried as a box: its class names and input shape stay known, its gradients not
        white = explained
        explained = BlackBoxClassifier(
            white,
            test.num_classes,
            input_shape=getattr(white, "input_shape", None),
            class_names=getattr(white, "class_names", None),
            value_range=getattr(white, "value_range", (0.0, 1.0)),
        )
        explained.training_record = getattr(white, "training_record", {})
        source = {**(source or {"model": roles.get("cnn", "")}), "black_box": True}
    return Workbench(
        dataset=name,
        train=load_dataset(name, "train"),
        test=test,
        classifier=explained,
        latent_model=latent_model if latent_model is not None else models["latent"],
        oracle=models["oracle"],
        knn=load_knn_oracle(name),
        autoencoders=models["im-ae"],
        attributes=models.get("attributes"),
        label_attributes=label_attributes,
        classifier_source=source,
        latent_source=getattr(latent_model, "source", {"model": type(latent_model).__name__})
        if latent_model is not None
        else None,
    )


def _say_folder_latent_model(dataset: str, name: str) -> None:
    """One line on stderr: a folder's latent model is the zoo's, trained for the folder (or loaded from the cache),
    and how to give one's own instead."""
    import sys

    from vcex.models import model_spec

    path = model_spec(name).path
    doing = (
        f"using the one trained for it earlier, cached at {path}"
        if path.exists()
        else f"training it now (cached at {path})"
    )
    print(
        f"vcex: no --latent-model for {dataset.removeprefix(FOLDER_PREFIX)}, so its latent model is the zoo's "
        f"{model_spec(name).role} for this folder, {doing}; pass your own with --latent-model FILE.pt "
        "(TorchScript exporting encode/decode) or package.module:factory --latent-weights FILE.safetensors",
        file=sys.stderr,
    )


def _option_names(options: Sequence[str]) -> str:
    """Options as the CLI's flags, those without one as Python keywords: ``--lr, --max-steps (and probe_c=)``."""
    flags = [OPTION_FLAGS[key] for key in options if key in OPTION_FLAGS]
    keywords = [f"{key}=" for key in options if key not in OPTION_FLAGS]
    if not flags:
        return ", ".join(keywords)
    return ", ".join(flags) + (f" (and {', '.join(keywords)} from Python)" if keywords else "")


def check_method_options(method: str, options: Mapping[str, object]) -> dict[str, object]:
    """The options given (those not None) when ``method`` takes every one of them (:data:`METHOD_OPTIONS`).

    Raises:
        InputError: an unknown method, or options the method does not use: they are named, with the
            methods that do use them, and the method's own options are listed.
    """
    if method not in METHOD_OPTIONS:
        raise InputError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    given = {key: value for key, value in options.items() if value is not None}
    own = METHOD_OPTIONS[method]
    foreign = [key for key in given if key not in own]
    if foreign:
        named = [
            f"{_option_names([key])} ({'for ' + ', '.join(users) if users else 'no method takes it'})"
            for key in foreign
            for users in [[name for name, keys in METHOD_OPTIONS.items() if key in keys]]
        ]
        raise InputError(
            f"--method {method} does not use {' or '.join(named)}: drop {'it' if len(foreign) == 1 else 'them'}; "
            f"--method {method} takes {_option_names(own)}"
        )
    if method == "amortized" and "lr" in given and not given.get("refine_steps"):
        raise InputError(
            "--lr is the step of the amortized explainer's refinement, which runs only with --refine N > 0 "
            "(one pass takes no step): add --refine N, or drop --lr"
        )
    return given


def build_explainer(
    method: str, bench: Workbench, *, preset: str = "vcex", progress: bool = False, **options: object
) -> Explainer:
    """An explainer by CLI name (:data:`METHODS`) with ``options`` overriding its defaults; the options a
    method takes are declared in :data:`METHOD_OPTIONS` (None counts as not given), any other is refused."""
    options = check_method_options(method, options)
    check_black_box(method, is_black_box(bench.classifier))  # before the thresholds' queries and any fit
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if preset != "paper":
        # vcex's default: 0.998, lowered per class where the classifier is less sure of real images of a class
        options.setdefault("threshold", "auto")
    threshold_reason = None
    if isinstance(options.get("threshold"), str):
        if options["threshold"] != "auto":
            raise InputError(f"threshold must be a probability in (0, 1) or 'auto', got {options['threshold']!r}")
        # per class, the confidence of the median real training image of that class (capped at 0.998)
        options["threshold"], threshold_reason = training_thresholds(
            bench.classifier, bench.train.images, bench.train.labels
        )
    explainer = _build(method, bench, preset, progress, options)
    explainer.threshold_reason = threshold_reason
    return explainer


def _build(method: str, bench: Workbench, preset: str, progress: bool, options: dict) -> Explainer:
    """The explainer of ``build_explainer`` once its threshold is decided."""
    classifier, latent_model = bench.classifier, bench.latent_model
    space = options.pop("space", "latent")
    whiten = bool(options.pop("whiten", False))
    invert_steps = int(options.pop("invert_steps", 0) or 0)
    if space not in SPACES:
        raise InputError(f"unknown latent space {space!r}; use one of {', '.join(SPACES)}")
    if space in ("w", "style"):
        from vcex.models.stylegan import StyleAutoencoder, StyleSpaceModel

        if not isinstance(latent_model, StyleAutoencoder):
            raise InputError(
                f"--space {space} needs a style generator; {bench.dataset}'s latent model is a "
                f"{type(latent_model).__name__} (W and StyleSpace exist for the faces)"
            )
    if space == "style":
        latent_model = StyleSpaceModel(latent_model)
    # the attack starts from latents refined by invert_steps of pixel-error inversion (the encoder alone: 0)
    refined = RefinedEncoder(latent_model, steps=invert_steps) if invert_steps else None
    if whiten:
        # whitened by the encoder's own training encodings (refining 4,000 of them would take minutes)
        whitened = bench.whitened_latent_model("style" if space == "style" else "latent", latent_model)
        if refined is not None:
            whitened = WhitenedLatentModel(
                refined, whitened.mean, whitened.basis, whitened.scale, whitened.latent_shape
            )
        latent_model = whitened
        if preset != "paper":
            options.setdefault("lr", WHITENED_ATTACK_LR)
    elif refined is not None:
        latent_model = refined
    if "device" in options:
        # the workbench's models stay on the CPU for evaluation; the explainer gets its own copies
        device = check_device(options["device"])
        classifier, latent_model = copy.deepcopy(classifier).to(device), copy.deepcopy(latent_model).to(device)
    request = BuildRequest(classifier, latent_model, bench.dataset, bench.train.images, preset, progress, options)
    return REGISTRY[method].build(request)


def parse_target(text: str) -> TargetSpec:
    """CLI target: a class index or a rule name."""
    return int(text) if text.lstrip("-").isdigit() else text


def evaluate_result(result: CounterfactualResult, bench: Workbench, device: str = "cpu") -> dict:
    """metrics.json for a result of this workbench's dataset (faces add ``mnac``); identity and diversity are
    measured in the oracle's penultimate features, against the result's originals and real training images."""
    return evaluate(
        result,
        dataset=bench.dataset,
        oracle=bench.oracle,
        knn=bench.knn,
        autoencoders=bench.autoencoders,
        latent_model=bench.latent_model,
        attributes=bench.attributes,
        label_attributes=bench.label_attributes,
        features=bench.features(),
        diversity_reference=bench.diversity_reference(),
        device=device,
    )


# images per chunk file: about a quarter of a small run, at least 8 and at most 100, so a run no longer than one
# chunk of 100 still resumes after a kill (vcex explain --chunk-size sets it)
MIN_CHUNK, MAX_CHUNK = 8, 100
# rows read at once when a run's file is evaluated (per-image metrics are exact means over these blocks)
EVALUATION_BLOCK = 500
# identity and diversity compare every counterfactual with every original of the run (N x N); above this many
# images they are measured on an evenly spaced sample of this many, recorded as comparison_sample in metrics.json
COMPARISON_SAMPLE = 2000
# the first rows of a run kept in memory for its pictures (grid.png, report.html) and write_outputs' consumers
PREVIEW_ROWS = 256
RUN_RECORD = "run.json"  # a chunk folder's (and a finished run folder's) record of what the run explains


def default_chunk_size(n: int) -> int:
    """The chunk size of a run of ``n`` images when none is given: ceil(n / 4) within [8, 100]."""
    return max(MIN_CHUNK, min(MAX_CHUNK, math.ceil(n / 4)))


def explain_images(bench: Workbench, n: int, images: torch.Tensor | None = None, split: str = "test") -> torch.Tensor:
    """The (n, C, H, W) images a run explains: ``images`` checked against the dataset's shape, or the first ``n``
    of ``split`` (a view of the loaded split: chunks read their rows from it, nothing is copied)."""
    if images is not None:
        if n != len(images) or tuple(images.shape[1:]) != bench.test.image_shape:
            raise InputError(
                f"images must be (n, {', '.join(map(str, bench.test.image_shape))}) for {bench.dataset} with "
                f"n = {n}, got {tuple(images.shape)}"
            )
        return images
    if split not in ("train", "test"):
        raise InputError(f"unknown split {split!r}; use train or test")
    dataset = bench.test if split == "test" else bench.train
    if n < 1 or n > len(dataset):
        raise InputError(
            f"--n must lie in [1, {len(dataset)}] for {bench.dataset}'s {split} split, got {n} (--n all: every image)"
        )
    return dataset.images[:n]


def explain_request(
    dataset: str,
    method: str,
    n: int,
    target: TargetSpec,
    *,
    split: str | None = "test",
    preset: str = "vcex",
    options: Mapping[str, object] | None = None,
    classifier: dict | None = None,
    images: torch.Tensor | None = None,
) -> dict:
    """What a ``vcex explain`` command asks for, as JSON: recorded in its chunk folder's run.json when it runs,
    and compared by ``--status`` (which loads no model) to find the folder of the same command. ``images``: the
    images given instead of a split's first ``n`` (their hash is recorded; ``split`` is then None)."""
    given = {key: value for key, value in (options or {}).items() if value is not None}
    return json.loads(
        json_text(
            {
                "dataset": dataset,
                "split": None if images is not None else split,
                "images": None if images is None else hashlib.sha1(_image_bytes(images)).hexdigest(),
                "n": n,
                "method": method,
                "preset": preset,
                "target": _target_key(target),
                "options": dict(sorted(given.items())),
                "classifier": classifier,
            }
        )
    )


def run_explain(
    bench: Workbench,
    method: str,
    n: int,
    target: TargetSpec,
    out: str | Path,
    *,
    preset: str = "vcex",
    chunk_size: int | None = None,
    progress: bool = True,
    images: torch.Tensor | None = None,
    split: str = "test",
    load_result: bool = True,
    attributions: bool = True,
    reader: str = "auto",
    **options: object,
) -> tuple[CounterfactualResult | None, dict]:
    """Explain the first ``n`` images of ``split`` (or ``images``, (n, C, H, W) of the dataset's shape) and write
    metrics.json, counterfactuals.safetensors (+ .json), attributions.safetensors (+ .json, read by ``reader``;
    ``attributions`` False: none, :func:`write_run_attributions`), grid.png, report.html and run.json into ``out``.

    Streams, with memory flat in ``n``: chunks of ``chunk_size`` images (default :func:`default_chunk_size`) are
    explained into ``out/chunks/<fingerprint>/`` and copied into place in counterfactuals.safetensors as they
    come; the metrics are then computed over that file in blocks (:func:`evaluate_run`). A rerun with the same
    settings reuses finished chunks, so an interrupted job resumes where it stopped; every file is written
    atomically. Returns the whole result read back from the file (None when ``load_result`` is False: the
    CLI's way for runs too large to hold) and the metrics.
    """
    given_images = images  # images given instead of a split's (their hash is recorded)
    images = explain_images(bench, n, images, split)
    out = Path(out)
    chunk_size = int(chunk_size or default_chunk_size(n))
    if chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    # only the amortized explainer's one-off fit gets a bar; explaining is tracked per chunk below
    explainer = build_explainer(method, bench, preset=preset, progress=progress and method == "amortized", **options)
    fingerprint = explain_fingerprint(bench, method, preset, target, explainer, images, options)
    chunk_dir = out / "chunks" / fingerprint
    record = {
        "fingerprint": fingerprint,
        "chunk_size": chunk_size,
        "chunks": math.ceil(n / chunk_size),
        "request": explain_request(
            bench.dataset, method, n, target, split=split, preset=preset, options=options,
            classifier=bench.classifier_source, images=given_images,
        ),
    }  # fmt: skip
    write_json(chunk_dir / RUN_RECORD, record)
    # temporaries of the run folder's own files left by a killed run (one process assembles a folder; the chunk
    # folder's are left alone, as parallel workers may be writing there)
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    # the folder's finished-run mark goes until this run's files are all written (vcex report, --from-run and
    # --status must never pair an earlier run's record with this run's counterfactuals)
    (out / RUN_RECORD).unlink(missing_ok=True)
    # ... and so do its attributions, written again from the whole run below (or not at all)
    for stale in (out / ATTRIBUTIONS_FILE, out / f"{ATTRIBUTIONS_FILE}.json"):
        stale.unlink(missing_ok=True)
    whitened = explainer.latent_model if isinstance(explainer.latent_model, WhitenedLatentModel) else None
    seconds, reused, reused_images = 0.0, 0, 0
    started = time.perf_counter()
    starts = range(0, n, chunk_size)
    black_box = explainer.classifier if isinstance(explainer.classifier, BlackBoxClassifier) else None
    if black_box is not None:
        black_box.reset_queries()  # the thresholds' and the fit's queries are setup, not the explanations' cost
    with ResultFileWriter(out / COUNTERFACTUALS_FILE, n) as writer:
        for start in track(starts, desc=f"{method} on {n} images", enabled=progress, total=len(starts)):
            part, was_reused = explain_chunk(explainer, images, target, start, chunk_size, chunk_dir)
            if whitened is not None:
                part = whitened.to_base_result(part)  # saved latents are the latent model's own
            writer.add(part)
            seconds += part.seconds
            reused += was_reused
            reused_images += len(part.target) if was_reused else 0
            del part
        writer.seconds = seconds
    metrics = evaluate_run(bench, out, device=str(explainer.device), progress=progress)
    attribution_started = time.perf_counter()
    if attributions:
        # a StyleSpace attack's latents are styles, not the W the probes read: its images are encoded instead
        read_latents = options.get("space") != "style"
        metrics["attributions"] = write_run_attributions(
            bench, out, fingerprint, read_latents, progress=progress, reader=reader
        )
    else:
        metrics["attributions"] = {"file": None, "reason": "turned off (--no-attributions)"}
    metrics["attribution_seconds"] = round(time.perf_counter() - attribution_started, 3)
    metrics.update(run_settings(record, options, preset, target, None if given_images is not None else split))
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    metrics["resumed_chunks"] = reused
    if bench.classifier_source is not None:
        metrics["classifier"] = bench.classifier_source
    if bench.latent_source is not None:
        metrics["latent_model"] = bench.latent_source
    if black_box is not None and n > reused_images:
        # images explained in this run only: a resumed chunk's queries were spent (and not counted) in an earlier one
        metrics["queries_per_cf"] = black_box.queries / (n - reused_images)
        metrics["queries_counted_over"] = n - reused_images
    if isinstance(explainer, AmortizedCounterfactual):
        metrics["fit_seconds"] = 0.0 if explainer.loaded else explainer.fit_seconds
        metrics["recorded_fit_seconds"] = explainer.fit_seconds
        metrics["refine_steps"] = explainer.refine_steps
    write_run_outputs(bench, out, metrics, record, explainer)
    return (load_run(out) if load_result else None), metrics


def _image_bytes(images: torch.Tensor) -> memoryview:
    """The bytes of (N, C, H, W) images for hashing, without a copy (a 60,000-image split is 188 MB)."""
    return memoryview(images.detach().cpu().contiguous().numpy()).cast("B")


def run_settings(
    record: dict, options: Mapping[str, object], preset: str, target: TargetSpec, split: str | None
) -> dict:
    """The entries of metrics.json that describe how a run was asked for (not measured); ``split`` None: images
    given by the user."""
    return {
        "preset": preset,
        "space": str(options.get("space") or "latent"),
        "whiten": bool(options.get("whiten")),
        "invert_steps": int(options.get("invert_steps") or 0),
        "target_rule": str(target) if not isinstance(target, torch.Tensor) else _target_key(target),
        "split": split or "images",
        "fingerprint": record["fingerprint"],
        "chunk_size": record["chunk_size"],
    }


def comparison_rows(n: int, limit: int | None = None) -> torch.Tensor:
    """The rows identity and diversity are measured on: all ``n`` up to ``limit`` (default
    :data:`COMPARISON_SAMPLE`), else every ceil(n / limit)-th."""
    return torch.arange(0, n, max(1, math.ceil(n / (limit or COMPARISON_SAMPLE))))


def evaluate_run(bench: Workbench, out: str | Path, device: str = "cpu", progress: bool = False) -> dict:
    """metrics.json's measured entries for the run saved in ``out`` (counterfactuals.safetensors), read in blocks
    of :data:`EVALUATION_BLOCK` rows: per-image metrics are exact means over all rows (the same as
    :func:`evaluate_result` of the whole result); identity and diversity, which compare images with each other,
    on the :func:`comparison_rows` (all rows up to :data:`COMPARISON_SAMPLE`), said in ``comparison_sample``."""
    path = Path(out) / COUNTERFACTUALS_FILE
    n = run_length(path)
    sample = comparison_rows(n)
    scores: list[dict[str, torch.Tensor]] = []
    sampled: list[CounterfactualResult] = []
    header: CounterfactualResult | None = None
    starts = range(0, n, EVALUATION_BLOCK)
    for start in track(starts, desc="metrics", enabled=progress and len(starts) > 1, total=len(starts)):
        block = CounterfactualResult.load(path, rows=slice(start, start + EVALUATION_BLOCK))
        header = header or block
        scores.append(
            image_scores(
                block, oracle=bench.oracle, knn=bench.knn, autoencoders=bench.autoencoders,
                latent_model=bench.latent_model, attributes=bench.attributes, label_attributes=bench.label_attributes,
            )
        )  # fmt: skip
        rows = sample[(sample >= start) & (sample < start + len(block))] - start
        sampled.append(block.select(rows))
        del block
    joined = {name: torch.cat([part[name] for part in scores]) for name in scores[0]}
    record = scores_record(
        joined,
        method=header.method,
        threshold=header.threshold,
        lower=header.lower,
        seconds=header.seconds,
        settings=header.settings,
        dataset=bench.dataset,
        device=device,
        attribute_names=list(bench.attributes.attribute_names) if bench.attributes is not None else None,
        label_attributes=bench.label_attributes,
    )
    comparison = CounterfactualResult.concatenate(sampled, header.seconds)
    record.update(comparison_metrics(comparison, bench.features(), bench.diversity_reference()))
    record["comparison_sample"] = {
        "n": len(sample),
        "of": n,
        "rows": "all" if len(sample) == n else f"every {int(sample[1] - sample[0])}th image from the first",
        "metrics": ["identity_preservation", "identity_preservation_pixels", "diversity", "diversity_per_class"],
    }
    return record


def write_run_outputs(
    bench: Workbench, out: Path, metrics: dict, record: dict, explainer: Explainer | None = None
) -> None:
    """A streamed run's summary files: metrics.json, grid.png and the explorer's paths (:func:`write_outputs`,
    over the run's first :data:`PREVIEW_ROWS` rows; counterfactuals.safetensors is written already), report.html
    and, last, run.json (``record``: which chunk folder the run's files come from)."""
    from vcex.report import write_report

    preview = load_run(out, rows=slice(0, PREVIEW_ROWS))
    local = read_run_attributions(out, record["fingerprint"], rows=slice(0, PREVIEW_ROWS))
    write_outputs(out, preview, metrics, explainer, saved=True, local=local)
    title = f"vcex explain: {metrics['method']} on {metrics['n']} {bench.dataset} images"
    write_report(
        out / "report.html", title, [metrics], [preview], class_names=bench.test.class_names, attributions=local,
        attribution_note=attribution_note(metrics.get("attributions"), local),
    )  # fmt: skip
    write_json(out / RUN_RECORD, record)


def attribution_note(summary: dict | None, local: LocalAttribution | None) -> str:
    """report.html's line on the run's local attributions: what read them and where they are, or why none."""
    if local is None:
        reason = (summary or {}).get("reason") or "this run wrote none (made before vcex explain wrote them)"
        return f"No attributions: {reason}."
    read = (summary or {}).get("read")
    return (
        f"Each counterfactual's top changes in the descriptors ({(summary or {}).get('descriptors', 'descriptors')}), "
        f"read by {(summary or {}).get('reader', READER_NAMES['latent'])} fitted on the training images"
        + (f" from {read}" if read else "")
        + f": the change in each reader's probability, ranked by its size; every counterfactual's are in "
        f"{ATTRIBUTIONS_FILE}. Readers that do not beat chance on held-out images are never ranked"
        + (f" ({', '.join(sorted(local.reasons))})" if local.reasons else "")
        + "."
    )


ATTRIBUTIONS_FILE = "attributions.safetensors"  # a run's local attributions (+ .json), one row per counterfactual


def latent_probes(
    bench: Workbench, descriptors: str | Path | None = None, progress: bool = False
) -> tuple[LatentAttributes, str]:
    """Latent probes of the workbench's training descriptors (:func:`training_descriptors`) in its latent model,
    fitted as ``vcex global --reader latent`` fits them and cached under the cache folder, keyed by the latent
    model's weights, the descriptor images and their source (a latent model without a ``state_dict`` is fitted
    every time). Returns the probes and where the descriptors came from."""
    import warnings

    from vcex.attribution import LatentAttributes

    found = training_descriptors(bench, descriptors)
    model = bench.latent_model
    path = None
    if callable(getattr(model, "state_dict", None)):
        digest = hashlib.sha1(json.dumps(["LatentAttributes", found.source, type(model).__name__]).encode())
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode() + str(tensor.dtype).encode())
            # as bytes whatever the dtype (numpy has no bfloat16)
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digest.update(_image_bytes(found.images))
        if descriptors is not None:
            digest.update(Path(descriptors).read_bytes())
        # every face task shares the factor table and the generator, so their probes too
        stem = "faces" if profile_for(bench.dataset).faces else dataset_file_stem(bench.dataset)
        path = cache_dir() / f"probes-{stem}-{digest.hexdigest()[:10]}.safetensors"
        if path.exists():
            try:
                return LatentAttributes.load(path, model), found.source
            except CacheError as error:
                warnings.warn(f"cached latent probes {path} are unusable ({error}); fitting them again", stacklevel=2)
    if progress:
        import sys

        print(f"vcex: fitting latent probes on {found.source} of {len(found.images)} images", file=sys.stderr)
    probes = LatentAttributes(model).fit(found.images, found.table())
    if path is not None:
        probes.save(path)
    return probes, found.source


def counterfactual_attributions(
    bench: Workbench,
    result: CounterfactualResult,
    probes: LatentAttributes | None = None,
    *,
    read_latents: bool = True,
) -> LocalAttribution:
    """Each counterfactual's local attributions: how the workbench's descriptors (smile, beard...; stroke
    thickness, slant...) change from its original to it, read by latent probes as ``vcex global`` reads them.

    Args:
        bench: the dataset's workbench (:func:`prepare`); its latent model and training descriptors.
        result: N counterfactuals of that dataset, any method.
        probes: fitted probes (default :func:`latent_probes`, cached after the first fit).
        read_latents: read the result's own latents where they live in the workbench's latent space (the same
            width as the probes'); else, and for methods without latents, the originals and the counterfactual
            images are encoded. False: always encode (a StyleSpace attack's latents are not W).
    Returns:
        :class:`~vcex.attribution.LocalAttribution`: ``scores`` (N, A), s_a = p_a(cf) - p_a(original) in [-1, 1];
        ``ranks()`` (N, A), 1 for the largest |s_a| of a row; ``ranked(k)``: per image its top ``k`` as
        ``{"name", "change", "rank"}``.

    >>> bench = prepare("mnist")
    >>> result = CounterfactualAttack(bench.classifier, bench.latent_model).explain(bench.test.images[:4])
    >>> counterfactual_attributions(bench, result).ranked(k=3)[0]
    """
    import dataclasses

    if probes is None:
        probes, _ = latent_probes(bench)
    latents = result.original_latents
    if not read_latents or latents is None or latents[:1].flatten(1).shape[1] != probes.weights.shape[1]:
        result = dataclasses.replace(result, original_latents=None, counterfactual_latents=None)
    return probes.local(result)


def descriptor_change(
    bench: Workbench, reader: str = "latent", besides_label: bool = False
) -> Callable[[CounterfactualResult], torch.Tensor]:
    """A reader of how much counterfactuals change in the workbench's descriptors, for
    :meth:`~vcex.explainers.gcd.GCD.select_source`'s rule ``"fewest"``: it maps N counterfactuals to (N,) the sum
    over the usable descriptors of |s_a| (each s_a in [-1, 1]), each underlying attribute counted once: the faces
    describe a continuous factor twice (``smile`` and the label ``smiling``), a binary one once (``lipstick``), so
    their descriptors are merged per factor first (the largest |s_a| of a factor's descriptors, as
    :func:`vcex.evaluation.ground_truth.factor_scores` merges them).

    ``reader``: what reads the descriptors (:func:`local_reader`: ``"latent"`` probes, ``"images"``, ``"auto"``);
    it is fitted (or loaded from the cache) once, here. ``besides_label``: leave out the attributes the dataset's
    label is (the faces-smiling classifier's smile), so that what is summed is the change besides the class's
    own, as MNAC counts it with the attribute oracle; datasets whose label is no descriptor lose nothing. A dataset
    without descriptors is refused."""
    problem = no_descriptors_reason(bench.dataset)
    if problem is not None:
        raise InputError(f"no descriptors to read attribute changes with: vcex {problem}")
    read, _ = local_reader(bench, reader)
    faces = profile_for(bench.dataset).faces
    label = set(bench.label_attributes) if besides_label else set()
    if faces and label:
        from vcex.evaluation.ground_truth import descriptor_factor

        label = {descriptor_factor(name) for name in label}

    def change(result: CounterfactualResult) -> torch.Tensor:
        local = read(result)
        kept = [j for j in local.usable.nonzero().flatten().tolist() if _described(local.names[j], faces) not in label]
        groups = descriptor_groups([local.names[j] for j in kept], faces=faces)
        parts = [local.scores[:, [kept[i] for i in group]].abs().amax(1) for group in groups]
        return torch.stack(parts, 1).sum(1) if parts else torch.zeros(len(result))

    return change


def resolve_reader(dataset: str, reader: str) -> str:
    """The descriptor reader ``reader`` stands for on ``dataset`` (``"auto"``: images for faces, latent probes
    otherwise, the dataset profile's ``global_reader``); an unknown name is refused."""
    if reader not in READERS:
        raise InputError(f"unknown reader {reader!r}; use one of {', '.join(READERS)}")
    return profile_for(dataset).global_reader if reader == "auto" else reader


def local_reader(
    bench: Workbench, reader: str = "latent", *, read_latents: bool = True, progress: bool = False
) -> tuple[Callable[[CounterfactualResult], LocalAttribution], str]:
    """A function from N counterfactuals of the workbench to their local attributions (N, A), s_a = p_a(cf) -
    p_a(start), and the descriptors' source. ``reader`` as ``vcex global --reader``: ``"latent"`` (linear probes on
    the latents, :func:`counterfactual_attributions`), ``"images"`` (a CNN on the counterfactual images against
    their start, :func:`image_readers`), ``"auto"`` (images for faces, latent probes otherwise). Fitted, or loaded
    from the cache, once, here. ``read_latents``: as :func:`counterfactual_attributions` takes it (the probes).

    Raises:
        InputError: an unknown reader, or descriptors no reader can be fitted to.
    """
    reader = resolve_reader(bench.dataset, reader)
    if reader == "images":
        found = training_descriptors(bench)
        family = "faces" if profile_for(bench.dataset).faces else bench.dataset  # every face task shares the table
        images = image_readers(family, found.table(), found.images, progress=progress)
        return images.local, found.source
    probes, source = latent_probes(bench, progress=progress)
    return (lambda result: counterfactual_attributions(bench, result, probes, read_latents=read_latents)), source


def _described(name: str, faces: bool) -> str:
    """What a descriptor describes: a face descriptor's factor (``smiling`` and ``smile``: ``smile``), else itself."""
    if not faces:
        return name
    from vcex.evaluation.ground_truth import descriptor_factor

    return descriptor_factor(name)


def descriptor_groups(names: Sequence[str], *, faces: bool) -> list[list[int]]:
    """The positions of ``names`` grouped by the attribute they describe, in order of first appearance: the faces'
    descriptors by their factor (``smiling`` and ``smile`` together, ``lipstick`` alone), any other dataset's one
    group per descriptor."""
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        groups.setdefault(_described(name, faces), []).append(j)
    return list(groups.values())


def direction_attributions(
    bench: Workbench, result: CounterfactualResult, goal_class: int, k: int = 5, reader: str = "auto"
) -> dict:
    """What a transferred latent direction changes, in the workbench's descriptors: the mean local attribution
    (read by ``reader``, :func:`local_reader`; ``"auto"``, as ``vcex gcd``: the image readers on faces, the latent
    probes elsewhere) of its successful counterfactuals, each row signed so that positive is the direction's own
    way (images moved towards ``goal_class`` along +d count as they are; those moved back along -d, negated).
    Returns ``{"descriptors", "reader", "counterfactuals", "top": [{"name", "change"}, ...]}`` (the ``k`` usable
    descriptors of largest |mean change|), or ``{"reason"}`` where there is nothing to read."""
    problem = no_descriptors_reason(bench.dataset)
    if problem is not None:
        return {"reason": f"no descriptors: vcex {problem}"}
    flipped = result.select(result.success)
    if len(flipped) == 0:
        return {"reason": "no counterfactual flipped"}
    try:
        read, source = local_reader(bench, reader)
    except InputError as error:
        return {"reason": f"no readers could be fitted to the training descriptors: {error}"}
    local = read(flipped)
    sign = torch.where(flipped.target == goal_class, 1.0, -1.0)[:, None]
    mean = (local.scores * sign).mean(0)
    order = [int(j) for j in mean.abs().argsort(descending=True) if bool(local.usable[j])][:k]
    top = [{"name": local.names[j], "change": round(float(mean[j]), 4)} for j in order]
    resolved = resolve_reader(bench.dataset, reader)
    return {"descriptors": source, "reader": resolved, "counterfactuals": len(flipped), "top": top}


def write_run_attributions(
    bench: Workbench,
    out: Path,
    fingerprint: str,
    read_latents: bool = True,
    progress: bool = False,
    reader: str = "auto",
) -> dict:
    """The local attributions of every counterfactual of the run in ``out`` (its counterfactuals.safetensors, read
    in blocks of :data:`EVALUATION_BLOCK` rows, so memory stays flat) into ``out/attributions.safetensors`` (+
    ``.json``: names, reasons, the run's ``fingerprint``), one row per counterfactual in the run's order, read by
    ``reader`` (:func:`local_reader`; ``"auto"``: image readers for faces, whose latent probes read the smile and
    the eyes near chance, latent probes otherwise). A rerun computes them again from the whole file (the readers
    are cached and deterministic), so a resumed run never loses or duplicates a row. Returns metrics.json's
    ``attributions`` record; a dataset without descriptors, or whose descriptors no reader can be fitted to, gets
    a record saying why and no file."""
    from vcex.attribution import LocalAttribution

    problem = no_descriptors_reason(bench.dataset)
    if problem is not None:
        return {"file": None, "reason": f"no descriptors: vcex {problem}"}
    reader = resolve_reader(bench.dataset, reader)
    path = out / COUNTERFACTUALS_FILE
    latents = CounterfactualResult.load(path, rows=slice(0, 1)).original_latents
    try:
        read, source = local_reader(bench, reader, read_latents=read_latents, progress=progress)
    except InputError as error:  # descriptors no reader can be fitted to (a folder's): the run stands without them
        return {
            "file": None,
            "reason": f"no {READER_NAMES[reader]} could be fitted to the training descriptors: {error}",
        }
    if reader == "images":
        read_from = "the counterfactual images against the images they started from"
    else:
        width = latent_probes(bench)[0].weights.shape[1]
        from_latents = read_latents and latents is not None and latents.flatten(1).shape[1] == width
        read_from = "the counterfactuals' latents" if from_latents else "encoded originals and counterfactuals"
    parts = []
    starts = range(0, run_length(path), EVALUATION_BLOCK)
    for start in track(starts, desc="attributions", enabled=progress and len(starts) > 1, total=len(starts)):
        parts.append(read(CounterfactualResult.load(path, rows=slice(start, start + EVALUATION_BLOCK))))
    local = LocalAttribution.concatenate(parts)
    record = {"fingerprint": fingerprint, "reader": READER_NAMES[reader], "descriptors": source, "read": read_from}
    local.save(out / ATTRIBUTIONS_FILE, record)
    return _attribution_summary(local, record)


def _attribution_summary(local: LocalAttribution, record: dict) -> dict:
    """metrics.json's ``attributions`` record of a run's attributions file (its tensors and its .json record)."""
    read = {key: record[key] for key in ("reader", "descriptors", "read") if key in record}
    return {"file": ATTRIBUTIONS_FILE, **read, "names": local.names, "unusable": sorted(local.reasons)}


def read_run_attributions(
    out: str | Path, fingerprint: str | None, rows: slice | None = None
) -> LocalAttribution | None:
    """The local attributions a run wrote into ``out`` (``rows`` of them), or None where it wrote none, or where
    the file is another run's than ``fingerprint`` (a run with ``--no-attributions`` in a folder that held one)."""
    found = _load_run_attributions(out, fingerprint, rows)
    return found[0] if found is not None else None


def _load_run_attributions(
    out: str | Path, fingerprint: str | None, rows: slice | None = None
) -> tuple[LocalAttribution, dict] | None:
    """:func:`read_run_attributions` with the record saved beside them."""
    from vcex.attribution import LocalAttribution

    path = Path(out) / ATTRIBUTIONS_FILE
    if not path.is_file():
        return None
    try:
        local, record = LocalAttribution.load(path, rows=rows)
    except CacheError:
        return None
    return (local, record) if record.get("fingerprint") == fingerprint else None


def report_run(bench: Workbench, out: str | Path, progress: bool = True) -> dict:
    """``vcex report``: metrics.json, grid.png and report.html of the finished run in ``out`` rebuilt from its
    files (counterfactuals.safetensors, run.json; attributions.safetensors, shown as they are), nothing explained
    again. Entries of an earlier metrics.json that are not measured (timings, resumed chunks) are kept.

    Raises:
        InputError: ``out`` holds no finished run, or a run of another dataset than ``bench``'s.
    """
    out = Path(out)
    record = read_run_record(out)
    request = record["request"]
    if request["dataset"] != bench.dataset:
        raise InputError(f"{out} is a run on {request['dataset']}, not {bench.dataset}")
    old = {}
    if (out / "metrics.json").is_file():
        with contextlib.suppress(ValueError, OSError):
            old = json.loads((out / "metrics.json").read_text())
    old = old if isinstance(old, dict) else {}
    metrics = {**old, **evaluate_run(bench, out, progress=progress)}
    metrics["device"] = old.get("device", metrics["device"])  # where the counterfactuals were made
    metrics.update(run_settings(record, request["options"], request["preset"], request["target"], request["split"]))
    if request.get("classifier") is not None:
        metrics["classifier"] = request["classifier"]
    attributions = _load_run_attributions(out, record["fingerprint"], rows=slice(0, 1))
    if attributions is not None:  # the run's own record of them, in case metrics.json was lost
        metrics["attributions"] = _attribution_summary(*attributions)
    write_run_outputs(bench, out, metrics, record)
    return metrics


def read_run_record(out: str | Path) -> dict:
    """The run.json of a finished ``vcex explain`` run folder (what it explained, its chunk folder).

    Raises:
        InputError: no finished run in ``out`` (with what to do).
    """
    out = Path(out)
    try:
        record = json.loads((out / RUN_RECORD).read_text())
        run_length(out / COUNTERFACTUALS_FILE)
        if not isinstance(record, dict) or "request" not in record:
            raise ValueError("no request in it")
    except (OSError, ValueError, SafetensorError) as error:
        unfinished = (
            " (its chunks are there: rerun the same vcex explain command to finish it)"
            if (out / "chunks").is_dir()
            else ""
        )
        raise InputError(
            f"{out} holds no finished vcex explain run (run.json and counterfactuals.safetensors){unfinished}: {error}"
        ) from error
    return record


def explain_status(out: str | Path, request: dict | None = None) -> list[dict]:
    """How far each explain run in ``out`` is, read from its chunk folders' run.json and chunk files (nothing is
    loaded or computed): per fingerprint its ``chunks_done`` / ``chunks``, ``images_done`` / ``n``, the last write
    time (``last_write``, UTC ISO, or None), whether out's finished files are this run's (``finished``) and
    whether its request equals ``request`` (:func:`explain_request` of the command asking; ``matches``)."""
    out = Path(out)
    finished = None
    with contextlib.suppress(OSError, ValueError):
        finished = json.loads((out / RUN_RECORD).read_text()).get("fingerprint")
    runs = []
    for record_path in sorted((out / "chunks").glob(f"*/{RUN_RECORD}")):
        try:
            record = json.loads(record_path.read_text())
            n, size = int(record["request"]["n"]), int(record["chunk_size"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a run folder this version wrote
        done = [start for start in range(0, n, size) if chunk_path(record_path.parent, start).is_file()]
        times = [chunk_path(record_path.parent, start).stat().st_mtime for start in done]
        runs.append(
            {
                "fingerprint": record_path.parent.name,
                "chunks_done": len(done),
                "chunks": math.ceil(n / size),
                "images_done": sum(min(size, n - start) for start in done),
                "n": n,
                "last_write": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(times))) if times else None,
                "finished": record_path.parent.name == finished,
                "matches": request is not None and record["request"] == request,
                "request": record["request"],
            }
        )
    return runs


def explain_fingerprint(
    bench: Workbench,
    method: str,
    preset: str,
    target: TargetSpec,
    explainer: Explainer,
    images: torch.Tensor,
    options: Mapping[str, object],
) -> str:
    """12 hex digits naming one explain job's chunk folder (``out/chunks/<fingerprint>``): the method, its
    settings, the target rule, the dataset, the images' bytes and a user's classifier. Any change gives a new
    folder, so a rerun never reuses another job's chunks."""
    record = {
        "method": method,
        "preset": preset,
        "target": _target_key(target),
        "settings": explainer.settings(),
        "dataset": bench.dataset,
        "space": str(options.get("space") or "latent"),
        "whiten": bool(options.get("whiten")),
        "invert_steps": int(options.get("invert_steps") or 0),
        "images": hashlib.sha1(_image_bytes(images)).hexdigest(),
        # a user's classifier by its file's hash or entry point: another model never reuses these chunks
        **({"classifier": bench.classifier_source} if bench.classifier_source is not None else {}),
        **({"latent_model": bench.latent_source} if bench.latent_source is not None else {}),
    }
    return hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:12]


def chunk_path(chunk_dir: Path, start: int) -> Path:
    """The file of the chunk that begins at image ``start``."""
    return chunk_dir / f"{start:08d}.safetensors"


def explain_chunk(
    explainer: Explainer,
    images: torch.Tensor,
    target: TargetSpec,
    start: int,
    chunk_size: int,
    chunk_dir: Path,
) -> tuple[CounterfactualResult, bool]:
    """Images ``start`` to ``start + chunk_size`` of ``images`` (N, C, H, W) explained, or read back from their
    chunk file when a finished one is there. Returns the chunk's result and whether it was read back."""
    n = len(images)
    path = chunk_path(chunk_dir, start)
    if path.exists():
        try:
            part = CounterfactualResult.load(path)
            if len(part) == min(chunk_size, n - start):
                return part, True
        except CacheError:
            pass  # a chunk cut short by an interruption is simply recomputed
    chunk_target = target[start : start + chunk_size] if isinstance(target, torch.Tensor) else target
    part = explainer.explain(images[start : start + chunk_size], target=chunk_target)
    part.save(path)
    return part, False


def _target_key(target: TargetSpec) -> str:
    """A rule or class as text; a tensor of targets by a hash of its values (its repr elides long tensors)."""
    if isinstance(target, torch.Tensor):
        values = target.detach().to("cpu", torch.long).contiguous().numpy().tobytes()
        return f"tensor:{len(target)}:{hashlib.sha1(values).hexdigest()[:16]}"
    return str(target)


def write_outputs(
    out: str | Path,
    result: CounterfactualResult,
    metrics: dict,
    explainer: Explainer | None = None,
    *,
    saved: bool = False,
    explorer_images: int = PATH_IMAGES,
    local: LocalAttribution | None = None,
) -> None:
    """metrics.json, counterfactuals.safetensors (+ .json) and grid.png in ``out``, and for ``vcex serve`` the
    paths from original to counterfactual of the first ``explorer_images`` images (0: none), decoded and scored
    by ``explainer``'s models (:func:`vcex.report.paths.write_paths`; without an explainer only DISC's), with
    ``local`` (one row per image of ``result``), the local attributions, where given.
    ``saved``: the run's counterfactuals.safetensors is written already (a streamed run) and ``result`` holds
    only its first rows (:data:`PREVIEW_ROWS`), for the pictures and the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    if not saved:
        result.save(out / COUNTERFACTUALS_FILE)
    save_png(result_grid(result, 16), out / "grid.png")
    write_paths(out, result, explainer, max_images=explorer_images, local=local)


# the descriptor readers of `vcex global --reader`: linear probes on latents (the paper's) or a CNN on images;
# "auto" reads faces from the images (true driver first for 37 of 40 classifiers against 28 by latent probes,
# docs/benchmarks/faces-global*.md) and digits by latent probes (no ground truth there to prefer another)
READERS = ("auto", "latent", "images")


# image readers that ship with vcex (scripts/ship_readers.py): the faces', so that the first faces run trains none
SHIPPED_READERS = Path(__file__).resolve().parent / "weights" / "readers"


def image_readers(
    dataset: str, descriptors: Descriptors, images: torch.Tensor, progress: bool = True
) -> ImageAttributes:
    """:class:`vcex.attribution.ImageAttributes` for ``dataset``'s descriptor images: the shipped ones where they
    were trained with these settings on this table (the faces'), else trained on first use and cached (~1.5 min
    on 1 CPU thread for 12,000 faces). Blur augmentation up to the attribute oracle's sigma,
    so the readers see attributes through a generator's softness."""
    from vcex.attribution import ImageAttributes

    readers = _new_image_readers(dataset, progress)
    shipped, path = image_reader_paths(dataset, descriptors, images, readers)
    for found in (shipped, path):
        if found.exists():
            return ImageAttributes.load(found)
    readers.fit(images, descriptors)
    readers.save(path)
    return readers


def _new_image_readers(dataset: str, progress: bool) -> ImageAttributes:
    from vcex.attribution import ImageAttributes
    from vcex.models.zoo import ATTRIBUTE_ORACLE_BLUR

    epochs = profile_for(dataset).image_reader_epochs
    return ImageAttributes(max_blur=ATTRIBUTE_ORACLE_BLUR, epochs=epochs, progress=progress)


def image_reader_paths(
    dataset: str, descriptors: Descriptors, images: torch.Tensor, readers: ImageAttributes | None = None
) -> tuple[Path, Path]:
    """(shipped file, cache file) of ``dataset``'s image readers with ``readers``' settings (default: the
    profile's). Both names hold a digest of the settings, descriptor names, image shape and descriptor values; the
    cache's also of a sample of the images, so another image set never reuses a cache. The shipped one leaves the
    pixels out: the built-in faces are defined by their factor table, and a renderer's last bits may differ
    between CPUs."""
    readers = readers or _new_image_readers(dataset, progress=False)
    settings = {"readers": "ImageAttributes", "max_blur": readers.max_blur, "epochs": readers.epochs}
    key = {"dataset": dataset, "names": descriptors.names, "images": list(images.shape), **settings}
    digest = hashlib.sha1(json.dumps(key).encode())
    digest.update(descriptors.table().numpy().tobytes())
    stem = dataset_file_stem(dataset)
    shipped = SHIPPED_READERS / f"readers-{stem}-{digest.hexdigest()[:10]}.safetensors"
    digest.update(images[:: max(1, len(images) // 64)].numpy().tobytes())
    return shipped, cache_dir() / f"readers-{stem}-{digest.hexdigest()[:10]}.safetensors"


LATER_ROUNDS = ("whitened", "same")  # the attack of explaining away's later rounds
# how explaining away's later rounds choose their winner; auto: residual when round 1 is in the raw latent (it
# found one route cleanly), raw when round 1 is whitened (its pattern often mixes the routes already)
ROUND_SCORES = ("auto", "residual", "raw")


def check_global_options(
    dataset: str,
    reader: str,
    rounds: int,
    later_rounds: str | None = None,
    round_scores: str | None = None,
    descriptors: str | Path | None = None,
) -> str:
    """Check ``vcex global``'s reader, rounds and descriptor CSV for a dataset before anything is trained;
    returns the reader that ``"auto"`` stands for (images for faces, latent probes for digits)."""
    reader = resolve_reader(dataset, reader)  # an unknown dataset is refused here too, naming the known ones
    faces = profile_for(dataset).faces
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"--rounds must be an integer >= 1, got {rounds!r}")
    if later_rounds is not None and later_rounds not in LATER_ROUNDS:
        raise InputError(f"unknown --later-rounds {later_rounds!r}; use one of {', '.join(LATER_ROUNDS)}")
    resolve_round_scores(round_scores, whiten=False)  # refuses an unknown value
    given = [flag for flag, value in (("--later-rounds", later_rounds), ("--round-scores", round_scores)) if value]
    if rounds == 1 and given:
        raise InputError(
            f"{' and '.join(given)} set{'s' if len(given) == 1 else ''} how explaining away's rounds 2 and on run, "
            "and there is one round: add --rounds 3 (say), or drop " + ("it" if len(given) == 1 else "them")
        )
    if rounds > 1 and not faces:
        raise InputError(
            "--rounds > 1 (explaining away) needs a binary classifier's flip counterfactuals: use --dataset faces"
        )
    if rounds > 1 and reader != "images":
        raise InputError("--rounds > 1 holds descriptors through the image readers: use --reader images (or auto)")
    if descriptors is not None:
        if not dataset.startswith(FOLDER_PREFIX):
            raise InputError(
                "--descriptors reads a CSV naming images by file, for --dataset folder:PATH; the built-in datasets "
                "bring their own descriptors"
            )
        folder_descriptors(dataset, descriptors)  # refuses a bad CSV now, not after training
    else:
        problem = no_descriptors_reason(dataset)
        if problem is not None:
            raise InputError(
                f"vcex global {problem}; give descriptors of your own: --descriptors CSV, with a 'file' column "
                "(cat/001.png) and one numeric column per descriptor"
            )
    return reader


def no_descriptors_reason(dataset: str) -> str | None:
    """Why ``dataset`` has no built-in descriptors of its training images, or None when it has them: the faces'
    factor table, and morphometrics for MNIST, Fashion-MNIST and grayscale folders (colour folders have none)."""
    if not dataset.startswith(FOLDER_PREFIX):
        return None
    channels = load_dataset(dataset, "train").image_shape[0]
    if channels == 1:
        return None
    return (
        f"describes a folder's images by their morphometrics (stroke thickness, slant, width...), which need "
        f"grayscale images, and {dataset} holds {channels}-channel images"
    )


def folder_descriptors(dataset: str, csv_path: str | Path) -> Descriptors:
    """The descriptors of a folder dataset's training images from a CSV with a ``file`` column."""
    from vcex.attribution import Descriptors

    return Descriptors.from_csv(csv_path, files=load_dataset(dataset, "train").files)


def resolve_round_scores(round_scores: str | None, whiten: bool) -> str:
    """What ``--round-scores auto`` stands for: residual after a first round in the raw latent, raw after a
    whitened one (on the faces benchmark a whitened first round's pattern often holds the shortcut already,
    and the residual then removes it; docs/benchmarks/faces-global.md)."""
    round_scores = round_scores or "auto"
    if round_scores not in ROUND_SCORES:
        raise InputError(f"unknown --round-scores {round_scores!r}; use one of {', '.join(ROUND_SCORES)}")
    if round_scores == "auto":
        return "raw" if whiten else "residual"
    return round_scores


def run_global(
    bench: Workbench,
    n: int,
    out: str | Path,
    *,
    progress: bool = True,
    resamples: int = 1000,
    reader: str = "auto",
    rounds: int = 1,
    later_rounds: str | None = None,
    round_scores: str | None = None,
    descriptors: str | Path | None = None,
    from_run: str | Path | None = None,
    **options: object,
) -> dict:
    """Global explanation of the workbench's classifier: which descriptors its counterfactuals change.

    ``reader="latent"`` (the paper's): probes fitted on training latents read the counterfactuals' latents.
    ``reader="images"``: :class:`~vcex.attribution.ImageAttributes` read the counterfactual images against
    the attack's start (its reconstruction); on the synthetic faces they ranked the true driver first for 63
    of 70 classifiers against 50 for the probes (docs/benchmarks/faces-global.md). ``"auto"``: images for
    faces, latent probes otherwise.
    Either way a held-out split is reported, and readers that do not beat chance are listed, not ranked.
    ``rounds > 1`` (faces, image readers): explaining away (:func:`~vcex.attribution.explain_away`), each later
    round attacks the same faces holding the factors won so far, so a shortcut behind the cheapest route shows;
    ``later_rounds="whitened"`` (the default, None) runs those rounds in the whitened latent (in a trial on two shortcut
    classifiers, later rounds in raw W never found the shortcut), ``"same"`` with round 1's attack. Later
    rounds are kept in ``out/rounds`` and reused by a rerun with the same settings. ``round_scores="residual"``
    gives each later round to what the earlier rounds' patterns leave unexplained
    (:func:`~vcex.attribution.residual_scores`), so side effects of a held factor do not win (a planted
    background in the top 3 of 40 of 40 shortcut classifiers, against 36 raw); ``"raw"``: the top |S|;
    ``"auto"`` (the default, None): residual when round 1 is in the raw latent, raw when it is whitened, whose
    pattern often holds the second route already (26 of 40 residual, 36 raw). Both are refused with one round.
    MNIST/Fashion: Morpho-MNIST descriptors, the attack explains the first ``n`` test images toward their
    runner-up class, one explanation per target class. Faces: the
    renderer's factor table, the attack flips the binary classifier, S_a = mean_i d_i s_a,i with
    d_i = +1 toward the positive class; the linear-edit (InterFaceGAN) baseline along the classifier's
    own latent direction is scored beside it. Bootstrap intervals throughout. Writes ``global.json``,
    one bar chart per explanation and ``global.html`` into ``out``. Folders of the user's images
    (``folder:PATH``): morphometrics of grayscale images, or the descriptors of a CSV (``descriptors``, one row
    per image file, see :meth:`~vcex.attribution.Descriptors.from_csv`).
    ``from_run``: the --out folder of a finished ``vcex explain`` run of this dataset and classifier, whose first
    ``n`` counterfactuals are read (:func:`counterfactuals_from_run`) instead of attacking again; ``options``
    (the attack's) are then not used.
    """
    if from_run is None and (n < 1 or n > len(bench.test)):
        raise InputError(f"--n must lie in [1, {len(bench.test)}] for {bench.dataset}'s test split, got {n}")
    if from_run is not None and rounds > 1:
        raise InputError("--rounds > 1 attacks the images again in its later rounds; with --from-run use one round")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reader = check_global_options(bench.dataset, reader, rounds, later_rounds, round_scores, descriptors)
    if from_run is not None:
        images, result = counterfactuals_from_run(bench, from_run, n, reader)
        n, explainer = len(result), None
    fitted = fit_global_readers(bench, reader, descriptors, progress=progress)
    if from_run is None:
        explainer, images, result = explain_for_global(bench, n, progress=progress, **options)
    explanations, attribution_seconds = attribute_global(bench, fitted.readers, result, resamples)
    away = None
    if rounds > 1:
        away, round_settings = _explain_away_rounds(
            bench, explainer, fitted.readers, images, result, out, rounds, later_rounds, round_scores, resamples,
            progress=progress, **options,
        )  # fmt: skip
        for index, (held, explanation) in enumerate(zip(away.held[1:], away.rounds[1:]), start=2):
            explanations[f"round {index}, holding {', '.join(held)}"] = explanation
    if profile_for(bench.dataset).faces:
        explanations["linear baseline"] = _linear_baseline(bench, fitted.probes, images, resamples)
    record = {
        "dataset": bench.dataset,
        "n": n,
        "valid_counterfactuals": int(result.success.sum()),
        "attack_settings": result.settings,  # the threshold (one, or one per class), lr, steps, ...
        "descriptors": fitted.source,
        "whiten": bool(options.get("whiten")),
        "reader": reader,
        **({"from_run": str(Path(from_run).resolve())} if from_run is not None else {}),
        **({"classifier": bench.classifier_source} if bench.classifier_source is not None else {}),
        "probe_fit_seconds": round(fitted.seconds, 3),
        "counterfactual_seconds": round(result.seconds, 3),
        "attribution_seconds": round(attribution_seconds, 4),
        "probes": fitted.probes.summary(),
        **(
            {"image_readers": fitted.readers.summary(), "reader_train_seconds": fitted.readers.train_seconds}
            if reader == "images"
            else {}
        ),
        "classes": {name: explanation.to_json() for name, explanation in explanations.items()},
    }
    if away is not None:  # each round's explanation is already under "classes"
        summary = away.to_json()
        summary["rounds"] = [{k: v for k, v in round_.items() if k != "explanation"} for round_ in summary["rounds"]]
        record["explain_away"] = {
            **summary,
            **round_settings,
            "seconds": round(sum(r.seconds for r in away.results[1:]), 3),
        }
    write_global(bench, explanations, record, out)
    # rounds > 1: the explorer shows round 1's counterfactuals, those the first explanation averages
    method = "attack" if from_run is None else read_run_record(from_run)["request"]["method"]
    write_global_run(bench, explainer, fitted.readers, result, out, method)
    return record


@dataclass
class GlobalReaders:
    """What reads the counterfactuals' descriptors in ``vcex global``: ``probes`` (latent probes, always fitted:
    they also read the linear baseline), ``readers`` (the probes, or image readers), where the descriptors came
    from and the seconds the descriptors and probes took."""

    probes: LatentAttributes
    readers: LatentAttributes | ImageAttributes
    source: str
    seconds: float


def fit_global_readers(
    bench: Workbench, reader: str, descriptors: str | Path | None, progress: bool = True
) -> GlobalReaders:
    """Step 1 of :func:`run_global`: the descriptors of the training images (a CSV's for a folder, the renderer's
    factor table for faces, morphometrics otherwise), latent probes fitted on them and, for ``reader="images"``
    (resolved, not ``"auto"``), the image readers (trained on first use, cached)."""
    from vcex.attribution import LatentAttributes

    started = time.perf_counter()
    found = training_descriptors(bench, descriptors)
    table = found.table()
    probes = LatentAttributes(bench.latent_model).fit(found.images, table)
    seconds = time.perf_counter() - started
    readers = probes
    if reader == "images":
        family = "faces" if profile_for(bench.dataset).faces else bench.dataset  # every face task shares the table
        readers = image_readers(family, table, found.images, progress=progress)
    return GlobalReaders(probes, readers, found.source, seconds)


@dataclass
class TrainingDescriptors:
    """The descriptors of a workbench's training images (see :func:`training_descriptors`): where they come from
    (``source``), the (M, C, H, W) ``images`` they describe, and :meth:`table`, measured on first call (the
    morphometrics of Fashion-MNIST's 60,000 training images take ~1.5 min on one CPU thread)."""

    source: str
    images: torch.Tensor
    measure: Callable[[], Descriptors] = field(repr=False)
    _table: Descriptors | None = field(default=None, repr=False)

    def table(self) -> Descriptors:
        if self._table is None:
            self._table = self.measure()
        return self._table


def training_descriptors(bench: Workbench, descriptors: str | Path | None = None) -> TrainingDescriptors:
    """The descriptors probes are fitted on: a CSV's for a folder (``descriptors``), the renderer's factor table
    for faces (its own training faces), morphometrics of the training images otherwise."""
    from vcex.attribution import Descriptors

    if descriptors is not None:
        source = f"CSV {Path(descriptors).resolve()}"
        return TrainingDescriptors(source, bench.train.images, lambda: folder_descriptors(bench.dataset, descriptors))
    if profile_for(bench.dataset).faces:
        from vcex.data.faces_tasks import load_face_table

        faces_table = load_face_table("train")
        return TrainingDescriptors(
            "synthetic faces factor table", faces_table.images, lambda: Descriptors.from_faces(faces_table)
        )
    return TrainingDescriptors(
        "morphometrics", bench.train.images, lambda: Descriptors.from_morphometrics(bench.train.images)
    )


def explain_for_global(
    bench: Workbench, n: int, progress: bool = True, **options: object
) -> tuple[Explainer, torch.Tensor, CounterfactualResult]:
    """Step 2 of :func:`run_global`: the attack (``options``: build_explainer's) on the first ``n`` test images,
    toward the profile's target (runner-up; faces: the other class). Returns the explainer, the (n, C, H, W)
    images and the result, whose latents are the latent model's own (a whitened attack's are mapped back)."""
    explainer = build_explainer("attack", bench, progress=progress, **options)
    images = bench.test.images[:n]
    result = explainer.explain(images, target=profile_for(bench.dataset).global_target)
    if isinstance(explainer.latent_model, WhitenedLatentModel):
        result = explainer.latent_model.to_base_result(result)  # the probes read the latent model's own latents
    return explainer, images, result


def counterfactuals_from_run(
    bench: Workbench, run_dir: str | Path, n: int | None = None, reader: str = "latent"
) -> tuple[torch.Tensor, CounterfactualResult]:
    """The first ``n`` (all when None) counterfactuals of a finished ``vcex explain`` run in ``run_dir``, in place
    of :func:`explain_for_global`: returns the (n, C, H, W) originals and the result (its latents are the latent
    model's own: a whitened run saved them mapped back).

    Raises:
        InputError: no finished run there, a run of another dataset or classifier, or a run without latents
            for ``reader="latent"``.
    """
    request = read_run_record(run_dir)["request"]
    if request["dataset"] != bench.dataset:
        raise InputError(
            f"--from-run {run_dir} explained {request['dataset']}, not {bench.dataset}: give --dataset of that run, "
            f"or a run of {bench.dataset}"
        )
    if request.get("classifier") != json.loads(json_text(bench.classifier_source)):
        theirs = request.get("classifier") or "the zoo's classifier"
        raise InputError(f"--from-run {run_dir} explained another classifier ({theirs}); give the same --classifier")
    total = run_length(Path(run_dir) / COUNTERFACTUALS_FILE)
    result = load_run(run_dir, rows=slice(0, total if n is None else min(n, total)))
    if reader == "latent" and result.counterfactual_latents is None:
        raise InputError(
            f"--from-run {run_dir} was made by {result.method}, which saves no latents for the latent probes to "
            "read: use --reader images, or a run of a latent method (e.g. --method attack)"
        )
    return result.originals, result


def attribute_global(
    bench: Workbench, readers: LatentAttributes | ImageAttributes, result: CounterfactualResult, resamples: int
) -> tuple[dict, float]:
    """Step 3 of :func:`run_global`: global scores of the counterfactuals that reached the target, read by
    ``readers``: one explanation for faces (signed toward the positive class), one per target class otherwise.
    Returns {name: GlobalExplanation} and the seconds it took.

    Raises:
        InputError: no counterfactual reached the threshold.
    """
    from vcex.attribution import directions_from_result, global_scores, global_scores_by_class

    started = time.perf_counter()
    reached = result.select(result.success)
    if len(reached) == 0:
        raise InputError(
            f"none of the {len(result)} counterfactuals reached the threshold, so there is nothing to average; "
            "lower --threshold or raise --n"
        )
    if profile_for(bench.dataset).faces:
        local, directions = readers.local(reached), directions_from_result(reached)
        explanations = {"attack": global_scores(local, directions, resamples=resamples, label="CounterfactualAttack")}
    else:
        by_class = global_scores_by_class(readers.local(reached), reached, resamples=resamples)
        explanations = {bench.test.class_names[k]: explanation for k, explanation in by_class.items()}
    return explanations, time.perf_counter() - started


def _explain_away_rounds(
    bench: Workbench,
    explainer: Explainer,
    readers: ImageAttributes,
    images: torch.Tensor,
    first: CounterfactualResult,
    out: Path,
    rounds: int,
    later_rounds: str | None,
    round_scores: str | None,
    resamples: int,
    progress: bool = True,
    **options: object,
) -> tuple[ExplainAway, dict]:
    """Explaining away's rounds 2 and on (:func:`~vcex.attribution.explain_away`), checkpointed in ``out/rounds``;
    returns its outcome and the settings the rounds ran with (for global.json)."""
    from vcex.attribution import explain_away
    from vcex.evaluation.ground_truth import descriptor_factor

    whiten = (later_rounds or "whitened") == "whitened" or bool(options.get("whiten"))
    round_scores = resolve_round_scores(round_scores, bool(options.get("whiten")))
    later = build_explainer("attack", bench, progress=progress, **{**options, "whiten": whiten})
    away = explain_away(
        explainer, readers, images, rounds=rounds, groups=descriptor_factor, first=first, later=later,
        checkpoint=out / "rounds", residual=round_scores == "residual", resamples=resamples,
    )  # fmt: skip
    return away, {"later_rounds": "whitened" if whiten else "same", "round_scores": round_scores}


def _linear_baseline(bench: Workbench, probes: LatentAttributes, images: torch.Tensor, resamples: int) -> object:
    """The linear-edit (InterFaceGAN) baseline's global explanation: the probes read the classifier's own latent
    direction at the explained images' latents."""
    from vcex.attribution import linear_direction_scores

    linear = build_explainer("linear", bench)  # its latent probe is fitted on the training images
    beta = (linear.weight[1] - linear.weight[0]).cpu()
    with torch.no_grad():
        latents = torch.cat([bench.latent_model.encode(c) for c in images.split(256)])
    return linear_direction_scores(probes, latents, beta, resamples=resamples)


GLOBAL_RUN_FOLDER = "explained"  # vcex global's explained images as a run, in a subfolder of its --out


def write_global_run(
    bench: Workbench,
    explainer: Explainer | None,
    readers: LatentAttributes | ImageAttributes,
    result: CounterfactualResult,
    out: Path,
    method: str,
    max_images: int = PATH_IMAGES,
) -> Path:
    """Step 5 of :func:`run_global`: the first ``max_images`` explained images as a run that ``vcex serve OUT``
    shows beside the global bars, in ``out/explained`` (:func:`write_outputs`: metrics.json, their
    counterfactuals.safetensors, grid.png and the explorer's paths), with each image's local attributions: how
    ``readers`` see each descriptor change from its start to its counterfactual, the rows the global scores average
    (over the valid ones). ``explainer`` None (``--from-run``): the paths are decoded and scored by the workbench's
    models. ``method``: the run's CLI method name, for the explorer's filter. Returns the run's folder."""
    head = result.select(torch.arange(min(max_images, len(result))))
    if explainer is None:  # write_paths reads only an explainer's classifier and latent model (and batch size)
        from types import SimpleNamespace

        explainer = SimpleNamespace(classifier=bench.classifier, latent_model=bench.latent_model)
    metrics = {
        "method": method,
        "dataset": bench.dataset,
        "n": len(result),
        "validity": result.validity,
        "shown": len(head),  # the first images of the run, not all of them
        "made_by": "vcex global",
    }
    run = out / GLOBAL_RUN_FOLDER
    write_outputs(run, head, metrics, explainer, local=readers.local(head))
    return run


READER_TEXT = {
    "latent": "probes fitted on training latents read the counterfactuals' latents",
    "images": "image readers trained on the training images read the counterfactual images (the linear "
    "baseline's direction is read by the latent probes)",
}


ONE_ROUND_HINT = (
    "<p>One round shows the classifier's cheapest route to the other class. A factor it also reads behind that "
    "route (a shortcut) shows with <code>--rounds 3</code> (explaining away, read by the image readers): on 40 "
    "synthetic-face classifiers that relied on a planted background, it put the background in the top 3 for 40, "
    "one round for 4 (docs/benchmarks/faces-global.md).</p>"
)


def _away_paragraph(away: dict | None, faces: bool = False) -> str:
    """The report's paragraph on explaining away's rounds; for a one-round faces run, where to look further."""
    if away is None:
        return ONE_ROUND_HINT if faces else ""
    rounds = "; ".join(
        f"round {k}: {winner} ({r['valid_counterfactuals']} valid)"
        for k, (winner, r) in enumerate(zip(away["winners"], away["rounds"]), start=1)
    )
    stopped = f" Stopped early: {away['stopped']}." if away["stopped"] else ""
    return (
        f"<p>Explaining away: each round after the first attacks the same images "
        f"({'in the whitened latent' if away['later_rounds'] == 'whitened' else 'with the same attack'}) holding the "
        f"factors won before it"
        + (
            ", and is won by what the earlier rounds' patterns of change leave unexplained"
            if away.get("round_scores") == "residual"
            else ""
        )
        + f". Winners: {rounds}. Ranking: {', '.join(away['ranking'][:5])}.{stopped}</p>"
    )


def write_global(bench: Workbench, explanations: dict, record: dict, out: Path) -> None:
    """Step 4 of :func:`run_global`: ``global.json`` (``record``), one bar chart per explanation
    (``global-K.png``) and ``global.html`` into ``out``."""
    write_json(out / "global.json", record)
    from vcex.report.charts import ranked_bar_chart
    from vcex.report.images import png_data_uri

    figures = []
    for k, (name, explanation) in enumerate(explanations.items()):
        rows = explanation.ranked()
        if not rows:
            continue
        heading = name if profile_for(bench.dataset).faces else f"toward {name}"
        chart = ranked_bar_chart(rows, f"{heading}: mean change in descriptor probability (n={explanation.n})")
        save_png(chart, out / f"global-{k}.png")
        figures.append(f'<img src="{png_data_uri(chart)}">')
    (out / "global.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>global explanation</title><h1>{bench.dataset}: what the "
        f"counterfactuals change</h1><p>{record['valid_counterfactuals']} valid counterfactuals of {record['n']} "
        f"test images; {READER_TEXT[record['reader']]}, intervals are 95% bootstrap.</p>"
        + _away_paragraph(record.get("explain_away"), faces=profile_for(bench.dataset).faces)
        + "".join(figures),
        encoding="utf-8",
    )
