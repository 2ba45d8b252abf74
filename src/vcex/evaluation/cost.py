"""What a counterfactual costs: wall time, classifier passes and black-box queries, counted exactly."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import torch
from torch import nn

from vcex.errors import InputError


class CostCounter:
    """Counts what a method asks of a classifier, per image.

    Two ways to use it:

    - ``with CostCounter(classifier) as cost:`` around any code that calls ``classifier`` (an
      ``nn.Module``): hooks count every forward pass while the block runs, and ``cost.seconds`` is the
      block's wall time. The method keeps the very same classifier object, with all its attributes.
    - ``counted = CostCounter(model)``; pass ``counted`` where a callable classifier is expected: each
      call is counted (also for plain functions, which cannot be hooked).

    Counts: ``calls`` (forward invocations), ``forward_images`` (images scored: forward passes counted
    per image, like a result's ``forward_passes``), ``backward_images`` (images whose scores received a
    gradient: backward passes), and ``queries`` (images scored in ``black_box`` mode). With
    ``black_box=True`` the scores come back detached, so the classifier behaves as a query-only API:
    a gradient-based method then fails instead of silently using gradients.

    Example:
        >>> with CostCounter(classifier) as cost:
        ...     result = CounterfactualAttack(classifier, vae).explain(images)
        >>> per_counterfactual(cost.seconds, cost.forward_images + cost.backward_images, len(images))
    """

    def __init__(self, model: nn.Module | Callable[[torch.Tensor], torch.Tensor], *, black_box: bool = False) -> None:
        if not callable(model):
            raise InputError(f"CostCounter needs a classifier (nn.Module or callable), got {type(model).__name__}")
        self.model = model
        self.black_box = black_box
        self.seconds = 0.0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._started: float | None = None
        self.reset()

    def reset(self) -> None:
        """Set every count to zero (the context manager does this on entry)."""
        self.calls = 0
        self.forward_images = 0
        self.backward_images = 0
        self.queries = 0

    @property
    def hooked(self) -> bool:
        """Whether hooks on the module are counting (inside the ``with`` block)."""
        return bool(self._handles)

    def _count(self, images: object, scores: object) -> object:
        batch = images.shape[0] if isinstance(images, torch.Tensor) and images.dim() > 0 else 1
        self.calls += 1
        self.forward_images += batch
        if self.black_box:
            self.queries += batch
            return scores.detach() if isinstance(scores, torch.Tensor) else scores
        if isinstance(scores, torch.Tensor) and scores.requires_grad:

            def count_backward(gradient: torch.Tensor) -> None:
                self.backward_images += batch

            scores.register_hook(count_backward)
        return scores

    def _forward_hook(self, _module: nn.Module, inputs: tuple, output: object) -> object:
        return self._count(inputs[0] if inputs else None, output)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.hooked:  # the module's own hook counts this call
            return self.model(images)
        if self.black_box:
            with torch.no_grad():
                return self._count(images, self.model(images))
        return self._count(images, self.model(images))

    def __enter__(self) -> CostCounter:
        self.reset()
        if isinstance(self.model, nn.Module):
            self._handles.append(self.model.register_forward_hook(self._forward_hook))
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.seconds = time.perf_counter() - (self._started or time.perf_counter())
        self._started = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def summary(self, n: int) -> dict[str, float]:
        """Per-counterfactual figures for ``n`` counterfactuals, see :func:`per_counterfactual`."""
        return per_counterfactual(self.seconds, self.forward_images + self.backward_images, n, queries=self.queries)


def per_counterfactual(seconds: float, passes: float, n: int, queries: float | None = None) -> dict[str, float]:
    """Cost per counterfactual: ``seconds_per_cf``, ``passes_per_cf`` (and ``queries_per_cf`` if given).

    Lower is better. Pass the number of valid counterfactuals as ``n`` for per-valid figures.

    Args:
        seconds: total wall time (>= 0); passes: forward + backward classifier passes, per image (>= 0);
        n: counterfactuals (>= 1); queries: black-box queries (>= 0) or None.
    """
    if n < 1:
        raise InputError(f"per_counterfactual: n must be at least 1, got {n}")
    if seconds < 0 or passes < 0 or (queries is not None and queries < 0):
        raise InputError(f"per_counterfactual: costs cannot be negative, got {seconds}, {passes}, {queries}")
    summary = {"seconds_per_cf": seconds / n, "passes_per_cf": passes / n}
    if queries is not None:
        summary["queries_per_cf"] = queries / n
    return summary
