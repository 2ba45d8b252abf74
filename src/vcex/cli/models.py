"""``vcex models``: list the model zoo, or train (or load) every model of a dataset."""

from __future__ import annotations

import argparse

from vcex.cli.options import FOLDER_HELP, add_common


def add_parser(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list the model zoo, or train its models for a dataset")
    models.add_argument(
        "--dataset", default=None, help=f"train (or load) every model for this dataset (or {FOLDER_HELP})"
    )
    add_common(models)
    models.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.data import dataset_names
    from vcex.models import model_names, model_spec
    from vcex.models.zoo import DATASET_ROLES
    from vcex.pipeline import prepare

    names = model_names()
    if args.dataset:
        bench = prepare(args.dataset, progress=not args.quiet)
        if bench.dataset not in dataset_names():  # a folder of the user's images: its models too
            names += [f"{bench.dataset}-{role}" for role in DATASET_ROLES]
    for name in names:
        spec = model_spec(name)
        state = "cached" if spec.path.exists() else "shipped" if spec.shipped_path.exists() else "not trained yet"
        print(f"{name:24s} {state:16s} {spec.path if state != 'shipped' else spec.shipped_path}")
