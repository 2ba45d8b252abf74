"""Shape, range and dtype checks used once at the public edge; the inner code trusts its inputs."""

from __future__ import annotations

import math
import numbers

import torch

from vcex.errors import InputError


def check_images(
    images: torch.Tensor,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    name: str = "images",
    tolerance: float = 1e-4,
) -> torch.Tensor:
    """Validate a batch of images and return it as a float32 tensor.

    Args:
        images: (N, C, H, W) tensor. A single (C, H, W) image is refused rather than guessed at.
        channels: expected C, if fixed.
        size: expected (H, W), if fixed.
        value_range: the range the model expects; values outside it (beyond ``tolerance``) are refused.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        hint = " (add a batch dimension with images.unsqueeze(0))" if images.dim() == 3 else ""
        raise InputError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}{hint}")
    if images.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (N=0); pass at least one image")
    if channels is not None and images.shape[1] != channels:
        raise InputError(
            f"{name} must have {channels} channel(s), got {images.shape[1]} in shape {tuple(images.shape)}"
        )
    if size is not None and tuple(images.shape[-2:]) != tuple(size):
        raise InputError(
            f"{name} must be {size[0]}x{size[1]} pixels, got {images.shape[-2]}x{images.shape[-1]}; "
            "resize them to the model's input size"
        )
    if images.dtype == torch.uint8:
        raise InputError(f"{name} are uint8; convert to float in [0, 1] with images.float() / 255")
    if not images.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {images.dtype}")
    images = images.float()
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = (~finite.flatten(1).all(1)).nonzero().flatten().tolist()
        raise InputError(f"{name} contain NaN or inf values (images {short_list(bad)})")
    low, high = value_range
    lo_seen, hi_seen = float(images.min()), float(images.max())
    if lo_seen < low - tolerance or hi_seen > high + tolerance:
        hint = " (divide by 255?)" if hi_seen > 1.5 and high <= 1.0 else ""
        raise InputError(f"{name} must lie in [{low}, {high}], got values in [{lo_seen:.3g}, {hi_seen:.3g}]{hint}")
    return images


def short_list(indices: list, limit: int = 8) -> str:
    """Format a list of indices (or names) for an error message, truncated after ``limit`` items."""
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")


def device_of(model: object) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters)."""
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return torch.device("cpu")


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, refused unless torch knows its kind and, for CUDA, sees a CUDA device."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:1, mps ...") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {parsed} was asked for, but torch sees no CUDA device here; use cpu")
    return parsed


def check_positive_finite(name: str, value: object) -> float:
    """``value`` as a float, refused unless it is a finite number > 0 (a learning rate, a step size)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):  # a tensor of more than one value
        raise InputError(f"{name} must be a positive finite number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{name} must be a positive finite number (e.g. 0.01), got {number}")
    return number


def check_count(name: str, value: object, minimum: int = 0) -> int:
    """``value`` as an int, refused unless it is a whole number >= ``minimum`` (steps, epochs, a batch size)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {int(value)}")
    return int(value)
