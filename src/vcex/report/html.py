"""The HTML report: one generator for every dataset and method."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vcex.explainers.result import CounterfactualResult
from vcex.records import write_text_atomic
from vcex.report.images import grid_image, png_data_uri, signed_difference

if TYPE_CHECKING:
    from vcex.attribution import LocalAttribution

# what reads the descriptors, by vcex global / explain --reader (resolved): attributions records and the report's text
READER_NAMES = {"latent": "latent probes", "images": "image readers"}
TOP_CHANGES = 3  # descriptor changes listed under each example of report.html (vcex serve shows up to 12)

METRIC_COLUMNS = [
    ("validity", "validity ↑"),
    ("oracle_agreement", "oracle agreement ↑"),
    ("knn_agreement", "kNN agreement ↑"),
    ("identity_preservation", "identity ↑"),
    ("identity_preservation_pixels", "identity (pixels) ↑"),
    ("diversity", "diversity"),
    ("l1", "L1 ↓"),
    ("l2", "L2 ↓"),
    ("latent_distance", "latent dist. ↓"),
    ("realism.im1", "IM1 ↓"),
    ("realism.im2", "IM2 ↓"),
    ("mnac", "MNAC ↓"),
    ("mean_steps", "steps"),
    ("passes_per_cf", "passes / CF"),
    ("seconds_per_cf", "s / CF"),
]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.example { display: inline-block; margin: 0.4em; vertical-align: top; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
.changes { color: #444; }
"""


def _lookup(metrics: dict, dotted: str) -> object:
    value: object = metrics
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _format(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def metrics_table(rows: list[dict]) -> str:
    """An HTML table with one row per method; columns no row has a value for (MNAC off faces) are left out."""
    columns = [(key, label) for key, label in METRIC_COLUMNS if any(_lookup(m, key) is not None for m in rows)]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        f"<tr><td>{html.escape(str(m.get('method')))}</td>"
        + "".join(f"<td>{_format(_lookup(m, key))}</td>" for key, _ in columns)
        + "</tr>"
        for m in rows
    )
    return f"<table><tr><th>method</th>{head}</tr>{body}</table>"


def threshold_notes(metrics: list[dict], class_names: list[str] | None = None) -> str:
    """Which threshold each method's run used, per class where there are several, and why (its settings' reason)."""
    items = []
    for m in metrics:
        threshold = m.get("threshold")
        if isinstance(threshold, (list, tuple)):
            names = class_names or [str(c) for c in range(len(threshold))]
            text = ", ".join(f"{name} {float(t):.3f}" for name, t in zip(names, threshold))
        else:
            text = "none" if threshold is None else f"{float(threshold):g}"
        reason = (m.get("settings") or {}).get("threshold_reason")
        why = f" ({html.escape(reason)})" if reason else ""
        items.append(f"<li><b>{html.escape(str(m.get('method')))}</b>: {html.escape(text)}{why}</li>")
    return f"<ul>{''.join(items)}</ul>"


def example_strip(
    result: CounterfactualResult, index: int, class_names: list[str] | None = None, changes: list[dict] | None = None
) -> str:
    """original | reconstruction | counterfactual | signed difference, with the probabilities and, where given,
    the counterfactual's top ``changes`` (``{"name", "change", "rank"}``, :meth:`LocalAttribution.ranked`)."""
    original, counterfactual = result.originals[index], result.counterfactuals[index]
    tiles = [original]
    labels = ["original"]
    if result.reconstructions is not None:
        tiles.append(result.reconstructions[index])
        labels.append("reconstruction")
    tiles += [counterfactual, signed_difference(original, counterfactual)]
    labels += ["counterfactual", "difference"]
    picture = grid_image([tiles], zoom=4, column_labels=labels)

    def name(k: int) -> str:
        return class_names[k] if class_names else str(k)

    source, target = int(result.original_class[index]), int(result.target[index])
    verdict = "reached" if bool(result.success[index]) else "not reached"
    caption = (
        f"{name(source)} → {name(target)}: p(target) {float(result.original_prob[index]):.3f} → "
        f"{float(result.target_prob[index]):.3f} ({verdict}, {int(result.steps[index])} steps)"
    )
    listed = f'<br><span class="changes">{attribution_text(changes)}</span>' if changes is not None else ""
    return f'<div class="example"><img src="{png_data_uri(picture)}"><br>{html.escape(caption)}{listed}</div>'


def attribution_text(changes: list[dict]) -> str:
    """One counterfactual's ranked changes as HTML: ``1. smile +0.40, 2. beard −0.10``."""
    if not changes:
        return "no usable descriptor changes"
    return ", ".join(
        f"{row['rank']}. {html.escape(str(row['name']))} {row['change']:+.2f}".replace("-", "−") for row in changes
    )


def _signed(value: float) -> str:
    """A signed number with a typographic minus (a descriptor's name keeps its own hyphens)."""
    return f"{value:+.2f}".replace("-", "−")


def global_section(record: dict | None, note: str = "", top_k: int = TOP_CHANGES) -> str:
    """The report's global explanation: a row per explanation of a global.json ``record`` (per target class, or
    per classifier side) with its ``top_k`` descriptors, S and the bootstrap interval; ``note`` under it."""
    if record is None and not note:
        return ""
    paragraph = f'<p class="note">{html.escape(note)}</p>' if note else ""
    if record is None:
        return f"<h2>Global explanation</h2>{paragraph}"
    rows = []
    for label, explanation in record["classes"].items():
        by_name = {row["name"]: row for row in explanation["descriptors"]}
        cells = [
            f"{html.escape(name)} {_signed(by_name[name]['score'])} "
            f"[{_signed(by_name[name]['ci_low'])}, {_signed(by_name[name]['ci_high'])}]"
            for name in explanation["ranking"][:top_k]
        ]
        cells += [""] * (top_k - len(cells))
        # per target class (label "target k"): the row is the class the counterfactuals move towards
        shown = f"→ {label}" if str(explanation.get("label") or "").startswith("target ") else str(label)
        rows.append(
            f"<tr><td>{html.escape(shown)}</td><td>{explanation['n']}</td>"
            + "".join(f"<td>{cell or '–'}</td>" for cell in cells)
            + "</tr>"
        )
    header = "".join(f"<th>{k + 1}.</th>" for k in range(top_k))
    table = f"<table><tr><th>explained</th><th>counterfactuals</th>{header}</tr>{''.join(rows)}</table>"
    confidence = max((explanation["confidence"] for explanation in record["classes"].values()), default=0.95)
    intro = (
        f"Which descriptors ({record.get('descriptors')}) the counterfactuals change on average, read by "
        f"{READER_NAMES.get(record.get('reader'), 'readers')}: S = the mean change towards the explained class, with "
        f"its {confidence:.0%} bootstrap interval. Readers that do not beat chance on held-out images are not ranked."
    )
    return f'<h2>Global explanation</h2><p class="note">{html.escape(intro)}</p>{table}{paragraph}'


def method_comparison(results: list[CounterfactualResult], count: int) -> str:
    """The same images across methods, side by side: a row per image, a column per method."""
    rows = []
    for i in range(min(count, len(results[0]))):
        rows.append([results[0].originals[i]] + [r.counterfactuals[i] for r in results])
    picture = grid_image(rows, zoom=3, column_labels=["original"] + [r.method for r in results])
    return f'<img src="{png_data_uri(picture)}">'


def write_report(
    path: str | Path,
    title: str,
    metrics: list[dict],
    results: list[CounterfactualResult],
    class_names: list[str] | None = None,
    examples: int = 8,
    notes: str = "",
    attributions: LocalAttribution | None = None,
    attribution_note: str = "",
    top_k: int = TOP_CHANGES,
    global_record: dict | None = None,
    global_note: str = "",
) -> Path:
    """Write a self-contained HTML report: metrics table, per-image strips of the first result,
    and a side-by-side grid of every method on the same images. ``attributions``: the first result's local
    attributions (at least its first ``examples`` rows), each strip then lists its top ``top_k`` changes;
    ``attribution_note``: a paragraph on them (what read them, or why there are none). ``global_record``: a
    global.json record (:func:`vcex.pipeline.run_global`), shown as each explanation's top ``top_k``
    descriptors; ``global_note``: a paragraph under them (where the whole explanation is, or why there is none)."""
    path = Path(path)
    shown = min(examples, len(results[0]))
    changes = attributions.select(torch.arange(shown)).ranked(top_k) if attributions is not None else [None] * shown
    strips = "".join(example_strip(results[0], i, class_names, changes[i]) for i in range(shown))
    comparison = method_comparison(results, examples) if len(results) > 1 else ""
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">{notes}</p>
<h2>Metrics</h2>{metrics_table(metrics)}
<p class="note">Validity: share whose counterfactual passes the threshold for the explained classifier.
Oracle / kNN agreement: share that an independent network / a k-nearest-neighbour classifier on
training images also assigns the target class (adversarial noise rarely fools the kNN).
Identity: share of counterfactuals whose nearest original of this run (in the oracle's features) is their own
(chance 1/n). Diversity: counterfactuals' spread per target class over real images' spread; near 0 means one
template per class, which both agreements can rate highly. Identity (pixels): the same in pixel space, where
a template still shows (in the oracle's features every convincing change sits near chance).
IM1 below 1: the counterfactual looks more like its new class than its old one.
MNAC (faces): how many binary attributes besides the label's own an independent attribute oracle reads
differently after the change; 0 is a change of the label alone.</p>
<h2>Thresholds</h2>{threshold_notes(metrics, class_names)}
<h2>{html.escape(results[0].method)}: examples</h2>
{f'<p class="note">{html.escape(attribution_note)}</p>' if attribution_note else ""}{strips}
{global_section(global_record, global_note, top_k)}
{"<h2>All methods on the same images</h2>" + comparison if comparison else ""}
</body></html>"""
    return write_text_atomic(path, document)


def result_grid(result: CounterfactualResult, count: int = 16) -> object:
    """original | counterfactual | difference rows for the first ``count`` images (a PIL image)."""
    rows = [
        [
            result.originals[i],
            result.counterfactuals[i],
            signed_difference(result.originals[i], result.counterfactuals[i]),
        ]
        for i in range(min(count, len(result)))
    ]
    return grid_image(rows, zoom=3, column_labels=["original", "counterfactual", "difference"])
