"""The ``vcex`` command: ``demo``, ``explain``, ``global``, ``benchmark``, ``datasets`` and ``models``."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vcex.errors import VcexError

FOLDER_HELP = (
    "folder:PATH, your images with one subfolder per class (folder:PATH@32 resizes them to 32x32); the zoo's "
    "models are trained on them on first use and cached"
)
THRESHOLD_HELP = (
    "target confidence to reach: a probability in (0, 1), or 'auto': per class, the classifier's confidence on the "
    "median real training image of that class, capped at the default 0.998"
)


def _threshold(text: str) -> float | str:
    """--threshold: a probability, or ``auto`` (resolved per class once the models are loaded)."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1) or 'auto', got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability strictly between 0 and 1, got {value}")
    return value


def _positive_number(text: str) -> float:
    """--lr: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number such as 0.05, got {text!r}")
    return value


def _whole_number(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers >= ``minimum`` (counts: images, steps, a batch size)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    return parse


_count, _positive_count = _whole_number(0), _whole_number(1)


def _out_path(text: str) -> str:
    """--out: a path that is not empty (an empty one would write into the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty, which would write into the current folder; give a path, e.g. --out results"
        )
    return text


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcex", description="Visual counterfactual explanations for image classifiers."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="end to end on the embedded MNIST: train or load, explain, report")
    demo.add_argument("--out", type=_out_path, default="vcex-demo", help="output folder (report.html, metrics, grids)")
    demo.add_argument("--dataset", default="mnist", help=f"mnist (default, embedded) | fashion | faces | {FOLDER_HELP}")
    demo.add_argument("--classifier", default=None, help="faces: smiling (default) | eyeglasses | young | ...")
    demo.add_argument("--n", type=_positive_count, default=100, help="test images to explain per method (default 100)")
    demo.add_argument("--examples", type=_positive_count, default=8, help="images shown in the report (default 8)")
    _add_common(demo)

    explain = commands.add_parser("explain", help="counterfactuals for test images with one method")
    explain.add_argument("--dataset", default="mnist", help=f"mnist | fashion | faces | {FOLDER_HELP}")
    explain.add_argument(
        "--classifier", default=None, help="faces: smiling (default) | eyeglasses | young | smiling-spurious"
    )
    explain.add_argument("--method", default="attack", help="attack | pixel | linear | amortized | disc")
    explain.add_argument(
        "--space", default=None, help="faces: the attack's latent space, w (default) or style (StyleSpace)"
    )
    explain.add_argument(
        "--n", type=_positive_count, default=None, help="number of test images (the first N; default 200)"
    )
    explain.add_argument(
        "--images",
        nargs="+",
        default=None,
        help="image files or folders of them to explain instead of the test split, read as the dataset's "
        "images are (its channels, resized to its size)",
    )
    explain.add_argument("--target", default="second", help="class index, 'second' (runner-up) or 'flip'")
    explain.add_argument("--out", type=_out_path, required=True, help="output folder")
    explain.add_argument("--preset", default="vcex", help="vcex (measured defaults) | paper (threshold 0.75, loss -p)")
    explain.add_argument("--threshold", type=_threshold, default=None, help=THRESHOLD_HELP)
    explain.add_argument("--lr", type=_positive_number, default=None, help="Adam learning rate")
    explain.add_argument("--max-steps", type=_count, default=None, help="step budget per image")
    explain.add_argument("--batch-size", type=_positive_count, default=None, help="images per batch")
    explain.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ...")
    explain.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="attack only: counterfactual = x + G(z') - G(z), keeping what the generator cannot reconstruct "
        "(default off: on faces it cut MNAC from 2.2 to 1.4 but halved oracle agreement, docs/benchmarks/faces.md)",
    )
    explain.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="attack only: run the attack in the whitened coordinates of the latent (fitted on training encodings), "
        "so its steps follow the data's spread (default off; docs/benchmarks/faces.md and faces-global.md)",
    )
    explain.add_argument(
        "--invert-steps",
        type=_count,
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
        "--refine", type=_count, default=None, help="amortized only: attack steps after the one-pass prediction (0)"
    )
    _add_common(explain)

    global_ = commands.add_parser("global", help="global explanation: descriptors the counterfactuals change")
    global_.add_argument(
        "--dataset",
        default="mnist",
        help="mnist | fashion | folder:PATH of grayscale images (morphometric descriptors) | faces (factor table)",
    )
    global_.add_argument("--classifier", default=None, help="faces: smiling (default) | eyeglasses | young | ...")
    global_.add_argument(
        "--descriptors",
        default=None,
        help="folder:PATH only: a CSV of your own descriptors, a 'file' column naming each image as a path "
        "relative to the folder (cat/001.png) and one numeric column per descriptor (0/1 columns are binary); "
        "rows must cover the training images, other rows are ignored",
    )
    global_.add_argument("--n", type=_positive_count, default=500, help="test images to explain")
    global_.add_argument(
        "--out", type=_out_path, required=True, help="output folder (global.json, charts, global.html)"
    )
    global_.add_argument("--threshold", type=_threshold, default=None, help=THRESHOLD_HELP)
    global_.add_argument("--max-steps", type=_count, default=None, help="the attack's step budget per image")
    global_.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="run the attack in the whitened latent (see vcex explain --whiten); the probes read the raw latents",
    )
    global_.add_argument(
        "--reader",
        choices=("auto", "latent", "images"),
        default="auto",
        help="what reads the counterfactuals' descriptors: latent probes (the paper's) or a CNN on the images, "
        "trained once on the training images and cached; auto (default): images for faces, where they ranked "
        "the true driver first for 63 of 70 classifiers against 50 for the probes (docs/benchmarks/faces-global.md), "
        "latent probes for digits",
    )
    global_.add_argument(
        "--rounds",
        type=_positive_count,
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
    _add_common(global_)

    benchmark = commands.add_parser(
        "benchmark", help="every method on the same images and targets: benchmark.md (a table) and benchmark.json"
    )
    benchmark.add_argument(
        "--suite", required=True, help="mnist | fashion | folder:PATH (target: runner-up) | faces (smiling, flip)"
    )
    benchmark.add_argument(
        "--n", type=_positive_count, default=200, help="test images to explain (the first N, default 200)"
    )
    benchmark.add_argument(
        "--out", type=_out_path, required=True, help="output folder (benchmark.md, benchmark.json, rows/)"
    )
    benchmark.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="row keys to run (default: all). mnist/fashion: attack attack-paper pixel linear amortized "
        "amortized-refine disc; faces: attack attack-style pixel linear disc amortized",
    )
    benchmark.add_argument("--device", default=None, help="where the explainers run: cpu (default), cuda, cuda:1 ...")
    _add_common(benchmark)

    datasets = commands.add_parser("datasets", help="look at the datasets")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    preview = datasets_commands.add_parser("preview", help="write a labelled grid of a dataset's images")
    preview.add_argument("name", help="faces | mnist | fashion | folder:PATH (one subfolder of images per class)")
    preview.add_argument("--out", type=_out_path, required=True, help="PNG file to write")
    preview.add_argument("--n", type=_positive_count, default=32, help="images in the grid (default 32)")
    preview.add_argument("--size", type=int, default=64, help="faces: 64 or 32 pixels")
    preview.add_argument("--seed", type=int, default=0)
    _add_common(preview)

    models = commands.add_parser("models", help="list the model zoo, or train its models for a dataset")
    models.add_argument(
        "--dataset", default=None, help=f"train (or load) every model for this dataset (or {FOLDER_HELP})"
    )
    _add_common(models)
    return parser


# the demo's comparison: the latent attack, the pixel baseline, the linear edit and DISC (classifier only)
DEMO_METHODS = ("attack", "pixel", "linear", "disc")


def _demo(args: argparse.Namespace) -> None:
    from vcex.pipeline import build_explainer, evaluate_result, prepare, write_outputs
    from vcex.records import write_json
    from vcex.report import write_report

    started = time.perf_counter()
    out = Path(args.out)
    bench = prepare(args.dataset, progress=not args.quiet, classifier=args.classifier)
    images = bench.test.images[: args.n]
    results, metrics = [], []
    for method in DEMO_METHODS:
        explainer = build_explainer(method, bench, progress=not args.quiet)
        result = explainer.explain(images, target="second")
        record = evaluate_result(result, bench, device=str(explainer.device))
        write_outputs(out / method, result, record)
        results.append(result)
        metrics.append(record)
        mnac = f"  MNAC {record['mnac']:.2f}" if record.get("mnac") is not None else ""
        _say(
            args,
            f"{method:7s} validity {record['validity']:.2f}  oracle {record['oracle_agreement']:.2f}  "
            f"kNN {record['knn_agreement']:.2f}  L1 {record['l1']:.3f}{mnac}  "
            f"{record['seconds_per_cf'] * 1e3:.1f} ms/CF",
        )
    write_json(out / "metrics.json", metrics)
    notes = (
        f"{bench.dataset}: {args.n} test images, target = the classifier's runner-up class. Classifier "
        f"test accuracy {bench.classifier.training_record.get('test_accuracy')}; oracle "
        f"{bench.oracle.training_record.get('test_accuracy')}. Total time {time.perf_counter() - started:.1f} s."
    )
    report = write_report(
        out / "report.html",
        f"vcex demo: counterfactuals on {bench.dataset}",
        metrics,
        results,
        class_names=bench.test.class_names,
        examples=args.examples,
        notes=notes,
    )
    _say(args, f"wrote {report} in {time.perf_counter() - started:.1f} s")


def _explain(args: argparse.Namespace) -> None:
    from vcex.errors import InputError
    from vcex.pipeline import OPTION_FLAGS, check_method_options, parse_target, prepare, run_explain
    from vcex.records import json_text

    if args.images and args.n is not None:
        raise InputError("--n counts test images; with --images every image given is explained: drop --n")
    # every option with a flag, by build_explainer's name (--refine: refine_steps); those not given are None
    options = {key: getattr(args, flag.removeprefix("--").replace("-", "_")) for key, flag in OPTION_FLAGS.items()}
    options = check_method_options(args.method, options)  # before any model is loaded or trained
    bench = prepare(args.dataset, progress=not args.quiet, classifier=args.classifier)
    images = None
    if args.images:
        from vcex.data import image_files, read_images

        files = [f for item in map(Path, args.images) for f in (image_files(item) if item.is_dir() else [item])]
        channels, height, width = bench.test.image_shape
        images = read_images(files, channels=channels, size=(height, width))
    _, metrics = run_explain(
        bench,
        args.method,
        len(images) if images is not None else 200 if args.n is None else args.n,
        parse_target(args.target),
        args.out,
        preset=args.preset,
        progress=not args.quiet,
        images=images,
        **options,
    )
    print(
        json_text(
            {
                k: metrics[k]
                for k in (
                    "method",
                    "dataset",
                    "n",
                    "validity",
                    "oracle_agreement",
                    "knn_agreement",
                    "l1",
                    "mnac",
                    "seconds_per_cf",
                )
                if k in metrics
            },
            indent=None,
        )
    )


def _global(args: argparse.Namespace) -> None:
    from vcex.errors import InputError
    from vcex.pipeline import check_global_options, prepare, run_global
    from vcex.records import json_text

    # before any model is trained
    check_global_options(args.dataset, args.reader, args.rounds, args.later_rounds, args.round_scores, args.descriptors)
    bench = prepare(args.dataset, progress=not args.quiet, classifier=args.classifier)
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    record = run_global(
        bench,
        min(args.n, len(bench.test)),
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


def _benchmark(args: argparse.Namespace) -> None:
    from vcex.benchmark import run_suite

    # --methods a b, or --methods a,b
    methods = [key for item in args.methods for key in item.split(",") if key] if args.methods else None
    run_suite(args.suite, args.n, Path(args.out), methods=methods, progress=not args.quiet, device=args.device)
    print(Path(args.out) / "benchmark.md")


def _datasets(args: argparse.Namespace) -> None:
    from vcex.errors import InputError
    from vcex.report import grid_image, save_png

    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    if args.name == "faces":
        from vcex.data.synthetic_faces import preview_faces

        images, captions = preview_faces(args.n, seed=args.seed, size=args.size)
    else:
        from vcex.data import load_dataset

        data = load_dataset(args.name, "test")
        images = data.images[: args.n]
        captions = [data.class_names[int(k)] for k in data.labels[: args.n]]
    columns = 8
    rows = [list(images[i : i + columns]) for i in range(0, len(images), columns)]
    labels = [captions[i : i + columns] for i in range(0, len(captions), columns)]
    zoom = max(1, 192 // images.shape[-1])
    picture = grid_image(rows, zoom=zoom, captions=labels)
    save_png(picture, args.out)
    _say(args, f"wrote {args.out} ({len(images)} images)")


def _models(args: argparse.Namespace) -> None:
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


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    handlers = {
        "demo": _demo,
        "explain": _explain,
        "models": _models,
        "datasets": _datasets,
        "global": _global,
        "benchmark": _benchmark,
    }
    try:
        handlers[args.command](args)
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


if __name__ == "__main__":
    sys.exit(main())
