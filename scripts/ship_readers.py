"""Ship the faces' image readers, so that the first faces run of `vcex explain`, `vcex gcd` or `vcex global` trains
none (~1.5 min on one CPU thread otherwise).

    python scripts/ship_readers.py

Trains the readers as `vcex.pipeline.image_readers` does (or takes them from the cache, where the benchmarks'
runs left them), copies them to src/vcex/weights/readers/ under the name `image_readers` looks for, and checks
the package's weights budget (scripts/ship_weights.py's).
"""

from __future__ import annotations

import shutil
import sys

from ship_weights import LIMIT_MB

from vcex.attribution import Descriptors
from vcex.data.faces_tasks import load_face_table
from vcex.pipeline import SHIPPED_READERS, image_reader_paths, image_readers


def main() -> None:
    faces = load_face_table("train")
    table = Descriptors.from_faces(faces)
    readers = image_readers("faces", table, faces.images)  # trains them unless cached
    shipped, cached = image_reader_paths("faces", table, faces.images)
    if not shipped.exists():  # then image_readers loaded or wrote the cached file
        SHIPPED_READERS.mkdir(parents=True, exist_ok=True)
        for old in SHIPPED_READERS.glob("readers-faces-*.safetensors"):
            old.unlink()
        shutil.copyfile(cached, shipped)
    weights = SHIPPED_READERS.parent
    total = sum(f.stat().st_size for f in weights.rglob("*.safetensors")) / 2**20
    print(f"shipped {shipped.name} ({shipped.stat().st_size / 2**10:.0f} KB); all weights {total:.1f} MB")
    for report in readers.summary():
        print(f"  {report['name']}: held-out accuracy {report['accuracy']:.3f} (chance {report['chance']:.3f})")
    if total > LIMIT_MB:
        sys.exit(f"shipped weights total {total:.1f} MB, over the {LIMIT_MB:.0f} MB budget")


if __name__ == "__main__":
    main()
