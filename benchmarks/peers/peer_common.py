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
    stages and metrics. Another identity clears the folder, so a result is never reused across settings."""

    def __init__(self, work_dir: Path, identity: dict) -> None:
        self.dir = work_dir
        self.path = work_dir / "results.json"
        self.data = {"identity": identity, "stages": {}, "metrics": {}}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved.get("identity") == identity:
                self.data = saved
                done = ", ".join(saved.get("stages", {})) or "none"
                log(f"resuming from {self.path} (finished stages: {done})")
            else:
                log(f"{self.path} belongs to other images, models or settings; starting afresh")
                for path in self.dir.rglob("*"):
                    if path.is_file():
                        path.unlink()

    def stage(self, name: str) -> dict | None:
        return self.data["stages"].get(name)

    def finish(self, name: str, record: dict) -> None:
        self.data["stages"][name] = {**record, "pid": os.getpid(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.write()

    def write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(temporary, self.path)


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
