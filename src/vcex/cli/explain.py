"""``vcex explain``: counterfactuals for test images (or image files) with one registered method."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

from vcex.cli.options import (
    FOLDER_HELP,
    add_common,
    add_dataset,
    add_device,
    add_max_steps,
    add_model_forms,
    add_n,
    add_out,
    add_threshold,
    add_whiten,
    count,
    models_from_args,
    positive_count,
    positive_number,
)
from vcex.distributed import DEFAULT_WORKERS
from vcex.explainers.registry import METHODS

# the first N test images when --n is not given; the default is applied in run() because --n and --images exclude
# each other, and only a None tells "not given" apart
DEFAULT_N = 200
# --ray without an address: a local Ray instance for this run
LOCAL_RAY = "local"
# the metrics printed as one JSON line (all of them are in out/metrics.json)
SUMMARY_KEYS = ("method", "dataset", "n", "validity", "oracle_agreement", "knn_agreement", "l1", "mnac")
SUMMARY_KEYS += ("seconds_per_cf",)


def add_parser(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="counterfactuals for test images with one method")
    add_dataset(explain, f"mnist | fashion | faces | {FOLDER_HELP}")
    explain.add_argument(
        "--method",
        default="attack",
        help=" | ".join(METHODS) + ": " + "; ".join(f"{name}: {m.description}" for name, m in METHODS.items()),
    )
    explain.add_argument(
        "--space", default=None, help="faces: the attack's latent space, w (default) or style (StyleSpace)"
    )
    add_n(explain, None, f"number of test images (the first N; default {DEFAULT_N})")
    explain.add_argument(
        "--images",
        nargs="+",
        default=None,
        help="image files or folders of them to explain instead of the test split, read as the dataset's "
        "images are (its channels, resized to its size)",
    )
    explain.add_argument("--target", default="second", help="class index, 'second' (runner-up) or 'flip'")
    add_out(explain, "output folder")
    explain.add_argument("--preset", default="vcex", help="vcex (measured defaults) | paper (threshold 0.75, loss -p)")
    add_threshold(explain)
    explain.add_argument("--lr", type=positive_number, default=None, help="Adam learning rate")
    add_max_steps(explain)
    explain.add_argument("--batch-size", type=positive_count, default=None, help="images per batch")
    add_device(explain)
    explain.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="attack only: counterfactual = x + G(z') - G(z), keeping what the generator cannot reconstruct "
        "(default off: on faces it cut MNAC from 2.2 to 1.4 but halved oracle agreement, docs/benchmarks/faces.md)",
    )
    add_whiten(
        explain,
        "attack only: run the attack in the whitened coordinates of the latent (fitted on training encodings), "
        "so its steps follow the data's spread (default off; docs/benchmarks/faces.md and faces-global.md)",
    )
    explain.add_argument(
        "--invert-steps",
        type=count,
        default=None,
        help="attack only: refine each encoded latent by N Adam steps on the pixel error before the attack "
        "(GAN inversion; default 0: on faces, 300 raised the reconstruction's attribute agreement, at ~0.65 s per "
        "face on one CPU thread; docs/benchmarks/faces.md)",
    )
    explain.add_argument(
        "--precision",
        default=None,
        help="attack only: fp32 (default) | bf16 (decoder and classifier under bfloat16 autocast, for GPUs)",
    )
    explain.add_argument(
        "--consistency", default=None, help="disc only: manifold consistency energy (default) | duq | none"
    )
    explain.add_argument(
        "--refine", type=count, default=None, help="amortized only: attack steps after the one-pass prediction (0)"
    )
    explain.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        default=None,
        metavar="ADDRESS",
        help='explain the chunks on Ray workers (pip install "vcex[ray]"): alone, a local Ray instance with '
        "--workers; with a cluster's ADDRESS (HEAD:6379, or auto), its nodes, writing into --out, which every node "
        "must share (docs/guide/cli.md, Clusters); --threads is then per worker (default 1)",
    )
    explain.add_argument(
        "--workers",
        type=positive_count,
        default=None,
        help=f"with --ray: Ray workers, each loading the models once (default {DEFAULT_WORKERS}; at most one per GPU)",
    )
    add_model_forms(explain)
    add_common(explain)
    explain.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.errors import InputError
    from vcex.pipeline import OPTION_FLAGS, check_method_options, parse_target, prepare, run_explain
    from vcex.records import json_text

    if args.workers is not None and args.ray is None:
        raise InputError("--workers sets how many Ray workers --ray starts: add --ray (or --ray HEAD:6379), or drop it")
    if args.images and args.n is not None:
        raise InputError("--n counts test images; with --images every image given is explained: drop --n")
    # every option with a flag, by build_explainer's name (--refine: refine_steps); those not given are None
    options = {key: getattr(args, flag.removeprefix("--").replace("-", "_")) for key, flag in OPTION_FLAGS.items()}
    options = check_method_options(args.method, options)  # before any model is loaded or trained
    explain_run = run_explain if args.ray is None else ray_explainer(args)
    bench = prepare(args.dataset, progress=not args.quiet, **models_from_args(args, args.method))
    images = None
    if args.images:
        from vcex.data import image_files, read_images

        files = [f for item in map(Path, args.images) for f in (image_files(item) if item.is_dir() else [item])]
        channels, height, width = bench.test.image_shape
        images = read_images(files, channels=channels, size=(height, width))
    _, metrics = explain_run(
        bench,
        args.method,
        len(images) if images is not None else DEFAULT_N if args.n is None else args.n,
        parse_target(args.target),
        args.out,
        preset=args.preset,
        progress=not args.quiet,
        images=images,
        **options,
    )
    print(json_text({k: metrics[k] for k in SUMMARY_KEYS if k in metrics}, indent=None))


def ray_explainer(args: argparse.Namespace) -> Callable[..., tuple]:
    """``run_explain``'s stand-in for --ray: the same arguments, the chunks explained by Ray workers, each of which
    loads the classifier from these arguments as this process did."""
    from vcex.distributed import import_ray, run_explain_ray

    import_ray()  # a missing extra is one line before any model is loaded
    return functools.partial(
        run_explain_ray,
        address=None if args.ray == LOCAL_RAY else args.ray,
        workers=DEFAULT_WORKERS if args.workers is None else args.workers,
        # every model option (--classifier, --latent-model, --black-box) loaded in each worker as here
        classifier=functools.partial(models_from_args, args, args.method),
        threads=args.threads or 1,
    )
