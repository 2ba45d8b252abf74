"""The ``vcex`` command: ``demo``, ``explain``, ``global``, ``benchmark``, ``datasets``, ``models``, ``stylespace`` and
``train-style``.

One module per subcommand (its parser and its run), over the option groups they share (:mod:`vcex.cli.options`).
"""

from __future__ import annotations

import argparse
import os
import sys

from vcex.cli import benchmark, datasets, demo, explain, global_, models, stylespace, train_style
from vcex.errors import VcexError

# in the order --help lists them
SUBCOMMANDS = (demo, explain, global_, benchmark, datasets, models, stylespace, train_style)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcex", description="Visual counterfactual explanations for image classifiers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        args.handler(args)
    except VcexError as error:
        print(f"vcex: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `vcex global ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("vcex: interrupted; finished chunks are kept and a rerun resumes from them", file=sys.stderr)
        return 130
    return 0


__all__ = ["build_parser", "main"]
