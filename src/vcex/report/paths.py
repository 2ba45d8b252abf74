"""What the explorer (``vcex serve``) shows of a run: each image's path from original to counterfactual.

For the first images of a run (at most ``max_images``, :data:`PATH_IMAGES` by default), the path is decoded at a
few points with the explained classifier's target probability at each:

- latent methods (attack, linear edit, amortized): ``decode((1 - t) z + t z_cf)`` at ``points`` values of t in
  [0, 1], from the original's latent to the counterfactual's (in residual mode the original's reconstruction error
  is added back, as the attack did);
- DISC: the original, then its progressive ``sequence`` (one image per stage), with their stored probabilities;
- pixel methods: ``(1 - t) x + t x_cf``, the straight line in pixel space.

Written as ``paths.safetensors`` (images as uint8: the explorer only shows them, and the probabilities are measured
on the float images before rounding) and ``paths.json`` (method, kind, class count, local attribution names), beside
the run's ``metrics.json``. The explorer reads these two files only, so it never loads a whole run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from vcex.errors import CacheError, InputError
from vcex.explainers.result import CounterfactualResult
from vcex.models.state import evaluating
from vcex.records import dataclass_from_record, write_json

if TYPE_CHECKING:
    from vcex.attribution import LocalAttribution
    from vcex.explainers import Explainer

PATHS_FILE = "paths.safetensors"
PATHS_RECORD = "paths.json"
PATH_POINTS = 8  # points on a latent or pixel path, original and counterfactual included
# images of a run the explorer gets paths for: their 256 x 8 decodes and scores took 3 s with the MNIST VAE and 19 s
# with the faces generator (32x32) on one shared CPU thread, and 2.2 / 8.7 MB as uint8
PATH_IMAGES = 256
PATH_KINDS = ("latent", "sequence", "pixel")
# the optional tensors of ExplorerPaths, absent from a file where the run has none
_OPTIONAL = ("reconstructions", "local_scores", "local_usable")


@dataclass
class ExplorerPaths:
    """The explorer's view of the first M images of a run; P points per path.

    Attributes:
        method: the run's explainer name; kind: how the path was made (:data:`PATH_KINDS`).
        indices: (M,) int64 each image's position in the run.
        originals, counterfactuals: (M, C, H, W) uint8; reconstructions: (M, C, H, W) uint8 or None.
        path: (M, P, C, H, W) uint8, path[:, 0] the start (reconstruction or original), path[:, -1] the
            counterfactual; path_position: (P,) in [0, 1], where each point lies along the path.
        path_prob: (M, P) the classifier's probability of the target at each point.
        target, original_class: (M,) int64; success: (M,) bool; threshold: (M,) the target's threshold.
        original_prob, target_prob: (M,) the target's probability on the original and the counterfactual.
        local_scores: (M, A) local attribution scores s_a = p_a(cf) - p_a(original), or None;
            local_names: the A descriptor names; local_usable: (A,) bool, probes that beat chance.
        total: images in the whole run (M <= total).
        class_names: the classifier's class names, where it has them.
    """

    method: str
    kind: str
    indices: torch.Tensor
    originals: torch.Tensor
    counterfactuals: torch.Tensor
    path: torch.Tensor
    path_position: torch.Tensor
    path_prob: torch.Tensor
    target: torch.Tensor
    original_class: torch.Tensor
    success: torch.Tensor
    threshold: torch.Tensor
    original_prob: torch.Tensor
    target_prob: torch.Tensor
    total: int
    reconstructions: torch.Tensor | None = None
    local_scores: torch.Tensor | None = None
    local_usable: torch.Tensor | None = None
    local_names: list[str] = field(default_factory=list)
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/paths.safetensors`` and ``folder/paths.json``; returns the first."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        tensors = {name: value.detach().cpu().contiguous() for name, value in values.items() if torch.is_tensor(value)}
        save_file(tensors, str(folder / PATHS_FILE))
        scalars = {name: value for name, value in values.items() if name not in tensors and name not in _OPTIONAL}
        write_json(folder / PATHS_RECORD, scalars)
        return folder / PATHS_FILE

    @classmethod
    def load(cls, folder: str | Path) -> ExplorerPaths:
        """Read what :meth:`save` wrote into ``folder``; damage raises :class:`CacheError`."""
        folder = Path(folder)
        try:
            tensors = load_file(str(folder / PATHS_FILE))
            scalars = json.loads((folder / PATHS_RECORD).read_text(encoding="utf-8"))
            if not isinstance(scalars, dict):
                raise ValueError(f"{PATHS_RECORD} holds a {type(scalars).__name__}, not an object")
        except Exception as error:  # noqa: BLE001 - any damage means the same to the explorer
            raise CacheError(f"cannot read the explorer's paths in {folder} ({error})") from error
        return dataclass_from_record(cls, {**scalars, **tensors}, f"the explorer's paths in {folder}")


def as_bytes(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (any shape) -> uint8 in [0, 255] on the CPU."""
    return (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)


def _per_image_threshold(result: CounterfactualResult) -> torch.Tensor:
    """(N,) the threshold each image's target had to pass (one for all, or its target class's)."""
    threshold = result.threshold
    if isinstance(threshold, (tuple, list)):
        values = torch.tensor(threshold, dtype=torch.float32)[result.target.cpu()]
    else:
        values = torch.full((len(result),), float(threshold), dtype=torch.float32)
    return 1 - values if result.lower else values


def path_kind(result: CounterfactualResult, latent_model: object | None) -> str:
    """How a result's paths are made: ``sequence`` (it has one), ``latent`` (latents and a model to decode them),
    else ``pixel``."""
    if result.sequence is not None and result.sequence_prob is not None:
        return "sequence"
    if result.original_latents is not None and result.counterfactual_latents is not None and latent_model is not None:
        return "latent"
    return "pixel"


def compute_paths(
    result: CounterfactualResult,
    classifier: torch.nn.Module | None = None,
    latent_model: object | None = None,
    *,
    points: int = PATH_POINTS,
    max_images: int = PATH_IMAGES,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    local: LocalAttribution | None = None,
) -> ExplorerPaths:
    """The explorer's paths for the first ``max_images`` images of ``result`` (see the module's docstring).

    ``classifier`` (images in [0, 1] -> logits (N, K)) scores latent and pixel paths (its ``class_names`` are kept);
    ``latent_model`` decodes the result's latents (the latent model they live in). Decoding and scoring run
    ``batch_size`` images at a time, under no_grad, with both models' modes and flags restored afterwards.
    ``local``: the run's local attributions (one row per image of ``result``), kept for the same images.

    Raises:
        InputError: ``points`` < 2, ``max_images`` < 1, or no classifier for a latent or pixel path.
    """
    if points < 2:
        raise InputError(f"a path needs at least 2 points (original and counterfactual), got points={points}")
    if max_images < 1:
        raise InputError(f"max_images must be >= 1, got {max_images}")
    kind = path_kind(result, latent_model)
    count = min(max_images, len(result))
    head = result.select(torch.arange(count))
    if kind == "sequence":
        path = torch.cat([head.originals[:, None], head.sequence], 1)
        path_prob = torch.cat([head.original_prob[:, None], head.sequence_prob], 1).float()
        position = torch.linspace(0, 1, path.shape[1])
        path = as_bytes(path)
    else:
        if classifier is None:
            raise InputError(f"a {kind} path is scored by the classifier: pass classifier=")
        position = torch.linspace(0, 1, points)
        path, path_prob = _interpolated(head, kind, classifier, latent_model, position, batch_size, device)
    reconstructions = head.reconstructions
    scores = usable = None
    names: list[str] = []
    if local is not None:
        if len(local) != len(result):
            raise InputError(f"local attributions have {len(local)} rows for a result of {len(result)} images")
        scores, usable, names = local.scores[:count].float().cpu(), local.usable.cpu(), list(local.names)
    return ExplorerPaths(
        method=result.method,
        kind=kind,
        indices=torch.arange(count),
        originals=as_bytes(head.originals),
        counterfactuals=as_bytes(head.counterfactuals),
        path=path,
        path_position=position.float(),
        path_prob=path_prob.cpu().float(),
        target=head.target.cpu().long(),
        original_class=head.original_class.cpu().long(),
        success=head.success.cpu().bool(),
        threshold=_per_image_threshold(head),
        original_prob=head.original_prob.cpu().float(),
        target_prob=head.target_prob.cpu().float(),
        total=len(result),
        reconstructions=as_bytes(reconstructions) if reconstructions is not None else None,
        local_scores=scores,
        local_usable=usable,
        local_names=names,
        class_names=list(getattr(classifier, "class_names", None) or []) or None,
    )


def _interpolated(
    head: CounterfactualResult,
    kind: str,
    classifier: torch.nn.Module,
    latent_model: object | None,
    position: torch.Tensor,
    batch_size: int,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent or pixel paths at ``position`` (P,) for every image of ``head``: (M, P, C, H, W) uint8 and the
    target probability (M, P), decoded and scored ``batch_size`` images at a time."""
    if device is None:
        device = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    points = len(position)
    low, high = getattr(classifier, "value_range", (0.0, 1.0))
    weights = position.to(device)
    residual_mode = bool(head.settings.get("residual")) and kind == "latent"
    rows = max(1, batch_size // points)  # images whose whole path fits in one batch
    paths, probs = [], []
    with evaluating(classifier, latent_model), torch.no_grad():
        for start in range(0, len(head), rows):
            part = slice(start, start + rows)
            if kind == "latent":
                begin, end = head.original_latents[part].to(device), head.counterfactual_latents[part].to(device)
            else:
                begin, end = head.originals[part].to(device), head.counterfactuals[part].to(device)
            shape = (-1, *[1] * (begin.dim() - 1))
            between = begin[:, None] + weights.view(1, *shape) * (end - begin)[:, None]  # (b, P, ...)
            flat = between.flatten(0, 1)
            if kind == "latent":
                images = latent_model.decode(flat)
                if residual_mode:  # the attack added the original's reconstruction error back to every decode
                    error = head.originals[part].to(device) - latent_model.decode(begin)
                    images = images + error.repeat_interleave(points, 0)
            else:
                images = flat
            images = images.clamp(low, high)  # as the explainers clamp what they decode
            target = head.target[part].to(device).repeat_interleave(points)
            prob = classifier(images).float().softmax(1).gather(1, target[:, None])[:, 0]
            paths.append(as_bytes(images).view(-1, points, *images.shape[1:]))
            probs.append(prob.view(-1, points).cpu())
    return torch.cat(paths), torch.cat(probs)


def decoder_of(explainer: Explainer) -> object | None:
    """The latent model a result's latents live in: the explainer's, or for a whitened attack the model it
    whitens (the pipeline maps a whitened result's latents back to it)."""
    from vcex.models import WhitenedLatentModel

    model = explainer.latent_model
    return model.latent_model if isinstance(model, WhitenedLatentModel) else model


def write_paths(
    out: str | Path,
    result: CounterfactualResult,
    explainer: Explainer | None = None,
    *,
    max_images: int = PATH_IMAGES,
    points: int = PATH_POINTS,
    local: LocalAttribution | None = None,
) -> Path | None:
    """Write the explorer's paths of ``result`` (made by ``explainer``) into ``out``; returns the file, or None
    when nothing can be written: ``max_images`` 0, an empty result, or no explainer for a path that needs its
    models (a DISC sequence needs none)."""
    if max_images < 1 or len(result) == 0:
        return None
    classifier = getattr(explainer, "classifier", None)
    latent_model = decoder_of(explainer) if explainer is not None else None
    if path_kind(result, latent_model) != "sequence" and classifier is None:
        return None
    paths = compute_paths(
        result,
        classifier,
        latent_model,
        points=points,
        max_images=max_images,
        batch_size=getattr(explainer, "batch_size", 256),
        device=getattr(explainer, "device", None),
        local=local,
    )
    return paths.save(out)


__all__ = ["PATH_IMAGES", "PATH_POINTS", "ExplorerPaths", "compute_paths", "write_paths"]
