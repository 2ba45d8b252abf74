"""Linear probes on standardised features, with their weights mapped back to the raw features.

scikit-learn's L2 strength (C) and lbfgs's convergence depend on the features' units: the faces
generator's W has a per-coordinate spread of 3 to 20, and logistic probes fitted on it raw stopped
converging. Probes are therefore fitted on (z - center) / spread and their weights mapped back, so a
caller scores raw latents with one matmul.
"""

from __future__ import annotations

import numpy as np


def standardization(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) features -> center (d,) and spread (d,) (a constant feature gets spread 1)."""
    center = features.mean(0)
    spread = features.std(0)
    return center, np.where(spread > 0, spread, 1.0)


def raw_linear(
    coefficients: np.ndarray, intercepts: np.ndarray, center: np.ndarray, spread: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A linear map fitted on standardised features, (K, d) and (K,), as one on the raw features.

    coefficients . (z - center) / spread + intercept == raw_coefficients . z + raw_intercept.
    """
    raw = coefficients / spread
    return raw, intercepts - (coefficients * (center / spread)).sum(-1)
