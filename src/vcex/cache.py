"""Where trained models live, and safe save/load of weights with a record of how they were made.

Weights are safetensors with a JSON record in the file's metadata; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vcex.errors import CacheError
from vcex.records import atomic_path

_RECORD_KEY = "vcex_record"


def cache_dir() -> Path:
    """``$VCEX_HOME`` if set, else the platform's user cache folder + ``/vcex``."""
    if os.environ.get("VCEX_HOME"):
        root = Path(os.environ["VCEX_HOME"]).expanduser()
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches" / "vcex"
    elif sys.platform.startswith("win"):
        root = Path(os.environ.get("LOCALAPPDATA", Path.home())) / "vcex" / "cache"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vcex"
    root.mkdir(parents=True, exist_ok=True)
    return root


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], record: dict) -> Path:
    """Write tensors and a JSON-serialisable record atomically (a crash never leaves half a file)."""
    path = Path(path)
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(contiguous, str(temporary), metadata={_RECORD_KEY: json.dumps(record, sort_keys=True)})
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors and their record; a damaged or foreign file raises :class:`CacheError`."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"weights file {path} does not exist")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CacheError(f"{path} is not a readable safetensors file ({error})") from error
    try:
        record = json.loads(metadata.get(_RECORD_KEY, "{}"))
    except json.JSONDecodeError as error:
        raise CacheError(f"{path} has a damaged vcex record ({error})") from error
    return tensors, record


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, turning key or shape mismatches into one clear :class:`CacheError`."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [name for name in expected if name in tensors and tensors[name].shape != expected[name].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {missing[:4]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:4]}")
        if mismatched:
            name = mismatched[0]
            parts.append(
                f"{name} has shape {tuple(tensors[name].shape)}, the model needs {tuple(expected[name].shape)}"
            )
        raise CacheError(f"weights in {source} do not fit this model's configuration: {'; '.join(parts)}")
    module.load_state_dict(tensors)


def parameter_fingerprint(model: object) -> str:
    """A short hash of a model's parameter shapes and the bytes of a few of its tensors.

    Cheap enough for large models (only the first and last four tensors are hashed) and enough to
    tell two trained models apart; an object without parameters is known only by its type.
    """
    digest = hashlib.sha1(type(model).__name__.encode())
    if isinstance(model, nn.Module):
        state = model.state_dict()
        for name, tensor in state.items():
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        names = list(state)
        for name in names[:4] + names[4:][-4:]:
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_fingerprint(images: torch.Tensor) -> str:
    """A short hash of a tensor's shape and bytes: which images a network was fitted on."""
    digest = hashlib.sha1(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
