"""Global attribution: which descriptors a classifier's counterfactuals change, on average.

S_a = (1/N) sum_i d_i * s_{a,i} (Goldwasser & Hooker, research note section 3), with s_{a,i} the local
score of counterfactual i against its *own* original latent and d_i = +1 when counterfactual i moves
toward the positive class, -1 otherwise. (The reference notebook compared every counterfactual with
one stale reference latent, research note section 7.2; here each row keeps its own original.)

Percentile bootstrap intervals are computed in one shot: resampled indices are a (B, N) tensor turned
into counts, so B resamples cost one (B, N) @ (N, A) matmul.

Also the InterFaceGAN-style linear baseline (research note section 6): probe response to a step
along the classifier's latent logistic direction, :func:`linear_direction_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vcex.attribution.latent_attributes import LatentAttributes, LocalAttribution, _as_latent_matrix
from vcex.errors import InputError
from vcex.explainers.result import CounterfactualResult

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


@dataclass
class GlobalExplanation:
    """Global descriptor scores with bootstrap intervals.

    Attributes:
        names: the A descriptor names.
        scores: (A,) S_a; ci_low, ci_high: (A,) percentile bootstrap interval.
        n: number of counterfactuals (or latents) averaged.
        accuracy, chance: (A,) held-out probe accuracy and majority-class rate.
        usable: (A,) bool; reasons: name -> why a probe is excluded from :meth:`ranked`.
        label: what was explained (e.g. ``"target 3"``); method: how S was computed.
        confidence, resamples: the bootstrap settings.
    """

    names: list[str]
    scores: torch.Tensor
    ci_low: torch.Tensor
    ci_high: torch.Tensor
    n: int
    accuracy: torch.Tensor
    chance: torch.Tensor
    usable: torch.Tensor
    reasons: dict[str, str] = field(default_factory=dict)
    label: str | None = None
    method: str = "counterfactual"
    confidence: float = DEFAULT_CONFIDENCE
    resamples: int = DEFAULT_RESAMPLES

    def ranked(self, include_unusable: bool = False) -> list[tuple[str, float, float, float]]:
        """(name, S, ci_low, ci_high) by decreasing |S|; unusable probes are left out unless asked for."""
        order = self.scores.abs().argsort(descending=True, stable=True).tolist()
        return [
            (self.names[j], float(self.scores[j]), float(self.ci_low[j]), float(self.ci_high[j]))
            for j in order
            if include_unusable or bool(self.usable[j])
        ]

    def excluded(self) -> dict[str, str]:
        """name -> reason, for every probe left out of :meth:`ranked`."""
        return dict(self.reasons)

    def to_json(self) -> dict:
        """A JSON-ready dict: settings, the ranking and every descriptor's row."""
        rows = [
            {
                "name": name,
                "score": float(self.scores[j]),
                "ci_low": float(self.ci_low[j]),
                "ci_high": float(self.ci_high[j]),
                "accuracy": float(self.accuracy[j]),
                "chance": float(self.chance[j]),
                "usable": bool(self.usable[j]),
                "reason": self.reasons.get(name, ""),
            }
            for j, name in enumerate(self.names)
        ]
        return {
            "label": self.label,
            "method": self.method,
            "n": self.n,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "ranking": [name for name, *_ in self.ranked()],
            "excluded": self.excluded(),
            "descriptors": rows,
        }


def bootstrap_interval(
    values: torch.Tensor, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap interval of the column means of ``values`` (N, A) -> (low (A,), high (A,)).

    Resampled indices are drawn as one (B, N) tensor and turned into counts, so the B means are one
    (B, N) @ (N, A) matmul; no Python loop over resamples.
    """
    if resamples < 1:
        raise InputError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n = values.shape[0]
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(n, (resamples, n), generator=generator)
    counts = torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
        1, indices, torch.ones(resamples, n, dtype=torch.float64)
    )
    means = counts @ values.double().cpu() / n  # (B, A)
    tail = (1.0 - confidence) / 2.0
    bounds = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64), dim=0)
    return bounds[0].float(), bounds[1].float()


def directions_from_result(result: CounterfactualResult) -> torch.Tensor:
    """d_i for a binary classifier's result: +1 where counterfactual i moves toward class 1, else -1.

    A counterfactual raises its ``target`` (or lowers it when ``result.lower``), so it moves toward
    class 1 when target == 1 and not lowering, or target == 0 and lowering. Returns (N,) float32.
    """
    target = result.target.cpu()
    outside = ((target != 0) & (target != 1)).nonzero().flatten().tolist()
    if outside:
        raise InputError(
            f"directions_from_result needs a binary classifier's result (targets 0/1), got target "
            f"{int(target[outside[0]])}; for multiclass results use global_scores_by_class"
        )
    toward_positive = (target == 1) ^ bool(result.lower)
    return toward_positive.float() * 2.0 - 1.0


def global_scores(
    local: LocalAttribution,
    direction: torch.Tensor | float | int,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    label: str | None = None,
) -> GlobalExplanation:
    """S_a = mean_i d_i * s_{a,i} with a bootstrap interval.

    Args:
        local: local scores (N, A), each row against its own original latent (:meth:`LatentAttributes.local`).
        direction: (N,) d_i in {+1, -1} (see :func:`directions_from_result`), or one number for all rows.
        resamples, confidence, seed: percentile bootstrap settings.
    """
    if not isinstance(local, LocalAttribution):
        raise InputError(f"local must be the LocalAttribution from LatentAttributes.local, got {type(local).__name__}")
    n = len(local)
    if n == 0:
        raise InputError("no counterfactuals to average (N=0)")
    direction = torch.as_tensor(direction, dtype=torch.float32).cpu()
    if direction.dim() == 0:
        direction = direction.expand(n)
    if direction.shape != (n,):
        raise InputError(
            f"direction must have one entry per counterfactual: shape ({n},), got {tuple(direction.shape)}"
        )
    if not bool(((direction == 1) | (direction == -1)).all()):
        raise InputError("direction must hold only +1 (toward the positive class) and -1")
    signed = local.scores.cpu().float() * direction[:, None]  # (N, A)
    low, high = bootstrap_interval(signed, resamples, confidence, seed)
    return GlobalExplanation(
        names=list(local.names),
        scores=signed.mean(0),
        ci_low=low,
        ci_high=high,
        n=n,
        accuracy=local.accuracy,
        chance=local.chance,
        usable=local.usable,
        reasons=dict(local.reasons),
        label=label,
        confidence=confidence,
        resamples=resamples,
    )


def global_scores_by_class(
    local: LocalAttribution,
    result: CounterfactualResult,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[int, GlobalExplanation]:
    """One :class:`GlobalExplanation` per target class of a multiclass result (e.g. MNIST).

    Each counterfactual moves toward its own target, so d_i = +1 for all rows of a group.
    """
    target = result.target.cpu()
    if target.shape[0] != len(local):
        raise InputError(
            f"result has {target.shape[0]} counterfactuals but the local scores {len(local)}; "
            "score the same result you group by"
        )
    out: dict[int, GlobalExplanation] = {}
    for cls in sorted(set(target.tolist())):
        group = local.select(target == cls)
        out[int(cls)] = global_scores(group, 1.0, resamples, confidence, seed, label=f"target {cls}")
    return out


def linear_direction_scores(
    attributes: LatentAttributes,
    latents: torch.Tensor,
    beta: torch.Tensor,
    eta: float = 1.0,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> GlobalExplanation:
    """InterFaceGAN-style global baseline: S_a = mean_i p_a(z_i + eta * beta/|beta|) - p_a(z_i).

    Args:
        attributes: fitted probes.
        latents: (N, d) original latents.
        beta: (d,) the classifier's latent logistic direction, supplied by the caller (use the
            direction of the classifier being explained: the reference code reused another one,
            research note section 7.3).
        eta: step length in latent units.
    """
    latents = _as_latent_matrix(latents, "latents")
    beta = torch.as_tensor(beta, dtype=torch.float32).flatten().to(latents.device)
    if beta.shape[0] != latents.shape[1]:
        raise InputError(f"beta must have shape ({latents.shape[1]},) like the latents, got {tuple(beta.shape)}")
    norm = beta.norm()
    if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
        raise InputError("beta must be a finite, non-zero direction")
    local = attributes.local(latents, latents + eta * beta / norm)
    explanation = global_scores(local, 1.0, resamples, confidence, seed, label=f"linear direction, eta={eta:g}")
    explanation.method = "linear_direction"
    return explanation
