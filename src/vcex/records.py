"""JSON records on disk, written as strict JSON."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path


def finite_json(value: object) -> object:
    """``value`` with every non-finite float (NaN, inf) replaced by None, tuples as lists, keys as text.

    Python's json writes NaN as a bare ``NaN``, which is not JSON: other tools reading metrics.json
    (jq, JavaScript's JSON.parse) refuse the whole file. A missing number is ``null`` instead.
    """
    if isinstance(value, Mapping):
        return {str(key): finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    if isinstance(value, (bool, numbers.Integral)) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):  # float, numpy floats
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def json_text(record: object, indent: int | None = 2) -> str:
    """``record`` as strict JSON (non-finite floats as null; other objects by ``str``)."""
    return json.dumps(finite_json(record), indent=indent, allow_nan=False, default=str)


def write_json(path: str | Path, record: object) -> Path:
    """Write ``record`` to ``path`` as strict JSON (see :func:`json_text`); returns the path."""
    path = Path(path)
    path.write_text(json_text(record), encoding="utf-8")
    return path
