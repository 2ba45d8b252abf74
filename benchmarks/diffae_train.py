"""Train the zoo's ``mnist-diffae`` on this CPU and measure it beside the zoo's VAE: docs/benchmarks/diffae.md.

Reconstruction (PSNR, L1) of 200 test images at S DDIM steps two ways (from each image's own DDIM-inverted x_T,
and from the fixed noise that ``decode(z)`` uses), the zoo CNN's accuracy on the fixed-noise reconstructions (does
z_sem alone carry the digit?), and decoding throughput: without gradients (batch 200) and with a backward pass
to the latents (batch 32, what an attack pays per step). The VAE gets the same figures.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/diffae_train.py --out docs/benchmarks/diffae.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from vcex.data import load_dataset
from vcex.models import load_classifier, load_model
from vcex.models.diffae import reconstruction_figures
from vcex.models.stylegan import psnr


def images_per_second(decode, latents: torch.Tensor, with_grad: bool, repeats: int = 2) -> float:
    """Decoded images per second: the best of ``repeats`` timed calls (after one warm-up call)."""
    best = float("inf")
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        if with_grad:
            z = latents.clone().requires_grad_(True)
            decode(z).sum().backward()
        else:
            with torch.no_grad():
                decode(latents)
        if attempt:
            best = min(best, time.perf_counter() - start)
    return len(latents) / best


def cnn_accuracy(classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return round(float((classifier(images).argmax(1) == labels).float().mean()), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/diffae.json"))
    parser.add_argument("--test", type=int, default=200, help="test images to measure on")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20], help="DDIM step counts to measure")
    parser.add_argument("--retrain", action="store_true", help="train even if the cache holds the model")
    args = parser.parse_args()
    started = time.perf_counter()
    test = load_dataset("mnist", "test")
    images, labels = test.images[: args.test], test.labels[: args.test]
    classifier = load_classifier("mnist-cnn", progress=False)

    model = load_model("mnist-diffae", retrain=args.retrain, progress=False)
    record = model.training_record
    diffae: dict = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": record["train_seconds"],
        "recipe": record["config"],
        "latent_radius": round(model.latent_radius, 4),
    }
    for steps in args.steps:
        figures = reconstruction_figures(model, images, steps=steps)
        with torch.no_grad():
            fixed = torch.cat([model.decode(model.encode(chunk), steps=steps) for chunk in images.split(100)])
            latents = model.encode(images)
        figures["fixed_noise_cnn_accuracy"] = cnn_accuracy(classifier, fixed, labels)
        figures["decode_images_per_second"] = round(
            images_per_second(lambda z, s=steps: model.decode(z, steps=s), latents, with_grad=False), 2
        )
        figures["decode_backward_images_per_second"] = round(
            images_per_second(lambda z, s=steps: model.decode(z, steps=s), latents[:32], with_grad=True), 2
        )
        diffae[f"steps_{steps}"] = figures
        print(steps, figures, flush=True)

    vae = load_model("mnist-vae", progress=False)
    with torch.no_grad():
        latents = vae.encode(images)
        reconstructions = vae.decode(latents)
    vae_figures = {
        "psnr": round(float(psnr(reconstructions, images).mean()), 2),
        "l1": round(float((reconstructions - images).abs().mean()), 4),
        "cnn_accuracy": cnn_accuracy(classifier, reconstructions, labels),
        "decode_images_per_second": round(images_per_second(vae.decode, latents, with_grad=False), 1),
        "decode_backward_images_per_second": round(images_per_second(vae.decode, latents[:32], with_grad=True), 1),
    }
    result = {
        "command": "OMP_NUM_THREADS=1 nice -n 15 python " + " ".join(sys.argv),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), no GPU",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "test_images": len(images),
        "cnn_accuracy_on_originals": cnn_accuracy(classifier, images, labels),
        "diffae": diffae,
        "vae": vae_figures,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
