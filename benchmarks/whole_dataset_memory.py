"""Whole datasets with flat memory: peak RSS of ``vcex explain --n N`` on Fashion-MNIST's training split.

Writes docs/benchmarks/whole-datasets.json and docs/benchmarks/whole-datasets.md:

    nice -n 10 python benchmarks/whole_dataset_memory.py [--ns 1000 10000 60000] [--method linear] [--work-dir DIR]

Each N runs ``vcex explain --dataset fashion --split train --n N --method METHOD --threads 1`` as its own
subprocess (a fresh run folder, so nothing is resumed) and reads the child's peak resident set size from the
kernel (``os.wait4``'s ru_maxrss: that child's alone, not the running maximum of all children), with its wall time,
the number of chunk files and the size of counterfactuals.safetensors. A cheap method (the linear latent edit,
one pass per image) keeps the 60,000-image point to minutes; what is measured is what stays in memory, which
does not depend on the method's cost per image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks" / "whole-datasets.md"
RECORD = PAGE.with_suffix(".json")
MB = 1024 * 1024
# the child's anonymous memory (its heap and tensors, not the mapped library files, whose resident share depends on
# what else the machine's page cache holds) is read this often; its largest value is the sampled peak
SAMPLE_SECONDS = 0.2


def anonymous_rss(pid: int) -> int:
    """RssAnon of process ``pid`` in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(n: int, method: str, work: Path, extra: list[str]) -> dict:
    """One ``vcex explain`` of the first ``n`` training images in a subprocess: peak RSS, wall time, files."""
    out = work / f"{method}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vcex.cli", "explain", "--dataset", "fashion", "--split", "train", "--n", str(n)]
    command += ["--method", method, "--threads", "1", "--quiet", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    logs = work / f"{method}-{n}.log"
    started = time.perf_counter()
    with open(logs, "w") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak_anon = 0
        while True:
            # reaped here, not by subprocess, so the kernel's usage record is this child's alone
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak_anon = max(peak_anon, anonymous_rss(child.pid))
            time.sleep(SAMPLE_SECONDS)
    seconds = time.perf_counter() - started
    output = logs.read_text()
    if status != 0:
        raise SystemExit(f"vcex explain --n {n} failed:\n{output[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    chunks = list((out / "chunks").glob("*/*.safetensors"))
    return {
        "n": n,
        "method": method,
        "peak_rss_mb": round(usage.ru_maxrss * 1024 / MB, 1),  # Linux reports kilobytes
        "peak_anonymous_mb": round(peak_anon / MB, 1),
        "wall_seconds": round(seconds, 1),
        "chunk_files": len(chunks),
        "chunk_size": metrics.get("chunk_size"),
        "counterfactuals_mb": round((out / "counterfactuals.safetensors").stat().st_size / MB, 1),
        "validity": metrics["validity"],
        "knn_agreement": metrics["knn_agreement"],
        "comparison_sample": metrics.get("comparison_sample"),
        "output": output.strip()[-400:],
    }


def render(record: dict) -> str:
    rows = "\n".join(
        f"| {p['n']:,} | {p['peak_rss_mb']:,.0f} | "
        + (f"{p['peak_anonymous_mb']:,.0f}" if p.get("peak_anonymous_mb") else "not sampled")
        + f" | {p['wall_seconds']:,.0f} | {p['chunk_files']} x {p['chunk_size']} | {p['counterfactuals_mb']:,.0f} | "
        f"{p['validity']:.3f} |"
        for p in record["points"]
    )
    peaks = [p["peak_rss_mb"] for p in record["points"]]
    spread = max(peaks) - min(peaks)
    growth = record["points"][-1]["counterfactuals_mb"] / max(record["points"][0]["counterfactuals_mb"], 1e-9)
    return f"""# Whole datasets with flat memory

`vcex explain --n all` (or any `--n`) streams: each chunk of images is explained into
`out/chunks/<fingerprint>/`, copied into place in `counterfactuals.safetensors` (one standard safetensors file,
its layout fixed from the first chunk) and dropped; the metrics are then computed over that file in blocks of 500
rows, per-image metrics as exact means over all rows, identity and diversity (which compare every counterfactual
with every original) on an evenly spaced sample of at most 2,000 images (`comparison_sample` in metrics.json).
What stays in memory is the loaded dataset (the workbench holds both splits, as before), the models, one chunk,
one block and the sample; the per-image scores (some 20 floats per image, 5 MB at 60,000) are the only part
that grows with N.

Measured by `benchmarks/whole_dataset_memory.py` ({record["date"]}, {record["machine"]}, torch on 1 thread, on a
2-core machine shared with other jobs, so the times are loose): `vcex explain --dataset fashion --split train
--n N --method {record["method"]}`, each N in a fresh subprocess and a fresh folder; peak RSS is the child's
own high-water mark (`os.wait4`'s ru_maxrss).

| N | peak RSS (MB) | peak anonymous, sampled (MB) | wall (s) | chunk files | result file (MB) | validity |
|---|---|---|---|---|---|---|
{rows}

Peak memory stays within {spread:,.0f} MB over N = {record["points"][0]["n"]:,} to {record["points"][-1]["n"]:,}
(largest {max(peaks):,.0f} MB at N = {max(record["points"], key=lambda p: p["peak_rss_mb"])["n"]:,}), while the
result file grows {growth:,.0f}-fold.
The method is the linear latent edit (one pass per image), chosen so the 60,000-image point takes minutes;
what stays in memory does not depend on the method's cost per image. Most of the wall time at large N is the
metrics (the kNN oracle compares each counterfactual with all 60,000 training images).

A run folder is read back with `vcex.explainers.result.load_run(out)` (the whole result) or
`load_run(out, rows=slice(a, b))` (those rows only, from the file's header offsets).
{record.get("notes", "")}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[1000, 10_000, 60_000])
    parser.add_argument("--method", default="linear")
    parser.add_argument("--work-dir", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    parser.add_argument("--render", action="store_true", help="only rewrite the page from the JSON record")
    args, extra = parser.parse_known_args()
    if args.render:
        PAGE.write_text(render(json.loads(RECORD.read_text())))
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vcex-whole-"))
    work.mkdir(parents=True, exist_ok=True)
    points = []
    for n in args.ns:
        points.append(measure(n, args.method, work, extra))
        print(json.dumps({k: v for k, v in points[-1].items() if k != "output"}), flush=True)
        if not args.keep:
            shutil.rmtree(work / f"{args.method}-{n}", ignore_errors=True)
    # points of other N measured earlier (another invocation, e.g. the 60,000 point on its own) are kept
    notes = ""  # what was seen about the figures, kept across reruns (edited in the JSON by hand)
    if RECORD.is_file():
        earlier = json.loads(RECORD.read_text())
        if earlier.get("method") == args.method + (" " + " ".join(extra) if extra else ""):
            points += [p for p in earlier["points"] if p["n"] not in args.ns]
            notes = earlier.get("notes", "")
    points.sort(key=lambda p: p["n"])
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "method": args.method + (" " + " ".join(extra) if extra else ""),
        "points": points,
        "notes": notes,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    PAGE.write_text(render(record))
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
