"""Throughput of `vcex explain` on 1 and 2 local Ray workers against one process (MNIST, the attack).

Writes docs/benchmarks/ray.md and docs/benchmarks/ray.json:

    python benchmarks/ray_workers.py [--n 1000] [--chunk-size 100] [--workers 1 2] [--work-dir DIR] [--page-only]

Every configuration explains the same first N MNIST test images (runner-up targets, vcex's attack at its defaults)
with the same chunk size into a fresh output folder: first in this process (``run_explain``, no Ray), then with
``run_explain_ray`` on a local Ray instance started for that run with W workers, one torch thread each. Per run:
the explain phase's wall time (single process: its explain loop, the sum of the chunks' seconds; Ray: from
starting Ray to the last chunk written, so Ray's and the workers' start-up, which loads the models and computes
the thresholds once per worker, are in it), the time to the first chunk, the sum of the chunks' own explain
seconds, and the whole command's wall time (models, Ray, the explain phase, assembling and evaluating). The
machine's load average is recorded before and after each run: on a shared machine every figure includes
contention.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE, RECORD = ROOT / "docs" / "benchmarks" / "ray.md", ROOT / "docs" / "benchmarks" / "ray.json"


def single_process(n: int, chunk_size: int, out: Path) -> dict:
    from vcex.pipeline import prepare, run_explain

    started = time.perf_counter()
    bench = prepare("mnist", progress=False)
    result, metrics = run_explain(bench, "attack", n, "second", out, chunk_size=chunk_size, progress=False)
    return {
        "workers": 0,
        "explain_seconds": result.seconds,
        "first_chunk_seconds": None,
        "chunk_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - started,
        "validity": metrics["validity"],
    }


def on_ray(n: int, chunk_size: int, workers: int, out: Path) -> dict:
    from vcex.distributed import run_explain_ray

    started = time.perf_counter()
    result, metrics = run_explain_ray(
        "mnist", "attack", n, "second", out, workers=workers, chunk_size=chunk_size, progress=False
    )
    return {
        "workers": workers,
        "explain_seconds": metrics["ray"]["explain_wall_seconds"],
        "first_chunk_seconds": metrics["ray"]["first_chunk_seconds"],
        "chunk_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - started,
        "validity": metrics["validity"],
    }


def measured(run, *args) -> dict:
    load_before = os.getloadavg()
    row = run(*args)
    return {
        **row,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def page(record: dict) -> str:
    rows = record["runs"]
    base = rows[0]["explain_seconds"]
    lines = [
        "# Ray: 1 and 2 local workers against one process",
        "",
        "Regenerate with the command below; every figure on this page comes from one run of it.",
        "",
        f"- Command: `{record['command']}`",
        f"- Machine: {record['machine']}, torch threads 1 per process (OMP_NUM_THREADS=1), no GPU; the machine is "
        "shared with other jobs, so every time includes contention: the load average (1, 5, 15 min) is in the table",
        f"- Versions: vcex {record['versions']['vcex']}, torch {record['versions']['torch']}, ray "
        f"{record['versions']['ray']}, Python {record['versions']['python']}",
        f"- Run: the first {record['n']} MNIST test images, runner-up targets, vcex's attack at its defaults, "
        f"chunks of {record['chunk_size']} images; every run in a fresh output folder. One process: `run_explain` "
        "(no Ray). W workers: `run_explain_ray(workers=W)` on a local Ray instance started for the run.",
        "- explain phase: one process, its explain loop (the chunks' seconds); Ray, from starting Ray to the last "
        "chunk written, so Ray's start and each worker's (models loaded, thresholds computed once per worker) are "
        "in it. First chunk: from starting Ray to the first chunk written. Chunk seconds: the sum of the chunks' own "
        "explain time over all workers. Whole run: models, Ray, the explain phase, assembling and evaluating.",
        "",
        "| run | explain phase s | images / s | speed-up | first chunk s | chunk seconds (sum) | whole run s | "
        "validity | load before | load after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = (
            "one process" if row["workers"] == 0 else f"Ray, {row['workers']} worker{'s' if row['workers'] > 1 else ''}"
        )
        first = "" if row["first_chunk_seconds"] is None else f"{row['first_chunk_seconds']:.1f}"
        lines.append(
            f"| {name} | {row['explain_seconds']:.1f} | {record['n'] / row['explain_seconds']:.1f} | "
            f"{base / row['explain_seconds']:.2f} | {first} | {row['chunk_seconds']:.1f} | {row['wall_seconds']:.1f} | "
            f"{row['validity']:.3f} | {row['load_before']} | {row['load_after']} |"
        )
    lines += ["", "## Reading", ""] + reading(record)
    return "\n".join(lines) + "\n"


def reading(record: dict) -> list[str]:
    """What the table says, computed from it (so a rerun's page says what its own numbers say)."""
    rows = {row["workers"]: row for row in record["runs"]}
    single, loads = rows[0], [load[0] for row in record["runs"] for load in (row["load_before"], row["load_after"])]
    cores = os.cpu_count() or 1
    lines = []
    if 1 in rows and 2 in rows:
        one, two, single_s = rows[1]["explain_seconds"], rows[2]["explain_seconds"], single["explain_seconds"]
        lines.append(
            f"- 2 workers against 1: explain phase {two:.1f} s against {one:.1f} s ({one / two:.2f}x); against one "
            f"process without Ray ({single_s:.1f} s): {single_s / two:.2f}x."
        )
    starts = [row["first_chunk_seconds"] for row in record["runs"] if row["first_chunk_seconds"] is not None]
    if starts:
        lines.append(
            f"- Start-up, from starting Ray to the first chunk written (Ray, the workers, their models and thresholds, "
            f"one chunk): {min(starts):.1f} to {max(starts):.1f} s. It is paid once per run, so Ray pays off for runs "
            "much longer than that, on machines with a core or a GPU per worker."
        )
    per_image = [row["chunk_seconds"] / record["n"] * 1000 for row in record["runs"]]
    lines.append(
        f"- The same work took {min(per_image):.0f} to {max(per_image):.0f} ms per image of chunk time from one run to "
        f"the next ({max(per_image) / min(per_image):.1f}x): the 1-minute load average stayed between {min(loads):.1f} "
        f"and {max(loads):.1f} on {cores} cores, so these times measure the other jobs on the machine as much as "
        "vcex or Ray. They say that the Ray path runs and splits the work; they are no measure of its overhead."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work-dir", default=None, help="where the runs' folders go (default: a temporary folder)")
    parser.add_argument("--page-only", action="store_true", help="rewrite ray.md from ray.json, running nothing")
    args = parser.parse_args()
    if args.page_only:
        PAGE.write_text(page(json.loads(RECORD.read_text())))
        return
    import ray
    import torch

    import vcex

    torch.set_num_threads(1)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="vcex-ray-"))
    runs = [measured(single_process, args.n, args.chunk_size, work / "single")]
    print(json.dumps(runs[-1]), flush=True)
    for workers in args.workers:
        runs.append(measured(on_ray, args.n, args.chunk_size, workers, work / f"ray-{workers}"))
        print(json.dumps(runs[-1]), flush=True)
    if not args.work_dir:
        shutil.rmtree(work)
    command = "python benchmarks/ray_workers.py" + (f" --n {args.n}" if args.n != 1000 else "")
    command += f" --chunk-size {args.chunk_size}" if args.chunk_size != 100 else ""
    command += f" --workers {' '.join(map(str, args.workers))}" if args.workers != [1, 2] else ""
    record = {
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "versions": {
            "vcex": vcex.__version__,
            "torch": torch.__version__,
            "ray": ray.__version__,
            "python": platform.python_version(),
        },
        "n": args.n,
        "chunk_size": args.chunk_size,
        "runs": runs,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    PAGE.write_text(page(record))
    print(page(record))


if __name__ == "__main__":
    main()
