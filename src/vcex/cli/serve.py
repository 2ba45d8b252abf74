"""``vcex serve``: browse a run's counterfactuals in a local web page (vcex.report.serve)."""

from __future__ import annotations

import argparse

from vcex.cli.options import add_common

DEFAULT_PORT = 8765


def port(text: str) -> int:
    """--port: 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 (any free one) to 65535, got {text!r}")
    return value


def add_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="browse the counterfactuals of a run or job folder in a local web page")
    serve.add_argument(
        "dir",
        help="the --out folder of vcex explain, demo, benchmark or global, or a folder holding several (one run per "
        "subfolder with a metrics.json)",
    )
    serve.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; anyone who can reach another address can "
        "read the runs)",
    )
    add_common(serve)
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.report.serve import serve

    serve(args.dir, host=args.host, port=args.port, quiet=args.quiet)
