"""Peer benchmark: alibi's CounterfactualProto (TensorFlow) vs vcex on MNIST.

alibi's ``CounterfactualProto`` (Van Looveren & Klaise, 2021) searches pixel space with FISTA for an
elastic-net-regularised counterfactual: a hinge on the classifier's probabilities (margin ``kappa``), an
L1 + L2 distance to the original, and a prototype term ``theta * ||x - proto||^2`` that pulls the image
toward a prototype of the target class. Here the prototypes come from per-class k-d trees on vcex's
4,000 MNIST training images (``use_kdtree=True``), since vcex's autoencoders are torch models. It runs
on TensorFlow 1-style graphs (eager execution off) and takes one image per call.

The classifier it explains is a Keras copy of vcex's ``mnist-cnn`` carrying the *same trained weights*
(copied from torch, not retrained): the same architecture with the classifier's input normalisation as
its first layer, channels-last, ending in a softmax (CounterfactualProto's loss works on probabilities).
Before anything runs, the script checks that the Keras and torch logits agree on the benchmark images
and aborts otherwise. Both sides therefore explain the identical function, and CounterfactualProto's
counterfactuals are scored with the torch classifier by the same ``vcex.pipeline.evaluate_result`` as
vcex's CounterfactualAttack and PixelAttack, which run in the same process on the same images and
targets (the classifier's runner-up class, fixed before anything runs).

Runs inside its own virtual environment (TensorFlow 2.14, alibi 0.9.6, numpy < 2), made by ``setup.sh``:

    bash benchmarks/peers/alibi_proto/setup.sh
    OMP_NUM_THREADS=1 benchmarks/peers/.venvs/proto/bin/python benchmarks/peers/alibi_proto/run.py --threads 1

Resume-safe: CounterfactualProto explains image by image, so its rows are saved in chunks of ``--chunk``
images to ``--work-dir`` as they finish; finished rows and chunks are reused by a rerun with the same
settings and models.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import sys
import time
import warnings
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
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "peers-cfproto.md"

THRESHOLD = 0.998  # vcex's default confidence threshold (its `validity`)
LOGIT_TOLERANCE = 1e-3  # largest |Keras logit - torch logit| accepted before anything runs
PIXELS = 28 * 28  # the Keras copy takes flattened MNIST images (see keras_copy)

# CounterfactualProto's settings. From alibi's MNIST example (cfproto_mnist): c_init 1, c_steps 2,
# max_iterations 1000; from the k-d tree example of alibi's CFProto method page: use_kdtree, theta 10,
# k 2 (the prototype is the 2nd-nearest training image of the target class). feature_range is our
# images' [0, 1] (the example's images lie in [-0.5, 0.5]). gamma 0: no autoencoder term (the example's
# Keras autoencoder is not used; our autoencoders are torch models). The rest are alibi's defaults
# (beta 0.1, learning_rate_init 1e-2, clip (-1000, 1000)).
CFPROTO = {
    "kappa": 0.0,
    "use_kdtree": True,
    "theta": 10.0,
    "gamma": 0.0,
    "beta": 0.1,
    "c_init": 1.0,
    "c_steps": 2,
    "max_iterations": 1000,
    "learning_rate_init": 1e-2,
    "clip": (-1000.0, 1000.0),
    "feature_range": (0.0, 1.0),
    "k": 2,
}
# kappa for the high-confidence row. CounterfactualProto's hinge is max(0, p_orig - max_{i != orig} p_i
# + kappa) on the probabilities (orig: the class predicted on the original), and it accepts an iterate
# only when its top class is in target_class (here [target]) and beats p_orig by more than kappa. So
# success means p_target > p_orig + kappa >= kappa: with kappa 0.998 success implies p_target > 0.998,
# vcex's threshold; any smaller kappa leaves room below it (p_orig can be ~0). Its c_init is 100, not the
# example's 1: with c 1 and then 10 the hinge on saturated probabilities never pushed p_target past 0.998 in
# a 5-image check (no counterfactual found), and 100 keeps the cost (2 c steps of max_iterations).
HIGH_KAPPA = {"kappa": THRESHOLD, "c_init": 100.0}


class Row:
    def __init__(self, key: str, label: str, kind: str, overrides: dict | None = None) -> None:
        self.key, self.label, self.kind = key, label, kind
        self.settings = {**CFPROTO, **(overrides or {})} if kind == "cfproto" else None


ROWS = (
    Row("cfproto", "alibi CounterfactualProto, MNIST-example settings, kappa 0 (k-d tree prototypes)", "cfproto"),
    Row(
        "cfproto-kappa",
        f"alibi CounterfactualProto, kappa {HIGH_KAPPA['kappa']:g} (success implies p > {THRESHOLD:g}), "
        f"c_init {HIGH_KAPPA['c_init']:g}",
        "cfproto",
        HIGH_KAPPA,
    ),
    Row("vcex-attack", "vcex CounterfactualAttack, defaults (latent, mnist-vae)", "attack"),
    Row("vcex-pixel", "vcex PixelAttack, defaults (pixels)", "pixel"),
)


# ---- TensorFlow and the Keras copy of mnist-cnn ----------------------------------------------------------


def start_tensorflow(threads: int):
    """Import TensorFlow in graph mode (CounterfactualProto needs TF1 behaviour) on ``threads`` threads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("alibi").setLevel(logging.ERROR)  # "No counterfactual found!" is counted, not logged
    tf.compat.v1.disable_eager_execution()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
    # CounterfactualProto runs in the Keras backend's session: make it one with these thread counts
    tf.compat.v1.keras.backend.set_session(tf.compat.v1.Session(config=config))
    return tf


def keras_copy(tf, classifier) -> tuple[object, object]:
    """The zoo's SmallCNN (and its Classifier's normalisation) in tf.keras, channels-last, with the torch
    weights copied in, on flattened [0, 1] images (N, 784). Returns (logits model, softmax model); both share
    the layers."""
    layers = tf.keras.layers
    network = classifier.network
    mean = float(classifier.mean.flatten()[0])
    std = float(classifier.std.flatten()[0])
    if classifier.mean.numel() != 1 or classifier.std.numel() != 1:
        raise SystemExit("the Keras copy assumes a single-channel normalisation (MNIST)")
    conv1, conv2 = network.features[0], network.features[3]
    dense1, dense2 = network.head[1], network.head[3]

    # flat input: alibi 0.9.6's k-d tree prototypes only work on (batch, features) data (it queries its
    # trees with the explained instance as given, and sklearn refuses a 4-d array), so the model takes the
    # 784 pixels in row-major order and restores the (28, 28, 1) image as its first step
    inputs = layers.Input(shape=(PIXELS,))
    x = layers.Reshape((28, 28, 1))(inputs)
    x = layers.Rescaling(scale=1.0 / std, offset=-mean / std, name="normalise")(x)  # (x - mean) / std
    x = layers.Conv2D(conv1.out_channels, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(conv2.out_channels, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2)(x)
    features = x
    x = layers.Flatten()(x)
    x = layers.Dense(dense1.out_features, activation="relu", name="fc1")(x)
    logits = layers.Dense(dense2.out_features, name="fc2")(x)
    probabilities = layers.Softmax()(logits)
    logits_model = tf.keras.Model(inputs, logits)
    softmax_model = tf.keras.Model(inputs, probabilities)

    def kernel(conv) -> np.ndarray:  # torch (out, in, kh, kw) -> Keras (kh, kw, in, out)
        return conv.weight.detach().permute(2, 3, 1, 0).numpy()

    # torch flattens (C, H, W), Keras (H, W, C): reorder fc1's input rows to Keras' order
    height, width, channels = (int(s) for s in features.shape[1:])
    fc1 = dense1.weight.detach().reshape(dense1.out_features, channels, height, width)
    fc1 = fc1.permute(2, 3, 1, 0).reshape(height * width * channels, dense1.out_features).numpy()
    logits_model.get_layer("conv1").set_weights([kernel(conv1), conv1.bias.detach().numpy()])
    logits_model.get_layer("conv2").set_weights([kernel(conv2), conv2.bias.detach().numpy()])
    logits_model.get_layer("fc1").set_weights([fc1, dense1.bias.detach().numpy()])
    logits_model.get_layer("fc2").set_weights([dense2.weight.detach().T.numpy(), dense2.bias.detach().numpy()])
    return logits_model, softmax_model


def check_copy(logits_model, classifier, images: torch.Tensor) -> float:
    """Largest |Keras logit - torch logit| over ``images``; aborts above LOGIT_TOLERANCE."""
    with torch.no_grad():
        torch_logits = classifier(images).numpy()
    keras_logits = logits_model.predict(flat(images), batch_size=256, verbose=0)
    diff = float(np.abs(keras_logits - torch_logits).max())
    same_class = bool((keras_logits.argmax(1) == torch_logits.argmax(1)).all())
    if not diff < LOGIT_TOLERANCE or not same_class:
        raise SystemExit(
            f"the Keras copy of mnist-cnn disagrees with torch on the benchmark images: max |logit diff| {diff:.3g} "
            f"(tolerance {LOGIT_TOLERANCE:g}), same predicted class everywhere: {same_class}; nothing was run"
        )
    return diff


def flat(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) torch images -> the Keras copy's (N, 784) input (row-major pixels)."""
    return images.reshape(len(images), PIXELS).numpy()


# ---- CounterfactualProto ---------------------------------------------------------------------------------


def cfproto_passes(settings: dict, found: bool) -> tuple[int, int, int]:
    """(steps, forward, backward) classifier passes of one ``explain`` call with a Keras model, read off
    alibi 0.9.6's loop, which has no early stop: every one of c_steps x max_iterations iterations runs one
    forward + backward pass (the gradient, on the FISTA look-ahead) and one forward pass (the losses and
    probabilities of the new iterate); ``explain`` adds one forward pass on the original and, when it found
    a counterfactual, one on it."""
    steps = settings["c_steps"] * settings["max_iterations"]
    return steps, 2 * steps + 1 + int(found), steps


class ProtoExplainer:
    """One CounterfactualProto (graph built, k-d trees fitted) for the whole row in this process."""

    def __init__(self, softmax_model, train_images: torch.Tensor, settings: dict) -> None:
        from alibi.explainers import CounterfactualProto

        self.settings = settings
        started = time.perf_counter()
        options = {k: v for k, v in settings.items() if k != "k"}
        self.explainer = CounterfactualProto(softmax_model, (1, PIXELS), **options)
        self.explainer.fit(flat(train_images), trustscore_kwargs=None)
        self.fit_seconds = time.perf_counter() - started

    def explain(self, image: np.ndarray, target: int):
        return self.explainer.explain(image, target_class=[target], k=self.settings["k"])


def cfproto_chunk(explainer: ProtoExplainer, classifier, images: torch.Tensor, targets: torch.Tensor):
    """CounterfactualProto on a chunk of images, one per call, as a vcex CounterfactualResult."""
    from vcex.explainers import CounterfactualResult

    pixels = flat(images)
    counterfactuals, found, steps, forward, backward = [], [], [], [], []
    started = time.perf_counter()
    for i in range(len(images)):
        explanation = explainer.explain(pixels[i : i + 1], int(targets[i]))
        cf = explanation.cf
        found.append(cf is not None)
        # no counterfactual: alibi returns none; the original stands in (an invalid counterfactual)
        counterfactuals.append(
            images[i] if cf is None else torch.as_tensor(cf["X"], dtype=torch.float32).reshape(images[i].shape)
        )
        s, f, b = cfproto_passes(explainer.settings, cf is not None)
        steps.append(s)
        forward.append(f)
        backward.append(b)
    cf = torch.stack(counterfactuals)
    with torch.no_grad():  # the check that says which counterfactuals are valid (torch), timed with the rest
        cf_probs = classifier(cf).softmax(1)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        original_probs = classifier(images).softmax(1)
    target_prob = cf_probs.gather(1, targets[:, None])[:, 0]
    return CounterfactualResult(
        method="alibi-cfproto",
        originals=images,
        counterfactuals=cf,
        target=targets,
        original_class=original_probs.argmax(1),
        original_prob=original_probs.gather(1, targets[:, None])[:, 0],
        target_prob=target_prob,
        success=target_prob > THRESHOLD,
        steps=torch.tensor(steps, dtype=torch.long),
        forward_passes=torch.tensor(forward, dtype=torch.long) + 1,  # + the check above
        backward_passes=torch.tensor(backward, dtype=torch.long),
        seconds=seconds,
        threshold=THRESHOLD,
        settings={
            **explainer.settings,
            "found": [bool(f) for f in found],
            "fit_seconds": explainer.fit_seconds,
            "pid": os.getpid(),
        },
    )


def run_rows(bench, images, targets, state: State, chunk: int, softmax_model, rows) -> None:
    from vcex.explainers import CounterfactualResult
    from vcex.pipeline import build_explainer

    for row in rows:
        path = state.dir / f"{row.key}.safetensors"
        if state.stage(row.key) is not None and path.is_file():
            log(f"{row.key}: reusing the run from {state.stage(row.key)['finished']}")
            continue
        log(f"{row.key}: explaining {len(images)} images")
        if row.kind == "cfproto":
            explainer, parts = None, []
            for start in range(0, len(images), chunk):
                part_path = state.dir / row.key / f"{start:06d}-{chunk}.safetensors"
                if part_path.is_file():
                    parts.append(CounterfactualResult.load(part_path))
                    continue
                if explainer is None:
                    explainer = ProtoExplainer(softmax_model, bench.train.images, row.settings)
                    log(f"{row.key}: graph built and k-d trees fitted in {explainer.fit_seconds:.1f} s")
                part = cfproto_chunk(
                    explainer, bench.classifier, images[start : start + chunk], targets[start : start + chunk]
                )
                part.save(part_path)
                parts.append(part)
                found = sum(part.settings["found"])
                log(
                    f"{row.key}: {start + len(part)}/{len(images)} images, {part.seconds / len(part):.2f} s per image "
                    f"in this chunk, found {found}/{len(part)}, valid {int(part.success.sum())}/{len(part)}"
                )
            found = [f for p in parts for f in p.settings["found"]]
            result = CounterfactualResult.concatenate(parts, seconds=sum(p.seconds for p in parts))
            fits = {p.settings["pid"]: p.settings["fit_seconds"] for p in parts}
            result.settings = {**parts[0].settings, "found": found, "fit_seconds": list(fits.values())}
        else:
            result = build_explainer(row.kind, bench).explain(images, target=targets)
        result.save(path)
        state.finish(row.key, {"seconds": round(result.seconds, 4), "result": path.name})
        log(f"{row.key}: {result.seconds:.2f} s, validity {result.validity:.3f}")


# ---- evaluation and report -------------------------------------------------------------------------------


def evaluate_rows(bench, state: State, rows) -> dict:
    from vcex.evaluation import predict_labels
    from vcex.explainers import CounterfactualResult
    from vcex.pipeline import evaluate_result

    metrics = {}
    for row in rows:
        path = state.dir / f"{row.key}.safetensors"
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
        record["fit_seconds"] = result.settings.get("fit_seconds")
        record["n_valid"] = int(result.success.sum())
        record["seconds"] = result.seconds
        metrics[row.key] = record
    state.data["metrics"] = metrics
    state.write()
    return metrics


def render(metrics: dict, state: State, command: str, args, rows) -> str:
    """The Markdown page: how the run was made, CounterfactualProto's settings, the table, what it means."""
    lines = [*_page_intro(state, command, args), *_cfproto_settings(metrics), VCEX_ROWS_NOTE, ""]
    lines += [f"## MNIST, {args.n} test images, target = runner-up", "", *_results_table(metrics, rows)]
    lines += ["", COLUMN_NOTES]
    missing = [row.label for row in rows if row.key not in metrics]
    if missing:
        lines += ["", "Rows not run in this report: " + "; ".join(missing) + "."]
    lines += resumed_note(state.data["stages"])
    return "\n".join(lines) + "\n"


def _page_intro(state: State, command: str, args) -> list[str]:
    """Title, command, machine, versions, data, models and the Keras copy of the classifier."""
    import alibi
    import tensorflow as tf

    import vcex

    return [
        "# Peer benchmark: alibi CounterfactualProto (TensorFlow) vs vcex (MNIST)",
        "",
        "Generated by `benchmarks/peers/alibi_proto/run.py` in its own virtual environment "
        "(`benchmarks/peers/alibi_proto/setup.sh`; alibi and TensorFlow are never dependencies of vcex). "
        "Every figure on this page comes from the run below.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {cpu_model()}, nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}"
        f" (interop {torch.get_num_interop_threads()}), TensorFlow intra-op / inter-op threads {args.threads} / "
        f"{args.threads}, OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS', 'unset')}, no GPU; niceness "
        f"{state.data.get('niceness', 0)}, load average {state.data.get('load_average_at_start')} at the start and "
        f"{state.data.get('load_average_at_end')} at the end (1, 5, 15 min; the machine is shared, so timings "
        f"include contention); wall time of this process {state.data.get('wall_seconds', 0) / 60:.1f} min.",
        f"- Versions: alibi {alibi.__version__}, tensorflow-cpu {tf.__version__}, vcex {vcex.__version__}, torch "
        f"{torch.__version__}, numpy {np.__version__}, scikit-learn {importlib.metadata.version('scikit-learn')}, "
        f"Python {platform.python_version()}.",
        f"- Data: the first {args.n} images of vcex's fixed MNIST test split; target = the classifier's runner-up "
        "class on the original image, fixed before any method runs.",
        "- Models: the zoo's `mnist-cnn` (explained), `mnist-vae` (vcex's CounterfactualAttack only), `mnist-oracle` "
        "and a 5-NN on the training images (evaluation only), `mnist-im-ae` (IM1).",
        "- **The classifier CounterfactualProto explains is `mnist-cnn` itself, in Keras**: the same architecture "
        "(Conv32 3x3-ReLU-MaxPool2-Conv64 3x3-ReLU-MaxPool2-Flatten-FC128-ReLU-FC10), channels-last, with the "
        "classifier's input normalisation ((x - 0.1307) / 0.3081) as its first layer and a softmax at the end, "
        "carrying the trained torch weights copied over (conv kernels transposed to Keras' layout, FC128's input "
        "rows reordered from torch's channels-first flatten to Keras' channels-last flatten); nothing was "
        f"retrained. Checked before anything ran: the largest |Keras logit - torch logit| over the {args.n} "
        f"benchmark images is **{state.data['logit_max_abs_diff']:.2e}** (abort above {LOGIT_TOLERANCE:g}), and the "
        "predicted class agrees on every image. Both sides explain the same function, so CounterfactualProto's "
        "counterfactuals are scored with the torch classifier, like every other row. The Keras model takes the "
        "image flattened to 784 pixels and reshapes it to 28x28x1 as its first step: alibi 0.9.6's k-d tree "
        "prototypes work only on (batch, features) data (its search queries the trees with the instance as given, "
        "and scikit-learn rejects a 4-d array), so CounterfactualProto sees flat vectors; the function is the same.",
    ]


def _cfproto_settings(metrics: dict) -> list[str]:
    """CounterfactualProto's settings, what counts as its success, and its one-off fit time (from ``metrics``)."""
    p = CFPROTO
    k = HIGH_KAPPA["kappa"]
    iterations = p["c_steps"] * p["max_iterations"]
    fits = [s for m in metrics.values() for s in (m.get("fit_seconds") or [])]
    fit_text = ", ".join(f"{s:.1f}" for s in fits) if fits else "–"
    return [
        "- CounterfactualProto: `CounterfactualProto(keras_softmax_model, (1, 784), ...)` in TensorFlow graph "
        "mode (eager execution off, as alibi requires), `fit` on vcex's 4,000 MNIST training images (one k-d tree "
        "per class, grouped by the classifier's own predictions, as alibi does), then "
        "`explain(x, target_class=[target], k=2)` one image at a time. Settings: alibi's MNIST example "
        f"(`cfproto_mnist`): c_init {p['c_init']:g}, c_steps {p['c_steps']}, max_iterations {p['max_iterations']}; "
        f"the k-d tree example on alibi's CFProto page: use_kdtree, theta {p['theta']:g}, k {p['k']} (the prototype "
        "is the 2nd-nearest training image of the target class, in pixels). Differences from the example, and why: "
        "feature_range (0, 1), our images' range (the example scales MNIST to [-0.5, 0.5]); no autoencoder term "
        "(gamma 0) and k-d tree prototypes instead of an encoder, because our autoencoders are torch models "
        "(alibi's example can also use a Keras autoencoder and encoder; we did not train Keras ones). The rest at "
        f"alibi's defaults: beta {p['beta']:g} (L1 weight), learning_rate_init {p['learning_rate_init']:g}, clip "
        f"{p['clip']}. CounterfactualProto has no early stop: it runs all {iterations} iterations per image and "
        "returns the closest (elastic-net distance) iterate it accepted, or none.",
        "  - What counts as success for CounterfactualProto: its hinge is max(0, p(orig) - max_{i != orig} p(i) + "
        "kappa) on the probabilities (orig: the class predicted on the original), and it accepts an iterate only if "
        "its top class is in `target_class` (here the target) and beats p(orig) by more than kappa. With kappa 0 "
        "(the example) success means the decision flipped to the target at argmax, whatever its confidence. With "
        f"kappa {k:g} success means p(target) > p(orig) + {k:g}, which implies p(target) > {THRESHOLD:g} (vcex's "
        "threshold); a smaller kappa would not (p(orig) can be near 0). That row also starts the hinge weight at "
        f"c_init {HIGH_KAPPA['c_init']:g} instead of the example's {p['c_init']:g}: with c 1 and then 10, kappa "
        f"{k:g} gave no counterfactual at all for the first 5 test images in a short check before this run (the "
        "hinge acts on saturated probabilities), and with 2 c steps the cost per image is unchanged.",
        "  - Where it returns no counterfactual (`explanation.cf is None`) the original image stands in (an invalid "
        "counterfactual); `found` is the share it returned one.",
        f"  - One-off cost (not in ms / CF): building the graph and fitting the k-d trees took {fit_text} s per "
        "row and process.",
    ]


TABLE_HEADER = [
    "method", "found", "p > 0.998 ↑", "argmax = target ↑", "class changed", "mean p(target)", "oracle agreement ↑",
    "kNN agreement ↑", "L1 ↓", "L2 ↓", "L-inf ↓", "IM1 ↓", "ms / CF", "ms / valid CF", "classifier passes / CF",
]  # fmt: skip


def _results_table(metrics: dict, rows) -> list[str]:
    """One table row per entry of ``rows`` that has metrics."""
    cells = []
    for row in rows:
        m = metrics.get(row.key)
        if m is None:
            continue
        realism = m.get("realism") or {}
        cells.append([
            row.label, pct(m["found"]), pct(m["validity"]), pct(m["argmax_validity"]), pct(m["flipped"]),
            num(m["mean_target_prob"]), pct(m["oracle_agreement"]), pct(m["knn_agreement"]), num(m["l1"], 4),
            num(m["l2"]), num(m["linf"]), num(realism.get("im1")), f"{1000 * m['seconds_per_cf']:.1f}",
            per_valid_ms(m), passes_cell(m),
        ])  # fmt: skip
    return markdown_table(TABLE_HEADER, cells)


COLUMN_NOTES = (
    "found: share of images CounterfactualProto returned a counterfactual for (– for vcex, which always returns "
    "its last iterate). p > 0.998: the target probability on the counterfactual passes vcex's default threshold "
    "(vcex's `validity`). argmax = target: the explained classifier's top class is the target. class changed: "
    "its top class differs from the original's. Oracle / kNN agreement: share of counterfactuals an independent "
    "network / a 5-nearest-neighbour classifier on the training images assigns to the target (all "
    "counterfactuals, valid or not). L1: mean absolute pixel change; L2: Euclidean norm of the change; L-inf: "
    "largest single-pixel change (means over images). IM1 < 1: the counterfactual is reconstructed better by its "
    "target class's autoencoder than by its original class's. ms / CF: wall time of the whole run over all "
    "images (CounterfactualProto: its explain calls plus one torch forward pass to check the results; not the "
    "one-off graph building and k-d tree fit), divided by their number; ms / valid CF: the same wall time "
    "divided by the number of valid (p > 0.998) counterfactuals. Classifier passes / CF: forward and backward "
    "passes of `mnist-cnn` per image. For CounterfactualProto they are not counted at run time (the Keras model "
    "runs inside TensorFlow's graph) but read off alibi 0.9.6's loop, which has no early stop: per iteration one "
    "forward + backward pass and one forward pass, plus one forward pass on the original, one on the returned "
    "counterfactual and our check. vcex's CounterfactualAttack also runs the VAE's decoder forward and backward "
    "each step, which this column does not count."
)


# ---- main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch and TensorFlow threads (default 1)")
    parser.add_argument("--n", type=int, default=200, help="test images to explain (default 200)")
    parser.add_argument("--chunk", type=int, default=10, help="CounterfactualProto images per saved chunk (default 10)")
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=[row.key for row in ROWS],
        default=[row.key for row in ROWS],
        help="rows to run and report (default: all)",
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="Markdown report (default docs/benchmarks/peers-cfproto.md)"
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="results.json and counterfactuals; default: vcex's cache dir + peers/alibi-proto/n<n>",
    )
    args = parser.parse_args()
    if args.n < 1 or args.chunk < 1 or args.threads < 1:
        parser.error("--n, --chunk and --threads must be >= 1")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Keras' TF1 training loop (model.predict in graph mode) warns about its own internals on every call
    warnings.filterwarnings("ignore", message=".*state_updates.*", category=UserWarning)
    command = command_line(ROOT)
    rows = [row for row in ROWS if row.key in args.rows]

    tf = start_tensorflow(args.threads)
    import alibi

    from vcex.cache import cache_dir
    from vcex.explainers.amortized import parameter_fingerprint

    bench, images, targets = mnist_task(args.n, parser.error)
    bench.classifier.eval()
    logits_model, softmax_model = keras_copy(tf, bench.classifier)
    diff = check_copy(logits_model, bench.classifier, images)
    log(f"Keras copy of mnist-cnn: max |logit diff| vs torch {diff:.2e} on {args.n} images")

    work_dir = Path(args.work_dir) if args.work_dir else cache_dir() / "peers" / "alibi-proto" / f"n{args.n}"
    identity = {
        "n": args.n,
        "threshold": THRESHOLD,
        "cfproto": {row.key: row.settings for row in ROWS if row.settings is not None},
        "versions": {"alibi": alibi.__version__, "tensorflow": tf.__version__},
        "classifier": parameter_fingerprint(bench.classifier),
        "latent_model": parameter_fingerprint(bench.latent_model),
        "train_images": fingerprint(bench.train.images),
        "images_and_targets": fingerprint(images, targets),
    }
    state = State(work_dir, identity)
    state.begin_run(command=command, threads=args.threads)
    state.data["logit_max_abs_diff"] = diff
    state.write()
    log(f"work dir {work_dir}; {args.n} images, targets fixed (runner-up class)")

    run_rows(bench, images, targets, state, args.chunk, softmax_model, rows)
    state.end_run(wall_seconds=time.perf_counter() - started)
    metrics = evaluate_rows(bench, state, rows)
    for row in rows:
        m = metrics[row.key]
        log(
            f"{row.key}: found {pct(m['found'])}, p>{THRESHOLD} {m['validity']:.3f}, "
            f"argmax {m['argmax_validity']:.3f}, oracle {m['oracle_agreement']:.3f}, kNN {m['knn_agreement']:.3f}, "
            f"L1 {m['l1']:.4f}, {1000 * m['seconds_per_cf']:.1f} ms/CF"
        )
    out = Path(args.out)
    record = write_report(out, render(metrics, state, command, args, rows), state)
    log(f"wrote {out}, {record} and {state.path}")


if __name__ == "__main__":
    main()
