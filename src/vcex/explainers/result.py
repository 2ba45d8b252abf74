"""The result every explainer returns: a dataclass of per-image tensors, saved as safetensors + JSON."""

from __future__ import annotations

import contextlib
import json
import math
import struct
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vcex.errors import CacheError
from vcex.records import atomic_path, dataclass_from_record, write_json

_OPTIONAL = ("original_latents", "counterfactual_latents", "reconstructions", "sequence", "sequence_prob")


@dataclass
class CounterfactualResult:
    """Counterfactuals for a batch; every tensor has the batch as its first dimension.

    Attributes:
        method: explainer name.
        originals: (N, C, H, W) the images explained, in [0, 1].
        counterfactuals: (N, C, H, W) the counterfactual images (for a failed image: the last iterate).
        target: (N,) int64 target class (the class to raise, or to lower when ``lower``).
        original_class: (N,) int64 the classifier's prediction on the original.
        original_prob: (N,) classifier probability of ``target`` on the original.
        target_prob: (N,) classifier probability of ``target`` on the counterfactual.
        success: (N,) bool, True where ``target_prob`` passed the threshold.
        steps: (N,) int64 optimisation steps taken (0 for one-shot methods).
        forward_passes, backward_passes: (N,) int64 classifier passes spent on each image.
        seconds: wall time of the whole call.
        threshold: the confidence threshold used, or one per class (each image's target class's applies);
            lower: whether the target was lowered.
        original_latents, counterfactual_latents: (N, ...) latents, for latent methods.
        reconstructions: (N, C, H, W) decode(encode(x)), for latent methods.
        sequence: (N, S, C, H, W) the image after each of S progressive stages (DISC); an image that
            finished early repeats its counterfactual in the later stages.
        sequence_prob: (N, S) the target probability of each ``sequence`` image.
        settings: the explainer's settings, for the record.
    """

    method: str
    originals: torch.Tensor
    counterfactuals: torch.Tensor
    target: torch.Tensor
    original_class: torch.Tensor
    original_prob: torch.Tensor
    target_prob: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    forward_passes: torch.Tensor
    backward_passes: torch.Tensor
    seconds: float
    threshold: float | tuple[float, ...]
    lower: bool = False
    original_latents: torch.Tensor | None = None
    counterfactual_latents: torch.Tensor | None = None
    reconstructions: torch.Tensor | None = None
    sequence: torch.Tensor | None = None
    sequence_prob: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.originals.shape[0])

    @property
    def validity(self) -> float:
        """Share of images whose counterfactual reached the target."""
        return float(self.success.float().mean()) if len(self) else 0.0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}

    def to(self, device: torch.device | str) -> CounterfactualResult:
        return self._with({name: tensor.to(device) for name, tensor in self.tensors().items()})

    def _with(self, tensors: dict[str, torch.Tensor]) -> CounterfactualResult:
        return CounterfactualResult(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **tensors})

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors: the tensors) and ``path`` + ``.json`` (the scalars), each atomically and
        the JSON first, so the tensors' file exists only once both are whole (a chunk's mark of completion)."""
        path = Path(path)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.tensors().items()}
        write_json(path.with_name(path.name + ".json"), self.scalars())
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary))
        return path

    def scalars(self) -> dict:
        """The fields that are not tensors (method, seconds, threshold, lower, settings): the ``.json`` beside
        the saved tensors."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not isinstance(getattr(self, f.name), torch.Tensor) and f.name not in _OPTIONAL
        }

    @classmethod
    def load(cls, path: str | Path, rows: slice | None = None) -> CounterfactualResult:
        """Read a result written by :meth:`save` (by this or another vcex version: fields this version does not
        know are ignored; one it needs and the files lack raises :class:`CacheError`, as damage does).
        ``rows``: only those rows (a slice), read from the file without loading the rest."""
        path = Path(path)
        try:
            if rows is None:
                tensors = load_file(str(path))
            else:
                with safe_open(str(path), framework="pt") as handle:
                    # copied out of the file's memory map: a slice kept alive would keep its pages mapped, and
                    # reading a large run block by block would map all of it
                    tensors = {name: handle.get_slice(name)[rows].clone() for name in handle.keys()}
            scalars = json.loads(path.with_name(path.name + ".json").read_text())
            if not isinstance(scalars, dict):
                raise ValueError(f"its JSON holds a {type(scalars).__name__}, not an object")
        except Exception as error:  # noqa: BLE001 - any damage means the same thing to the caller
            raise CacheError(f"cannot read counterfactual result {path} ({error})") from error
        if isinstance(scalars.get("threshold"), list):  # per-class thresholds, a tuple before saving
            scalars["threshold"] = tuple(scalars["threshold"])
        return dataclass_from_record(cls, {**scalars, **tensors}, f"counterfactual result {path}")

    def select(self, mask: torch.Tensor) -> CounterfactualResult:
        """The rows where ``mask`` (N,) is True (or the rows at the given indices), same scalars."""
        return self._with({name: tensor[mask] for name, tensor in self.tensors().items()})

    @staticmethod
    def concatenate(parts: list[CounterfactualResult], seconds: float) -> CounterfactualResult:
        """Join per-chunk results in order; scalars come from the first chunk."""
        first = parts[0]
        joined = {}
        for f in fields(first):
            value = getattr(first, f.name)
            if isinstance(value, torch.Tensor):
                joined[f.name] = torch.cat([getattr(p, f.name) for p in parts])
            else:
                joined[f.name] = value
        joined["seconds"] = seconds
        return CounterfactualResult(**joined)


class ResultBuilder:
    """Chunk results written into tensors preallocated for all ``total`` images, in order.

    Joining a list of chunks at the end holds every chunk and the joined copy at once (twice the
    result); filling preallocated tensors holds one copy of the result plus the current chunk.
    """

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.filled = 0
        self.first: CounterfactualResult | None = None
        self.buffers: dict[str, torch.Tensor] = {}

    def add(self, part: CounterfactualResult) -> None:
        """Copy the next chunk's tensors (rows ``filled`` to ``filled + len(part)``) into place."""
        if self.first is None:
            self.first = part
            for f in fields(part):
                value = getattr(part, f.name)
                if isinstance(value, torch.Tensor):
                    self.buffers[f.name] = value.new_empty((self.total, *value.shape[1:]))
        rows = slice(self.filled, self.filled + len(part))
        for name, buffer in self.buffers.items():
            buffer[rows] = getattr(part, name)
        self.filled += len(part)

    def result(self, seconds: float) -> CounterfactualResult:
        """The joined result (scalars from the first chunk); every row must have been added."""
        if self.first is None or self.filled != self.total:
            raise RuntimeError(f"ResultBuilder: {self.filled} of {self.total} rows were added")
        joined = {f.name: self.buffers.get(f.name, getattr(self.first, f.name)) for f in fields(self.first)}
        joined["seconds"] = seconds
        return CounterfactualResult(**joined)


# safetensors' names of torch dtypes (https://github.com/huggingface/safetensors, format: header JSON "dtype")
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class ResultFileWriter:
    """A result's safetensors file (+ ``.json``) for ``total`` rows, written chunk by chunk into place, so a run of
    any length is saved holding one chunk in memory; the file is the one :meth:`CounterfactualResult.save` would
    write for the joined result (any safetensors reader, :meth:`CounterfactualResult.load`).

    The first chunk fixes the layout: the header lists every tensor with ``total`` rows, each tensor's bytes
    follow one another, and each chunk's rows are written at their offsets. The file appears atomically when
    the ``with`` block ends (vcex.records.atomic_path), the JSON first; set ``seconds`` before it ends.

    Example::

        with ResultFileWriter(out / "counterfactuals.safetensors", n) as writer:
            for part in chunks:
                writer.add(part)
            writer.seconds = total_seconds
    """

    def __init__(self, path: str | Path, total: int) -> None:
        self.path, self.total = Path(path), int(total)
        self.filled, self.seconds = 0, 0.0
        self.first: CounterfactualResult | None = None
        self.offsets: dict[str, tuple[int, int]] = {}  # tensor name -> (file offset of its row 0, bytes per row)
        self.layout: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}  # tensor name -> (dtype, shape of a row)
        self._stack = contextlib.ExitStack()
        self._file = None

    def __enter__(self) -> ResultFileWriter:
        from vcex.records import atomic_path

        temporary = self._stack.enter_context(atomic_path(self.path))
        self._file = self._stack.enter_context(open(temporary, "wb"))  # noqa: SIM115 - closed by the stack
        return self

    def add(self, part: CounterfactualResult) -> None:
        """Write the next chunk's rows (``filled`` to ``filled + len(part)``) into place."""
        tensors = {name: t.detach().cpu().contiguous() for name, t in part.tensors().items()}
        if self.first is None:
            self.first = part
            self.layout = {name: (t.dtype, tuple(t.shape[1:])) for name, t in tensors.items()}
            self._write_header(tensors)
        layout = {name: (t.dtype, tuple(t.shape[1:])) for name, t in tensors.items()}
        if self.filled + len(part) > self.total or layout != self.layout:
            raise RuntimeError(f"ResultFileWriter: a chunk of {len(part)} rows does not fit {self.path}'s layout")
        for name, tensor in tensors.items():
            start, row_bytes = self.offsets[name]
            self._file.seek(start + self.filled * row_bytes)
            self._file.write(memoryview(tensor.view(-1).view(torch.uint8).numpy()))
        self.filled += len(part)

    def _write_header(self, tensors: dict[str, torch.Tensor]) -> None:
        header, position = {}, 0
        for name in sorted(tensors):
            tensor = tensors[name]
            if tensor.dtype not in _SAFETENSORS_DTYPES:
                raise RuntimeError(f"ResultFileWriter: {name} has dtype {tensor.dtype}, which it cannot store")
            row_bytes = math.prod(tensor.shape[1:]) * tensor.element_size()
            size = self.total * row_bytes
            header[name] = {
                "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
                "shape": [self.total, *tensor.shape[1:]],
                "data_offsets": [position, position + size],
            }
            self.offsets[name] = (position, row_bytes)
            position += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self._file.write(struct.pack("<Q", len(text)) + text)
        base = 8 + len(text)
        self.offsets = {name: (start + base, row_bytes) for name, (start, row_bytes) in self.offsets.items()}
        self._file.truncate(base + position)  # the whole file's size at once (rows land in place)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None and (self.first is None or self.filled != self.total):
            error = RuntimeError(f"ResultFileWriter: {self.filled} of {self.total} rows were written to {self.path}")
            self._stack.__exit__(type(error), error, None)
            raise error
        if kind is None:
            self._file.close()  # flushed before the scalars, then fsynced and renamed by atomic_path
            scalars = {**self.first.scalars(), "seconds": self.seconds}
            write_json(self.path.with_name(self.path.name + ".json"), scalars)
        self._stack.__exit__(kind, error, trace)


COUNTERFACTUALS_FILE = "counterfactuals.safetensors"


def run_length(path: str | Path) -> int:
    """The number of rows of a saved result (its ``success`` tensor's length), read from the header only."""
    with safe_open(str(path), framework="pt") as handle:
        return int(handle.get_slice("success").get_shape()[0])


def load_run(out: str | Path, rows: slice | None = None) -> CounterfactualResult:
    """The counterfactuals of a ``vcex explain`` run folder ``out`` (or its ``counterfactuals.safetensors``),
    whatever its size: a run writes one whole file however many chunks it took. ``rows``: a slice of the run
    (e.g. ``slice(0, 1000)``), read without loading the rest, for runs too large to hold at once.

    Raises:
        CacheError: no finished run there (its chunks alone, from an interrupted run, are finished by rerunning
            the same ``vcex explain`` command), or a damaged file.
    """
    out = Path(out)
    path = out / COUNTERFACTUALS_FILE if out.is_dir() else out
    if not path.is_file():
        chunks = out / "chunks"
        hint = (
            f"{chunks} holds the chunks of an unfinished run: rerun the same vcex explain command to finish it "
            "(--status says how far it is)"
            if chunks.is_dir()
            else "give the --out folder of a vcex explain run"
        )
        raise CacheError(f"no {COUNTERFACTUALS_FILE} in {out}; {hint}")
    return CounterfactualResult.load(path, rows=rows)
