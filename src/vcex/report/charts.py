"""Ranked bar charts of global explanations, drawn with PIL (no plotting dependency)."""

from __future__ import annotations

from PIL import Image, ImageDraw

from vcex.errors import InputError


def ranked_bar_chart(rows: list[tuple[str, float, float, float]], title: str, width: int = 520) -> Image.Image:
    """Horizontal bars for ``(name, score, ci_low, ci_high)`` rows in the given order, with interval
    whiskers; positive scores to the right (blue), negative to the left (red)."""
    if not rows:
        raise InputError("ranked_bar_chart needs at least one row (no usable descriptor to show)")
    row_h, top, label_w = 18, 24, 110
    height = top + row_h * len(rows) + 20
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill="black")
    extent = max(max(abs(lo), abs(hi), abs(score)) for _, score, lo, hi in rows) or 1.0
    zero = label_w + (width - label_w - 10) // 2
    half = (width - label_w - 10) // 2 - 4

    def x_of(value: float) -> int:
        return int(zero + value / extent * half)

    for i, (name, score, low, high) in enumerate(rows):
        y = top + i * row_h
        draw.text((4, y + 3), name[:18], fill="black")
        colour = (60, 110, 200) if score >= 0 else (200, 70, 60)
        draw.rectangle([min(zero, x_of(score)), y + 3, max(zero, x_of(score)), y + row_h - 3], fill=colour)
        draw.line([x_of(low), y + row_h // 2, x_of(high), y + row_h // 2], fill="black")
        draw.text((width - 48, y + 3), f"{score:+.2f}", fill="black")
    draw.line([zero, top - 2, zero, height - 18], fill=(120, 120, 120))
    draw.text((label_w, height - 16), f"-{extent:.2f}", fill=(90, 90, 90))
    draw.text((width - 44, height - 16), f"+{extent:.2f}", fill=(90, 90, 90))
    return canvas
