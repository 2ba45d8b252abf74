"""The ``vcex`` command: ``demo``, ``explain``, ``report``, ``run``, ``global``, ``gcd``, ``benchmark``, ``serve``,
``datasets``, ``models``, ``stylespace`` and ``train-style``.

One module per subcommand (its parser and its run), over the option groups they share (:mod:`vcex.cli.options`).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import NoReturn

from vcex.cli import (
    benchmark,
    datasets,
    demo,
    explain,
    gcd,
    global_,
    models,
    report,
    run,
    serve,
    stylespace,
    train_style,
)
from vcex.errors import VcexError

# in the order --help lists them
SUBCOMMANDS = (demo, explain, report, run, global_, gcd, benchmark, serve, datasets, models, stylespace, train_style)
# what to do about an OSError the system raised while vcex read or wrote a file, by errno
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space and run the same command again: finished chunks are kept and the rerun resumes "
    "from them",
    errno.EACCES: "give an --out folder you may write in",
    errno.EPERM: "give an --out folder you may write in",
    errno.EROFS: "give an --out folder on a writable disk",
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as vcex's own are (argparse prints its whole usage first,
    a dozen lines for ``vcex explain``, above the one that says what is wrong)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def os_error_line(error: OSError) -> str:
    """An OSError (a full disk, a folder one may not write in) as one line: what failed, where, what to do."""
    where = f": {error.filename}" if error.filename else ""
    hint = OS_ERROR_HINTS.get(error.errno)
    return f"{error.strerror or error}{where}" + (f"; {hint}" if hint else "")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="vcex", description="Visual counterfactual explanations for image classifiers.")
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
    except OSError as error:  # the system's refusal (a full disk, permissions), not a bug: one line, no traceback
        print(f"vcex: error: {os_error_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vcex: interrupted; finished chunks are kept and a rerun resumes from them", file=sys.stderr)
        return 130
    return 0


__all__ = ["build_parser", "main"]
