"""The user's own images: image files, or a folder with one subfolder per class (the ImageFolder layout).

    pets/cat/001.png, pets/cat/002.png, pets/dog/001.jpg, ...            (split here, stratified and seeded)
    pets/train/cat/001.png, ..., pets/test/cat/101.png, ...              (split already made)

Images are read with Pillow (never unpickled), made grayscale or RGB, optionally resized, and returned as
float32 in [0, 1]. Class indices follow the sorted class folder names, as torchvision's ImageFolder does.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vcex.data.base import ImageDataset, stratified_split
from vcex.errors import DatasetNotFoundError, InputError, VcexError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit grayscale (PNG), scaled by 65535
SizeSpec = int | tuple[int, int] | None


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (by suffix, hidden files skipped), sorted by name."""
    folder = Path(folder)
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def read_images(
    files: str | Path | Sequence[str | Path], *, channels: int | None = None, size: SizeSpec = None
) -> torch.Tensor:
    """Image files (or every image file directly in a folder) as (N, C, H, W) float32 in [0, 1].

    ``channels``: 1 (grayscale) or 3 (RGB); default 1 when every image is grayscale, else 3 (alpha is
    dropped). ``size``: H (square) or (H, W) to resize to (bilinear, antialiased); default: the images'
    own size, which they must share.
    """
    if isinstance(files, (str, Path)):
        folder = Path(files)
        if not folder.exists():
            raise DatasetNotFoundError(f"{folder} does not exist; give an image file, a list of them or a folder")
        files = image_files(folder) if folder.is_dir() else [folder]
        if not files:
            raise DatasetNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) directly in {folder}")
    paths = [Path(f) for f in files]
    if not paths:
        raise InputError("no image files given; pass at least one path")
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"image file {missing[0]} does not exist" + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if channels not in (None, 1, 3):
        raise InputError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    target_size = _check_size(size)
    if channels is None or target_size is None:  # a header pass (no pixels decoded) decides what was not given
        modes, sizes = zip(*(_header(path) for path in paths))
    if channels is None:
        channels = 1 if all(mode in _GRAY_MODES for mode in modes) else 3
    if target_size is None:
        first = sizes[0]
        for path, shape in zip(paths, sizes):
            if shape != first:
                raise InputError(
                    f"{path} is {shape[1]}x{shape[0]} pixels but {paths[0]} is {first[1]}x{first[0]} (width x "
                    "height); images read together must share a size: pass size=(H, W) to resize them (on the "
                    "command line: --dataset folder:PATH@SIZE)"
                )
        target_size = first
    out = torch.empty(len(paths), channels, *target_size)
    for i, path in enumerate(paths):
        out[i] = _decode(path, channels, target_size)
    return out


def load_image_folder(
    root: str | Path,
    split: str | None = None,
    *,
    channels: int | None = None,
    size: SizeSpec = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ImageDataset:
    """A labelled dataset from ``root/<class>/*`` (or ``root/train/<class>/*`` and ``root/test/<class>/*``).

    ``split``: ``"train"``, ``"test"`` or None (every image). Without train/test folders the split is
    stratified by class, ``test_fraction`` of each class in the test split, seeded (the same every time).
    ``channels`` and ``size`` as in :func:`read_images`, decided once for the whole folder so both splits
    agree. Returns images (N, C, H, W) in [0, 1] and labels (N,) by sorted class folder name; a split comes
    in a seeded order that mixes the classes, every image (``split=None``) in class order.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"image folder {root} not found; give a folder with one subfolder of images per class "
            "(root/cat/*.png, root/dog/*.png) or train/ and test/ folders laid out so"
        )
    if split not in (None, "train", "test"):
        raise InputError(f"unknown split {split!r}; use 'train', 'test' or None (every image)")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    if presplit:
        train_files = _class_files(root / "train")
        test_files = _class_files(root / "test")
        unknown = sorted(set(test_files) - set(train_files))
        if unknown:
            raise InputError(
                f"{root / 'test'} has class folders that {root / 'train'} lacks: {', '.join(unknown)}; "
                "every test class needs training images"
            )
        class_names = sorted(train_files)
        chosen = {"train": [train_files], "test": [test_files], None: [train_files, test_files]}[split]
    else:
        class_files = _class_files(root)
        class_names = sorted(class_files)
        chosen = [class_files]
    paths, labels = [], []
    for groups in chosen:
        for index, name in enumerate(class_names):
            found = groups.get(name, [])
            paths += found
            labels += [index] * len(found)
    labels = torch.tensor(labels, dtype=torch.long)
    if split is not None:  # a seeded order that mixes the classes, so the first N images are not all one class
        if presplit:
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        else:
            train, test = stratified_split(labels, test_fraction, seed)
            keep = train if split == "train" else test
        if len(keep) == 0:
            raise InputError(f"the {split} split of {root} is empty; use a test_fraction that leaves images in it")
        paths, labels = [paths[i] for i in keep.tolist()], labels[keep]
    if channels is None:  # decided over the whole folder, so the splits agree
        folders = [train_files, test_files] if presplit else [class_files]
        every = [path for groups in folders for found in groups.values() for path in found]
        channels = 1 if all(_header(path)[0] in _GRAY_MODES for path in every) else 3
    images = read_images(paths, channels=channels, size=size)
    info = {
        "source": str(root.resolve()),
        "layout": "train/ and test/ folders" if presplit else "class folders",
        "channels": str(channels),
    }
    if not presplit:
        info.update({"test_fraction": str(test_fraction), "seed": str(seed)})
    if size is not None:
        info["size"] = "x".join(str(s) for s in _check_size(size))
    files = [path.relative_to(root).as_posix() for path in paths]
    return ImageDataset(images, labels, f"folder:{root.name}", split or "all", class_names, info, files)


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, for every (non-hidden) subfolder of ``folder``."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        found = f"found only {classes[0].name!r}" if classes else "found none"
        raise InputError(
            f"{folder} needs one subfolder of images per class, at least two classes ({found}): "
            f"e.g. {folder}/cat/*.png and {folder}/dog/*.png"
        )
    files = {path.name: image_files(path) for path in classes}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise InputError(
            f"class folder {folder / empty[0]} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
            "add images or remove the folder"
        )
    return files


def _check_size(size: SizeSpec) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair):
        raise InputError(f"size must be a positive int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"cannot read image {path} ({error}); remove it or save it as PNG") from None


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width)) without decoding the pixels."""
    with _open(path) as image:
        return image.mode, (image.height, image.width)


def _decode(path: Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """One image as (channels, H, W) float32 in [0, 1]."""
    from PIL import Image

    height, width = size
    with _open(path) as image:
        try:
            image.load()
            if image.mode in _WIDE_MODES or image.mode == "F":  # 16-bit or float grayscale: keep the depth
                values = np.asarray(image, dtype=np.float32) / (65535.0 if image.mode in _WIDE_MODES else 1.0)
                if not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
                    raise InputError(f"float image {path} has values outside [0, 1]; save it scaled to [0, 1]")
                image = Image.fromarray(values)
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)[None].repeat(channels, 0)
            else:
                image = image.convert("L" if channels == 1 else "RGB")
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / 255.0
                array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        except VcexError:
            raise
        except (OSError, ValueError) as error:
            raise InputError(f"cannot decode image {path} ({error}); remove it or save it as PNG") from None
    return torch.from_numpy(np.ascontiguousarray(array))


# ---- folders as named datasets: "folder:PATH" or "folder:PATH@SIZE" (resized to SIZE x SIZE) -----------------

FOLDER_PREFIX = "folder:"


def canonical_folder_name(name: str) -> str:
    """``folder:PATH[@SIZE]`` with PATH made absolute, so one folder has one name (and one model cache)."""
    path, size = _parse_folder_name(name)
    return f"{FOLDER_PREFIX}{path}" + (f"@{size}" if size else "")


def _parse_folder_name(name: str) -> tuple[Path, int | None]:
    text = name.removeprefix(FOLDER_PREFIX)
    size = None
    stem, at, tail = text.rpartition("@")
    if at and tail.isdigit():
        text, size = stem, int(tail)
        if size < 1:
            raise InputError(f"{name}: the size after @ must be a positive number of pixels")
    if not text:
        raise InputError(f"{name!r} names no folder; write folder:PATH or folder:PATH@SIZE (e.g. folder:pets@32)")
    return Path(text).expanduser().resolve(), size


def folder_fingerprint(name: str) -> str:
    """A hash of a folder dataset's image files (relative path, byte size, modification time) and size: it
    changes when images are added, removed or rewritten, so models trained on the old contents are not reused."""
    root, size = _parse_folder_name(name)
    if not root.is_dir():
        load_image_folder(root)  # raises the not-found error with the expected layout
    entries = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            stat = path.stat()
            entries.append(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}")
    entries.append(f"size={size}")
    return hashlib.sha1("\n".join(entries).encode()).hexdigest()[:12]


def folder_file_stem(name: str) -> str:
    """A file-name-safe stem for a folder dataset's cached models: ``folder-<folder name>-<hash of the path>``."""
    canonical = canonical_folder_name(name)
    root, size = _parse_folder_name(canonical)
    readable = "".join(c if c.isalnum() or c in "-_" else "_" for c in root.name)[:40] or "root"
    return f"folder-{readable}{f'-{size}px' if size else ''}-{hashlib.sha1(canonical.encode()).hexdigest()[:8]}"


def load_folder_dataset(name: str, split: str) -> ImageDataset:
    """The ``split`` of the folder dataset ``name`` (kept in memory for this process while its files are
    unchanged, since the zoo, the kNN oracle and the CLI each ask for it)."""
    canonical = canonical_folder_name(name)
    return _cached_folder(canonical, split, folder_fingerprint(canonical))


@functools.lru_cache(maxsize=4)
def _cached_folder(canonical: str, split: str, fingerprint: str) -> ImageDataset:
    root, size = _parse_folder_name(canonical)
    data = load_image_folder(root, split, size=size)
    data.name = canonical
    data.info["fingerprint"] = fingerprint
    return data
