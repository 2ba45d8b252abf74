"""``vcex global``: which descriptors a classifier's counterfactuals change (global explanation)."""

from __future__ import annotations

import argparse

from vcex.cli.options import (
    READERS,
    add_common,
    add_dataset,
    add_max_steps,
    add_model_forms,
    add_n,
    add_out,
    add_threshold,
    add_whiten,
    models_from_args,
    positive_count,
)

# 500: an average over counterfactuals, with one explanation per target class on the digits (~50 per class)
DEFAULT_N = 500


def add_parser(commands: argparse._SubParsersAction) -> None:
    global_ = commands.add_parser("global", help="global explanation: descriptors the counterfactuals change")
    add_dataset(
        global_, "mnist | fashion | folder:PATH of grayscale images (morphometric descriptors) | faces (factor table)"
    )
    global_.add_argument(
        "--descriptors",
        default=None,
        help="folder:PATH only: a CSV of your own descriptors, a 'file' column naming each image as a path "
        "relative to the folder (cat/001.png) and one numeric column per descriptor (0/1 columns are binary); "
        "rows must cover the training images, other rows are ignored",
    )
    add_n(global_, None, f"test images to explain (default {DEFAULT_N}; --from-run: the run's first N, default all)")
    global_.add_argument(
        "--from-run",
        default=None,
        help="the --out folder of a finished vcex explain run of this dataset and classifier: its counterfactuals "
        "are read instead of attacking again (the attack's options do not apply; one round)",
    )
    add_out(global_, "output folder (global.json, charts, global.html; explained/: the images for vcex serve)")
    add_threshold(global_)
    add_max_steps(global_, "the attack's step budget per image")
    add_whiten(
        global_, "run the attack in the whitened latent (see vcex explain --whiten); the probes read the raw latents"
    )
    global_.add_argument(
        "--reader",
        choices=READERS,
        default="auto",
        help="what reads the counterfactuals' descriptors: latent probes (the paper's) or a CNN on the images, "
        "trained once on the training images and cached; auto (default): images for faces, where they ranked "
        "the true driver first for 63 of 70 classifiers against 50 for the probes (docs/benchmarks/faces-global.md), "
        "latent probes for digits",
    )
    global_.add_argument(
        "--rounds",
        type=positive_count,
        default=1,
        help="faces: explaining away in this many rounds, each attacking again while holding the factors won by "
        "the earlier rounds, so a shortcut hidden behind the cheapest change shows (default 1: off; 3 put a "
        "planted background in the top 3 for 40 of 40 shortcut classifiers, one round for 4; each round costs "
        "one more attack)",
    )
    global_.add_argument(
        "--later-rounds",
        choices=("whitened", "same"),
        default=None,
        help="the attack of rounds 2 and on: in the whitened latent (default; in a trial on two shortcut "
        "classifiers, later rounds in raw W never found the shortcut; docs/benchmarks/faces-global.md) or the "
        "same as round 1's",
    )
    global_.add_argument(
        "--round-scores",
        choices=("auto", "residual", "raw"),
        default=None,
        help="how rounds 2 and on choose their winner: residual takes the factor whose change the earlier "
        "rounds' patterns leave unexplained, so what changes along with a held factor (a smile's eyes and "
        "lipstick) does not win as a new route; raw takes the largest |S|; auto (default): residual, or raw "
        "with --whiten, whose first round often mixes two routes already",
    )
    add_model_forms(global_)
    add_common(global_)
    global_.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.errors import InputError
    from vcex.pipeline import check_global_options, prepare, run_global
    from vcex.records import json_text

    # before any model is trained
    check_global_options(args.dataset, args.reader, args.rounds, args.later_rounds, args.round_scores, args.descriptors)
    # the global explanation's counterfactuals are the attack's, which needs the classifier's gradients, unless they
    # come from a finished run (--from-run), whose method says what the classifier must give
    method = "attack"
    if args.from_run is not None:  # a run of another dataset is refused before that dataset's models load
        from vcex.models.user import is_user_classifier
        from vcex.pipeline import dataset_for, read_run_record

        request = read_run_record(args.from_run)["request"]
        ran, method = request["dataset"], request["method"]
        asked = dataset_for(args.dataset, None if is_user_classifier(args.classifier) else args.classifier)
        if ran != asked:
            raise InputError(f"--from-run {args.from_run} explained {ran}, not {asked}: give --dataset of that run")
    bench = prepare(args.dataset, progress=not args.quiet, **models_from_args(args, method))
    if args.n is not None and args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    if args.from_run is not None:
        given = [flag for flag, value in (("--threshold", args.threshold), ("--max-steps", args.max_steps)) if value]
        if given or args.whiten:
            raise InputError(
                f"{', '.join(given + (['--whiten'] if args.whiten else []))} set the attack, which --from-run does "
                "not run: drop them (the run's own settings are recorded in global.json)"
            )
    n = args.n if args.n is not None or args.from_run is not None else DEFAULT_N
    record = run_global(
        bench,
        n if args.from_run is not None else min(n, len(bench.test)),
        args.out,
        progress=not args.quiet,
        threshold=args.threshold,
        max_steps=args.max_steps,
        whiten=args.whiten,
        reader=args.reader,
        rounds=args.rounds,
        later_rounds=args.later_rounds,
        round_scores=args.round_scores,
        descriptors=args.descriptors,
        from_run=args.from_run,
    )
    summary = {name: c["ranking"][:3] for name, c in record["classes"].items()}
    if "explain_away" in record:
        summary["explaining away"] = record["explain_away"]["ranking"][:3]
    print(
        json_text(
            {
                "dataset": record["dataset"],
                "valid_counterfactuals": record["valid_counterfactuals"],
                "top_descriptors": summary,
            },
            indent=None,
        )
    )
