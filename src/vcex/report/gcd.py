"""The GCD page (``vcex gcd``): the directions found, their transfer curves (flip rate against |alpha|) as inline
SVG, example counterfactuals along each direction, and BB-LIG maps beside the white-box ones."""

from __future__ import annotations

import html
from pathlib import Path

import torch

from vcex.report.html import _STYLE, _format
from vcex.report.images import grid_image, png_data_uri, signed_difference

CURVE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def flip_curve_svg(curves: dict[str, tuple[list[float], list[float]]], width: int = 420, height: int = 260) -> str:
    """An SVG line chart: per direction name, flip rate (y, 0..1) against the largest |alpha| allowed (x)."""
    left, bottom, top, right = 44, 34, 12, 110
    plot_w, plot_h = width - left - right, height - top - bottom
    x_max = max((max(xs) for xs, _ in curves.values() if xs), default=1.0) or 1.0

    def point(x: float, y: float) -> str:
        return f"{left + plot_w * x / x_max:.1f},{top + plot_h * (1 - y):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#888"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    for tick in range(int(x_max) + 1):
        x = left + plot_w * tick / x_max
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">|alpha| allowed</text>')
    parts.append(
        f'<text x="12" y="{top + plot_h / 2:.1f}" transform="rotate(-90 12 {top + plot_h / 2:.1f})" '
        'text-anchor="middle">flip rate</text>'
    )
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        colour = CURVE_COLOURS[i % len(CURVE_COLOURS)]
        line = " ".join(point(x, y) for x, y in zip(xs, ys))
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        y = top + 14 * (i + 1)
        parts.append(
            f'<line x1="{width - right + 10}" y1="{y - 4}" x2="{width - right + 26}" y2="{y - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{width - right + 30}" y="{y}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def attribution_images(maps: torch.Tensor) -> list[torch.Tensor]:
    """Signed maps (N, H, W) as diverging images (3, H, W): red where raising the pixel raises f, blue where it
    lowers it, each map on its own scale."""
    return [signed_difference(torch.zeros(1, *m.shape), m[None]) for m in maps]


def _table(rows: list[dict], keys: list[str]) -> str:
    head = "".join(f"<th>{html.escape(key.replace('_', ' '))}</th>" for key in keys)
    body = "".join("<tr>" + "".join(f"<td>{_format(row.get(key))}</td>" for key in keys) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _selection(record: dict) -> str:
    """How the source was chosen, where it was chosen by validation (``vcex gcd --source-candidates``)."""
    chosen = record.get("source_selection")
    if not chosen:
        return ""
    rule = chosen.get("rule", "flips")
    cost = "pixel distance" if rule.startswith("closest") else "descriptor change"
    how = "by its g0's flip rate" if rule == "flips" else f"by its g0's flip rate and the rule {rule} ({cost})"
    return (
        f", chosen among {len(chosen['candidates'])} candidates {how} on "
        f"{chosen['validation_images']} validation images ({chosen['chosen_validation_flip_rate']:.2f}; median "
        f"{chosen['median_validation_flip_rate']:.2f})"
    )


def _descriptors(direction: dict) -> str:
    """A direction's largest mean descriptor changes ("smiling +0.31, ..."), or why there are none."""
    found = direction.get("descriptors") or {}
    if "top" not in found:
        return found.get("reason", "-")
    read = {"images": " (read from the images)", "latent": " (read by latent probes)"}.get(found.get("reader"), "")
    return ", ".join(f"{item['name']} {item['change']:+.2f}" for item in found["top"][:3]) + read


def write_gcd_page(
    path: str | Path,
    record: dict,
    examples: dict[str, tuple[torch.Tensor, torch.Tensor]],
    lig: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
) -> Path:
    """Write the self-contained page of a ``vcex gcd`` run.

    Args:
        record: the run's JSON record (``directions``: per name its transfer summary and curve; ``proxy``...).
        examples: per direction name, (originals (n, C, H, W), counterfactuals (n, C, H, W)) of its transfer.
        lig: (path starts (n, C, H, W), BB-LIG maps (n, H, W), white-box maps (n, H, W) or None), or None.
    """
    path = Path(path)
    title = f"GCD: {record['classifier']} on {record['dataset']} ({record['latent_model']})"
    curves = {name: (d["curve"]["alpha"], d["curve"]["flip_rate"]) for name, d in record["directions"].items()}
    rows = [
        {"direction": name, **{k: v for k, v in d.items() if k != "curve"}, "top_descriptors": _descriptors(d)}
        for name, d in record["directions"].items()
    ]
    keys = [
        "direction", "eligible", "flip_rate", "alpha_abs_quantiles_10_50_90", "flips_nothing", "queries_per_image",
        "top_descriptors",
    ]  # fmt: skip
    figures = ""
    for name, (originals, counterfactuals) in examples.items():
        picture = grid_image([list(originals), list(counterfactuals)], row_labels=["original", f"along {name}"])
        figures += f'<div class="example"><img src="{png_data_uri(picture)}" alt="{html.escape(name)}"></div>'
    lig_html = "<p>not computed</p>"
    if lig is not None:
        starts, black, white = lig
        grid = [list(starts), attribution_images(black)]
        labels = ["reconstruction", "BB-LIG"]
        if white is not None:
            grid.append(attribution_images(white))
            labels.append("white-box LIG")
        picture = grid_image(grid, row_labels=labels)
        lig_html = f'<div class="example"><img src="{png_data_uri(picture)}" alt="BB-LIG maps"></div>'
        lig_html += _table([record["bblig"]], list(record["bblig"]))
    proxy = record["proxy"]
    document = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">Directions found from test image {record["source_index"]} (class {record["source_class"]} to
{record["goal_class"]}){_selection(record)} with {record["discovery_queries"]} black-box queries in
{record["discovery_seconds"]:.0f} s.
Proxy held-out R<sup>2</sup> of the logits: {_format(proxy["logit_r2"])}
({"used" if proxy["usable"] else "NOT used: below " + _format(proxy["min_r2"])}).
Alpha is in units of the latent's spread ({record["unit"]:.3g}).</p>
<h2>Transfer to {record["n"]} test images</h2>{_table(rows, keys)}
{flip_curve_svg(curves)}
<h2>Examples along each direction (smallest flipping |alpha|)</h2>{figures}
<h2>BB-LIG along g0</h2>{lig_html}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document, encoding="utf-8")
    return path
