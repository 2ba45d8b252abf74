"""StyleSpace directions (StyleDomain-style): one global StyleSpace offset per class pair, swept by a step size."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from vcex.checks import check_count, check_images, check_positive_finite
from vcex.errors import InputError
from vcex.explainers.base import Explainer, ThresholdSpec
from vcex.explainers.thresholds import AUTO
from vcex.models.latent import LatentModel
from vcex.models.state import evaluating
from vcex.models.stylegan import StyleSpaceModel

MODES = ("mean", "learned")
# what a latent model must have to be seen through its StyleSpace (StyleAutoencoder has them)
STYLESPACE_METHODS = ("encode", "styles", "decode_styles", "style_layout")


def as_stylespace(latent_model: object) -> StyleSpaceModel:
    """``latent_model`` seen through its StyleSpace: a :class:`StyleSpaceModel` as given, a style autoencoder wrapped;
    anything else raises :class:`InputError` naming what it lacks."""
    if isinstance(latent_model, StyleSpaceModel):
        return latent_model
    missing = [name for name in STYLESPACE_METHODS if not callable(getattr(latent_model, name, None))]
    if missing:
        raise InputError(
            f"StyleSpaceDirection needs a style generator's StyleSpace, but {type(latent_model).__name__} lacks "
            f"{', '.join(f'{name}()' for name in missing)}; use a style-based latent model such as faces-style "
            "(vcex explain --dataset faces)"
        )
    return StyleSpaceModel(latent_model)


def keep_top(direction: torch.Tensor, share: float) -> torch.Tensor:
    """``direction`` (S,) with all but its ``share`` (0, 1] largest-|value| coordinates (at least one) set to 0."""
    keep = max(1, round(share * direction.numel()))
    mask = torch.zeros_like(direction, dtype=torch.bool)
    mask[direction.abs().topk(keep).indices] = True
    return direction * mask


class StyleSpaceDirection(Explainer):
    """One global StyleSpace offset per (source, target) class pair: ``s' = s + alpha * ds`` (StyleDomain, Alanov et
    al., ICCV'23, arXiv 2212.10229; research note disc-stylex-eigenfind.md section D).

    ``fit(images)`` encodes training images to StyleSpace codes s (N, S) and reads the classifier's predictions on
    their decodes. The direction from class a to class t is, by ``mode`` (where no training decode is put in a: from
    every training code outside t):

    - ``"mean"``: the mean code of the images the classifier puts in t minus that of those it puts in a (no
      gradients; alpha = 1 moves the average a-image to the average t-image);
    - ``"learned"``: ``ds = std * u`` with ``u`` found by Adam (``max_steps`` steps of ``lr`` on batches of the
      a-images) minimising the target cross-entropy of ``classifier(decode(s + ds))`` plus ``proximity * |u|^2``;
      ``std`` (S,) is each coordinate's spread over the training codes, so a step and the penalty weigh every
      coordinate in its own units.

    With ``sparsity`` p in (0, 1] only the p share of coordinates largest in ``|ds| / std`` is kept (StyleSpaceSparse:
    magnitude pruning; ranked in spread units, since raw |ds| would favour coordinates that merely vary more).
    Directions are fitted per class pair when first needed and kept. Per image, the explainer decodes
    ``s + alpha * ds`` for alpha on ``alpha_steps + 1`` evenly spaced values in [0, ``alpha_max``] and returns the
    smallest alpha whose decode passes the threshold (a failed image: ``alpha_max``); the whole sweep is the
    result's progressive ``sequence`` (N, alpha_steps + 1, C, H, W) with ``sequence_prob``, and ``steps`` is the
    chosen alpha's index on the grid. Distance: none explicit; one direction for every image, only its length varies.

    Args:
        classifier: (N, C, H, W) images -> logits (N, K) (differentiable for ``"learned"``).
        latent_model: a style generator (encode, styles, decode_styles, style_layout) or its
            :class:`~vcex.models.stylegan.StyleSpaceModel`; any other latent model is refused.
        mode: ``"mean"`` (default) or ``"learned"``.
        sparsity: share of coordinates kept, in (0, 1]; None (default) keeps all.
        alpha_max: the largest step on the sweep (3.0); alpha_steps: grid intervals (30).
        lr, max_steps, proximity, fit_batch_size: the learned direction's Adam step (0.05, in spread units), steps
            (200), penalty weight (0.01) and images per step (64).
        seed: the learned fit's batch order.
        threshold, batch_size, device, progress: see :class:`Explainer`.

    Example:
        >>> explainer = StyleSpaceDirection(smiling, faces_style, mode="learned", sparsity=0.05).fit(train_images)
        >>> result = explainer.explain(images, target="flip")
        >>> result.sequence_prob  # (N, 31): the target probability along the sweep
    """

    name = "stylespace-direction"
    needs_latent_model = True

    def __init__(
        self,
        classifier: nn.Module,
        latent_model: LatentModel,
        *,
        mode: str = "mean",
        sparsity: float | None = None,
        alpha_max: float = 3.0,
        alpha_steps: int = 30,
        lr: float = 0.05,
        max_steps: int = 200,
        proximity: float = 0.01,
        fit_batch_size: int = 64,
        seed: int = 0,
        threshold: ThresholdSpec = AUTO,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(
            classifier,
            as_stylespace(latent_model),
            threshold=threshold,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        if mode not in MODES:
            raise InputError(f"unknown mode {mode!r} for StyleSpaceDirection; use one of {', '.join(MODES)}")
        if sparsity is not None and (isinstance(sparsity, bool) or not 0.0 < float(sparsity) <= 1.0):
            raise InputError(f"sparsity is the share of coordinates kept, in (0, 1] (e.g. 0.05), got {sparsity!r}")
        self.mode = mode
        self.sparsity = None if sparsity is None else float(sparsity)
        self.alpha_max = check_positive_finite("alpha_max", alpha_max)
        self.alpha_steps = check_count("alpha_steps", alpha_steps, 1)
        self.lr = check_positive_finite("lr", lr)
        self.max_steps = check_count("max_steps", max_steps, 1)
        if not proximity >= 0:
            raise InputError(f"proximity must be >= 0, got {proximity}")
        self.proximity = float(proximity)
        self.fit_batch_size = check_count("fit_batch_size", fit_batch_size, 1)
        self.seed = int(seed)
        self.styles: torch.Tensor | None = None  # (N, S) training codes
        self.labels: torch.Tensor | None = None  # (N,) the classifier's predictions on them
        self.style_std: torch.Tensor | None = None  # (S,)
        self.directions: dict[tuple[int, int], torch.Tensor] = {}

    def settings(self) -> dict:
        settings = {**super().settings(), "mode": self.mode, "sparsity": self.sparsity, "alpha_max": self.alpha_max}
        settings["alpha_steps"] = self.alpha_steps
        if self.mode == "learned":
            settings.update(lr=self.lr, max_steps=self.max_steps, proximity=self.proximity, seed=self.seed)
        return settings

    @property
    def alphas(self) -> torch.Tensor:
        """(alpha_steps + 1,) the sweep's step sizes, 0 first."""
        return torch.linspace(0.0, self.alpha_max, self.alpha_steps + 1, device=self.device)

    def fit(self, images: torch.Tensor) -> StyleSpaceDirection:
        """Encode ``images`` (N, C, H, W) to StyleSpace codes and read the classifier's class of each code's decode
        (what the direction edits is the decode: on faces, whose encoder drops half the smiles, the images' own
        classes gave a mean difference that flipped none of 100 faces, the decodes' 14). Where every decode falls in
        one class (a generator that draws the others poorly), the images' own classes are used, with a warning.
        Clears fitted directions."""
        images = check_images(images, value_range=self.classifier.value_range)
        if len(images) < 2:
            raise InputError(f"StyleSpaceDirection.fit needs at least 2 training images, got {len(images)}")
        low, high = self.classifier.value_range
        with evaluating(*self._models()), torch.no_grad():
            styles, labels = [], []
            for chunk in images.to(self.device).split(self.batch_size):
                codes = self.latent_model.encode(chunk)
                styles.append(codes)
                labels.append(self.predict_proba(self._decode_checked(codes, chunk).clamp(low, high)).argmax(1))
            self.styles, self.labels = torch.cat(styles), torch.cat(labels)
            # the images' own classes are read only when the decodes' cannot serve
            one_class = len(self.labels.unique()) < 2
            own_labels = self.predict_proba(images.to(self.device)).argmax(1) if one_class else self.labels
        if one_class and len(own_labels.unique()) >= 2:
            warnings.warn(
                f"StyleSpaceDirection: the classifier puts every decode of the {len(images)} training images in "
                f"class {int(self.labels[0])}; the directions are fitted on the images' own classes instead",
                stacklevel=2,
            )
            self.labels = own_labels
        self.style_std = self.styles.std(0).clamp_min(1e-8)
        self.directions = {}
        return self

    def direction(self, source: int | None, target: int) -> torch.Tensor:
        """The StyleSpace offset ds (S,) from class ``source`` to class ``target`` (fitted on first use); ``source``
        None: from every training code outside ``target`` (one direction toward a class, as a global explanation
        of it; the same as ``1 - target`` for two classes). Kept under the key ``(-1, target)``."""
        if self.styles is None:
            raise InputError("StyleSpaceDirection has no training codes yet: call .fit(train_images) before .explain")
        key = (-1 if source is None else int(source), int(target))
        if key not in self.directions:
            with evaluating(*self._models()):
                self.directions[key] = self._fit_direction(*key)
        return self.directions[key]

    def _fit_direction(self, source: int, target: int) -> torch.Tensor:
        from_source = self.styles[self.labels == source] if source >= 0 else self.styles[:0]
        if len(from_source) == 0:
            # no training decode is put in the source class (a generator may draw some class poorly): the
            # direction starts from every training code outside the target class instead
            from_source = self.styles[self.labels != target]
        if len(from_source) == 0:
            raise InputError(
                f"every training decode is put in class {target} by the classifier, so there is no direction toward "
                "it to learn; fit on images of more than one class"
            )
        if self.mode == "mean":
            in_target = self.styles[self.labels == target]
            if len(in_target) == 0:
                raise InputError(
                    f"class {target} cannot be moved toward: the classifier puts no training image's decode in it, so "
                    "there is no mean code to move toward; use mode='learned' or fit on images that cover it"
                )
            direction = in_target.mean(0) - from_source.mean(0)
        else:
            direction = self._learn(from_source, target)
        if self.sparsity is not None:
            # pruning alone; learning the kept coordinates again from their pruned values did not help on faces
            # (validity 0.60 -> 0.61 at twice the fit, docs/benchmarks/stylespace-directions.md)
            direction = keep_top(direction / self.style_std, self.sparsity) * self.style_std
        return direction.detach()

    def _learn(self, from_source: torch.Tensor, target: int) -> torch.Tensor:
        """Adam on u (ds = std * u): mean target cross-entropy over a batch of source codes + proximity * |u|^2."""
        low, high = self.classifier.value_range
        unit = torch.zeros_like(self.style_std, requires_grad=True)
        optimizer = torch.optim.Adam([unit], lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        batch = min(self.fit_batch_size, len(from_source))
        for _ in range(self.max_steps):
            rows = torch.randperm(len(from_source), generator=generator)[:batch].to(self.device)
            images = self.latent_model.decode(from_source[rows] + self.style_std * unit).clamp(low, high)
            labels = torch.full((batch,), target, dtype=torch.long, device=self.device)
            loss = F.cross_entropy(self.classifier(images), labels) + self.proximity * unit.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return self.style_std * unit.detach()

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        if lower:
            raise InputError("StyleSpaceDirection raises a target class; to lower class k, raise another class")
        low, high = self.classifier.value_range
        with torch.no_grad():
            styles = self.latent_model.encode(images)
            reconstructions = self._decode_checked(styles, images).clamp(low, high)
            source = self.predict_proba(reconstructions).argmax(1)
            # a reconstruction that already reads as the target: move from the original's class
            source = torch.where(source == target, self.predict_proba(images).argmax(1), source)
        offsets = torch.stack([self.direction(a, t) for a, t in zip(source.tolist(), target.tolist())])
        with torch.no_grad():
            sequence, sequence_prob = [], []
            for alpha in self.alphas:
                decoded = self.latent_model.decode(styles + alpha * offsets).clamp(low, high)
                sequence.append(decoded)
                sequence_prob.append(self.predict_proba(decoded).gather(1, target[:, None])[:, 0])
            sequence, sequence_prob = torch.stack(sequence, 1), torch.stack(sequence_prob, 1)
        passed = self.reached(sequence_prob, target[:, None].expand_as(sequence_prob))
        success = passed.any(1)
        # the first alpha that passes; alpha_max where none does
        chosen = torch.where(success, passed.int().argmax(1), torch.full_like(target, self.alpha_steps))
        rows = torch.arange(len(images), device=images.device)
        alphas = self.alphas[chosen]
        return {
            "counterfactuals": sequence[rows, chosen],
            "target_prob": sequence_prob[rows, chosen],
            "success": success,
            "steps": chosen,
            "forward_passes": torch.full_like(target, self.alpha_steps + 1),
            "backward_passes": torch.zeros_like(target),
            "original_latents": styles,
            "counterfactual_latents": styles + alphas[:, None] * offsets,
            "reconstructions": reconstructions,
            "sequence": sequence,
            "sequence_prob": sequence_prob,
        }
