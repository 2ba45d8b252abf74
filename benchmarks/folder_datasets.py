"""Folders of the user's images against the built-in datasets: the same images, once as vcex's datasets and
once written as PNG files in class folders (``folder:PATH``), each with zoo models trained on them.

Writes docs/benchmarks/folders.md and folders.json beside it:

    python benchmarks/folder_datasets.py [--datasets mnist fashion] [--n 1000] [--work DIR]

For each dataset the script writes ``train/<class>/<i>.png`` and ``test/<class>/<i>.png`` (8-bit PNG, which
holds these 8-bit images exactly; Fashion-MNIST: the first 6,000 of its 60,000 training images and the first
1,000 test images), then runs the same ``vcex benchmark`` rows on the built-in dataset and on the folder, on
the same test images (the first ``n`` of the built-in test split, which the folder's test split holds in
another order), in one process. The folder's models are the zoo's recipes trained on first use, their epochs
set from the folder's size (``vcex.models.zoo.FOLDER_STEPS``); the built-in ones are the zoo's own (shipped).
Finished folders, models and rows are kept in ``--work`` (default: the vcex cache's benchmarks/folders), so a
rerun reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vcex.benchmark import run_suite
from vcex.cache import cache_dir
from vcex.data import load_dataset
from vcex.evaluation import versions
from vcex.models import load_model

ROOT = Path(__file__).resolve().parents[1]
# images written per split (None: all): Fashion-MNIST's 60,000 training images are cut to keep the run short
LIMITS = {"mnist": {"train": None, "test": None}, "fashion": {"train": 6000, "test": 1000}}
METHODS = ["attack", "attack-auto", "pixel", "linear"]
COLUMNS = [
    ("validity", "validity ↑"),
    ("oracle_agreement", "oracle ↑"),
    ("knn_agreement", "kNN ↑"),
    ("l1", "L1 ↓"),
    ("im1", "IM1 ↓"),
    ("mean_steps", "mean steps"),
]
SHOWN_ELSEWHERE = ("threads", "machine")  # version entries the Machine line gives
ROLES = {"cnn": "test_accuracy", "oracle": "test_accuracy", "vae": "test_reconstruction_mse"}


def write_folder(dataset: str, root: Path) -> dict:
    """The dataset's splits as ``root/<split>/<class>/<i>.png``, once (a marker file says it is complete)."""
    marker = root / "complete.json"
    if marker.exists():
        return json.loads(marker.read_text())
    counts = {}
    for split in ("train", "test"):
        data = load_dataset(dataset, split)
        limit = LIMITS[dataset][split] or len(data)
        names = ["".join(c if c.isalnum() else "_" for c in name) for name in data.class_names]
        for name in names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        pixels = (data.images[:limit, 0] * 255).round().to(torch.uint8).numpy()
        for i, (image, label) in enumerate(zip(pixels, data.labels[:limit].tolist())):
            Image.fromarray(np.ascontiguousarray(image)).save(root / split / names[label] / f"{i:05d}.png")
        counts[split] = limit
    marker.write_text(json.dumps(counts))
    return counts


def model_rows(builtin: str, folder: str) -> list[dict]:
    rows = []
    for role, metric in ROLES.items():
        ours, theirs = load_model(f"{builtin}-{role}").training_record, load_model(f"{folder}-{role}").training_record
        rows.append(
            {
                "role": role,
                "metric": metric,
                "builtin": ours.get(metric),
                "folder": theirs.get(metric),
                "builtin_epochs": ours["config"].get("epochs"),
                "folder_epochs": theirs["config"].get("epochs"),
                "folder_train_seconds": theirs.get("train_seconds"),
            }
        )
    return rows


def metric(entry: dict, key: str) -> float | None:
    metrics = entry.get("metrics") or {}
    return metrics.get("realism", {}).get(key) if key == "im1" else metrics.get(key)


def render(record: dict) -> str:
    lines = [
        "# Folders of your images against the built-in datasets",
        "",
        "The same images twice: as vcex's built-in dataset with its zoo models, and written as PNG files in "
        "class folders (`train/<class>/*.png`, `test/<class>/*.png`) read as `folder:PATH`, with the zoo's "
        "recipes trained on the folder on first use (epochs set from the folder's size). Both run the same "
        "`vcex benchmark` rows on the same test images in one process, so the gap is what the folder route "
        "costs: other epochs, other class order and, for Fashion-MNIST, a tenth of the training images. Each "
        "model's test metric is on its own dataset's test split (for the Fashion-MNIST folder, its 1,000 test "
        "images; built-in, all 10,000).",
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
            "| method | " + " | ".join(f"{label} built-in / folder" for _, label in COLUMNS) + " |",
            "|---|" + "---|" * len(COLUMNS),
        ]
        folder_rows = {row["key"]: row for row in entry["folder"]["rows"]}
        for row in entry["builtin"]["rows"]:
            other = folder_rows.get(row["key"], {})
            cells = []
            for key, _ in COLUMNS:
                a, b = metric(row, key), metric(other, key)
                cells.append(" / ".join("–" if v is None else f"{v:.3f}" if key != "mean_steps" else f"{v:.1f}"
                                        for v in (a, b)))  # fmt: skip
            lines.append(f"| `{row['key']}` | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| model | test metric | built-in | folder | epochs built-in / folder | folder training s |",
            "|---|---|---|---|---|---|",
        ]
        for model in entry["models"]:
            lines.append(
                f"| {model['role']} | {model['metric']} | {model['builtin']} | {model['folder']} | "
                f"{model['builtin_epochs']} / {model['folder_epochs']} | {model['folder_train_seconds']} |"
            )
        lines += ["", f"Folder models trained and rows run in {entry['seconds']:.0f} s (reused parts excluded).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion"], choices=list(LIMITS))
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
        + (f" --datasets {' '.join(args.datasets)}" if args.datasets != ["mnist", "fashion"] else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"
        + (", no GPU" if not torch.cuda.is_available() else f", {torch.cuda.get_device_name()}"),
        "threads": torch.get_num_threads(),
        "versions": versions(),
        "datasets": {},
    }  # fmt: skip
    for dataset in args.datasets:
        started = time.perf_counter()
        root = work / dataset
        counts = write_folder(dataset, root)
        folder = f"folder:{root}"
        print(f"{dataset}: built-in rows, then the folder's", file=sys.stderr)
        builtin = run_suite(dataset, args.n, work / f"{dataset}-builtin", methods=METHODS, progress=True)
        from_folder = run_suite(folder, args.n, work / f"{dataset}-folder", methods=METHODS, progress=True)
        record["datasets"][dataset] = {
            "images": counts,
            "n": args.n,
            "builtin": builtin,
            "folder": from_folder,
            "models": model_rows(dataset, folder),
            "seconds": time.perf_counter() - started,
        }
    out = Path(args.out)
    out.write_text(render(record) + "\n")
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
