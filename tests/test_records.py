import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from vcex.errors import CacheError
from vcex.records import dataclass_from_record, finite_json, json_text, write_json


def strict_loads(text: str) -> object:
    """json.loads that refuses the bare NaN / Infinity Python's json writes by default."""

    def refuse(constant: str) -> None:
        raise ValueError(f"bare {constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    record = {
        "validity": float("nan"),
        "l1": float("inf"),
        "nested": {"scores": [1.5, -float("inf"), np.float32("nan"), np.float64(0.25)]},
        "threshold": (0.9, 0.95),
        "count": 3,
        "flag": True,
        "path": tmp_path,
    }
    path = write_json(tmp_path / "metrics.json", record)
    loaded = strict_loads(path.read_text())
    assert loaded == {
        "validity": None,
        "l1": None,
        "nested": {"scores": [1.5, None, None, 0.25]},
        "threshold": [0.9, 0.95],
        "count": 3,
        "flag": True,
        "path": str(tmp_path),
    }
    assert strict_loads(json_text([math.nan], indent=None)) == [None]
    assert finite_json({1: float("nan")}) == {"1": None}


@dataclass
class Saved:
    name: str
    value: float
    notes: list = field(default_factory=list)
    flag: bool = False


def test_records_from_another_version_drop_unknown_keys_and_name_missing_ones():
    saved = dataclass_from_record(Saved, {"name": "a", "value": 1.0, "added_later": 3}, "test record")
    assert saved == Saved("a", 1.0)
    with pytest.raises(CacheError, match=r"test record lacks value \(written by another vcex version"):
        dataclass_from_record(Saved, {"name": "a", "flag": True}, "test record")


def test_an_atomic_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from vcex.records import atomic_path

    path = write_json(tmp_path / "metrics.json", {"n": 1})
    with pytest.raises(OSError, match="disk full"), atomic_path(path) as temporary:
        temporary.write_text('{"n": ')
        raise OSError("disk full")
    assert json.loads(path.read_text()) == {"n": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_json(path, {"n": 2})
    assert json.loads(path.read_text()) == {"n": 2} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_an_atomic_write_gets_an_ordinary_files_mode_even_from_a_private_writer(tmp_path):
    import os
    import stat

    from vcex.records import atomic_path

    target = tmp_path / "weights.bin"
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"x")
        os.chmod(temporary, 0o600)  # as safetensors creates its files
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
