"""A supervised alignment term: named StyleSpace coordinates that each move one known factor, and only it.

StylEx's training alone did not make a small generator's StyleSpace coordinates pure (no coordinate of the
CPU-trained faces generators moves one attribute with purity >= 0.70; docs/benchmarks/stylex-training.md). Where
the data's factors are known (the synthetic faces), this term asks it directly: for each pair
``factor=coordinate`` of an alignment map, shifting that style coordinate by ``delta`` of its std on an encoded
image must change the factor reader's reading of that factor by ``shift * delta / 3`` (clamped to the factor's
[0, 1] range) and leave every other factor as it was. It is supervision with the factors' labels (through a
factor reader trained on them), not part of StylEx; a generator trained with it is labelled so.

>>> plan = parse_alignment("smile=32.conv0:10;eyeglasses=16.conv0:20", names, reader.factor_names)
>>> loss, terms = alignment_loss(generator.decode_styles, reader, styles, plan, rng, images=8, factors=4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vcex.errors import InputError

Tensor = torch.Tensor


@dataclass(frozen=True)
class AlignmentPlan:
    """Which style coordinate carries which factor: ``coordinates`` (M,) indices into the style vector and
    ``factors`` (M,) indices into the factor reader's outputs, pair by pair; ``labels`` the map's own words;
    ``shifts`` (M,) each pair's own reading change per ``k`` stds, NaN where the pair takes the loss's ``shift``."""

    coordinates: Tensor
    factors: Tensor
    labels: tuple[str, ...]
    shifts: Tensor | None = None


def coordinate_names(model: object) -> tuple[list[str], Tensor]:
    """``("{layer}:{channel}", ...)`` for every style coordinate in layout order, and (S,) bool: toRGB or not."""
    names, torgb = [], []
    for layer, _, length in model.style_layout():
        names += [f"{layer}:{channel}" for channel in range(length)]
        torgb += [layer.endswith("torgb")] * length
    return names, torch.tensor(torgb, dtype=torch.bool)


def parse_alignment(text: str, coordinate_names: Sequence[str], factor_names: Sequence[str]) -> AlignmentPlan:
    """``"factor=layer:channel;..."`` (e.g. ``"smile=32.conv0:10"``) -> an :class:`AlignmentPlan`. A pair may
    carry its own reading change per ``k`` stds after ``@`` (``"background_hue=32.torgb:2@0.5"``: a hue, which
    wraps, flips warm and cool by half a turn). An unknown factor or coordinate, a coordinate or factor named
    twice, a shift outside (0, 1] or an empty map is refused, naming the known ones."""
    pairs = [part.strip() for part in text.replace(",", ";").split(";") if part.strip()]
    if not pairs:
        raise InputError("the alignment map is empty: give factor=layer:channel pairs, e.g. smile=32.conv0:10")
    coordinates, factors, labels, shifts = [], [], [], []
    for pair in pairs:
        factor, _, coordinate = (piece.strip() for piece in pair.partition("="))
        coordinate, at, shift_text = (piece.strip() for piece in coordinate.partition("@"))
        try:
            shift = float(shift_text) if at else float("nan")
        except ValueError:
            shift = -1.0
        if at and not 0 < shift <= 1:
            raise InputError(f"alignment {pair!r}: the shift after @ must be a number in (0, 1], got {shift_text!r}")
        shifts.append(shift)
        if factor not in factor_names:
            raise InputError(f"alignment {pair!r}: no factor {factor!r}; the reader's are {', '.join(factor_names)}")
        if coordinate not in coordinate_names:
            layers = sorted({name.split(":")[0] for name in coordinate_names})
            raise InputError(
                f"alignment {pair!r}: no style coordinate {coordinate!r}; coordinates are layer:channel with layer "
                f"one of {', '.join(layers)}"
            )
        coordinates.append(list(coordinate_names).index(coordinate))
        factors.append(list(factor_names).index(factor))
        labels.append(f"{factor}={coordinate}" + (f"@{shift_text}" if at else ""))
    for kind, values in (("coordinate", coordinates), ("factor", factors)):
        if len(set(values)) != len(values):
            raise InputError(f"the alignment map names a {kind} twice: {'; '.join(labels)}")
    return AlignmentPlan(torch.tensor(coordinates), torch.tensor(factors), tuple(labels), torch.tensor(shifts))


def alignment_loss(
    decode_styles: Callable[[Tensor], Tensor],
    reader: Callable[[Tensor], Tensor],
    styles: Tensor,
    plan: AlignmentPlan,
    rng: torch.Generator,
    *,
    images: int = 8,
    factors: int = 4,
    shift: float = 0.7,
    k: float = 3.0,
    off_weight: float = 1.0,
    regions: Tensor | None = None,
    region_weight: float = 0.0,
) -> tuple[Tensor, dict]:
    """The alignment term on the first ``images`` of ``styles`` (N, D) for ``factors`` pairs of ``plan`` drawn from
    ``rng`` (the CPU's stream). Gradients reach the synthesis network and, through ``styles`` and their std over
    the batch, whatever made the styles (encoder, affines): with the styles detached, 750 steps on the faces
    lowered the on-factor error 0.34 -> 0.31; with them, 0.34 -> 0.21, chiefly by widening the aligned
    coordinates' spread so that a shift of a few stds moves the factor.

    Each (pair, image) gets a shift ``delta`` of its coordinate, in stds of that coordinate over ``styles``,
    uniform in [1, k] with a random sign. ``reader``: images -> (N, F) factor readings in [0, 1];
    ``decode_styles``: styles -> images the reader takes. The loss per (pair, image) is
    ``(change_f - target_f)^2 + off_weight * sum_{g != f} change_g^2`` with ``target_f = clamp(r_f + shift * delta
    / k, 0, 1) - r_f`` (``shift``: the pair's own where the map gives one), averaged. With ``regions`` (N, M, H, W)
    bool, where each image's pair may change the picture (the factor's own parts: the faces' renderer knows them),
    ``region_weight`` times the mean squared pixel change outside it is added: a reader-independent check, since a
    generator trained against one reader learns edits that reader reads as pure and another does not. Returns (a
    scalar with gradients into ``decode_styles``'s parameters, logged terms: the on-factor error, the off-factor
    change and, with regions, the rms pixel change outside them)."""
    n = min(images, len(styles))
    picked = torch.randperm(len(plan.coordinates), generator=rng)[: min(factors, len(plan.coordinates))]
    coordinates, factor_index = plan.coordinates[picked], plan.factors[picked]
    m = len(picked)
    decodes, delta = _shifted_decodes(decode_styles, styles, coordinates, rng, n, k)
    readings = reader(decodes)
    before, after = readings[:n].detach(), readings[n:].view(m, n, -1)
    change = after - before.unsqueeze(0)  # (m, n, F)
    on = factor_index.to(styles.device)
    on_before = before[:, on].T  # (m, n)
    own = plan.shifts[picked] if plan.shifts is not None else torch.full((m,), float("nan"))
    shifts = torch.where(own.isnan(), torch.full_like(own, shift), own).to(styles.device)  # (m,)
    target = (on_before + shifts.unsqueeze(1) * delta.to(styles.device) / k).clamp(0, 1) - on_before
    on_change = change.gather(2, on.view(m, 1, 1).expand(m, n, 1)).squeeze(2)
    mask = torch.ones_like(change, dtype=torch.bool)
    mask[torch.arange(m), :, on] = False
    on_error = (on_change - target).pow(2)
    off_change = (change.pow(2) * mask).sum(2)
    loss = (on_error + off_weight * off_change).mean()
    terms = {"align_on": float(on_error.detach().mean().sqrt()), "align_off": float(off_change.detach().mean().sqrt())}
    if regions is not None and region_weight > 0:
        outside = ~regions[:n][:, picked.to(regions.device)].transpose(0, 1)  # (m, n, H, W)
        pixels = decodes[n:].view(m, n, *decodes.shape[1:]) - decodes[:n].detach().unsqueeze(0)
        leak = (pixels.pow(2).sum(2) * outside).sum((2, 3)) / outside.sum((2, 3)).clamp_min(1)  # (m, n)
        loss = loss + region_weight * leak.mean()
        terms["align_leak"] = float(leak.detach().mean().sqrt())
    return loss, terms


def edit_loss(
    decode_styles: Callable[[Tensor], Tensor],
    styles: Tensor,
    reals: Tensor,
    edits: Callable[..., Tensor],
    indices: Tensor,
    plan: AlignmentPlan,
    rng: torch.Generator,
    *,
    images: int = 8,
    factors: int = 4,
    shift: float = 0.5,
    k: float = 3.0,
    min_shift: float = 1.0,
    ring_weight: float = 0.0,
    ring: int = 2,
    detail_weight: float = 0.0,
) -> tuple[Tensor, dict]:
    """The edit term: shifting a pair's coordinate must change the decode as the true edit of its factor changes
    the face, pixel for pixel. ``styles`` (N, D) encode ``reals`` (N, C, S, S), the faces ``indices`` (N,) of
    ``edits`` (:class:`vcex.models.faces.FaceEdits`: it draws a known face with one factor moved); ``plan``'s
    factors index ``edits.factor_names``. For ``factors`` pairs drawn from ``rng`` and the first ``images`` faces,
    each (pair, face) gets a shift ``delta`` in stds of the coordinate over ``styles``, uniform in [min_shift, k]
    with a random sign, and the face is edited by ``delta / k`` (``shift``: a continuous factor's move per ``k`` stds in
    its range, or the pair's own after ``@``). The loss is the mean L1 distance between the decode's change
    ``G(s') - G(s)`` and the true change ``edit - real`` over the pixels the true edit changes, plus the same mean
    over the pixels it leaves alone (what the probe reads as impurity), so a small part (the mouth's ~20 pixels)
    weighs as much as the background. (Summing over the picture instead, at weights 0.1 and 0.3, made the decoder
    stop drawing anything for the pairs and wrecked the reconstruction in two epochs.) Unlike the alignment term
    it needs no reader, only the renderer. The stds are taken as they are (no gradient): through them, a pair's
    coordinate shrank to a third of its spread within two epochs, so that its shifts drew little and missed little.
    ``ring_weight`` > 0 adds that weight times the mean L1 over the ``ring`` pixels around the true change (within
    ``ring`` pixels of it, outside it): a blurred stroke spills there (session 21's glasses, drawn as smudges that
    hid the eyes) at little cost to the picture-wide outside mean. ``detail_weight`` > 0 adds that weight times the
    mean L1 over the face's details (``edits.details``: mouth, eyes, eyebrows) that the true edit leaves alone:
    ~60 pixels, a few percent of the outside mean, where a change reads as smiling or eyes_open.
    Returns (a scalar with gradients into the decoder and, through ``styles``, what made them; logged terms: the
    mean L1 inside and outside the true change, and with their weights around it and on the details)."""
    n = min(images, len(styles))
    picked = torch.randperm(len(plan.coordinates), generator=rng)[: min(factors, len(plan.coordinates))]
    coordinates, m = plan.coordinates[picked], len(picked)
    decodes, delta = _shifted_decodes(decode_styles, styles, coordinates, rng, n, k, std_gradient=False, low=min_shift)
    predicted = decodes[n:].view(m, n, *decodes.shape[1:]) - decodes[:n].detach().unsqueeze(0)
    names = [edits.factor_names[int(index)] for index in plan.factors[picked]]
    own = plan.shifts[picked] if plan.shifts is not None else torch.full((m,), float("nan"))
    shifts = torch.where(own.isnan(), torch.full_like(own, shift), own).tolist()
    target = edits(indices[:n], names, delta / k, shifts).to(reals.device) - reals[:n]
    changed = target.abs().amax(2) > 0.02  # (m, n, S, S)
    error = (predicted - target).abs().mean(2)  # (m, n, S, S)
    inside = (error * changed).sum((2, 3)) / changed.sum((2, 3)).clamp_min(1)
    outside = (error * ~changed).sum((2, 3)) / (~changed).sum((2, 3)).clamp_min(1)
    loss = (inside + outside).mean()
    terms = {"edit_in": float(inside.detach().mean()), "edit_out": float(outside.detach().mean())}
    if ring_weight > 0:
        grown = torch.nn.functional.max_pool2d(changed.flatten(0, 1).float(), 2 * ring + 1, stride=1, padding=ring)
        around = grown.view_as(changed).bool() & ~changed
        spill = (error * around).sum((2, 3)) / around.sum((2, 3)).clamp_min(1)
        loss = loss + ring_weight * spill.mean()
        terms["edit_ring"] = float(spill.detach().mean())
    if detail_weight > 0:
        if not callable(getattr(edits, "details", None)):
            raise InputError(f"detail_weight needs edits with details(indices); {type(edits).__name__} has none")
        kept = edits.details(indices[:n]).to(changed.device).unsqueeze(0) & ~changed  # (m, n, S, S)
        touched = (error * kept).sum((2, 3)) / kept.sum((2, 3)).clamp_min(1)
        loss = loss + detail_weight * touched.mean()
        terms["edit_details"] = float(touched.detach().mean())
    return loss, {"edit": float(loss.detach()), **terms}


def _shifted_decodes(
    decode_styles: Callable[[Tensor], Tensor], styles: Tensor, coordinates: Tensor, rng: torch.Generator, n: int,
    k: float, std_gradient: bool = True, low: float = 1.0,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The decodes of the first ``n`` ``styles`` as they are, then of each with one of the M ``coordinates`` shifted
    by ``delta`` stds over ``styles`` (uniform in [low, k], random sign, from ``rng``): ((1 + M) * n, C, S, S) in
    that order, and ``delta`` (M, n). ``std_gradient``: whether gradients flow through the stds too."""
    m = len(coordinates)
    spread = styles if std_gradient else styles.detach()
    std = spread.std(0).clamp_min(1e-6) if len(styles) > 1 else torch.ones_like(spread[0])
    magnitude = low + (k - low) * torch.rand(m, n, generator=rng)
    delta = magnitude * (torch.randint(0, 2, (m, n), generator=rng).float() * 2 - 1)  # (m, n) in stds
    base = styles[:n]
    shifted = base.unsqueeze(0).repeat(m, 1, 1)  # (m, n, D)
    rows = coordinates.to(styles.device)
    shifted[torch.arange(m).unsqueeze(1), torch.arange(n).unsqueeze(0), rows.unsqueeze(1)] += delta.to(
        styles.device
    ) * std[rows].unsqueeze(1)
    return decode_styles(torch.cat([base, shifted.flatten(0, 1)])), delta


__all__ = ["AlignmentPlan", "alignment_loss", "coordinate_names", "edit_loss", "parse_alignment"]
