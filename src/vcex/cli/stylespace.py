"""``vcex stylespace probe|attfind|eigenfind``: how purely each StyleSpace coordinate of a style generator moves one
attribute, and which coordinates (AttFind) or eigen-directions (EigenFind) drive a classifier."""

from __future__ import annotations

import argparse

from vcex.cli.options import (
    add_common,
    add_dataset,
    add_device,
    add_n,
    add_out,
    count,
    positive_count,
    positive_number,
    say,
)

# decoded images in the strip of each factor's best channel: a row that fits a page
STRIP_IMAGES = 6
# the style generator each dataset's StyleSpace commands read by default (shipped StylEx generators); else the
# dataset's latent model (faces: faces-style)
DEFAULT_STYLE = {"mnist": "mnist-stylex"}


def add_parser(commands: argparse._SubParsersAction) -> None:
    stylespace = commands.add_parser("stylespace", help="look into a style generator's StyleSpace")
    stylespace_commands = stylespace.add_subparsers(dest="stylespace_command", required=True)
    probe = stylespace_commands.add_parser(
        "probe",
        help="shift every StyleSpace coordinate by +-k std on test images and read the attribute oracle: which "
        "attribute each moves, how purely, on how many images",
    )
    add_dataset(probe, "faces (the probe reads its attribute oracle)")
    probe.add_argument(
        "--latent-model",
        default=None,
        help="zoo name of the style generator (default: the dataset's, faces-style), or the --out folder of "
        "vcex train-style",
    )
    # 200: the baseline size; the std per coordinate and the flip shares are over these images
    add_n(probe, 200, "encoded test images (default 200)")
    probe.add_argument("--k", type=positive_number, default=3.0, help="shift in standard deviations (default 3)")
    probe.add_argument(
        "--batch-size", type=positive_count, default=512, help="(coordinate, sign, image) decodes per batch"
    )
    add_invert_steps(probe, "probing, so the oracle reads")
    add_device(probe, DEVICE_HELP)
    add_out(probe, "output folder (probe.json, probe.html)")
    add_common(probe)
    probe.set_defaults(handler=run)
    attfind = stylespace_commands.add_parser(
        "attfind",
        help="StylEx AttFind: set every StyleSpace coordinate of N test images to its min and max, rank the ones "
        "that move the classifier (per class, greedy top-M), label each with the factor it moves and its purity",
    )
    eigenfind = stylespace_commands.add_parser(
        "eigenfind",
        help="EigenFind: step w along the top eigen-directions of the stacked affine weights, rank the ones that "
        "move the classifier, with the share of images they explain",
    )
    direction = stylespace_commands.add_parser(
        "direction",
        help="a StyleSpace direction toward each class (StyleDomain: class mean difference or learned, optionally "
        "sparse), read as ranked coordinates, each labelled with the factor it moves and its purity",
    )
    for command, handler in ((attfind, run_attfind), (eigenfind, run_eigenfind), (direction, run_direction)):
        add_dataset(command, "faces (the attributes are labelled by its attribute oracle)")
        command.add_argument(
            "--latent-model", default=None, help="zoo name of the style generator (default: faces-style) or a "
            "vcex train-style folder"
        )  # fmt: skip
        # 250: the official colab's image count
        add_n(command, 250, "encoded test images (default 250)")
        command.add_argument(
            "--top", type=positive_count, default=8, help="attributes kept per class (default 8, as published)"
        )
        command.add_argument(
            "--batch-size", type=positive_count, default=256, help="decodes per batch (default 256: faster than "
            "larger batches on CPUs)"
        )  # fmt: skip
        add_invert_steps(command, "the search, so the classifier and the oracle read")
        add_device(command, DEVICE_HELP)
        add_out(command, "output folder (attributes.json, attributes.html)")
        add_common(command)
        command.set_defaults(handler=handler)
    attfind.add_argument(
        "--include-torgb", action="store_true", help="also search the toRGB coordinates (left out as published)"
    )
    attfind.add_argument(
        "--resume-dir", default=None, help="folder of the partial table a rerun resumes from (default: the cache)"
    )
    _add_direction_options(direction)
    eigenfind.add_argument(
        "--directions", type=positive_count, default=20, help="eigen-directions searched (default 20, as published)"
    )
    # the measured setting, not the published alpha 5 in W: on faces-style that reached only 0.4-1.6 std and explained
    # 0.76 of the faces, 3 std explained 1.00 (docs/benchmarks/stylespace-explanations.md); the library's
    # EIGEN_ALPHA / EIGEN_ALPHA_UNIT (a test keeps them equal; not imported here, so --help does not load torch)
    eigenfind.add_argument(
        "--alpha", type=positive_number, default=3.0, help="step along each direction, in --alpha-unit (default 3 "
        "std: measured on faces-style, where the published 5 in W explained 0.76 of the faces and 3 std 1.00; the "
        "published setting is --alpha 5 --alpha-unit w)"
    )  # fmt: skip
    eigenfind.add_argument(
        "--alpha-unit", choices=("std", "w"), default="std", help="--alpha's unit: std (default: the std of the "
        "images' w along each direction, so the step does not depend on the generator's W scale) or w (W itself, "
        "as published)"
    )  # fmt: skip


DEVICE_HELP = "where the decodes run: cpu (default), cuda, cuda:1 ... (the generator, oracle and classifier go there)"


def _add_direction_options(direction: argparse.ArgumentParser) -> None:
    direction.add_argument(
        "--mode", choices=("mean", "learned"), default="mean", help="mean: the class mean difference of the "
        "training codes (default, as vcex explain); learned: Adam on the target cross-entropy plus proximity (on "
        "faces it flipped 85%% of the faces at alpha 3, the mean 14%%)"
    )  # fmt: skip
    direction.add_argument(
        "--sparsity", type=positive_number, default=None, help="share of coordinates kept, in (0, 1] (e.g. 0.05; "
        "default all)"
    )  # fmt: skip
    direction.add_argument(
        "--alpha-max", type=positive_number, default=3.0, help="the step the attributes and the strips use, and the "
        "sweep's end (default 3.0)"
    )  # fmt: skip
    direction.add_argument(
        "--n-fit", type=positive_count, default=2000, help="training images the direction is fitted on (default "
        "2000, as vcex explain)"
    )  # fmt: skip


def add_invert_steps(command: argparse.ArgumentParser, before: str) -> None:
    """``--invert-steps N``: start from the images' encoded styles refined by N inversion steps."""
    command.add_argument(
        "--invert-steps",
        type=count,
        default=0,
        help=f"refine each image's encoded styles by this many inversion steps (Adam on the pixel error) before "
        f"{before} decodes closer to the faces (default 0: the encoder alone; 100 took the faces' decodes from 28 "
        "to 32 dB)",
    )


def load_style_model(name_or_path: str, progress: bool = True) -> object:
    """A zoo model by name, or the model in a folder written by ``vcex train-style`` (or its weights file); a
    path that names no such folder is refused as one, with the style generators the zoo has."""
    from pathlib import Path

    from vcex.errors import InputError
    from vcex.models import load_model
    from vcex.models.stylex import SHIPPED_STYLEX, is_stylex_folder, load_stylex, resolve_stylex

    folder = resolve_stylex(name_or_path)
    if folder is not None:
        return load_stylex(folder)
    path = Path(name_or_path)
    if len(path.parts) > 1 or path.exists():  # a path, not a zoo name
        what = "no such file or folder" if not path.exists() else "not a vcex train-style folder"
        if path.exists() and not is_stylex_folder(path):
            what += " (it needs weights.safetensors and recipe.json)"
        raise InputError(
            f"{name_or_path}: {what}; give the --out folder of vcex train-style, or a style generator of the zoo: "
            f"{', '.join(['faces-style', *SHIPPED_STYLEX])}"
        )
    return load_model(name_or_path, progress=progress)


def _load(args: argparse.Namespace) -> tuple:
    """(dataset name, latent model name, oracle name, style model, attribute oracle, classifier, test images)."""
    from vcex.checks import check_device
    from vcex.data import load_dataset
    from vcex.data.profiles import profile_for
    from vcex.errors import InputError
    from vcex.evaluation.stylespace import OneVsAllOracle
    from vcex.models import load_model
    from vcex.pipeline import dataset_for

    name = dataset_for(args.dataset, args.classifier)
    profile = profile_for(name)
    device = check_device(args.device or "cpu")  # before any loading
    latent_name = args.latent_model or DEFAULT_STYLE.get(name) or profile.latent_model
    if latent_name is None:
        raise InputError(
            f"--dataset {args.dataset} has no style generator in the zoo: train one with vcex train-style --dataset "
            f"{args.dataset} and give its folder as --latent-model"
        )
    progress = not args.quiet
    # the digits have no attribute oracle: their independent oracle classifier is read one-vs-all per class
    oracle_name = profile.attribute_oracle or f"{name}-oracle (one-vs-all per class)"
    say(args, f"loading {latent_name}, {oracle_name} and {name}-cnn")
    latent_model = load_style_model(latent_name, progress=progress)
    test = load_dataset(name, "test")
    if profile.attribute_oracle is not None:
        oracle = load_model(profile.attribute_oracle, progress=progress)
    else:
        oracle = OneVsAllOracle(load_model(f"{name}-oracle", progress=progress), test.class_names)
    classifier = load_model(f"{name}-cnn", progress=progress)
    for model in (latent_model, oracle, classifier):
        model.to(device)
    return name, latent_name, oracle_name, latent_model, oracle, classifier, test.images[: args.n]


def run(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from vcex.evaluation.metrics import versions
    from vcex.evaluation.stylespace import probe_summary, shift_strip, stylespace_probe
    from vcex.records import json_text, write_json
    from vcex.report.stylespace import write_probe_page

    name, latent_name, oracle_name, latent_model, oracle, classifier, images = _load(args)
    say(args, f"probing every StyleSpace coordinate on {len(images)} images")
    started = time.perf_counter()
    # the positive class of the face task (1): its log-odds change is reported per coordinate
    probe = stylespace_probe(
        latent_model, oracle, images, k=args.k, classifier=classifier, target=1, batch_size=args.batch_size,
        invert_steps=args.invert_steps,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    summary = probe_summary(probe)
    record = {
        "dataset": name,
        "latent_model": latent_name,
        "attribute_oracle": oracle_name,
        "classifier": f"{name}-cnn",
        "classifier_target": 1,
        "n": len(images),
        "k": args.k,
        "invert_steps": args.invert_steps,
        "device": args.device or "cpu",
        "attribute_names": list(probe.attribute_names),
        "seconds": round(seconds, 1),
        "versions": versions(),
        "summary": summary,
        "coordinates": probe.rows(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe.json", record)
    rows, strips = record["coordinates"], {}
    for factor, position in probe.best_per_factor().items():
        if position is not None:
            shift = args.k * float(probe.style_std[position])
            index, styles = int(probe.coordinates[position]), probe.styles[:STRIP_IMAGES]
            strip = shift_strip(latent_model, images[:STRIP_IMAGES], index, shift, styles=styles)
            strips[factor] = (rows[position], strip)
    write_probe_page(out / "probe.html", record, strips)
    print(json_text({"out": args.out, "seconds": record["seconds"], "kinds": summary["kinds"]}, indent=None))


# strips per class: the published figures show the top 4 attributes of each classifier
STRIP_ATTRIBUTES = 4


def _styles(args: argparse.Namespace, latent_model: object, images: object) -> object:
    """The images' styles every search and strip starts from: encoded, refined by ``--invert-steps``."""
    from vcex.evaluation.stylespace import encoded_styles

    if args.invert_steps:
        say(args, f"inverting {len(images)} images ({args.invert_steps} steps)")
    return encoded_styles(latent_model, images, invert_steps=args.invert_steps, batch_size=args.batch_size)


def _record_head(args: argparse.Namespace, method: str, name: str, latent: str, oracle: str, n: int) -> dict:
    """The fields every search's attributes.json starts with: what ran, on what, through what."""
    from vcex.evaluation.metrics import versions

    return {
        "method": method, "dataset": name, "latent_model": latent, "attribute_oracle": oracle,
        "classifier": f"{name}-cnn", "n": n, "invert_steps": args.invert_steps,
        "device": args.device or "cpu", "versions": versions(),
    }  # fmt: skip


def _attfind_strips(
    latent_model: object,
    classifier: object,
    images: object,
    effects: object,
    attributes: list,
    rows: list[dict],
    target: int,
) -> list[tuple]:
    """Strips of class ``target``'s first attributes: each on the images it raises most, before and after, from
    the styles the search started from."""
    from vcex.attribution.stylespace_attributes import apply_attributes

    slot_of = {int(c): s for s, c in enumerate(effects.coordinates)}
    strips = []
    for rank, (a, row) in enumerate(zip(attributes[:STRIP_ATTRIBUTES], rows), start=1):
        slot = slot_of[a.coordinate]
        chosen = effects.effects[:, a.direction, slot, target].topk(min(STRIP_IMAGES, len(images))).indices
        start = effects.styles[chosen]
        before = apply_attributes(latent_model, images[chosen], {}, styles=start)
        after = apply_attributes(
            latent_model, images[chosen], {a.coordinate: float(effects.extremes[slot, a.direction])}, styles=start
        )
        caption = (
            f"class {target}, #{rank}: {row['coordinate']} to its {row['direction']} = {row['factor']} "
            f"(purity {row['purity']:.2f}), mean logit effect {row['effect']:+.2f}"
        )
        strips.append((caption, *_strip(classifier, before, after, target)))
    return strips


def _probabilities(classifier: object, images: object, target: int) -> list[float]:
    """The classifier's probability of class ``target`` for each of ``images``."""
    return [row[target] for row in _all_probabilities(classifier, images)]


def _classes(classifier: object, images: object) -> int:
    """How many logits the classifier gives (one image is read)."""
    import torch

    from vcex.checks import device_of

    with torch.no_grad():
        return int(classifier(images[:1].to(device_of(classifier))).shape[1])


def _strip(classifier: object, before: object, after: object, target: int) -> tuple[object, list[list[str]]]:
    """(2, n, C, H, W) decodes before/after an edit and their captions: the classifier's p(target)."""
    import torch

    captions = [[f"p={p:.2f}" for p in _probabilities(classifier, images, target)] for images in (before, after)]
    return torch.stack([before, after]), captions


def _write(args: argparse.Namespace, record: dict, strips: list, seconds: float) -> None:
    from pathlib import Path

    from vcex.records import json_text, write_json
    from vcex.report.stylespace import write_attributes_page

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "attributes.json", record)
    write_attributes_page(out / "attributes.html", record, strips)
    summary = {str(target): rows[:STRIP_ATTRIBUTES] for target, rows in record["attributes"].items()}
    print(json_text({"out": args.out, "seconds": round(seconds, 1), "top": summary}, indent=None))


def run_attfind(args: argparse.Namespace) -> None:
    import time

    from vcex.attribution.stylespace_attributes import (
        attfind,
        merge_binary,
        stylespace_effects,
        sufficiency,
    )
    from vcex.errors import InputError

    name, latent_name, oracle_name, latent_model, oracle, classifier, images = _load(args)
    started = time.perf_counter()
    styles = _styles(args, latent_model, images)
    say(args, f"AttFind: 2 x K x {len(images)} decodes")
    effects = stylespace_effects(
        latent_model, classifier, images, include_torgb=args.include_torgb, batch_size=args.batch_size,
        resume_dir=args.resume_dir, progress=not args.quiet, styles=styles,
    )  # fmt: skip
    search_seconds = time.perf_counter() - started
    found, unexplained = {}, {}
    for target in range(effects.logits.shape[1]):
        try:
            found[target] = attfind(effects, target, num_attributes=args.top)
        except InputError as error:  # a class no image moves toward is reported, not listed empty
            unexplained[str(target)] = str(error)
    reading = _labels(args, latent_model, oracle, images, styles, found.values())
    rows, sufficient, strips = {}, {}, []
    for target, attributes in found.items():
        rows[str(target)] = _labelled(attributes, reading)
        sufficient[str(target)] = [round(s, 4) for s in sufficiency(
            latent_model, classifier, images, effects, attributes, target, args.batch_size
        )]  # fmt: skip
        strips += _attfind_strips(latent_model, classifier, images, effects, attributes, rows[str(target)], target)
    merged = []
    if len(found) == 2:
        merged = [a.row() | {"factor": reading[a.coordinate]["factor"], "purity": reading[a.coordinate]["purity"]}
                  for a in merge_binary(effects, found[0], found[1])]  # fmt: skip
    record = _record_head(args, "attfind", name, latent_name, oracle_name, len(images)) | {
        "stable_images": int(effects.stable.sum()),
        "coordinates_searched": len(effects.coordinates),
        "include_torgb": bool(args.include_torgb),
        "search_seconds": round(search_seconds, 1),
        "attributes": rows,
        "unexplained": unexplained,
        "sufficiency": sufficient,
        "merged_toward_0": merged,
    }
    _write(args, record, strips, time.perf_counter() - started)


def run_eigenfind(args: argparse.Namespace) -> None:
    import time

    from vcex.attribution.stylespace_attributes import (
        apply_attributes,
        decode_with_offset,
        eigen_directions,
        eigenfind,
        oracle_reading,
    )
    from vcex.errors import InputError

    name, latent_name, oracle_name, latent_model, oracle, classifier, images = _load(args)
    started = time.perf_counter()
    styles = _styles(args, latent_model, images)
    results, unexplained = {}, {}
    for target in range(_classes(classifier, images)):
        try:
            results[target] = eigenfind(
                latent_model, classifier, images, target, top=args.directions, alpha=args.alpha,
                alpha_unit=args.alpha_unit, keep=args.top, batch_size=args.batch_size, styles=styles,
            )  # fmt: skip
        except InputError as error:
            unexplained[str(target)] = str(error)
    search_seconds = time.perf_counter() - started
    _, offsets = eigen_directions(latent_model, args.directions)
    before_all = apply_attributes(latent_model, images, {}, args.batch_size, styles=styles)
    names = getattr(oracle, "attribute_names", None)
    rows, shares, strips = {}, {}, []
    for target, result in results.items():
        rows[str(target)] = []
        for rank, direction in enumerate(result.directions, start=1):
            step = direction.sign * result.steps[direction.index] * offsets[direction.index]
            after_all = decode_with_offset(latent_model, images, step, args.batch_size, styles=styles)
            factor, purity = oracle_reading(oracle, before_all, after_all)
            row = direction.row() | {
                "factor": names[factor] if names else f"attribute {factor}", "purity": round(purity, 4)
            }  # fmt: skip
            rows[str(target)].append(row)
            if rank <= STRIP_ATTRIBUTES:
                caption = (
                    f"class {target}, #{rank}: eigenvector {direction.index} x {direction.sign:+d} = {row['factor']} "
                    f"(purity {purity:.2f}), mean p change {direction.effect:+.2f}"
                )
                strips.append((caption, *_strip(
                    classifier, before_all[:STRIP_IMAGES], after_all[:STRIP_IMAGES], target
                )))  # fmt: skip
        shares[str(target)] = round(result.explained_share, 4)
    record = _record_head(args, "eigenfind", name, latent_name, oracle_name, len(images)) | {
        "directions_searched": args.directions,
        "alpha": args.alpha,
        "alpha_unit": args.alpha_unit,
        "search_seconds": round(search_seconds, 1),
        "attributes": rows,
        "unexplained": unexplained,
        "explained_share": shares,
    }
    _write(args, record, strips, time.perf_counter() - started)


# the flip curve's step sizes, as fractions of --alpha-max
DIRECTION_SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)


def run_direction(args: argparse.Namespace) -> None:
    import time

    import torch

    from vcex.attribution.stylespace_attributes import apply_attributes, direction_attributes
    from vcex.data import load_dataset
    from vcex.errors import InputError
    from vcex.explainers.stylespace_direction import StyleSpaceDirection

    if args.sparsity is not None and args.sparsity > 1:
        raise InputError(f"--sparsity is the share of coordinates kept, in (0, 1] (e.g. 0.05), got {args.sparsity}")
    name, latent_name, oracle_name, latent_model, oracle, classifier, images = _load(args)
    started = time.perf_counter()
    styles = _styles(args, latent_model, images)
    train = load_dataset(name, "train").images[: args.n_fit]
    say(args, f"fitting the {args.mode} direction toward each class on {len(train)} training images")
    explainer = StyleSpaceDirection(
        classifier, latent_model, mode=args.mode, sparsity=args.sparsity, alpha_max=args.alpha_max,
        batch_size=args.batch_size, device=args.device,
    ).fit(train)  # fmt: skip
    decodes = apply_attributes(latent_model, images, {}, args.batch_size, styles=styles)
    predicted = torch.tensor(_all_probabilities(classifier, decodes)).argmax(dim=1)  # the decodes' classes
    found, unexplained, whole = {}, {}, {}
    for target in range(_classes(classifier, images)):
        try:
            direction = explainer.direction(None, target).cpu()
            found[target] = (direction, direction_attributes(
                latent_model, classifier, images, direction, target, alpha=args.alpha_max, top=args.top,
                batch_size=args.batch_size, styles=styles,
            ))  # fmt: skip
        except InputError as error:  # a class no image moves toward is reported, not listed empty
            unexplained[str(target)] = str(error)
    search_seconds = time.perf_counter() - started
    reading = _labels(args, latent_model, oracle, images, styles, [attributes for _, attributes in found.values()])
    rows, strips = {}, []
    models = (latent_model, oracle, classifier)
    for target, (direction, attributes) in found.items():
        rows[str(target)] = _labelled(attributes, reading)
        outside = torch.nonzero(predicted != target).flatten()
        whole[str(target)], after = _whole_direction(args, models, images, styles, decodes, outside, direction, target)
        shown = outside[:STRIP_IMAGES]
        caption = (
            f"class {target}, the whole direction at alpha {args.alpha_max:g} = {whole[str(target)]['factor']} "
            f"(purity {whole[str(target)]['purity']:.2f})"
        )
        strips.append((caption, *_strip(classifier, decodes[shown], after[: len(shown)], target)))
        for rank, (a, row) in enumerate(zip(attributes[:STRIP_ATTRIBUTES], rows[str(target)]), start=1):
            moved = styles[shown].clone()
            moved[:, a.coordinate] += args.alpha_max * float(direction[a.coordinate])
            one = apply_attributes(latent_model, images[shown], {}, args.batch_size, styles=moved)
            caption = (
                f"class {target}, #{rank}: {row['coordinate']} by {row['weight_in_stds'] * args.alpha_max:+.2f} std "
                f"= {row['factor']} (purity {row['purity']:.2f}), mean logit effect {row['effect']:+.2f}"
            )
            strips.append((caption, *_strip(classifier, decodes[shown], one, target)))
    record = _record_head(args, "direction", name, latent_name, oracle_name, len(images)) | {
        "mode": args.mode,
        "sparsity": args.sparsity,
        "alpha_max": args.alpha_max,
        "fit_images": len(train),
        "search_seconds": round(search_seconds, 1),
        "attributes": rows,
        "unexplained": unexplained,
        "whole_direction": whole,
    }
    _write(args, record, strips, time.perf_counter() - started)


def _labels(
    args: argparse.Namespace, latent_model: object, oracle: object, images: object, styles: object, found: object
) -> dict[int, dict]:
    """Every coordinate among the ``found`` attribute lists, read by the probe (k = 3 std, its default) on the
    styles the search started from: index -> its probe.json row."""
    from vcex.evaluation.stylespace import stylespace_probe

    coordinates = sorted({a.coordinate for attributes in found for a in attributes})
    if not coordinates:
        return {}
    probe = stylespace_probe(
        latent_model, oracle, images, batch_size=args.batch_size, coordinates=coordinates, styles=styles
    )
    return {int(c): row for c, row in zip(probe.coordinates, probe.rows())}


def _labelled(attributes: list, reading: dict[int, dict]) -> list[dict]:
    """The attributes' rows with the factor each moves, its purity and flip share (the probe's ``reading``)."""
    keys = ("factor", "purity", "flip_share")
    return [a.row() | {key: reading[a.coordinate][key] for key in keys} for a in attributes]


def _whole_direction(
    args: argparse.Namespace,
    models: tuple,
    images: object,
    styles: object,
    decodes: object,
    outside: object,
    direction: object,
    target: int,
) -> tuple[dict, object]:
    """The whole direction toward ``target`` on the ``outside`` images: its oracle reading at --alpha-max and its
    flip curve over the sweep (the record's entry), and the decodes at --alpha-max."""
    import torch

    from vcex.attribution.stylespace_attributes import apply_attributes, direction_flip_shares, oracle_reading

    latent_model, oracle, classifier = models
    shifted = styles[outside] + args.alpha_max * direction
    after = apply_attributes(latent_model, images[outside], {}, args.batch_size, styles=shifted)
    factor, purity = oracle_reading(oracle, decodes[outside], after)
    alphas = [fraction * args.alpha_max for fraction in DIRECTION_SWEEP]
    shares = direction_flip_shares(
        latent_model, classifier, images, direction, target, torch.tensor(alphas), batch_size=args.batch_size,
        styles=styles,
    )  # fmt: skip
    names = getattr(oracle, "attribute_names", None)
    entry = {
        "factor": names[factor] if names else f"attribute {factor}", "purity": round(purity, 4),
        "alphas": alphas, "flip_share": [round(share, 4) for share in shares],
    }  # fmt: skip
    return entry, after


def _all_probabilities(classifier: object, images: object) -> list[list[float]]:
    """The classifier's class probabilities (N, K) of ``images``, as lists."""
    import torch

    from vcex.checks import device_of

    with torch.no_grad():
        return classifier(images.to(device_of(classifier))).softmax(dim=1).tolist()
