"""A user's own classifier from a file or a Python entry point, loaded without unpickling and checked once.

Three forms, besides the zoo's names:

- a TorchScript file (``model.pt``/``.pth``, saved with ``torch.jit.save``), read by ``torch.jit.load``, which
  rebuilds TorchScript code and tensors and runs no pickled Python objects;
- an entry point ``package.module:factory``: ``factory()`` returns an ``nn.Module``, whose weights come from a
  safetensors file (``weights=``) loaded with ``strict=True``;
- an ONNX file (``model.onnx``), run by onnxruntime as a black box (:mod:`vcex.models.blackbox`): queries only,
  no gradients. ``black_box=True`` runs the other two forms as black boxes too.

>>> classifier = load_user_classifier("user.pt", mean=[0.286], std=[0.353], input_shape=(1, 28, 28))
>>> check_user_classifier(classifier, test_images[:8], num_classes=10)
"""

from __future__ import annotations

import hashlib
import importlib
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vcex.errors import InputError, ModelError
from vcex.models.classifiers import Classifier, checked_logits
from vcex.models.state import evaluating

# file endings read as TorchScript, and as ONNX (always a black box)
SCRIPT_SUFFIXES = (".pt", ".pth", ".ts")
ONNX_SUFFIXES = (".onnx",)
# package.module:factory, each part a Python identifier
ENTRY_POINT = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# how a file of torch.save's legacy (pre-1.6) format begins: pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
# the option that gives an entry point's weights, by the option that names the model
WEIGHT_FLAGS = {"--classifier": "--weights", "--latent-model": "--latent-weights"}
# images the one check runs the model on: enough to see its output shape, few enough to cost nothing
CHECK_IMAGES = 8


def is_user_classifier(spec: str | None) -> bool:
    """Whether ``--classifier`` names a user's model (a TorchScript or ONNX file, or an entry point), not a zoo
    task."""
    if spec is None:
        return False
    return (
        spec.lower().endswith(SCRIPT_SUFFIXES + ONNX_SUFFIXES) or bool(ENTRY_POINT.match(spec)) or Path(spec).is_file()
    )


def parse_normalize(text: str) -> tuple[list[float], list[float]]:
    """``--normalize``: ``MEAN/STD``, each one number (every channel) or one per channel separated by commas
    (``0.5,0.5,0.5/0.25,0.25,0.25``); two numbers ``MEAN,STD`` are also read as one mean and one std."""
    parts = text.split("/")
    if len(parts) == 1 and text.count(",") == 1:
        parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        mean, std = ([float(v) for v in part.split(",")] for part in parts)
    except ValueError:
        raise InputError(
            f"--normalize {text!r} is not MEAN/STD: give e.g. 0.286/0.353, or per channel 0.5,0.5,0.5/0.2,0.2,0.2"
        ) from None
    if len(mean) != len(std):
        raise InputError(
            f"--normalize {text!r} has {len(mean)} means but {len(std)} stds: give one of each per channel"
        )
    if not all(s > 0 and s != float("inf") for s in std):
        raise InputError(f"--normalize {text!r}: every std must be a positive finite number")
    return mean, std


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--classes file {path} does not exist: give a text file with one class name per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"--classes file {path} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#x}); "
            "save it as UTF-8"
        ) from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InputError(f"--classes file {path} is empty: write one class name per line")
    return names


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_pickle(path: Path) -> bool:
    """Whether ``path`` is a ``torch.save`` file: a zip archive with a pickle but no TorchScript code, or a bare
    pickle (older torch). Only the archive's names and the first byte are read."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return not any(name.endswith("constants.pkl") or "/code/" in name for name in names)
    with path.open("rb") as file:
        data = file.read()
    # a bare pickle: PROTO first and STOP last; or torch's legacy format, which opens with its pickled magic number
    return (data[:1] == b"\x80" and data[-1:] == b".") or data.startswith(LEGACY_TORCH_MAGIC)


def load_torchscript(path: Path, map_location: str | torch.device = "cpu", flag: str = "--classifier") -> nn.Module:
    """A TorchScript file as a module (``torch.jit.load``: no pickled Python objects run); one-line errors that
    name ``flag``, the option the file came from."""
    if not path.is_file():
        raise InputError(f"{flag} file {path} does not exist")
    if is_pickle(path):
        raise ModelError(
            f"{flag} {path} is not a TorchScript file: it was saved with torch.save, a pickle, which vcex "
            "never loads (unpickling runs code from the file); save the model with "
            "torch.jit.save(torch.jit.script(model), PATH), or its state_dict as safetensors and give "
            f"{flag} package.module:factory {WEIGHT_FLAGS.get(flag, '--weights')} FILE.safetensors"
        )
    try:
        with warnings.catch_warnings():
            # recent torch marks TorchScript deprecated in favour of torch.export; the files it wrote still load
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=map_location)
    except (RuntimeError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        other = ", export it to ONNX (FILE.onnx)," if flag == "--classifier" else ""
        raise ModelError(
            f"{flag} {path} is not a TorchScript file ({first[:160]}); save your model with "
            f"torch.jit.save(torch.jit.script(model), PATH) or torch.jit.trace{other} or name a factory as "
            f"package.module:factory with {WEIGHT_FLAGS[flag]} FILE.safetensors"
        ) from None


def _load_entry_point(spec: str, flag: str = "--classifier") -> nn.Module:
    module_name, factory_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(
            f"{flag} {spec}: cannot import module {module_name!r} ({error}); put its folder on PYTHONPATH"
        ) from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise InputError(f"{flag} {spec}: module {module_name!r} has no function {factory_name!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"{flag} {spec}: {factory_name}() must return an nn.Module, got {type(model).__name__}")
    return model


def load_weights(model: nn.Module, path: str | Path, flag: str = "--weights") -> None:
    """Load a safetensors state dict into ``model`` (strictly: every key and shape must match); errors name
    ``flag``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{flag} file {path} does not exist")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        if is_pickle(path):
            raise InputError(
                f"{flag} {path} is not a safetensors file: it was saved with torch.save, a pickle, which vcex "
                "never loads (unpickling runs code from the file); save the state dict with "
                "safetensors.torch.save_file(model.state_dict(), 'FILE.safetensors')"
            ) from None
        raise InputError(f"{flag} {path} is not a readable safetensors file ({error})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelError(
            f"{flag} {path} does not fit the model: missing keys {missing or 'none'}, unexpected keys "
            f"{unexpected or 'none'}; save the state_dict of the same architecture the factory builds"
        )
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise ModelError(f"{flag} {path}: tensors of the wrong shape (file != model): {'; '.join(wrong)}")
    model.load_state_dict(state, strict=True)


def load_user_classifier(
    spec: str,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    classes: str | Path | Sequence[str] | None = None,
    input_shape: tuple[int, int, int] | None = None,
    map_location: str | torch.device = "cpu",
    black_box: bool = False,
) -> Classifier:
    """A user's classifier as a :class:`~vcex.models.Classifier` on [0, 1] images of ``input_shape``.

    Args:
        spec: a TorchScript file, an ONNX file (always a black box), or ``package.module:factory`` (a function
            returning an ``nn.Module``).
        weights: a safetensors state dict for the entry point's module (not for a TorchScript or ONNX file).
        mean, std: per-channel normalisation the model expects (applied by the wrapper, not the model).
        classes: a text file with one class name per line, or the names.
        black_box: query the model as a :class:`~vcex.models.blackbox.BlackBoxClassifier` (no gradients, queries
            counted), which only the black-box methods can explain.

    The result's ``source`` says what was loaded (path and sha256, or the entry point and its weights' sha256;
    ``black_box``), for metrics.json. Check it on data with :func:`check_user_classifier` before any work.
    """
    from vcex.models.blackbox import BlackBoxClassifier

    if (mean is None) != (std is None):
        raise InputError("give both mean and std (--normalize MEAN/STD), or neither")
    names = read_class_names(classes) if isinstance(classes, (str, Path)) else classes
    onnx = spec.lower().endswith(ONNX_SUFFIXES)
    if ENTRY_POINT.match(spec) and not spec.lower().endswith(SCRIPT_SUFFIXES + ONNX_SUFFIXES):
        network = _load_entry_point(spec)
        source: dict[str, object] = {"entry_point": spec}
        if weights is not None:
            load_weights(network, weights)
            source |= {"weights": str(Path(weights).resolve()), "weights_sha256": file_sha256(Path(weights))}
        network = network.to(map_location)
    else:
        if weights is not None:
            raise InputError(
                "--weights is for an entry point (package.module:factory); a TorchScript or ONNX file holds its own "
                "weights"
            )
        path = Path(spec)
        network = None if onnx else load_torchscript(path, map_location)
        source = {"file": str(path.resolve()), "sha256": file_sha256(path) if path.is_file() else ""}
    options = {"mean": mean, "std": std, "input_shape": input_shape, "class_names": names}
    # a box's class count comes from its answers (or the ONNX file); check_user_classifier compares --classes with it
    if onnx:
        classifier = BlackBoxClassifier.from_onnx(spec, **options)
    elif black_box:
        classifier = BlackBoxClassifier(network, None, **options)
    else:
        classifier = Classifier(network, **options)
    if onnx or black_box:
        source["black_box"] = True
    if mean is not None:
        source |= {"mean": list(mean), "std": list(std)}
    classifier.source = source
    return classifier


def source_arguments(source: dict) -> list[str]:
    """The CLI words that load the classifier a ``source`` record describes (for a recorded command line)."""
    words = ["--classifier", source.get("entry_point") or source["file"]]
    if "weights" in source:
        words += ["--weights", source["weights"]]
    if "mean" in source:
        words += ["--normalize", ",".join(map(str, source["mean"])) + "/" + ",".join(map(str, source["std"]))]
    if source.get("black_box") and not words[1].lower().endswith(ONNX_SUFFIXES):
        words += ["--black-box"]
    return words


def latent_source_arguments(source: dict) -> list[str]:
    """The CLI words that load the latent model a ``source`` record of :func:`load_user_latent_model` describes."""
    words = ["--latent-model", source.get("entry_point") or source["file"]]
    return words + (["--latent-weights", source["weights"]] if "weights" in source else [])


def check_user_classifier(classifier: Classifier, images: torch.Tensor, num_classes: int) -> None:
    """Run ``classifier`` once on the first few ``images`` (N, C, H, W) in [0, 1], in eval mode and without
    changing it, and check it returns finite logits (N, ``num_classes``) and as many class names, if it has any.

    Raises:
        ModelError: in one line, what is wrong (shape, class count with both numbers, NaN, probabilities).
    """
    sample = images[:CHECK_IMAGES].to(classifier.device)
    with evaluating(classifier), torch.no_grad():
        logits = checked_logits(classifier, sample)
    if logits.shape[1] != num_classes:
        raise ModelError(
            f"the classifier returns {logits.shape[1]} classes but the dataset has {num_classes}: explain it on a "
            f"dataset with {logits.shape[1]} classes, or give a model with {num_classes} outputs"
        )
    names = classifier.class_names
    if names is not None and len(names) != num_classes:
        raise InputError(f"--classes names {len(names)} classes but the dataset and the classifier have {num_classes}")


def load_user_latent_model(
    spec: str, weights: str | Path | None = None, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """A user's latent model (``encode``/``decode``) from the forms ``--classifier`` takes: a folder written by
    ``vcex train-style`` (returned as its :class:`~vcex.models.stylex.StylExAutoencoder`, with W and StyleSpace), a
    TorchScript file whose
    module exports ``encode`` and ``decode`` (``@torch.jit.export``), or ``package.module:factory`` returning an
    ``nn.Module`` with both, its weights from ``weights`` (safetensors). Returned as vcex's
    :class:`~vcex.models.latent.UserLatentModel` (whose ``encode`` also takes a VAE's ``(mean, log-variance)``),
    with ``source`` recording what was loaded. Check it on data with :func:`check_user_latent_model`."""
    from vcex.models.latent import UserLatentModel

    flag = "--latent-model"
    from vcex.models.stylex import SHIPPED_STYLEX, WEIGHTS_FILE, load_stylex, resolve_stylex

    stylex_folder = resolve_stylex(spec)
    if stylex_folder is not None:  # a style generator trained by `vcex train-style` (or shipped): W and StyleSpace
        if weights is not None:
            raise InputError("--latent-weights is for an entry point; a train-style folder holds its own weights")
        stylex = load_stylex(stylex_folder).to(map_location)
        folder = stylex_folder if stylex_folder.is_dir() else stylex_folder.parent
        where = {"stylex": spec} if spec in SHIPPED_STYLEX else {"train_style": str(folder.resolve())}
        stylex.source = {**where, "sha256": file_sha256(folder / WEIGHTS_FILE)}
        return stylex
    if ENTRY_POINT.match(spec) and not spec.lower().endswith(SCRIPT_SUFFIXES):
        model = _load_entry_point(spec, flag)
        source: dict[str, object] = {"entry_point": spec}
        if weights is not None:
            load_weights(model, weights, "--latent-weights")
            source |= {"weights": str(Path(weights).resolve()), "weights_sha256": file_sha256(Path(weights))}
        model = model.to(map_location)
    else:
        if weights is not None:
            raise InputError(
                "--latent-weights is for an entry point (package.module:factory); a TorchScript file holds its own "
                "weights"
            )
        if spec.lower().endswith(ONNX_SUFFIXES):
            raise InputError(
                f"--latent-model {spec}: an ONNX file is a black box; a latent model must be differentiable: give a "
                "TorchScript file exporting encode and decode, or package.module:factory"
            )
        path = Path(spec)
        model = load_torchscript(path, map_location, flag)
        source = {"file": str(path.resolve()), "sha256": file_sha256(path)}
    missing = [name for name in ("encode", "decode") if not callable(getattr(model, name, None))]
    if missing:
        how = "mark them @torch.jit.export before torch.jit.script" if "file" in source else "define them"
        raise ModelError(f"--latent-model {spec} has no {' or '.join(missing)} method: {how}")
    latent_model = UserLatentModel(model)
    latent_model.source = source
    return latent_model


# how far outside the images' [0, 1] a decoder's output may stray (float error of a final sigmoid: none)
DECODE_RANGE_TOLERANCE = 1e-2


def check_user_latent_model(latent_model: object, images: torch.Tensor) -> None:
    """Encode and decode the first few ``images`` (N, C, H, W) in [0, 1] once, in eval mode and without changing
    the model, and check the round trip gives finite images of their shape in [0, 1].

    Raises:
        ModelError: in one line, what is wrong (a failing call, the shape with both numbers, NaN, the range).
    """
    from vcex.models.latent import as_latent_model

    latent_model = as_latent_model(latent_model)
    sample = images[:CHECK_IMAGES]
    with evaluating(latent_model), torch.no_grad():
        try:
            latents = latent_model.encode(sample)
            if not bool(torch.isfinite(latents).all()):
                raise ModelError("the latent model's encode() returned NaN or inf latents on test images")
            decoded = latent_model.decode(latents)
        except RuntimeError as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelError(
                f"the latent model failed on images of shape {tuple(sample.shape)}: {first[:160]}; it must encode "
                "the dataset's images and decode its own latents"
            ) from None
    if not isinstance(decoded, torch.Tensor) or decoded.shape != sample.shape:
        got = tuple(decoded.shape) if isinstance(decoded, torch.Tensor) else type(decoded).__name__
        raise ModelError(
            f"the latent model decodes {tuple(sample.shape)} images to {got}: decode(encode(x)) must give images of "
            "x's shape; use a latent model made for this dataset's images"
        )
    if not bool(torch.isfinite(decoded).all()):
        raise ModelError("the latent model's decode() returned NaN or inf pixels on test images")
    low, high = float(decoded.min()), float(decoded.max())
    if low < -DECODE_RANGE_TOLERANCE or high > 1 + DECODE_RANGE_TOLERANCE:
        raise ModelError(
            f"the latent model decodes to values in [{low:.3g}, {high:.3g}], but images are in [0, 1]: end its "
            "decoder in a sigmoid (or map a tanh's [-1, 1] by (x + 1) / 2)"
        )
