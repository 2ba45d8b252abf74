"""``vcex datasets preview``: a labelled grid of a dataset's images."""

from __future__ import annotations

import argparse

from vcex.cli.options import add_common, add_n, add_out, say


def add_parser(commands: argparse._SubParsersAction) -> None:
    datasets = commands.add_parser("datasets", help="look at the datasets")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    preview = datasets_commands.add_parser("preview", help="write a labelled grid of a dataset's images")
    preview.add_argument("name", help="faces | mnist | fashion | folder:PATH (one subfolder of images per class)")
    add_out(preview, "PNG file to write", folder=False)
    # 32: four rows of the grid's eight columns, a grid that fits a screen
    add_n(preview, 32, "images in the grid (default 32)")
    preview.add_argument("--size", type=int, default=64, help="faces: 64 or 32 pixels")
    preview.add_argument("--seed", type=int, default=0)
    add_common(preview)
    preview.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
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
    say(args, f"wrote {args.out} ({len(images)} images)")
