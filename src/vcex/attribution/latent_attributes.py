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

from pathlib import Path

import numpy as np
import torch

from vcex.attribution.base import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DescriptorReader,
    LocalAttribution,
    ProbeReport,
    judge,
    split_descriptors,
)
from vcex.attribution.descriptors import Descriptors
from vcex.cache import load_weights, save_weights
from vcex.checks import device_of
from vcex.errors import CacheError, InputError
from vcex.explainers.result import CounterfactualResult
from vcex.models.state import evaluates
from vcex.records import dataclass_from_record
from vcex.standardize import raw_linear, standardization

__all__ = ["DEFAULT_ALPHA", "DEFAULT_MARGIN", "LatentAttributes", "LocalAttribution", "ProbeReport"]


class LatentAttributes(DescriptorReader):
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
        super().__init__(descriptors, margin, alpha)
        self.latent_model = latent_model
        self.batch_size = batch_size
        self.weights: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    # ------------------------------------------------------------------------------ fitting

    @torch.no_grad()
    @evaluates("self.latent_model")
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode (N, C, H, W) images in batches, without gradients, the latent model in eval mode (restored
        afterwards) -> (N, d) float32 on the CPU."""
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
        from sklearn.linear_model import LogisticRegression, Ridge

        descriptors = self._descriptors(descriptors)
        latents = _as_latent_matrix(latents, "latents")
        split = split_descriptors(descriptors, int(latents.shape[0]), test_fraction, seed)
        train_rows, test_rows = split.train_rows.numpy(), split.test_rows.numpy()
        z = latents[split.keep].double().numpy()
        # probes see standardised coordinates (training split's mean and spread), so that C=1 and lbfgs's
        # convergence do not depend on the latent's units; the weights are mapped back to raw latents below
        center, spread = standardization(z[train_rows])
        z = (z - center) / spread
        z_train, z_test = z[train_rows], z[test_rows]

        weights = np.zeros((len(descriptors.names), z.shape[1]))
        bias = np.zeros(len(descriptors.names))
        reports = []
        for j, name in enumerate(descriptors.names):
            r2 = None
            if not split.binary[j]:
                values = split.values[:, j].numpy()
                r2 = float(Ridge(alpha=1.0).fit(z_train, values[train_rows]).score(z_test, values[test_rows]))
            if split.one_class(j):
                reports.append(judge(split, j, name, None, self.margin, self.alpha, r2))
                continue
            # Paper defaults (L2, C=1, lbfgs), on standardised latents (the paper fits raw ones)
            y_train = split.targets[train_rows, j].numpy() > 0.5
            probe = LogisticRegression(C=1.0, max_iter=1000).fit(z_train, y_train)
            raw_weights, raw_bias = raw_linear(probe.coef_[0], probe.intercept_[0], center, spread)
            weights[j], bias[j] = raw_weights, float(raw_bias)
            reports.append(
                judge(split, j, name, probe.predict(z_test), self.margin, self.alpha, r2, source="the latent code")
            )
        self.names = list(descriptors.names)
        self.reports = reports
        self.notes = split.notes
        self.weights = torch.from_numpy(weights).float()
        self.bias = torch.from_numpy(bias).float()
        return self

    # ------------------------------------------------------------------------------ scoring

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
        latents, cf_latents = self._inputs(
            result_or_latents, counterfactual_latents, "original latents and counterfactual_latents (N, d)",
            self._result_latents,
        )  # fmt: skip
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
        return self._local(probs[: latents.shape[0]], probs[latents.shape[0] :])

    # ------------------------------------------------------------------------------ saving

    def save(self, path: str | Path) -> Path:
        """Write the fitted probes to a safetensors file: ``weights`` (A, d) and ``bias`` (A,) and, as its record,
        the descriptor names, held-out reports and notes (no latent model). Read back with :meth:`load`."""
        self._check_fitted()
        record = {
            "kind": "LatentAttributes",
            "names": self.names,
            "reports": self.summary(),
            "notes": self.notes,
            "settings": {"batch_size": self.batch_size, "margin": self.margin, "alpha": self.alpha},
        }
        return save_weights(path, {"weights": self.weights, "bias": self.bias}, record)

    @classmethod
    def load(cls, path: str | Path, latent_model: object | None) -> LatentAttributes:
        """Probes saved by :meth:`save` (no pickle: tensors and a JSON record), reading ``latent_model``'s latents
        (the model they were fitted for; None: latents only). Damage raises :class:`~vcex.errors.CacheError`."""
        tensors, record = load_weights(path)
        if record.get("kind") != "LatentAttributes":
            raise CacheError(f"{path} does not hold latent probes (its record says {record.get('kind')!r})")
        probes = cls(latent_model, **record["settings"])
        weights, bias = tensors.get("weights"), tensors.get("bias")
        if weights is None or bias is None or weights.dim() != 2 or bias.shape != (weights.shape[0],):
            raise CacheError(f"{path} lacks the probes' weights (A, d) and bias (A,)")
        probes.weights, probes.bias = weights.float(), bias.float()
        probes.names = list(record["names"])
        probes.reports = [dataclass_from_record(ProbeReport, report, str(path)) for report in record["reports"]]
        probes.notes = list(record["notes"])
        if len(probes.names) != weights.shape[0] or len(probes.reports) != weights.shape[0]:
            raise CacheError(f"{path} names {len(probes.names)} descriptors for {weights.shape[0]} probes")
        return probes

    def _result_latents(self, result: CounterfactualResult) -> tuple[torch.Tensor, torch.Tensor]:
        """A result's stored latents, or its originals and counterfactuals encoded (methods without latents)."""
        if result.original_latents is not None and result.counterfactual_latents is not None:
            return result.original_latents, result.counterfactual_latents
        return self.encode(result.originals), self.encode(result.counterfactuals)

    def _is_fitted(self) -> bool:
        return self.weights is not None


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
