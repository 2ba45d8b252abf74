"""Descriptors: named per-image properties (attributes, factors, measurements) that explain a change.

Every source of descriptors (synthetic-face ground truth, Morpho-MNIST-style measurements, a user
CSV) ends up in one :class:`Descriptors` object: ``values`` maps a name to an (N,) float tensor and
``binary`` says which ones hold 0/1 labels. Attribute probes (:mod:`vcex.attribution.latent_attributes`)
fit a logistic regression to binary descriptors directly and to continuous ones thresholded at their
training median.

>>> from vcex.data.synthetic_faces import make_faces
>>> descriptors = Descriptors.from_faces(make_faces(300, size=32, seed=0))
>>> descriptors.names[:3], len(descriptors)
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vcex.checks import short_list
from vcex.errors import InputError

if TYPE_CHECKING:
    from vcex.data.synthetic_faces import FacesDataset

INDEX_COLUMN = "index"
FILE_COLUMN = "file"


@dataclass
class Descriptors:
    """Per-image descriptors, one (N,) float32 tensor per name.

    Attributes:
        values: name -> (N,) float32. Binary descriptors hold 0./1.; continuous ones may hold NaN
            (e.g. morphometrics of an empty image), which fitting drops with a note.
        binary: names of the binary (0/1) descriptors; every other name is continuous. None (the
            default) treats every descriptor holding only 0 and 1 as binary.
        notes: provenance and anything dropped or changed on the way in.
    """

    values: dict[str, torch.Tensor]
    binary: frozenset[str] | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.values:
            raise InputError("descriptors are empty; give at least one name -> (N,) tensor")
        checked: dict[str, torch.Tensor] = {}
        for name, value in self.values.items():
            value = torch.as_tensor(value)
            if value.dtype == torch.bool or not value.is_floating_point():
                value = value.long()
            value = value.detach().float().flatten().cpu()
            checked[str(name)] = value
        sizes = {name: int(v.shape[0]) for name, v in checked.items()}
        if len(set(sizes.values())) > 1:
            raise InputError(f"descriptors have different lengths {sizes}; give one value per image for each")
        self.values = checked
        if self.binary is None:
            self.binary = frozenset(name for name, v in checked.items() if bool(((v == 0) | (v == 1)).all()))
        self.binary = frozenset(self.binary)
        unknown = sorted(self.binary - set(checked))
        if unknown:
            raise InputError(f"binary descriptors {unknown} are not among the descriptors {self.names}")
        for name, value in checked.items():
            known = value[~torch.isnan(value)]
            if name in self.binary:
                if torch.isnan(value).any():
                    rows = torch.isnan(value).nonzero().flatten().tolist()
                    raise InputError(
                        f"binary descriptor {name!r} has NaN in rows {short_list(rows)}; fill or drop them"
                    )
                outside = ((value != 0) & (value != 1)).nonzero().flatten().tolist()
                if outside:
                    raise InputError(
                        f"binary descriptor {name!r} must hold only 0 and 1, got {value[outside[0]].item():g} "
                        f"in rows {short_list(outside)}; declare it continuous or binarise it"
                    )
            if known.numel() == 0 or bool((known == known[0]).all()):
                shown = "no values" if known.numel() == 0 else f"the single value {known[0].item():g}"
                raise InputError(
                    f"descriptor {name!r} has only one class ({shown} on all {known.numel()} images); "
                    "a probe cannot be fitted to it: drop it or use images where it varies"
                )

    @property
    def names(self) -> list[str]:
        """Descriptor names, in insertion order."""
        return list(self.values)

    def __len__(self) -> int:
        """Number of images N."""
        return int(next(iter(self.values.values())).shape[0])

    def is_binary(self, name: str) -> bool:
        return name in self.binary

    def table(self) -> torch.Tensor:
        """(N, A) float32 matrix, columns in :attr:`names` order."""
        return torch.stack([self.values[name] for name in self.names], dim=1)

    def check_count(self, n_images: int) -> None:
        """Refuse descriptors whose count does not match ``n_images``."""
        if len(self) != n_images:
            raise InputError(
                f"got descriptors for {len(self)} images but {n_images} images; give one descriptor row "
                "per image, in the same order as the images"
            )

    # ---------------------------------------------------------------------------------- sources

    @classmethod
    def from_faces(cls, faces: FacesDataset) -> Descriptors:
        """Ground truth of :func:`vcex.data.synthetic_faces.make_faces`.

        Binarised attributes are binary; continuous factors are continuous. Nuisance factors
        (position, scale, rotation, lighting, brightness) and binary factors (already present as
        attributes) are left out.
        """
        from vcex.data.synthetic_faces import FACTORS, NUISANCE_FACTORS

        values: dict[str, torch.Tensor] = {name: value for name, value in faces.attributes.items()}
        binary = set(values)
        for name, value in faces.factors.items():
            spec = FACTORS.get(name)
            if name in NUISANCE_FACTORS or (spec is not None and spec.binary):
                continue
            values[name if name not in values else f"factor:{name}"] = value
        return cls(values, frozenset(binary), [f"synthetic faces ({len(faces)} images)"])

    @classmethod
    def from_morphometrics(cls, images: torch.Tensor, scale: int = 4, workers: int | None = None) -> Descriptors:
        """Morpho-MNIST-style measurements of (N, 1, H, W) images, all continuous.

        Empty images get NaN in every measure; they are kept here and dropped when fitting.
        """
        from vcex.data.morphometrics import measure_morphometrics

        values = measure_morphometrics(images, scale=scale, workers=workers)
        notes = [f"morphometrics of {int(images.shape[0])} images"]
        empty = torch.stack([torch.isnan(v) for v in values.values()], 1).any(1).nonzero().flatten().tolist()
        if empty:
            notes.append(f"{len(empty)} image(s) without foreground have NaN morphometrics: {short_list(empty)}")
        return cls(values, frozenset(), notes)

    @classmethod
    def from_csv(
        cls, path: str | Path, n_images: int | None = None, *, files: Sequence[str] | None = None
    ) -> Descriptors:
        """Read a CSV with an ``index`` column (image index) and one numeric column per descriptor.

        Rows may come in any order; indices must be 0..N-1, each once (N = ``n_images`` when given).
        With ``files`` (each image's file, e.g. an image folder's ``ImageDataset.files``) the rows name
        their image in a ``file`` column instead, as a path relative to the folder (``cat/001.png``); rows
        of other files are ignored, so one CSV may cover a whole folder, and every image needs one row.
        A column holding only 0 and 1 is binary, any other numeric column continuous. Empty cells,
        NaN and non-numeric values are refused with the column and row named.
        """
        path = Path(path)
        key_column = INDEX_COLUMN if files is None else FILE_COLUMN
        header, keys, table = _read_descriptor_csv(path, key_column)
        columns = [name for name in header if name != key_column]
        if files is None:
            order, expected = _index_order(path, keys, n_images if n_images is not None else len(keys))
        else:
            order, expected = _file_order(path, keys, list(files)), len(files)
        matrix = torch.tensor(table, dtype=torch.float64).reshape(len(keys), len(columns))[order].float()
        values = {name: matrix[:, j].clone() for j, name in enumerate(columns)}
        binary = frozenset(name for name, v in values.items() if bool(((v == 0) | (v == 1)).all()))
        return cls(values, binary, [f"CSV {path.name} ({expected} images)"])


def _read_descriptor_csv(path: Path, key_column: str) -> tuple[list[str], list[str], list[list[float]]]:
    """(header, each row's key cell, each row's descriptor values), every cell checked."""
    try:
        rows = list(csv.reader(io.StringIO(_utf8_text(path), newline="")))
    except OSError as error:
        raise InputError(f"cannot read descriptor CSV {path} ({error})") from error
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"descriptor CSV {path} is empty; expected a header with an {key_column!r} column")
    header = [cell.strip() for cell in rows[0]]
    if key_column not in header:
        holds = "each row's image index (0-based)" if key_column == INDEX_COLUMN else "each row's image file"
        raise InputError(
            f"descriptor CSV {path} has no {key_column!r} column (columns: {header}); add a column named "
            f"{key_column!r} holding {holds}"
        )
    if len(set(header)) != len(header):
        raise InputError(f"descriptor CSV {path} repeats column names: {header}")
    key_at = header.index(key_column)
    if len(header) == 1:
        raise InputError(f"descriptor CSV {path} has only the {key_column!r} column; add descriptor columns")
    keys: list[str] = []
    table: list[list[float]] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"descriptor CSV {path} line {line} has {len(row)} cells, the header {len(header)}")
        key = row[key_at].strip()
        keys.append(key)
        parsed = []
        for name, cell in zip(header, row):
            if name == key_column:
                continue
            try:
                number = float(cell.strip())
            except ValueError:
                raise InputError(
                    f"descriptor CSV {path}: column {name!r}, line {line} (image {key}) holds the "
                    f"non-numeric value {cell!r}; descriptors must be numbers (encode categories as 0/1 columns)"
                ) from None
            if not math.isfinite(number):
                raise InputError(
                    f"descriptor CSV {path}: column {name!r}, line {line} (image {key}) is "
                    f"{cell.strip() or 'empty'!r} (NaN/inf); fill it in or drop that image"
                )
            parsed.append(number)
        table.append(parsed)
    return header, keys, table


def _utf8_text(path: Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark, as spreadsheet programs write, is dropped)."""
    data = path.read_bytes()
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line = data[:offset].count(b"\n") + 1
        raise InputError(
            f"descriptor CSV {path} is not UTF-8 text: byte {offset} (line {line}) is 0x{data[offset]:02x}; "
            "save it as UTF-8 (in a spreadsheet: CSV UTF-8) and try again"
        ) from None


def _index_order(path: Path, keys: list[str], expected: int) -> tuple[torch.Tensor, int]:
    """The rows in image order, for keys that must be the indices 0..expected-1, each once."""
    indices = []
    for line, text in enumerate(keys, start=2):
        try:
            index = float(text)
            if not index.is_integer() or index < 0:
                raise ValueError
        except ValueError:
            raise InputError(
                f"descriptor CSV {path} line {line}: {INDEX_COLUMN!r} must be a non-negative integer image "
                f"index, got {text!r}"
            ) from None
        indices.append(int(index))
    if len(indices) != expected:
        raise InputError(
            f"descriptor CSV {path} has {len(indices)} rows but there are {expected} images; give one row per image"
        )
    duplicates = sorted(i for i, count in Counter(indices).items() if count > 1)
    if duplicates:
        raise InputError(f"descriptor CSV {path} repeats image indices {short_list(duplicates)}; one row each")
    if sorted(indices) != list(range(expected)):
        missing = sorted(set(range(expected)) - set(indices))
        extra = sorted(set(indices) - set(range(expected)))
        raise InputError(
            f"descriptor CSV {path}: {INDEX_COLUMN!r} must hold each image index 0..{expected - 1} once; "
            f"missing {short_list(missing) or 'none'}, out of range {short_list(extra) or 'none'}"
        )
    return torch.tensor(indices).argsort(), expected


def _file_order(path: Path, keys: list[str], files: list[str]) -> torch.Tensor:
    """The row of each of ``files``, in their order; rows of other files are left out."""
    normalised = [key.replace("\\", "/").removeprefix("./") for key in keys]
    wanted = set(files)
    rows: dict[str, int] = {}
    repeated = []
    for row, key in enumerate(normalised):
        if key in wanted:
            if key in rows:
                repeated.append(key)
            rows[key] = row
    if repeated:
        raise InputError(f"descriptor CSV {path} repeats the files {short_list(sorted(set(repeated)))}; one row each")
    missing = [file for file in files if file not in rows]
    if missing:
        raise InputError(
            f"descriptor CSV {path} has no row for {len(missing)} of the {len(files)} images, e.g. "
            f"{short_list(missing[:5])}; its {FILE_COLUMN!r} column must name each image as a path relative to the "
            "image folder (like cat/001.png)"
        )
    return torch.tensor([rows[file] for file in files], dtype=torch.long)
