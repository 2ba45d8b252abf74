"""``vcex run JOB.toml``: a ``vcex explain`` run described by a job file, on this machine or on Ray.

A job file is TOML (read with the standard library's tomllib). Its top-level keys are ``vcex explain``'s
options by their flag's name (``dataset``, ``classifier``, ``method``, ``n``, ``target``...), with ``output`` for
``--out``; ``target`` may be a list, one run per target into ``output/target-<target>``. The method's options go
in ``[options]`` by their Python names (``max_steps``, ``threshold``, ``refine_steps``...), and a ``[ray]`` table
(``address``, ``workers``) runs it on Ray as ``--ray`` does. Relative paths are relative to the job file's folder.
The job becomes ``vcex explain``'s arguments and runs through the same code, checks and errors included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vcex.cli.options import add_common, out_path
from vcex.errors import InputError

# what a job file names as `vcex explain`'s --out, and the tables it may hold besides the top-level keys
OUTPUT = "output"
OPTIONS, RAY = "options", "ray"
RAY_KEYS = ("address", "workers")
# `vcex explain` flags a job file does not set: the output folder is `output`, Ray is its own table, and quiet /
# status are questions for the command line, not part of a job
NOT_JOB_KEYS = ("help", "out", "ray", "workers", "quiet", "status")


def add_parser(commands: argparse._SubParsersAction) -> None:
    run_ = commands.add_parser("run", help="run a job file (TOML): vcex explain's options, on this machine or Ray")
    run_.add_argument("job", help="the job file, e.g. examples/job.toml")
    run_.add_argument("--out", type=out_path, default=None, help="output folder instead of the job's `output`")
    add_common(run_)
    run_.set_defaults(handler=run)


class _JobParser(argparse.ArgumentParser):
    """An argparse parser whose errors are an InputError (the job's keys are named by the caller), not an exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def explain_parser() -> argparse.ArgumentParser:
    """``vcex explain``'s parser, raising InputError instead of exiting."""
    from vcex.cli import explain

    commands = _JobParser(prog="vcex").add_subparsers(dest="command", parser_class=_JobParser)
    explain.add_parser(commands)
    return commands.choices["explain"]


def job_keys(parser: argparse.ArgumentParser) -> tuple[dict[str, str], dict[str, str]]:
    """The keys a job file knows, each with its ``vcex explain`` flag: top-level ones and ``[options]`` ones."""
    from vcex.pipeline import OPTION_FLAGS

    flags = {option: option for action in parser._actions for option in action.option_strings}
    option_keys = {key: flag for key, flag in OPTION_FLAGS.items() if flag in flags}
    taken = set(option_keys.values()) | {f"--{name.replace('_', '-')}" for name in NOT_JOB_KEYS}
    top = {
        flag[2:].replace("-", "_"): flag
        for flag in flags
        if flag.startswith("--") and not flag.startswith("--no-") and flag not in taken
    }
    return {OUTPUT: "--out", **top}, option_keys


def read_job(path: Path) -> dict[str, Any]:
    """The job file's table, or an InputError naming what is wrong with the file."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 (tomllib is standard from 3.11; tomli is its package)
        import tomli as tomllib
    if not path.is_file():
        raise InputError(f"job file {path} does not exist; see examples/job.toml for one")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not a valid TOML job file: {error}") from None


def _refuse_unknown(path: Path, table: Mapping[str, Any], known: Mapping[str, str] | tuple, where: str) -> None:
    unknown = [key for key in table if key not in known]
    if unknown:
        raise InputError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} {where}; "
            f"known: {', '.join(known)}"
        )


def _flag_arguments(flag: str, key: str, value: Any, action: argparse.Action, path: Path) -> list[str]:
    """``vcex explain``'s arguments for one job key: a flag and its value(s), a boolean as the flag or --no-flag."""
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise InputError(f"{path}: {key} must be true or false, got {value!r}")
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, list) and action.nargs not in ("+", "*"):
        raise InputError(f"{path}: {key} takes one value, got the list {value!r}")
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in values):
        raise InputError(f"{path}: {key} must be text or a number, got {value!r}")
    return [flag, *map(str, values)]


def job_runs(path: Path, job: Mapping[str, Any], out: str | None) -> list[argparse.Namespace]:
    """The ``vcex explain`` arguments of each run of a job (one per target), checked by explain's parser."""
    parser = explain_parser()
    top, option_keys = job_keys(parser)
    actions = {option: action for action in parser._actions for option in action.option_strings}
    tables = (OPTIONS, RAY)
    _refuse_unknown(path, job, {**top, **{key: "" for key in tables}}, "at the top level")
    for table in tables:
        if table in job and not isinstance(job[table], dict):
            raise InputError(f"{path}: {table} must be a table, [{table}], got {job[table]!r}")
    options, ray = job.get(OPTIONS, {}), job.get(RAY)
    _refuse_unknown(path, options, option_keys, f"in [{OPTIONS}]")
    if ray is not None:
        _refuse_unknown(path, ray, RAY_KEYS, f"in [{RAY}]")
    if out is None and OUTPUT not in job:
        raise InputError(f'{path} names no output folder: add `{OUTPUT} = "results"` (or give --out)')
    flags = {**top, **option_keys}
    argv = []
    for key, value in [*job.items(), *options.items()]:
        if key in tables or key == "target" or key == OUTPUT and out is not None:
            continue
        argv += _flag_arguments(flags[key], key, value, actions[flags[key]], path)
    if ray is not None:
        argv += ["--ray", *([str(ray["address"])] if "address" in ray else [])]
        argv += ["--workers", str(ray["workers"])] if "workers" in ray else []
    targets = job.get("target", [None])
    several = isinstance(targets, list)
    if several and not targets:
        raise InputError(f'{path}: target is an empty list; name at least one target, e.g. target = ["second"]')
    runs = []
    for target in targets if several else [targets]:
        output = Path(out if out is not None else job[OUTPUT])
        run_argv = [*argv, "--out", str(output / f"target-{target}" if several else output)]
        if target is not None:
            run_argv += _flag_arguments("--target", "target", target, actions["--target"], path)
        try:
            runs.append(parser.parse_args(run_argv))
        except InputError as error:
            raise InputError(f"{path}: {_job_terms(str(error), flags)}") from None
    return runs


def _job_terms(message: str, flags: Mapping[str, str]) -> str:
    """An argparse message in a job file's terms: ``argument --max-steps`` becomes ``key max_steps``."""
    keys = {flag: key for key, flag in flags.items()}
    return re.sub(r"argument (--[\w-]+)(/--[\w-]+)?", lambda match: f"key {keys.get(match[1], match[1])}", message)


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run in ``folder`` (a job's relative paths are relative to its file), then back."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def run(args: argparse.Namespace) -> None:
    import torch

    path = Path(args.job)
    job = read_job(path)
    # --out is the caller's (relative to where they are); the job's own paths are relative to its folder
    out = str(Path(args.out).resolve()) if args.out is not None else None
    with working_directory(path.resolve().parent):
        runs = job_runs(path, job, out)
        for explain_args in runs:
            explain_args.quiet = args.quiet
            if args.threads is not None:  # the command line's --threads over the job's
                explain_args.threads = args.threads
            elif explain_args.threads:
                torch.set_num_threads(explain_args.threads)  # as `vcex explain --threads` has it set by vcex.cli.main
            explain_args.handler(explain_args)
