"""Folders of the user's images against the built-in datasets: the same images, once as vcex's datasets and
once written as PNG files in class folders (``folder:PATH``), each with zoo models trained on them.

Writes docs/benchmarks/folders.md and folders.json beside it:

    python benchmarks/folder_datasets.py [--datasets mnist fashion faces] [--n 1000] [--work DIR]

For each dataset the script writes ``train/<class>/<i>.png`` and ``test/<class>/<i>.png`` (8-bit PNG, which
holds the digits exactly and rounds the rendered faces to 8 bits; Fashion-MNIST: the first 6,000 of its 60,000
training images and the first 1,000 test images; faces (the smiling task, 32x32 RGB): every training image and
the first 1,000 test images), then runs the same ``vcex benchmark`` rows on the built-in dataset and on the folder, on
the same test images (the first ``n`` of the built-in test split, which the folder's test split holds in
another order), in one process. The folder's models are the zoo's recipes trained on first use, their epochs
set from the folder's size (``vcex.models.zoo.FOLDER_STEPS``); the built-in ones are the zoo's own (shipped).
Finished folders, models and rows are kept in ``--work`` (default: the vcex cache's benchmarks/folders), so a
rerun reuses them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vcex.benchmark import run_suite
from vcex.cache import cache_dir
from vcex.data import load_dataset
from vcex.evaluation import versions
from vcex.models import load_model
from vcex.report.markdown import markdown_table

ROOT = Path(__file__).resolve().parents[1]
# images written per split (None: all): Fashion-MNIST's 60,000 training images are cut to keep the run short
DIGIT_METHODS = ["attack", "attack-auto", "pixel", "linear"]
FACE_METHODS = ["attack", "pixel", "linear"]  # the faces suite has no attack-auto row


@dataclass(frozen=True)
class Source:
    """A built-in benchmark suite and what of its dataset the folder holds (None: the whole split)."""

    suite: str
    dataset: str
    latent: str
    train: int | None
    test: int | None
    methods: list[str]


# Fashion-MNIST's 60,000 training images are cut to keep the run short; the faces' built-in latent model is the
# style generator, the folder's the zoo's VAE
SOURCES = {
    "mnist": Source("mnist", "mnist", "mnist-vae", None, None, DIGIT_METHODS),
    "fashion": Source("fashion", "fashion", "fashion-vae", 6000, 1000, DIGIT_METHODS),
    "faces": Source("faces", "faces-smiling", "faces-style", None, 1000, FACE_METHODS),
}
COLUMNS = [
    ("validity", "validity ↑"),
    ("oracle_agreement", "oracle ↑"),
    ("knn_agreement", "kNN ↑"),
    ("l1", "L1 ↓"),
    ("im1", "IM1 ↓"),
    ("mean_steps", "mean steps"),
]
SHOWN_ELSEWHERE = ("threads", "machine")  # version entries the Machine line gives


def write_folder(source: Source, root: Path) -> dict:
    """The dataset's splits as ``root/<split>/<class>/<i>.png``, once (a marker file says it is complete)."""
    marker = root / "complete.json"
    if marker.exists():
        return json.loads(marker.read_text())
    counts = {}
    for split in ("train", "test"):
        data = load_dataset(source.dataset, split)
        limit = getattr(source, split) or len(data)
        names = ["".join(c if c.isalnum() else "_" for c in name) for name in data.class_names]
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        pixels = (data.images[:limit] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, (image, label) in enumerate(zip(pixels, data.labels[:limit].tolist())):
            image = image[..., 0] if image.shape[-1] == 1 else image
            Image.fromarray(np.ascontiguousarray(image)).save(root / split / names[label] / f"{i:05d}.png")
        counts[split] = limit
    marker.write_text(json.dumps(counts))
    return counts


def psnr(record: dict) -> float | None:
    """A latent model's test reconstruction in dB, from its training record."""
    if "test_psnr" in record:
        return record["test_psnr"]
    mse = record.get("test_reconstruction_mse")
    return None if mse is None else round(10 * math.log10(1 / mse), 2)


def model_rows(source: Source, folder: str) -> list[dict]:
    pairs = [
        ("cnn", "test accuracy", f"{source.dataset}-cnn", f"{folder}-cnn", lambda r: r.get("test_accuracy")),
        ("oracle", "test accuracy", f"{source.dataset}-oracle", f"{folder}-oracle", lambda r: r.get("test_accuracy")),
        ("latent", "reconstruction PSNR (dB)", source.latent, f"{folder}-vae", psnr),
    ]
    rows = []
    for role, what, builtin_name, folder_name, read in pairs:
        ours, theirs = load_model(builtin_name).training_record, load_model(folder_name).training_record
        rows.append(
            {
                "role": f"latent: `{builtin_name}` / folder's vae" if role == "latent" else role,
                "metric": what,
                "builtin": read(ours),
                "folder": read(theirs),
                "builtin_epochs": ours["config"].get("epochs"),
                "folder_epochs": theirs["config"].get("epochs"),
                "folder_train_seconds": theirs.get("train_seconds"),
            }
        )
    return rows


def metric(entry: dict, key: str) -> float | None:
    metrics = entry.get("metrics") or {}
    return metrics.get("realism", {}).get(key) if key == "im1" else metrics.get(key)


def methods_table(entry: dict) -> list[str]:
    """Each method's metrics on the built-in dataset and on its folder, side by side."""
    header = ["method", *(f"{label} built-in / folder" for _, label in COLUMNS)]
    folder_rows = {row["key"]: row for row in entry["folder"]["rows"]}
    rows = []
    for row in entry["builtin"]["rows"]:
        other = folder_rows.get(row["key"], {})
        cells = []
        for key, _ in COLUMNS:
            a, b = metric(row, key), metric(other, key)
            cells.append(" / ".join("–" if v is None else f"{v:.3f}" if key != "mean_steps" else f"{v:.1f}"
                                    for v in (a, b)))  # fmt: skip
        rows.append([f"`{row['key']}`", *cells])
    return markdown_table(header, rows)


def models_table(entry: dict) -> list[str]:
    """Each zoo model's test metric on the built-in dataset and trained on the folder."""
    header = ["model", "test metric", "built-in", "folder", "epochs built-in / folder", "folder training s"]
    rows = [
        [m["role"], m["metric"], m["builtin"], m["folder"], f"{m['builtin_epochs']} / {m['folder_epochs']}",
         m["folder_train_seconds"]]
        for m in entry["models"]
    ]  # fmt: skip
    return markdown_table(header, rows)


def render(record: dict) -> str:
    lines = [
        "# Folders of your images against the built-in datasets",
        "",
        "The same images twice: as vcex's built-in dataset with its zoo models, and written as PNG files in "
        "class folders (`train/<class>/*.png`, `test/<class>/*.png`) read as `folder:PATH`, with the zoo's "
        "recipes trained on the folder on first use (epochs set from the folder's size). Both run the same "
        "`vcex benchmark` rows on the same test images in one process, so the gap is what the folder route "
        "costs: other epochs, other class order, for Fashion-MNIST a tenth of the training images, and for the "
        "faces the zoo's 16-d VAE in place of the shipped style generator (the built-in faces rows attack in its "
        "W). Each model's test metric is on its own dataset's test split (the folders hold the first 1,000 test "
        "images of Fashion-MNIST and of the faces).",
        "",
        f"- Command: `{record['command']}`",
        f"- Machine: {record['machine']}, torch threads {record['threads']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items() if k not in SHOWN_ELSEWHERE),
        "",
    ]
    for name, entry in record["datasets"].items():
        counts = entry["images"]
        lines += [
            f"## {name}: {counts['train']} training and {counts['test']} test images in the folder, "
            f"{entry['n']} explained",
            "",
            *methods_table(entry),
            "",
            *models_table(entry),
        ]
        reused = [f"{side} `{key}`" for side in ("builtin", "folder") for key in entry[side].get("reused", [])]
        lines += ["", f"Folder models trained and rows run in {entry['seconds']:.0f} s (reused parts excluded)."]
        if reused:
            lines.append(f"Rows reused from an earlier run of this script (same images, models and settings): "
                         f"{', '.join(reused)}.")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--n", type=int, default=1000, help="test images explained (the first n of the built-in)")
    parser.add_argument("--work", default=None, help="folders, rows (default: the vcex cache's benchmarks/folders)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "folders.md"))
    parser.add_argument("--render-only", action="store_true", help="rewrite the page from the JSON beside it")
    args = parser.parse_args()
    if args.render_only:
        out = Path(args.out)
        out.write_text(render(json.loads(out.with_suffix(".json").read_text())) + "\n")
        return
    work = Path(args.work) if args.work else cache_dir() / "benchmarks" / "folders"
    record = {
        "command": "python benchmarks/folder_datasets.py" + (f" --n {args.n}" if args.n != 1000 else "")
        + (f" --datasets {' '.join(args.datasets)}" if args.datasets != list(SOURCES) else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"
        + (", no GPU" if not torch.cuda.is_available() else f", {torch.cuda.get_device_name()}"),
        "threads": torch.get_num_threads(),
        "versions": versions(),
        "datasets": {},
    }  # fmt: skip
    for dataset in args.datasets:
        started = time.perf_counter()
        source = SOURCES[dataset]
        root = work / dataset
        counts = write_folder(source, root)
        folder = f"folder:{root}"
        print(f"{dataset}: built-in rows, then the folder's", file=sys.stderr)
        builtin = run_suite(source.suite, args.n, work / f"{dataset}-builtin", methods=source.methods, progress=True)
        from_folder = run_suite(folder, args.n, work / f"{dataset}-folder", methods=source.methods, progress=True)
        record["datasets"][dataset] = {
            "images": counts,
            "n": args.n,
            "builtin": builtin,
            "folder": from_folder,
            "models": model_rows(source, folder),
            "seconds": time.perf_counter() - started,
        }
    out = Path(args.out)
    out.write_text(render(record) + "\n")
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
