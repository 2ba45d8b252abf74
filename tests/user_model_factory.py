"""An entry point for the tests of ``--classifier package.module:factory``: ``user_model_factory:make``."""

from __future__ import annotations

from torch import nn


def make() -> nn.Module:
    """(N, 1, 28, 28) -> (N, 10) logits: a BatchNorm CNN of its own architecture (not the zoo's)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)
    )


def not_a_module() -> str:
    return "not a module"
