"""``vcex demo``: end to end on one dataset: train or load the models, explain with the registry's demo methods,
write report.html, the image grids and metrics.json."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vcex.cli.options import FOLDER_HELP, add_common, add_dataset, add_n, add_out, positive_count, say


def add_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="end to end on the embedded MNIST: train or load, explain, report")
    add_out(demo, "output folder (report.html, metrics, grids)", default="vcex-demo")
    add_dataset(demo, f"mnist (default, embedded) | fashion | faces | {FOLDER_HELP}")
    # 100: every demo method explains them, and the demo should finish in about a minute on a CPU
    add_n(demo, 100, "test images to explain per method (default 100)")
    demo.add_argument("--examples", type=positive_count, default=8, help="images shown in the report (default 8)")
    add_common(demo)
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.explainers.registry import DEMO_METHODS
    from vcex.pipeline import build_explainer, evaluate_result, prepare, write_outputs
    from vcex.records import write_json
    from vcex.report import write_report

    started = time.perf_counter()
    out = Path(args.out)
    bench = prepare(args.dataset, progress=not args.quiet, classifier=args.classifier)
    images = bench.test.images[: args.n]
    results, metrics = [], []
    for method in DEMO_METHODS:
        explainer = build_explainer(method, bench, progress=not args.quiet)
        result = explainer.explain(images, target="second")
        record = evaluate_result(result, bench, device=str(explainer.device))
        write_outputs(out / method, result, record, explainer)
        results.append(result)
        metrics.append(record)
        mnac = f"  MNAC {record['mnac']:.2f}" if record.get("mnac") is not None else ""
        say(
            args,
            f"{method:7s} validity {record['validity']:.2f}  oracle {record['oracle_agreement']:.2f}  "
            f"kNN {record['knn_agreement']:.2f}  L1 {record['l1']:.3f}{mnac}  "
            f"{record['seconds_per_cf'] * 1e3:.1f} ms/CF",
        )
    write_json(out / "metrics.json", metrics)
    notes = (
        f"{bench.dataset}: {args.n} test images, target = the classifier's runner-up class. Classifier "
        f"test accuracy {bench.classifier.training_record.get('test_accuracy')}; oracle "
        f"{bench.oracle.training_record.get('test_accuracy')}. Total time {time.perf_counter() - started:.1f} s."
    )
    report = write_report(
        out / "report.html",
        f"vcex demo: counterfactuals on {bench.dataset}",
        metrics,
        results,
        class_names=bench.test.class_names,
        examples=args.examples,
        notes=notes,
    )
    say(args, f"wrote {report} in {time.perf_counter() - started:.1f} s")
