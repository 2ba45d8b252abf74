"""Train a diffusion autoencoder (vcex.models.diffae) for a wall-clock budget on a device, and measure it there.

The zoo's recipes (``DIFFAE_RECIPES``) fix the number of epochs; this script finds the number that fits
``--minutes`` on the machine at hand (a timed probe of ``--probe-steps`` optimiser steps on a throw-away copy,
under whatever else the machine runs), trains with the zoo's seeds (model 14, training 14) and one-cycle
schedule for that many epochs, and writes into ``--out``:

- ``weights.safetensors``: the model's state dict with the record (config, epochs, batch size, lr, device,
  train seconds) as metadata; ``scripts/ship_weights.py`` ships it under the zoo's name once DIFFAE_RECIPES
  holds the same recipe;
- ``record.json``: the record, reconstruction figures at 10 and 20 DDIM steps (``reconstruction_figures``), and
  whether z_sem alone carries the content: the zoo CNN's accuracy (digits) or the attribute oracle's agreement
  with the originals (faces) on decodes from the fixed noise, and the z-swap test.

    python scripts/train_diffae.py --dataset mnist --minutes 6 --device cuda --out /tmp/mnist-diffae
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from vcex.cache import save_weights
from vcex.models.diffae import DiffAEConfig, DiffusionAutoencoder, reconstruction_figures, train_diffae

MODEL_SEED = TRAIN_SEED = 14  # the zoo's seeds for its diffusion autoencoders


def load_images(dataset: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training images, test images and test targets (digit labels, or the faces' binary attributes)."""
    if dataset == "faces":
        from vcex.data.faces_tasks import load_face_table

        train, test = load_face_table("train"), load_face_table("test")
        return train.images, test.images, test.images
    from vcex.data import load_dataset

    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    return train.images, test.images, test.labels


def config_for(dataset: str, images: torch.Tensor, args: argparse.Namespace) -> DiffAEConfig:
    base = args.base_channels
    return DiffAEConfig(
        channels=images.shape[1],
        image_size=images.shape[-1],
        latent_dim=args.latent_dim,
        base_channels=base,
        blocks_per_level=args.blocks,
        encoder_channels=(base, 2 * base, 4 * base),
    )


def seconds_per_step(config: DiffAEConfig, images: torch.Tensor, batch_size: int, device: str, steps: int) -> float:
    """Mean wall time of one optimiser step (after 5 warm-up steps) on a throw-away model."""
    model = DiffusionAutoencoder(config).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batch = images[:batch_size].to(device)
    started = 0.0
    for step in range(steps + 5):
        if step == 5:
            synchronize(device)
            started = time.perf_counter()
        loss = model.training_loss(batch, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def content_figures(model: DiffusionAutoencoder, dataset: str, images: torch.Tensor, targets: torch.Tensor) -> dict:
    """Does z_sem alone carry the content? Decodes from the fixed noise read by the zoo CNN (digits: accuracy
    against the labels) or the attribute oracle (faces: agreement with the originals' attributes), and the
    z-swap: each image's inverted x_T decoded with the next image's z_sem (10 steps)."""
    from vcex.data.profiles import profile_for
    from vcex.models import load_model

    device = model.fixed_noise.device
    if dataset == "faces":
        reader = load_model(profile_for("faces").attribute_oracle, progress=False).to(device)

        def read(batch: torch.Tensor) -> torch.Tensor:
            return reader.predict(batch).to(device)  # predict answers on the CPU

        truth = read(images)
    else:
        reader = load_model(f"{dataset}-cnn", progress=False).to(device)

        def read(batch: torch.Tensor) -> torch.Tensor:
            return reader(batch).argmax(1)

        truth = targets.to(device)
    figures: dict = {}
    for steps in (10, 20):
        fixed = torch.cat([model.decode(model.encode(chunk), steps=steps) for chunk in images.split(100)])
        figures[f"fixed_noise_agreement_{steps}"] = round(float((read(fixed) == truth).float().mean()), 4)
    count = min(64, len(images))
    latents = model.encode(images[:count])
    codes = model.encode_stochastic(images[:count], latents, steps=10)
    other = torch.roll(torch.arange(count, device=device), 1)
    swapped = model.decode(latents[other], x_T=codes, steps=10)
    read_swapped = read(swapped)
    figures["z_swap"] = {
        "images": count,
        "reads_x_T_image": round(float((read_swapped == truth[:count]).float().mean()), 4),
        "reads_z_image": round(float((read_swapped == truth[:count][other]).float().mean()), 4),
    }
    figures["agreement_of_originals"] = round(float((read(images) == truth).float().mean()), 4)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("mnist", "fashion", "faces"), default="mnist")
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget (epochs are sized to it)")
    parser.add_argument("--epochs", type=int, default=None, help="train this many epochs instead of sizing them")
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=1, help="ResBlocks per UNet level")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--probe-steps", type=int, default=30)
    parser.add_argument("--safety", type=float, default=0.85, help="share of the budget the sized epochs fill")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--test", type=int, default=200, help="test images to measure on")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.benchmark = True

    images, test_images, test_targets = load_images(args.dataset)
    config = config_for(args.dataset, images, args)
    steps_per_epoch = -(-len(images) // args.batch_size)
    per_step = seconds_per_step(config, images, args.batch_size, args.device, args.probe_steps)
    sized = max(1, int(args.minutes * 60 * args.safety / (per_step * steps_per_epoch)))
    epochs = args.epochs or sized
    print(f"{per_step * 1000:.1f} ms/step, {steps_per_epoch} steps/epoch -> {epochs} epochs", flush=True)

    torch.manual_seed(MODEL_SEED)
    model = DiffusionAutoencoder(config)
    parameters = sum(p.numel() for p in model.parameters())
    started = time.perf_counter()
    train_diffae(
        model, images, epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=TRAIN_SEED,
        progress=False, device=args.device,
    )  # fmt: skip
    synchronize(args.device)
    train_seconds = time.perf_counter() - started
    device_name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else platform.machine()
    record = {
        "dataset": args.dataset,
        "config": config.record(),
        "epochs": epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimiser_steps": epochs * steps_per_epoch,
        "parameters": parameters,
        "device": f"{args.device} ({device_name})",
        "probe_seconds_per_step": round(per_step, 5),
        "train_seconds": round(train_seconds, 1),
        "latent_radius": round(model.latent_radius, 4),
        "command": "python " + " ".join(sys.argv),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    save_weights(args.out / "weights.safetensors", model.state_dict(), record)
    (args.out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record), flush=True)

    test = test_images[: args.test].to(args.device)
    for steps in (10, 20):
        record[f"test_steps_{steps}"] = reconstruction_figures(model, test, steps=steps)
    record["content"] = content_figures(model, args.dataset, test, test_targets[: args.test])
    (args.out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2), flush=True)


if __name__ == "__main__":
    main()
