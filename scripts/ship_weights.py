"""Copy trained zoo models into the package so users do not train them on first use (and get the measured ones).

    python scripts/ship_weights.py faces-style faces-attributes [--home DIR]

Each model is loaded (or trained, with its zoo recipe) from the cache in ``--home`` (default: the
normal cache), then its safetensors file, whose name carries the recipe's fingerprint, is copied to
src/vcex/weights/. ``vcex.models.load_model`` uses a shipped file only when the cache has none and
its recorded fingerprint matches the current recipe; any recipe change makes vcex train afresh.
src/vcex/weights/README.md lists what ships, with each file's training record.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the zoo's files and the StylEx generators (scripts/ship_stylex.py): a wheel that still installs in seconds
# 80 MB since the GPU-trained diffusion autoencoders (2 x 5.4 MB) joined; PyPI's default file limit is 100 MB
LIMIT_MB = 80.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="zoo model names, e.g. faces-style")
    parser.add_argument("--home", default=None, help="VCEX_HOME holding (or to hold) the trained models")
    args = parser.parse_args()
    if args.home:
        os.environ["VCEX_HOME"] = args.home
    from vcex.models import load_model, model_spec

    target = ROOT / "src" / "vcex" / "weights"
    target.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        model = load_model(name)
        spec = model_spec(name)
        for stale in target.glob(f"{name}-*.safetensors"):
            if stale.name != spec.path.name:
                stale.unlink()
        # a model loaded from the shipped file itself (nothing cached) is already in place
        if spec.path.exists():
            shutil.copyfile(spec.path, target / spec.path.name)
        shipped = target / spec.path.name
        print(f"shipped {shipped.name} ({shipped.stat().st_size / 2**20:.1f} MB)", file=sys.stderr)
        del model
    write_readme(target, args.names)


def write_readme(target: Path, names: list[str]) -> None:
    """Check the budget over every shipped file and rewrite ``target``/README.md with their records; ``names``:
    the zoo models the `ship_weights.py` command line named."""
    files = sorted(target.glob("*.safetensors"))
    total = sum(f.stat().st_size for f in files) / 2**20
    if total > LIMIT_MB:
        raise SystemExit(f"shipped weights total {total:.1f} MB, over the {LIMIT_MB:.0f} MB budget")
    from vcex.cache import load_weights

    lines = [
        "# Shipped weights",
        "",
        "Zoo models that ship with vcex: the faces models because training them on first use takes too long on a",
        "CPU, the MNIST models so that `vcex demo` on a fresh machine trains nothing, the Fashion-MNIST models because",
        "training them takes about 6 minutes of CPU on first use; and all of them so that anyone gets the weights that",
        "docs/BENCHMARKS.md measured (training the same recipe on another machine gives slightly different weights:",
        "CPU kernels are not bitwise reproducible across machines). Made by",
        f"`python scripts/ship_weights.py {' '.join(names)}` (the diffusion autoencoders, trained on a GPU, by",
        "`python scripts/ship_diffae.py`); each is used only while its recorded recipe",
        "fingerprint (in the file name and metadata) matches the zoo's current recipe.",
        "",
        "The figures in each record below were measured when the model was trained, with the models of that time;",
        "a record's attribute agreement used the attribute oracle of its day. The benchmark pages measure the shipped",
        "models afresh (the style generator with the shipped oracle: docs/benchmarks/faces.md).",
        "",
        f"Total: {total:.1f} MB.",
        "",
        "The StylEx generators trained by `vcex train-style` ship as folders in stylex/ (weights.safetensors and",
        "recipe.json with the command, recipe, per-epoch history and figures), copied by scripts/ship_stylex.py and",
        "judged in docs/benchmarks/stylex-faces.md and stylex-mnist.md.",
        "",
        "The faces' image readers (the descriptor readers of `vcex explain`, `vcex gcd` and `vcex global` on faces)",
        "ship in readers/, made by scripts/ship_readers.py: the ones the benchmark pages' runs trained and cached;",
        "their file name holds a digest of their settings and the faces' factor table, which `image_readers` checks.",
        "",
    ]
    for path in files:
        _, record = load_weights(path)
        shown = {k: v for k, v in record.items() if k not in ("data",)}
        lines += [f"## {path.name}", "", "```json", json.dumps(shown, indent=2, default=str), "```", ""]
    (target / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
