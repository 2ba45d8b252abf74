"""StyleSpace attributes of a classifier: StylEx's AttFind and CheXplaining's EigenFind.

AttFind (Lang et al., "Explaining in Style", ICCV'21, arXiv 2104.13369; procedure and constants from the official
colab, research note disc-stylex-eigenfind.md section B.1b): every StyleSpace coordinate of N encoded images is
set to its min and to its max over the set (2*K*N decodes), every class logit's change is recorded, and per class
the coordinates (with a direction) that raise its logit on the most images not yet pushed far enough are picked
greedily. EigenFind (Atad et al., arXiv 2207.07553, section C): the same search over the top eigen-directions of
the stacked affine (W -> S) weights, 2*k decodes per image instead of 2*K.

>>> effects = stylespace_effects(faces_style, smiling, images)            # (N, 2, K, C) logit changes
>>> found = attfind(effects, target=1)                                    # ranked (direction, coordinate)
>>> eigen = eigenfind(faces_style, smiling, images, target=1)             # alpha 3 std (measured default)
>>> published = eigenfind(faces_style, smiling, images, target=1, alpha=5, alpha_unit="w")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vcex.cache import cache_dir, data_fingerprint, parameter_fingerprint
from vcex.checks import check_positive_finite, device_of
from vcex.errors import InputError
from vcex.evaluation.stylespace import (
    coordinate_names,
    decode_coordinate_shifts,
    decode_edits,
    encoded_styles,
    given_styles,
    style_device,
    stylespace_model,
    top_and_purity,
)
from vcex.models.state import evaluating
from vcex.progress import progress_bar
from vcex.records import atomic_path

Tensor = torch.Tensor

# official colab: an image with more than 750 logit changes above 2 is unstable and left out (section B.1b, step 3)
UNSTABLE_LOGIT = 2.0
UNSTABLE_COUNT = 750
# official colab: an image counts as pushed far enough after 5 * 0.2 = 1.0 logit (step 5); M = 8 (step 6)
MAX_IMAGE_EFFECT = 1.0
NUM_ATTRIBUTES = 8
# official colab: reject a candidate whose |D(x) - D(x')| exceeds 0.2 on up to 10 affected images (step 5)
DISCRIMINATOR_THRESHOLD = 0.2
DISCRIMINATOR_IMAGES = 10
# CheXplaining's EigenFind: alpha ("degree") 5 in W on the top 20 eigenvectors, keep 8 (section C.1)
PUBLISHED_EIGEN_ALPHA = 5.0
PUBLISHED_EIGEN_ALPHA_UNIT = "w"
EIGEN_DIRECTIONS = 20
# the default step is the measured one, not the published one: alpha 5 in the paper's W reached only 0.4-1.6 std on
# faces-style and explained 0.76 of the faces, alpha 3 std (chosen on a held-out half) 1.00, as AttFind does
# (docs/benchmarks/stylespace-explanations.md, "EigenFind (toward smiling)"); the W scale differs per generator
EIGEN_ALPHA = 3.0
EIGEN_ALPHA_UNIT = "std"
# decodes per chunk: on faces-style (1 CPU thread) 256 decoded in 2.6 ms per image, 1024 in 3.8 (cache-bound)
DECODE_BATCH = 256
# alpha's units: "w" steps alpha in W (published; its reach depends on the generator's W scale), "std" steps alpha
# times the std of the encoded images' w along each direction (research note section C.3: alpha in units of std(w))
ALPHA_UNITS = ("w", "std")


@dataclass
class StyleSpaceEffects:
    """AttFind's table: ``effects`` (N, 2, K, C) the change of every class logit when coordinate
    ``coordinates[k]`` of image n is set to its min (direction 0) or max (1) over the N images; ``logits`` (N, C)
    the classifier on the unshifted decodes; ``extremes`` (K, 2) the min and max; ``names`` (K,) ``layer:channel``;
    ``styles`` (N, S) the images' styles the shifts started from (the encoder's, or those given: inverted ones), which
    :func:`sufficiency`, :func:`discriminator_filter` and :func:`apply_attributes` start from too."""

    effects: Tensor
    logits: Tensor
    extremes: Tensor
    coordinates: Tensor
    names: list[str]
    styles: Tensor | None = None

    @property
    def stable(self) -> Tensor:
        """(N,) bool: images with at most 750 entries of |delta logit| > 2 (the colab's unstable-image filter)."""
        large = (self.effects.abs() > UNSTABLE_LOGIT).flatten(1).sum(dim=1)
        return large <= UNSTABLE_COUNT


@dataclass
class Attribute:
    """One found attribute: StyleSpace coordinate ``coordinate`` (an index into the style vector, named ``name``)
    set to its min (``direction`` 0) or max (1); ``effect`` the mean change of the target logit over the images
    searched; ``images_moved`` how many of them it raised by > 0."""

    coordinate: int
    name: str
    direction: int
    effect: float
    images_moved: int

    def row(self) -> dict:
        return {
            "coordinate": self.name,
            "index": self.coordinate,
            "direction": "max" if self.direction else "min",
            "effect": round(self.effect, 4),
            "images_moved": self.images_moved,
        }


def _check_images(images: Tensor, batch_size: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InputError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if len(images) < 2:
        raise InputError(f"AttFind needs at least 2 images (their min and max set the shifts), got {len(images)}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")


def _cache_file(
    folder: Path, model: object, classifier: object, images: Tensor, coordinates: Tensor, styles: Tensor
) -> Path:
    """The partial-effects file of this (model, classifier, images, coordinates, starting styles): resuming needs
    all five alike."""
    key = "-".join(
        (parameter_fingerprint(model), parameter_fingerprint(classifier), data_fingerprint(images),
         data_fingerprint(coordinates), data_fingerprint(styles))
    )  # fmt: skip
    return folder / f"attfind-{key}.pt"


def image_styles(model: object, images: Tensor, styles: Tensor | None = None, batch_size: int = DECODE_BATCH) -> Tensor:
    """The styles (N, S) the StyleSpace searches start from: ``styles`` when given (checked against ``images``
    (N, C, H, W) and the model's style size; e.g. ``encoded_styles(model, images, invert_steps=100)`` for
    decodes closer to the images), else the encoder's; on the model's device."""
    device = style_device(model)
    if styles is None:
        return encoded_styles(model, images, batch_size=batch_size).to(device)
    return given_styles(styles, images, len(coordinate_names(model)[0])).to(device)


@torch.no_grad()
def stylespace_effects(
    latent_model: object,
    classifier: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    include_torgb: bool = False,
    batch_size: int = DECODE_BATCH,
    resume_dir: str | Path | None = None,
    save_every: int = 64,
    progress: bool = True,
    styles: Tensor | None = None,
) -> StyleSpaceEffects:
    """AttFind's 2*K*N passes: set each StyleSpace coordinate of each image (N, C, H, W) in [0, 1] to its min and
    to its max over the N images, and record the change of every class logit (colab step 1-2, shift 1).

    ``styles`` (N, S): the images' styles to start from (default the encoder's; see :func:`image_styles`).
    toRGB coordinates are left out as published unless ``include_torgb``. The decodes run in chunks of
    ``batch_size``; with ``resume_dir`` (default ``$VCEX_HOME/attfind``) the partial table is saved every
    ``save_every`` chunks to a file keyed by the models' and images' fingerprints, and a rerun resumes from it
    (the file is removed when the table is complete). Models are run in eval mode and put back as they were.
    """
    model = stylespace_model(latent_model)
    _check_images(images, batch_size)
    style_device(model, classifier=classifier)
    names, is_torgb = coordinate_names(model)
    coordinates = torch.arange(len(names)) if include_torgb else torch.nonzero(~is_torgb).flatten()
    folder = Path(resume_dir) if resume_dir is not None else cache_dir() / "attfind"
    styles = image_styles(model, images, styles, batch_size)
    with evaluating(model, classifier):
        logits = torch.cat([classifier(model.decode_styles(chunk)) for chunk in styles.split(batch_size)])
        extremes = torch.stack([styles.min(dim=0).values, styles.max(dim=0).values], dim=1)[coordinates].cpu()
        n, count, classes = len(images), len(coordinates), logits.shape[1]
        total = 2 * count * n
        path = _cache_file(folder, model, classifier, images, coordinates, styles)
        effects, done = torch.zeros(2 * count, n, classes), 0
        if path.exists():
            # our own file (a plain dict of tensors); weights_only refuses anything else
            saved = torch.load(path, weights_only=True)
            effects, done = saved["effects"], int(saved["done"])
        bar = progress_bar(total=total, desc="AttFind: min/max shifts", enabled=progress, unit="decode")
        bar.update(done)
        try:
            chunks = decode_coordinate_shifts(
                model, styles, coordinates, extremes, batch_size=batch_size, replace=True, start=done
            )
            for step, (image, pair, after) in enumerate(chunks, start=1):
                effects[pair.cpu(), image.cpu()] = (classifier(after) - logits[image]).cpu()
                done += len(image)
                bar.update(len(image))
                if done < total and step % save_every == 0:
                    _save_partial(path, effects, done)
        finally:
            bar.close()
    if path.exists():
        path.unlink()
    # pair 2 * slot + direction -> (N, 2, K, C)
    table = effects.view(count, 2, n, classes).permute(2, 1, 0, 3).contiguous()
    labels = [names[int(c)] for c in coordinates]
    return StyleSpaceEffects(table, logits.cpu(), extremes, coordinates, labels, styles.cpu())


def _save_partial(path: Path, effects: Tensor, done: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial:
        torch.save({"effects": effects, "done": torch.tensor(done)}, partial)


def _check_target(effects: StyleSpaceEffects, target: int) -> None:
    classes = effects.logits.shape[1]
    if not 0 <= target < classes:
        raise InputError(f"target {target} is not a class of a classifier with {classes} outputs")


def attfind(
    effects: StyleSpaceEffects,
    target: int,
    *,
    num_attributes: int = NUM_ATTRIBUTES,
    max_image_effect: float = MAX_IMAGE_EFFECT,
    reject: Callable[[int, int, Tensor], bool] | None = None,
) -> list[Attribute]:
    """AttFind's greedy top-``num_attributes`` (colab steps 3-5) for class ``target``: on the stable images the
    classifier does not already put in ``target``, E = max(0, delta target logit); repeatedly pick the (direction,
    coordinate) with the largest mean E over the images whose accumulated effect is still below
    ``max_image_effect`` (1.0 logit), add its E to them and zero it. ``reject(direction, slot, images)`` (the
    discriminator filter, :func:`discriminator_filter`) may veto a candidate; the next best is taken. A class no
    image can move toward raises :class:`InputError` saying so."""
    _check_target(effects, target)
    keep = effects.stable & (effects.logits.argmax(dim=1) != target)
    if not keep.any():
        raise InputError(f"no stable image is outside class {target}: AttFind has nothing to move toward it")
    gain = effects.effects[keep][..., target].clamp_min(0).flatten(1).clone()  # (N', 2K)
    count = effects.effects.shape[2]
    accumulated = torch.zeros(len(gain))
    found: list[Attribute] = []
    while len(found) < num_attributes:
        open_images = accumulated < max_image_effect
        if not open_images.any():
            break
        score = gain[open_images].mean(dim=0)
        if float(score.max()) <= 0:
            break
        choice = int(score.argmax())
        direction, slot = divmod(choice, count)
        column = gain[:, choice].clone()
        gain[:, choice] = 0
        if reject is not None and reject(direction, slot, torch.nonzero(keep).flatten()[column > 0]):
            continue
        accumulated += column
        found.append(_attribute(effects, keep, target, direction, slot))
    if not found:
        raise InputError(f"no StyleSpace coordinate raises class {target}'s logit on any image: nothing to explain")
    return found


def _attribute(effects: StyleSpaceEffects, images: Tensor, target: int, direction: int, slot: int) -> Attribute:
    change = effects.effects[images, direction, slot, target]
    return Attribute(
        coordinate=int(effects.coordinates[slot]),
        name=effects.names[slot],
        direction=direction,
        effect=float(change.mean()),
        images_moved=int((change > 0).sum()),
    )


def merge_binary(effects: StyleSpaceEffects, toward_0: list[Attribute], toward_1: list[Attribute]) -> list[Attribute]:
    """The colab's binary merge (step 6): class 1's attributes with their direction flipped join class 0's, and
    all are re-ranked by mean delta[d, i, 0] + mean delta[1 - d, i, 1] over the stable images (each coordinate
    once). The returned attributes point toward class 0; their ``effect`` is that combined score."""
    slot_of = {int(c): s for s, c in enumerate(effects.coordinates)}
    stable = effects.stable
    merged: dict[int, Attribute] = {}
    for attribute, flip in [(a, False) for a in toward_0] + [(a, True) for a in toward_1]:
        direction = 1 - attribute.direction if flip else attribute.direction
        slot = slot_of[attribute.coordinate]
        table = effects.effects[stable]
        score = float(table[:, direction, slot, 0].mean() + table[:, 1 - direction, slot, 1].mean())
        moved = int((table[:, direction, slot, 0] > 0).sum())
        if attribute.coordinate not in merged or score > merged[attribute.coordinate].effect:
            merged[attribute.coordinate] = Attribute(attribute.coordinate, attribute.name, direction, score, moved)
    return sorted(merged.values(), key=lambda a: -a.effect)


def per_image(effects: StyleSpaceEffects, image: int, target: int, top: int = 8) -> list[Attribute]:
    """One image's explanation: the ``top`` (direction, coordinate) ranked by how much each raises ``target``'s
    logit on image ``image`` alone."""
    _check_target(effects, target)
    if not 0 <= image < len(effects.logits):
        raise InputError(f"image {image} is not one of the {len(effects.logits)} images searched")
    change = effects.effects[image, ..., target].flatten()
    count = effects.effects.shape[2]
    order = change.argsort(descending=True)[:top]
    rows = []
    for choice in order.tolist():
        direction, slot = divmod(choice, count)
        value = float(change[choice])
        rows.append(Attribute(int(effects.coordinates[slot]), effects.names[slot], direction, value, int(value > 0)))
    return rows


@torch.no_grad()
def discriminator_filter(
    latent_model: object,
    discriminator: Callable[[Tensor], Tensor],
    images: Tensor,
    effects: StyleSpaceEffects,
    threshold: float = DISCRIMINATOR_THRESHOLD,
    max_images: int = DISCRIMINATOR_IMAGES,
) -> Callable[[int, int, Tensor], bool]:
    """The colab's optional filter for :func:`attfind`'s ``reject``: a (direction, coordinate) is rejected when the
    discriminator's mean |D(x) - D(x')| on up to ``max_images`` of the images it affects exceeds ``threshold``.
    Only for a generator trained with a discriminator (the shipped faces-style has none). The decodes start from
    ``effects.styles`` (the styles the search started from)."""
    model = stylespace_model(latent_model)
    style_device(model, discriminator=discriminator)
    start = image_styles(model, images, effects.styles)

    def reject(direction: int, slot: int, affected: Tensor) -> bool:
        chosen = affected[:max_images]
        if not len(chosen):
            return False
        with evaluating(model, discriminator):
            styles = start[chosen].clone()
            before = discriminator(model.decode_styles(styles))
            styles[:, int(effects.coordinates[slot])] = float(effects.extremes[slot, direction])
            after = discriminator(model.decode_styles(styles))
        return float((after - before).abs().mean()) > threshold

    return reject


@torch.no_grad()
def apply_attributes(
    latent_model: object,
    images: Tensor,
    extremes: dict[int, float],
    batch_size: int = 256,
    styles: Tensor | None = None,
) -> Tensor:
    """Decodes (N, C, H, W) of ``images`` with the coordinates ``extremes`` (index -> value) set together,
    starting from ``styles`` (N, S) when given (e.g. ``StyleSpaceEffects.styles``), else the encoder's. Decoded
    on the model's device, returned on the images'."""
    model = stylespace_model(latent_model)
    styles = image_styles(model, images, styles, batch_size).clone()
    columns = torch.tensor(list(extremes), dtype=torch.long, device=styles.device)
    values = torch.tensor(list(extremes.values()), dtype=styles.dtype, device=styles.device)
    with evaluating(model):
        styles[:, columns] = values
        decodes = torch.cat([model.decode_styles(chunk) for chunk in styles.split(batch_size)])
    return decodes.to(images.device)


@torch.no_grad()
def sufficiency(
    latent_model: object,
    classifier: Callable[[Tensor], Tensor],
    images: Tensor,
    effects: StyleSpaceEffects,
    attributes: list[Attribute],
    target: int,
    batch_size: int = 256,
) -> list[float]:
    """Per k = 1..len(attributes): the share of the images not predicted ``target`` whose prediction becomes
    ``target`` when the top-k attributes are applied together (the re-implementation's sufficiency), from the
    styles the search started from (``effects.styles``)."""
    slot_of = {int(c): s for s, c in enumerate(effects.coordinates)}
    outside = effects.logits.argmax(dim=1) != target
    if not outside.any():
        raise InputError(f"every image is already in class {target}: no prediction can flip toward it")
    images = images.to(style_device(stylespace_model(latent_model), classifier=classifier))
    start = effects.styles[outside] if effects.styles is not None else None
    shares = []
    with evaluating(classifier):
        for k in range(1, len(attributes) + 1):
            chosen = {a.coordinate: float(effects.extremes[slot_of[a.coordinate], a.direction]) for a in attributes[:k]}
            after = apply_attributes(latent_model, images[outside], chosen, batch_size, start)
            predicted = torch.cat([classifier(chunk).argmax(dim=1) for chunk in after.split(batch_size)]).cpu()
            shares.append(float((predicted == target).float().mean()))
    return shares


# --------------------------------------------------------------------------------------------
# EigenFind
# --------------------------------------------------------------------------------------------
@dataclass
class EigenDirection:
    """One EigenFind direction: eigenvector ``index`` of the stacked affine weights, taken with ``sign`` (+1/-1);
    ``effect`` the mean change of the target probability over the images searched; ``explained`` the share of
    them its greedy coverage step explained (cumulative in :class:`EigenFindResult`)."""

    index: int
    sign: int
    effect: float
    explained: float = 0.0

    def row(self) -> dict:
        return {"eigenvector": self.index, "sign": self.sign, "effect": round(self.effect, 4),
                "explained_share": round(self.explained, 4)}  # fmt: skip


@dataclass
class EigenFindResult:
    """EigenFind's ranked directions (at most ``keep``), ``eigenvectors`` (k, w_dim) those searched, ``steps``
    (k,) the step length in W along each (``alpha`` in ``alpha_unit``), the share of images explained by all kept
    directions together, the number of images searched, and ``styles`` (N, S) every image's styles the steps
    started from."""

    directions: list[EigenDirection]
    eigenvectors: Tensor
    alpha: float
    explained_share: float
    num_images: int
    steps: Tensor
    alpha_unit: str
    styles: Tensor | None = None


def eigen_directions(latent_model: object, top: int = EIGEN_DIRECTIONS) -> tuple[Tensor, Tensor]:
    """The top ``top`` right singular vectors (top, w_dim) of the stacked conv affine weights (toRGB left out),
    SVD of ``A + 1e-4 * mean(A)`` as CheXplaining's code does, and (top, S) each one's StyleSpace offset A_all v
    (every layer's affine, toRGB included, since w moves them all)."""
    model = stylespace_model(latent_model)
    if not callable(getattr(model, "affine_weights", None)):
        raise InputError(f"EigenFind needs the affine weights of a style generator; {type(model).__name__} has none")
    with torch.no_grad():
        w_dim = model.config.w_dim if hasattr(model, "config") else model.affine_weights()[0][1].shape[1]
        # a conditioned generator's last label_dim columns act on the label, not on w
        stacked = torch.cat([a[:, :w_dim] for _, a, _ in model.affine_weights(include_torgb=False)])
        _, _, v = torch.linalg.svd(stacked + 1e-4 * stacked.mean(), full_matrices=False)
        vectors = v[: min(top, len(v))]
        everything = torch.cat([a[:, :w_dim] for _, a, _ in model.affine_weights(include_torgb=True)])
        return vectors.clone(), vectors @ everything.T


@torch.no_grad()
def eigenfind(
    latent_model: object,
    classifier: Callable[[Tensor], Tensor],
    images: Tensor,
    target: int,
    *,
    top: int = EIGEN_DIRECTIONS,
    alpha: float = EIGEN_ALPHA,
    alpha_unit: str = EIGEN_ALPHA_UNIT,
    keep: int = NUM_ATTRIBUTES,
    batch_size: int = DECODE_BATCH,
    styles: Tensor | None = None,
) -> EigenFindResult:
    """EigenFind (section C.1) for class ``target`` on ``images`` (N, C, H, W) in [0, 1]: on the images not
    predicted ``target``, step w by +-``alpha`` along the top ``top`` eigen-directions (2*top decodes per image,
    done in StyleSpace as s + alpha * A v, which is exact since the affines are linear), record the mean change of
    the target probability, drop directions where both signs raise it, keep the ``keep`` best (index, sign), then
    count greedily in that order the images each one explains (probability crosses 0.5) that no earlier one did.

    ``alpha_unit`` "std" (default) steps ``alpha`` times the std of the N images' w along each direction, so the
    step's reach does not depend on the generator's W scale; "w" steps ``alpha`` in W. The default, 3 std, is the
    setting measured to work on the shipped faces generator; the published one is ``alpha=PUBLISHED_EIGEN_ALPHA``
    (5), ``alpha_unit="w"``, whose reach depends on the generator (see :data:`EIGEN_ALPHA`).

    ``styles`` (N, S): the images' styles to step from (default the encoder's; see :func:`image_styles`); the
    "std" unit is measured on the encoder's w either way."""
    model = stylespace_model(latent_model)
    _check_images(images, batch_size)
    check_positive_finite("alpha", alpha)
    if alpha_unit not in ALPHA_UNITS:
        raise InputError(f"alpha_unit must be one of {', '.join(ALPHA_UNITS)}, got {alpha_unit!r}")
    device = style_device(model, classifier=classifier)
    vectors, offsets = eigen_directions(model, top)
    count = len(vectors)
    styles = all_styles = image_styles(model, images, styles, batch_size)
    with evaluating(model, classifier):
        lengths = torch.full((count,), float(alpha), device=device)
        if alpha_unit == "std":
            latents = torch.cat([model.encode(chunk.to(device)) for chunk in images.split(batch_size)])
            lengths = alpha * _spread_along(model, latents, vectors)
        steps = lengths[:, None] * offsets
        steps = torch.cat([-steps, steps])  # edit e: sign index e // k, eigenvector e % k
        before = torch.cat([classifier(model.decode_styles(chunk)) for chunk in styles.split(batch_size)])
        if not 0 <= target < before.shape[1]:
            raise InputError(f"target {target} is not a class of a classifier with {before.shape[1]} outputs")
        outside = before.argmax(dim=1) != target
        if not outside.any():
            raise InputError(f"every image is already in class {target}: EigenFind has nothing to move toward it")
        styles, p_before = styles[outside], before[outside].softmax(dim=1)[:, target]
        p_after = torch.zeros(2 * count, len(styles), device=device)
        edits = decode_edits(
            model, styles, lambda chunk, edit: chunk + steps[edit].to(chunk.dtype), 2 * count, batch_size=batch_size
        )
        for image, edit, after in edits:
            p_after[edit, image] = classifier(after).softmax(dim=1)[:, target]
    p_after, p_before = p_after.cpu(), p_before.cpu()
    change = (p_after - p_before).mean(dim=1).view(2, count)  # (sign index, eigenvector)
    both_raise = (change > 0).all(dim=0)
    candidates = [(float(change[s, k]), k, s) for k in range(count) if not both_raise[k] for s in (0, 1)]
    candidates = sorted(candidates, reverse=True)[:keep]
    explained = torch.zeros(len(styles), dtype=torch.bool)
    directions = []
    for effect, k, s in candidates:
        explained |= p_after[s * count + k] > 0.5
        directions.append(EigenDirection(k, 1 if s else -1, effect, float(explained.float().mean())))
    return EigenFindResult(
        directions, vectors.cpu(), float(alpha), float(explained.float().mean()), len(styles), lengths.cpu(),
        alpha_unit, all_styles.cpu(),
    )  # fmt: skip


def _spread_along(model: object, latents: Tensor, vectors: Tensor) -> Tensor:
    """(k,) the std over the images of their w (N, w_dim), or W+ (N, num_ws, w_dim) averaged over layers, along
    each direction (k, w_dim); a conditioned generator's label columns are not part of w."""
    w = latents.mean(dim=1) if latents.dim() == 3 else latents
    return (w[:, : vectors.shape[1]] @ vectors.T).std(dim=0)


@torch.no_grad()
def decode_with_offset(
    latent_model: object, images: Tensor, offset: Tensor, batch_size: int = 256, styles: Tensor | None = None
) -> Tensor:
    """Decodes (N, C, H, W) of ``images`` with ``offset`` (S,) added to their styles (an EigenFind step:
    ``sign * alpha * offsets[k]`` from :func:`eigen_directions`): ``styles`` (N, S) when given (e.g.
    ``EigenFindResult.styles``), else the encoder's. Decoded on the model's device, returned on the images'."""
    model = stylespace_model(latent_model)
    styles = image_styles(model, images, styles, batch_size)
    offset = offset.to(styles.device)
    with evaluating(model):
        decodes = torch.cat([model.decode_styles(chunk + offset) for chunk in styles.split(batch_size)])
    return decodes.to(images.device)


@torch.no_grad()
def oracle_reading(attribute_oracle: Callable[[Tensor], Tensor], before: Tensor, after: Tensor) -> tuple[int, float]:
    """The attribute an edit moves most and its purity, as the StyleSpace probe reads them: the mean |delta p| of
    the oracle's sigmoid readings per attribute between ``before`` and ``after`` (N, C, H, W); purity is the top
    attribute's share of the total (0 where nothing moves; of the moved mass for class-probability readings)."""
    device = device_of(attribute_oracle)
    with evaluating(attribute_oracle):
        after, before = after.to(device), before.to(device)
        change = (torch.sigmoid(attribute_oracle(after)) - torch.sigmoid(attribute_oracle(before))).abs().mean(dim=0)
    change = change.cpu()
    top, purity = top_and_purity(change, bool(getattr(attribute_oracle, "readings_sum_to_one", False)))
    return int(top), float(purity)


# --------------------------------------------------------------------------------------------
# A global StyleSpace direction's coordinates
# --------------------------------------------------------------------------------------------
@dataclass
class DirectionCoordinate:
    """One coordinate of a global StyleSpace direction ds: ``coordinate`` (index into the style vector, named
    ``name``), ``weight`` its ds in units of the coordinate's spread (the sign says which way the direction moves
    it); ``effect`` the mean change of the target logit when this coordinate alone is moved by ``alpha * ds`` on
    the images outside the target class; ``images_moved`` how many of them it raised."""

    coordinate: int
    name: str
    weight: float
    effect: float
    images_moved: int

    def row(self) -> dict:
        return {
            "coordinate": self.name,
            "index": self.coordinate,
            "weight_in_stds": round(self.weight, 4),
            "effect": round(self.effect, 4),
            "images_moved": self.images_moved,
        }


def _outside(
    model: object, classifier: Callable[[Tensor], Tensor], styles: Tensor, target: int, batch_size: int
) -> tuple[Tensor, Tensor]:
    """The styles (M, S) of the images whose decodes the classifier puts outside ``target``, and its logits (M, C)
    on them; a target no image is outside of, or no class of the classifier, is refused."""
    logits = torch.cat([classifier(model.decode_styles(chunk)) for chunk in styles.split(batch_size)])
    if not 0 <= target < logits.shape[1]:
        raise InputError(f"target {target} is not a class of a classifier with {logits.shape[1]} outputs")
    outside = logits.argmax(dim=1) != target
    if not outside.any():
        raise InputError(f"every image is already in class {target}: no image to move toward it")
    return styles[outside], logits[outside]


@torch.no_grad()
def direction_attributes(
    latent_model: object,
    classifier: Callable[[Tensor], Tensor],
    images: Tensor,
    direction: Tensor,
    target: int,
    *,
    alpha: float = 3.0,
    top: int = NUM_ATTRIBUTES,
    batch_size: int = DECODE_BATCH,
    styles: Tensor | None = None,
) -> list[DirectionCoordinate]:
    """A global StyleSpace direction ``direction`` (S,) toward class ``target`` read as ranked attributes: every
    coordinate it moves is moved alone by ``alpha * ds`` on the images (N, C, H, W) whose decodes are outside
    ``target`` (one decode per coordinate and image, batched, from the state before its layer), and the ``top``
    that raise the target logit most on average are returned, best first, each with its weight |ds| / std (std over
    the images' styles: the ranking the sparse variant prunes by; a dense direction's largest weights need not be
    the coordinates the classifier reads). ``styles``: as in :func:`stylespace_effects`."""
    model = stylespace_model(latent_model)
    _check_images(images, batch_size)
    device = style_device(model, classifier=classifier)
    check_positive_finite("alpha", alpha)
    styles = image_styles(model, images, styles, batch_size)
    if not isinstance(direction, Tensor) or direction.shape != styles.shape[1:]:
        shape = tuple(direction.shape) if isinstance(direction, Tensor) else type(direction).__name__
        raise InputError(f"direction must be one offset per style coordinate, ({styles.shape[1]},); got {shape}")
    if not torch.isfinite(direction).all():
        raise InputError("direction contains NaN or infinite values")
    direction = direction.to(device, styles.dtype)
    names = coordinate_names(model)[0]
    weights = direction / styles.std(dim=0).clamp_min(1e-8)
    moved = torch.nonzero(direction).flatten()
    if not len(moved):
        raise InputError("the direction is zero everywhere: it moves no coordinate")
    with evaluating(model, classifier):
        start, before = _outside(model, classifier, styles, target, batch_size)
        change = torch.zeros(len(moved), len(start), device=device)
        steps = (alpha * direction[moved])[:, None]
        for image, slot, after in decode_coordinate_shifts(model, start, moved, steps, batch_size=batch_size):
            change[slot, image] = classifier(after)[:, target] - before[image, target]
    change, weights, moved = change.cpu(), weights.cpu(), moved.cpu()
    order = change.mean(dim=1).argsort(descending=True)[:top].tolist()
    return [
        DirectionCoordinate(
            int(moved[i]), names[int(moved[i])], float(weights[moved[i]]), float(change[i].mean()),
            int((change[i] > 0).sum()),
        )
        for i in order
    ]  # fmt: skip


@torch.no_grad()
def direction_flip_shares(
    latent_model: object,
    classifier: Callable[[Tensor], Tensor],
    images: Tensor,
    direction: Tensor,
    target: int,
    alphas: Tensor,
    *,
    batch_size: int = DECODE_BATCH,
    styles: Tensor | None = None,
) -> list[float]:
    """Per step size in ``alphas`` (A,): the share of the images (N, C, H, W) whose decodes are outside ``target``
    that the classifier puts in ``target`` at ``s + alpha * direction`` (the progressive sequence's flip curve)."""
    model = stylespace_model(latent_model)
    _check_images(images, batch_size)
    device = style_device(model, classifier=classifier)
    styles = image_styles(model, images, styles, batch_size)
    alphas = torch.as_tensor(alphas, dtype=styles.dtype).flatten().to(device)
    offsets = alphas[:, None] * direction.to(device, styles.dtype)[None]
    with evaluating(model, classifier):
        start, _ = _outside(model, classifier, styles, target, batch_size)
        flipped = torch.zeros(len(alphas), len(start), dtype=torch.bool, device=device)

        def shift(chunk: Tensor, edit: Tensor) -> Tensor:
            return chunk + offsets[edit]

        for image, edit, after in decode_edits(model, start, shift, len(alphas), batch_size=batch_size):
            flipped[edit, image] = classifier(after).argmax(dim=1) == target
    return flipped.float().mean(dim=1).cpu().tolist()
