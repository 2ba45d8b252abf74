"""What every peer benchmark's ``run.py`` shares: a log line, the resumable state file, fingerprints
and number formatting. Imported by path (``sys.path`` gets this folder), since each peer runs in its
own virtual environment where only vcex and the peer are installed."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class State:
    """results.json in the work dir: the run's identity (images, targets, models, settings), finished
    stages and metrics. A saved run of another identity is never reused and never deleted: the run stops and
    names what differs."""

    def __init__(self, work_dir: Path, identity: dict) -> None:
        self.dir = work_dir
        self.path = work_dir / "results.json"
        # compared as JSON sees it: a tuple in the settings reads back as a list and must still match
        identity = json.loads(json.dumps(identity, default=str))
        self.data = {"identity": identity, "stages": {}, "metrics": {}}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved.get("identity") != identity:
                # never delete a finished run (a CFRL fit takes over an hour): name the difference and stop
                old = saved.get("identity") or {}
                changed = sorted(key for key in {*old, *identity} if old.get(key) != identity.get(key))
                differences = "; ".join(f"{key}: saved {old.get(key)!r}, now {identity.get(key)!r}" for key in changed)
                raise SystemExit(
                    f"{self.path} holds a run with other images, models or settings ({differences}). Rerun with the "
                    "saved settings to reuse it, pass another --work-dir, or delete that folder to start afresh."
                )
            self.data = saved
            done = ", ".join(saved.get("stages", {})) or "none"
            log(f"resuming from {self.path} (finished stages: {done})")

    def begin_run(self, **conditions: object) -> None:
        """Note how this process runs (command, threads, ...) with its niceness and load; they are kept by
        :meth:`end_run` only if this process finishes a stage, so a re-render keeps the computing run's."""
        self._conditions = {
            **conditions,
            "niceness": os.nice(0),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }
        self._computed = False

    def end_run(self, **extra: object) -> None:
        conditions = getattr(self, "_conditions", {})
        if getattr(self, "_computed", False) or "niceness" not in self.data:
            self.data.update(conditions, **extra, load_average_at_end=[round(x, 2) for x in os.getloadavg()])
            self.write()

    def stage(self, name: str) -> dict | None:
        return self.data["stages"].get(name)

    def finish(self, name: str, record: dict) -> None:
        self.data["stages"][name] = {**record, "pid": os.getpid(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._computed = True
        self.write()

    def write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(temporary, self.path)


def write_report(out: Path, text: str, state: State) -> Path:
    """Write the Markdown report ``out`` and, beside it, ``out`` with ``.json``: the run's saved record
    (identity, conditions, stages, metrics), so the page and docs/BENCHMARKS.md can be rebuilt from the
    repository on a machine that never ran the peer. Returns the JSON path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    record = out.with_suffix(".json")
    record.write_text(json.dumps(state.data, indent=2, default=str) + "\n")
    return record


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short hash of the tensors' shapes and values."""
    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def command_line(root: Path) -> str:
    """How this script was started, for the report: the interpreter relative to ``root`` where it lies
    inside it, the arguments, and VCEX_HOME when set."""
    executable = Path(sys.executable)
    if executable.is_relative_to(root):
        executable = executable.relative_to(root)
    command = " ".join(shlex.quote(str(a)) for a in [executable, *sys.argv])
    if os.environ.get("VCEX_HOME"):
        command = f"VCEX_HOME={shlex.quote(os.environ['VCEX_HOME'])} {command}"
    return command


def mnist_task(n: int, error: Callable[[str], None]) -> tuple[object, torch.Tensor, torch.Tensor]:
    """vcex's MNIST workbench, its first ``n`` test images and their targets (the classifier's runner-up
    class), fixed before any method runs; ``error`` reports an ``n`` beyond the test split."""
    from vcex.explainers.base import resolve_targets
    from vcex.pipeline import prepare

    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads; loading vcex's MNIST models")
    bench = prepare("mnist", progress=False)
    if n > len(bench.test):
        error(f"--n must be at most {len(bench.test)}")
    images = bench.test.images[:n]
    with torch.no_grad():
        targets = resolve_targets("second", bench.classifier(images).softmax(1))
    return bench, images, targets


VCEX_ROWS_NOTE = (
    '- vcex rows: `build_explainer("attack", bench)` and `build_explainer("pixel", bench)` at vcex\'s '
    "defaults (threshold 0.998, per-image early stop), same process, same images and targets."
)


def per_valid_ms(metrics: dict, digits: int = 1) -> str:
    """Milliseconds of the row's whole run per valid counterfactual, or a dash when none is valid."""
    if not metrics["n_valid"]:
        return "– (none valid)"
    return f"{1000 * metrics['seconds'] / metrics['n_valid']:.{digits}f}"


def passes_cell(metrics: dict) -> str:
    """Classifier passes per counterfactual, split into forward and backward."""
    return (
        f"{metrics['passes_per_cf']:.1f} ({metrics['forward_passes_per_cf']:.1f} fwd + "
        f"{metrics['backward_passes_per_cf']:.1f} bwd)"
    )


def resumed_note(stages: dict, what: str = "Rows") -> list[str]:
    """Report lines naming the processes that finished the stages, when a resumed run used more than one."""
    if len({record["pid"] for record in stages.values()}) < 2:
        return []
    where = ", ".join(f"{name} (pid {record['pid']}, {record['finished']})" for name, record in stages.items())
    return ["", f"{what} were finished by more than one process (the run was resumed): {where}."]
