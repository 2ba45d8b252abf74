"""``vcex stylespace probe``: how purely each StyleSpace coordinate of a style generator moves one attribute."""

from __future__ import annotations

import argparse

from vcex.cli.options import add_common, add_dataset, add_n, add_out, positive_count, positive_number, say

# decoded images in the strip of each factor's best channel: a row that fits a page
STRIP_IMAGES = 6


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
    add_out(probe, "output folder (probe.json, probe.html)")
    add_common(probe)
    probe.set_defaults(handler=run)


def load_style_model(name_or_path: str, progress: bool = True) -> object:
    """A zoo model by name, or the model in a folder written by ``vcex train-style`` (or its weights file)."""
    from vcex.models import load_model
    from vcex.models.stylex import is_stylex_folder, load_stylex

    if is_stylex_folder(name_or_path):
        return load_stylex(name_or_path)
    return load_model(name_or_path, progress=progress)


def run(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from vcex.data import load_dataset
    from vcex.data.profiles import profile_for
    from vcex.errors import InputError
    from vcex.evaluation.metrics import versions
    from vcex.evaluation.stylespace import probe_summary, shift_strip, stylespace_probe
    from vcex.models import load_model
    from vcex.pipeline import dataset_for
    from vcex.records import json_text, write_json
    from vcex.report.stylespace import write_probe_page

    name = dataset_for(args.dataset, args.classifier)
    profile = profile_for(name)
    if profile.attribute_oracle is None:
        raise InputError(f"the probe reads an attribute oracle, and --dataset {args.dataset} has none: use faces")
    latent_name = args.latent_model or profile.latent_model or f"{name}-vae"
    progress = not args.quiet
    say(args, f"loading {latent_name}, {profile.attribute_oracle} and {name}-cnn")
    latent_model = load_style_model(latent_name, progress=progress)
    oracle = load_model(profile.attribute_oracle, progress=progress)
    classifier = load_model(f"{name}-cnn", progress=progress)
    images = load_dataset(name, "test").images[: args.n]
    say(args, f"probing every StyleSpace coordinate on {len(images)} images")
    started = time.perf_counter()
    # the positive class of the face task (1): its log-odds change is reported per coordinate
    probe = stylespace_probe(
        latent_model, oracle, images, k=args.k, classifier=classifier, target=1, batch_size=args.batch_size
    )
    seconds = time.perf_counter() - started
    summary = probe_summary(probe)
    record = {
        "dataset": name,
        "latent_model": latent_name,
        "attribute_oracle": profile.attribute_oracle,
        "classifier": f"{name}-cnn",
        "classifier_target": 1,
        "n": len(images),
        "k": args.k,
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
            strip = shift_strip(latent_model, images[:STRIP_IMAGES], int(probe.coordinates[position]), shift)
            strips[factor] = (rows[position], strip)
    write_probe_page(out / "probe.html", record, strips)
    print(json_text({"out": args.out, "seconds": record["seconds"], "kinds": summary["kinds"]}, indent=None))
