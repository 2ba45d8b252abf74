"""Image grids and signed difference maps as PIL images (no torchvision needed)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from vcex.errors import InputError


def to_rgb(image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) in [0, 1] with C in {1, 3} -> (3, H, W)."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise InputError(f"expected an image of shape (1 or 3, H, W), got {tuple(image.shape)}")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) with C in {1, 3}, floats in [0, 1] (clamped) or uint8 in [0, 255] -> an RGB PIL image."""
    if image.dtype != torch.uint8:
        image = (image.detach().float().cpu().clamp(0, 1) * 255).round().byte()
    return Image.fromarray(to_rgb(image.cpu()).permute(1, 2, 0).contiguous().numpy())


def signed_difference(original: torch.Tensor, counterfactual: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Diverging map of counterfactual - original, channel-averaged: red where it brightens, blue
    where it darkens, white where nothing changed. Returns (3, H, W) in [0, 1]."""
    delta = (counterfactual - original).mean(0)
    scale = scale or float(delta.abs().max().clamp_min(1e-6))
    positive = (delta / scale).clamp(0, 1)
    negative = (-delta / scale).clamp(0, 1)
    red = 1 - negative
    green = 1 - positive - negative
    blue = 1 - positive
    return torch.stack([red, green, blue]).clamp(0, 1)


def grid_image(
    rows: list[list[torch.Tensor]],
    zoom: int = 3,
    pad: int = 2,
    row_labels: list[str] | None = None,
    column_labels: list[str] | None = None,
    captions: list[list[str]] | None = None,
) -> Image.Image:
    """Lay out rows of (C, H, W) images in [0, 1] as one RGB picture, optionally labelled
    (a label per row, per column, or a caption under every image)."""
    if not rows or not rows[0]:
        raise InputError("grid_image needs at least one row with one image")
    height, width = rows[0][0].shape[-2:]
    cell_w = width * zoom + pad
    wrapped = [[_wrap(text, max(4, cell_w // 6)) for text in row] for row in captions or []]
    caption_h = 11 * max((len(lines) for row in wrapped for lines in row), default=0)
    cell_h = height * zoom + pad + caption_h
    left = 8 * max((len(label) for label in row_labels), default=0) + 6 if row_labels else 0
    top = 14 if column_labels else 0
    columns = max(len(row) for row in rows)
    canvas = Image.new("RGB", (left + columns * cell_w + pad, top + len(rows) * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(column_labels or []):
        draw.text((left + c * cell_w + pad, 1), label, fill="black")
    for r, row in enumerate(rows):
        if row_labels:
            draw.text((2, top + r * cell_h + cell_h // 2 - 5), row_labels[r], fill="black")
        for c, image in enumerate(row):
            tile = to_pil(image).resize((width * zoom, height * zoom), Image.NEAREST)
            canvas.paste(tile, (left + c * cell_w + pad, top + r * cell_h + pad))
            if r < len(wrapped) and c < len(wrapped[r]):
                for k, line in enumerate(wrapped[r][c]):
                    below = top + r * cell_h + pad + height * zoom + 11 * k
                    draw.text((left + c * cell_w + pad, below), line, fill="black")
    return canvas


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` to ``path`` as PNG, atomically (vcex.records.atomic_path)."""
    from vcex.records import atomic_path

    path = Path(path)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return path


def png_bytes(image: Image.Image) -> bytes:
    """A picture as the bytes of a PNG file (for a data URI, or an HTTP response)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_uri(image: Image.Image) -> str:
    """Embed a picture in HTML without a separate file."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()
