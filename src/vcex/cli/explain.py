"""``vcex explain``: counterfactuals for test images (or image files) with one registered method."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from vcex.cli.options import (
    FOLDER_HELP,
    READERS,
    add_common,
    add_dataset,
    add_device,
    add_max_steps,
    add_model_forms,
    add_out,
    add_threshold,
    add_whiten,
    classifier_from_args,
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


def image_count(text: str) -> int | str:
    """--n: a whole number >= 1, or ``all`` (every image of the split)."""
    if text == "all":
        return text
    try:
        return positive_count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or all, got {text!r}") from None


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
    explain.add_argument(
        "--n",
        type=image_count,
        default=None,
        help=f"number of images of the split to explain (the first N; default {DEFAULT_N}), or all: the run streams "
        "chunks to disk with memory flat in N (docs/benchmarks/whole-datasets.md)",
    )
    explain.add_argument(
        "--split", choices=("train", "test"), default=None, help="the split the images come from (default test)"
    )
    explain.add_argument(
        "--chunk-size",
        type=positive_count,
        default=None,
        help="images per chunk file, the unit a killed run resumes from (default ceil(N/4) within [8, 100])",
    )
    explain.add_argument(
        "--status",
        action="store_true",
        help="with the same arguments as the run: print how far it is (chunks and images done, last write) and "
        "compute nothing",
    )
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
        "--mode", default=None, help="stylespace-direction only: mean (class mean difference, default) | learned"
    )
    explain.add_argument(
        "--sparsity",
        type=float,
        default=None,
        help="stylespace-direction only: share of StyleSpace coordinates kept, in (0, 1] (e.g. 0.05; default all)",
    )
    explain.add_argument(
        "--alpha-max", type=float, default=None, help="stylespace-direction only: the sweep's largest step (3.0)"
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
    explain.add_argument(
        "--attributions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write each counterfactual's ranked descriptor changes (smile +0.4, beard -0.1; stroke thickness...) "
        "into attributions.safetensors and report.html, read by --reader (default on; the readers are fitted once "
        "and cached: the first time latent probes take 4-8 s for MNIST, 90-130 s for Fashion-MNIST; the faces' "
        "image readers ship with vcex; then under a second per run; --no-attributions: none)",
    )
    explain.add_argument(
        "--reader",
        choices=READERS,
        default="auto",
        help="what reads the descriptor changes, as vcex global --reader: auto (default: a CNN on the images for "
        "faces, where the latent probes read the smile and the eyes near chance, held-out accuracy 0.61 and 0.55 "
        "against 0.95 and 0.93; latent probes otherwise), latent (probes on the latents, the paper's), images",
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
    if args.images and args.split is not None:
        raise InputError("--split chooses the dataset's images; with --images the files given are explained: drop it")
    # every option with a flag, by build_explainer's name (--refine: refine_steps); those not given are None
    options = {key: getattr(args, flag.removeprefix("--").replace("-", "_")) for key, flag in OPTION_FLAGS.items()}
    options = check_method_options(args.method, options)  # before any model is loaded or trained
    if args.status:
        print(status_text(args, options))
        return
    explain_run = run_explain if args.ray is None else ray_explainer(args)
    bench = prepare(args.dataset, progress=not args.quiet, **models_from_args(args, args.method))
    split = args.split or "test"
    images = _read_images(args, bench.test.image_shape) if args.images else None
    if images is not None:
        n = len(images)
    elif args.n == "all":
        n = len(bench.test if split == "test" else bench.train)
    else:
        n = DEFAULT_N if args.n is None else args.n
    _, metrics = explain_run(
        bench,
        args.method,
        n,
        parse_target(args.target),
        args.out,
        preset=args.preset,
        chunk_size=args.chunk_size,
        progress=not args.quiet,
        images=images,
        split=split,
        load_result=False,
        attributions=args.attributions,
        reader=args.reader,
        **options,
    )
    attributions = metrics.get("attributions") or {}
    if args.attributions and attributions.get("file") is None:
        print(f"vcex: no attributions written: {attributions.get('reason')}", file=sys.stderr)
    print(json_text({k: metrics[k] for k in SUMMARY_KEYS if k in metrics}, indent=None))


def ray_explainer(args: argparse.Namespace) -> Callable[..., tuple]:
    """``run_explain``'s stand-in for --ray: the same arguments, the chunks explained by Ray workers, each of which
    loads the models from these arguments as this process did."""
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


def _read_images(args: argparse.Namespace, image_shape: tuple[int, int, int]) -> object:
    """The --images files (and the image files of folders given), read as the dataset's: (N, C, H, W)."""
    from vcex.data import image_files, read_images

    files = [f for item in map(Path, args.images) for f in (image_files(item) if item.is_dir() else [item])]
    channels, height, width = image_shape
    return read_images(files, channels=channels, size=(height, width))


def status_text(args: argparse.Namespace, options: dict) -> str:
    """``--status``: one line per run in --out (chunks and images done, last write), the one these arguments ask
    for marked; only the dataset's images (for --n all, --images) and a user's model file are read."""
    from vcex.data import load_dataset
    from vcex.pipeline import dataset_for, explain_request, explain_status, parse_target

    user = classifier_from_args(args)
    dataset = dataset_for(args.dataset, user if isinstance(user, str) or user is None else None)
    split = args.split or "test"
    images = None
    if args.images:
        images = _read_images(args, load_dataset(dataset, "test").image_shape)
        n = len(images)
    elif args.n == "all":
        n = len(load_dataset(dataset, split))
    else:
        n = DEFAULT_N if args.n is None else args.n
    source = None if isinstance(user, str) or user is None else getattr(user, "source", {"model": type(user).__name__})
    request = explain_request(
        dataset, args.method, n, parse_target(args.target), split=split, preset=args.preset, options=options,
        classifier=source, images=images,
    )  # fmt: skip
    runs = explain_status(args.out, request)
    lines = []
    for run in runs:
        state = (
            "finished"
            if run["finished"]
            else "done, not assembled"
            if run["chunks_done"] == run["chunks"]
            else ("in progress or stopped")
        )
        lines.append(
            f"{run['fingerprint']}: {run['chunks_done']}/{run['chunks']} chunks, {run['images_done']}/{run['n']} "
            f"images, last write {run['last_write'] or 'none'} ({state})"
            + ("  <- these arguments" if run["matches"] else f"  [{_describe(run['request'])}]")
        )
    if not any(run["matches"] for run in runs):
        lines.append(f"no run of these arguments in {args.out} yet (0 of {n} images done)")
    return "\n".join(lines)


def _describe(request: dict) -> str:
    """A run's request in a few words, for telling several runs in one folder apart."""
    options = ", ".join(f"{key}={value}" for key, value in request.get("options", {}).items())
    source = request.get("split") or "images"
    return f"{request['method']} on {request['n']} {request['dataset']} {source}, target {request['target']}" + (
        f", {options}" if options else ""
    )
