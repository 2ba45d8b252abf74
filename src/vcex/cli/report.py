"""``vcex report RUN_DIR``: a finished explain run's metrics.json, grid.png and report.html rebuilt from its files."""

from __future__ import annotations

import argparse

from vcex.cli.options import add_common


def add_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report", help="rebuild a finished explain run's metrics.json, grid.png and report.html from its files"
    )
    report.add_argument(
        "run",
        help="the --out folder of a finished vcex explain run: its counterfactuals are read, not explained again; "
        "the metrics are recomputed with the dataset's oracles (loaded from the cache)",
    )
    add_common(report)
    report.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.cli.explain import SUMMARY_KEYS
    from vcex.pipeline import prepare, read_run_record, report_run
    from vcex.records import json_text

    request = read_run_record(args.run)["request"]  # before any model is loaded
    bench = prepare(request["dataset"], progress=not args.quiet)
    metrics = report_run(bench, args.run, progress=not args.quiet)
    print(json_text({k: metrics[k] for k in SUMMARY_KEYS if k in metrics}, indent=None))
