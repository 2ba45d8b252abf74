"""``vcex benchmark``: every registered method on the same images and targets: benchmark.md and benchmark.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from vcex.cli.options import (
    add_classifier,
    add_common,
    add_device,
    add_model_forms,
    add_n,
    add_out,
    classifier_from_args,
    latent_model_from_args,
    say,
)


def _row_keys_help() -> str:
    """The suites' row keys, as --methods lists them."""
    from vcex.benchmark import SUITES

    return "; ".join(f"{name}: {' '.join(row.key for row in suite.rows)}" for name, suite in SUITES.items())


def add_parser(commands: argparse._SubParsersAction) -> None:
    benchmark = commands.add_parser(
        "benchmark", help="every method on the same images and targets: benchmark.md (a table) and benchmark.json"
    )
    benchmark.add_argument(
        "--suite", required=True, help="mnist | fashion | folder:PATH (target: runner-up) | faces (smiling, flip)"
    )
    # 200: the published tables' size (docs/BENCHMARKS.md), so a default run is comparable to them
    add_n(benchmark, 200, "test images to explain (the first N, default 200)")
    add_out(benchmark, "output folder (benchmark.md, benchmark.json, rows/)")
    benchmark.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"row keys to run (default: all; folder:PATH takes mnist's). {_row_keys_help()}",
    )
    add_device(benchmark, "where the explainers run: cpu (default), cuda, cuda:1 ...")
    add_classifier(benchmark, "explain your own model instead of the suite's zoo classifier: ")
    add_model_forms(benchmark)
    add_common(benchmark)
    benchmark.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.benchmark import run_suite, suite_rows
    from vcex.errors import InputError
    from vcex.explainers.registry import METHODS, check_black_box
    from vcex.models.blackbox import is_black_box

    classifier = classifier_from_args(args)
    if isinstance(classifier, str) or (classifier is None and args.black_box):
        raise InputError(
            f"vcex benchmark --classifier takes your own model (a TorchScript or ONNX file, or "
            f"package.module:factory), got {classifier!r}; each suite already names its zoo classifier (faces: smiling)"
        )
    # --methods a b, or --methods a,b
    methods = [key for item in args.methods for key in item.split(",") if key] if args.methods else None
    if is_black_box(classifier):
        _, rows = suite_rows(args.suite, methods)
        if methods is None:  # every row that can explain a black box
            methods = [row.key for row in rows if METHODS[row.method].black_box]
            say(args, f"a black-box classifier: only the rows that need no gradients run ({', '.join(methods)})")
        for row in rows:
            if row.key in methods:
                check_black_box(row.method, True)
    run_suite(
        args.suite,
        args.n,
        Path(args.out),
        methods=methods,
        progress=not args.quiet,
        device=args.device,
        classifier=classifier,
        latent_model=latent_model_from_args(args),
    )
    print(Path(args.out) / "benchmark.md")
