"""JSON records on disk: written as strict JSON, read back into dataclasses across vcex versions."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from vcex.errors import CacheError

Record = TypeVar("Record")


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


def _file_mode() -> int:
    """The mode a new file gets from this process's umask (0o644 under the usual 022); read by setting it back."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file name in ``path``'s folder to write ``path``'s new content to; when the block ends without
    an error, the file is flushed to disk (fsync) and renamed over ``path`` (os.replace, atomic on one file
    system), so a reader or a rerun after a kill sees the old file or the whole new one, never half of one.
    On an error the temporary file is removed and the error goes on. Every file vcex writes goes through here.

    The name is ``.<name>.<pid>.<random>.tmp`` (hidden, unique per writer: parallel workers writing one folder
    never share a temporary); a writer killed mid-write leaves it behind, and nothing reads it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        # some writers create their file private (safetensors: 0600); the result gets an ordinary file's mode
        os.chmod(temporary, _file_mode())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # the rename itself made durable; not every file system opens folders
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`; returns the path."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path


def write_json(path: str | Path, record: object) -> Path:
    """Write ``record`` to ``path`` as strict JSON (see :func:`json_text`), atomically; returns the path."""
    return write_text_atomic(path, json_text(record))


def dataclass_from_record(cls: type[Record], record: Mapping[str, Any], source: str) -> Record:
    """An instance of the dataclass ``cls`` from a saved ``record``, across vcex versions.

    Keys that ``cls`` has no field for (written by another vcex version) are ignored; a required field the
    record lacks raises :class:`CacheError` naming ``source``, so a cache is recomputed rather than misread.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in record]
    if missing:
        raise CacheError(
            f"{source} lacks {', '.join(missing)} (written by another vcex version?); it cannot be read back"
        )
    return cls(**{key: value for key, value in record.items() if key in names})
