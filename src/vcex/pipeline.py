"""End-to-end runs shared by the CLI, the demo and the benchmarks: models -> explainer -> metrics -> files."""

from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from vcex.cache import cache_dir
from vcex.data import ImageDataset, canonical_dataset_name, load_dataset
from vcex.errors import CacheError, InputError, VcexError
from vcex.evaluation import evaluate
from vcex.explainers import (
    AmortizedCounterfactual,
    CounterfactualAttack,
    CounterfactualResult,
    Explainer,
    LinearLatentEdit,
    PixelAttack,
)
from vcex.explainers.base import TargetSpec
from vcex.models import KNNOracle, load_knn_oracle, load_model
from vcex.progress import track
from vcex.report import result_grid, save_png

METHODS = ("attack", "pixel", "linear", "amortized")
# how the CLI's amortized explainer is fitted on first use (~3 min for MNIST's 4,000 training images on 1 CPU thread)
AMORTIZED_FIT = {"epochs": 30, "batch_size": 64, "lr": 3e-3, "seed": 0}
PRESETS = ("vcex", "paper")


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


def prepare(dataset: str, progress: bool = True) -> Workbench:
    """Load (training on first use) the classifier, oracles, latent model and realism autoencoders."""
    name = canonical_dataset_name(dataset)
    steps = ["cnn", "oracle", "vae", "im-ae"]
    models = {}
    for role in track(steps, desc=f"models for {name}", enabled=progress):
        models[role] = load_model(f"{name}-{role}", progress=progress)
    return Workbench(
        dataset=name,
        train=load_dataset(name, "train"),
        test=load_dataset(name, "test"),
        classifier=models["cnn"],
        latent_model=models["vae"],
        oracle=models["oracle"],
        knn=load_knn_oracle(name),
        autoencoders=models["im-ae"],
    )


def build_explainer(
    method: str, bench: Workbench, *, preset: str = "vcex", progress: bool = False, **options: object
) -> Explainer:
    """An explainer by CLI name (``attack``, ``pixel``, ``linear``) with ``options`` overriding its defaults."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}")
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    options = {k: v for k, v in options.items() if v is not None}
    classifier, latent_model = bench.classifier, bench.latent_model
    if "device" in options:
        # the workbench's models stay on the CPU for evaluation; the explainer gets its own copies
        device = torch.device(options["device"])
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {device} was asked for, but torch sees no CUDA device here; use --device cpu")
        classifier, latent_model = copy.deepcopy(classifier).to(device), copy.deepcopy(latent_model).to(device)
    if method == "attack":
        if preset == "paper":
            return CounterfactualAttack.paper(classifier, latent_model, progress=progress, **options)
        return CounterfactualAttack(classifier, latent_model, progress=progress, **options)
    if preset == "paper":
        options.setdefault("threshold", 0.75)
    if method == "amortized":
        return _amortized_explainer(bench, classifier, latent_model, progress, options)
    if method == "pixel":
        options.pop("objective", None)
        return PixelAttack(classifier, progress=progress, **options)
    options = {k: v for k, v in options.items() if k in ("threshold", "batch_size", "device", "probe_c")}
    return LinearLatentEdit(classifier, latent_model, progress=progress, **options).fit(bench.train.images)


def _amortized_explainer(
    bench: Workbench, classifier: torch.nn.Module, latent_model: torch.nn.Module, progress: bool, options: dict
) -> AmortizedCounterfactual:
    """Load the amortized explainer fitted for these models and settings, or fit it on the training set and cache it."""
    settings = {k: options[k] for k in ("threshold", "refine_steps", "batch_size", "device") if k in options}
    if "lr" in options:
        settings["lr_refine"] = options["lr"]
    explainer = AmortizedCounterfactual(classifier, latent_model, progress=progress, **settings)
    key = json.dumps({**explainer.fit_settings(), **AMORTIZED_FIT, **explainer.models_record()}, sort_keys=True)
    path = cache_dir() / f"amortized-{bench.dataset}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.safetensors"
    if path.exists():
        try:
            return AmortizedCounterfactual.load(path, classifier, latent_model, progress=progress, **settings)
        except VcexError as error:
            warnings.warn(f"cached amortized explainer {path} is unusable ({error}); fitting it again", stacklevel=2)
    checkpoint = path.with_name(path.name + ".ckpt")  # an interrupted fit resumes from here
    explainer.fit(bench.train.images, **AMORTIZED_FIT, checkpoint=checkpoint, progress=progress)
    explainer.save(path)
    checkpoint.unlink(missing_ok=True)
    return explainer


def parse_target(text: str) -> TargetSpec:
    """CLI target: a class index or a rule name."""
    return int(text) if text.lstrip("-").isdigit() else text


def evaluate_result(result: CounterfactualResult, bench: Workbench, device: str = "cpu") -> dict:
    """metrics.json for a result of this workbench's dataset."""
    return evaluate(
        result,
        dataset=bench.dataset,
        oracle=bench.oracle,
        knn=bench.knn,
        autoencoders=bench.autoencoders,
        latent_model=bench.latent_model,
        device=device,
    )


def run_explain(
    bench: Workbench,
    method: str,
    n: int,
    target: TargetSpec,
    out: str | Path,
    *,
    preset: str = "vcex",
    chunk_size: int = 100,
    progress: bool = True,
    **options: object,
) -> tuple[CounterfactualResult, dict]:
    """Explain the first ``n`` test images and write metrics.json, counterfactuals.safetensors, grid.png.

    Results are written chunk by chunk under ``out/chunks``; a rerun with the same settings reuses
    finished chunks, so an interrupted long job resumes where it stopped.
    """
    if n < 1 or n > len(bench.test):
        raise InputError(f"--n must lie in [1, {len(bench.test)}] for {bench.dataset}'s test split, got {n}")
    out = Path(out)
    # only the amortized explainer's one-off fit gets a bar; explaining is tracked per chunk below
    explainer = build_explainer(method, bench, preset=preset, progress=progress and method == "amortized", **options)
    images = bench.test.images[:n]
    fingerprint = hashlib.sha1(
        json.dumps(
            {
                "method": method,
                "preset": preset,
                "target": str(target),
                "settings": explainer.settings(),
                "dataset": bench.dataset,
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:12]
    chunk_dir = out / "chunks" / fingerprint
    parts, reused = [], 0
    started = time.perf_counter()
    starts = range(0, n, chunk_size)
    for start in track(starts, desc=f"{method} on {n} images", enabled=progress, total=len(starts)):
        path = chunk_dir / f"{start:08d}.safetensors"
        if path.exists():
            try:
                part = CounterfactualResult.load(path)
                if len(part) == min(chunk_size, n - start):
                    parts.append(part)
                    reused += 1
                    continue
            except CacheError:
                pass  # a chunk cut short by an interruption is simply recomputed
        chunk_target = target[start : start + chunk_size] if isinstance(target, torch.Tensor) else target
        part = explainer.explain(images[start : start + chunk_size], target=chunk_target)
        part.save(path)
        parts.append(part)
    result = CounterfactualResult.concatenate(parts, seconds=sum(p.seconds for p in parts))
    metrics = evaluate_result(result, bench, device=str(explainer.device))
    metrics["preset"] = preset
    metrics["target_rule"] = str(target)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 3)
    metrics["resumed_chunks"] = reused
    if isinstance(explainer, AmortizedCounterfactual):
        metrics["fit_seconds"] = 0.0 if explainer.loaded else explainer.fit_seconds
        metrics["recorded_fit_seconds"] = explainer.fit_seconds
        metrics["refine_steps"] = explainer.refine_steps
    write_outputs(out, result, metrics)
    return result, metrics


def write_outputs(out: str | Path, result: CounterfactualResult, metrics: dict) -> None:
    """metrics.json, counterfactuals.safetensors (+ .json) and grid.png in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    result.save(out / "counterfactuals.safetensors")
    save_png(result_grid(result, 16), out / "grid.png")


def run_global(
    bench: Workbench, n: int, out: str | Path, *, progress: bool = True, resamples: int = 1000, **options: object
) -> dict:
    """Global explanation of the workbench's classifier with Morpho-MNIST descriptors.

    Probes are fitted on the training images' latents (held-out split reported); the attack explains
    the first ``n`` test images toward their runner-up class; each target class gets the mean signed
    change of every descriptor over the counterfactuals that reached it, with bootstrap intervals.
    Writes ``global.json``, one bar chart per class and ``global.html`` into ``out``.
    """
    from vcex.attribution import Descriptors, LatentAttributes, global_scores_by_class
    from vcex.report.charts import ranked_bar_chart
    from vcex.report.images import png_data_uri

    if n < 1 or n > len(bench.test):
        raise InputError(f"--n must lie in [1, {len(bench.test)}] for {bench.dataset}'s test split, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    descriptors = Descriptors.from_morphometrics(bench.train.images)
    probes = LatentAttributes(bench.latent_model).fit(bench.train.images, descriptors)
    fit_seconds = time.perf_counter() - started
    explainer = build_explainer("attack", bench, progress=progress, **options)
    result = explainer.explain(bench.test.images[:n], target="second")
    started = time.perf_counter()
    reached = result.select(result.success)
    by_class = global_scores_by_class(probes.local(reached), reached, resamples=resamples)
    attribution_seconds = time.perf_counter() - started
    record = {
        "dataset": bench.dataset,
        "n": n,
        "valid_counterfactuals": int(result.success.sum()),
        "descriptors": "morphometrics",
        "probe_fit_seconds": round(fit_seconds, 3),
        "counterfactual_seconds": round(result.seconds, 3),
        "attribution_seconds": round(attribution_seconds, 4),
        "probes": probes.summary(),
        "classes": {bench.test.class_names[k]: explanation.to_json() for k, explanation in by_class.items()},
    }
    (out / "global.json").write_text(json.dumps(record, indent=2, default=str))
    figures = []
    for k, explanation in by_class.items():
        name = bench.test.class_names[k]
        rows = explanation.ranked()
        if not rows:
            continue
        chart = ranked_bar_chart(rows, f"toward {name}: mean change in descriptor probability (n={explanation.n})")
        save_png(chart, out / f"global-{k}.png")
        figures.append(f'<img src="{png_data_uri(chart)}">')
    (out / "global.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>global explanation</title><h1>{bench.dataset}: what the "
        f"counterfactuals toward each class change</h1><p>{len(reached)} valid counterfactuals of {n} test images; "
        f"probes fitted on training latents, intervals are 95% bootstrap.</p>" + "".join(figures),
        encoding="utf-8",
    )
    return record
