"""The one optimisation loop every gradient explainer shares: Adam with per-image early stop.

Each image stops at the first step where its target probability passes the threshold (checked
before stepping, as in the Counterfactual Attacks reference code). Finished images are frozen at
once and dropped from the active batch at the next check, so the cost follows the average image,
not the slowest. Adam is written out here (same update as ``torch.optim.Adam``) because its state
must shrink with the active batch.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vcex.errors import InputError
from vcex.progress import progress_bar

Render = Callable[[torch.Tensor], torch.Tensor]
Penalty = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
OBJECTIVES = ("log_prob", "prob")


@dataclass
class LoopOutput:
    """Per-image outcome of :func:`optimise_until_confident`; all tensors (B, ...)."""

    variables: torch.Tensor
    images: torch.Tensor
    target_prob: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    forward_passes: torch.Tensor
    backward_passes: torch.Tensor

    def result_fields(self) -> dict[str, torch.Tensor]:
        """The fields of a :class:`CounterfactualResult` that the loop decides."""
        return {
            "counterfactuals": self.images,
            "target_prob": self.target_prob,
            "success": self.success,
            "steps": self.steps,
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
        }


def _bucket(size: int) -> int:
    """The batch size an active set of ``size`` rows is padded to: the smallest 2^k or 3 * 2^(k-1) >= size, so a
    chunk meets few distinct shapes (CPU convolution libraries keep memory for every shape they meet)."""
    power = 1
    while power < size:
        if power * 3 // 2 >= size and power >= 2:
            return power * 3 // 2
        power *= 2
    return power


def _broadcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (b,) mask viewed as (b, 1, ...) to broadcast against ``like`` (b, ...)."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _check_settings(objective: str, max_steps: int, threshold: float | torch.Tensor, target: torch.Tensor) -> None:
    """Raise :class:`InputError` for an unknown objective, a negative step budget, or a threshold tensor that
    is not one per image (``target`` (B,))."""
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    if max_steps < 0:
        raise InputError(f"max_steps must be >= 0, got {max_steps}")
    if isinstance(threshold, torch.Tensor) and threshold.shape != target.shape:
        raise InputError(
            f"threshold must be a float or one per image {tuple(target.shape)}, got {tuple(threshold.shape)}"
        )


@dataclass(slots=True)
class _LoopState:
    """What :func:`optimise_until_confident` carries from step to step.

    The active batch (b rows, shrinking at checks): ``index`` (b,) its rows' places in the batch,
    ``variables`` and Adam's ``first_moment`` / ``second_moment`` (b, ...), ``target`` (b,), ``threshold``
    (a float, or (b,) when ``per_image``), ``frozen`` (b,) rows that finished (kept as padding until dropped).
    The outcome, (B, ...) in batch order: ``best_variables``, ``best_images`` (allocated at the first render),
    ``target_prob``, ``success``, ``steps``, the pass counts, and ``counted`` (B,) rows whose passes are
    counted; ``counted_kept`` is the number of live rows at the last pass count.
    """

    index: torch.Tensor
    variables: torch.Tensor
    first_moment: torch.Tensor
    second_moment: torch.Tensor
    target: torch.Tensor
    threshold: float | torch.Tensor
    per_image: bool
    frozen: torch.Tensor
    best_variables: torch.Tensor
    best_images: torch.Tensor | None
    target_prob: torch.Tensor
    success: torch.Tensor
    steps: torch.Tensor
    forward_passes: torch.Tensor
    backward_passes: torch.Tensor
    counted: torch.Tensor
    counted_kept: int

    @classmethod
    def start(cls, initial: torch.Tensor, target: torch.Tensor, threshold: float | torch.Tensor) -> _LoopState:
        """Every row active, nothing finished, Adam's moments at zero; ``initial`` (B, ...) is copied."""
        batch, device = initial.shape[0], initial.device
        variables = initial.detach().clone()

        def flags() -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.bool, device=device)

        def counts() -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.long, device=device)

        return cls(
            index=torch.arange(batch, device=device),
            variables=variables,
            first_moment=torch.zeros_like(variables),
            second_moment=torch.zeros_like(variables),
            target=target,
            threshold=threshold,
            per_image=isinstance(threshold, torch.Tensor),
            frozen=flags(),
            best_variables=variables.clone(),
            best_images=None,
            target_prob=torch.zeros(batch, device=device),
            success=flags(),
            steps=counts(),
            forward_passes=counts(),
            backward_passes=counts(),
            counted=flags(),
            counted_kept=batch,
        )

    def output(self) -> LoopOutput:
        """The outcome, once the loop has ended."""
        return LoopOutput(
            self.best_variables,
            self.best_images,
            self.target_prob,
            self.success,
            self.steps,
            self.forward_passes,
            self.backward_passes,
        )


def _forward(
    variables: torch.Tensor,
    state: _LoopState,
    render: Render,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    render_rows: bool,
    mixed: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render the active ``variables`` (b, ...) and classify them: images (b, C, H, W) float32 and the log-
    probability (b,) of each row's target, differentiable (the caller enables gradients and autocast)."""
    images = render(variables, state.index) if render_rows else render(variables)
    if mixed:
        images = images.float()
    log_probs = F.log_softmax(classifier(images).float(), dim=1)
    return images, log_probs.gather(1, state.target[:, None]).squeeze(1)


def _record(
    state: _LoopState,
    record: torch.Tensor,
    reached: torch.Tensor,
    images: torch.Tensor,
    prob: torch.Tensor,
    step: int,
) -> None:
    """Store the active rows marked in ``record`` (b,): their variables, ``images`` (b, C, H, W), target
    ``prob`` (b,) and ``step``; rows that ``reached`` (b,) the threshold for the first time succeed and are
    frozen."""
    index, frozen = state.index, state.frozen
    state.best_variables[index] = torch.where(
        _broadcast(record, state.variables), state.variables.detach(), state.best_variables[index]
    )
    state.best_images[index] = torch.where(_broadcast(record, images), images.detach(), state.best_images[index])
    state.target_prob[index] = torch.where(record, prob, state.target_prob[index])
    state.steps[index] = torch.where(record, step, state.steps[index])
    state.success[index] |= reached & ~frozen
    state.frozen = frozen | reached


def _live_rows(state: _LoopState) -> int:
    """How many active rows have not finished (syncs the host: call it on check steps only)."""
    return int((~state.frozen).sum())


def _objective_rows(log_p: torch.Tensor, objective: str, lower: bool) -> torch.Tensor:
    """Per-row loss (b,) from the target's log-probability ``log_p`` (b,)."""
    if objective == "log_prob":
        # lowering uses -log(1 - p): the mirror image of cross-entropy, equally unsaturated
        return -torch.log1p(-log_p.exp().clamp(max=1 - 1e-6)) if lower else -log_p
    return log_p.exp() if lower else -log_p.exp()


def _count_passes(state: _LoopState, kept: int, step: int) -> None:
    """Give rows newly finished by ``step`` their passes, once: a forward and a backward pass at every step so
    far, this one included (the passes they ride along as padding later are the batch's cost, not theirs).
    ``kept`` is the number of live rows now."""
    state.counted_kept = kept
    index = state.index
    newly = state.frozen & ~state.counted[index]
    state.forward_passes[index] = torch.where(newly, step + 1, state.forward_passes[index])
    state.backward_passes[index] = torch.where(newly, step + 1, state.backward_passes[index])
    state.counted[index] |= newly


def _shrink(
    state: _LoopState, gradient: torch.Tensor, live: torch.Tensor, kept: int, size: int
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Drop finished rows from the active batch, keeping the first ones as (masked) padding up to ``size`` rows
    so the batch keeps one of a few sizes. ``gradient`` (b, ...) and ``live`` (b,) shrink with it; returns them
    and whether padding rows remain (their loss and step stay masked)."""
    keep = live
    pad = size - kept
    if pad:
        keep = live | (torch.cumsum((~live).long(), 0) <= pad) & ~live
    state.variables, gradient, state.first_moment, state.second_moment = (
        tensor[keep] for tensor in (state.variables, gradient, state.first_moment, state.second_moment)
    )
    state.index, state.target, state.frozen, live = (
        state.index[keep],
        state.target[keep],
        state.frozen[keep],
        live[keep],
    )
    if state.per_image:
        state.threshold = state.threshold[keep]
    return gradient, live, bool(pad)


def _adam_step(
    state: _LoopState,
    gradient: torch.Tensor,
    live: torch.Tensor,
    masked: bool,
    t: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """Adam's ``t``-th update of the active variables (as ``torch.optim.Adam``); when ``masked``, rows not
    ``live`` (b,) stay where they are, else one fused addcdiv."""
    beta1, beta2 = betas
    first_moment, second_moment = state.first_moment, state.second_moment
    first_moment.mul_(beta1).add_(gradient, alpha=1 - beta1)
    second_moment.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
    denominator = (second_moment / (1 - beta2**t)).sqrt_().add_(eps)
    if masked:
        update = first_moment / denominator * _broadcast(live.to(first_moment.dtype), first_moment)
        state.variables = state.variables.add(update, alpha=-lr / (1 - beta1**t))
    else:
        state.variables = state.variables.addcdiv(first_moment, denominator, value=-lr / (1 - beta1**t))


def _count_remaining_passes(state: _LoopState, step: int) -> None:
    """Rows still in the batch when the loop ends at ``step`` had a forward pass at every step and a backward
    pass at all but the last."""
    rest = state.index[~state.counted[state.index]]
    state.forward_passes[rest] = step + 1
    state.backward_passes[rest] = step


def optimise_until_confident(
    initial: torch.Tensor,
    render: Render,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    target: torch.Tensor,
    *,
    threshold: float | torch.Tensor,
    lr: float,
    max_steps: int,
    lower: bool = False,
    objective: str = "log_prob",
    penalty: Penalty | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    check_every: int = 1,
    progress: bool = False,
    render_rows: bool = False,
    autocast: torch.dtype | None = None,
) -> LoopOutput:
    """Optimise one variable per image until the classifier is confident in its target.

    Args:
        initial: (B, ...) starting variables (latents or pixels).
        render: variables (b, ...) -> images (b, C, H, W) fed to the classifier (differentiable).
        target: (B,) int64 class whose probability is raised (or lowered when ``lower``).
        threshold: stop an image when p_target > threshold (or < threshold when ``lower``); a float, or
            (B,) one per image.
        objective: ``"log_prob"`` (cross-entropy; strong gradients far from the target) or
            ``"prob"`` (the reference code's -p, which saturates).
        penalty: optional (variables, images, active_index) -> (b,) per-image cost added to the loss,
            e.g. a distance to the original; ``active_index`` maps active rows to batch rows.
        project: optional map applied to the variables after each step (e.g. clamping pixels).
        check_every: how often finished images are dropped from the batch (each check syncs the host). The
            batch shrinks only to one of a few sizes (:func:`_bucket`), the rest padded with finished rows
            whose loss and step are masked, so a chunk meets few convolution shapes.
        render_rows: call ``render(variables, rows)`` instead, ``rows`` (b,) mapping the active
            variables to batch rows (for renders that add a per-image term, e.g. a residual).
        autocast: run render and classifier under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16``: faster matmuls and convolutions on GPUs with bf16 units). The variables,
            Adam's state, the probabilities and the returned images stay float32.
    """
    _check_settings(objective, max_steps, threshold, target)
    device = initial.device
    mixed = autocast is not None and autocast != torch.float32
    # a disabled torch.autocast still costs a context switch per step; skip it entirely in float32
    cast = (lambda: torch.autocast(device.type, dtype=autocast)) if mixed else nullcontext
    state = _LoopState.start(initial, target, threshold)
    bar = progress_bar(total=max_steps, desc="optimising", enabled=progress, unit="step")

    for step in range(max_steps + 1):
        variables = state.variables.requires_grad_(True)
        with torch.enable_grad(), cast():
            images, log_p = _forward(variables, state, render, classifier, render_rows, mixed)
        prob = log_p.detach().exp()
        reached = prob < state.threshold if lower else prob > state.threshold
        last = step == max_steps
        checking = step % check_every == 0
        record = (~state.frozen) if last else (reached & ~state.frozen)
        if state.best_images is None:
            state.best_images = images.new_zeros((initial.shape[0], *images.shape[1:]))
        # where the host is consulted anyway (a check step), skip the bookkeeping when no image finished
        if last or not checking or bool(record.any()):
            _record(state, record, reached, images, prob, step)
        if last:
            break
        if checking and (kept := _live_rows(state)) == 0:
            break
        rows = _objective_rows(log_p, objective, lower)
        if penalty is not None:
            rows = rows + penalty(variables, images, state.index)
        # finished rows stay in the batch until the next check; their loss and step are masked out
        masked = not (checking and kept == len(state.frozen))
        live = ~state.frozen
        loss = (rows * live.to(rows.dtype)).sum() if masked else rows.sum()
        (gradient,) = torch.autograd.grad(loss, variables)
        state.variables = variables.detach()
        if checking:
            if kept != state.counted_kept:
                _count_passes(state, kept, step)
            if kept < len(live) and (size := _bucket(kept)) < len(live):
                gradient, live, masked = _shrink(state, gradient, live, kept, size)
            if progress:  # a disabled bar still formats its postfix: ~0.1 ms a step at batch 1
                bar.update(check_every)
                bar.set_postfix(active=kept)
        _adam_step(state, gradient, live, masked, step + 1, lr, betas, eps)
        if project is not None:
            state.variables = project(state.variables)
    _count_remaining_passes(state, step)
    bar.close()
    return state.output()
