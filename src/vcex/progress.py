"""Progress bars in one place, so ``--quiet`` and ``progress=False`` mean the same everywhere."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it") -> tqdm:
    """A tqdm bar on stderr; a disabled one costs nothing."""
    return tqdm(
        total=total, desc=desc, disable=not enabled, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False
    )


def track(items: Iterable[T], desc: str = "", enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    yield from tqdm(
        items, desc=desc, disable=not enabled, total=total, file=sys.stderr, dynamic_ncols=True, leave=False
    )
