"""Identity preservation and diversity of every ``vcex benchmark`` method: docs/benchmarks/identity.md + .json.

Collects finished ``vcex benchmark`` runs (one folder per suite, each with benchmark.json and rows/) and writes
one table per dataset: validity, oracle agreement, kNN agreement, identity preservation (the oracle's features,
as metrics.json records it), identity in pixel space (for comparison: the same rule on raw pixels) and diversity.
Runs of the amortized explainer fitted with an earlier recipe (``--before``) add before/after rows.

    vcex benchmark --suite mnist --n 200 --out runs/mnist --threads 1      # and fashion, faces
    python benchmarks/identity.py --runs mnist=runs/mnist fashion=runs/fashion faces=runs/faces \\
        [--before mnist=runs/mnist-before ...] [--before-label "identity_weight 0"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from vcex.evaluation import identity_metrics, identity_preservation
from vcex.explainers import CounterfactualResult
from vcex.pipeline import Workbench, prepare

ROOT = Path(__file__).resolve().parents[1]
TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "faces": "Synthetic faces (smiling)"}


def _folders(pairs: list[str]) -> dict[str, Path]:
    folders = {}
    for pair in pairs:
        suite, _, folder = pair.partition("=")
        if not folder or not (Path(folder) / "benchmark.json").is_file():
            sys.exit(f"expected SUITE=FOLDER with FOLDER/benchmark.json, got {pair!r}")
        folders[suite] = Path(folder)
    return folders


_BENCHES: dict[str, Workbench] = {}


def _saved_result(row_folder: Path) -> CounterfactualResult:
    return CounterfactualResult.load(row_folder / "counterfactuals.safetensors")


def _pixel_identity(result: CounterfactualResult) -> float:
    """The identity rule on raw pixels instead of the oracle's features."""
    matched = identity_preservation(result.originals.flatten(1).double(), result.counterfactuals.flatten(1).double())
    return round(float(matched.float().mean()), 6)


def _identity_of_saved(result: CounterfactualResult, bench_record: dict) -> dict:
    """Identity and diversity of a row saved before metrics.json recorded them (as evaluate measures them)."""
    dataset = bench_record["dataset"]
    if dataset not in _BENCHES:
        classifier = dataset.removeprefix("faces-") if dataset.startswith("faces-") else None
        _BENCHES[dataset] = prepare(dataset.split("-")[0] if classifier else dataset, False, classifier)
    bench = _BENCHES[dataset]
    with torch.no_grad():
        originals, counterfactuals = bench.features()(result.originals), bench.features()(result.counterfactuals)
    return identity_metrics(originals, counterfactuals, result.target, bench.diversity_reference())


def _rows(folder: Path, keys: list[str] | None = None) -> list[dict]:
    record = json.loads((folder / "benchmark.json").read_text())
    rows = []
    for entry in record["rows"]:
        if entry["status"] != "done" or (keys is not None and entry["key"] not in keys):
            continue
        result = _saved_result(folder / "rows" / entry["key"])
        m = entry["metrics"]
        if m.get("identity_preservation") is None:
            m = {**m, **_identity_of_saved(result, record)}
        rows.append(
            {
                "key": entry["key"],
                "label": entry["label"],
                "validity": m["validity"],
                "oracle_agreement": m["oracle_agreement"],
                "knn_agreement": m["knn_agreement"],
                "identity_preservation": m.get("identity_preservation"),
                "identity_pixels": _pixel_identity(result),
                "diversity": m.get("diversity"),
                "diversity_per_class": m.get("diversity_per_class"),
                "identity_weight": (m.get("settings") or {}).get("identity_weight"),
            }
        )
    return rows


def _fmt(value: object, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(rows: list[dict]) -> list[str]:
    lines = [
        "| method | validity ↑ | oracle agreement ↑ | kNN agreement ↑ | identity ↑ | identity (pixels) ↑ | diversity |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['key']}`: {row['label']} | {_fmt(row['validity'])} | {_fmt(row['oracle_agreement'])} "
            f"| {_fmt(row['knn_agreement'])} | {_fmt(row['identity_preservation'])} | {_fmt(row['identity_pixels'])} "
            f"| {_fmt(row['diversity'], 2)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="SUITE=FOLDER of a finished vcex benchmark")
    parser.add_argument("--before", nargs="*", default=[], help="SUITE=FOLDER: amortized rows of an earlier recipe")
    parser.add_argument("--before-label", default="earlier recipe", help="what the --before runs were fitted with")
    parser.add_argument("--notes", default=None, help="a Markdown file whose text goes after the tables")
    parser.add_argument("--trials", default=None, help="a JSON file of amortized recipe trials, kept in the record")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "identity.md"))
    args = parser.parse_args(argv)
    runs, before = _folders(args.runs), _folders(args.before)
    out = Path(args.out)
    record: dict = {"suites": {}}
    command = shlex.join(["python", "benchmarks/identity.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# Identity preservation and diversity: does a counterfactual still resemble its original?",
        "",
        f"Written by `{command}` from the `vcex benchmark` runs named under each table (the machine: 2 CPU cores "
        "shared with other jobs, so no times are quoted here).",
        "",
    ]
    record["command"] = command
    for suite, folder in runs.items():
        bench = json.loads((folder / "benchmark.json").read_text())
        rows = _rows(folder)
        entry = {
            "command": bench["command"],
            "n": bench["n"],
            "dataset": bench["dataset"],
            "machine": bench["machine"],
            "versions": bench["versions"],
            "identity_chance": round(1 / bench["n"], 6),
            "rows": rows,
        }
        machine = bench["machine"]
        lines += [
            f"## {TITLES.get(suite, suite)}",
            "",
            f"`{bench['command']}` on {machine['processor']}, {machine['cpu_count']} CPU cores, torch threads "
            f"{machine['torch_threads']}; vcex {bench['versions']['vcex']}, torch {bench['versions']['torch']}. "
            f"n = {bench['n']}: identity chance 1/n = {1 / bench['n']:.3f}.",
            "",
            *_table(rows),
            "",
        ]
        if suite in before:
            amortized = [row["key"] for row in rows if row["key"].startswith("amortized")]
            earlier = _rows(before[suite], amortized)
            entry["before"] = {"label": args.before_label, "folder": str(before[suite]), "rows": earlier}
            lines += [f"Amortized rows fitted with the {args.before_label}:", "", *_table(earlier), ""]
        record["suites"][suite] = entry
    if args.trials:
        record["amortized_trials"] = json.loads(Path(args.trials).read_text())
    if args.notes:
        lines += [Path(args.notes).read_text().strip(), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
