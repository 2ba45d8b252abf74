"""The result every explainer returns: a dataclass of per-image tensors, saved as safetensors + JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
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
    def load(cls, path: str | Path) -> CounterfactualResult:
        """Read a result written by :meth:`save` (by this or another vcex version: fields this version does not
        know are ignored; one it needs and the files lack raises :class:`CacheError`, as damage does)."""
        path = Path(path)
        try:
            tensors = load_file(str(path))
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
