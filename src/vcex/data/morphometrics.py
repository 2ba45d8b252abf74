"""Morpho-MNIST-style morphometrics of handwritten strokes, used as descriptors (attributes).

Follows the measurement procedure of Castro et al., "Morpho-MNIST: Quantitative Assessment and
Diagnostics for Representation Learning" (JMLR 2019); this is an independent implementation.

For each image (bright strokes on a dark background, as in MNIST and Fashion-MNIST):

1. upsample by ``scale`` (default 4) with separable bicubic interpolation (Keys kernel, a = -0.5);
2. binarise at 50 % of the original image's intensity range, ``min + 0.5 * (max - min)``;
3. measure on the binary high-resolution image and convert back to original pixels.

Measures (all ``float32``, lengths in *original* pixels):

``thickness``
    ``2 * mean(EDT on the skeleton) / scale``: twice the mean Euclidean distance transform sampled
    on the skeleton (``skimage.morphology.skeletonize``), i.e. the mean stroke diameter. The EDT
    is the distance to the nearest background pixel centre, so a stroke an odd number of
    high-resolution pixels wide reads ``1 / scale`` px too thick; even widths read exactly.
``length``
    Skeleton length ``/ scale``: 8-connected skeleton path, orthogonal steps count 1 and diagonal
    steps ``sqrt(2)``. A straight bar of length ``L`` and thickness ``t`` reads about ``L - t`` (the
    skeleton stops roughly ``t / 2`` short of each end); the short spurs a skeleton grows towards
    the corners of thick strokes add a little.
``slant``
    ``arctan(-mu11 / mu02)`` in radians, from the binary image's central moments with ``x`` the
    column and ``y`` the row (pointing down). **Positive = leaning right**: the top of the stroke
    lies to the right of its bottom, like ``/``; a vertical stroke is 0, ``\\`` is negative.
``width``, ``height``
    Extent of the shear-corrected bounding box (the bounding parallelogram at the measured slant)
    holding the central 98 % of the foreground mass (1 % dropped at each extreme), in pixels. Width
    is measured across the de-slanted columns ``x + tan(slant) * (y - y_mean)``, height along rows.
``area``
    Foreground pixel count of the binary high-resolution image ``/ scale**2``.
``intensity``
    Median original intensity (in [0, 1]) of the pixels of the original image at or above the
    binarisation threshold.

An image with no foreground (constant image, e.g. all zeros) gets NaN for every measure; callers
should drop or impute those rows (``torch.isnan``).

Limits: the threshold is relative to each image's own range, so an anti-aliased stroke under
~2 px wide whose brightest pixels are only partly covered (a 1.5 px bar centred on a pixel border
has two 75 % pixels) binarises to those whole pixels and reads ~2 px thick. Dark-on-light images
must be inverted (``1 - images``) first.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from skimage.morphology import skeletonize

from vcex.checks import check_images
from vcex.errors import InputError

MORPHOMETRIC_NAMES: tuple[str, ...] = (
    "thickness",
    "length",
    "slant",
    "width",
    "height",
    "area",
    "intensity",
)
"""Keys of the dict :func:`measure_morphometrics` returns, in order."""

_MASS_DROPPED = 0.02  # fraction of foreground mass left out of the width/height box (half per side)
_PARALLEL_MIN_IMAGES = 1000  # below this, ``workers=None`` stays in-process (pool start-up costs)
_CHUNK = 250  # images upsampled at once; also the task size sent to a worker process
_SQRT2 = float(np.sqrt(2.0))


def measure_morphometrics(images: torch.Tensor, scale: int = 4, workers: int | None = None) -> dict[str, torch.Tensor]:
    """Measure stroke morphometrics of a batch of grey-scale images.

    Args:
        images: (N, 1, H, W) float tensor in [0, 1], bright strokes on a dark background.
        scale: integer upsampling factor before binarisation (Morpho-MNIST uses 4); >= 1.
        workers: worker processes. ``None`` picks ``min(os.cpu_count(), 8)`` on Linux for batches
            of at least 1,000 images (forked workers), and 1 otherwise; ``1`` runs in-process. On
            other platforms an explicit ``workers > 1`` uses the default start method, which needs
            the calling script's code under ``if __name__ == "__main__":``.

    Returns:
        Dict with the keys of :data:`MORPHOMETRIC_NAMES`, each an (N,) float32 CPU tensor:
        thickness, length, width, height in original pixels, slant in radians (positive = leaning
        right), area in original pixels², intensity in [0, 1]. NaN for images with no foreground.

    Raises:
        InputError: wrong rank, channel count, non-finite values, values outside [0, 1], or a bad
            ``scale`` or ``workers``.
    """
    images = check_images(images, channels=1, name="images")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InputError(f"scale must be an integer >= 1 (Morpho-MNIST uses 4), got {scale!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise InputError(f"workers must be None or an integer >= 1, got {workers!r}")
    scale = int(scale)
    batch = images.detach().cpu()[:, 0].numpy()  # (N, H, W) float32
    n = batch.shape[0]
    context = _pool_context()
    if workers is None:
        big = n >= _PARALLEL_MIN_IMAGES and context is not None
        workers = min(os.cpu_count() or 1, 8) if big else 1
    workers = min(int(workers), -(-n // _CHUNK))
    # chunks bound the memory of the upsampled images (60,000 MNIST images would need 6 GB at once)
    chunks = [batch[i : i + _CHUNK] for i in range(0, n, _CHUNK)]

    if workers <= 1:
        parts = [_measure_batch(chunk, scale) for chunk in chunks]
    else:
        with warnings.catch_warnings():
            # Python >= 3.12 warns that forking a multi-threaded process (torch's thread pool) may
            # deadlock; the children run only numpy/scipy/scikit-image code, never torch
            warnings.filterwarnings(
                "ignore", message=r".*use of fork\(\) may lead to deadlocks", category=DeprecationWarning
            )
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                parts = list(pool.map(_measure_batch, chunks, [scale] * len(chunks)))
    values = torch.from_numpy(np.concatenate(parts, axis=0).astype(np.float32))
    return {name: values[:, k].clone() for k, name in enumerate(MORPHOMETRIC_NAMES)}


def _pool_context() -> multiprocessing.context.BaseContext | None:
    """The ``fork`` context on Linux, else ``None`` (no fork: workers run under the platform's
    default start method). Fork needs no ``if __name__ == "__main__"`` guard in the calling script
    and no re-import of torch in each worker."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


@lru_cache(maxsize=16)
def _bicubic_matrix(size: int, scale: int) -> np.ndarray:
    """(size * scale, size) matrix of 1-D bicubic interpolation (Keys, a = -0.5), half-pixel
    aligned like ``align_corners=False``, edge pixels replicated beyond the border."""
    a = -0.5
    out = size * scale
    centres = (np.arange(out) + 0.5) / scale - 0.5  # output pixel centres in input coordinates
    base = np.floor(centres).astype(int)
    matrix = np.zeros((out, size))
    for offset in range(-1, 3):
        index = base + offset
        d = np.abs(centres - index)
        weight = np.where(
            d <= 1,
            (a + 2) * d**3 - (a + 3) * d**2 + 1,
            np.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0),
        )
        np.add.at(matrix, (np.arange(out), np.clip(index, 0, size - 1)), weight)
    return matrix


def _measure_batch(batch: np.ndarray, scale: int) -> np.ndarray:
    """(n, H, W) images in [0, 1] -> (n, 7) float64 table, ``MORPHOMETRIC_NAMES`` order."""
    batch = batch.astype(np.float64)
    n, height, width = batch.shape
    rows = _bicubic_matrix(height, scale)
    cols = _bicubic_matrix(width, scale)
    hires = rows @ batch @ cols.T  # (n, H * scale, W * scale)
    table = np.full((n, len(MORPHOMETRIC_NAMES)), np.nan)
    for i in range(n):
        table[i] = _measure_one(batch[i], hires[i], scale)
    return table


def _measure_one(image: np.ndarray, hires: np.ndarray, scale: int) -> np.ndarray:
    """Measures of one image (original (H, W) and upsampled (H*scale, W*scale)); NaN if empty."""
    result = np.full(len(MORPHOMETRIC_NAMES), np.nan)
    low, high = float(image.min()), float(image.max())
    if high - low < 1e-6:
        return result
    threshold = low + 0.5 * (high - low)
    binary = hires >= threshold
    ys, xs = np.nonzero(binary)
    if ys.size == 0:
        return result
    # crop to the foreground plus a one-pixel background frame: the border counts as background
    # for the distance transform and skeleton, and the small array is much faster to process
    top, left = ys.min(), xs.min()
    crop = np.zeros((ys.max() - top + 3, xs.max() - left + 3), dtype=bool)
    crop[ys - top + 1, xs - left + 1] = True

    skeleton = skeletonize(crop)
    if skeleton.any():
        distance = distance_transform_edt(crop)
        thickness = 2.0 * float(distance[skeleton].mean()) / scale
    else:  # pragma: no cover - skeletonize keeps at least one pixel of a non-empty shape
        thickness = np.nan
    length = _skeleton_length(skeleton) / scale

    y = ys.astype(np.float64)
    x = xs.astype(np.float64)
    dy = y - y.mean()
    dx = x - x.mean()
    mu11 = float(np.dot(dx, dy))
    mu02 = float(np.dot(dy, dy))
    slant = float(np.arctan2(-mu11, mu02))  # mu02 >= 0, so this is arctan(-mu11 / mu02)
    sheared_x = x + np.tan(slant) * dy  # de-slanted column coordinate
    q = (0.5 * _MASS_DROPPED, 1.0 - 0.5 * _MASS_DROPPED)
    x_lo, x_hi = np.quantile(sheared_x, q)
    y_lo, y_hi = np.quantile(y, q)
    # +1: from the span of pixel centres to the extent of the pixels themselves
    box_width = (x_hi - x_lo + 1.0) / scale
    box_height = (y_hi - y_lo + 1.0) / scale
    area = ys.size / scale**2
    intensity = float(np.median(image[image >= threshold]))

    result[:] = (thickness, length, slant, box_width, box_height, area, intensity)
    return result


def _skeleton_length(skeleton: np.ndarray) -> float:
    """Length of an 8-connected skeleton in pixels: orthogonal neighbour pairs count 1, diagonal
    pairs ``sqrt(2)`` unless an orthogonal corner pixel already joins them (no double counting)."""
    s = skeleton
    orthogonal = np.count_nonzero(s[:, :-1] & s[:, 1:]) + np.count_nonzero(s[:-1, :] & s[1:, :])
    a, b, c, d = s[:-1, :-1], s[:-1, 1:], s[1:, :-1], s[1:, 1:]  # top-left, top-right, ...
    diagonal = np.count_nonzero(a & d & ~b & ~c) + np.count_nonzero(b & c & ~a & ~d)
    return float(orthogonal + _SQRT2 * diagonal)


__all__ = ["MORPHOMETRIC_NAMES", "measure_morphometrics"]
