"""Progress bars in one place, so ``--quiet`` and ``progress=False`` mean the same everywhere.

On a terminal (stderr a TTY, or a Jupyter kernel) a stage shows a tqdm bar. Elsewhere (CI, a log file, a
pipe) tqdm's redraws pile up as hundreds of kilobytes of half-drawn bars, so a stage writes one line
instead, when it ends: what it was, how far it got, how long it took. ``VCEX_PROGRESS`` overrides the
choice: ``0`` writes nothing, ``1`` draws bars even without a terminal. ``enabled=False`` (``--quiet``)
always writes nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO, TypeVar

from tqdm.auto import tqdm

from vcex.errors import InputError

T = TypeVar("T")
ENV = "VCEX_PROGRESS"


class LineProgress:
    """The part of tqdm's interface vcex uses (update, set_postfix, close), writing one line on close."""

    def __init__(self, total: int | None, desc: str, unit: str, file: TextIO) -> None:
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._started = time.perf_counter()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        postfix = ", ".join(f"{name}={value}" for name, value in self.postfix.items())
        elapsed = time.perf_counter() - self._started
        postfix = f" ({postfix})" if postfix else ""
        print(f"{self.desc or 'progress'}: {done} {self.unit} in {elapsed:.1f} s{postfix}", file=self.file, flush=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_notebook() -> bool:
    """A Jupyter kernel: its stderr is no TTY, yet tqdm.auto draws a widget there."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    ipython = get_ipython() if get_ipython is not None else None
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_mode(stream: TextIO | None = None) -> str:
    """'bars', 'lines' or 'off' for ``stream`` (default stderr), after ``VCEX_PROGRESS`` (0: off, 1: bars)."""
    setting = os.environ.get(ENV, "").strip()
    if setting == "0":
        return "off"
    if setting == "1":
        return "bars"
    if setting:
        raise InputError(f"{ENV} must be 0 (no progress output) or 1 (bars even without a terminal), got {setting!r}")
    stream = sys.stderr if stream is None else stream
    return "bars" if _is_terminal(stream) or _in_notebook() else "lines"


def progress_bar(
    total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it"
) -> tqdm | LineProgress:
    """A progress display on stderr for one stage: a tqdm bar on a terminal, else one line when it closes.

    Callers use ``update(n)``, ``set_postfix(**values)`` and ``close()``; a disabled one costs nothing.
    """
    mode = progress_mode() if enabled else "off"
    if mode == "lines":
        return LineProgress(total, desc, unit, sys.stderr)
    return tqdm(
        total=total, desc=desc, disable=mode == "off", unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False
    )


def track(items: Iterable[T], desc: str = "", enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress display (see :func:`progress_bar`)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress_bar(total=total, desc=desc, enabled=enabled)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
