"""The amortized explainer's fitting recipe with and without the identity term, on a shortened fit.

Fits ``AmortizedCounterfactual`` on the first ``n_train`` training images for ``epochs`` epochs once per identity
weight, explains the first 200 test images toward the explained classifier's runner-up class (the benchmark's
task) and prints validity, oracle and kNN agreement, identity preservation, diversity and L1; with ``--json``
also writes them there. A full Fashion-MNIST fit (60,000 images, 30 epochs) takes about an hour on one CPU
thread; this shortened fit compares recipes in minutes.

    python benchmarks/amortized_identity_trial.py fashion --epochs 10 --n-train 10000 --weights 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vcex.evaluation import agreement, identity_metrics, l1_distance, predict_labels
from vcex.explainers import AmortizedCounterfactual
from vcex.explainers.base import resolve_targets
from vcex.models.classifiers import predict_proba
from vcex.pipeline import AMORTIZED_FIT, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="mnist | fashion")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n", type=int, default=200, help="test images explained")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0], help="identity weights to fit")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench = prepare(args.dataset, progress=False)
    images = bench.test.images[: args.n]
    targets = resolve_targets("second", predict_proba(bench.classifier, images, 256))
    features, reference = bench.features(), bench.diversity_reference()
    with torch.no_grad():
        original_features = features(images)
    fit = {**AMORTIZED_FIT, "epochs": args.epochs}
    rows = []
    for weight in args.weights:
        started = time.perf_counter()
        explainer = AmortizedCounterfactual(bench.classifier, bench.latent_model, identity_weight=weight)
        explainer.fit(bench.train.images[: args.n_train], **fit, progress=False)
        result = explainer.explain(images, target=targets)
        with torch.no_grad():
            identity = identity_metrics(original_features, features(result.counterfactuals), targets, reference)
        row = {
            "identity_weight": weight,
            "validity": round(result.validity, 4),
            "oracle_agreement": round(
                float(agreement(predict_labels(bench.oracle, result.counterfactuals), targets).mean()), 4
            ),
            "knn_agreement": round(
                float(agreement(predict_labels(bench.knn, result.counterfactuals), targets).mean()), 4
            ),
            "identity_preservation": identity["identity_preservation"],
            "diversity": identity["diversity"],
            "l1": round(float(l1_distance(images, result.counterfactuals).mean()), 4),
            "fit_seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        record = {"dataset": bench.dataset, "n": args.n, "n_train": args.n_train, "fit": fit, "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
