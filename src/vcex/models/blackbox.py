"""Black-box classifiers: any callable images -> scores, queried without gradients and counted.

A black box answers queries and nothing else: a Python function, a TorchScript file run as a box, or an ONNX
model through onnxruntime (``pip install "vcex[onnx]"``). :class:`BlackBoxClassifier` feeds it detached images
under ``torch.no_grad``, in batches of ``batch_size``, checks every answer (shape (N, K), finite; probabilities
in [0, 1] summing to 1), returns logits (log-probabilities for a model that answers probabilities) and counts
the images it queried in ``queries``. Methods that need gradients refuse it (``vcex.explainers.registry``).

>>> black_box = BlackBoxClassifier.from_onnx("model.onnx", mean=[0.1307], std=[0.3081])
>>> logits = black_box(images)            # (N, 10), no grad
>>> black_box.queries                     # N
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vcex.checks import check_count, short_list
from vcex.errors import InputError, ModelError
from vcex.models.classifiers import OUTPUTS, Classifier

# how far a row of declared probabilities may sum from 1 (float32 softmax in another runtime: ~1e-6)
PROBABILITY_SUM_TOLERANCE = 1e-3
ONNX_INSTALL = 'pip install "vcex[onnx]"'


def is_black_box(model: object) -> bool:
    """Whether ``model`` is, or wraps, a :class:`BlackBoxClassifier` (so it answers queries only)."""
    return isinstance(model, nn.Module) and any(isinstance(module, BlackBoxClassifier) for module in model.modules())


class _Answers(nn.Module):
    """The box itself: calls ``function`` and checks what it answers (tensor or array, (N, K), finite).

    A ``function`` that is an ``nn.Module`` is a submodule here, so vcex's eval-mode helpers reach (and
    restore) its mode like any model's."""

    def __init__(self, function: Callable, num_classes: int | None, outputs: str) -> None:
        super().__init__()
        self.function = function
        self.num_classes = num_classes
        self.outputs = outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        try:
            answer = self.function(images)
        except (RuntimeError, ValueError, TypeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelError(
                f"the black box failed on images of shape {tuple(images.shape)}: {first[:200]}; check the number "
                "of channels and the image size it expects"
            ) from None
        if isinstance(answer, np.ndarray):
            answer = torch.from_numpy(answer)
        if not isinstance(answer, torch.Tensor):
            raise ModelError(f"the black box must answer a tensor or array (N, K), got a {type(answer).__name__}")
        answer = answer.detach().to(images.device, torch.get_default_dtype())
        n = images.shape[0]
        # (N, 1) is a binary classifier's one output (a logit, or p of class 1), widened by Classifier.forward
        classes = (self.num_classes,) if self.num_classes != 2 else (2, 1)
        if answer.dim() != 2 or answer.shape[0] != n or (self.num_classes and answer.shape[1] not in classes):
            expected = f"({n}, {self.num_classes})" if self.num_classes else f"({n}, K)"
            raise ModelError(
                f"the black box answered shape {tuple(answer.shape)} for {n} images; it must answer {expected}, "
                "one score per class"
            )
        if self.num_classes is None:
            if answer.shape[1] < 2:
                raise ModelError(f"the black box answered {answer.shape[1]} class; give num_classes=2 for one output")
            self.num_classes = answer.shape[1]  # held from the first answer on: every later one must match
        bad = (~torch.isfinite(answer).all(1)).nonzero().flatten().tolist()
        if bad:
            raise ModelError(f"the black box answered NaN or inf for images {short_list(bad)} of this batch")
        if self.outputs == "probabilities":
            off = (answer < 0) | (answer > 1)
            sums = (answer.sum(1) - 1).abs() > PROBABILITY_SUM_TOLERANCE
            if bool(off.any()) or (answer.shape[1] > 1 and bool(sums.any())):
                raise ModelError(
                    'the black box was declared to answer probabilities (outputs="probabilities"), but its rows '
                    'are not in [0, 1] summing to 1; if it answers logits, declare outputs="logits"'
                )
        return answer


class BlackBoxClassifier(Classifier):
    """A classifier known only by its answers: ``fn`` maps images (N, C, H, W) in [0, 1] (after ``mean``/``std``
    normalisation, if given) to logits or probabilities (N, K); vcex never sees its gradients.

    ``forward(images)`` detaches the images, queries ``fn`` under ``torch.no_grad`` in batches of ``batch_size``,
    checks each answer and returns logits (N, K) without grad: ``fn``'s logits, or the log of its probabilities.
    ``queries`` counts the images queried since construction or :meth:`reset_queries`.

    Args:
        fn: the box: a callable (a function, an ``nn.Module``, an onnxruntime session through :meth:`from_onnx`)
            answering a tensor or NumPy array (N, K); a binary box may answer (N, 1).
        num_classes: K, checked on every answer; None: taken from the first answer and held.
        outputs: ``"logits"`` or ``"probabilities"`` (rows in [0, 1] summing to 1; their log is taken).
        batch_size: images per query (bounds the box's memory; the count is per image either way).
        mean, std, input_shape, value_range, class_names: as for :class:`~vcex.models.Classifier`.

    Example:
        >>> black_box = BlackBoxClassifier(lambda x: my_api(x), num_classes=10, outputs="probabilities")
        >>> LinearLatentEdit(black_box, vae).fit(train_images).explain(images); black_box.queries
    """

    black_box = True

    def __init__(
        self,
        fn: Callable[[torch.Tensor], object],
        num_classes: int | None,
        outputs: str = "logits",
        batch_size: int = 256,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        input_shape: tuple[int, int, int] | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not callable(fn):
            raise InputError(f"BlackBoxClassifier needs a callable images -> scores, got a {type(fn).__name__}")
        if num_classes is not None:
            num_classes = check_count("num_classes", num_classes, 2)
        if outputs not in OUTPUTS:
            raise InputError(f"outputs must be one of {', '.join(map(repr, OUTPUTS))}, got {outputs!r}")
        super().__init__(
            _Answers(fn, num_classes, outputs),
            mean=mean,
            std=std,
            input_shape=input_shape,
            value_range=value_range,
            class_names=class_names,
            outputs=outputs,
        )
        self.batch_size = check_count("batch_size", batch_size, 1)
        self.queries = 0

    @property
    def num_classes(self) -> int | None:
        """K: given, or learned from the first answer (None before it)."""
        return self.network.num_classes

    def reset_queries(self) -> None:
        """Set ``queries`` to 0 (e.g. before the explanations whose cost is reported)."""
        self.queries = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, K), no grad, for ``images`` (N, C, H, W); ``queries`` grows by N."""
        if not isinstance(images, torch.Tensor) or images.dim() < 1 or images.shape[0] == 0:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"a black box is queried with a batch of images (N, C, H, W), N >= 1; got {shape}")
        logits = []
        with torch.no_grad():
            for chunk in images.detach().split(self.batch_size):
                logits.append(super().forward(chunk))
                self.queries += chunk.shape[0]
        return torch.cat(logits)

    @classmethod
    def from_torchscript(
        cls, path: str | Path, num_classes: int | None = None, map_location: str | torch.device = "cpu", **options
    ) -> BlackBoxClassifier:
        """A TorchScript file (``torch.jit.save``) queried as a black box; ``options`` as for the constructor.
        ``source`` records the file and its sha256."""
        from vcex.models.user import file_sha256, load_torchscript  # user.py builds on this module

        path = Path(path)
        box = cls(load_torchscript(path, map_location), num_classes, **options)
        box.source = {"file": str(path.resolve()), "sha256": file_sha256(path), "black_box": True}
        return box

    @classmethod
    def from_onnx(cls, path: str | Path, num_classes: int | None = None, **options) -> BlackBoxClassifier:
        """An ONNX model run by onnxruntime on the CPU (``pip install "vcex[onnx]"``); ``options`` as for the
        constructor. Its input's fixed channels and size (if the file fixes them) become ``input_shape``, a fixed
        class count ``num_classes``; a file exported with a fixed batch size is queried in batches of that size."""
        try:
            import onnxruntime
        except ImportError:
            raise InputError(f"an ONNX classifier needs onnxruntime: {ONNX_INSTALL}") from None
        from vcex.models.user import file_sha256

        path = Path(path)
        if not path.is_file():
            raise InputError(f"--classifier file {path} does not exist")
        function = _OnnxFunction(path, onnxruntime)
        options.setdefault("input_shape", function.input_shape)
        if num_classes is None:
            num_classes = function.num_classes
        box = cls(function, num_classes, **options)
        digest = file_sha256(path)
        box.source = {"file": str(path.resolve()), "sha256": digest, "black_box": True}
        # the file's hash as a buffer: a box with no parameters is otherwise fingerprinted by its type alone
        box.register_buffer("file_digest", torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8))
        return box


class _OnnxFunction:
    """An onnxruntime session as a function of a tensor: NumPy in and out, on the CPU, in the file's batch size
    when it fixes one (the last batch padded with zeros, whose answers are dropped)."""

    def __init__(self, path: Path, onnxruntime: object) -> None:
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail...)
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelError(
                f"--classifier {path} is not an ONNX model onnxruntime can run ({first[:160]}); export it with "
                "torch.onnx.export(model, example_images, PATH)"
            ) from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"--classifier {path} takes {len(inputs)} inputs; a classifier takes one batch of images")
        self.input_name, shape = inputs[0].name, list(inputs[0].shape)
        if len(shape) != 4:
            raise ModelError(f"--classifier {path} takes input of shape {shape}; images are (N, C, H, W)")
        self.dtype = (
            np.float16
            if inputs[0].type == "tensor(float16)"
            else (np.float64 if inputs[0].type == "tensor(double)" else np.float32)
        )
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.input_shape = tuple(shape[1:]) if all(isinstance(s, int) for s in shape[1:]) else None
        last = list(outputs[0].shape)[-1] if outputs and outputs[0].shape else None
        self.num_classes = last if isinstance(last, int) and last >= 2 else None

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        batch = images.detach().cpu().numpy().astype(self.dtype)
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: batch})[0]
        answers = []
        for start in range(0, len(batch), self.fixed_batch):
            part = batch[start : start + self.fixed_batch]
            padded = np.concatenate([part, np.zeros((self.fixed_batch - len(part), *part.shape[1:]), part.dtype)])
            answers.append(self.session.run(None, {self.input_name: padded})[0][: len(part)])
        return np.concatenate(answers)

    def __deepcopy__(self, memo: dict) -> _OnnxFunction:
        return self  # a session holds no state between runs; copies of the box (--device) share it
