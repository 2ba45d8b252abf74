"""Ship a generator trained by ``vcex train-style`` under a name of ``vcex.models.stylex.SHIPPED_STYLEX``.

    python scripts/ship_stylex.py faces-stylex RUN_FOLDER

Copies the run's weights.safetensors (encoder and generator; the discriminator and optimiser states stay behind)
and recipe.json (the command, recipe, per-epoch history and figures) to src/vcex/weights/stylex/NAME/, and checks
the package's weights budget (scripts/ship_weights.py's, with these folders counted).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ship_weights import LIMIT_MB

from vcex.models.stylex import RECIPE_FILE, SHIPPED_STYLEX, WEIGHTS_FILE, is_stylex_folder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(SHIPPED_STYLEX))
    parser.add_argument("folder", help="the vcex train-style --out folder")
    args = parser.parse_args()
    if not is_stylex_folder(args.folder):
        raise SystemExit(f"{args.folder} is not a vcex train-style folder")
    target = ROOT / "src" / "vcex" / "weights" / "stylex" / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, RECIPE_FILE):
        shutil.copyfile(Path(args.folder) / name, target / name)
    weights = ROOT / "src" / "vcex" / "weights"
    total = sum(f.stat().st_size for f in weights.rglob("*.safetensors")) / 2**20
    print(f"shipped {args.name} ({(target / WEIGHTS_FILE).stat().st_size / 2**20:.1f} MB); all weights {total:.1f} MB")
    if total > LIMIT_MB:
        sys.exit(f"shipped weights total {total:.1f} MB, over the {LIMIT_MB:.0f} MB budget")


if __name__ == "__main__":
    main()
