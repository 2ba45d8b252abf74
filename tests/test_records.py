import json
import math

import numpy as np

from vcex.records import finite_json, json_text, write_json


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
