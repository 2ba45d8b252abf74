"""StyleSpace purity probe: which attribute each StyleSpace coordinate of a style generator moves, and how purely.

For every coordinate c of the StyleSpace (Wu et al., CVPR'21, arXiv 2011.12799; the space StylEx's AttFind
searches, Lang et al., ICCV'21), the probe shifts c by ``-k`` and ``+k`` standard deviations (the std of c over
the N encoded images) on each of the N images, decodes, and reads a multi-label attribute oracle
(images -> (N, A) logits, read as sigmoid probabilities) against its reading of the unshifted decode. Per
coordinate it reports

- ``attribute_change`` (A,): the mean |p_after - p_before| over images and both signs, per attribute;
- ``top_attribute``: the attribute it moves most, and ``purity``: that attribute's share of the total change
  (1 = it moves one attribute alone; 1/A = it moves all alike; 0 where it moves nothing);
- ``flip_share``: the share of images whose reading of the top attribute crosses 0.5 under either sign;
- with a classifier, ``logit_change`` (2,): the mean change of its target log-odds under -k and +k.

Conv and toRGB coordinates are told apart by ``is_torgb``. The decodes run in chunks of ``batch_size``
(coordinate, sign, image) triples, so memory is bounded by the chunk and the (S, N, A) flip table. They run on
the style generator's device (the oracle and classifier must be on it too); images may be anywhere, and the
tables come back on the CPU.

The images' styles are the encoder's, or with ``invert_steps`` > 0 the encoder's refined by inversion (Adam on
each image's pixel error, in StyleSpace; :func:`encoded_styles`). The oracle reads an encoder's blurred decodes
unsteadily (the faces' decodes lose most smiles, and a change of the background alone moves the smiling reading
by ~0.1), so every coordinate's purity is measured against that noise; decodes closer to the faces measure the
coordinate more than the decoder's blur.

>>> probe = stylespace_probe(autoencoder, oracle, images, k=3.0, classifier=smiling, target=1)
>>> probe.purity[~probe.is_torgb].max(), probe.names[int(probe.purity.argmax())]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from vcex.checks import check_count, check_positive_finite, device_of
from vcex.errors import InputError
from vcex.models.state import evaluating
from vcex.models.style_alignment import coordinate_names  # the names of StyleSpace, kept with the models

Tensor = torch.Tensor


class OneVsAllOracle(torch.nn.Module):
    """A classifier read as one binary attribute per class, for datasets without an attribute oracle (the digits):
    ``forward(images) -> (N, K)`` logits whose sigmoid is the classifier's softmax probability of each class, so the
    probe reports per coordinate the class it moves most and how purely. ``attribute_names``: the class names.

    Its readings sum to one, so every change moves probability from some classes to others and the sum of
    |delta p| counts the moved mass twice: the probe then takes purity as the top class's share of the moved mass
    (half the sum), so a coordinate that moves probability between two digits alone is 1 pure, as a faces
    coordinate that moves one attribute alone is (``readings_sum_to_one``)."""

    readings_sum_to_one = True

    def __init__(self, classifier: torch.nn.Module, class_names: Sequence[str]) -> None:
        super().__init__()
        self.classifier = classifier
        self.attribute_names = tuple(class_names)

    def forward(self, images: Tensor) -> Tensor:
        probabilities = torch.softmax(self.classifier(images), dim=1)
        return torch.logit(probabilities.clamp(1e-6, 1 - 1e-6))


# what a latent model must have for the probe (StyleAutoencoder and StyleGenerator have them)
STYLESPACE_METHODS = ("encode", "styles", "decode_styles", "style_layout")


@dataclass
class StyleSpaceProbe:
    """The probe's per-coordinate table; S probed coordinates, A attributes, N images.

    ``coordinates`` (S,) int64 indices into the style vector; ``names`` (S,) ``"{layer}:{channel}"``;
    ``is_torgb`` (S,) bool; ``style_std`` (S,) the std over the images (the shift is ``k * style_std``);
    ``attribute_change`` (S, A) mean |delta p| over images and signs; ``attribute_shift`` (S, 2, A) mean signed
    delta p under -k (index 0) and +k (index 1); ``top_attribute`` (S,) int64; ``purity`` (S,) in [0, 1];
    ``flip_share`` (S,) in [0, 1]; ``logit_change`` (S, 2) or None; ``invert_steps`` the inversion steps the
    images' styles had (0: the encoder's); ``styles`` (N, all coordinates) those styles.
    """

    attribute_names: tuple[str, ...]
    coordinates: Tensor
    names: list[str]
    is_torgb: Tensor
    style_std: Tensor
    attribute_change: Tensor
    attribute_shift: Tensor
    top_attribute: Tensor
    purity: Tensor
    flip_share: Tensor
    logit_change: Tensor | None
    k: float
    num_images: int
    invert_steps: int = 0
    styles: Tensor | None = None  # (N, S) the probed images' styles, before any shift

    def rows(self) -> list[dict]:
        """One JSON-ready dict per coordinate (the probe.json table)."""
        rows = []
        for index, name in enumerate(self.names):
            top = int(self.top_attribute[index])
            row = {
                "coordinate": name,
                "index": int(self.coordinates[index]),
                "kind": "torgb" if bool(self.is_torgb[index]) else "conv",
                "style_std": round(float(self.style_std[index]), 5),
                "factor": self.attribute_names[top],
                "purity": round(float(self.purity[index]), 4),
                "flip_share": round(float(self.flip_share[index]), 4),
                "factor_shift_minus": round(float(self.attribute_shift[index, 0, top]), 4),
                "factor_shift_plus": round(float(self.attribute_shift[index, 1, top]), 4),
                "total_change": round(float(self.attribute_change[index].sum()), 4),
            }
            if self.logit_change is not None:
                row["logit_change_minus"] = round(float(self.logit_change[index, 0]), 4)
                row["logit_change_plus"] = round(float(self.logit_change[index, 1]), 4)
            rows.append(row)
        return rows

    def best_per_factor(self, torgb: bool | None = None) -> dict[str, int | None]:
        """Per attribute, the row (a position in this table) of the coordinate whose top attribute it is with the
        largest purity x flip share (pure and effective), or None where no coordinate moves it most. ``torgb``:
        True/False keeps only toRGB/conv coordinates, None all."""
        score = self.purity * self.flip_share
        keep = torch.ones_like(self.is_torgb) if torgb is None else self.is_torgb == torgb
        best: dict[str, int | None] = {}
        for a, name in enumerate(self.attribute_names):
            candidates = torch.nonzero(keep & (self.top_attribute == a) & (self.attribute_change.sum(1) > 0))
            candidates = candidates.flatten()
            best[name] = int(candidates[score[candidates].argmax()]) if len(candidates) else None
        return best


def stylespace_model(latent_model: object) -> object:
    """The style generator behind ``latent_model`` (a :class:`~vcex.models.stylegan.StyleSpaceModel` is unwrapped);
    a model without a StyleSpace raises :class:`InputError` naming the methods it lacks."""
    model = getattr(latent_model, "autoencoder", latent_model)
    missing = [name for name in STYLESPACE_METHODS if not callable(getattr(model, name, None))]
    if missing:
        raise InputError(
            f"the StyleSpace probe needs a style generator, but {type(latent_model).__name__} has no StyleSpace: it "
            f"lacks {', '.join(f'{name}()' for name in missing)}; use a style-based latent model such as faces-style"
        )
    return model


def style_device(model: object, **others: object) -> torch.device:
    """The device the StyleSpace work runs on: the style generator ``model``'s. Every other model given by name
    (``classifier=...``) must have its parameters and buffers there too (a plain function has none and passes),
    else one :class:`InputError` names both devices and the fix."""
    device = device_of(model)
    for name, other in others.items():
        tensors = chain(getattr(other, "parameters", tuple)(), getattr(other, "buffers", tuple)())
        where = next((tensor.device for tensor in tensors), device)
        if where != device:
            raise InputError(
                f"the {name} is on {where} but the style generator on {device}: move both to one device "
                f"(model.to({str(device)!r}))"
            )
    return device


def target_log_odds(logits: Tensor, target: int) -> Tensor:
    """(N, K) logits -> (N,) log-odds of class ``target``: logit_t - logsumexp(other logits); a single-logit
    classifier (K = 1) is read as its logit."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    others = torch.cat([logits[:, :target], logits[:, target + 1 :]], dim=1)
    return logits[:, target] - torch.logsumexp(others, dim=1)


def _check_inputs(images: Tensor, k: float, batch_size: int, target: int, classifier: object) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InputError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if len(images) < 2:
        raise InputError(f"the probe needs at least 2 images (a std over them sets the shift), got {len(images)}")
    check_positive_finite("k", k)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if classifier is not None and target < 0:
        raise InputError(f"target must be a class index >= 0, got {target}")


@torch.no_grad()
def stylespace_probe(
    latent_model: object,
    attribute_oracle: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    k: float = 3.0,
    classifier: Callable[[Tensor], Tensor] | None = None,
    target: int = 1,
    batch_size: int = 512,
    attribute_names: Sequence[str] | None = None,
    coordinates: Tensor | Sequence[int] | None = None,
    invert_steps: int = 0,
    styles: Tensor | None = None,
) -> StyleSpaceProbe:
    """Probe every StyleSpace coordinate of ``latent_model`` on ``images`` (N, C, H, W) in [0, 1].

    ``attribute_oracle``: images -> (N, A) logits of binary attributes (read through a sigmoid), named by
    ``attribute_names`` (default: its ``attribute_names``). ``classifier``: images -> (N, K) logits; its
    ``target`` class's log-odds change is reported (optional). ``k``: the shift in stds (3). ``batch_size``:
    (coordinate, sign, image) triples per decode. ``coordinates``: (S',) indices to probe (default all).
    ``invert_steps``: refine the encoder's styles by that many inversion steps first (:func:`encoded_styles`; 0:
    the encoder alone). ``styles`` (N, S): the images' styles if already known (an AttFind or EigenFind search's,
    so that its attributes are labelled on the decodes it searched); not with ``invert_steps``. The models are run
    in eval mode and put back as they were. Returns a :class:`StyleSpaceProbe`.
    """
    model = stylespace_model(latent_model)
    _check_inputs(images, k, batch_size, target, classifier)
    invert_steps = check_count("invert_steps", invert_steps)
    names = tuple(attribute_names if attribute_names is not None else getattr(attribute_oracle, "attribute_names", ()))
    all_names, all_torgb = coordinate_names(model)
    coordinates = _checked_coordinates(coordinates, len(all_names))
    device = style_device(model, attribute_oracle=attribute_oracle, classifier=classifier)
    if styles is None:
        styles = encoded_styles(model, images, invert_steps=invert_steps, batch_size=batch_size)
    elif invert_steps:
        raise InputError("give styles or invert_steps, not both: styles are used as they are")
    else:
        styles = given_styles(styles, images, len(all_names))
    styles = styles.to(device)
    with evaluating(model, attribute_oracle, classifier):
        style_std = styles.std(dim=0)
        before = torch.cat([model.decode_styles(chunk) for chunk in styles.split(batch_size)])
        p_before = torch.cat([torch.sigmoid(attribute_oracle(chunk)) for chunk in before.split(batch_size)])
        if not names:
            names = tuple(f"attribute {a}" for a in range(p_before.shape[1]))
        if len(names) != p_before.shape[1]:
            raise InputError(f"{len(names)} attribute names for an oracle with {p_before.shape[1]} outputs")
        odds_before = None
        if classifier is not None:
            odds_before = torch.cat([_odds(classifier, chunk, target) for chunk in before.split(batch_size)])
        sums = _shift_and_read(
            model, attribute_oracle, classifier, target, styles, style_std, p_before, odds_before,
            coordinates, k, batch_size,
        )  # fmt: skip
    labels = [all_names[int(c)] for c in coordinates]
    moved_twice = bool(getattr(attribute_oracle, "readings_sum_to_one", False))
    sums = {key: None if value is None else value.cpu() for key, value in sums.items()}
    probe = _table(
        sums, names, coordinates, labels, all_torgb[coordinates], style_std[coordinates].cpu(), k, len(images),
        moved_twice,
    )  # fmt: skip
    probe.invert_steps, probe.styles = invert_steps, styles.cpu()
    return probe


# Adam's step on the styles, in stds of each coordinate over the images: 100 steps took faces-style's decodes of
# 100 test faces from 28.2 to 32.4 dB PSNR, and the oracle's agreement with the faces from 0.90 to 0.98
INVERT_LR = 0.05


class _StandardisedStyles(nn.Module):
    """A style generator as a latent model over standardised styles, for :class:`RefinedEncoder`: ``encode``
    gives (styles - mean) / std, ``decode(u)`` decodes mean + u * std; one Adam step then moves every
    coordinate alike in its own units (their stds run from ~0.2 to ~25 on the faces generator)."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def encode(self, images: Tensor) -> Tensor:
        return (self.model.styles(self.model.encode(images)) - self.mean) / self.std

    def decode(self, standardised: Tensor) -> Tensor:
        return self.model.decode_styles(self.mean + standardised * self.std)


def encoded_styles(
    latent_model: object, images: Tensor, *, invert_steps: int = 0, lr: float = INVERT_LR, batch_size: int = 256
) -> Tensor:
    """The styles (N, S) of ``images`` (N, C, H, W) in [0, 1]: the encoder's, or with ``invert_steps`` > 0 the
    encoder's refined by that many Adam steps on each image's mean squared pixel error (GAN inversion into
    StyleSpace, from the encoder's start; steps measured in each coordinate's std over the N encoded images, so
    an image's result depends on the set only through those stds). The work runs on the model's device; the
    styles come back on the images' device. The model is run in eval mode with its weights untouched, and put
    back as it was."""
    from vcex.models.refined import RefinedEncoder

    model = stylespace_model(latent_model)
    invert_steps = check_count("invert_steps", invert_steps)
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InputError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    home, images = images.device, images.to(device_of(model))
    with torch.no_grad(), evaluating(model):
        styles = torch.cat([model.styles(model.encode(chunk)) for chunk in images.split(batch_size)])
    if invert_steps == 0:
        return styles.to(home)
    if len(images) < 2:
        raise InputError(f"inverting needs at least 2 images (their std sets the step), got {len(images)}")
    mean, std = styles.mean(dim=0), styles.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant coordinate moves in its raw units
    refined = RefinedEncoder(_StandardisedStyles(model, mean, std), steps=invert_steps, lr=lr, batch_size=batch_size)
    return (mean + refined.encode(images) * std).detach().to(home)


def given_styles(styles: Tensor, images: Tensor, size: int) -> Tensor:
    """``styles`` checked to be (N, S) finite rows, one per image of ``images`` (N, C, H, W), detached."""
    if not isinstance(styles, Tensor) or styles.shape != (len(images), size):
        shape = tuple(getattr(styles, "shape", ())) or type(styles).__name__
        raise InputError(
            f"styles must be (images, style size) = ({len(images)}, {size}), one row per image, got {shape}"
        )
    if not torch.isfinite(styles).all():
        raise InputError("styles contain NaN or infinite values: pass the styles encoded_styles returns")
    return styles.detach()


def _checked_coordinates(coordinates: Tensor | Sequence[int] | None, size: int) -> Tensor:
    """(S',) int64 indices into the style vector (default: all ``size``); empty or out-of-range ones are refused."""
    if coordinates is None:
        return torch.arange(size)
    coordinates = torch.as_tensor(coordinates, dtype=torch.long).flatten()
    if not len(coordinates) or int(coordinates.min()) < 0 or int(coordinates.max()) >= size:
        raise InputError(f"coordinates must be indices in [0, {size}) of the style vector, at least one")
    return coordinates


def _odds(classifier: Callable[[Tensor], Tensor], images: Tensor, target: int) -> Tensor:
    logits = classifier(images)
    if target >= logits.shape[1] and logits.shape[1] > 1:
        raise InputError(f"target {target} is not a class of a classifier with {logits.shape[1]} outputs")
    return target_log_odds(logits, target)


def _shift_and_read(
    model: object,
    attribute_oracle: Callable[[Tensor], Tensor],
    classifier: Callable[[Tensor], Tensor] | None,
    target: int,
    styles: Tensor,
    style_std: Tensor,
    p_before: Tensor,
    odds_before: Tensor | None,
    coordinates: Tensor,
    k: float,
    batch_size: int,
) -> dict[str, Tensor]:
    """Decode every (coordinate, sign, image) triple in chunks and accumulate per (coordinate, sign) sums of
    |delta p| and delta p (S', 2, A), of the classifier's delta log-odds (S', 2), and per (coordinate, image,
    attribute) whether the reading crossed 0.5 under either sign (S', N, A)."""
    n, attributes = p_before.shape
    count = len(coordinates)
    device = p_before.device
    absolute = torch.zeros(count * 2, attributes, device=device)
    signed = torch.zeros(count * 2, attributes, device=device)
    odds = torch.zeros(count * 2, device=device)
    flips = torch.zeros(count * n, attributes, dtype=torch.uint8, device=device)  # 0, 1 or 2 signs that flip it
    above_before = p_before > 0.5
    offsets = torch.stack([-k * style_std[coordinates], k * style_std[coordinates]], dim=1)  # (S', 2), on device
    for image, pair, after in decode_coordinate_shifts(model, styles, coordinates, offsets, batch_size=batch_size):
        slot = pair // 2
        p_after = torch.sigmoid(attribute_oracle(after))
        delta = p_after - p_before[image]
        absolute.index_add_(0, pair, delta.abs())
        signed.index_add_(0, pair, delta)
        # a chunk can hold both signs of one (coordinate, image): accumulate, as `|=` would keep one of them
        flips.index_put_((slot * n + image,), ((p_after > 0.5) != above_before[image]).to(torch.uint8), accumulate=True)
        if classifier is not None:
            odds.index_add_(0, pair, _odds(classifier, after, target) - odds_before[image])
    return {
        "absolute": absolute.view(count, 2, attributes) / n,
        "signed": signed.view(count, 2, attributes) / n,
        "odds": odds.view(count, 2) / n if classifier is not None else None,
        "flipped": flips.view(count, n, attributes) > 0,
    }


def decode_edits(
    model: object,
    styles: Tensor,
    edit: Callable[[Tensor, Tensor], Tensor],
    num_edits: int,
    *,
    batch_size: int,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Decode every (edit, image) pair of ``num_edits`` edits of the N ``styles`` (N, S) in chunks of ``batch_size``.

    Pair t is edit ``t // N`` on image ``t % N`` (edit-major, so a chunk decodes few edits on many images);
    ``edit(styles (B, S), edit_index (B,)) -> edited styles (B, S)`` edits a chunk (it may write in place: it gets
    a copy). ``start``/``stop`` bound the pairs (resuming a long run). Yields ``(image (B,), edit_index (B,),
    decodes (B, C, H, W))`` per chunk, all on the styles' device; the StyleSpace probe, AttFind and EigenFind all
    decode through here.
    """
    n = len(styles)
    stop = num_edits * n if stop is None else stop
    for pairs in torch.arange(start, stop, device=styles.device).split(batch_size):
        image, edit_index = pairs % n, pairs // n
        yield image, edit_index, model.decode_styles(edit(styles[image].clone(), edit_index))


def decode_coordinate_shifts(
    model: object,
    styles: Tensor,
    coordinates: Tensor,
    values: Tensor,
    *,
    batch_size: int,
    replace: bool = False,
    start: int = 0,
    stop: int | None = None,
    reuse_prefix: bool = True,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """:func:`decode_edits` with edit ``V * slot + v`` moving coordinate ``coordinates[slot]`` by ``values[slot, v]``
    (``values`` (S', V): V = 2 for the probe's two signs and AttFind's min and max, 1 for one move each), or setting
    it to that value with ``replace`` (AttFind's jump to the min/max).

    A model with ``synthesis_state``/``decode_from_state`` (the style generators) is decoded from the state just
    before the edited coordinate's layer, computed once per image and layer: the layers before it do not read the
    edited style, so the decodes are the same (to float rounding) and the prefix's cost is paid N times per layer
    instead of 2*K*N times. ``reuse_prefix=False`` decodes every pair from the start."""

    coordinates, values = coordinates.to(styles.device), values.to(styles.device)
    per_slot = values.shape[1]

    def shift(chunk: Tensor, pair: Tensor) -> Tensor:
        rows = torch.arange(len(chunk), device=chunk.device)
        column = coordinates[pair // per_slot]
        value = values[pair // per_slot, pair % per_slot].to(chunk.dtype)
        chunk[rows, column] = value if replace else chunk[rows, column] + value
        return chunk

    num_edits = per_slot * len(coordinates)
    if not (reuse_prefix and callable(getattr(model, "decode_from_state", None))):
        yield from decode_edits(model, styles, shift, num_edits, batch_size=batch_size, start=start, stop=stop)
        return
    layer_of = torch.zeros(styles.shape[1], dtype=torch.long, device=styles.device)
    for index, (_, offset, length) in enumerate(model.style_layout()):
        layer_of[offset : offset + length] = index
    edit_layer = layer_of[coordinates].repeat_interleave(per_slot)  # (V * S',) the layer each edit restarts from
    states: dict[int, tuple[Tensor, Tensor | None]] = {}
    n = len(styles)
    stop = num_edits * n if stop is None else stop
    for pairs in torch.arange(start, stop, device=styles.device).split(batch_size):
        image, edit_index = pairs % n, pairs // n
        edited = shift(styles[image].clone(), edit_index)
        decodes: Tensor | None = None
        layers = edit_layer[edit_index].unique().tolist()
        # keep only the states this chunk needs (memory: one or two layers' features of N images); coordinates
        # usually come in layout order, so consecutive chunks share a layer and each state is computed once
        states = {layer: state for layer, state in states.items() if layer in layers}
        for layer in layers:
            if layer not in states:
                states[layer] = _states_before(model, styles, layer, batch_size)
            rows = torch.nonzero(edit_layer[edit_index] == layer).flatten()
            x, rgb = states[layer]
            at = image[rows]
            out = model.decode_from_state(edited[rows], layer, (x[at], None if rgb is None else rgb[at]))
            if decodes is None:
                decodes = out.new_empty((len(pairs), *out.shape[1:]))
            decodes[rows] = out
        yield image, edit_index, decodes


def _states_before(model: object, styles: Tensor, layer: int, batch_size: int) -> tuple[Tensor, Tensor | None]:
    """The synthesis state (features, summed RGB or None) of all N ``styles`` just before ``layer``, in chunks.

    Kept channels-last: the convolutions, products and upsampling after it stay in that layout, ~1.6x faster on
    CPUs than the default (N, C, H, W) layout, whose convolutions convert in and out of it."""
    parts = [model.synthesis_state(chunk, layer) for chunk in styles.split(batch_size)]
    x = torch.cat([part[0] for part in parts]).contiguous(memory_format=torch.channels_last)
    if parts[0][1] is None:
        return x, None
    return x, torch.cat([part[1] for part in parts]).contiguous(memory_format=torch.channels_last)


def top_and_purity(change: Tensor, moved_twice: bool = False) -> tuple[Tensor, Tensor]:
    """From mean |delta p| per attribute ``change`` (..., A): the attribute moved most (...,) and its purity (...,):
    its share of the total (0 where nothing moves), or with ``moved_twice`` (readings that sum to one) of half the
    total, capped at 1."""
    total = change.sum(dim=-1) / (2 if moved_twice else 1)
    top_share, top = change.max(dim=-1)
    purity = torch.where(total > 0, (top_share / total.clamp_min(1e-12)).clamp(max=1), torch.zeros_like(total))
    return top, purity


def _table(
    sums: dict[str, Tensor],
    attribute_names: tuple[str, ...],
    coordinates: Tensor,
    names: list[str],
    is_torgb: Tensor,
    style_std: Tensor,
    k: float,
    num_images: int,
    moved_twice: bool = False,
) -> StyleSpaceProbe:
    """Purity, top attribute and flip share from the accumulated sums; ``moved_twice``: the readings sum to one
    (class probabilities), so the moved mass is half the total change."""
    change = sums["absolute"].mean(dim=1)  # (S', A): over both signs
    top, purity = top_and_purity(change, moved_twice)
    flips = sums["flipped"].float().mean(dim=1)  # (S', A)
    flip_share = flips.gather(1, top[:, None]).squeeze(1)
    return StyleSpaceProbe(
        attribute_names=attribute_names,
        coordinates=coordinates,
        names=names,
        is_torgb=is_torgb,
        style_std=style_std,
        attribute_change=change,
        attribute_shift=sums["signed"],
        top_attribute=top,
        purity=purity,
        flip_share=flip_share,
        logit_change=sums["odds"],
        k=float(k),
        num_images=num_images,
    )


# a coordinate at least this pure counts as a disentangled channel (issue 27's bar for the new generator)
PURE = 0.70


def probe_summary(probe: StyleSpaceProbe, pure: float = PURE) -> dict:
    """Per kind (``conv``, ``torgb``): coordinate count, purity quantiles (min, 10%, median, 90%, max), how many
    reach ``pure``, and how many of those also flip their factor on >= half the images; and per factor its best
    coordinate (:meth:`StyleSpaceProbe.best_per_factor`) among conv, toRGB and all coordinates, as table rows."""
    rows = probe.rows()
    kinds = {}
    for kind, mask in (("conv", ~probe.is_torgb), ("torgb", probe.is_torgb)):
        purity, flips = probe.purity[mask], probe.flip_share[mask]
        quantiles = torch.quantile(purity, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])).tolist() if len(purity) else []
        kinds[kind] = {
            "coordinates": int(mask.sum()),
            "purity_quantiles": dict(zip(("min", "p10", "median", "p90", "max"), (round(q, 4) for q in quantiles))),
            f"purity_at_least_{pure:.2f}": int((purity >= pure).sum()),
            f"purity_at_least_{pure:.2f}_and_flip_at_least_0.50": int(((purity >= pure) & (flips >= 0.5)).sum()),
        }
    best = {}
    for scope, torgb in (("conv", False), ("torgb", True), ("any", None)):
        for factor, index in probe.best_per_factor(torgb).items():
            best.setdefault(factor, {})[scope] = None if index is None else rows[index]
    return {"kinds": kinds, "best_per_factor": best}


@torch.no_grad()
def shift_strip(latent_model: object, images: Tensor, index: int, shift: float, styles: Tensor | None = None) -> Tensor:
    """Before/after strips of one style coordinate: (3, n, C, H, W) in [0, 1], the decodes of ``images``
    (n, C, H, W) unshifted, shifted by ``-shift`` and by ``+shift`` (the probe's ``k * style_std``). ``styles``
    (n, S): the images' styles if already known (the probe's, inverted or not), else the encoder's. Decoded on
    the model's device, returned on the images'."""
    model = stylespace_model(latent_model)
    device = device_of(model)
    with evaluating(model):
        styles = model.styles(model.encode(images.to(device))) if styles is None else styles.to(device)
        rows = []
        for sign in (0.0, -1.0, 1.0):
            shifted = styles.clone()
            shifted[:, index] += sign * shift
            rows.append(model.decode_styles(shifted))
    return torch.stack(rows).to(images.device)
