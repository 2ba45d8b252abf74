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
    return mask.view(-1, *([1] * (like.dim() - 1)))


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
    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    if max_steps < 0:
        raise InputError(f"max_steps must be >= 0, got {max_steps}")
    batch = initial.shape[0]
    device = initial.device
    mixed = autocast is not None and autocast != torch.float32
    # a disabled torch.autocast still costs a context switch per step; skip it entirely in float32
    cast = (lambda: torch.autocast(device.type, dtype=autocast)) if mixed else nullcontext
    index = torch.arange(batch, device=device)
    variables = initial.detach().clone()
    first_moment = torch.zeros_like(variables)
    second_moment = torch.zeros_like(variables)
    active_target = target
    per_image = isinstance(threshold, torch.Tensor)
    if per_image and threshold.shape != target.shape:
        raise InputError(
            f"threshold must be a float or one per image {tuple(target.shape)}, got {tuple(threshold.shape)}"
        )
    active_threshold = threshold
    frozen = torch.zeros(batch, dtype=torch.bool, device=device)
    counted = torch.zeros(batch, dtype=torch.bool, device=device)

    best_variables = variables.clone()
    best_images: torch.Tensor | None = None
    target_prob = torch.zeros(batch, device=device)
    success = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = torch.zeros(batch, dtype=torch.long, device=device)
    forward_passes = torch.zeros(batch, dtype=torch.long, device=device)
    backward_passes = torch.zeros(batch, dtype=torch.long, device=device)
    beta1, beta2 = betas
    counted_kept = batch  # live rows at the last pass count: when a check finds as many, nothing new finished
    bar = progress_bar(total=max_steps, desc="optimising", enabled=progress, unit="step")

    for step in range(max_steps + 1):
        variables.requires_grad_(True)
        with torch.enable_grad(), cast():
            images = render(variables, index) if render_rows else render(variables)
            if mixed:
                images = images.float()
            log_probs = F.log_softmax(classifier(images).float(), dim=1)
            log_p = log_probs.gather(1, active_target[:, None]).squeeze(1)
        prob = log_p.detach().exp()
        reached = prob < active_threshold if lower else prob > active_threshold
        last = step == max_steps
        checking = step % check_every == 0
        record = (~frozen) if last else (reached & ~frozen)
        if best_images is None:
            best_images = images.new_zeros((batch, *images.shape[1:]))
        # where the host is consulted anyway (a check step), skip the bookkeeping when no image finished
        if last or not checking or bool(record.any()):
            best_variables[index] = torch.where(
                _broadcast(record, variables), variables.detach(), best_variables[index]
            )
            best_images[index] = torch.where(_broadcast(record, images), images.detach(), best_images[index])
            target_prob[index] = torch.where(record, prob, target_prob[index])
            steps[index] = torch.where(record, step, steps[index])
            success[index] |= reached & ~frozen
            frozen = frozen | reached
        if last:
            break
        if checking:
            kept = int((~frozen).sum())
            if kept == 0:
                break
        if objective == "log_prob":
            # lowering uses -log(1 - p): the mirror image of cross-entropy, equally unsaturated
            rows = -torch.log1p(-log_p.exp().clamp(max=1 - 1e-6)) if lower else -log_p
        else:
            rows = log_p.exp() if lower else -log_p.exp()
        if penalty is not None:
            rows = rows + penalty(variables, images, index)
        # finished rows stay in the batch until the next check; their loss and step are masked out
        masked = not (checking and kept == len(frozen))
        live = ~frozen
        loss = (rows * live.to(rows.dtype)).sum() if masked else rows.sum()
        (gradient,) = torch.autograd.grad(loss, variables)
        variables = variables.detach()
        if checking and kept != counted_kept:
            # rows finished by now had a forward and a backward pass at every step so far, this one included;
            # counted once: the passes they ride along as padding (below) are the batch's cost, not theirs
            counted_kept = kept
            newly = frozen & ~counted[index]
            forward_passes[index] = torch.where(newly, step + 1, forward_passes[index])
            backward_passes[index] = torch.where(newly, step + 1, backward_passes[index])
            counted[index] |= newly
        if checking and kept < len(live) and (size := _bucket(kept)) < len(live):
            keep = live
            pad = size - kept
            if pad:  # the first finished rows stay, masked, so the batch keeps one of a few sizes
                keep = live | (torch.cumsum((~live).long(), 0) <= pad) & ~live
            variables, gradient, first_moment, second_moment = (
                tensor[keep] for tensor in (variables, gradient, first_moment, second_moment)
            )
            index, active_target, frozen, live = index[keep], active_target[keep], frozen[keep], live[keep]
            if per_image:
                active_threshold = active_threshold[keep]
            masked = bool(pad)  # finished rows kept as padding stay masked
        if checking and progress:  # a disabled bar still formats its postfix: ~0.1 ms a step at batch 1
            bar.update(check_every)
            bar.set_postfix(active=kept)
        t = step + 1
        first_moment.mul_(beta1).add_(gradient, alpha=1 - beta1)
        second_moment.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        denominator = (second_moment / (1 - beta2**t)).sqrt_().add_(eps)
        if masked:
            update = first_moment / denominator * _broadcast(live.to(first_moment.dtype), first_moment)
            variables = variables.add(update, alpha=-lr / (1 - beta1**t))
        else:
            variables = variables.addcdiv(first_moment, denominator, value=-lr / (1 - beta1**t))
        if project is not None:
            variables = project(variables)
    # rows still in the batch at the end had a forward pass at every step and a backward pass at all but the last
    rest = index[~counted[index]]
    forward_passes[rest] = step + 1
    backward_passes[rest] = step
    bar.close()
    return LoopOutput(best_variables, best_images, target_prob, success, steps, forward_passes, backward_passes)
