"""Scaling benchmark: explain time and peak memory against the number of images explained (MNIST).

Writes docs/benchmarks/scaling.md and docs/benchmarks/scaling.png:

    python benchmarks/scaling.py [--threads 1] [--max-n N] [--work-dir DIR] [--malloc-check]

Two explainers at their defaults: vcex's CounterfactualAttack (``build_explainer("attack", bench)``) for
N = 1 ... 100,000 and the amortized explainer, one pass (``build_explainer("amortized", bench)``), for
N = 1 ... 100,000. The images are the 1,000 MNIST test images repeated to reach N; the target is each image's
runner-up class (computed once on the 1,000 and repeated).

Every (method, N) point runs in a fresh subprocess (``--point METHOD N``) so its peak memory is its own: the
subprocess loads the models, builds the images and targets, warms the explainer up on one image, notes its
RSS, resets the kernel's high-water mark (``/proc/self/clear_refs``; without it the peak is the process's
lifetime peak), runs ``explain`` once and prints one JSON line. Finished points are kept in the work dir
(default ``<vcex cache>/scaling``), so a rerun skips them. ``--malloc-check`` reruns the points with
N >= 1,000 with glibc's mmap threshold fixed, which tells the tensors alive at the peak from the freed memory
the C allocator keeps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACK_NS = (1, 10, 100, 1000, 10_000, 100_000)
AMORTIZED_NS = (1, 10, 100, 1000, 10_000, 100_000)
METHODS = {"attack": ATTACK_NS, "amortized": AMORTIZED_NS}
LABELS = {"attack": "CounterfactualAttack (defaults)", "amortized": "Amortized, one pass (defaults)"}
COLOURS = {"attack": (200, 70, 60), "amortized": (60, 110, 200)}
MB = 1024 * 1024
# --malloc-check: glibc's mmap threshold fixed at 128 KiB (no dynamic raise), so every tensor above it is its own
# mapping, returned to the system when freed, and the peak RSS follows the live tensors rather than the heap
MALLOC_CHECK_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
MALLOC_CHECK_MIN_N = 1000
# the attack's checks stop at 10,000: under the fixed threshold it runs at about twice its normal time per image, so
# its 100,000 point would take some 45 minutes of one core per check, and the amortized 100,000 point already shows
# how the result's memory scales
CHECK_MAX_N = {"attack": 10_000, "amortized": 100_000}
# --onednn-check: the attack's malloc-check points again with oneDNN (torch.backends.mkldnn) off in the child
NO_ONEDNN_ENV = {"VCEX_SCALING_NO_ONEDNN": "1"}


def _threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _max_rss_bytes() -> int:
    """Peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def run_point(method: str, n: int, threads: int) -> dict:
    """One (method, N) point in this process: load, build the N images, warm up, explain once, measure."""
    _threads(threads)
    import torch

    onednn = os.environ.get("VCEX_SCALING_NO_ONEDNN") != "1"
    torch.backends.mkldnn.enabled = onednn

    from vcex.explainers.base import resolve_targets
    from vcex.pipeline import build_explainer, prepare

    started = time.perf_counter()
    bench = prepare("mnist", progress=False)
    explainer = build_explainer(method, bench)
    base = bench.test.images
    with torch.no_grad():
        targets = resolve_targets("second", explainer.predict_proba(base))
    repeats = -(-n // len(base))
    images = base.repeat(repeats, 1, 1, 1)[:n].contiguous()
    targets = targets.repeat(repeats)[:n].contiguous()
    explainer.explain(images[:1], target=targets[:1])  # first-call costs (allocator, kernels) out of the timing
    setup_seconds = time.perf_counter() - started
    lifetime_peak_before = _max_rss_bytes()
    reset = _reset_peak()  # the high-water mark restarts at the current RSS
    # read back through the same counter as the peak below, so the difference is never negative
    rss_before = _max_rss_bytes() if reset else _rss_bytes()
    result = explainer.explain(images, target=targets)
    peak = _max_rss_bytes()
    result_bytes = sum(t.numel() * t.element_size() for t in result.tensors().values())
    return {
        "method": method,
        "n": n,
        "threads": torch.get_num_threads(),
        "batch_size": explainer.batch_size,
        "settings": explainer.settings(),
        "seconds": result.seconds,
        "ms_per_cf": result.seconds / n * 1000,
        "validity": result.validity,
        "input_bytes": images.numel() * images.element_size() + targets.numel() * targets.element_size(),
        "result_bytes": result_bytes,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "peak_reset": reset,
        "extra_bytes": peak - rss_before,
        "lifetime_peak_bytes": max(peak, lifetime_peak_before),
        "setup_seconds": setup_seconds,
        "malloc_env": {k: os.environ[k] for k in MALLOC_CHECK_ENV if k in os.environ},
        **({} if onednn else {"onednn": False}),
    }


def prepare_amortized(threads: int) -> float:
    """Load (or fit and cache, on first use) the amortized explainer, so every point loads the same network."""
    _threads(threads)
    from vcex.pipeline import build_explainer, prepare

    explainer = build_explainer("amortized", prepare("mnist", progress=False))
    return 0.0 if explainer.loaded else explainer.fit_seconds


def _child(args: list[str], threads: int, malloc_check: bool = False, onednn: bool = True) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for key in (*MALLOC_CHECK_ENV, *NO_ONEDNN_ENV):
        env.pop(key, None)
    if malloc_check:
        env.update(MALLOC_CHECK_ENV)
    if not onednn:
        env.update(NO_ONEDNN_ENV)
    command = [sys.executable, str(Path(__file__).resolve()), *args, "--threads", str(threads)]
    done = subprocess.run(command, env=env, check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout.strip().splitlines()[-1]


def collect(
    points: list[tuple[str, int]], threads: int, work_dir: Path, malloc_check: bool = False, onednn: bool = True
) -> dict[tuple[str, int], dict]:
    """Every point's record, from the work dir where it was finished before, else from a fresh subprocess
    (with ``malloc_check``: under :data:`MALLOC_CHECK_ENV`; ``onednn=False``: with oneDNN off)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    records, amortized_ready = {}, False
    env = MALLOC_CHECK_ENV if malloc_check else {}
    tag = (" (malloc check)" if malloc_check else "") + ("" if onednn else " (oneDNN off)")
    suffix = ("-malloc-check" if malloc_check else "") + ("" if onednn else "-no-onednn")
    for method, n in points:
        path = work_dir / f"{method}-n{n}-t{threads}{suffix}.json"
        if path.exists():
            try:
                record = json.loads(path.read_text())
                same = (record.get("method"), record.get("n"), record.get("threads")) == (method, n, threads)
                if same and record.get("malloc_env", {}) == env and record.get("onednn", True) == onednn:
                    records[method, n] = record
                    print(f"{method} N={n}{tag}: reused {path}", file=sys.stderr)
                    continue
            except json.JSONDecodeError:
                pass  # a file cut short by an interruption: measure the point again
        if method == "amortized" and not amortized_ready:
            fit = float(_child(["--prepare-amortized"], threads))
            print(f"amortized explainer ready (fit seconds this run: {fit:.0f})", file=sys.stderr)
            amortized_ready = True
        record = json.loads(_child(["--point", method, str(n)], threads, malloc_check, onednn))
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(record, indent=2))
        os.replace(temporary, path)
        records[method, n] = record
        print(
            f"{method} N={n}{tag}: {record['seconds']:.2f} s, {record['ms_per_cf']:.3f} ms/CF, "
            f"extra {record['extra_bytes'] / MB:.1f} MB",
            file=sys.stderr,
        )
    return records


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``: returns (a, b)."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    return mean_y - b * mean_x, b


# ---------------------------------------------------------------- plot (PIL, like vcex.report.charts)


def _log_ticks(low: float, high: float) -> list[float]:
    return [10.0**k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def _tick_label(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _panel(draw, font, box, series, title, y_label, floor: float, floor_note: str = "") -> None:
    """Log-log panel in ``box`` (left, top, right, bottom) of ``series``: (label, colour, dashed, [(x, y)]);
    values below ``floor`` are drawn at it."""
    left, top, right, bottom = box
    xs = [x for *_, points in series for x, _ in points]
    ys = [max(y, floor) for *_, points in series for _, y in points]
    x_ticks, y_ticks = _log_ticks(min(xs), max(xs)), _log_ticks(min(ys), max(ys))
    lx0, lx1 = math.log10(x_ticks[0]), math.log10(x_ticks[-1])
    ly0, ly1 = math.log10(y_ticks[0]), math.log10(y_ticks[-1])

    def at(x: float, y: float) -> tuple[float, float]:
        px = left + (math.log10(x) - lx0) / ((lx1 - lx0) or 1) * (right - left)
        py = bottom - (math.log10(max(y, floor)) - ly0) / ((ly1 - ly0) or 1) * (bottom - top)
        return px, py

    draw.text((left, top - 34), title, fill="black", font=font)
    draw.text((left, top - 18), y_label, fill=(90, 90, 90), font=font)
    for x in x_ticks:
        px, _ = at(x, y_ticks[0])
        draw.line([px, top, px, bottom], fill=(225, 225, 225))
        text = _tick_label(x)
        draw.text((px - 4 * len(text), bottom + 4), text, fill=(60, 60, 60), font=font)
    for y in y_ticks:
        _, py = at(x_ticks[0], y)
        draw.line([left, py, right, py], fill=(225, 225, 225))
        text = _tick_label(y)
        draw.text((left - 8 * len(text) - 6, py - 7), text, fill=(60, 60, 60), font=font)
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    draw.text(((left + right) // 2 - 70, bottom + 22), "images explained (N)", fill="black", font=font)
    for k, (label, colour, dashed, points) in enumerate(series):
        pixels = [at(x, y) for x, y in points]
        for (x0, y0), (x1, y1) in zip(pixels, pixels[1:]):
            _line(draw, (x0, y0, x1, y1), colour, dashed)
        if not dashed:
            for px, py in pixels:
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        ly = top + 8 + 18 * k
        _line(draw, (left + 10, ly + 7, left + 40, ly + 7), colour, dashed)
        draw.text((left + 46, ly), label, fill="black", font=font)
    if floor_note:
        draw.text((right - 8 * len(floor_note), bottom - 18), floor_note, fill=(90, 90, 90), font=font)


def _line(draw, segment: tuple[float, float, float, float], colour, dashed: bool) -> None:
    x0, y0, x1, y1 = segment
    if not dashed:
        draw.line([x0, y0, x1, y1], fill=colour, width=2)
        return
    dashes = max(1, int(math.hypot(x1 - x0, y1 - y0) / 6))
    for s in range(0, dashes, 2):
        a, b = s / dashes, min(s + 1, dashes) / dashes
        draw.line(
            [x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, x0 + (x1 - x0) * b, y0 + (y1 - y0) * b], fill=colour, width=2
        )


def scaling_chart(records: dict[tuple[str, int], dict]):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    width, height = 1100, 460
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    methods = [m for m in METHODS if any(key[0] == m for key in records)]
    rows = {m: sorted((r for (k, _), r in records.items() if k == m), key=lambda r: r["n"]) for m in methods}
    time_series = [(LABELS[m], COLOURS[m], False, [(r["n"], r["seconds"]) for r in rows[m]]) for m in methods]
    memory_series = [
        (f"{m}: explain's peak extra", COLOURS[m], False, [(r["n"], r["extra_bytes"] / MB) for r in rows[m]])
        for m in methods
    ]
    memory_series += [
        (f"{m}: its result tensors", COLOURS[m], True, [(r["n"], r["result_bytes"] / MB) for r in rows[m]])
        for m in methods
    ]
    longest = max(rows.values(), key=len)
    memory_series.append(
        ("input tensor (N x 784 float32)", (150, 150, 150), True, [(r["n"], r["input_bytes"] / MB) for r in longest])
    )
    _panel(draw, font, (80, 60, 520, 400), time_series, "explain wall time (log-log)", "seconds", 1e-4)
    _panel(
        draw,
        font,
        (640, 60, 1080, 400),
        memory_series,
        "explain's peak RSS beyond the loaded models and inputs (log-log)",
        "MB",
        0.1,
        "values below 0.1 MB drawn at 0.1",
    )
    return canvas


# ---------------------------------------------------------------- page


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    # vcex is imported lazily throughout this script: the parent process only spawns and collects the points
    from vcex.report.markdown import markdown_table

    return markdown_table(header, rows)


def _mb(value: float) -> str:
    return f"{value / MB:.1f}"


def render(
    records: dict[tuple[str, int], dict],
    checks: dict[tuple[str, int], dict],
    command: str,
    load: tuple[list[float], list[float]],
    onednn_checks: dict[tuple[str, int], dict] | None = None,
) -> str:
    from vcex.evaluation import versions

    info = versions()
    threads = sorted({r["threads"] for r in records.values()})
    lines = [
        "# Scaling: time and memory against the number of images (MNIST)",
        "",
        "Regenerate with the command below; every figure on this page comes from one run of it "
        "(points finished by an earlier, interrupted run of the same command are reused).",
        "",
        f"- Command: `{command}`",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
        f"{', '.join(map(str, threads))} (OMP_NUM_THREADS the same), no GPU; load average "
        f"{[round(x, 2) for x in load[0]]} at the start and {[round(x, 2) for x in load[1]]} at the end of "
        "the run that wrote this page (1, 5, 15 min; the machine is shared, so timings include contention)",
        f"- Versions: vcex {info['vcex']}, torch {info['torch']}, Python {info['python']}",
        "- Data: the 1,000 images of vcex's MNIST test split, repeated to reach N (the first N of the repetition); "
        "target = the classifier's runner-up class on each image, computed once on the 1,000 and repeated.",
        f"- Methods: {_methods_line(records)} The amortized network is fitted once and cached; its fit is not timed.",
        "- Each (method, N) point runs in a fresh Python process: it loads the zoo models, builds the N images and "
        "targets, runs `explain` once on one image (first-call costs out of the timing), notes its resident set size "
        "(RSS), resets the kernel's peak-RSS mark and runs `explain` once on all N images. Seconds: the result's "
        "`seconds` (the whole `explain` call). Peak extra: `ru_maxrss` after `explain` minus the RSS before it, "
        "i.e. what `explain` itself added on top of the loaded models and input tensors. Absolute peak: the "
        "process's peak RSS over its whole life (models, data, the input tensor and `explain`).",
        "- Input: the N images (N × 784 float32) and targets (N int64) the caller hands to `explain`. Result: every "
        "tensor of the returned `CounterfactualResult` (originals, counterfactuals, reconstructions, latents and "
        "per-image records); both grow with N by construction.",
        "",
        "![time and peak extra memory against N](scaling.png)",
        "",
    ]
    for method in METHODS:
        rows = sorted((r for (m, _), r in records.items() if m == method), key=lambda r: r["n"])
        if rows:
            lines += [*method_section(method, rows), ""]
    lines += reading_lines()
    if checks:
        lines += [*malloc_section(records, checks), ""]
    if onednn_checks:
        lines += [*onednn_section(checks, onednn_checks), ""]
    return "\n".join(lines)


def method_section(method: str, rows: list[dict]) -> list[str]:
    """One method's points: time, validity and memory at each N, then the fitted slopes."""
    header = [
        "N", "seconds", "ms / CF", "validity", "input tensor MB", "result MB", "peak RSS extra MB",
        "extra − result MB", "absolute peak MB",
    ]  # fmt: skip
    cells = [
        [f"{r['n']:,}", f"{r['seconds']:.3f}", f"{r['ms_per_cf']:.3f}", f"{r['validity']:.3f}",
         _mb(r["input_bytes"]), _mb(r["result_bytes"]), _mb(r["extra_bytes"]),
         _mb(r["extra_bytes"] - r["result_bytes"]), _mb(r["lifetime_peak_bytes"])]
        for r in rows
    ]  # fmt: skip
    return [f"## {LABELS[method]}", "", *_table(header, cells), "", *_summary(rows)]


def reading_lines() -> list[str]:
    """How the time and memory figures are read."""
    return [
        "## Reading the figures",
        "",
        "Time: the slope is a least-squares fit of seconds = a + b·N over the points with N ≥ 100, b in ms per "
        "counterfactual; the ratios compare ms / CF at the largest N with ms / CF at smaller N, so values near 1 "
        "mean linear time (no per-image cost that grows with N). At N = 1 and 10 the fixed per-call cost "
        "(input checks, freezing and restoring the models, result assembly) dominates. Single runs on a shared "
        "machine: a few percent either way (more at N ≤ 1,000, where a run lasts seconds) is noise.",
        "",
        "Memory: `explain` works chunk by chunk, so its working set (one chunk's activations, the attack's Adam "
        "state for one chunk) is bounded by the chunk size. What it returns is not: the result holds several "
        "N-sized tensors (about 9.4 KB per MNIST image), which `Explainer.explain` fills chunk by chunk "
        "(`ResultBuilder`: tensors preallocated for all N images), so at its peak it holds one copy of the result "
        "plus the current chunk. The extra-memory slope above is therefore compared with the result's own size per "
        "image: a ratio near 1 is the result itself; more than 1 is memory the process holds beyond live tensors "
        "(the C allocator's heap keeping freed chunk buffers, or a library's caches), which the checks below separate.",
        "",
    ]


def malloc_section(records: dict[tuple[str, int], dict], checks: dict[tuple[str, int], dict]) -> list[str]:
    """The large points again under a fixed mmap threshold: live tensors, or memory the allocator kept?"""
    header = [
        "method", "N", "ms / CF", "result MB", "peak extra MB, default malloc", "peak extra MB, fixed mmap threshold",
        "fixed-threshold extra − result MB",
    ]  # fmt: skip
    cells = []
    for (method, n), r in sorted(checks.items(), key=lambda item: (list(METHODS).index(item[0][0]), item[0][1])):
        default = records.get((method, n))
        cells.append([
            method, f"{n:,}", f"{r['ms_per_cf']:.3f}", _mb(r["result_bytes"]),
            _mb(default["extra_bytes"]) if default else "–", _mb(r["extra_bytes"]),
            _mb(r["extra_bytes"] - r["result_bytes"]),
        ])  # fmt: skip
    return [
        "## Live tensors or allocator? (`--malloc-check`)",
        "",
        f"The points with N ≥ {MALLOC_CHECK_MIN_N:,} (up to "
        + ", ".join(f"{n:,} for the {m}" for m, n in CHECK_MAX_N.items())
        + f", to bound the run's time) again, each in a fresh process with "
        f"{', '.join(f'`{k}={v}`' for k, v in MALLOC_CHECK_ENV.items())}: glibc then serves every allocation "
        "above 128 KiB (any chunk-sized tensor) as its own mapping and returns it to the system when it is "
        "freed, so the peak RSS follows the tensors alive at the peak rather than what the heap kept. Its "
        "times are not comparable (a fresh mapping and its page faults per tensor slow both methods down) "
        "and are shown only for the record.",
        "",
        *_table(header, cells),
    ]


def onednn_section(checks: dict[tuple[str, int], dict], onednn_checks: dict[tuple[str, int], dict]) -> list[str]:
    """The attack's malloc-check points with oneDNN off: the convolution library's share of the memory."""
    header = ["N", "ms / CF, oneDNN on", "ms / CF, off", "extra − result MB, oneDNN on", "extra − result MB, off"]
    cells = []
    for (method, n), r in sorted(onednn_checks.items(), key=lambda item: item[0][1]):
        on = checks.get((method, n))
        off_extra = _mb(r["extra_bytes"] - r["result_bytes"])
        if on:
            cells.append([f"{n:,}", f"{on['ms_per_cf']:.3f}", f"{r['ms_per_cf']:.3f}",
                          _mb(on["extra_bytes"] - on["result_bytes"]), off_extra])  # fmt: skip
        else:
            cells.append([f"{n:,}", "–", f"{r['ms_per_cf']:.3f}", "–", off_extra])
    return [
        "## The convolution library's share (`--onednn-check`)",
        "",
        "The attack's malloc-check points once more, with oneDNN (`torch.backends.mkldnn`, the CPU convolution "
        "library) switched off in the process. oneDNN keeps memory for every convolution shape it meets, and "
        "the attack drops finished images from its batch, so it used to run each chunk at many batch sizes: "
        "measured by this script before the attack loop padded its batch to a few sizes (2^k and 3·2^(k-1), "
        "finished rows masked; the page at commit 608ade9), the memory beyond the result grew from 139.0 MB at "
        "1,000 images to 202.4 MB at 10,000 with oneDNN on, and stayed at 80.4 and 82.4 MB with it off. The "
        "table is the attack as it is now. Times under the fixed mmap threshold, from separate processes run "
        "one after another on shared cores.",
        "",
        *_table(header, cells),
    ]


def _methods_line(records: dict[tuple[str, int], dict]) -> str:
    """The explainers' settings as recorded by the points (the same at every N)."""
    parts = []
    for method in METHODS:
        settings = [r["settings"] for (m, _), r in records.items() if m == method]
        if not settings:
            continue
        s = settings[0]
        if method == "attack":
            what = (
                f"vcex's CounterfactualAttack at its defaults: threshold {s['threshold']}, lr {s['lr']}, objective "
                f"{s['objective']}, up to {s['max_steps']:,} steps, chunks of {s['batch_size']} images"
            )
        else:
            what = (
                f"one pass of the fitted network {s.get('network', '?')}: threshold {s['threshold']}, refine_steps "
                f"{s['refine_steps']}, chunks of {s['batch_size']} images"
            )
        parts.append(f'`build_explainer("{method}", bench)` ({what}).')
    return " ".join(parts)


def _summary(rows: list[dict]) -> list[str]:
    lines = []
    fit_rows = [r for r in rows if r["n"] >= 100]
    if len(fit_rows) >= 2:
        intercept, slope = linear_fit([r["n"] for r in fit_rows], [r["seconds"] for r in fit_rows])
        lines.append(
            f"- Time fit over N ≥ 100 ({len(fit_rows)} points): {slope * 1000:.3f} ms per counterfactual, "
            f"intercept {intercept:.3f} s."
        )
    by_n = {r["n"]: r for r in rows}
    largest = rows[-1]
    if 1000 in by_n and largest["n"] > 1000:
        ratios = [
            f"{largest['ms_per_cf'] / by_n[n]['ms_per_cf']:.2f} against N = {n:,} ({by_n[n]['ms_per_cf']:.3f})"
            for n in sorted(by_n, reverse=True)
            if 1000 <= n < largest["n"]
        ]
        lines.append(
            f"- ms / CF at N = {largest['n']:,} ({largest['ms_per_cf']:.3f}) over ms / CF: {'; '.join(ratios)}."
        )
    mem_rows = [r for r in rows if r["n"] >= 1000]
    if len(mem_rows) >= 2:
        _, extra_slope = linear_fit([r["n"] for r in mem_rows], [r["extra_bytes"] for r in mem_rows])
        per_image = largest["result_bytes"] / largest["n"]
        lines.append(
            f"- Peak extra memory over N ≥ 1,000 grows by {extra_slope / 1024:.1f} KB per image; the result holds "
            f"{per_image / 1024:.1f} KB per image (ratio {extra_slope / per_image:.2f}). Beyond the result, the "
            f"extra is {_mb(mem_rows[0]['extra_bytes'] - mem_rows[0]['result_bytes'])} MB at N = "
            f"{mem_rows[0]['n']:,} and {_mb(largest['extra_bytes'] - largest['result_bytes'])} MB at "
            f"N = {largest['n']:,}."
        )
    small = [r for r in rows if r["n"] <= 1000]
    if small:
        lines.append(
            "- Peak extra memory for N ≤ 1,000: "
            + ", ".join(f"{_mb(r['extra_bytes'])} MB at {r['n']:,}" for r in small)
            + "."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads in every process (1)")
    parser.add_argument("--max-n", type=int, default=None, help="largest N to run (default: 100,000)")
    parser.add_argument("--work-dir", default=None, help="finished points are kept here (default <vcex cache>/scaling)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "scaling.md"))
    parser.add_argument(
        "--malloc-check",
        action="store_true",
        help=f"also rerun the points with N >= {MALLOC_CHECK_MIN_N:,} (up to {CHECK_MAX_N['attack']:,} for the attack) "
        "with glibc's mmap threshold fixed, to tell "
        "live tensors from memory the allocator keeps",
    )
    parser.add_argument(
        "--onednn-check",
        action="store_true",
        help="with --malloc-check: the attack's checked points once more with oneDNN off, to show what its "
        "convolution library keeps",
    )
    parser.add_argument("--point", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare-amortized", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.point:
        method, n = args.point[0], int(args.point[1])
        if method not in METHODS or n < 1:
            parser.error(f"--point takes a method ({', '.join(METHODS)}) and N >= 1")
        print(json.dumps(run_point(method, n, args.threads)))
        return
    if args.prepare_amortized:
        print(prepare_amortized(args.threads))
        return
    _threads(args.threads)
    from vcex.cache import cache_dir

    work_dir = Path(args.work_dir) if args.work_dir else cache_dir() / "scaling"
    points = [(m, n) for m, ns in METHODS.items() for n in ns if args.max_n is None or n <= args.max_n]
    load_start = list(os.getloadavg())
    records = collect(points, args.threads, work_dir)
    checks = {}
    if args.malloc_check:
        checked = [(m, n) for m, n in points if MALLOC_CHECK_MIN_N <= n <= CHECK_MAX_N[m]]
        checks = collect(checked, args.threads, work_dir, malloc_check=True)
    onednn_checks = {}
    if args.malloc_check and args.onednn_check:
        attack_checked = [(m, n) for m, n in checked if m == "attack"]
        onednn_checks = collect(attack_checked, args.threads, work_dir, malloc_check=True, onednn=False)
    load_end = list(os.getloadavg())
    command = (
        "python benchmarks/scaling.py"
        + "".join(
            f" {flag} {value}"
            for flag, value, default in (("--threads", args.threads, 1), ("--max-n", args.max_n, None))
            if value != default
        )
        + (" --malloc-check" if args.malloc_check else "")
        + (" --onednn-check" if onednn_checks else "")
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scaling_chart(records).save(out.with_suffix(".png"))
    out.write_text(render(records, checks, command, (load_start, load_end), onednn_checks))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)


if __name__ == "__main__":
    main()
