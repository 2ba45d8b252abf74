"""``vcex gcd``: Global Counterfactual Directions from one source image, their transfer to the test set, BB-LIG."""

from __future__ import annotations

import argparse
import math
import time

from vcex.cli.options import (
    READERS,
    add_common,
    add_dataset,
    add_model_forms,
    add_n,
    add_out,
    count,
    models_from_args,
    positive_count,
    say,
)
from vcex.errors import InputError

# the choices of --lig-baseline (vcex.attribution.bblig.BASELINES; not imported here to keep `vcex --help` fast)
BASELINES = ("paper", "first_flip", "paper_or_flip")
SELECTION_RULES = ("flips", "closest", "fewest")  # vcex.explainers.gcd.SELECTION_RULES, likewise
EXAMPLES = 8  # transfer examples per direction on the page
LIG_IMAGES = 8  # BB-LIG maps on the page


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "gcd",
        help="black-box counterfactual directions (GCD) from one source image, their transfer and BB-LIG maps",
    )
    add_dataset(parser, "faces | mnist | fashion (the dataset's latent model: faces W, the VAEs)")
    parser.add_argument("--source-index", type=int, default=0, help="test image the directions are found from")
    parser.add_argument(
        "--target", default="second", help="the class to reach from the source: an index, 'second' or 'flip'"
    )
    add_n(parser, 500, "test images the directions are transferred to (default 500)")
    parser.add_argument(
        "--source-candidates",
        type=positive_count,
        default=1,
        help="K > 1: choose the source by validation instead: discover from the first K of the --validation images "
        "that are in --source-index's class (batched), keep the one --source-rule picks from their g0's flips of the "
        "validation images. On faces W (radius 0.5, 1,024 samples, the default rule) the chosen source's direction "
        "flipped 0.81-0.94 of the test faces on ten validation pools and two scored sets (MNAC 1.06-1.70), where 16 "
        "sources taken without validation flipped 0.46-0.91 (median 0.63); ~160,000-275,000 queries instead of "
        "1,107; docs/benchmarks/gcd.md. Default 1: --source-index is the source",
    )
    parser.add_argument(
        "--source-rule",
        choices=SELECTION_RULES,
        default=None,
        help="with --source-candidates: flips (the direction that flips most validation images), closest (among "
        "those within --source-tolerance of the most, the one whose flips move the images least), fewest (among "
        "those, the one whose flips change the dataset's descriptors least, read by --source-reader). Default: "
        "fewest on faces (the faces figures on both scored sets in 7 of 10 validation pools, 4 of 5 on faces no "
        "run had seen, against 3 of 10 for flips; docs/benchmarks/gcd.md), flips elsewhere",
    )
    parser.add_argument(
        "--source-reader",
        choices=READERS,
        default="latent",
        help="what reads the descriptor changes of --source-rule fewest: latent (default: the latent probes, cheap, "
        "7 of 10 pools on faces), images (the image readers, 6 of 10) or auto (as --reader)",
    )
    parser.add_argument(
        "--reader",
        choices=READERS,
        default="auto",
        help="what reads the descriptor changes of the directions, as vcex global --reader: auto (default: a CNN on "
        "the images for faces, where the latent probes read the smile and the eyes near chance, held-out accuracy "
        "0.61 and 0.55 against 0.95 and 0.93; latent probes otherwise), latent, images (the faces' ship with vcex; "
        "elsewhere trained on first use and cached)",
    )
    parser.add_argument(
        "--source-tolerance",
        type=float,
        default=0.1,
        help="with --source-rule closest or fewest: the share of validation flips a candidate may give up (default "
        "0.1)",
    )
    parser.add_argument(
        "--validation",
        type=positive_count,
        default=200,
        help="with --source-candidates: the validation images, the test images after the first --n (default 200)",
    )
    parser.add_argument(
        "--samples",
        type=positive_count,
        default=None,
        help="perturbed latents around the source (default: 1,024 on faces, 512 elsewhere)",
    )
    parser.add_argument(
        "--radius",
        type=float,
        default=None,
        help="sampling radius in units of the latent's spread (default: 0.5 on faces, where radius 1 flipped 0.54 of "
        "the test faces against 0.72; 1 elsewhere, the public code's)",
    )
    parser.add_argument("--h-directions", type=int, default=3, help="Hessian eigen-directions to keep (default 3)")
    parser.add_argument("--lig", type=int, default=20, help="test images with BB-LIG maps (default 20, 0: none)")
    parser.add_argument(
        "--lig-baseline",
        choices=BASELINES,
        default="paper",
        help="where a BB-LIG path ends: paper (own class < 0.01, the public code), first_flip (< 0.5), "
        "paper_or_flip (the paper's where the sweep reaches it, else the first flip)",
    )
    parser.add_argument(
        "--decode-steps",
        type=positive_count,
        default=None,
        help="DDIM steps of a diffusion autoencoder's decode and inversion (--latent-model faces-diffae / "
        "mnist-diffae; default the model's 20): fewer are faster on a CPU, recorded in directions.json",
    )
    parser.add_argument(
        "--invert-steps",
        type=count,
        default=0,
        help="encode every image (the source and the test images) by the encoder plus N Adam steps on the pixel "
        "error (GAN inversion, as vcex explain --invert-steps; the generator only, no classifier query; default 0: "
        "the encoder alone). On faces W, 300 steps (~1 s per face on one CPU thread) kept the smile in more "
        "reconstructions: 372 of 500 faces eligible instead of 264, flip rate 0.76 (0.75), MNAC 0.92 (1.04), but "
        "oracle agreement 0.44 (0.68); docs/benchmarks/gcd.md",
    )
    add_out(parser, "output folder (directions.safetensors/.json, transfer.json, metrics.json, gcd.html)")
    # --black-box (outputs only; the white-box LIG comparison, which needs gradients, is then skipped),
    # --latent-model, and --classifier's file forms (an ONNX file is always a black box)
    add_model_forms(parser)
    add_common(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from vcex.data.profiles import profile_for
    from vcex.explainers.base import resolve_targets
    from vcex.explainers.gcd import GCD, feature_distance
    from vcex.models.blackbox import BlackBoxClassifier, is_black_box
    from vcex.models.refined import RefinedEncoder
    from vcex.pipeline import parse_target, prepare
    from vcex.records import json_text, write_json
    from vcex.report.gcd import write_gcd_page

    defaults = profile_for(args.dataset).gcd_sampling
    sampling = {
        "radius": defaults["radius"] if args.radius is None else args.radius,
        "samples": int(defaults["samples"]) if args.samples is None else args.samples,
    }
    if not (math.isfinite(sampling["radius"]) and sampling["radius"] > 0):
        raise InputError(f"--radius must be a positive number of the latent's spreads, got {args.radius}")
    bench = prepare(args.dataset, progress=not args.quiet, **models_from_args(args, "gcd"))
    test = bench.test.images
    stochastic = callable(getattr(bench.latent_model, "encode_stochastic", None))
    _check(args, bench, len(test), stochastic)
    if args.source_rule is None:  # the dataset family's measured default (faces: fewest)
        args.source_rule = profile_for(bench.dataset).gcd_source_rule
    # the same RefinedEncoder `vcex explain --invert-steps` attacks from; the encoder alone at 0
    latent_model = RefinedEncoder(bench.latent_model, steps=args.invert_steps) if args.invert_steps else None
    opaque = is_black_box(bench.classifier)
    # GCD queries outputs only: a white-box classifier is queried through the same counting wrapper
    black_box = bench.classifier if opaque else BlackBoxClassifier(bench.classifier, bench.test.num_classes)
    source = test[args.source_index : args.source_index + 1]
    with torch.no_grad():
        goal = int(resolve_targets(parse_target(args.target), bench.classifier(source).softmax(1))[0])
        source_class = int(bench.classifier(source).argmax(1)[0])
    gcd = GCD(
        black_box,
        latent_model or bench.latent_model,
        threshold=0.5,
        samples=sampling["samples"],
        radius=sampling["radius"],
        h_directions=args.h_directions,
        distance=feature_distance(bench.features()),
        decode_steps=args.decode_steps,
        # alpha's unit from the plain encodings of the same space: inverting 1,000 training images takes minutes
    ).fit(bench.train.images[:1000], encoder=bench.latent_model if latent_model else None)
    black_box.reset_queries()  # the queries of the discovery and after, not the source's class above
    record = _discover(args, bench, gcd, test, source_class, goal)
    discovery = record.pop("discovery")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"directions": discovery.directions[0].contiguous(), "h_eigenvalues": discovery.h_eigenvalues[0].contiguous()},
        str(out / "directions.safetensors"),
    )
    record = {
        "dataset": bench.dataset,
        "classifier": bench.classifier_source or f"{bench.dataset}-cnn",
        "black_box": opaque,
        "latent_model": type(bench.latent_model).__name__,
        "latent_source": getattr(bench.latent_model, "source", None),
        # a diffusion autoencoder: every decode starts from its image's own inverted x_T, at these DDIM steps
        "decode_steps": gcd.decode_steps or getattr(getattr(bench.latent_model, "config", None), "decode_steps", None)
        if stochastic
        else None,
        "invert_steps": args.invert_steps,
        "reader": args.reader,  # what reads the descriptor changes (auto: images for faces, latent probes otherwise)
        **record,
        "n": min(args.n, len(test)),
        "directions": {},
    }
    write_json(out / "directions.json", {k: v for k, v in record.items() if k != "directions"})
    if not discovery.fit.usable[0]:
        raise InputError(
            f"the proxy did not fit the black box around test image {record['source_index']} (held-out R^2 "
            f"{record['proxy']['logit_r2']:.2f} < {gcd.min_proxy_r2}); its directions are saved but not transferred: "
            "raise --samples or lower --radius"
        )
    images = test[: args.n]
    examples, metrics, eligible = _transfer(args, bench, gcd, discovery, images, record, out)
    # the images whose reconstruction the black box reads as the image (the transfer's eligible ones)
    chosen = images[eligible][: args.lig]
    lig = _bblig(args, bench, gcd, discovery.direction("g0"), chosen, record, opaque) if len(chosen) else None
    write_json(out / "transfer.json", record)
    write_json(out / "metrics.json", {**metrics, "method": "gcd"})
    write_gcd_page(out / "gcd.html", record, examples, lig)
    summary = {name: d["flip_rate"] for name, d in record["directions"].items()}
    print(json_text({"out": args.out, "flip_rate": summary, "queries": black_box.queries}, indent=None))


def _check(args: argparse.Namespace, bench, test_images: int, stochastic: bool) -> None:
    """The options that do not fit the data or the latent model, each refused in one line before any work."""
    from vcex.pipeline import no_descriptors_reason

    if not 0 <= args.source_index < test_images:
        raise InputError(
            f"--source-index {args.source_index} is outside the {test_images} test images (0..{test_images - 1})"
        )
    if args.source_candidates > 1 and test_images < args.n + args.validation:
        raise InputError(
            f"--source-candidates takes its candidates and --validation {args.validation} images from the test images "
            f"after the first --n {args.n}; the test set has {test_images}: lower --n or --validation"
        )
    if args.source_rule not in (None, "flips") and args.source_candidates == 1:
        raise InputError(
            f"--source-rule {args.source_rule} chooses among candidate sources: add --source-candidates K (K > 1)"
        )
    if not 0 <= args.source_tolerance <= 1:  # NaN fails too
        raise InputError(
            f"--source-tolerance is a share of the validation images, in [0, 1], got {args.source_tolerance}"
        )
    if args.source_rule == "fewest" and (problem := no_descriptors_reason(args.dataset)) is not None:
        raise InputError(f"--source-rule fewest reads descriptors, and vcex {problem}: use flips or closest")
    if args.decode_steps is not None and not stochastic:
        raise InputError(
            f"--decode-steps is for a diffusion autoencoder (--latent-model {args.dataset}-diffae); the latent model "
            f"{type(bench.latent_model).__name__} has no DDIM steps: drop --decode-steps"
        )
    if args.invert_steps and stochastic:
        raise InputError(
            f"--invert-steps refines a generator's latent through its decode; the diffusion autoencoder "
            f"{type(bench.latent_model).__name__} decodes each image from its own DDIM-inverted x_T already: drop "
            "--invert-steps"
        )


def _change_reader(args: argparse.Namespace, bench):
    """The candidates' descriptor changes for select_source, recorded with every rule where the dataset has
    descriptors: None without them, and None under another rule than fewest when no reader can be fitted to them
    (a folder's), so that the run stands; under fewest that is refused with the reason."""
    from vcex.pipeline import descriptor_change, no_descriptors_reason

    if no_descriptors_reason(bench.dataset):
        return None
    try:
        return descriptor_change(bench, args.source_reader)
    except InputError as error:
        if args.source_rule == "fewest":
            raise InputError(
                f"--source-rule fewest cannot read the descriptors: {error}; use flips or closest"
            ) from error
        return None


def _discover(args: argparse.Namespace, bench, gcd, test, source_class: int, goal: int) -> dict:
    """The directions from --source-index, or from the source chosen by validation (--source-candidates): the
    record's discovery part, with the :class:`~vcex.explainers.gcd.Discovery` itself under ``"discovery"``."""
    from vcex.evaluation.metrics import versions

    started = time.perf_counter()
    selection = None
    if args.source_candidates > 1:
        say(
            args, f"GCD: choosing the source (class {source_class} -> {goal}) among {args.source_candidates} candidates"
        )
        pool = test[args.n : args.n + args.validation]
        change = _change_reader(args, bench)
        # the candidates are the validation images themselves (encoded once)
        selection = gcd.select_source(
            None,
            pool,
            source_class=source_class,
            goal_class=goal,
            limit=args.source_candidates,
            rule=args.source_rule,
            tolerance=args.source_tolerance,
            attribute_change=change,
        )
        discovery, source_index = selection.discovery, args.n + selection.chosen
        chosen_rate = selection.summary()["chosen_validation_flip_rate"]
        say(args, f"GCD: the source is test image {source_index} (validation flip rate {chosen_rate:.2f})")
    else:
        say(args, f"GCD discovery from test image {args.source_index} (class {source_class} -> {goal})")
        discovery, source_index = gcd.discover(test[args.source_index], target=goal), args.source_index
    return {
        "discovery": discovery,
        "source_index": source_index,
        # --source-candidates: the candidates (test indices), their validation flip rates, the chosen one; the
        # discovery's queries and seconds are then the whole selection's
        "source_selection": None
        if selection is None
        else {
            **selection.summary(),
            "candidates": [args.n + int(i) for i in selection.candidates],
            "chosen": source_index,
            # what read the candidates' descriptor changes (None: not read), as the benchmark records it
            "change_reader": None if change is None else args.source_reader,
        },
        "source_class": source_class,
        "goal_class": goal,
        "unit": discovery.unit,
        "direction_names": list(discovery.direction_names),
        "h_eigenvalues": discovery.h_eigenvalues[0].tolist(),
        "proxy": {
            "logit_r2": float(discovery.fit.logit_r2[0]),
            "distance_rmse": float(discovery.fit.distance_rmse[0]),
            "epochs": int(discovery.fit.epochs[0]),
            "usable": bool(discovery.fit.usable[0]),
            "min_r2": gcd.min_proxy_r2,
        },
        "discovery_seconds": round(time.perf_counter() - started, 1),
        "discovery_queries": gcd.black_box.queries,
        "settings": discovery.settings,
        "versions": versions(),
    }


def _transfer(args: argparse.Namespace, bench, gcd, discovery, images, record: dict, out) -> tuple[dict, dict, object]:
    """g0 and g20 swept over ``images`` (encoded once): each one's summary, curve and descriptor changes into
    ``record["directions"]``, g0's counterfactuals saved. Returns the page's examples, g0's metrics and its
    eligible images (N,) bool."""
    from vcex.explainers.gcd import prepare_transfer
    from vcex.pipeline import direction_attributions, evaluate_result

    source_class, goal = record["source_class"], record["goal_class"]
    ready = prepare_transfer(gcd, images)
    examples, metrics = {}, {}
    for name in ("g0", "g20"):
        say(args, f"transferring {name} to {len(images)} test images")
        transfer = gcd.transfer(discovery.direction(name), ready, source_class=source_class, goal_class=goal)
        magnitudes, rate = transfer.flip_curve()
        result = transfer.result
        record["directions"][name] = {
            **transfer.summary(),
            "curve": {"alpha": magnitudes.tolist(), "flip_rate": rate.tolist()},
            # what the direction changes, in the dataset's descriptors (smile, beard...; stroke thickness, slant...)
            "descriptors": direction_attributions(bench, result, goal, reader=args.reader),
        }
        examples[name] = (result.originals[:EXAMPLES], result.counterfactuals[:EXAMPLES])
        if name == "g0":
            eligible = transfer.eligible
            if len(result):
                metrics = evaluate_result(result, bench)
                result.save(out / "counterfactuals.safetensors")
    return examples, metrics, eligible


def _bblig(args: argparse.Namespace, bench, gcd, direction, images, record: dict, opaque: bool) -> tuple:
    """BB-LIG along ``direction`` on ``images`` into ``record["bblig"]`` (and, for a white-box classifier, the
    path sum's agreement with the white-box map). Returns the page's (path starts, maps, white-box maps or None)."""
    from vcex.attribution.bblig import bb_lig, compare_attributions, white_box_lig

    say(args, f"BB-LIG along g0 on {len(images)} test images")
    source_class, goal = record["source_class"], record["goal_class"]
    maps, path = bb_lig(gcd, direction, images, source_class=source_class, goal_class=goal, baseline=args.lig_baseline)
    record["bblig"] = {
        **maps.summary(),
        "estimator": "path_sum",
        "baseline": args.lig_baseline,
        # flat, one column each on the page: paths ending below 0.01, at the first flip, none
        **{f"paths_{kind}": count for kind, count in path.baseline_counts().items()},
    }
    white = None
    if not opaque:
        # the black-box path sum is complete by construction: its agreement with the white-box map is the check
        white = white_box_lig(gcd, path, bench.classifier)
        comparison = compare_attributions(maps, white)
        record["bblig"].update(
            {
                "white_box_relative_completeness_error_median": white.summary()["relative_completeness_error_median"],
                "cosine_to_white_box_median": comparison["cosine_median"],
                "top10_overlap_with_white_box_median": comparison["top_overlap_median"],
            }
        )
    keep = slice(0, LIG_IMAGES)
    return path.images[keep, 0], maps.maps[keep], None if white is None else white.maps[keep]
