"""Peer benchmark: torchattacks' targeted PGD vs vcex's CounterfactualAttack and PixelAttack on MNIST.

Projected gradient descent (Madry et al., 2018) from torchattacks, a maintained adversarial-attack
library, run in targeted mode on vcex's ``mnist-cnn`` in [0, 1] pixel space (the classifier normalises
internally) at a few L-inf budgets. It is the strongest plain-pixel baseline a user would reach for:
it answers "how far is the target class in pixel space" but has no notion of a data manifold. Every
row explains the same MNIST test images toward the same targets (the classifier's runner-up class,
fixed before anything runs) and is scored by the same ``vcex.pipeline.evaluate_result``; vcex's
CounterfactualAttack and PixelAttack run in the same process as reference rows.

Runs inside its own virtual environment (torchattacks pins requests 2.25), made by ``setup.sh``:

    bash benchmarks/peers/pgd/setup.sh
    benchmarks/peers/.venvs/pgd/bin/python benchmarks/peers/pgd/run.py --threads 1

Resume-safe: every finished row is written to ``--work-dir`` (results.json plus the counterfactuals as
safetensors) as soon as it ends, and a rerun with the same images and models reuses it.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vcex.report.markdown import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer_common import (  # noqa: E402
    VCEX_ROWS_NOTE,
    State,
    command_line,
    cpu_model,
    fingerprint,
    log,
    mnist_task,
    num,
    passes_cell,
    pct,
    per_valid_ms,
    resumed_note,
    write_report,
)

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "peers-pgd.md"

THRESHOLD = 0.998  # vcex's default confidence threshold (its `validity`)
DEFAULT_EPS = (0.1, 0.2, 0.3)
DEFAULT_STEPS = 40
# torchattacks.PGD's own defaults (torchattacks 3.5.1): eps 8/255, alpha 2/255, 10 steps, random start
TORCHATTACKS_DEFAULTS = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10, "random_start": True}


# ---- state on disk ---------------------------------------------------------------------------------------


# ---- the rows --------------------------------------------------------------------------------------------


class Row:
    """One configuration: a stage name (its settings, so changed settings never reuse a stale result)."""

    def __init__(self, key: str, label: str, kind: str, settings: dict) -> None:
        self.key, self.label, self.kind, self.settings = key, label, kind, settings

    @property
    def filename(self) -> str:
        return f"{self.key}.safetensors"


def pgd_row(eps: float, alpha: float, steps: int, random_start: bool, label: str) -> Row:
    key = f"pgd-eps{eps:.4g}-alpha{alpha:.4g}-steps{steps}-rs{int(random_start)}"
    settings = {"eps": eps, "alpha": alpha, "steps": steps, "random_start": random_start}
    return Row(key, label, "pgd", settings)


def build_rows(args) -> list[Row]:
    rows = []
    for eps in args.eps:
        alpha = eps * args.alpha_ratio
        rows.append(
            pgd_row(eps, alpha, args.steps, True, f"torchattacks PGD, ε {eps:g}, α {alpha:.3g}, {args.steps} steps")
        )
    d = TORCHATTACKS_DEFAULTS
    defaults = pgd_row(
        d["eps"],
        d["alpha"],
        d["steps"],
        d["random_start"],
        "torchattacks PGD, its defaults (ε 8/255, α 2/255, 10 steps)",
    )
    if defaults.key not in {row.key for row in rows}:
        rows.append(defaults)
    rows.append(Row("vcex-attack", "vcex CounterfactualAttack, defaults (latent, mnist-vae)", "attack", {}))
    rows.append(Row("vcex-pixel", "vcex PixelAttack, defaults (pixels)", "pixel", {}))
    return rows


def pgd_result(bench, images: torch.Tensor, targets: torch.Tensor, row: Row, seed: int):
    """torchattacks' targeted PGD on all images at once, as a vcex CounterfactualResult."""
    import torchattacks

    from vcex.explainers import CounterfactualResult

    classifier = bench.classifier.eval()
    s = row.settings
    attack = torchattacks.PGD(
        classifier, eps=s["eps"], alpha=s["alpha"], steps=s["steps"], random_start=s["random_start"]
    )
    # the labels handed to the attack are the classes to reach (torchattacks' "targeted(label)" mode)
    attack.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(seed)  # the random start
    started = time.perf_counter()
    counterfactuals = attack(images, targets)
    with torch.no_grad():  # the one check that says which counterfactuals are valid, timed with the attack
        cf_probs = classifier(counterfactuals).softmax(1)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        original_probs = classifier(images).softmax(1)
    target_prob = cf_probs.gather(1, targets[:, None])[:, 0]
    steps = torch.full_like(targets, s["steps"])
    return CounterfactualResult(
        method="torchattacks-pgd",
        originals=images,
        counterfactuals=counterfactuals.detach(),
        target=targets,
        original_class=original_probs.argmax(1),
        original_prob=original_probs.gather(1, targets[:, None])[:, 0],
        target_prob=target_prob,
        success=target_prob > THRESHOLD,
        steps=steps,
        # every step is one forward and one backward pass of the classifier (no early stop), plus the check
        forward_passes=steps + 1,
        backward_passes=steps.clone(),
        seconds=seconds,
        threshold=THRESHOLD,
        settings={**s, "targeted": "by label (runner-up)", "seed": seed, "loss": "cross-entropy (torchattacks)"},
    )


def run_rows(bench, images, targets, rows: list[Row], state: State, seed: int) -> None:
    from vcex.pipeline import build_explainer

    for row in rows:
        if state.stage(row.key) is not None and (state.dir / row.filename).is_file():
            log(f"{row.key}: reusing the run from {state.stage(row.key)['finished']}")
            continue
        log(f"{row.key}: explaining {len(images)} images")
        if row.kind == "pgd":
            result = pgd_result(bench, images, targets, row, seed)
        else:
            result = build_explainer(row.kind, bench).explain(images, target=targets)
        result.save(state.dir / row.filename)
        state.finish(row.key, {"seconds": round(result.seconds, 4), "result": row.filename, "label": row.label})
        log(f"{row.key}: {result.seconds:.2f} s, validity {result.validity:.3f}")


# ---- evaluation and report -------------------------------------------------------------------------------


def evaluate_rows(bench, rows: list[Row], state: State) -> dict:
    from vcex.evaluation import predict_labels
    from vcex.explainers import CounterfactualResult
    from vcex.pipeline import evaluate_result

    metrics = {}
    for row in rows:
        path = state.dir / row.filename
        if not path.is_file():
            continue
        result = CounterfactualResult.load(path)
        record = evaluate_result(result, bench)
        delta = (result.counterfactuals - result.originals).flatten(1)
        record["linf"] = round(float(delta.abs().amax(1).mean()), 6)
        record["argmax_validity"] = round(
            float((predict_labels(bench.classifier, result.counterfactuals) == result.target).float().mean()), 6
        )
        record["n_valid"] = int(result.success.sum())
        record["seconds"] = result.seconds
        metrics[row.key] = record
    state.data["metrics"] = metrics
    state.write()
    return metrics


def render(rows: list[Row], metrics: dict, state: State, command: str, args) -> str:
    """The Markdown page: how the run was made, the table, what its columns mean."""
    lines = [*_page_intro(state, command, args), "", f"## MNIST, {args.n} test images, target = runner-up", ""]
    lines += _results_table(rows, metrics)
    lines += ["", COLUMN_NOTES]
    lines += resumed_note(state.data["stages"])
    return "\n".join(lines) + "\n"


def _page_intro(state: State, command: str, args) -> list[str]:
    import vcex

    version = importlib.metadata.version("torchattacks")
    return [
        "# Peer benchmark: torchattacks targeted PGD vs vcex (MNIST)",
        "",
        "Generated by `benchmarks/peers/pgd/run.py` in its own virtual environment "
        "(`benchmarks/peers/pgd/setup.sh`; torchattacks is never a dependency of vcex). "
        "Every figure on this page comes from the run below.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {cpu_model()}, nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}"
        f" (interop {torch.get_num_interop_threads()}), no GPU; niceness {state.data.get('niceness', 0)}, load "
        f"average {state.data.get('load_average_at_start')} at the start and {state.data.get('load_average_at_end')}"
        " at the end (1, 5, 15 min; the machine is shared, so timings include contention)",
        f"- Versions: torchattacks {version}, vcex {vcex.__version__}, torch {torch.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}",
        f"- Data: the first {args.n} images of vcex's fixed MNIST test split; target = the classifier's runner-up "
        "class on the original image, fixed before any method runs.",
        "- Models: the zoo's `mnist-cnn` (explained; it takes [0, 1] images and normalises internally, so PGD "
        "works in [0, 1] pixel space), `mnist-vae` (vcex's CounterfactualAttack only), `mnist-oracle` and a 5-NN "
        "on the training images (evaluation only), `mnist-im-ae` (IM1).",
        "- PGD: `torchattacks.PGD(model, eps, alpha, steps, random_start=True)` with "
        "`set_mode_targeted_by_label()`, so it minimises the cross-entropy to the target class with signed "
        f"gradient steps of size α, projected onto the L-inf ball of radius ε and onto [0, 1]. α = ε × "
        f"{args.alpha_ratio:g}; all images in one batch; the random start is seeded ({args.seed}). PGD has no early "
        "stop and no distance term: every image gets all steps and the final iterate is its counterfactual. The "
        "last row at torchattacks' own defaults (ε 8/255 ≈ 0.031, α 2/255, 10 steps).",
        VCEX_ROWS_NOTE,
    ]


TABLE_HEADER = [
    "method", "p > 0.998 ↑", "argmax = target ↑", "mean p(target)", "oracle agreement ↑", "kNN agreement ↑",
    "L1 ↓", "L2 ↓", "L-inf ↓", "IM1 ↓", "ms / CF", "ms / valid CF", "classifier passes / CF",
]  # fmt: skip


def _results_table(rows: list[Row], metrics: dict) -> list[str]:
    """One table row per configuration that has metrics, in the order of ``rows``."""
    cells = []
    for row in rows:
        m = metrics.get(row.key)
        if m is None:
            continue
        realism = m.get("realism") or {}
        cells.append([
            row.label, pct(m["validity"]), pct(m["argmax_validity"]), num(m["mean_target_prob"]),
            pct(m["oracle_agreement"]), pct(m["knn_agreement"]), num(m["l1"], 4), num(m["l2"]), num(m["linf"]),
            num(realism.get("im1")), f"{1000 * m['seconds_per_cf']:.2f}", per_valid_ms(m, 2), passes_cell(m),
        ])  # fmt: skip
    return markdown_table(TABLE_HEADER, cells)


COLUMN_NOTES = (
    "p > 0.998: the target probability on the counterfactual passes vcex's default threshold (vcex's "
    "`validity`). argmax = target: the explained classifier's top class is the target. Oracle / kNN "
    "agreement: share of counterfactuals an independent network / a 5-nearest-neighbour classifier on the "
    "training images also assigns to the target (all counterfactuals, valid or not). L1: mean absolute pixel "
    "change; L2: Euclidean norm of the change; L-inf: largest single-pixel change (means over images). IM1 < 1: "
    "the counterfactual is reconstructed better by its target class's autoencoder than by its original "
    "class's. ms / CF: wall time of the whole call over all images (for PGD: the attack plus one forward pass "
    "to check the result), divided by their number; ms / valid CF: the same wall time divided by the number "
    "of valid (p > 0.998) counterfactuals. Classifier passes / CF: forward and backward passes of "
    "`mnist-cnn` per image (PGD: its steps, plus the check; vcex's CounterfactualAttack also runs the VAE's "
    "decoder forward and backward each step, which this column does not count)."
)


# ---- main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--eps", type=float, nargs="+", default=list(DEFAULT_EPS), help="L-inf budgets (default 0.1 0.2 0.3)"
    )
    parser.add_argument("--alpha-ratio", type=float, default=0.1, help="PGD step size α as a share of ε (0.1)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="PGD steps per budget (default 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--n", type=int, default=200, help="test images to explain (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of PGD's random start (default 0)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="Markdown report (default docs/benchmarks/peers-pgd.md)"
    )
    parser.add_argument(
        "--work-dir", default=None, help="results.json and counterfactuals; default: vcex's cache dir + peers/pgd/n<n>"
    )
    args = parser.parse_args()
    if args.n < 1 or args.steps < 1 or any(eps <= 0 for eps in args.eps):
        parser.error("--n and --steps must be >= 1 and every --eps > 0")
    torch.set_num_threads(args.threads)
    command = command_line(ROOT)

    from vcex.cache import cache_dir
    from vcex.explainers.amortized import parameter_fingerprint

    bench, images, targets = mnist_task(args.n, parser.error)
    work_dir = Path(args.work_dir) if args.work_dir else cache_dir() / "peers" / "pgd" / f"n{args.n}"
    identity = {
        "n": args.n,
        "seed": args.seed,
        "threshold": THRESHOLD,
        "classifier": parameter_fingerprint(bench.classifier),
        "latent_model": parameter_fingerprint(bench.latent_model),
        "images_and_targets": fingerprint(images, targets),
    }
    state = State(work_dir, identity)
    state.begin_run(command=command, threads=torch.get_num_threads())
    state.write()
    log(f"work dir {work_dir}; {args.n} images, targets fixed (runner-up class)")

    rows = build_rows(args)
    run_rows(bench, images, targets, rows, state, args.seed)
    state.end_run()
    metrics = evaluate_rows(bench, rows, state)
    for row in rows:
        m = metrics[row.key]
        log(
            f"{row.key}: p>{THRESHOLD} {m['validity']:.3f}, argmax {m['argmax_validity']:.3f}, "
            f"oracle {m['oracle_agreement']:.3f}, kNN {m['knn_agreement']:.3f}, L1 {m['l1']:.4f}, "
            f"L-inf {m['linf']:.3f}, {1000 * m['seconds_per_cf']:.2f} ms/CF"
        )
    out = Path(args.out)
    record = write_report(out, render(rows, metrics, state, command, args), state)
    log(f"wrote {out}, {record} and {state.path}")


if __name__ == "__main__":
    main()
