"""What every descriptor reader shares: targets, held-out checks, reports and local scores.

A descriptor reader predicts, for each descriptor a, a probability p_a of an image or of its latent:
binary descriptors directly, continuous ones as P(descriptor above its training median), so that
scores of different descriptors are comparable. Readers are fitted on a train split and checked on a
held-out split; a reader that does not beat the majority-class rate is flagged ``usable=False`` and left
out of rankings with its reason. :class:`~vcex.attribution.LatentAttributes` reads latents with
linear probes, :class:`~vcex.attribution.ImageAttributes` reads images with a small CNN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vcex.attribution.descriptors import Descriptors
from vcex.checks import short_list
from vcex.errors import InputError
from vcex.explainers.result import CounterfactualResult

DEFAULT_MARGIN = 0.02  # a usable probe beats the majority-class rate by at least this much (held out)
DEFAULT_ALPHA = 0.05  # ... and significantly: one-sided binomial test against the majority-class rate


@dataclass
class ProbeReport:
    """How one descriptor's probe did on the held-out split.

    Attributes:
        name: descriptor name; kind: ``"binary"`` or ``"continuous"`` (probed as above-median).
        accuracy: held-out accuracy of the probe; chance: held-out majority-class rate.
        p_value: one-sided binomial test of ``accuracy`` against ``chance``.
        usable: whether the probe enters rankings; reason: why not (empty when usable).
        threshold: the training median a continuous descriptor is split at (None for binary).
        r2: held-out R^2 of a ridge regression on the raw continuous values, for information only.
        n_train, n_test: rows used to fit and to check.
    """

    name: str
    kind: str
    accuracy: float
    chance: float
    p_value: float
    usable: bool
    reason: str
    threshold: float | None
    r2: float | None
    n_train: int
    n_test: int

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class LocalAttribution:
    """Local attribution scores of N counterfactuals.

    Attributes:
        scores: (N, A) s_a = p_a(cf) - p_a(original), each row against its own original.
        names: the A descriptor names.
        usable: (A,) bool, probes that beat chance; rankings use only these by default.
        reasons: name -> why the probe is excluded (only unusable ones).
        original_probs, counterfactual_probs: (N, A) p_a of the originals and the counterfactuals.
        accuracy, chance: (A,) held-out probe accuracy and majority-class rate.
    """

    scores: torch.Tensor
    names: list[str]
    usable: torch.Tensor
    reasons: dict[str, str]
    original_probs: torch.Tensor
    counterfactual_probs: torch.Tensor
    accuracy: torch.Tensor
    chance: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def top(self, i: int, k: int = 5, include_unusable: bool = False) -> list[tuple[str, float]]:
        """The ``k`` descriptors with the largest |s_a| for counterfactual ``i``, as (name, signed score)."""
        if not -len(self) <= i < len(self):
            raise InputError(f"counterfactual index {i} is out of range for {len(self)} counterfactuals")
        row = self.scores[i]
        keep = torch.ones_like(self.usable) if include_unusable else self.usable
        order = [j for j in _by_magnitude(row[None])[0].tolist() if bool(keep[j])]
        return [(self.names[j], float(row[j])) for j in order[:k]]

    def ranks(self) -> torch.Tensor:
        """(N, A) int64: each descriptor's rank in its counterfactual's change, 1 for the largest |s_a| among the
        usable descriptors (ties by descriptor order), 0 for descriptors whose probe is not usable (never ranked)."""
        return rank_by_magnitude(self.scores, self.usable)

    def ranked(self, k: int | None = None) -> list[list[dict]]:
        """Per counterfactual, its usable descriptors by decreasing |s_a| (at most ``k``; all when None), each as
        ``{"name", "change", "rank"}``: ``change`` is s_a in [-1, 1], ``rank`` 1 for the largest |change|."""
        order = _by_magnitude(self.scores)
        usable = self.usable.tolist()
        rows = []
        for i in range(len(self)):
            kept = [j for j in order[i].tolist() if usable[j]][:k]
            rows.append(
                [{"name": self.names[j], "change": float(self.scores[i, j]), "rank": r} for r, j in enumerate(kept, 1)]
            )
        return rows

    @staticmethod
    def concatenate(parts: list[LocalAttribution]) -> LocalAttribution:
        """Join the attributions of consecutive blocks of counterfactuals read by the same readers, in order."""
        first = parts[0]
        return LocalAttribution(
            torch.cat([part.scores for part in parts]), first.names, first.usable, first.reasons,
            torch.cat([part.original_probs for part in parts]),
            torch.cat([part.counterfactual_probs for part in parts]), first.accuracy, first.chance,
        )  # fmt: skip

    def save(self, path: str | Path, record: dict | None = None) -> Path:
        """Write ``path`` (safetensors: ``scores``, ``original_probs``, ``counterfactual_probs`` and ``rank``, each
        (N, A); ``usable``, ``accuracy``, ``chance``, each (A,)) and ``path`` + ``.json`` (names, reasons and
        ``record``), each atomically and the JSON first, so the tensors' file exists only once both are whole.
        Read back with :meth:`load`; ``rank`` is :meth:`ranks`, for readers of the file outside vcex."""
        from safetensors.torch import save_file

        from vcex.records import atomic_path, write_json

        path = Path(path)
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in _LOCAL_TENSORS}
        tensors["rank"] = self.ranks()
        record = {**(record or {}), "names": self.names, "reasons": self.reasons}
        write_json(path.with_name(path.name + ".json"), record)
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary))
        return path

    @classmethod
    def load(cls, path: str | Path, rows: slice | None = None) -> tuple[LocalAttribution, dict]:
        """What :meth:`save` wrote: the attributions (only ``rows``, a slice, where given) and the record saved with
        them (names and reasons included). Damage raises :class:`~vcex.errors.CacheError`."""
        import json

        from safetensors import safe_open

        from vcex.errors import CacheError

        path = Path(path)
        try:
            record = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
            with safe_open(str(path), framework="pt") as handle:
                tensors = {name: handle.get_tensor(name) for name in _LOCAL_TENSORS}
            names, reasons = list(record["names"]), dict(record["reasons"])
            if tensors["scores"].shape[1:] != (len(names),):
                raise ValueError(f"{len(names)} names for scores of shape {tuple(tensors['scores'].shape)}")
        except Exception as error:  # noqa: BLE001 - any damage means the same thing to the caller
            raise CacheError(f"cannot read local attributions {path} ({error})") from error
        if rows is not None:
            tensors.update({name: tensors[name][rows] for name in ("scores", "original_probs", "counterfactual_probs")})
        local = cls(
            tensors["scores"], names, tensors["usable"], reasons, tensors["original_probs"],
            tensors["counterfactual_probs"], tensors["accuracy"], tensors["chance"],
        )  # fmt: skip
        return local, record

    def select(self, mask: torch.Tensor) -> LocalAttribution:
        """Rows where ``mask`` (N,) bool is True (or the given (M,) indices), e.g. successful counterfactuals."""
        return LocalAttribution(
            self.scores[mask],
            self.names,
            self.usable,
            self.reasons,
            self.original_probs[mask],
            self.counterfactual_probs[mask],
            self.accuracy,
            self.chance,
        )


# the tensors of a LocalAttribution, as LocalAttribution.save writes them
_LOCAL_TENSORS = ("scores", "original_probs", "counterfactual_probs", "usable", "accuracy", "chance")


def _by_magnitude(scores: torch.Tensor) -> torch.Tensor:
    """(N, A) -> (N, A) int64: each row's descriptor indices by decreasing |score|, ties in descriptor order."""
    return scores.abs().argsort(dim=1, descending=True, stable=True)


def rank_by_magnitude(scores: torch.Tensor, usable: torch.Tensor | None = None) -> torch.Tensor:
    """Rank each row's descriptors by |change|: ``scores`` (N, A) signed changes, ``usable`` (A,) bool (default
    all) -> (N, A) int64 ranks, 1 for the largest |score| of a row among the usable descriptors (ties in
    descriptor order) and 0 for the unusable ones."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise InputError(f"scores must be an (N, A) tensor of signed changes, got {shape}")
    usable = torch.ones(scores.shape[1], dtype=torch.bool) if usable is None else usable.bool().cpu()
    if usable.shape != (scores.shape[1],):
        raise InputError(f"usable must be ({scores.shape[1]},) bool, one per descriptor, got {tuple(usable.shape)}")
    order = _by_magnitude(scores.detach().cpu())
    kept = usable[order]  # a rank counts only the usable descriptors before it
    positions = kept.long().cumsum(1) * kept.long()
    return torch.zeros_like(order).scatter_(1, order, positions)


@dataclass
class DescriptorSplit:
    """Descriptors turned into 0/1 targets on a seeded train/test split (see :func:`split_descriptors`).

    Attributes:
        keep: (N,) bool, rows without NaN in any descriptor (the only rows used).
        train_rows, test_rows: indices into the kept rows.
        targets: (M, A) float 0/1 targets of the M kept rows; ``values``: (M, A) their raw values.
        binary: (A,) whether each descriptor is binary; thresholds: the training median of each
            continuous descriptor (None for binary ones).
        notes: what was dropped and why.
    """

    keep: torch.Tensor
    train_rows: torch.Tensor
    test_rows: torch.Tensor
    targets: torch.Tensor
    values: torch.Tensor
    binary: list[bool]
    thresholds: list[float | None]
    notes: list[str]

    @property
    def n_test(self) -> int:
        return int(self.test_rows.numel())

    def one_class(self, j: int) -> bool:
        """Whether descriptor ``j`` has a single class in the training split (no reader can be fitted)."""
        train = self.targets[self.train_rows, j]
        return bool(train.all()) or not bool(train.any())


def split_descriptors(descriptors: Descriptors, n_rows: int, test_fraction: float, seed: int) -> DescriptorSplit:
    """Check ``descriptors`` against ``n_rows`` items, drop rows with NaN (with a warning and a note),
    split the rest by a seeded permutation and threshold continuous descriptors at their training median."""
    descriptors.check_count(n_rows)
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    table = descriptors.table()
    notes = list(descriptors.notes)
    keep = ~torch.isnan(table).any(1)
    if not bool(keep.all()):
        dropped = (~keep).nonzero().flatten().tolist()
        note = f"dropped {len(dropped)} row(s) with NaN descriptors from fitting (rows {short_list(dropped)})"
        notes.append(note)
        warnings.warn(note, stacklevel=3)
    table = table[keep].double()
    n = int(table.shape[0])
    n_test = int(round(test_fraction * n))
    if n_test < 2 or n - n_test < 2:
        raise InputError(
            f"too few images to fit and check probes ({n} usable rows, test_fraction={test_fraction}); give more images"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_rows, train_rows = order[:n_test], order[n_test:]
    binary = [descriptors.is_binary(name) for name in descriptors.names]
    thresholds = [None if b else float(np.median(table[train_rows, j].numpy())) for j, b in enumerate(binary)]
    targets = torch.stack([table[:, j] > (0.5 if b else thresholds[j]) for j, b in enumerate(binary)], 1).float()
    return DescriptorSplit(keep, train_rows, test_rows, targets, table, binary, thresholds, notes)


def judge(
    split: DescriptorSplit,
    j: int,
    name: str,
    predicted_test: np.ndarray | None,
    margin: float,
    alpha: float,
    r2: float | None = None,
    source: str = "the reader's input",
) -> ProbeReport:
    """The held-out verdict on descriptor ``j``'s reader: accuracy of its 0/1 ``predicted_test`` (test rows,
    in order) against chance, with a one-sided binomial test; None when no reader could be fitted.
    ``source`` names what the reader reads, for the reason ("the latent code", "the images")."""
    from scipy.stats import binomtest

    binary, threshold = split.binary[j], split.thresholds[j]
    kind = "binary" if binary else "continuous"
    y_test = split.targets[split.test_rows, j].numpy() > 0.5
    n_test, n_train = split.n_test, int(split.train_rows.numel())
    chance = float(max(y_test.mean(), 1.0 - y_test.mean()))
    if predicted_test is None:
        reason = (
            "only one class in the training split"
            + ("" if binary else f" after thresholding at the median {threshold:g}")
            + "; give more images where it varies"
        )
        return ProbeReport(name, kind, chance, chance, 1.0, False, reason, threshold, r2, n_train, n_test)
    correct = int((np.asarray(predicted_test).astype(bool) == y_test).sum())
    accuracy = correct / n_test
    p_value = float(binomtest(correct, n_test, min(chance, 1.0 - 1e-12), alternative="greater").pvalue)
    reason = ""
    if accuracy < chance + margin:
        reason = (
            f"held-out accuracy {accuracy:.3f} does not beat chance {chance:.3f} by {margin}: "
            f"{source} does not predict this descriptor"
        )
    elif p_value >= alpha:
        reason = (
            f"held-out accuracy {accuracy:.3f} is not significantly above chance {chance:.3f} "
            f"(binomial p={p_value:.3g}, n={n_test}); give more images"
        )
    return ProbeReport(name, kind, accuracy, chance, p_value, not reason, reason, threshold, r2, n_train, n_test)


class DescriptorReader:
    """Base of the descriptor readers: fitted state, the held-out verdicts and local scores from probabilities.

    Subclasses set ``names``, ``reports`` and ``notes`` when fitted and implement ``_is_fitted``.
    """

    def __init__(self, descriptors: Descriptors | None, margin: float, alpha: float) -> None:
        if descriptors is not None and not isinstance(descriptors, Descriptors):
            raise InputError(f"descriptors must be a Descriptors object, got {type(descriptors).__name__}")
        self.descriptors = descriptors
        self.margin = margin
        self.alpha = alpha
        self.names: list[str] = []
        self.reports: list[ProbeReport] = []
        self.notes: list[str] = []

    @property
    def usable(self) -> torch.Tensor:
        """(A,) bool: readers that beat chance on the held-out split."""
        self._check_fitted()
        return torch.tensor([r.usable for r in self.reports], dtype=torch.bool)

    @property
    def accuracy(self) -> torch.Tensor:
        """(A,) held-out accuracy of each reader."""
        self._check_fitted()
        return torch.tensor([r.accuracy for r in self.reports])

    @property
    def chance(self) -> torch.Tensor:
        """(A,) held-out majority-class rate of each descriptor."""
        self._check_fitted()
        return torch.tensor([r.chance for r in self.reports])

    @property
    def reasons(self) -> dict[str, str]:
        """name -> why the reader is excluded from rankings (unusable ones only)."""
        self._check_fitted()
        return {r.name: r.reason for r in self.reports if not r.usable}

    def summary(self) -> list[dict]:
        """One dict per descriptor (see :class:`ProbeReport`), for tables and JSON."""
        self._check_fitted()
        return [r.to_json() for r in self.reports]

    def _inputs(
        self,
        first: CounterfactualResult | torch.Tensor,
        second: torch.Tensor | None,
        what: str,
        from_result: Callable[[CounterfactualResult], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """local()'s (start, counterfactual) inputs: read from a result by ``from_result``, or given as a pair
        (``what`` names the pair in errors)."""
        self._check_fitted()
        if isinstance(first, CounterfactualResult):
            if second is not None:
                raise InputError(f"pass either a CounterfactualResult or {what}, not both")
            if len(first) == 0:
                raise InputError("the counterfactual result is empty (N=0); explain at least one image")
            return from_result(first)
        if second is None:
            raise InputError(f"local() needs a CounterfactualResult, or {what}")
        return first, second

    def _local(self, original_probs: torch.Tensor, cf_probs: torch.Tensor) -> LocalAttribution:
        return LocalAttribution(
            cf_probs - original_probs,
            list(self.names),
            self.usable,
            self.reasons,
            original_probs,
            cf_probs,
            self.accuracy,
            self.chance,
        )

    def _descriptors(self, descriptors: Descriptors | None) -> Descriptors:
        descriptors = descriptors if descriptors is not None else self.descriptors
        if descriptors is None:
            raise InputError(f"no descriptors: pass them to fit() or to {type(self).__name__}(..., descriptors)")
        if not isinstance(descriptors, Descriptors):
            raise InputError(
                f"descriptors must be a Descriptors object (Descriptors.from_faces / from_morphometrics / "
                f"from_csv), got {type(descriptors).__name__}"
            )
        return descriptors

    def _is_fitted(self) -> bool:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise InputError(
                f"the {type(self).__name__} readers are not fitted yet; call fit(images, descriptors) first"
            )
