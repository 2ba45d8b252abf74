"""``vcex demo``: end to end on one dataset: train or load the models, explain with the registry's demo methods
(each method's folder an ordinary ``vcex explain`` run, with its attributions), the global explanation of the
first method's counterfactuals, and one report.html over all of them with metrics.json and the image grids."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vcex.cli.options import FOLDER_HELP, add_common, add_dataset, add_n, add_out, positive_count, say

if TYPE_CHECKING:
    from vcex.pipeline import Workbench


def add_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="end to end on the embedded MNIST: explain with four methods, attributions, global explanation"
    )
    add_out(demo, "output folder (report.html, metrics, one folder per method, global/)", default="vcex-demo")
    add_dataset(demo, f"mnist (default, embedded) | fashion | faces | {FOLDER_HELP}")
    # 100: every demo method explains them, and the demo should finish in about a minute on a CPU
    add_n(demo, 100, "test images to explain per method (default 100)")
    demo.add_argument("--examples", type=positive_count, default=8, help="images shown in the report (default 8)")
    demo.add_argument(
        "--attributions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read each counterfactual's descriptor changes (stroke thickness, slant...; smile, beard...) and, from "
        "the attack's, the global explanation (global/: which descriptors drive each class), as vcex explain and "
        "vcex global do (default on; the readers are fitted once per dataset and cached: MNIST a few seconds, faces "
        "about 2 minutes, Fashion-MNIST about 2 minutes on one CPU thread; --no-attributions: none)",
    )
    add_common(demo)
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from vcex.explainers.registry import DEMO_METHODS
    from vcex.pipeline import attribution_note, prepare, read_run_attributions, run_explain
    from vcex.records import write_json
    from vcex.report import write_report

    started = time.perf_counter()
    out = Path(args.out)
    bench = prepare(args.dataset, progress=not args.quiet, classifier=args.classifier)
    n = min(args.n, len(bench.test))
    results, metrics = [], []
    for method in DEMO_METHODS:
        # each method's folder is a vcex explain run: resumable, and readable by vcex report, serve and global
        result, record = run_explain(
            bench, method, n, "second", out / method, progress=not args.quiet, attributions=args.attributions
        )
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
    first = DEMO_METHODS[0]
    local = read_run_attributions(out / first, metrics[0]["fingerprint"], rows=slice(0, args.examples))
    global_record, global_note = demo_global(args, bench, out, first, n)
    notes = (
        f"{bench.dataset}: {n} test images, target = the classifier's runner-up class. Classifier "
        f"test accuracy {bench.classifier.training_record.get('test_accuracy')}; oracle "
        f"{bench.oracle.training_record.get('test_accuracy')}. Each method's run, with every counterfactual and "
        f"its attributions, is in its own folder ({', '.join(DEMO_METHODS)}; vcex serve shows them). "
        f"Total time {time.perf_counter() - started:.1f} s."
    )
    report = write_report(
        out / "report.html",
        f"vcex demo: counterfactuals on {bench.dataset}",
        metrics,
        results,
        class_names=bench.test.class_names,
        examples=args.examples,
        notes=notes,
        attributions=local,
        attribution_note=attribution_note(metrics[0].get("attributions"), local),
        global_record=global_record,
        global_note=global_note,
    )
    say(args, f"wrote {report} in {time.perf_counter() - started:.1f} s")


def demo_global(args: argparse.Namespace, bench: Workbench, out: Path, method: str, n: int) -> tuple[dict | None, str]:
    """The global explanation of ``method``'s counterfactuals (its run in ``out/method``), written into
    ``out/global`` by :func:`vcex.pipeline.run_global`: its record and the report's line on it, or None and why
    there is none (attributions turned off, a dataset without descriptors, descriptors no reader fits)."""
    from vcex.errors import InputError
    from vcex.pipeline import no_descriptors_reason, run_global

    if not args.attributions:
        return None, "No global explanation: turned off (--no-attributions)."
    problem = no_descriptors_reason(bench.dataset)
    if problem is not None:
        return None, f"No global explanation: no descriptors (vcex {problem})."
    try:
        record = run_global(bench, n, out / "global", progress=not args.quiet, from_run=out / method)
    except InputError as error:  # a folder's descriptors that no reader can be fitted to: the demo stands without
        return None, f"No global explanation: {error}"
    for label, explanation in record["classes"].items():
        towards = "→ " if str(explanation.get("label") or "").startswith("target ") else ""
        say(args, f"global  {towards}{label}: {', '.join(explanation['ranking'][:3]) or 'no usable descriptor'}")
    return record, "The whole explanation, a chart per row and every reader's held-out accuracy: global/global.html."
