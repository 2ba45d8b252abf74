"""The StyleSpace probe's page: purity per kind of coordinate, and the best channel per factor with its strips."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from vcex.report.html import _STYLE, _format
from vcex.report.images import grid_image, png_data_uri


def _kinds_table(kinds: dict) -> str:
    """One row per kind (conv, toRGB): coordinates, purity quantiles and the counts of pure channels."""
    head = "<tr><th>kind</th><th>coordinates</th><th>purity min / p10 / median / p90 / max</th>"
    counts = [key for key in next(iter(kinds.values())) if key.startswith("purity_at_least")]
    head += "".join(f"<th>{html.escape(key.replace('_', ' '))}</th>" for key in counts) + "</tr>"
    body = ""
    for kind, row in kinds.items():
        quantiles = " / ".join(f"{value:.2f}" for value in row["purity_quantiles"].values())
        body += f"<tr><td>{kind}</td><td>{row['coordinates']}</td><td>{quantiles}</td>"
        body += "".join(f"<td>{row[key]}</td>" for key in counts) + "</tr>"
    return f"<table>{head}{body}</table>"


def _best_table(best: dict) -> str:
    """Per factor, its best conv and toRGB coordinate: name, purity, flip share and the factor's mean shift."""
    head = "<tr><th>factor</th>" + "".join(
        f"<th>best {scope}</th><th>purity</th><th>flip share</th><th>shift -k / +k</th>" for scope in ("conv", "torgb")
    )
    body = ""
    for factor, scopes in best.items():
        body += f"<tr><td>{html.escape(factor)}</td>"
        for scope in ("conv", "torgb"):
            row = scopes.get(scope)
            if row is None:
                body += "<td>none</td><td>–</td><td>–</td><td>–</td>"
                continue
            shifts = f"{row['factor_shift_minus']:+.2f} / {row['factor_shift_plus']:+.2f}"
            body += (
                f"<td>{html.escape(row['coordinate'])}</td><td>{_format(row['purity'])}</td>"
                f"<td>{_format(row['flip_share'])}</td><td>{shifts}</td>"
            )
        body += "</tr>"
    return f"<table>{head}</tr>{body}</table>"


def _strip_figure(factor: str, row: dict, strip: torch.Tensor, k: float) -> str:
    """One best channel's strip (3, n, C, H, W): the unshifted decodes over their -k and +k shifts."""
    picture = grid_image([list(images) for images in strip], row_labels=["decode", f"-{k:g} std", f"+{k:g} std"])
    caption = (
        f"{html.escape(factor)}: {html.escape(row['coordinate'])} ({row['kind']}), purity {row['purity']:.2f}, "
        f"flip share {row['flip_share']:.2f}"
    )
    return f'<div class="example"><img src="{png_data_uri(picture)}" alt="{caption}"><br>{caption}</div>'


def write_probe_page(path: str | Path, record: dict, strips: dict[str, tuple[dict, torch.Tensor]]) -> Path:
    """Write the probe's self-contained HTML page from its JSON ``record`` (``summary``, ``k``, ``n``...) and
    ``strips``: factor -> (its best coordinate's table row, its strip (3, n, C, H, W))."""
    path = Path(path)
    summary = record["summary"]
    title = f"StyleSpace probe: {record['latent_model']} on {record['dataset']}"
    figures = "".join(_strip_figure(factor, row, strip, record["k"]) for factor, (row, strip) in strips.items())
    encoded = _encoding(record)
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">Every StyleSpace coordinate shifted by ±{record["k"]:g} standard deviations (over the
{record["n"]} {encoded} test images) on each image; the attribute oracle ({html.escape(record["attribute_oracle"])})
read before and after. Purity: the largest single attribute's share of the total absolute change in the oracle's
probabilities (1: one attribute alone; 1/{len(record["attribute_names"])}: all alike). Flip share: the share of
images whose reading of that attribute crosses 0.5 under either sign.</p>
<h2>Purity by kind of coordinate</h2>{_kinds_table(summary["kinds"])}
<h2>Best channel per factor</h2>{_best_table(summary["best_per_factor"])}
<p class="note">Best: among the coordinates that move the factor most, the largest purity × flip share.
Shift: the factor's mean change in probability under -k and +k.</p>
<h2>Strips of the best channel per factor</h2>{figures or "<p>none</p>"}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path


def _step_note(record: dict) -> str:
    """EigenFind's step along each direction (its alpha and unit), where the record has one."""
    if "alpha" not in record:
        return ""
    unit = {"std": "standard deviations of the projections", "w": "W units"}.get(record.get("alpha_unit"), "")
    return f" Each direction is stepped by alpha = {_format(record['alpha'])} {html.escape(unit)}."


def _strip_images(record: dict) -> str:
    """Which images the page's strips show, by method."""
    return {
        "attfind": "the images each attribute affects most",
        "direction": "the first test images outside the class",
    }.get(record.get("method"), "the first test images")


def _encoding(record: dict) -> str:
    """How the record's images were put into StyleSpace: "encoded", or "encoded and inverted (N steps)"."""
    steps = record.get("invert_steps", 0)
    return f"encoded and inverted ({steps} steps)" if steps else "encoded"


def write_attributes_page(
    path: str | Path, record: dict, strips: list[tuple[str, torch.Tensor, list[list[str]]]]
) -> Path:
    """Write AttFind's, EigenFind's or a StyleSpace direction's page from its JSON ``record`` (``method``,
    ``attributes`` per class...) and
    ``strips``: (caption, (2, n, C, H, W) decodes before/after, per image its caption)."""
    path = Path(path)
    title = f"{record['method']}: {record['classifier']} through {record['latent_model']}"
    tables = ""
    for target, rows in record["attributes"].items():
        keys = list(rows[0]) if rows else []
        head = "<tr>" + "".join(f"<th>{html.escape(key.replace('_', ' '))}</th>" for key in keys) + "</tr>"
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(_format(row[key])))}</td>" for key in keys) + "</tr>"
            for row in rows
        )
        extra = ""
        if "sufficiency" in record:
            extra = (
                f"<p>sufficiency (share flipped by the top-k together, k = 1..): {record['sufficiency'][target]}</p>"
            )
        if "explained_share" in record:
            extra = f"<p>share of images explained by the kept directions: {record['explained_share'][target]}</p>"
        if "whole_direction" in record:
            whole = record["whole_direction"][target]
            curve = ", ".join(f"{a:g}: {f:.2f}" for a, f in zip(whole["alphas"], whole["flip_share"]))
            extra = (
                f"<p>the whole direction (every coordinate at once) moves {html.escape(whole['factor'])} most "
                f"(purity {whole['purity']:.2f}); share of the images outside the class it flips, by alpha: "
                f"{html.escape(curve)}</p>"
            )
        tables += f"<h2>Toward class {html.escape(target)}</h2><table>{head}{body}</table>{extra}"
    for target, reason in record.get("unexplained", {}).items():
        tables += f"<h2>Toward class {html.escape(target)}</h2><p>{html.escape(reason)}</p>"
    figures = ""
    for caption, strip, captions in strips:
        picture = grid_image([list(images) for images in strip], row_labels=["before", "after"], captions=captions)
        figures += f'<div class="example"><img src="{png_data_uri(picture)}" alt="{html.escape(caption)}"><br>'
        figures += f"{html.escape(caption)}</div>"
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">{record["n"]} {_encoding(record)} test images. Each attribute is labelled with the factor the
attribute oracle ({html.escape(record["attribute_oracle"])}) says it moves most and its purity (that factor's share
of the total change of the oracle's readings). Strips: {_strip_images(record)}, before and after, with the
classifier's probability of the class.{_step_note(record)}</p>
{tables}
<h2>Strips</h2>{figures or "<p>none</p>"}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path
