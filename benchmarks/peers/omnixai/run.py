"""Peer benchmark: OmniXAI's vision CounterfactualExplainer vs vcex on MNIST.

OmniXAI (Salesforce) ships a counterfactual explainer for image classifiers,
``omnixai.explainers.vision.CounterfactualExplainer``: Wachter et al.'s (2018) pixel-space optimisation,
a hinge loss on the model's outputs with margin ``kappa`` plus an L1 distance, a binary search on the
hinge weight ``c``, and per image the closest (L1) iterate that changed the model's decision. It takes
no target class: it moves each image away from its predicted class, toward whichever class comes first.

This script runs it two ways on vcex's ``mnist-cnn``, on the same MNIST test images and targets as the
other peers (the classifier's runner-up class, fixed before anything runs), scored by the same
``vcex.pipeline.evaluate_result``:

- as shipped (untargeted), scored against the runner-up targets;
- targeted, through OmniXAI's own algorithm unchanged, by handing it the classifier wrapped as a
  two-output "rest vs. target" model whose decision flips exactly when p(target) passes vcex's threshold
  0.998 (outputs: logsumexp of the other logits + log(0.998 / 0.002), and the target's logit).

vcex's CounterfactualAttack and PixelAttack run in the same process as reference rows.

Runs inside its own virtual environment (OmniXAI needs numpy<1.24 and scikit-learn<1.2), made by
``setup.sh`` beside this file:

    bash benchmarks/peers/omnixai/setup.sh
    benchmarks/peers/.venvs/omnixai/bin/python benchmarks/peers/omnixai/run.py --threads 1

Resume-safe: OmniXAI explains image by image, so its rows are saved in chunks of ``--chunk`` images to
``--work-dir`` as they finish; finished rows and chunks are reused by a rerun with the same settings.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

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
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "peers-omnixai.md"

THRESHOLD = 0.998  # vcex's default confidence threshold (its `validity`)
# omnixai.explainers.vision.CounterfactualExplainer's defaults (omnixai 1.3.1)
OMNIXAI_DEFAULTS = {
    "c": 10.0,
    "kappa": 10.0,
    "binary_search_steps": 5,
    "learning_rate": 1e-2,
    "num_iterations": 100,
    "grad_clip": 1e3,
}


# ---- the classifier as OmniXAI sees it -------------------------------------------------------------------


class CountingModel(nn.Module):
    """mnist-cnn's logits, counting the classifier passes OmniXAI spends (one image per call)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.forward_passes = 0
        self.backward_passes = 0

    def count(self, images: torch.Tensor) -> None:
        self.forward_passes += 1
        if torch.is_grad_enabled() and images.requires_grad:  # OmniXAI's gradient step differentiates this call
            self.backward_passes += 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.count(images)
        return self.classifier(images)


class RestVsTarget(CountingModel):
    """Two outputs (rest, target): the target wins exactly when p(target) > ``threshold``.

    With logits l, p(target) > θ  <=>  l_target > logsumexp_{k != target} l_k + log(θ / (1 - θ)). OmniXAI
    moves an image away from its predicted output (here "rest", since the runner-up is below θ) and keeps
    the closest iterate whose decision flipped, i.e. a targeted counterfactual at vcex's threshold.
    """

    def __init__(self, classifier: nn.Module, threshold: float) -> None:
        super().__init__(classifier)
        self.margin = math.log(threshold / (1 - threshold))
        self.target = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.count(images)
        logits = self.classifier(images)
        chosen = torch.zeros_like(logits, dtype=torch.bool)
        chosen[:, self.target] = True
        rest = logits.masked_fill(chosen, float("-inf")).logsumexp(1) + self.margin
        return torch.stack([rest, logits[:, self.target]], dim=1)


def preprocess(images) -> torch.Tensor:
    """OmniXAI ``Image`` (N, H, W, C) in [0, 1] -> the classifier's (N, C, H, W) float tensor."""
    return torch.tensor(images.to_numpy(hwc=False, keepdim=True), dtype=torch.float32)


# ---- state on disk ---------------------------------------------------------------------------------------


# ---- the rows --------------------------------------------------------------------------------------------

ROWS = (
    ("omnixai-untargeted", "OmniXAI CounterfactualExplainer as shipped (untargeted), defaults", "omnixai"),
    (
        "omnixai-targeted",
        "OmniXAI CounterfactualExplainer, defaults, on mnist-cnn wrapped as rest vs. target at p > 0.998",
        "omnixai",
    ),
    ("vcex-attack", "vcex CounterfactualAttack, defaults (latent, mnist-vae)", "attack"),
    ("vcex-pixel", "vcex PixelAttack, defaults (pixels)", "pixel"),
)


def omnixai_chunk(bench, images: torch.Tensor, targets: torch.Tensor, targeted: bool):
    """OmniXAI's explainer on a chunk of images, one image per call, as a vcex CounterfactualResult."""
    from omnixai.data.image import Image
    from omnixai.explainers.vision import CounterfactualExplainer

    from vcex.explainers import CounterfactualResult

    classifier = bench.classifier.eval()
    model = RestVsTarget(classifier, THRESHOLD) if targeted else CountingModel(classifier)
    explainer = CounterfactualExplainer(model=model, preprocess_function=preprocess, **OMNIXAI_DEFAULTS)
    pixels = images.permute(0, 2, 3, 1).numpy()  # OmniXAI's Image is channel-last
    counterfactuals, found, forward_passes, backward_passes = [], [], [], []
    started = time.perf_counter()
    for i in range(len(images)):
        if targeted:
            model.target = int(targets[i])
        before_forward, before_backward = model.forward_passes, model.backward_passes
        # omnixai 1.3.1 reads its verbosity from a keyword named "kwargs" (default True: a progress bar)
        explanation = explainer.explain(Image(pixels[i : i + 1], batched=True, channel_last=True), kwargs=False)
        cf = explanation.get_explanations(0)["cf"]
        found.append(cf is not None)
        # no solution: OmniXAI returns None and no iterate; the original stands in (an invalid counterfactual)
        counterfactuals.append(
            images[i] if cf is None else torch.as_tensor(cf, dtype=torch.float32).reshape(images[i].shape)
        )
        forward_passes.append(model.forward_passes - before_forward)
        backward_passes.append(model.backward_passes - before_backward)
    cf = torch.stack(counterfactuals)
    with torch.no_grad():  # the check that says which counterfactuals are valid, timed with the explainer
        cf_probs = classifier(cf).softmax(1)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        original_probs = classifier(images).softmax(1)
    target_prob = cf_probs.gather(1, targets[:, None])[:, 0]
    return CounterfactualResult(
        method="omnixai-ce-targeted" if targeted else "omnixai-ce",
        originals=images,
        counterfactuals=cf,
        target=targets,
        original_class=original_probs.argmax(1),
        original_prob=original_probs.gather(1, targets[:, None])[:, 0],
        target_prob=target_prob,
        success=target_prob > THRESHOLD,
        # OmniXAI does not report its iterations; the classifier's backward passes are one per iteration
        steps=torch.tensor(backward_passes, dtype=torch.long),
        forward_passes=torch.tensor(forward_passes, dtype=torch.long) + 1,  # + the check above
        backward_passes=torch.tensor(backward_passes, dtype=torch.long),
        seconds=seconds,
        threshold=THRESHOLD,
        settings={**OMNIXAI_DEFAULTS, "targeted": targeted, "found": [bool(f) for f in found]},
    )


def run_rows(bench, images, targets, state: State, chunk: int) -> None:
    from vcex.explainers import CounterfactualResult
    from vcex.pipeline import build_explainer

    for key, _label, kind in ROWS:
        path = state.dir / f"{key}.safetensors"
        if state.stage(key) is not None and path.is_file():
            log(f"{key}: reusing the run from {state.stage(key)['finished']}")
            continue
        log(f"{key}: explaining {len(images)} images")
        if kind == "omnixai":
            parts = []
            for start in range(0, len(images), chunk):
                part_path = state.dir / key / f"{start:06d}-{chunk}.safetensors"
                if part_path.is_file():
                    parts.append(CounterfactualResult.load(part_path))
                    continue
                part = omnixai_chunk(
                    bench, images[start : start + chunk], targets[start : start + chunk], key == "omnixai-targeted"
                )
                part.save(part_path)
                parts.append(part)
                done = start + len(part)
                log(f"{key}: {done}/{len(images)} images, {part.seconds / len(part):.2f} s per image in this chunk")
            found = [f for p in parts for f in p.settings["found"]]
            result = CounterfactualResult.concatenate(parts, seconds=sum(p.seconds for p in parts))
            result.settings = {**parts[0].settings, "found": found}
        else:
            result = build_explainer(kind, bench).explain(images, target=targets)
        result.save(path)
        state.finish(key, {"seconds": round(result.seconds, 4), "result": path.name})
        log(f"{key}: {result.seconds:.2f} s, validity {result.validity:.3f}")


# ---- evaluation and report -------------------------------------------------------------------------------


def evaluate_rows(bench, state: State) -> dict:
    from vcex.evaluation import predict_labels
    from vcex.explainers import CounterfactualResult
    from vcex.pipeline import evaluate_result

    metrics = {}
    for key, _label, _kind in ROWS:
        path = state.dir / f"{key}.safetensors"
        if not path.is_file():
            continue
        result = CounterfactualResult.load(path)
        record = evaluate_result(result, bench)
        labels = predict_labels(bench.classifier, result.counterfactuals)
        delta = (result.counterfactuals - result.originals).flatten(1)
        record["linf"] = round(float(delta.abs().amax(1).mean()), 6)
        record["argmax_validity"] = round(float((labels == result.target).float().mean()), 6)
        record["flipped"] = round(float((labels != result.original_class).float().mean()), 6)
        found = result.settings.get("found")
        record["found"] = None if found is None else round(float(np.mean(found)), 6)
        record["n_valid"] = int(result.success.sum())
        record["seconds"] = result.seconds
        metrics[key] = record
    state.data["metrics"] = metrics
    state.write()
    return metrics


def render(metrics: dict, state: State, command: str, args) -> str:
    """The Markdown page: how the run was made, the table, what its columns mean."""
    lines = [*_page_intro(state, command, args), "", f"## MNIST, {args.n} test images, target = runner-up", ""]
    lines += _results_table(metrics)
    lines += ["", COLUMN_NOTES]
    lines += resumed_note(state.data["stages"])
    return "\n".join(lines) + "\n"


def _page_intro(state: State, command: str, args) -> list[str]:
    import vcex

    d = OMNIXAI_DEFAULTS
    return [
        "# Peer benchmark: OmniXAI vision CounterfactualExplainer vs vcex (MNIST)",
        "",
        "Generated by `benchmarks/peers/omnixai/run.py` in its own virtual environment "
        "(`benchmarks/peers/omnixai/setup.sh`; OmniXAI is never a dependency of vcex). "
        "Every figure on this page comes from the run below.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {cpu_model()}, nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}"
        f" (interop {torch.get_num_interop_threads()}), no GPU; niceness {state.data.get('niceness', 0)}, load "
        f"average {state.data.get('load_average_at_start')} at the start and {state.data.get('load_average_at_end')}"
        " at the end (1, 5, 15 min; the machine is shared, so timings include contention)",
        f"- Versions: omnixai {importlib.metadata.version('omnixai')}, vcex {vcex.__version__}, torch "
        f"{torch.__version__}, numpy {np.__version__}, scikit-learn {importlib.metadata.version('scikit-learn')}, "
        f"Python {platform.python_version()}. OmniXAI pins numpy < 1.24 and scikit-learn < 1.2, below vcex's own "
        "floors (numpy >= 1.24, scikit-learn >= 1.3), so vcex is installed here without its dependency check "
        "(`pip install --no-deps -e .`); the parts of vcex this benchmark uses run on these versions.",
        f"- Data: the first {args.n} images of vcex's fixed MNIST test split; target = the classifier's runner-up "
        "class on the original image, fixed before any method runs.",
        "- Models: the zoo's `mnist-cnn` (explained; it takes [0, 1] images and normalises internally, and "
        "OmniXAI gets its logits), `mnist-vae` (vcex's CounterfactualAttack only), `mnist-oracle` and a 5-NN on "
        "the training images (evaluation only), `mnist-im-ae` (IM1).",
        "- OmniXAI: `omnixai.explainers.vision.CounterfactualExplainer(model, preprocess_function, ...)` at its "
        f"defaults (c {d['c']:g}, kappa {d['kappa']:g}, binary_search_steps {d['binary_search_steps']}, "
        f"learning_rate {d['learning_rate']:g}, num_iterations {d['num_iterations']}, grad_clip {d['grad_clip']:g}); "
        "`explain` is called on one image at a time (it loops over images internally anyway). Its pixel bounds "
        "are each image's own min and max (OmniXAI's choice). Where OmniXAI finds no counterfactual it returns "
        "None; the original image then stands in (an invalid counterfactual), and `found` gives the share it "
        "returned one.",
        "  - *as shipped*: OmniXAI has no target argument; it pushes the predicted class's logit below the best "
        "other logit and keeps the closest (L1) iterate where the decision flipped. Scored against the "
        "runner-up targets like every other row.",
        "  - *rest vs. target*: the same explainer and settings, handed `mnist-cnn` wrapped as a two-output model "
        "(logsumexp of the non-target logits + log(0.998 / 0.002), the target's logit), whose decision flips "
        "exactly when p(target) > 0.998. OmniXAI's algorithm is unchanged; only the model it sees is, which "
        "makes it targeted at vcex's threshold.",
        VCEX_ROWS_NOTE,
    ]


TABLE_HEADER = [
    "method", "found", "p > 0.998 ↑", "argmax = target ↑", "class changed", "mean p(target)", "oracle agreement ↑",
    "kNN agreement ↑", "L1 ↓", "L2 ↓", "L-inf ↓", "IM1 ↓", "ms / CF", "ms / valid CF", "classifier passes / CF",
]  # fmt: skip


def _results_table(metrics: dict) -> list[str]:
    """One table row per entry of ROWS that has metrics."""
    cells = []
    for key, label, _kind in ROWS:
        m = metrics.get(key)
        if m is None:
            continue
        realism = m.get("realism") or {}
        cells.append([
            label, pct(m["found"]), pct(m["validity"]), pct(m["argmax_validity"]), pct(m["flipped"]),
            num(m["mean_target_prob"]), pct(m["oracle_agreement"]), pct(m["knn_agreement"]), num(m["l1"], 4),
            num(m["l2"]), num(m["linf"]), num(realism.get("im1")), f"{1000 * m['seconds_per_cf']:.1f}",
            per_valid_ms(m), passes_cell(m),
        ])  # fmt: skip
    return markdown_table(TABLE_HEADER, cells)


COLUMN_NOTES = (
    "found: share of images OmniXAI returned a counterfactual for (– for vcex, which always returns its last "
    "iterate). p > 0.998: the target probability on the counterfactual passes vcex's default threshold "
    "(vcex's `validity`). argmax = target: the explained classifier's top class is the target. class "
    "changed: its top class differs from the original's. Oracle / kNN agreement: share of counterfactuals an "
    "independent network / a 5-nearest-neighbour classifier on the training images assigns to the target "
    "(all counterfactuals, valid or not). L1: mean absolute pixel change; L2: Euclidean norm of the change; "
    "L-inf: largest single-pixel change (means over images). IM1 < 1: the counterfactual is reconstructed "
    "better by its target class's autoencoder than by its original class's. ms / CF: wall time of the whole "
    "run over all images (OmniXAI: its explain calls plus one forward pass to check the results), divided by "
    "their number; ms / valid CF: the same wall time divided by the number of valid (p > 0.998) "
    "counterfactuals. Classifier passes / CF: forward and backward passes of `mnist-cnn` per image (OmniXAI: "
    "counted by the wrapper it is handed, plus the check; vcex's CounterfactualAttack also runs the VAE's "
    "decoder forward and backward each step, which this column does not count)."
)


# ---- main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--n", type=int, default=200, help="test images to explain (default 200)")
    parser.add_argument("--chunk", type=int, default=20, help="OmniXAI images per saved chunk (default 20)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="Markdown report (default docs/benchmarks/peers-omnixai.md)"
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="results.json and counterfactuals; default: vcex's cache dir + peers/omnixai/n<n>",
    )
    args = parser.parse_args()
    if args.n < 1 or args.chunk < 1:
        parser.error("--n and --chunk must be >= 1")
    torch.set_num_threads(args.threads)
    # omnixai 1.3.1 imports pkg_resources at import time, which setuptools deprecates loudly
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    command = command_line(ROOT)

    from vcex.cache import cache_dir
    from vcex.explainers.amortized import parameter_fingerprint

    bench, images, targets = mnist_task(args.n, parser.error)
    work_dir = Path(args.work_dir) if args.work_dir else cache_dir() / "peers" / "omnixai" / f"n{args.n}"
    identity = {
        "n": args.n,
        "threshold": THRESHOLD,
        "omnixai": {**OMNIXAI_DEFAULTS, "version": importlib.metadata.version("omnixai")},
        "classifier": parameter_fingerprint(bench.classifier),
        "latent_model": parameter_fingerprint(bench.latent_model),
        "images_and_targets": fingerprint(images, targets),
    }
    state = State(work_dir, identity)
    state.begin_run(command=command, threads=torch.get_num_threads())
    state.write()
    log(f"work dir {work_dir}; {args.n} images, targets fixed (runner-up class)")

    run_rows(bench, images, targets, state, args.chunk)
    state.end_run()
    metrics = evaluate_rows(bench, state)
    for key, _label, _kind in ROWS:
        m = metrics[key]
        log(
            f"{key}: p>{THRESHOLD} {m['validity']:.3f}, argmax {m['argmax_validity']:.3f}, "
            f"oracle {m['oracle_agreement']:.3f}, kNN {m['knn_agreement']:.3f}, L1 {m['l1']:.4f}, "
            f"{1000 * m['seconds_per_cf']:.1f} ms/CF"
        )
    out = Path(args.out)
    record = write_report(out, render(metrics, state, command, args), state)
    log(f"wrote {out}, {record} and {state.path}")


if __name__ == "__main__":
    main()
