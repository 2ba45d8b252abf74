"""The reliability table's bad inputs, in one place: tests/test_reliability.py runs each as a test and
benchmarks/reliability_table.py runs the same list to write docs/benchmarks/reliability.md.

A case is one bad input tried through the CLI (``vcex.cli.main(argv)``, in process) or the Python API; what it
must get is one line naming the problem (``expect``, a regular expression), never a traceback. Each case builds
what it needs (files, tiny models) in a folder of its own; the CLI cases use the embedded MNIST and the weights that
ship with vcex, so nothing is trained.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from safetensors.torch import save_file
from torch import nn

from vcex.errors import CacheError, DatasetNotFoundError, InputError, ModelError, VcexError

# the tiny API cases' images: 1x8x8, three classes
SHAPE = (1, 8, 8)
# what the pickled "weights" would create if anything unpickled them; a case checks it never appears
PICKLE_MARKER = "unpickled.txt"


@dataclass(frozen=True)
class Case:
    """One bad input. ``argv(folder)`` gives a CLI command line; ``call(folder)`` runs an API call that must raise
    ``error`` (or, with ``warns``, go on after one warning); ``expect`` is searched in the one line either gets;
    ``environment(folder)`` is a context the case runs in (a dataset made absent, a disk made full);
    ``after(folder)`` checks what must not have happened (a file unpickled), returning what went wrong or None."""

    id: str
    input: str
    expect: str
    argv: Callable[[Path], list[str]] | None = None
    call: Callable[[Path], object] | None = None
    error: type[Exception] = VcexError
    warns: bool = False
    environment: Callable[[Path], contextlib.AbstractContextManager] | None = None
    after: Callable[[Path], str | None] | None = None

    @property
    def where(self) -> str:
        return "CLI" if self.argv is not None else "API"


@dataclass
class Outcome:
    """What a case got: the exit status (CLI; 1 for an API call that raised), the stderr lines (CLI) or the error's
    text (API), the error's type and a traceback when one escaped (the failure this table exists to catch)."""

    status: int
    lines: list[str]
    error_type: str = ""
    traceback: str = ""

    @property
    def message(self) -> str:
        return " / ".join(self.lines)


def attempt(case: Case, folder: Path) -> Outcome:
    """Run ``case`` in ``folder`` (an empty folder of its own) and say what it got."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = case.environment(folder) if case.environment is not None else contextlib.nullcontext()
    argv = None
    if case.argv is not None:
        with warnings.catch_warnings():  # making the case's files (torch.jit.save warns) is not the CLI's doing
            warnings.simplefilter("ignore")
            argv = case.argv(folder)
    with environment, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = _run_cli(argv) if argv is not None else _run_api(case, folder)
    if case.argv is not None:  # a user sees warnings on stderr, before the error line
        outcome.lines = [str(w.message) for w in caught] + outcome.lines
    elif case.warns and not outcome.error_type:
        outcome.lines = [str(w.message) for w in caught]
    return outcome


def _run_cli(argv: list[str]) -> Outcome:
    from vcex.cli import main

    stderr, stdout = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            status = main(argv)
    except SystemExit as stop:  # argparse's errors
        status = stop.code if isinstance(stop.code, int) else 1
    except Exception as error:  # what a user would see as a traceback
        return Outcome(1, [f"{type(error).__name__}: {error}"], type(error).__name__, traceback.format_exc())
    return Outcome(status, [line for line in stderr.getvalue().splitlines() if line.strip()])


def _run_api(case: Case, folder: Path) -> Outcome:
    try:
        case.call(folder)
    except VcexError as error:
        return Outcome(1, str(error).splitlines(), type(error).__name__)
    except Exception as error:
        return Outcome(1, str(error).splitlines(), type(error).__name__, traceback.format_exc())
    return Outcome(0, [])


def problems(case: Case, outcome: Outcome, folder: Path) -> list[str]:
    """What is wrong with ``outcome`` for ``case`` (empty: the case passes)."""
    found = []
    if outcome.traceback:
        found.append(f"a traceback escaped: {outcome.traceback.strip().splitlines()[-1]}")
    if case.warns:
        if outcome.error_type:
            found.append(f"raised {outcome.error_type} where a warning was expected")
    elif outcome.status == 0:
        found.append("accepted: exit status 0 / nothing raised")
    if len(outcome.lines) != 1:
        found.append(f"{len(outcome.lines)} lines instead of one: {outcome.lines}")
    if case.argv is not None and not (outcome.lines and re.match(r"vcex( \w+)*: error: ", outcome.lines[0])):
        found.append(f"the line does not start with 'vcex: error: ' (or 'vcex COMMAND: error: '): {outcome.lines}")
    if case.argv is None and not case.warns and outcome.error_type and not outcome.traceback:
        if outcome.error_type not in {cls.__name__ for cls in _subclasses(case.error)}:
            found.append(f"raised {outcome.error_type}, expected {case.error.__name__}")
    if not re.search(case.expect, outcome.message):
        found.append(f"the message does not match {case.expect!r}: {outcome.message!r}")
    if case.after is not None and (wrong := case.after(folder)):
        found.append(wrong)
    return found


def _subclasses(cls: type) -> set[type]:
    return {cls}.union(*(_subclasses(sub) for sub in cls.__subclasses__()))


# ---- things the cases build ----------------------------------------------------------------------------------


class _Scripted(nn.Module):
    """A classifier of MNIST's shape whose output is one of the broken kinds a user's model can have."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.linear = nn.Linear(784, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.linear(images.flatten(1))
        if self.kind == "nan":
            return logits * float("nan")
        if self.kind == "softmax":
            return logits.softmax(1)
        if self.kind == "three":
            return logits[:, :3]
        if self.kind == "3d":
            return logits.unsqueeze(-1)
        return logits


def scripted(folder: Path, kind: str = "logits") -> str:
    """A TorchScript classifier of MNIST's shape (1x28x28 in, 10 logits out unless ``kind`` breaks it)."""
    path = folder / f"{kind}.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(_Scripted(kind)), str(path))
    return str(path)


class _Touch:
    """Unpickling this creates PICKLE_MARKER: the proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def pickled(folder: Path, legacy: bool = False) -> str:
    """A torch.save'd (pickled) state dict that would create PICKLE_MARKER if it were ever unpickled (``legacy``:
    in torch's pre-1.6 format, a bare pickle stream rather than a zip archive)."""
    path = folder / "weights.pt"
    state = {"linear.weight": torch.zeros(10, 784), "trap": _Touch(folder / PICKLE_MARKER)}
    torch.save(state, str(path), _use_new_zipfile_serialization=not legacy)
    return str(path)


def never_unpickled(folder: Path) -> str | None:
    return f"the file was unpickled ({PICKLE_MARKER} exists)" if (folder / PICKLE_MARKER).exists() else None


def nothing_written(name: str) -> Callable[[Path], str | None]:
    def check(folder: Path) -> str | None:
        return f"{name} was written" if (folder / name).exists() else None

    return check


def entry_weights(folder: Path, state: dict[str, torch.Tensor] | None = None, truncate: bool = False) -> str:
    """A safetensors file for tests/user_model_factory.py's ``make`` (``state``: other tensors; ``truncate``: cut
    in half)."""
    import user_model_factory

    path = folder / "weights.safetensors"
    save_file(state if state is not None else user_model_factory.make().state_dict(), str(path))
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return str(path)


def text_file(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def bar_folder(
    folder: Path,
    classes: tuple[str, ...] = ("horizontal", "vertical"),
    per_class: int = 6,
    bad_file: bool = False,
    odd_size: bool = False,
) -> Path:
    """A folder dataset of 8x8 grayscale bars, one subfolder per class (``bad_file``: with a text file named .png;
    ``odd_size``: with one 12x12 image)."""
    import numpy as np
    from PIL import Image

    root = folder / "bars"
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = np.zeros((8, 8), np.uint8)
            if k == 0:
                image[i % 6 : i % 6 + 2] = 255
            else:
                image[:, i % 6 : i % 6 + 2] = 255
            Image.fromarray(image).save(root / name / f"{i}.png")
    if bad_file:
        (root / classes[0] / "bad.png").write_bytes(b"hello")
    if odd_size:
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / classes[-1] / "big.png")
    return root


class _Latent(nn.Module):
    """A tiny latent model for 1x8x8 images, broken as ``kind`` says: ``tuple`` (encode returns (mu, logvar), as a
    VAE's often does), ``dict`` (encode returns {"z": mu}), ``small`` (decode makes 4x4 images)."""

    def __init__(self, kind: str = "good") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.kind = kind
        self.encoder, self.decoder = nn.Linear(64, 4), nn.Linear(4, 64)

    def encode(self, images: torch.Tensor) -> object:
        mu = self.encoder(images.flatten(1))
        return {"tuple": (mu, torch.zeros_like(mu)), "dict": {"z": mu}}.get(self.kind, mu)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        decoded = torch.sigmoid(self.decoder(latents))
        return decoded[:, :16].view(-1, 1, 4, 4) if self.kind == "small" else decoded.view(-1, *SHAPE)


def classifier(kind: str = "logits") -> nn.Module:
    """A tiny (untrained) classifier of 1x8x8 images into 3 classes, broken as ``kind`` says."""
    from vcex.models import Classifier

    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 3)]
    if kind == "softmax":
        layers.append(nn.Softmax(dim=1))
    network = nn.Sequential(*layers)
    if kind == "nan":
        return Classifier(lambda x: network(x) * float("nan"), input_shape=SHAPE)
    return Classifier(network, input_shape=SHAPE)


def images(n: int = 2, fill: float = 0.5) -> torch.Tensor:
    return torch.full((n, *SHAPE), fill)


def attack(**options: object):
    """A CounterfactualAttack on the tiny models (``classifier_kind``, ``latent_kind`` select broken ones)."""
    from vcex import CounterfactualAttack

    kind = options.pop("classifier_kind", "logits")
    latent = _Latent(str(options.pop("latent_kind", "good")))
    return CounterfactualAttack(classifier(kind), latent, **{"max_steps": 2, **options})


def _explain(batch: torch.Tensor, target: object = 1, **options: object) -> Callable[[Path], object]:
    return lambda folder: attack(**options).explain(batch, target=target)


def _cli(*words: str) -> Callable[[Path], list[str]]:
    """A command line; ``{d}`` in a word is the case's folder."""
    return lambda folder: [word.format(d=folder) for word in words] + ["--quiet"]


def _explain_cli(*words: str) -> Callable[[Path], list[str]]:
    return _cli("explain", "--out", "{d}/out", "--n", "2", "--max-steps", "2", *words)


def _with(make: Callable[[Path], object], words: Callable[[Path, object], list[str]]) -> Callable[[Path], list[str]]:
    """A command line built around what ``make(folder)`` makes (a file, a folder)."""
    return lambda folder: [*words(folder, make(folder)), "--quiet"]


def _corrupt_cache(folder: Path) -> None:
    """Garbage where a cached model's weights should be."""
    from vcex.cache import load_weights

    path = folder / "mnist-cnn-0123456789.safetensors"
    path.write_bytes(b"not safetensors at all")
    load_weights(path)


def _corrupt_result(folder: Path) -> None:
    from vcex.explainers import CounterfactualResult

    path = folder / "chunk.safetensors"
    path.write_bytes(b"\x00" * 100)
    CounterfactualResult.load(path)


def _truncated_weights(folder: Path) -> None:
    from vcex.cache import load_weights, save_weights

    path = save_weights(folder / "model.safetensors", {"w": torch.ones(100, 100)}, {"name": "x"})
    path.write_bytes(path.read_bytes()[:5000])
    load_weights(path)


def _wrong_weights(folder: Path) -> None:
    from vcex.cache import load_state_into

    load_state_into(nn.Linear(4, 2), {"weight": torch.zeros(3, 4), "bias": torch.zeros(2)}, "weights.safetensors")


def _load_user(spec_maker: Callable[[Path], str], **kwargs: object) -> Callable[[Path], object]:
    from vcex.models.user import load_user_classifier

    return lambda folder: load_user_classifier(spec_maker(folder), **kwargs)


def _descriptors(data: bytes) -> Callable[[Path], object]:
    def call(folder: Path) -> object:
        from vcex.attribution import Descriptors

        return Descriptors.from_csv(text_file(folder, "descriptors.csv", data), files=["a/0.png"])

    return call


def _read_images(make: Callable[[Path], str]) -> Callable[[Path], object]:
    def call(folder: Path) -> object:
        from vcex.data import read_images

        return read_images([make(folder)])

    return call


@contextlib.contextmanager
def no_fashion(folder: Path) -> Iterator[None]:
    """Fashion-MNIST's files absent: the Debian package's folder and $VCEX_FASHION_MNIST point nowhere."""
    with mock.patch("vcex.data.fashion_mnist.DEBIAN_FASHION_DIR", folder / "no-debian-package"):
        with mock.patch.dict(os.environ, {"VCEX_FASHION_MNIST": ""}):
            yield


def failing_writes(code: int, after: int = 0) -> Callable[[Path], contextlib.AbstractContextManager]:
    """Every write of a counterfactual result (a chunk, the final file) after the first ``after`` fails with
    OSError ``code`` (ENOSPC: a full disk; EACCES: a folder the user may not write in, which a chmod cannot make
    for root), leaving half a file behind as a real full disk does."""
    from vcex.explainers import CounterfactualResult

    @contextlib.contextmanager
    def environment(folder: Path) -> Iterator[None]:
        save, calls = CounterfactualResult.save, []

        def failing(self: CounterfactualResult, path: str | Path) -> Path:
            calls.append(path)
            if len(calls) <= after:
                return save(self, path)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"\x00" * 10)  # what got written before the disk filled up
            raise OSError(code, os.strerror(code), str(path))

        with mock.patch.object(CounterfactualResult, "save", failing):
            yield

    return environment


def _fashion_truncated(folder: Path) -> None:
    from vcex.data import load_dataset

    # headers for 10,000 images of 28x28 and their labels, and nothing after them
    header = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (10000, 28, 28))
    (folder / "t10k-images-idx3-ubyte").write_bytes(header)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (10000).to_bytes(4, "big"))
    load_dataset("fashion", "test", root=folder)


LATIN1_CSV = "file,größe\na/0.png,1\n".encode("latin-1")

# fmt: off
CASES: list[Case] = [
    # ---- images through the API: shape, channels, range, dtype, values -----------------------------------
    Case("api-3d-image", "one image without a batch dimension (C, H, W)", r"\(N, C, H, W\).*unsqueeze",
         call=_explain(torch.rand(*SHAPE)), error=InputError),
    Case("api-empty-batch", "an empty batch (0, C, H, W)", r"empty batch", call=_explain(torch.rand(0, *SHAPE)),
         error=InputError),
    Case("api-wrong-channels", "3-channel images for a 1-channel classifier", r"1 channel",
         call=_explain(torch.rand(2, 3, 8, 8)), error=InputError),
    Case("api-wrong-size", "16x16 images for an 8x8 classifier", r"8x8 pixels", call=_explain(torch.rand(2, 1, 16, 16)),
         error=InputError),
    Case("api-0-255", "images in [0, 255]", r"\[0.0, 1.0\].*divide by 255", call=_explain(images(fill=200.0)),
         error=InputError),
    Case("api-uint8", "uint8 images", r"uint8.*/ 255", call=_explain(images().to(torch.uint8)), error=InputError),
    Case("api-int64", "integer (int64) images", r"floating-point", call=_explain(images().long()), error=InputError),
    Case("api-nan-image", "an image with a NaN pixel", r"NaN or inf",
         call=_explain(images().index_put_((torch.tensor([1]),), torch.tensor(float("nan")))), error=InputError),
    Case("api-numpy-images", "a numpy array instead of a tensor", r"must be a torch.Tensor",
         call=_explain(images().numpy()), error=InputError),
    # ---- targets -------------------------------------------------------------------------------------------
    Case("api-target-out-of-range", "target class 7 of a 3-class classifier", r"7.*(0|1|2)",
         call=_explain(images(), target=7), error=InputError),
    Case("api-target-negative", "target class -1", r"-1", call=_explain(images(), target=-1), error=InputError),
    Case("api-target-unknown-rule", "target 'banana' (rules: 'second', 'flip')", r"second",
         call=_explain(images(), target="banana"), error=InputError),
    Case("api-target-length", "3 targets for 2 images", r"one class per image",
         call=_explain(images(), target=torch.tensor([0, 1, 2])), error=InputError),
    Case("api-target-float", "float targets", r"integer class indices", call=_explain(images(), target=torch.ones(2)),
         error=InputError),
    # ---- explainer settings --------------------------------------------------------------------------------
    Case("api-lr-negative", "lr=-0.1", r"lr must be a positive finite number", call=lambda d: attack(lr=-0.1),
         error=InputError),
    Case("api-lr-nan", "lr=NaN", r"lr must be a positive finite number", call=lambda d: attack(lr=float("nan")),
         error=InputError),
    Case("api-max-steps-negative", "max_steps=-5", r"max_steps must be >= 0", call=lambda d: attack(max_steps=-5),
         error=InputError),
    Case("api-threshold-above-1", "threshold=1.5", r"threshold must lie strictly between 0 and 1",
         call=lambda d: attack(threshold=1.5), error=InputError),
    Case("api-batch-size-zero", "batch_size=0", r"batch_size must be >= 1", call=lambda d: attack(batch_size=0),
         error=InputError),
    # ---- models that do not behave -------------------------------------------------------------------------
    Case("api-classifier-softmax", "a classifier that ends in a softmax (probabilities, not logits)",
         r"probabilities.*outputs=\"probabilities\"", call=_explain(images(), classifier_kind="softmax"),
         error=ModelError),
    Case("api-classifier-nan", "a classifier that returns NaN", r"NaN or inf logits",
         call=_explain(images(), classifier_kind="nan"), error=ModelError),
    Case("api-encoder-tuple", "a latent model whose encode() returns (mu, logvar): a warning, mu is taken",
         r"encode\(\) returns a tuple of 2.*first element is taken",
         call=_explain(images(), "second", latent_kind="tuple"), warns=True),
    Case("api-encoder-dict", "a latent model whose encode() returns a dict", r"encode",
         call=_explain(images(), "second", latent_kind="dict"), error=ModelError),
    Case("api-decoder-wrong-size", "a latent model that decodes 4x4 images for 8x8 ones", r"decodes to \(2, 1, 4, 4\)",
         call=_explain(images(), "second", latent_kind="small"), error=ModelError),
    Case("api-device-unknown", "device='tpu'", r"unknown device 'tpu'", call=lambda d: attack(device="tpu"),
         error=InputError),
    Case("api-no-latent-model", "an object without encode/decode as latent model", r"encode",
         call=lambda d: __import__("vcex").CounterfactualAttack(classifier(), object()), error=InputError),
    # ---- files ---------------------------------------------------------------------------------------------
    Case("api-corrupt-cache-file", "a cache file of garbage bytes", r"not a readable safetensors file",
         call=_corrupt_cache, error=CacheError),
    Case("api-corrupt-chunk", "a saved chunk of zero bytes", r"cannot read counterfactual result",
         call=_corrupt_result, error=CacheError),
    Case("api-truncated-weights", "a safetensors weights file cut short", r"not a readable safetensors file",
         call=_truncated_weights, error=CacheError),
    Case("api-weights-wrong-shape", "weights whose tensors have the wrong shape", r"weight has shape \(3, 4\)",
         call=_wrong_weights, error=CacheError),
    Case("api-pickled-torchscript", "a pickled torch.save file given as a TorchScript classifier",
         r"not a TorchScript file: it was saved with torch.save, a pickle, which vcex never loads",
         call=_load_user(pickled), error=ModelError, after=never_unpickled),
    Case("api-descriptors-latin1", "a descriptor CSV in Latin-1, not UTF-8", r"descriptors.csv.*UTF-8",
         call=_descriptors(LATIN1_CSV), error=InputError),
    Case("api-non-image-file", "a text file given as an image", r"notes.png",
         call=_read_images(lambda d: text_file(d, "notes.png", b"hello")), error=InputError),
    Case("api-unknown-dataset", "dataset 'cifar'", r"cifar.*mnist",
         call=lambda d: __import__("vcex.data").data.load_dataset("cifar"), error=InputError),
    Case("api-fashion-missing", "Fashion-MNIST asked for where its files are not", r"not found.*apt-get install",
         call=lambda d: __import__("vcex.data").data.load_dataset("fashion", "test"), error=DatasetNotFoundError,
         environment=no_fashion),
    Case("api-fashion-truncated", "Fashion-MNIST IDX files cut short", r"is truncated", call=_fashion_truncated,
         error=DatasetNotFoundError),
    Case("api-unknown-zoo-model", "zoo model 'mnist-resnet'", r"mnist-resnet",
         call=lambda d: __import__("vcex.models").models.load_model("mnist-resnet", progress=False), error=InputError),
    Case("api-unknown-latent-model", "zoo latent model 'mnist-gan'", r"unknown model 'mnist-gan'",
         call=lambda d: __import__("vcex.models").models.load_latent_model("mnist-gan", progress=False),
         error=InputError),
    Case("api-classifier-as-latent-model", "a zoo classifier asked for as a latent model", r"not a latent model",
         call=lambda d: __import__("vcex.models").models.load_latent_model("mnist-cnn", progress=False),
         error=InputError),
    # ---- the CLI: names --------------------------------------------------------------------------------------
    Case("cli-unknown-method", "--method nosuch", r"unknown method 'nosuch'.*attack",
         argv=_explain_cli("--method", "nosuch")),
    Case("cli-unknown-dataset", "--dataset cifar", r"cifar.*mnist", argv=_explain_cli("--dataset", "cifar")),
    Case("cli-unknown-classifier", "--classifier resnet on mnist", r"resnet.*does not belong",
         argv=_explain_cli("--classifier", "resnet")),
    Case("cli-unknown-face-task", "--dataset faces --classifier bald", r"bald",
         argv=_explain_cli("--dataset", "faces", "--classifier", "bald")),
    Case("cli-unknown-preset", "--preset fast", r"unknown preset 'fast'", argv=_explain_cli("--preset", "fast")),
    Case("cli-unknown-target-rule", "--target banana", r"banana", argv=_explain_cli("--target", "banana")),
    Case("cli-target-out-of-range", "--target 12 on a 10-class dataset", r"12", argv=_explain_cli("--target", "12")),
    Case("cli-space-without-style", "--space style on MNIST (no style generator)", r"needs a style generator",
         argv=_explain_cli("--space", "style")),
    Case("cli-option-not-used", "--method linear --lr 0.5 (linear takes no lr)", r"does not use --lr",
         argv=_cli("explain", "--out", "{d}/out", "--method", "linear", "--lr", "0.5")),
    Case("cli-device-unknown", "--device tpu", r"unknown device 'tpu'", argv=_explain_cli("--device", "tpu")),
    Case("cli-unknown-suite", "vcex benchmark --suite cifar", r"cifar",
         argv=_cli("benchmark", "--suite", "cifar", "--out", "{d}/out")),
    Case("cli-unknown-row", "vcex benchmark --methods nosuch", r"nosuch",
         argv=_cli("benchmark", "--suite", "mnist", "--methods", "nosuch", "--n", "2", "--out", "{d}/out")),
    Case("cli-global-unknown-reader", "vcex global --reader magic", r"--reader: invalid choice: 'magic'",
         argv=_cli("global", "--reader", "magic", "--out", "{d}/out")),
    Case("cli-amortized-lr-without-refine", "--method amortized --lr 0.1 (its one pass takes no step)",
         r"--lr is the step of the amortized explainer's refinement",
         argv=_cli("explain", "--method", "amortized", "--lr", "0.1", "--out", "{d}/out")),
    Case("cli-global-rounds-digits", "vcex global --rounds 3 on MNIST", r"--rounds > 1.*faces",
         argv=_cli("global", "--rounds", "3", "--out", "{d}/out")),
    Case("cli-preview-unknown", "vcex datasets preview cifar", r"cifar",
         argv=_cli("datasets", "preview", "cifar", "--out", "{d}/x.png")),
    # ---- the CLI: numbers ------------------------------------------------------------------------------------
    Case("cli-n-zero", "--n 0", r"--n: expected a whole number >= 1",
         argv=_cli("explain", "--out", "{d}/o", "--n", "0")),
    Case("cli-n-text", "--n ten", r"--n: expected a whole number",
         argv=_cli("explain", "--out", "{d}/o", "--n", "ten")),
    Case("cli-n-too-many", "--n 999999 (MNIST's test split has 1,000)", r"--n must lie in \[1, ",
         argv=_cli("explain", "--out", "{d}/o", "--n", "999999")),
    Case("cli-lr-negative", "--lr -1", r"--lr: expected a positive finite number", argv=_explain_cli("--lr", "-1")),
    Case("cli-lr-nan", "--lr nan", r"--lr: expected a positive finite number", argv=_explain_cli("--lr", "nan")),
    Case("cli-max-steps-negative", "--max-steps -3", r"--max-steps: expected a whole number >= 0",
         argv=_cli("explain", "--out", "{d}/o", "--max-steps", "-3")),
    Case("cli-threshold-high", "--threshold 1.5", r"strictly between 0 and 1", argv=_explain_cli("--threshold", "1.5")),
    Case("cli-threshold-text", "--threshold high", r"or 'auto'", argv=_explain_cli("--threshold", "high")),
    Case("cli-batch-size-zero", "--batch-size 0", r"--batch-size: expected a whole number >= 1",
         argv=_explain_cli("--batch-size", "0")),
    Case("cli-threads-negative", "--threads -2", r"--threads", argv=_explain_cli("--threads", "-2")),
    # ---- the CLI: files and folders -------------------------------------------------------------------------
    Case("cli-out-empty", "--out ''", r"--out: is empty", argv=_cli("explain", "--out", "")),
    Case("cli-out-is-a-file", "--out naming an existing file", r"is a file",
         argv=_with(lambda d: text_file(d, "taken", b"x"), lambda d, f: ["explain", "--n", "2", "--out", f])),
    Case("cli-out-under-a-file", "--out inside an existing file (file/run)", r"is a file",
         argv=_with(lambda d: text_file(d, "taken", b"x"), lambda d, f: ["explain", "--n", "2", "--out", f"{f}/run"])),
    Case("cli-folder-missing", "--dataset folder:PATH that does not exist", r"nowhere not found",
         argv=_explain_cli("--dataset", "folder:{d}/nowhere")),
    Case("cli-folder-one-class", "--dataset folder:PATH with one class", r"(?i)class",
         argv=_with(lambda d: bar_folder(d, classes=("only",)),
                    lambda d, root: ["explain", "--dataset", f"folder:{root}", "--out", f"{d}/o"])),
    Case("cli-folder-bad-image", "--dataset folder:PATH holding a text file named .png", r"cannot read image .*bad.png",
         argv=_with(lambda d: bar_folder(d, bad_file=True),
                    lambda d, root: ["explain", "--dataset", f"folder:{root}", "--out", f"{d}/o"])),
    Case("cli-folder-mixed-sizes", "--dataset folder:PATH of 8x8 and 12x12 images", r"must share a size.*@SIZE",
         argv=_with(lambda d: bar_folder(d, odd_size=True),
                    lambda d, root: ["explain", "--dataset", f"folder:{root}", "--out", f"{d}/o"])),
    Case("cli-fashion-missing", "--dataset fashion where its files are not (no Debian package, VCEX_FASHION_MNIST "
         "unset)", r"not found.*apt-get install", argv=_explain_cli("--dataset", "fashion"), environment=no_fashion),
    Case("cli-disk-full", "a full disk while the counterfactuals are written (simulated: every write fails with "
         "ENOSPC)", r"No space left on device.*rerun", argv=_explain_cli(), environment=failing_writes(errno.ENOSPC)),
    Case("cli-out-unwritable", "an --out folder the user may not write in (simulated: writes fail with EACCES, as "
         "root ignores chmod)", r"Permission denied.*--out", argv=_explain_cli(),
         environment=failing_writes(errno.EACCES)),
    Case("cli-images-missing", "--images a file that does not exist", r"does not exist",
         argv=_cli("explain", "--out", "{d}/o", "--images", "{d}/missing.png")),
    Case("cli-images-not-an-image", "--images a text file named .png", r"notes.png",
         argv=_with(lambda d: text_file(d, "notes.png", b"hello"),
                    lambda d, f: ["explain", "--out", f"{d}/o", "--images", f])),
    Case("cli-images-and-n", "--images with --n", r"drop --n",
         argv=_cli("explain", "--out", "{d}/o", "--n", "3", "--images", "{d}/a.png")),
    Case("cli-descriptors-latin1", "vcex global --descriptors CSV in Latin-1, not UTF-8", r"descriptors.csv.*UTF-8",
         argv=_with(lambda d: (bar_folder(d), text_file(d, "descriptors.csv", LATIN1_CSV)),
                    lambda d, made: ["global", "--dataset", f"folder:{made[0]}", "--descriptors", made[1],
                                     "--out", f"{d}/o"])),
    Case("cli-descriptors-on-mnist", "vcex global --descriptors on MNIST", r"folder:PATH",
         argv=_cli("global", "--descriptors", "{d}/x.csv", "--out", "{d}/o")),
    # ---- the CLI: a user's own classifier --------------------------------------------------------------------
    Case("cli-classifier-missing-file", "--classifier model.pt that does not exist", r"does not exist",
         argv=_explain_cli("--classifier", "{d}/model.pt")),
    Case("cli-classifier-pickled", "--classifier a pickled torch.save file (refused, never unpickled)",
         r"not a TorchScript file: it was saved with torch.save, a pickle, which vcex never loads",
         argv=_with(pickled, lambda d, f: ["explain", "--classifier", f, "--out", f"{d}/o"]),
         after=never_unpickled),
    Case("cli-classifier-legacy-pickle", "--classifier a torch.save file of the legacy (pre-1.6) format",
         r"not a TorchScript file: it was saved with torch.save",
         argv=_with(lambda d: pickled(d, legacy=True), lambda d, f: ["explain", "--classifier", f, "--out", f"{d}/o"]),
         after=never_unpickled),
    Case("cli-weights-pickled", "--weights a pickled .pt for an entry point (refused, never unpickled)",
         r"not a safetensors file: it was saved with torch.save, a pickle, which vcex never loads",
         argv=_with(pickled, lambda d, f: ["explain", "--classifier", "user_model_factory:make", "--weights", f,
                                           "--out", f"{d}/o"]),
         after=never_unpickled),
    Case("cli-weights-truncated", "--weights a safetensors file cut in half", r"not a readable safetensors file",
         argv=_with(lambda d: entry_weights(d, truncate=True),
                    lambda d, f: ["explain", "--classifier", "user_model_factory:make", "--weights", f,
                                  "--out", f"{d}/o"])),
    Case("cli-weights-wrong-keys", "--weights with other tensor names", r"missing keys",
         argv=_with(lambda d: entry_weights(d, {"conv.weight": torch.zeros(2)}),
                    lambda d, f: ["explain", "--classifier", "user_model_factory:make", "--weights", f,
                                  "--out", f"{d}/o"])),
    Case("cli-weights-without-classifier", "--weights without a --classifier of one's own", r"go with your own",
         argv=_explain_cli("--weights", "{d}/w.safetensors")),
    Case("cli-unknown-entry-point", "--classifier nosuchpackage.models:make", r"cannot import module",
         argv=_explain_cli("--classifier", "nosuchpackage.models:make")),
    Case("cli-normalize-bad", "--normalize 0.5", r"not MEAN/STD",
         argv=_with(scripted, lambda d, f: ["explain", "--classifier", f, "--normalize", "0.5", "--out", f"{d}/o"])),
    Case("cli-normalize-zero-std", "--normalize 0.5/0", r"std must be a positive",
         argv=_with(scripted, lambda d, f: ["explain", "--classifier", f, "--normalize", "0.5/0", "--out", f"{d}/o"])),
    Case("cli-classes-missing", "--classes a file that does not exist", r"--classes file .* does not exist",
         argv=_with(scripted, lambda d, f: ["explain", "--classifier", f, "--classes", f"{d}/names.txt",
                                            "--out", f"{d}/o"])),
    Case("cli-classes-wrong-count", "--classes naming 3 classes for a 10-class dataset", r"names 3 classes",
         argv=_with(lambda d: (scripted(d), text_file(d, "names.txt", b"a\nb\nc\n")),
                    lambda d, m: ["explain", "--classifier", m[0], "--classes", m[1], "--out", f"{d}/o"])),
    Case("cli-classes-latin1", "--classes a file in Latin-1, not UTF-8", r"names.txt.*UTF-8",
         argv=_with(lambda d: (scripted(d), text_file(d, "names.txt", "größe\n".encode("latin-1"))),
                    lambda d, m: ["explain", "--classifier", m[0], "--classes", m[1], "--out", f"{d}/o"])),
    Case("cli-classifier-nan", "--classifier a model that returns NaN", r"NaN",
         argv=_with(lambda d: scripted(d, "nan"), lambda d, f: ["explain", "--classifier", f, "--out", f"{d}/o"])),
    Case("cli-classifier-softmax", "--classifier a model that ends in a softmax", r"probabilities",
         argv=_with(lambda d: scripted(d, "softmax"), lambda d, f: ["explain", "--classifier", f, "--out", f"{d}/o"])),
    Case("cli-classifier-3-classes", "--classifier a 3-class model on a 10-class dataset", r"3 classes.*10",
         argv=_with(lambda d: scripted(d, "three"), lambda d, f: ["explain", "--classifier", f, "--out", f"{d}/o"])),
    Case("cli-classifier-3d-output", "--classifier a model returning (N, 10, 1)", r"shape \(N, classes\)",
         argv=_with(lambda d: scripted(d, "3d"), lambda d, f: ["explain", "--classifier", f, "--out", f"{d}/o"])),
]
# fmt: on
