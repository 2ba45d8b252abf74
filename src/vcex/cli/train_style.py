"""``vcex train-style``: train a style generator by StylEx (GAN + encoder, optionally classifier-conditioned)."""

from __future__ import annotations

import argparse

from vcex.cli.options import add_common, out_path, positive_count, positive_number

DATASETS = ("faces", "mnist", "fashion")
# images in the sample grid: 8 x 8
GRID_SIDE = 8
# samples and real test images the attribute oracle reads to judge the samples (faces)
JUDGED_IMAGES = 500


def add_parser(commands: argparse._SubParsersAction) -> None:
    from vcex.models.stylex import CONFIGS

    train = commands.add_parser(
        "train-style",
        help="train a style generator by StylEx (GAN with encoder; with --classifier, conditioned on it) into --out",
    )
    train.add_argument("--dataset", default="faces", choices=DATASETS, help="training images (default faces)")
    train.add_argument(
        "--classifier",
        default=None,
        help="condition the generator on this zoo classifier's softmax (StylEx): a faces task (smiling, eyeglasses, "
        "young, smiling-spurious) or a zoo name of the dataset (mnist-cnn, faces-smiling-cnn...); default: none",
    )
    train.add_argument("--config", default="small", choices=tuple(CONFIGS), help="generator size (default small)")
    train.add_argument("--epochs", type=positive_count, default=10, help="epochs in all, resumed ones included")
    train.add_argument("--batch-size", type=positive_count, default=None, help="default: the config's")
    train.add_argument("--n-train", type=positive_count, default=None, help="train on the first N images only")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--max-minutes", type=positive_number, default=None, help="stop after the epoch that passes this budget"
    )
    train.add_argument("--out", type=out_path, required=True, help="folder for weights, recipe.json and samples.png")
    train.add_argument(
        "--preset",
        default="cpu",
        choices=PRESETS,
        help="cpu (default): the recipe that trains on a CPU in minutes: a third of the epochs as an autoencoder "
        "(none with --init-from), the mapping network fitted to the encoded latents, then GAN batches at lr 2e-4; "
        "stylegan2: StyleGAN2's rates from the first step (for a GPU and long runs)",
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a hyperparameter of vcex.models.stylex.StylExRecipe, e.g. --set r1_gamma=1 (repeatable)",
    )
    train.add_argument(
        "--init-from",
        default=None,
        metavar="NAME|PATH",
        help="warm start: copy a trained style autoencoder of the same size (a zoo name such as faces-style, whose "
        "size is --config medium, or a plain train-style folder) before training; default: random initialisation",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    train.add_argument(
        "--device",
        default="cpu",
        help="where to train: cpu (default) or a torch device such as cuda or cuda:1 (the figures are read on the CPU)",
    )
    add_common(train)
    train.set_defaults(handler=run)


def classifier_name(dataset: str, name: str) -> str:
    """The zoo name of the conditioning classifier ``name`` given for ``dataset``; one of another dataset, or a
    zoo model that is no classifier, is refused in one line."""
    from vcex.data.faces_tasks import FACE_TASKS
    from vcex.data.profiles import family_of
    from vcex.errors import InputError
    from vcex.models import model_spec

    if dataset == "faces" and name in FACE_TASKS:
        return f"faces-{name}-cnn"
    if dataset != "faces" and name in ("cnn", "oracle"):
        return f"{dataset}-{name}"
    try:
        spec = model_spec(name)
    except InputError:
        spec = None
    if spec is None or spec.role not in ("cnn", "oracle"):
        raise InputError(f"--classifier {name!r} is no zoo classifier; for --dataset {dataset} use {_own(dataset)}")
    if family_of(spec.dataset) != dataset:
        raise InputError(
            f"--classifier {name} classifies {spec.dataset} images, not {dataset}: for --dataset {dataset} use "
            f"{_own(dataset)}"
        )
    return name


PRESETS = ("cpu", "stylegan2")


def preset_values(preset: str, epochs: int, warm_started: bool) -> dict:
    """The recipe fields a ``--preset`` sets. ``cpu``: what trained mnist-stylex (12 of 36 epochs as an autoencoder,
    11 min) and faces-stylex (from faces-style) on 2 CPU cores; ``stylegan2``: none (StylExRecipe's defaults)."""
    if preset == "stylegan2":
        return {}
    warmup = 0 if warm_started else max(1, epochs // 3)
    rates = {"lr": 2e-4, "encoder_lr": 2e-4, "discriminator_lr": 2e-4}
    return {"warmup_epochs": warmup, "mapping_fit_steps": 500 if warm_started else 1000, **rates}


def recipe_from(settings: list[str], batch_size: int, preset: dict | None = None) -> object:
    """A :class:`~vcex.models.stylex.StylExRecipe` with ``batch_size``, the ``preset`` fields and the ``NAME=VALUE``
    overrides (which win); an unknown name or a value that is no number is refused naming the known ones."""
    from dataclasses import fields

    from vcex.errors import InputError
    from vcex.models.stylex import StylExRecipe

    types = {field.name: field.type for field in fields(StylExRecipe)}
    values: dict = {"batch_size": batch_size, **(preset or {})}
    for setting in settings:
        name, _, text = setting.partition("=")
        if name not in types or not text:
            raise InputError(f"--set {setting!r}: expected NAME=VALUE with NAME one of {', '.join(types)}")
        if types[name] in (str, "str"):
            values[name] = text
            continue
        try:
            values[name] = int(text) if types[name] in (int, "int") else float(text)
        except ValueError:
            raise InputError(f"--set {setting!r}: {text!r} is not a number") from None
    return StylExRecipe(**values)


def _own(dataset: str) -> str:
    from vcex.data.faces_tasks import FACE_TASKS

    return " | ".join(FACE_TASKS) if dataset == "faces" else f"{dataset}-cnn"


def _training_data(dataset: str, n_train: int | None) -> tuple[object, object, object]:
    """Training images (N, C, H, W), their L1 pixel weights (faces: mouth and eyes boosted, as the shipped
    faces-style; else None) and test images."""
    from vcex.data import load_dataset
    from vcex.data.faces_tasks import load_face_table
    from vcex.data.profiles import profile_for
    from vcex.models.faces import detail_weights

    if dataset == "faces":
        train, test = load_face_table("train"), load_face_table("test")
        boost = float(profile_for("faces").style_recipe["detail_boost"])
        weights = detail_weights(train, train.images.shape[-1], boost)
        images = train.images
    else:
        images, test, weights = load_dataset(dataset, "train").images, load_dataset(dataset, "test"), None
    if n_train is not None:
        images = images[:n_train]
        weights = None if weights is None else weights[:n_train]
    return images, weights, test.images


def _alignment_regions(recipe: object, model: object, reader: object, n: int) -> object:
    """Where each pair of the alignment map may change each of the first ``n`` training faces (N, M, S, S), when
    the recipe weighs that (``align_region_weight``; the reader exists, so the dataset is the faces), else None."""
    from vcex.data.faces_tasks import load_face_table
    from vcex.models.faces import alignment_regions
    from vcex.models.style_alignment import coordinate_names, parse_alignment

    if recipe.align_region_weight <= 0 or reader is None:
        return None
    plan = parse_alignment(recipe.align_map, coordinate_names(model)[0], reader.factor_names)
    faces = load_face_table("train")
    factors = {name: values[:n] for name, values in faces.factors.items()}
    return alignment_regions(factors, [reader.factor_names[i] for i in plan.factors.tolist()], faces.images.shape[-1])


def _face_edits(dataset: str, recipe: object, n: int) -> object:
    """The renderer's true single-factor edits of the first ``n`` training faces (``FaceEdits``) when the recipe
    asks for the edit term (``edit_weight``), else None; a dataset without a renderer is refused."""
    from vcex.data.faces_tasks import load_face_table
    from vcex.errors import InputError
    from vcex.models.faces import FaceEdits

    if recipe.edit_weight <= 0:
        return None
    if dataset != "faces":
        raise InputError(
            f"--set edit_weight needs a dataset whose images can be drawn again with one factor moved (faces); "
            f"{dataset} has no renderer"
        )
    faces = load_face_table("train")
    return FaceEdits({name: values[:n] for name, values in faces.factors.items()}, size=faces.images.shape[-1])


def _perceptual(dataset: str, progress: bool, device: object = "cpu") -> object:
    """Features of our own network for the perceptual term: the faces' factor regressor, or the digits' CNN's
    convolutional stages (research note B.4: classifier features in place of LPIPS), on ``device``."""
    from vcex.models import load_model

    if dataset == "faces":
        return load_model("faces-factors", progress=progress).to(device).features
    cnn = load_model(f"{dataset}-cnn", progress=progress).to(device)
    return lambda images: cnn.network.features((images - cnn.mean) / cnn.std).flatten(1)


def _factor_reader(dataset: str, recipe: object, progress: bool, device: object = "cpu") -> object:
    """The alignment term's factor reader (the faces' faces-factors; with the background's hue read as its warmth,
    ``WarmthReadings``, when the map names ``background_warmth``) when the recipe asks for the term, else None; a
    dataset without known factors is refused."""
    from vcex.errors import InputError
    from vcex.models import load_model
    from vcex.models.faces import WarmthReadings

    if recipe.align_weight <= 0:
        return None
    if dataset != "faces":
        raise InputError(
            f"--set align_weight needs a dataset with known factors and a reader of them (faces); {dataset} has none"
        )
    reader = load_model("faces-factors", progress=progress)
    warmth = "background_warmth=" in recipe.align_map.replace(" ", "")  # else maps that name the hue still parse
    return (WarmthReadings(reader) if warmth else reader).to(device)


def _generator_size(side: int) -> tuple[int, int]:
    """(generator image size, padding per side): the power of two >= ``side`` (28 -> 32, pad 2)."""
    size = 4
    while size < side:
        size *= 2
    return size, (size - side) // 2


def command_line(args: argparse.Namespace) -> str:
    """The ``vcex train-style`` command that ``args`` stand for, every option spelt out (for the recipe)."""
    parts = ["vcex train-style", f"--dataset {args.dataset}", f"--config {args.config}", f"--epochs {args.epochs}"]
    for flag in ("classifier", "batch_size", "n_train", "max_minutes", "init_from", "device"):
        if getattr(args, flag) is not None:
            parts.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    parts += [f"--preset {args.preset}"] + [f"--set {setting}" for setting in args.set]
    parts += [f"--seed {args.seed}", f"--out {args.out}"] + (["--resume"] if args.resume else [])
    return " ".join(parts)


def run(args: argparse.Namespace) -> None:
    import json
    import time
    from pathlib import Path

    import torch

    from vcex.errors import InputError
    from vcex.evaluation.metrics import versions
    from vcex.models import load_model
    from vcex.models.state import evaluating
    from vcex.models.stylex import (
        CONFIGS,
        RECIPE_FILE,
        StylExAutoencoder,
        load_stylex,
        stylex_config,
        train_stylex,
        warm_start,
    )
    from vcex.records import json_text, write_json

    progress = not args.quiet
    out = Path(args.out)
    if (out / RECIPE_FILE).exists() and not args.resume:
        raise InputError(f"{out} already holds a training run: pass --resume to continue it, or another --out")
    device = _device(args.device)
    name = classifier_name(args.dataset, args.classifier) if args.classifier else None
    classifier = load_model(name, progress=progress) if name else None
    images, weights, test_images = _training_data(args.dataset, args.n_train)
    side = images.shape[-1]
    size, pad = _generator_size(side)
    label_dim = 0 if classifier is None else int(classifier(images[:1]).shape[1])
    config = stylex_config(args.config, image_size=size, channels=images.shape[1], label_dim=label_dim)
    preset = preset_values(args.preset, args.epochs, bool(args.init_from))
    recipe = recipe_from(args.set, args.batch_size or CONFIGS[args.config]["batch_size"], preset)
    record = {
        "dataset": args.dataset,
        "classifier": name,
        "config": args.config,
        "train_images": len(images),
        "init_from": args.init_from,
        "command": command_line(args),
        "versions": versions(),
    }
    if args.resume:  # the run goes on with the recipe it started with (its warm-up length included)
        recipe = _check_resumable(out, record, recipe)
    torch.manual_seed(args.seed)
    model = StylExAutoencoder(config, pad=pad, classifier=classifier)
    if args.init_from and not args.resume:
        warm_start(model, _style_source(args.init_from, progress))
    started = time.perf_counter()
    if classifier is not None:
        classifier.to(device)
    reader = _factor_reader(args.dataset, recipe, progress, device)
    state = train_stylex(
        model, images, epochs=args.epochs, recipe=recipe, perceptual=_perceptual(args.dataset, progress, device),
        pixel_weights=weights, seed=args.seed, checkpoint=out, resume=args.resume, record=record, progress=progress,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes, device=device,
        factor_reader=reader, alignment_regions=_alignment_regions(recipe, model, reader, len(images)),
        face_edits=_face_edits(args.dataset, recipe, len(images)),
    )  # fmt: skip
    wall = time.perf_counter() - started
    model = load_stylex(out, classifier=None if classifier is None else classifier.cpu())
    with torch.no_grad(), evaluating(model):
        figures = _figures(model, args.dataset, images, test_images, progress, args.seed)
    _write_grids(model, images, test_images, out, args.seed)
    recipe_record = json.loads((out / RECIPE_FILE).read_text())
    recipe_record.update({"wall_seconds_this_call": round(wall, 1), "figures": figures})
    write_json(out / RECIPE_FILE, recipe_record)
    print(json_text({"out": str(out), "epochs": state.epoch, "train_seconds": round(state.seconds, 1), **figures}))


def _device(name: str) -> object:
    """The torch device ``--device`` names; an unknown name, or CUDA where torch sees no GPU, is refused."""
    import torch

    from vcex.errors import InputError

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r} is no torch device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__}); use --device cpu")
    return device


def _style_source(name: str, progress: bool) -> object:
    """The style autoencoder that ``--init-from`` names: a train-style folder or shipped StylEx name, or a zoo style
    model (read as ``vcex stylespace --latent-model`` reads it)."""
    from pathlib import Path

    from vcex.cli.stylespace import load_style_model
    from vcex.errors import InputError
    from vcex.models.stylegan import StyleAutoencoder
    from vcex.models.stylex import resolve_stylex

    if resolve_stylex(name) is None and Path(name).exists():
        raise InputError(
            f"--init-from {name}: not a vcex train-style folder (it needs weights.safetensors and recipe.json)"
        )
    source = load_style_model(name, progress=progress)
    if not isinstance(source, StyleAutoencoder):
        raise InputError(f"--init-from {name}: a {type(source).__name__} is no style autoencoder; use e.g. faces-style")
    return source


def _check_resumable(out: object, record: dict, recipe: object) -> object:
    """A resumed run must have the dataset, classifier and config it started with; returns the recipe it started
    with (a run stopped early by --max-minutes resumes unchanged even when --epochs grows, so the cpu preset's
    warm-up stays as long as it was), with ``recipe``'s batch size checked against it."""
    import json
    from dataclasses import fields

    from vcex.errors import InputError
    from vcex.models.stylex import RECIPE_FILE, StylExRecipe

    path = out / RECIPE_FILE
    if not path.exists():
        raise InputError(f"--resume: {out} holds no training run to continue (no {RECIPE_FILE})")
    stored = json.loads(path.read_text())
    for key in ("dataset", "classifier", "config", "train_images"):
        if stored.get(key) != record[key]:
            raise InputError(
                f"--resume: the run in {out} was trained with {key} {stored.get(key)!r}, not {record[key]!r}"
            )
    known = {field.name for field in fields(StylExRecipe)}
    started = StylExRecipe(**{k: v for k, v in stored.get("recipe", {}).items() if k in known})
    if started.batch_size != recipe.batch_size:
        raise InputError(f"--resume: the run in {out} was trained with batch size {started.batch_size}")
    return started


def _figures(model: object, dataset: str, images: object, test_images: object, progress: bool, seed: int) -> dict:
    """Held-out reconstruction PSNR and (faces) the attribute oracle's mean confidence per attribute on samples
    against real test faces, and the Frechet distance of samples and reconstructions to real test faces in the
    oracle's penultimate features."""
    import torch

    from vcex.data.profiles import profile_for
    from vcex.evaluation import frechet_distance
    from vcex.evaluation.features import penultimate_features
    from vcex.models import load_model
    from vcex.models.stylegan import reconstruction_psnr
    from vcex.models.stylex import attribute_confidence

    figures = {"test_psnr": round(reconstruction_psnr(model, test_images[:1000]), 2)}
    oracle_name = profile_for(dataset).attribute_oracle
    if oracle_name is None:
        return figures
    oracle = load_model(oracle_name, progress=progress)
    samples = _samples(model, images, JUDGED_IMAGES, seed)
    real = attribute_confidence(oracle, test_images[:JUDGED_IMAGES])
    fake = attribute_confidence(oracle, samples)
    reconstructed_images = torch.cat([model(chunk) for chunk in test_images[:JUDGED_IMAGES].split(250)])
    reconstructed = attribute_confidence(oracle, reconstructed_images)
    names = oracle.attribute_names
    features = penultimate_features(oracle)
    real_features = features(test_images[:JUDGED_IMAGES])
    # the Frechet distance in the oracle's features; real against real (training faces) is its floor at this N
    figures["oracle_frechet"] = {
        "samples": round(frechet_distance(real_features, features(samples)), 3),
        "reconstructions": round(frechet_distance(real_features, features(reconstructed_images)), 3),
        "real_train": round(frechet_distance(real_features, features(images[:JUDGED_IMAGES])), 3),
    }
    figures["oracle_confidence"] = {
        "real": {n: round(float(v), 4) for n, v in zip(names, real)},
        "samples": {n: round(float(v), 4) for n, v in zip(names, fake)},
        "reconstructions": {n: round(float(v), 4) for n, v in zip(names, reconstructed)},
        "mean": {"real": round(float(real.mean()), 4), "samples": round(float(fake.mean()), 4),
                 "reconstructions": round(float(reconstructed.mean()), 4)},
    }  # fmt: skip
    return figures


def _samples(model: object, images: object, n: int, seed: int) -> object:
    """``n`` samples from z; a conditioned model takes the classifier's softmax on training images."""
    import torch

    rng = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(n, model.config.w_dim, generator=rng)
    # the first n training images, repeated when there are fewer
    labels = model.labels(images[torch.arange(n) % len(images)]) if model.conditioned else None
    return torch.cat([model.sample(zc, None if labels is None else lc) for zc, lc in _paired(z, labels)])


def _paired(z: object, labels: object) -> list:
    chunks = z.split(250)
    return list(zip(chunks, labels.split(250) if labels is not None else [None] * len(chunks)))


def _write_grids(model: object, images: object, test_images: object, out: object, seed: int) -> None:
    """samples.png (8 x 8 samples from z) and reconstructions.png (test images over their reconstructions)."""
    import torch

    from vcex.report.images import grid_image

    with torch.no_grad():
        samples = _samples(model, images, GRID_SIDE * GRID_SIDE, seed)
        rows = [list(samples[r * GRID_SIDE : (r + 1) * GRID_SIDE]) for r in range(GRID_SIDE)]
        grid_image(rows, zoom=3).save(out / "samples.png")
        originals = test_images[: 2 * GRID_SIDE]
        reconstructions = model(originals)
        pairs = [list(originals[:GRID_SIDE]), list(reconstructions[:GRID_SIDE])]
        pairs += [list(originals[GRID_SIDE:]), list(reconstructions[GRID_SIDE:])]
        grid_image(pairs, zoom=3).save(out / "reconstructions.png")
