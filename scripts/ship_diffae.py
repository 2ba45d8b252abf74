"""Ship a diffusion autoencoder trained by scripts/train_diffae.py (on a GPU) as the zoo's model of its name.

    python scripts/ship_diffae.py /path/to/mnist-diffae-run mnist-diffae

The run's config, epochs, batch size and learning rate must be the zoo's recipe (``DIFFAE_RECIPES``), so the
shipped file carries the recipe's fingerprint and ``load_model(name)`` uses it. The zoo's record is written
beside the tensors: the run's own (device, command, seconds, steps) and the test figures the zoo records,
measured here on 200 test images (``reconstruction_figures`` at the config's DDIM steps). The package's weights
budget and src/vcex/weights/README.md are updated by scripts/ship_weights.py's ``write_readme``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from ship_weights import write_readme  # noqa: E402

# the zoo models ship_weights.py last shipped (kept in the README's command line)
ZOO_SHIPPED = (
    "faces-style faces-attributes faces-smiling-cnn faces-smiling-oracle faces-smiling-im-ae mnist-cnn mnist-oracle "
    "mnist-vae mnist-im-ae fashion-cnn fashion-oracle fashion-vae fashion-im-ae"
).split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a scripts/train_diffae.py --out folder")
    parser.add_argument("name", choices=("mnist-diffae", "faces-diffae"))
    args = parser.parse_args()
    import torch

    from vcex.cache import load_state_into, load_weights, save_weights
    from vcex.models import model_spec
    from vcex.models.diffae import DIFFAE_RECIPES, reconstruction_figures
    from vcex.models.zoo import DIFFAE_MODELS, DIFFAE_TEST_IMAGES, SHIPPED_WEIGHTS

    run = json.loads((args.run / "record.json").read_text())
    recipe = DIFFAE_RECIPES[DIFFAE_MODELS[args.name]]
    wanted = {"config": recipe.config.record(), "epochs": recipe.epochs, "batch_size": recipe.batch_size}
    wanted["lr"] = recipe.lr
    wanted = json.loads(json.dumps(wanted))  # tuples as the JSON record holds them
    differing = [key for key, value in wanted.items() if run.get(key) != value]
    if differing:
        sys.exit(f"{args.run} was not trained with the zoo's {args.name} recipe: {', '.join(differing)} differ")
    spec = model_spec(args.name)
    train, test = spec.data("train"), spec.data("test")
    model = spec.build(train)
    tensors, _ = load_weights(args.run / "weights.safetensors")
    load_state_into(model, tensors, str(args.run / "weights.safetensors"))
    model.eval()
    started = time.perf_counter()
    figures = reconstruction_figures(model, test.images[:DIFFAE_TEST_IMAGES])
    print(f"measured in {time.perf_counter() - started:.0f} s: {figures}", file=sys.stderr)
    record = {
        "name": args.name,
        "role": spec.role,
        "dataset": spec.dataset,
        "data": train.info,
        "seed": spec.seed,
        "config": spec.config,
        "fingerprint": spec.fingerprint,
        "train_seconds": run["train_seconds"],
        "device": run["device"],
        "optimiser_steps": run["optimiser_steps"],
        "command": run["command"],
        "torch": run["versions"]["torch"],
        "python": run["versions"]["python"],
        "latent_radius": round(model.latent_radius, 4),
        **{f"test_{key}": value for key, value in figures.items()},
        "test_measured_with": f"torch {torch.__version__}, CPU",
    }
    target = SHIPPED_WEIGHTS / spec.path.name
    for stale in SHIPPED_WEIGHTS.glob(f"{args.name}-*.safetensors"):
        stale.unlink()
    save_weights(target, model.state_dict(), record)
    print(f"shipped {target.name} ({target.stat().st_size / 2**20:.1f} MB)", file=sys.stderr)
    write_readme(SHIPPED_WEIGHTS, ZOO_SHIPPED)


if __name__ == "__main__":
    main()
