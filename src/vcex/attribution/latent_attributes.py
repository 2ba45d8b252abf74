"""Latent attribute probes and local attribution scores (Goldwasser & Hooker, research note section 3).

One logistic-regression probe per descriptor is fitted in the latent space of a generative model.
Every probe outputs a probability p_a(z): binary descriptors directly, continuous ones as
P(descriptor above its training median), so scores of different descriptors are comparable. The
local score of a counterfactual is the signed change s_a = p_a(z_cf) - p_a(z) of each probe between
the counterfactual's latent and its *own* original's latent.

Unlike the paper (probes fitted in-sample), probes are checked on a held-out split: a probe that does
not beat the majority-class rate is flagged ``usable=False`` and left out of rankings with its reason.

Any counterfactual method works: results without latents (e.g. :class:`vcex.PixelAttack`) are encoded
with the latent model first.

>>> probes = LatentAttributes(vae).fit(train_images, Descriptors.from_morphometrics(train_images))
>>> local = probes.local(PixelAttack(classifier).explain(images))
>>> local.scores.shape, local.top(0, k=3)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from vcex.attribution.descriptors import Descriptors
from vcex.checks import device_of, short_list
from vcex.errors import InputError
from vcex.explainers.result import CounterfactualResult
from vcex.standardize import raw_linear, standardization

DEFAULT_MARGIN = 0.02  # a usable probe beats the majority-class rate by at least this much (held out)
DEFAULT_ALPHA = 0.05  # ... and significantly: one-sided binomial test against the majority-class rate


@dataclass
class ProbeReport:
    """How one descriptor's probe did on the held-out split.

    Attributes:
        name: descriptor name; kind: ``"binary"`` or ``"continuous"`` (probed as above-median).
        accuracy: held-out accuracy of the logistic probe; chance: held-out majority-class rate.
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
        scores: (N, A) s_a = p_a(z_cf) - p_a(z), each row against its own original.
        names: the A descriptor names.
        usable: (A,) bool, probes that beat chance; rankings use only these by default.
        reasons: name -> why the probe is excluded (only unusable ones).
        original_probs, counterfactual_probs: (N, A) p_a(z) and p_a(z_cf).
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
        order = [j for j in row.abs().argsort(descending=True, stable=True).tolist() if bool(keep[j])]
        return [(self.names[j], float(row[j])) for j in order[:k]]

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


class LatentAttributes:
    """Descriptor probes in the latent space of ``latent_model``; fit once, score many.

    Args:
        latent_model: anything with ``encode(images (N, C, H, W)) -> latents (N, ...)``.
        descriptors: default descriptors for :meth:`fit` (optional).
        batch_size: images encoded at once.
        margin, alpha: a probe is usable when its held-out accuracy is at least ``chance + margin``
            and a one-sided binomial test against chance gives p < ``alpha``.

    After fitting, ``weights`` (A, d) and ``bias`` (A,) hold the probes, so all probabilities are one
    batched ``sigmoid(Z @ weights.T + bias)``.
    """

    def __init__(
        self,
        latent_model: object | None,
        descriptors: Descriptors | None = None,
        batch_size: int = 256,
        margin: float = DEFAULT_MARGIN,
        alpha: float = DEFAULT_ALPHA,
    ) -> None:
        if latent_model is not None and not callable(getattr(latent_model, "encode", None)):
            raise InputError(
                f"latent model must have encode(images) -> latents; {type(latent_model).__name__} does not"
            )
        if descriptors is not None and not isinstance(descriptors, Descriptors):
            raise InputError(f"descriptors must be a Descriptors object, got {type(descriptors).__name__}")
        self.latent_model = latent_model
        self.descriptors = descriptors
        self.batch_size = batch_size
        self.margin = margin
        self.alpha = alpha
        self.names: list[str] = []
        self.reports: list[ProbeReport] = []
        self.notes: list[str] = []
        self.weights: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    # ------------------------------------------------------------------------------ fitting

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode (N, C, H, W) images in batches, without gradients -> (N, d) float32 on the CPU."""
        if self.latent_model is None:
            raise InputError("this LatentAttributes has no latent model; pass latents instead of images")
        if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"images must be a non-empty (N, C, H, W) tensor, got {shape}")
        device = device_of(self.latent_model)
        parts = [
            self.latent_model.encode(images[start : start + self.batch_size].to(device)).flatten(1).float().cpu()
            for start in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(parts)

    def fit(
        self,
        images: torch.Tensor,
        descriptors: Descriptors | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> LatentAttributes:
        """Encode ``images`` (N, C, H, W) and fit one probe per descriptor; returns ``self``."""
        descriptors = self._descriptors(descriptors)
        descriptors.check_count(int(images.shape[0]) if isinstance(images, torch.Tensor) else -1)
        return self.fit_latents(self.encode(images), descriptors, test_fraction, seed)

    def fit_latents(
        self,
        latents: torch.Tensor,
        descriptors: Descriptors | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> LatentAttributes:
        """Fit the probes on given latents (N, ...) and descriptors with N rows; returns ``self``.

        Rows with NaN in any descriptor (empty images' morphometrics) are dropped with a note.
        The split is a seeded random permutation; ``test_fraction`` of the rows check the probes.
        """
        from scipy.stats import binomtest
        from sklearn.linear_model import LogisticRegression, Ridge

        descriptors = self._descriptors(descriptors)
        latents = _as_latent_matrix(latents, "latents")
        descriptors.check_count(int(latents.shape[0]))
        if not 0.0 < test_fraction < 1.0:
            raise InputError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
        table = descriptors.table()
        notes = list(descriptors.notes)
        complete = ~torch.isnan(table).any(1)
        if not bool(complete.all()):
            dropped = (~complete).nonzero().flatten().tolist()
            note = f"dropped {len(dropped)} row(s) with NaN descriptors from fitting (rows {short_list(dropped)})"
            notes.append(note)
            warnings.warn(note, stacklevel=2)
            latents, table = latents[complete], table[complete]
        n = int(latents.shape[0])
        n_test = int(round(test_fraction * n))
        if n_test < 2 or n - n_test < 2:
            raise InputError(
                f"too few images to fit and check probes ({n} usable rows, test_fraction={test_fraction}); "
                "give more images"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        test_rows, train_rows = order[:n_test], order[n_test:]
        z = latents.double().numpy()
        # probes see standardised coordinates (training split's mean and spread), so that C=1 and lbfgs's
        # convergence do not depend on the latent's units; the weights are mapped back to raw latents below
        center, spread = standardization(z[train_rows.numpy()])
        z = (z - center) / spread
        z_train, z_test = z[train_rows.numpy()], z[test_rows.numpy()]

        weights = np.zeros((len(descriptors.names), z.shape[1]))
        bias = np.zeros(len(descriptors.names))
        reports = []
        for j, name in enumerate(descriptors.names):
            column = table[:, j].double().numpy()
            train_values, test_values = column[train_rows.numpy()], column[test_rows.numpy()]
            binary = descriptors.is_binary(name)
            threshold = None if binary else float(np.median(train_values))
            y_train = train_values > 0.5 if binary else train_values > threshold
            y_test = test_values > 0.5 if binary else test_values > threshold
            r2 = None
            if not binary:
                r2 = float(Ridge(alpha=1.0).fit(z_train, train_values).score(z_test, test_values))
            chance = float(max(y_test.mean(), 1.0 - y_test.mean()))
            if y_train.all() or not y_train.any():
                reports.append(
                    ProbeReport(
                        name, "binary" if binary else "continuous", chance, chance, 1.0, False,
                        "only one class in the training split"
                        + ("" if binary else f" after thresholding at the median {threshold:g}")
                        + "; give more images where it varies",
                        threshold, r2, len(train_rows), n_test,
                    )
                )  # fmt: skip
                continue
            # Paper defaults (L2, C=1, lbfgs), on standardised latents (the paper fits raw ones)
            probe = LogisticRegression(C=1.0, max_iter=1000).fit(z_train, y_train)
            raw_weights, raw_bias = raw_linear(probe.coef_[0], probe.intercept_[0], center, spread)
            weights[j], bias[j] = raw_weights, float(raw_bias)
            correct = int((probe.predict(z_test) == y_test).sum())
            accuracy = correct / n_test
            p_value = float(binomtest(correct, n_test, min(chance, 1.0 - 1e-12), alternative="greater").pvalue)
            reason = ""
            if accuracy < chance + self.margin:
                reason = (
                    f"held-out accuracy {accuracy:.3f} does not beat chance {chance:.3f} by {self.margin}: "
                    "the latent code does not predict this descriptor"
                )
            elif p_value >= self.alpha:
                reason = (
                    f"held-out accuracy {accuracy:.3f} is not significantly above chance {chance:.3f} "
                    f"(binomial p={p_value:.3g}, n={n_test}); give more images"
                )
            reports.append(
                ProbeReport(
                    name, "binary" if binary else "continuous", accuracy, chance, p_value, not reason, reason,
                    threshold, r2, len(train_rows), n_test,
                )
            )  # fmt: skip
        self.names = list(descriptors.names)
        self.reports = reports
        self.notes = notes
        self.weights = torch.from_numpy(weights).float()
        self.bias = torch.from_numpy(bias).float()
        return self

    # ------------------------------------------------------------------------------ scoring

    @property
    def usable(self) -> torch.Tensor:
        """(A,) bool: probes that beat chance on the held-out split."""
        self._check_fitted()
        return torch.tensor([r.usable for r in self.reports], dtype=torch.bool)

    @property
    def accuracy(self) -> torch.Tensor:
        """(A,) held-out accuracy of each probe."""
        self._check_fitted()
        return torch.tensor([r.accuracy for r in self.reports])

    @property
    def chance(self) -> torch.Tensor:
        """(A,) held-out majority-class rate of each descriptor."""
        self._check_fitted()
        return torch.tensor([r.chance for r in self.reports])

    @property
    def reasons(self) -> dict[str, str]:
        """name -> why the probe is excluded from rankings (unusable probes only)."""
        self._check_fitted()
        return {r.name: r.reason for r in self.reports if not r.usable}

    def probabilities(self, latents: torch.Tensor) -> torch.Tensor:
        """p_a(z) for every descriptor at once: (N, ...) latents -> (N, A), one matmul."""
        self._check_fitted()
        latents = _as_latent_matrix(latents, "latents", self.weights.shape[1])
        weights, bias = self.weights.to(latents.device), self.bias.to(latents.device)
        return torch.sigmoid(torch.addmm(bias, latents.float(), weights.T))

    def local(
        self,
        result_or_latents: CounterfactualResult | torch.Tensor,
        counterfactual_latents: torch.Tensor | None = None,
    ) -> LocalAttribution:
        """Local scores s_a = p_a(z_cf) - p_a(z), each counterfactual against its own original.

        Args:
            result_or_latents: a :class:`CounterfactualResult` (its latents are used when present,
                else its originals and counterfactuals are encoded), or original latents (N, ...).
            counterfactual_latents: (N, ...) counterfactual latents, when original latents are given.
        Returns:
            :class:`LocalAttribution` with ``scores`` (N, A).
        """
        self._check_fitted()
        if isinstance(result_or_latents, CounterfactualResult):
            if counterfactual_latents is not None:
                raise InputError("pass either a CounterfactualResult or (latents, counterfactual_latents), not both")
            result = result_or_latents
            if len(result) == 0:
                raise InputError("the counterfactual result is empty (N=0); explain at least one image")
            if result.original_latents is not None and result.counterfactual_latents is not None:
                latents, cf_latents = result.original_latents, result.counterfactual_latents
            else:
                latents, cf_latents = self.encode(result.originals), self.encode(result.counterfactuals)
        else:
            if counterfactual_latents is None:
                raise InputError(
                    "local() needs a CounterfactualResult, or original latents and counterfactual_latents (N, d)"
                )
            latents, cf_latents = result_or_latents, counterfactual_latents
        latents = _as_latent_matrix(latents, "original latents", self.weights.shape[1])
        cf_latents = _as_latent_matrix(cf_latents, "counterfactual latents", self.weights.shape[1])
        if latents.shape != cf_latents.shape:
            raise InputError(
                f"original latents {tuple(latents.shape)} and counterfactual latents {tuple(cf_latents.shape)} "
                "must have the same shape: one counterfactual per original, in order"
            )
        with torch.no_grad():
            # One matmul for originals and counterfactuals together.
            probs = self.probabilities(torch.cat([latents, cf_latents.to(latents.device)])).cpu()
        original_probs, cf_probs = probs[: latents.shape[0]], probs[latents.shape[0] :]
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

    def summary(self) -> list[dict]:
        """One dict per probe (see :class:`ProbeReport`), for tables and JSON."""
        self._check_fitted()
        return [r.to_json() for r in self.reports]

    # ------------------------------------------------------------------------------ helpers

    def _descriptors(self, descriptors: Descriptors | None) -> Descriptors:
        descriptors = descriptors if descriptors is not None else self.descriptors
        if descriptors is None:
            raise InputError("no descriptors: pass them to fit() or to LatentAttributes(latent_model, descriptors)")
        if not isinstance(descriptors, Descriptors):
            raise InputError(
                f"descriptors must be a Descriptors object (Descriptors.from_faces / from_morphometrics / "
                f"from_csv), got {type(descriptors).__name__}"
            )
        return descriptors

    def _check_fitted(self) -> None:
        if self.weights is None:
            raise InputError("the attribute probes are not fitted yet; call fit(images, descriptors) first")


def _as_latent_matrix(latents: torch.Tensor, name: str, dim: int | None = None) -> torch.Tensor:
    """Check (N, ...) latents and flatten them to (N, d) float32."""
    if not isinstance(latents, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (N, d), got {type(latents).__name__}")
    if latents.dim() < 2 or latents.shape[0] == 0:
        raise InputError(f"{name} must have shape (N, d) with N >= 1, got {tuple(latents.shape)}")
    latents = latents.detach().flatten(1).float()
    if dim is not None and latents.shape[1] != dim:
        raise InputError(f"{name} have {latents.shape[1]} dimensions but the probes were fitted on {dim}")
    if not bool(torch.isfinite(latents).all()):
        raise InputError(f"{name} contain NaN or inf values")
    return latents
