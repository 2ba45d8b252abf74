"""The options several ``vcex`` subcommands share, declared once: their parsers, help texts and adders.

A subcommand module adds the groups it takes (``add_dataset(parser)``, ``add_run_options(parser)``...);
where a default must differ by command (``--n``), the command passes its own and says why.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

FOLDER_HELP = (
    "folder:PATH, your images with one subfolder per class (folder:PATH@32 resizes them to 32x32); the zoo's "
    "models are trained on them on first use and cached"
)
# the descriptor readers of vcex global and vcex gcd --reader (vcex.pipeline.READERS; not imported here to keep
# `vcex --help` fast)
READERS = ("auto", "latent", "images")
THRESHOLD_HELP = (
    "target confidence to reach: a probability in (0, 1), or 'auto': per class, the classifier's confidence on the "
    "median real training image of that class, capped at the default 0.998"
)


def threshold(text: str) -> float | str:
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


def positive_number(text: str) -> float:
    """--lr: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number such as 0.05, got {text!r}")
    return value


def whole_number(minimum: int) -> Callable[[str], int]:
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


count, positive_count = whole_number(0), whole_number(1)


def out_path(text: str) -> str:
    """--out: a path that is not empty (an empty one would write into the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty, which would write into the current folder; give a path, e.g. --out results"
        )
    return text


def out_folder(text: str) -> str:
    """--out of the commands that write a folder: not empty, and neither a file nor inside one (checked before any
    work; otherwise the first chunk's write would fail after the models are loaded)."""
    text = out_path(text)
    path = Path(text)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise argparse.ArgumentTypeError(f"{text} {where}: give a folder for the outputs (created if missing)")
    return text


def add_common(parser: argparse.ArgumentParser) -> None:
    """What every subcommand takes: --quiet and --threads."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=positive_count, default=None, help="CPU threads for torch (default: torch's)")


def add_dataset(parser: argparse.ArgumentParser, help: str, *, classifier: bool = True) -> None:
    """--dataset (default mnist, the embedded one) and --classifier: a faces task, or a user's own model with
    --weights, --normalize and --classes (read by :func:`classifier_from_args`)."""
    parser.add_argument("--dataset", default="mnist", help=help)
    if classifier:
        add_classifier(parser, "faces: smiling (default) | eyeglasses | young | smiling-spurious; or your own model: ")


def add_classifier(parser: argparse.ArgumentParser, help: str) -> None:
    """--classifier and the options of a user's own model: --weights, --normalize and --classes."""
    parser.add_argument(
        "--classifier",
        default=None,
        help=help + "a TorchScript file (FILE.pt, saved with torch.jit.save), an ONNX file (FILE.onnx, run by "
        'onnxruntime as a black box: pip install "vcex[onnx]") or an entry point package.module:factory returning '
        "an nn.Module (with --weights); it takes [0, 1] images of the dataset's shape and returns one logit per "
        "class; the oracles stay the dataset's",
    )
    parser.add_argument(
        "--weights", default=None, help="with --classifier package.module:factory: its state dict (.safetensors)"
    )
    parser.add_argument(
        "--normalize",
        default=None,
        help="with your own --classifier: MEAN/STD it expects its input normalised by, one number for every "
        "channel (0.286/0.353) or one per channel (0.5,0.5,0.5/0.25,0.25,0.25)",
    )
    parser.add_argument(
        "--classes", default=None, help="with your own --classifier: a text file of class names, one per line"
    )


def add_model_forms(parser: argparse.ArgumentParser) -> None:
    """--black-box, --latent-model and --latent-weights, for the commands that explain with them (read by
    :func:`models_from_args`)."""
    parser.add_argument(
        "--black-box",
        action="store_true",
        help="query the classifier as a black box: no gradients, queries counted (queries_per_cf in metrics.json); "
        "only the methods that need no gradients explain it (an ONNX file always is one)",
    )
    parser.add_argument(
        "--latent-model",
        default=None,
        help="another latent model than the dataset's: a zoo latent model made for the dataset (e.g. faces-diffae, "
        "mnist-diffae, mnist-vae), a folder written by vcex train-style, a TorchScript file whose module exports "
        "encode and "
        "decode (@torch.jit.export), or package.module:factory returning an nn.Module with both (with "
        "--latent-weights); decode(encode(x)) must give [0, 1] images of the dataset's shape",
    )
    parser.add_argument(
        "--latent-weights",
        default=None,
        help="with --latent-model package.module:factory: its state dict (.safetensors)",
    )


def classifier_from_args(args: argparse.Namespace) -> object:
    """What ``prepare(classifier=...)`` takes from --classifier: a zoo task name (or None), or a user's model
    loaded by :func:`vcex.models.user.load_user_classifier` (checked on the dataset's images by ``prepare``)."""
    from vcex.errors import InputError
    from vcex.models.user import is_user_classifier, load_user_classifier, parse_normalize

    if not is_user_classifier(args.classifier):
        given = [flag for flag in ("--weights", "--normalize", "--classes") if getattr(args, flag[2:]) is not None]
        if given:
            raise InputError(
                f"{', '.join(given)} go with your own --classifier (a TorchScript or ONNX file, or "
                "package.module:factory); drop them for the zoo's classifier"
            )
        return args.classifier
    mean, std = parse_normalize(args.normalize) if args.normalize is not None else (None, None)
    return load_user_classifier(
        args.classifier,
        weights=args.weights,
        mean=mean,
        std=std,
        classes=args.classes,
        black_box=getattr(args, "black_box", False),
    )


def latent_model_from_args(args: argparse.Namespace) -> object:
    """What ``prepare(latent_model=...)`` takes from --latent-model: None (the dataset's), or a user's latent model
    loaded by :func:`vcex.models.user.load_user_latent_model` (checked on the dataset's images by ``prepare``)."""
    from vcex.errors import InputError
    from vcex.models.user import load_user_latent_model

    if args.latent_model is None:
        if args.latent_weights is not None:
            raise InputError("--latent-weights goes with --latent-model package.module:factory; add it or drop this")
        return None
    zoo = zoo_latent_model(args.latent_model, getattr(args, "dataset", None), progress=not getattr(args, "quiet", True))
    if zoo is not None:
        if args.latent_weights is not None:
            raise InputError(
                f"--latent-weights is for an entry point; the zoo's {args.latent_model} has its own weights: drop it"
            )
        return zoo
    return load_user_latent_model(args.latent_model, weights=args.latent_weights)


# the zoo roles that are latent models (vcex.models.load_latent_model); the faces' W is a train-style folder name
ZOO_LATENT_ROLES = ("vae", "diffae")


def zoo_latent_model(name: str, dataset: str | None, progress: bool = False) -> object | None:
    """The zoo latent model ``name`` (``"faces-diffae"``, ``"mnist-vae"``...) for ``--latent-model``, its ``source``
    recorded; None where ``name`` is a path or an entry point (the user's forms). A name that is neither, another
    zoo role, or a model made for another dataset than ``dataset`` gets one line naming the zoo's latent models."""
    from pathlib import Path

    from vcex.data import canonical_dataset_name
    from vcex.errors import InputError
    from vcex.models import load_latent_model, model_names, model_spec
    from vcex.models.stylex import resolve_stylex
    from vcex.models.user import ENTRY_POINT

    latent_names = [n for n in model_names() if model_spec(n).role in ZOO_LATENT_ROLES]
    if name not in model_names():
        if Path(name).exists() or ENTRY_POINT.match(name) or resolve_stylex(name) is not None:
            return None
        raise InputError(
            f"--latent-model {name}: no such file or folder, and no zoo latent model of that name; the zoo's: "
            f"{', '.join(latent_names)} (or a train-style folder, a TorchScript file, package.module:factory)"
        )
    spec = model_spec(name)
    if spec.role not in ZOO_LATENT_ROLES:
        raise InputError(
            f"--latent-model {name} is the zoo's {spec.role}, not a latent model; the zoo's latent models: "
            f"{', '.join(latent_names)}"
        )

    def family(name: str) -> str:  # every faces task has the same images ("faces" is also --dataset's shorthand)
        return "faces" if name.startswith("faces") else canonical_dataset_name(name)

    if dataset is not None and not dataset.startswith("folder:") and family(dataset) != family(spec.dataset):
        same = [n for n in latent_names if family(model_spec(n).dataset) == family(dataset)]
        raise InputError(
            f"--latent-model {name} is made for the {spec.dataset} images, not {dataset}'s; for {dataset} use "
            f"{' or '.join(same) or 'the dataset default (drop --latent-model)'}"
        )
    model = load_latent_model(name, progress=progress)
    model.source = {"zoo": name}
    return model


def models_from_args(args: argparse.Namespace, method: str) -> dict[str, object]:
    """``prepare``'s keywords from the model options (classifier, latent_model, black_box), loaded once and
    refused before any work when ``method`` needs gradients the classifier does not give (a black box)."""
    from vcex.explainers.registry import check_black_box
    from vcex.models.blackbox import is_black_box

    classifier = classifier_from_args(args)
    check_black_box(method, args.black_box or is_black_box(classifier))
    return {"classifier": classifier, "latent_model": latent_model_from_args(args), "black_box": args.black_box}


def add_out(parser: argparse.ArgumentParser, help: str, default: str | None = None, folder: bool = True) -> None:
    """--out: a folder (``folder=False``: a file), required unless the command has a default (the demo's)."""
    kind = out_folder if folder else out_path
    parser.add_argument("--out", type=kind, default=default, required=default is None, help=help)


def add_n(parser: argparse.ArgumentParser, default: int | None, help: str) -> None:
    """--n, the number of images; each command passes its own default (and says why where it declares it)."""
    parser.add_argument("--n", type=positive_count, default=default, help=help)


def add_threshold(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=threshold, default=None, help=THRESHOLD_HELP)


def add_max_steps(parser: argparse.ArgumentParser, help: str = "step budget per image") -> None:
    parser.add_argument("--max-steps", type=count, default=None, help=help)


def add_device(parser: argparse.ArgumentParser, help: str = "cpu, cuda, cuda:1 ...") -> None:
    parser.add_argument("--device", default=None, help=help)


def add_whiten(parser: argparse.ArgumentParser, help: str) -> None:
    """--whiten/--no-whiten; None when not given, which is off (and lets ``vcex explain`` refuse it for a method
    that has no latent to whiten)."""
    parser.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=None, help=help)


def say(args: argparse.Namespace, text: str) -> None:
    """A progress line on stderr unless --quiet."""
    if not args.quiet:
        print(text, file=sys.stderr)
