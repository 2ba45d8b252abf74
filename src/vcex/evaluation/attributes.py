"""Attribute-level metrics from an attribute oracle (e.g. a multi-label face-attribute classifier)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vcex.errors import InputError


def mnac(
    oracle_probs_original: torch.Tensor,
    oracle_probs_cf: torch.Tensor,
    exclude: int | Sequence[int] | torch.Tensor | None = None,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Number of attributes changed per image (MNAC is its mean), (N,) int64.

    An attribute counts as present when the oracle's probability is above ``threshold``; the score is the
    number of attributes present in one image of the pair and absent in the other, skipping ``exclude``.
    Lower is better: the counterfactual changes few attributes besides the one it was asked to change.
    The DiME/ACE code sums all 40 CelebA attributes, the queried one included (research note
    gcd-diffae-metrics.md, section C): leave ``exclude=None`` to match published numbers, or exclude the
    queried attribute to count only side effects.

    Args:
        oracle_probs_original: (N, A) probabilities in [0, 1] on the originals.
        oracle_probs_cf: (N, A) probabilities on their counterfactuals, same order.
        exclude: attribute indices in [0, A) left out of the count.
        threshold: in (0, 1).
    """
    for name, probs in (("oracle_probs_original", oracle_probs_original), ("oracle_probs_cf", oracle_probs_cf)):
        if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or not probs.is_floating_point():
            shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
            raise InputError(f"mnac: {name} must be a float (N, attributes) tensor, got {shape}")
        if probs.numel() and (not bool(torch.isfinite(probs).all()) or probs.min() < 0 or probs.max() > 1):
            raise InputError(f"mnac: {name} must hold probabilities in [0, 1] (apply a sigmoid to logits)")
    if oracle_probs_original.shape != oracle_probs_cf.shape:
        raise InputError(
            f"mnac: both inputs need the same shape, got {tuple(oracle_probs_original.shape)} and "
            f"{tuple(oracle_probs_cf.shape)}"
        )
    if len(oracle_probs_original) == 0:
        raise InputError("mnac: empty batch (N=0); pass at least one pair")
    if not 0.0 < threshold < 1.0:
        raise InputError(f"mnac: threshold must lie in (0, 1), got {threshold}")
    attributes = oracle_probs_original.shape[1]
    keep = torch.ones(attributes, dtype=torch.bool, device=oracle_probs_original.device)
    if exclude is not None:
        excluded = torch.as_tensor(exclude, dtype=torch.long).flatten()
        if bool(((excluded < 0) | (excluded >= attributes)).any()):
            raise InputError(f"mnac: exclude must hold attribute indices in [0, {attributes - 1}], got {exclude}")
        keep[excluded.to(keep.device)] = False
    changed = (oracle_probs_original > threshold) != (oracle_probs_cf.to(oracle_probs_original.device) > threshold)
    return (changed & keep).sum(1)
