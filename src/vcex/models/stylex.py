"""StylEx training of the style generator: a GAN with an encoder, optionally conditioned on a classifier.

Lang et al., "Explaining in Style" (ICCV'21, arXiv 2104.13369), in miniature (research note
disc-stylex-eigenfind.md, B.1a and B.4). The networks are :mod:`vcex.models.stylegan`'s: a generator G with its
mapping network (z -> w), the encoder E, and a discriminator D. Training alternates two kinds of batch:

- **GAN batches**: w from z through the mapping network, with style mixing regularisation (StyleGAN, Sec. 3.1:
  with probability ``mixing_prob`` the layers after a random cut take a second z's w); G gets the
  non-saturating loss softplus(-D(G(w))).
- **Encoder batches**: x' = G(E(x)); E and G get ``L1(x, x') + perceptual (features of our own network) +
  latent L1 |E(x') - E(x)| + KL(C(x) || C(x'))`` (the classifier term, as the re-implementations compute it)
  plus the non-saturating loss on x'.

After either, D takes a logistic step on reals against those fakes, with the R1 penalty ``r1_gamma / 2 *
|grad D(x)|^2`` every ``r1_interval`` steps, scaled by the interval (lazy regularisation, StyleGAN2 Sec. B).

With a classifier (the StylEx variant) the generator's style input is ``[w ; softmax C(x)]``: on encoder
batches C reads the image being reconstructed, on GAN batches the real image of the same batch position (so the
conditioning vectors follow the data's), and D scores ``sum_c p_c D_c(x)`` with one head per class (the
re-implementation's "new" variant). The classifier is never trained nor changed.

Images whose side is not a power of two (MNIST's 28) are padded with zeros to the generator's size (32, as in
B.4); :class:`StylExAutoencoder` takes and returns images of the dataset's shape.

>>> model = StylExAutoencoder(stylex_config("tiny", image_size=32, channels=3))
>>> state = train_stylex(model, images, epochs=1, recipe=StylExRecipe(batch_size=8))
>>> samples = model.sample(torch.randn(8, model.config.w_dim))
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vcex.cache import load_state_into, load_weights, save_weights
from vcex.errors import CacheError, InputError
from vcex.models.state import evaluating
from vcex.models.style_alignment import AlignmentPlan, alignment_loss, coordinate_names, edit_loss, parse_alignment
from vcex.models.stylegan import (
    StyleAutoencoder,
    StyleGeneratorConfig,
    _DownTrunk,
    _l1_loss,
    _perceptual_loss,
    _stylex_loss,
)
from vcex.progress import progress_bar

Tensor = torch.Tensor

# generator sizes by name; every config mirrors its generator in the encoder and the discriminator
CONFIGS: dict[str, dict] = {
    # trains a few steps in seconds: for tests
    "tiny": {"w_dim": 16, "base_channels": 2, "max_channels": 16, "mapping_layers": 2, "batch_size": 8},
    # a CPU run of tens of minutes on the 32x32 faces
    "small": {"w_dim": 64, "base_channels": 8, "max_channels": 64, "mapping_layers": 4, "batch_size": 32},
    # the size of the shipped faces-style (StyleGeneratorConfig.small)
    "medium": {"w_dim": 128, "base_channels": 16, "max_channels": 128, "mapping_layers": 4, "batch_size": 32},
    # for a GPU (StyleGeneratorConfig.large)
    "large": {"w_dim": 512, "base_channels": 64, "max_channels": 512, "mapping_layers": 8, "batch_size": 32},
}
WEIGHTS_FILE, DISCRIMINATOR_FILE, OPTIMISER_FILE, RECIPE_FILE = (
    "weights.safetensors",
    "discriminator.safetensors",
    "optimisers.pt",
    "recipe.json",
)


def stylex_config(name: str, *, image_size: int, channels: int, label_dim: int = 0) -> StyleGeneratorConfig:
    """The generator configuration called ``name`` (see ``CONFIGS``) for images (channels, image_size, image_size)
    and a style input conditioned on ``label_dim`` class probabilities (0: unconditioned)."""
    if name not in CONFIGS:
        raise InputError(f"unknown StylEx config {name!r}; known configs: {', '.join(CONFIGS)}")
    sizes = {key: value for key, value in CONFIGS[name].items() if key != "batch_size"}
    return StyleGeneratorConfig(image_size=image_size, channels=channels, label_dim=label_dim, **sizes)


@dataclass(frozen=True)
class StylExRecipe:
    """Training hyperparameters of :func:`train_stylex` (defaults: StyleGAN2's where it has one)."""

    batch_size: int = 32
    # StyleGAN2: Adam lr 0.002, betas (0, 0.99) for G and D; the mapping network's lr multiplier 0.01
    lr: float = 2e-3
    encoder_lr: float = 2e-3
    # D's plain layers learn ~sqrt(fan-in) times faster under Adam than G's equalised-lr ones (see stylegan.py's
    # train_style_autoencoder), so a short CPU run may need G's lr above D's
    discriminator_lr: float = 2e-3
    mapping_lr_scale: float = 0.01
    beta1: float = 0.0
    beta2: float = 0.99
    # R1 gamma: StyleGAN2-ADA uses 0.01 on 32x32 CIFAR and 1 at 256x256; lazy R1 every 16 D steps
    r1_gamma: float = 0.1
    r1_interval: int = 16
    mixing_prob: float = 0.9
    # encoder batches: research note B.1a (1 L1, 0.1 latent L1, KL x1); the perceptual features are pre-scaled
    # (FactorRegressor.features), so their weight is the shipped faces-style's 1.0
    perceptual_weight: float = 1.0
    latent_weight: float = 0.1
    kl_weight: float = 1.0
    # the non-saturating loss on GAN batches' samples, and on encoder batches' reconstructions: at 1 on the
    # 32x32 faces the latter outweighed the reconstruction (L1 0.25 -> 0.29 over 80 steps; at 0.1, 0.25 -> 0.23)
    adversarial_weight: float = 1.0
    reconstruction_adversarial_weight: float = 0.1
    # a warm start for short CPU budgets (none of it is in the paper): the first ``warmup_epochs`` epochs are
    # encoder batches alone (an autoencoder: no GAN batches, no adversarial terms, D untouched); then, when
    # ``mapping_fit_steps`` > 0, the mapping network is regressed onto a Gaussian fit of the encoded training
    # latents before the GAN batches start, so that its samples begin where the generator already draws faces
    warmup_epochs: int = 0
    mapping_fit_steps: int = 0
    # the warm-up's optimiser is the autoencoder's that trained faces-style (vcex.models.stylegan): Adam betas
    # (0.9, 0.99), the encoder at warmup_lr and the synthesis network at warmup_generator_lr (its equalised-lr
    # layers need ~10x the encoder's rate); the GAN phase's betas and rates above take over with the GAN batches
    warmup_lr: float = 2e-3
    warmup_generator_lr: float = 1.5e-2
    # GAN batches also ask E(G(w_z)) = w_z on a quarter of the batch (the latent-consistency term of
    # vcex.models.stylegan's autoencoder): it keeps E trained on the generator's own latents, whose drift away
    # from E's range made the first CPU runs' reconstructions collapse
    anchor_weight: float = 0.0
    # a label-free disentanglement term on encoder batches (OroJaR, Wei et al. ICCV'21, Eq. 3, applied in StyleSpace
    # rather than z): the Jacobian columns of G w.r.t. ``orojar_coordinates`` random style coordinates (conv and
    # toRGB, in units of the batch's std of each) are asked to be orthogonal, estimated by finite differences of
    # step ``orojar_epsilon`` along ``orojar_directions`` Rademacher directions (the paper's k = 2, epsilon 0.1) on
    # the first ``orojar_images`` images of the batch; 0 is off
    orojar_weight: float = 0.0
    orojar_coordinates: int = 64
    orojar_directions: int = 2
    orojar_epsilon: float = 0.1
    orojar_images: int = 8
    # supervision with the data's known factors, not part of StylEx (vcex.models.style_alignment): each pair
    # "factor=layer:channel" of ``align_map`` asks that shifting that style coordinate moves the factor reader's
    # reading of that factor by ``align_shift`` per ``3`` stds and no other factor; ``align_factors`` pairs on the
    # first ``align_images`` images of every encoder batch; 0 is off (it needs a factor reader: the faces').
    # ``align_off_weight`` scales the other factors' change against the aligned factor's error;
    # ``align_gan_weight`` > 0 adds the term on the GAN batches too, at that weight, on styles drawn from z (without
    # it the GAN epochs undid part of the alignment the autoencoder epochs made: stylex-training.md)
    align_weight: float = 0.0
    align_map: str = ""
    align_shift: float = 0.7
    align_factors: int = 4
    align_images: int = 8
    align_off_weight: float = 1.0
    align_gan_weight: float = 0.0
    # > 0: on encoder batches, this weight times the mean squared pixel change outside the parts each aligned factor
    # may change (train_stylex's ``alignment_regions``: the faces' renderer knows them); needs those regions
    align_region_weight: float = 0.0
    # > 0: the edit term on encoder batches (vcex.models.style_alignment.edit_loss), at this weight: shifting each
    # pair of ``align_map`` must change the decode as the renderer's true edit of that factor changes the face
    # (pixels, no reader; the faces only: train_stylex's ``face_edits``); ``align_shift`` (default 0.7) is a
    # continuous factor's move per 3 stds in its range, ``align_factors`` / ``align_images`` as for the alignment
    edit_weight: float = 0.0
    # the edit term's smallest shift, in stds (its largest is 3): at 1, a binary factor's two modes (about +-1 std
    # apart) meet midway under opposite targets, and session 21's glasses coordinate collapsed there
    edit_min_shift: float = 1.0
    # > 0: the edit term also asks, at this weight, that the decode stay still within ``edit_ring`` pixels around
    # the true change (edit_loss's ring): session 21's glasses coordinate drew smudges there that hid the eyes
    edit_ring_weight: float = 0.0
    edit_ring: int = 2
    # > 0: the edit term also asks, at this weight, that the face's mouth, eyes and eyebrows stay still where the
    # true edit leaves them (edit_loss's details): the oracle reads smiling and eyes_open from those ~60 pixels
    edit_detail_weight: float = 0.0
    # the share of the edit term's gradient that reaches the encoder through the styles (1: all; 0: the decoder
    # alone learns the edits, around where the encoder puts the faces for reconstruction): through the encoder, the
    # term shrank the glasses coordinate's spread (std 4.6 -> 0.3) and left faint glasses on every reconstruction
    edit_encoder_share: float = 1.0

    def __post_init__(self) -> None:
        for name in ("warmup_epochs", "mapping_fit_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        weights = ("anchor_weight", "orojar_weight", "align_weight", "align_off_weight", "align_gan_weight")
        for name in (*weights, "align_region_weight", "edit_weight", "edit_ring_weight", "edit_detail_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.orojar_directions < 2:
            raise InputError(f"orojar_directions must be >= 2 (a variance needs two), got {self.orojar_directions}")
        counts = ("batch_size", "r1_interval", "orojar_coordinates", "orojar_images", "align_factors", "align_images")
        for name in counts:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        rates = ("lr", "encoder_lr", "discriminator_lr", "mapping_lr_scale", "warmup_lr", "warmup_generator_lr")
        for name in (*rates, "orojar_epsilon", "align_shift"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.edit_encoder_share <= 1:
            raise InputError(f"edit_encoder_share must be in [0, 1], got {self.edit_encoder_share}")
        if self.edit_ring < 1:
            raise InputError(f"edit_ring must be >= 1 pixel, got {self.edit_ring}")
        for name in ("edit_ring_weight", "edit_detail_weight"):
            if getattr(self, name) > 0 and self.edit_weight <= 0:
                raise InputError(f"{name} extends the edit term: set edit_weight > 0 too")
        if not 0 < self.edit_min_shift <= 3:
            raise InputError(f"edit_min_shift must be in (0, 3] stds, got {self.edit_min_shift}")
        if not 0 <= self.mixing_prob <= 1:
            raise InputError(f"mixing_prob must be in [0, 1], got {self.mixing_prob}")
        for name in ("align_weight", "align_gan_weight", "edit_weight"):
            if getattr(self, name) > 0 and not self.align_map.strip():
                raise InputError(f"{name} > 0 needs align_map, e.g. --set align_map='smile=32.conv0:10'")
        for name in ("align_gan_weight", "align_region_weight"):  # both extend the encoder batches' term
            if getattr(self, name) > 0 and self.align_weight <= 0:
                raise InputError(f"{name} extends the alignment term: set align_weight > 0 too")


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------


class ConditionalDiscriminator(nn.Module):
    """``forward(images (N, C, S, S) in [0, 1], labels (N, K) or None) -> realness logits (N,)``.

    Unconditioned (``config.label_dim == 0``): one head. Conditioned: one head per class, read as
    ``sum_c labels_c * D_c(x)`` (research note B.1a, the re-implementation's "new" variant).
    """

    def __init__(self, config: StyleGeneratorConfig) -> None:
        super().__init__()
        self.trunk = _DownTrunk(config)
        hidden = config.channels_at(4)
        self.head = nn.Sequential(nn.Linear(self.trunk.out_features, hidden), nn.LeakyReLU(0.2))
        self.out = nn.Linear(hidden, max(1, config.label_dim))
        self.label_dim = config.label_dim

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        heads = self.out(self.head(self.trunk(images)))
        if self.label_dim == 0:
            return heads[:, 0]
        return (heads * labels).sum(1)


class StylExAutoencoder(StyleAutoencoder):
    """A StylEx-trained encoder + generator behind the :class:`~vcex.models.latent.LatentModel` protocol.

    ``encode(images (N, C, H, W) in [0, 1]) -> latents (N, w_dim + label_dim)``: E's w, followed (when
    conditioned) by the classifier's softmax on the images; ``decode(latents) -> images (N, C, H, W)``.
    H = W = ``config.image_size - 2 * pad``: images are padded with zeros to the generator's size on the way in
    and cropped on the way out. The StyleSpace methods are the generator's (``decode_styles`` crops too).
    The classifier is held but not registered as a submodule: the model's ``train()``/``eval()``/``to()`` and
    state dict never touch it, and it is always run in eval mode with its state restored.
    """

    def __init__(
        self,
        config: StyleGeneratorConfig,
        pad: int = 0,
        classifier: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if config.w_plus and config.label_dim:
            raise InputError("a conditioned StylEx generator takes one w per image: use w_plus=False")
        if pad < 0 or 2 * pad >= config.image_size:
            raise InputError(f"pad must be in [0, {config.image_size // 2}), got {pad}")
        super().__init__(config)
        self.pad = pad
        object.__setattr__(self, "classifier", None)
        if config.label_dim:
            if classifier is None:
                raise InputError(f"this generator is conditioned on {config.label_dim} classes: give its classifier")
            self.set_classifier(classifier)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        side = self.config.image_size - 2 * self.pad
        return (self.config.channels, side, side)

    @property
    def conditioned(self) -> bool:
        return self.config.label_dim > 0

    def set_classifier(self, classifier: Callable[[Tensor], Tensor]) -> None:
        """Hold ``classifier`` (images (N, C, H, W) -> logits (N, label_dim)) after checking it on blank images;
        one of another input shape or class count is refused with both numbers."""
        probe = torch.full((2, *self.image_shape), 0.5)
        try:
            with torch.no_grad(), evaluating(classifier):
                logits = classifier(probe)
        except (RuntimeError, ValueError, InputError) as error:
            raise InputError(
                f"the conditioning classifier does not take this generator's images {self.image_shape}: {error}"
            ) from None
        if logits.dim() != 2 or logits.shape[1] != self.config.label_dim:
            raise InputError(
                f"the generator is conditioned on {self.config.label_dim} classes, and the classifier returns "
                f"{tuple(logits.shape[1:])} outputs per image: use the classifier it was trained with"
            )
        object.__setattr__(self, "classifier", classifier)

    def to_generator_space(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, S, S): zero-padded to the generator's size."""
        return F.pad(images, [self.pad] * 4) if self.pad else images

    def crop(self, images: Tensor) -> Tensor:
        """(N, C, S, S) -> (N, C, H, W): the generator's output cut to the dataset's size."""
        if not self.pad:
            return images
        return images[..., self.pad : -self.pad, self.pad : -self.pad]

    def labels(self, images: Tensor) -> Tensor | None:
        """softmax C(images) (N, label_dim), constant (no gradient); None when unconditioned."""
        if not self.conditioned:
            return None
        with torch.no_grad(), evaluating(self.classifier):
            return F.softmax(self.classifier(images), dim=1)

    def latent(self, w: Tensor, labels: Tensor | None) -> Tensor:
        """The generator's style input: w (N, w_dim), or [w ; labels] (N, w_dim + label_dim) when conditioned."""
        return w if labels is None else torch.cat([w, labels], dim=1)

    def encode(self, images: Tensor) -> Tensor:
        self.check_images(images)
        return self.latent(self.encoder(self.to_generator_space(images)), self.labels(images))

    def decode(self, latents: Tensor) -> Tensor:
        return self.crop(self.generator.decode(latents))

    def decode_styles(self, s: Tensor) -> Tensor:
        return self.crop(self.generator.decode_styles(s))

    def decode_from_state(self, s: Tensor, layer: int, state: tuple[Tensor, Tensor | None]) -> Tensor:
        return self.crop(self.generator.decode_from_state(s, layer, state))

    def sample(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (N, C, H, W) from z (N, w_dim) (and, when conditioned, class probabilities (N, label_dim))."""
        if self.conditioned and (labels is None or labels.shape != (len(z), self.config.label_dim)):
            raise InputError(f"a conditioned generator samples from z and labels of shape (N, {self.config.label_dim})")
        return self.decode(self.latent(self.generator.mapping(z), labels if self.conditioned else None))

    def record(self) -> dict:
        return {"architecture": "StylExAutoencoder", **asdict(self.config), "pad": self.pad}


# --------------------------------------------------------------------------------------------
# losses (StyleGAN2's adversarial terms; the reconstruction terms are vcex.models.stylegan's)
# --------------------------------------------------------------------------------------------


def _nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """The generator's non-saturating loss softplus(-D(fakes)), averaged: a scalar."""
    return F.softplus(-fake_logits).mean()


def _logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's logistic loss softplus(D(fakes)) + softplus(-D(reals)), averaged: a scalar."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def _r1_penalty(discriminator: ConditionalDiscriminator, reals: Tensor, labels: Tensor | None) -> Tensor:
    """|grad_x D(x)|^2 on the reals (summed over pixels, averaged over the batch): a scalar."""
    reals = reals.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(discriminator(reals, labels).sum(), reals, create_graph=True)
    return gradient.pow(2).flatten(1).sum(1).mean()


def _latent_loss(model: StylExAutoencoder, reconstruction: Tensor, w: Tensor) -> Tensor:
    """|E(x') - E(x)|_1 averaged, E(x) held constant: the reconstruction must encode back to its latent."""
    return (model.encoder(reconstruction) - w.detach()).abs().mean()


def orojar_penalty(
    decode_styles: Callable[[Tensor], Tensor],
    styles: Tensor,
    coordinates: Tensor,
    scale: Tensor,
    rng: torch.Generator,
    directions: int = 2,
    epsilon: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """The orthogonal-Jacobian penalty (OroJaR, Wei et al. ICCV'21, Eqs. 3-5) of ``decode_styles`` at ``styles``
    (N, D) w.r.t. the style ``coordinates`` (M,) (long), each measured in units of ``scale`` (D,) (e.g. its std),
    made relative to the columns' size.

    With J_i the Jacobian column of coordinate i (the output's change per unit) and v a Rademacher vector on the
    coordinates, |J v|^2 = sum_i |J_i|^2 + sum_{i != j} v_i v_j J_i . J_j, so its variance over v is
    2 sum_{i != j} (J_i . J_j)^2, zero exactly when the columns are orthogonal (the paper's penalty). J v is a
    forward difference of step ``epsilon``; the variance is the unbiased one over ``directions`` draws (from
    ``rng``, the CPU's stream) per image, averaged over images. We divide it by the squared mean |J v|^2 (=
    (sum_i |J_i|^2)^2; ours, not the paper's): about 0 for orthogonal columns and 2 for parallel ones, and blind to
    the columns' size, so it cannot be won by making the generator insensitive to its styles (which on a
    warm-started generator would trade the reconstruction away). Returns that ratio (a scalar with gradients into
    ``decode_styles``'s parameters; ``styles`` is detached) and the mean |J v|^2 (detached), with |.|^2 the mean
    over output elements."""
    styles = styles.detach()
    n, dim = styles.shape
    signs = torch.randint(0, 2, (directions, n, len(coordinates)), generator=rng).float().mul_(2).sub_(1)
    steps = torch.zeros(directions, n, dim)
    steps[:, :, coordinates.cpu()] = signs * (epsilon * scale[coordinates].cpu())
    shifted = styles.unsqueeze(0) + steps.to(styles.device)
    images = decode_styles(torch.cat([styles, shifted.flatten(0, 1)])).flatten(1)
    base, moved = images[:n], images[n:].view(directions, n, -1)
    squared_norms = ((moved - base) / epsilon).pow(2).mean(2)  # (directions, n): |J v|^2 per draw and image
    column_size = squared_norms.mean()
    penalty = squared_norms.var(0, unbiased=True).mean() / column_size.pow(2).clamp_min(1e-12)
    return penalty, column_size.detach()


def _orojar_loss(model: StylExAutoencoder, styles: Tensor, rng: torch.Generator, recipe: StylExRecipe) -> tuple:
    """:func:`orojar_penalty` of the synthesis network on the first ``recipe.orojar_images`` of an encoder batch's
    styles (N, D), at ``recipe.orojar_coordinates`` coordinates drawn without replacement from all of StyleSpace
    (conv and toRGB), each in units of its std over the batch. Returns (penalty, mean |J v|^2). Logged as
    ``orojar`` and ``orojar_jv_rms`` (sqrt of the latter: the rms pixel change per std along a direction)."""
    dim = styles.shape[1]
    coordinates = torch.randperm(dim, generator=rng)[: min(recipe.orojar_coordinates, dim)]
    scale = styles.detach().std(0).clamp_min(1e-3) if len(styles) > 1 else torch.ones(dim, device=styles.device)
    return orojar_penalty(
        model.generator.decode_styles,
        styles[: recipe.orojar_images],
        coordinates,
        scale,
        rng,
        directions=recipe.orojar_directions,
        epsilon=recipe.orojar_epsilon,
    )


# --------------------------------------------------------------------------------------------
# training state and checkpoints
# --------------------------------------------------------------------------------------------


@dataclass
class StylExState:
    """Everything a resumed run needs: the model, D, both optimisers, the random stream and the counters."""

    model: StylExAutoencoder
    discriminator: ConditionalDiscriminator
    optimiser: torch.optim.Adam
    discriminator_optimiser: torch.optim.Adam
    rng: torch.Generator
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def new_state(
    model: StylExAutoencoder, recipe: StylExRecipe, seed: int, device: str | torch.device = "cpu"
) -> StylExState:
    """A fresh discriminator (initialised from ``seed``, then moved to ``device``) and Adam optimisers: E at
    ``encoder_lr``, the mapping network at ``lr * mapping_lr_scale``, the synthesis network at ``lr`` and D at
    ``discriminator_lr``."""
    torch.manual_seed(seed)
    discriminator = ConditionalDiscriminator(model.config).to(device)
    mapping = list(model.generator.mapping_net.parameters())
    mapping_ids = {id(p) for p in mapping}
    synthesis = [p for p in model.generator.parameters() if id(p) not in mapping_ids]
    betas = (recipe.beta1, recipe.beta2)
    optimiser = torch.optim.Adam(
        [
            {"params": list(model.encoder.parameters()), "lr": recipe.encoder_lr},
            {"params": mapping, "lr": recipe.lr * recipe.mapping_lr_scale},
            {"params": synthesis, "lr": recipe.lr},
        ],
        betas=betas,
    )
    d_optimiser = torch.optim.Adam(discriminator.parameters(), lr=recipe.discriminator_lr, betas=betas)
    return StylExState(model, discriminator, optimiser, d_optimiser, torch.Generator().manual_seed(seed))


def set_phase(state: StylExState, recipe: StylExRecipe) -> None:
    """Set the optimiser's rates and betas for the epoch ``state.epoch`` starts: the warm-up's (autoencoder) or
    the GAN phase's (groups: encoder, mapping network, synthesis network)."""
    warming_up = state.epoch < recipe.warmup_epochs
    encoder, mapping, synthesis = state.optimiser.param_groups
    encoder["lr"] = recipe.warmup_lr if warming_up else recipe.encoder_lr
    mapping["lr"] = recipe.lr * recipe.mapping_lr_scale
    synthesis["lr"] = recipe.warmup_generator_lr if warming_up else recipe.lr
    for group in state.optimiser.param_groups:
        group["betas"] = (0.9, recipe.beta2) if warming_up else (recipe.beta1, recipe.beta2)


def save_checkpoint(state: StylExState, folder: str | Path, record: dict) -> None:
    """Write ``folder``/weights.safetensors (the model, with ``record``), discriminator.safetensors,
    optimisers.pt (optimiser states, random stream, counters: plain tensors and numbers) and recipe.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {**record, "epochs_done": state.epoch, "steps_done": state.step, "train_seconds": round(state.seconds, 1)}
    save_weights(folder / WEIGHTS_FILE, state.model.state_dict(), record)
    save_weights(folder / DISCRIMINATOR_FILE, state.discriminator.state_dict(), {"role": "discriminator"})
    training = {
        "optimiser": state.optimiser.state_dict(),
        "discriminator_optimiser": state.discriminator_optimiser.state_dict(),
        "rng": state.rng.get_state(),
        "epoch": state.epoch,
        "step": state.step,
        "seconds": state.seconds,
        "history": state.history,
    }
    temporary = folder / (OPTIMISER_FILE + ".tmp")
    torch.save(training, temporary)
    os.replace(temporary, folder / OPTIMISER_FILE)
    (folder / RECIPE_FILE).write_text(json.dumps({**record, "history": state.history}, indent=2) + "\n")


def load_checkpoint(state: StylExState, folder: str | Path) -> None:
    """Fill ``state`` from a folder written by :func:`save_checkpoint` (never unpickling: ``weights_only``)."""
    folder = Path(folder)
    missing = [name for name in (WEIGHTS_FILE, DISCRIMINATOR_FILE, OPTIMISER_FILE) if not (folder / name).is_file()]
    if missing:
        raise InputError(f"cannot resume from {folder}: it lacks {', '.join(missing)}; train without --resume")
    for module, name in ((state.model, WEIGHTS_FILE), (state.discriminator, DISCRIMINATOR_FILE)):
        tensors, _ = load_weights(folder / name)
        load_state_into(module, tensors, str(folder / name))
    try:
        training = torch.load(folder / OPTIMISER_FILE, weights_only=True, map_location="cpu")
        state.optimiser.load_state_dict(training["optimiser"])
        state.discriminator_optimiser.load_state_dict(training["discriminator_optimiser"])
    except (RuntimeError, KeyError, ValueError, OSError) as error:
        raise CacheError(f"{folder / OPTIMISER_FILE} is not a usable vcex optimiser checkpoint ({error})") from None
    state.rng.set_state(training["rng"])
    state.epoch, state.step = int(training["epoch"]), int(training["step"])
    state.seconds, state.history = float(training["seconds"]), list(training["history"])


# --------------------------------------------------------------------------------------------
# training steps
# --------------------------------------------------------------------------------------------


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """``module``'s parameters take no gradient inside the block (D while G and E step)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def mixed_latents(
    model: StylExAutoencoder, labels: Tensor | None, n: int, mixing_prob: float, rng: torch.Generator
) -> Tensor:
    """W+ style inputs (n, num_ws, style_input_dim) from two z per image: with probability ``mixing_prob`` the
    layers from a random cut on take the second z's w (style mixing regularisation), else all take the first."""
    config = model.config
    device = model.generator.const.device  # the random stream is the CPU's on every device (same draws)
    z = torch.randn(2 * n, config.w_dim, generator=rng).to(device)
    w = model.generator.mapping(z).view(2, n, config.w_dim)
    cut = torch.randint(1, config.num_ws, (n,), generator=rng)
    mix = torch.rand(n, generator=rng) < mixing_prob
    cut = torch.where(mix, cut, torch.full_like(cut, config.num_ws)).to(device)
    first = (torch.arange(config.num_ws, device=device)[None, :] < cut[:, None]).unsqueeze(2)  # (n, num_ws, 1)
    w_plus = torch.where(first, w[0].unsqueeze(1), w[1].unsqueeze(1))
    if labels is None:
        return w_plus
    return torch.cat([w_plus, labels.unsqueeze(1).expand(-1, config.num_ws, -1)], dim=2)


def _gan_losses(
    state: StylExState, labels: Tensor | None, n: int, recipe: StylExRecipe,
    alignment: tuple[Callable[[Tensor], Tensor], AlignmentPlan] | None = None,
) -> tuple[Tensor, Tensor, dict]:  # fmt: skip
    """A z-sampled batch: the generator's loss, the fakes (n, C, S, S) and the logged terms; with ``alignment``
    and ``recipe.align_gan_weight`` > 0, the alignment term on the samples' styles too."""
    model = state.model
    styles = model.generator.styles(mixed_latents(model, labels, n, recipe.mixing_prob, state.rng))
    fakes = model.generator.decode_styles(styles)
    adversarial = _nonsaturating_loss(state.discriminator(fakes, labels))
    loss, terms = recipe.adversarial_weight * adversarial, {"g_adv": float(adversarial.detach())}
    if alignment is not None and recipe.align_gan_weight > 0:
        aligned, align_terms = _alignment_term(model, styles, alignment, state.rng, recipe)
        loss = loss + recipe.align_gan_weight * aligned
        terms.update({f"gan_{key}": value for key, value in align_terms.items()})
    if recipe.anchor_weight > 0:
        k = max(1, n // 4)
        z = torch.randn(k, model.config.w_dim, generator=state.rng).to(model.generator.const.device)
        w = model.generator.mapping(z).detach()
        rendered = model.generator.decode(model.latent(w, None if labels is None else labels[:k]))
        anchor = (model.encoder(rendered) - w).abs().mean()
        loss = loss + recipe.anchor_weight * anchor
        terms["anchor"] = float(anchor.detach())
    return loss, fakes, terms


def _encoder_losses(
    state: StylExState, reals: Tensor, labels: Tensor | None, weights: Tensor | None,
    perceptual: Callable[[Tensor], Tensor] | None, recipe: StylExRecipe, adversarial: bool = True,
    alignment: tuple[Callable[[Tensor], Tensor], AlignmentPlan] | None = None, regions: Tensor | None = None,
    edit: tuple[Callable[..., Tensor], AlignmentPlan] | None = None, indices: Tensor | None = None,
) -> tuple[Tensor, Tensor, dict]:  # fmt: skip
    """An encoder batch on ``reals`` (n, C, S, S): reconstruction, latent, classifier, (when ``adversarial``)
    adversarial and (with ``alignment``: a factor reader and its plan; ``regions``: where each pair may change each
    image) alignment terms, (with ``edit``: the faces' edits and their plan; ``indices``: which faces ``reals``
    are) the edit term, the reconstructions (the fakes D then sees) and the logged terms."""
    model = state.model
    w = model.encoder(reals)
    styles = model.generator.styles(model.latent(w, labels))
    reconstruction = model.generator.decode_styles(styles)
    pixel = _l1_loss(reconstruction, reals, weights)
    latent = _latent_loss(model, reconstruction, w)
    loss = pixel + recipe.latent_weight * latent
    terms = {"l1": float(pixel.detach()), "latent": float(latent.detach())}
    if recipe.orojar_weight > 0:
        orojar, column_size = _orojar_loss(model, styles, state.rng, recipe)
        loss = loss + recipe.orojar_weight * orojar
        terms.update(orojar=float(orojar.detach()), orojar_jv_rms=math.sqrt(float(column_size)))
    if alignment is not None:  # None unless recipe.align_weight > 0 (_alignment)
        aligned, align_terms = _alignment_term(model, styles, alignment, state.rng, recipe, regions)
        loss = loss + recipe.align_weight * aligned
        terms.update(align_terms)
    if edit is not None:  # None unless recipe.edit_weight > 0 (_edit_plan)
        edits, plan = edit
        share = recipe.edit_encoder_share  # same values; the encoder's gradient scaled by the share
        edit_styles = styles if share == 1 else styles.detach() + share * (styles - styles.detach())
        edited, edit_terms = edit_loss(
            model.decode_styles, edit_styles, reals, edits, indices, plan, state.rng, images=recipe.align_images,
            factors=recipe.align_factors, shift=recipe.align_shift, min_shift=recipe.edit_min_shift,
            ring_weight=recipe.edit_ring_weight, ring=recipe.edit_ring, detail_weight=recipe.edit_detail_weight,
        )  # fmt: skip
        loss = loss + recipe.edit_weight * edited
        terms.update(edit_terms)
    if adversarial:
        fooling = _nonsaturating_loss(state.discriminator(reconstruction, labels))
        loss = loss + recipe.reconstruction_adversarial_weight * fooling
        terms["e_adv"] = float(fooling.detach())
    seen, seen_reals = model.crop(reconstruction), model.crop(reals)  # the feature networks take dataset images
    if perceptual is not None:
        feature_loss = _perceptual_loss(perceptual, seen, seen_reals)
        loss = loss + recipe.perceptual_weight * feature_loss
        terms["perceptual"] = float(feature_loss.detach())
    if model.conditioned:
        kl = _stylex_loss(model.classifier, seen, seen_reals)
        loss = loss + recipe.kl_weight * kl
        terms["kl"] = float(kl.detach())
    return loss, reconstruction, terms


def _alignment_term(
    model: StylExAutoencoder, styles: Tensor, alignment: tuple[Callable[[Tensor], Tensor], AlignmentPlan],
    rng: torch.Generator, recipe: StylExRecipe, regions: Tensor | None = None,
) -> tuple[Tensor, dict]:  # fmt: skip
    """The alignment term (vcex.models.style_alignment) on ``styles`` (N, D) with the recipe's settings;
    ``regions`` (N, M, H, W) bool: where each image's pairs may change it (encoder batches), or None."""
    reader, plan = alignment  # the reader is frozen and in eval mode (train_stylex's evaluating block)
    return alignment_loss(
        model.decode_styles, reader, styles, plan, rng, images=recipe.align_images, factors=recipe.align_factors,
        shift=recipe.align_shift, off_weight=recipe.align_off_weight, regions=regions,
        region_weight=recipe.align_region_weight,
    )  # fmt: skip


def _discriminator_step(
    state: StylExState, reals: Tensor, fakes: Tensor, labels: Tensor | None, recipe: StylExRecipe
) -> dict:
    """One logistic step of D on ``reals`` against detached ``fakes``, with the lazy R1 penalty on every
    ``r1_interval``-th step."""
    discriminator = state.discriminator
    loss = _logistic_loss(discriminator(reals, labels), discriminator(fakes.detach(), labels))
    terms = {"d_loss": float(loss.detach())}
    if recipe.r1_gamma > 0 and state.step % recipe.r1_interval == 0:
        r1 = _r1_penalty(discriminator, reals, labels)
        loss = loss + recipe.r1_gamma / 2 * recipe.r1_interval * r1
        terms["r1"] = float(r1.detach())
    state.discriminator_optimiser.zero_grad(set_to_none=True)
    loss.backward()
    state.discriminator_optimiser.step()
    return terms


def _train_step(
    state: StylExState,
    reals: Tensor,
    weights: Tensor | None,
    perceptual: Callable[[Tensor], Tensor] | None,
    recipe: StylExRecipe,
    alignment: tuple[Callable[[Tensor], Tensor], AlignmentPlan] | None = None,
    regions: Tensor | None = None,
    edit: tuple[Callable[..., Tensor], AlignmentPlan] | None = None,
    indices: Tensor | None = None,
) -> dict:
    """One step: a GAN batch on even steps, an encoder batch on odd ones; then D. In the warm-up epochs every
    step is an encoder batch without adversarial terms, and D rests. ``regions``: the batch's alignment regions
    or None; ``edit`` and ``indices``: the edit term's edits and plan, and which training images ``reals`` are.
    Returns the logged terms."""
    model = state.model
    labels = model.labels(model.crop(reals))
    warming_up = state.epoch < recipe.warmup_epochs
    with _frozen(state.discriminator):
        if state.step % 2 == 0 and not warming_up:
            loss, fakes, terms = _gan_losses(state, labels, len(reals), recipe, alignment)
        else:
            loss, fakes, terms = _encoder_losses(
                state, reals, labels, weights, perceptual, recipe, adversarial=not warming_up, alignment=alignment,
                regions=regions, edit=edit, indices=indices,
            )  # fmt: skip
        state.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        state.optimiser.step()
    if not warming_up:
        terms.update(_discriminator_step(state, reals, fakes, labels, recipe))
    state.step += 1
    return terms


@torch.no_grad()
def _encoded_latents(model: StylExAutoencoder, reals: Tensor, batch_size: int = 512) -> Tensor:
    """E's w (N, w_dim) of images already in the generator's space (N, C, S, S), in eval mode."""
    with evaluating(model):
        return torch.cat([model.encoder(chunk) for chunk in reals.split(batch_size)])


def fit_mapping(
    model: StylExAutoencoder, reals: Tensor, steps: int, rng: torch.Generator, batch_size: int = 256, lr: float = 1e-2
) -> dict[str, float]:
    """Regress the mapping network onto a Gaussian fit of the encoded images: mapping(z) ~ mu + L z_n, with mu and
    L L^T the mean and covariance of E's w over ``reals`` (N, C, S, S, in the generator's space) and z_n the
    pixel-normalised z the network reads. Returns the fit's final error relative to the latents' variance
    (``relative_mse``: 0 is exact, 1 is no better than mu) and the steps. A warm start: the GAN batches that
    follow train the mapping network as StylEx does."""
    w = _encoded_latents(model, reals)
    mean = w.mean(0)
    covariance = torch.cov(w.T) + 1e-5 * torch.eye(w.shape[1], device=w.device)
    cholesky = torch.linalg.cholesky(covariance)
    variance = float(covariance.diagonal().mean())
    network = model.generator.mapping_net
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    error = torch.tensor(float("nan"))
    for _ in range(steps):
        z = torch.randn(batch_size, model.config.w_dim, generator=rng).to(w.device)
        target = mean + (z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)) @ cholesky.T
        error = F.mse_loss(model.generator.mapping(z), target)
        optimiser.zero_grad(set_to_none=True)
        error.backward()
        optimiser.step()
    return {
        "mapping_fit_relative_mse": round(float(error.detach()) / max(variance, 1e-12), 5),
        "mapping_fit_steps": steps,
    }


def warm_start(model: StylExAutoencoder, source: StyleAutoencoder) -> None:
    """Start ``model`` from a trained style autoencoder of the same sizes (e.g. the zoo's ``faces-style``): its
    encoder and generator weights are copied; a conditioned model's affine layers get zero weights on the label
    inputs (and their equalised-lr scale compensated), so the model begins as the source's function of w. Sizes
    that differ are refused naming both configurations."""
    mine, theirs = model.config, source.config
    keys = ("image_size", "channels", "w_dim", "base_channels", "max_channels", "mapping_layers", "noise")
    if any(getattr(mine, k) != getattr(theirs, k) for k in keys) or theirs.w_plus or theirs.label_dim:
        sizes = ", ".join(f"{k} {getattr(mine, k)} vs {getattr(theirs, k)}" for k in keys)
        raise InputError(
            f"cannot warm-start from this style model: its sizes differ ({sizes}; w_plus {theirs.w_plus}, "
            f"label_dim {theirs.label_dim}); pick the --config of the same size (faces-style: medium)"
        )
    target, given = model.state_dict(), source.state_dict()
    rescale = math.sqrt(mine.style_input_dim / mine.w_dim)  # EqualLinear's scale is 1/sqrt(in_features)
    with torch.no_grad():
        for key, tensor in target.items():
            value = given[key]
            if value.shape == tensor.shape:
                tensor.copy_(value)
            elif key.endswith("affine.weight") and value.shape[1] == mine.w_dim:
                tensor.zero_()
                tensor[:, : mine.w_dim] = value * rescale
            else:
                raise InputError(f"cannot warm-start {key}: shape {tuple(tensor.shape)} vs {tuple(value.shape)}")


def _check_training_inputs(model: StylExAutoencoder, images: Tensor, pixel_weights: Tensor | None, epochs: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InputError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    model.check_images(images)
    if len(images) < 2:
        raise InputError(f"StylEx training needs at least 2 images, got {len(images)}")
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    if pixel_weights is not None and tuple(pixel_weights.shape) != (len(images), 1, *images.shape[2:]):
        raise InputError(
            f"pixel_weights must have shape {(len(images), 1, *images.shape[2:])}, got {tuple(pixel_weights.shape)}"
        )


def _alignment(
    model: StylExAutoencoder, reader: nn.Module | None, recipe: StylExRecipe
) -> tuple[nn.Module, AlignmentPlan] | None:
    """(reader, plan) of the alignment term, or None when it is off; a missing reader is refused."""
    if recipe.align_weight <= 0:
        return None
    names = getattr(reader, "factor_names", None)
    if reader is None or names is None:
        raise InputError(
            "align_weight > 0 needs a factor reader with factor_names (images -> factor readings in [0, 1]), such "
            "as the faces' faces-factors; this dataset has none, so train without the alignment term"
        )
    return reader, parse_alignment(recipe.align_map, coordinate_names(model)[0], names)


def _check_regions(
    alignment: tuple[nn.Module, AlignmentPlan] | None, regions: Tensor | None, images: Tensor, recipe: StylExRecipe
) -> None:
    """The alignment regions must be given when their weight is on, with one (H, W) mask per image and pair."""
    if recipe.align_region_weight <= 0:
        return
    if alignment is None or regions is None:
        raise InputError(
            "align_region_weight > 0 needs a factor reader and alignment_regions (N, M, H, W): where each pair of "
            "the map may change each image (the faces': vcex.models.faces.alignment_regions)"
        )
    expected = (len(images), len(alignment[1].coordinates), *images.shape[2:])
    if regions.dtype != torch.bool or tuple(regions.shape) != expected:
        got = f"{regions.dtype} {tuple(regions.shape)}"
        raise InputError(f"alignment_regions must be bool of shape {expected} (images, pairs, H, W), got {got}")


def _edit_plan(
    model: StylExAutoencoder, edits: Callable[..., Tensor] | None, images: Tensor, recipe: StylExRecipe
) -> tuple[Callable[..., Tensor], AlignmentPlan] | None:
    """(edits, plan) of the edit term, or None when it is off; missing or mismatched edits are refused."""
    if recipe.edit_weight <= 0:
        return None
    names = getattr(edits, "factor_names", None)
    if edits is None or names is None:
        raise InputError(
            "edit_weight > 0 needs face_edits (the renderer's true single-factor edits of the training images, "
            "vcex.models.faces.FaceEdits): only the synthetic faces have them, so train without the edit term"
        )
    if len(edits) != len(images) or model.pad:
        raise InputError(
            f"face_edits must hold the factors of the {len(images)} training images in their order, at the "
            f"generator's size; got {len(edits)} faces" + (" and a padded generator" if model.pad else "")
        )
    return edits, parse_alignment(recipe.align_map, coordinate_names(model)[0], names)


def train_stylex(
    model: StylExAutoencoder,
    images: Tensor,
    *,
    epochs: int,
    recipe: StylExRecipe | None = None,
    perceptual: Callable[[Tensor], Tensor] | None = None,
    pixel_weights: Tensor | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    record: dict | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    factor_reader: nn.Module | None = None,
    alignment_regions: Tensor | None = None,
    face_edits: Callable[..., Tensor] | None = None,
) -> StylExState:
    """Train ``model`` by StylEx on ``images`` (N, C, H, W) in [0, 1] until ``epochs`` epochs are done.

    ``perceptual``: images -> features (our own network; LPIPS weights cannot be downloaded), optional.
    ``pixel_weights`` (N, 1, H, W): per-pixel weights of the L1 term (normalised to mean 1). With
    ``checkpoint`` (a folder) the state is saved after every epoch (:func:`save_checkpoint`, ``record`` added to
    recipe.json), and ``resume=True`` continues from it: the continued run is bit-identical to an
    uninterrupted one of the same seed. ``max_seconds``: stop after the epoch in which this call's training time
    passes it (a CPU budget; resume later to go on). The model (and D) are left in eval mode. Deterministic for a
    seed on a device. ``device`` (default: where the model is): the model, D and the images move there; the
    classifier and ``perceptual`` must already be there. The random stream stays the CPU's, so a run draws the
    same z on every device; the checkpoint resumes on any device. ``factor_reader``: images -> (N, F) factor
    readings in [0, 1] with ``factor_names``, the alignment term's reader (needed when ``recipe.align_weight`` > 0;
    on ``device`` already). ``alignment_regions`` (N, M, H, W) bool: per image and pair of the alignment map, where
    that pair may change the image (needed when ``recipe.align_region_weight`` > 0; e.g.
    :func:`vcex.models.faces.alignment_regions`). ``face_edits``: the training faces' true single-factor edits
    (:class:`vcex.models.faces.FaceEdits`, N faces in the order of ``images``; needed when ``recipe.edit_weight``
    > 0).
    """
    recipe = recipe or StylExRecipe()
    _check_training_inputs(model, images, pixel_weights, epochs)
    alignment = _alignment(model, factor_reader, recipe)
    _check_regions(alignment, alignment_regions, images, recipe)
    edit = _edit_plan(model, face_edits, images, recipe)
    device = torch.device(device) if device is not None else model.generator.const.device
    model.to(device)
    reals_all = model.to_generator_space(images.to(device))
    if pixel_weights is not None:
        pixel_weights = pixel_weights.to(device)
        pixel_weights = model.to_generator_space(pixel_weights / pixel_weights.mean().clamp_min(1e-8))
    state = new_state(model, recipe, seed, device)
    if resume:
        if checkpoint is None:
            raise InputError("resume=True needs the checkpoint folder to resume from")
        load_checkpoint(state, checkpoint)
    full_record = {**(record or {}), "model": model.record(), "recipe": asdict(recipe), "seed": seed}
    batches = -(-len(images) // recipe.batch_size)
    bar = progress_bar(total=max(0, epochs - state.epoch) * batches, desc="StylEx training", enabled=progress)
    model.train()
    state.discriminator.train()
    call_started = time.perf_counter()
    with evaluating(model.classifier, perceptual, factor_reader):
        while state.epoch < epochs:
            if max_seconds is not None and time.perf_counter() - call_started >= max_seconds:
                break
            started = time.perf_counter()
            totals: dict[str, list[float]] = {}
            set_phase(state, recipe)
            if state.epoch == recipe.warmup_epochs and recipe.mapping_fit_steps > 0:
                fitted = fit_mapping(model, reals_all, recipe.mapping_fit_steps, state.rng)
                totals.update({key: [float(value)] for key, value in fitted.items()})
            for batch in torch.randperm(len(images), generator=state.rng).split(recipe.batch_size):
                weights = None if pixel_weights is None else pixel_weights[batch]
                regions = None if alignment_regions is None else alignment_regions[batch].to(device)
                terms = _train_step(
                    state, reals_all[batch], weights, perceptual, recipe, alignment, regions, edit, batch
                )  # fmt: skip
                for key, value in terms.items():
                    totals.setdefault(key, []).append(value)
                bar.update(1)
                bar.set_postfix({key: f"{terms[key]:.3g}" for key in ("d_loss", "l1") if key in terms})
            state.epoch += 1
            state.seconds += time.perf_counter() - started
            state.history.append({key: round(sum(v) / len(v), 5) for key, v in totals.items()})
            if checkpoint is not None:
                save_checkpoint(state, checkpoint, full_record)
    bar.close()
    model.eval()
    state.discriminator.eval()
    return state


# --------------------------------------------------------------------------------------------
# loading and judging a trained model
# --------------------------------------------------------------------------------------------


# StylEx generators that ship with vcex, by name: folders under vcex/weights/stylex/ holding the weights and
# recipe.json (the command, recipe, history and figures) of a `vcex train-style` run (scripts/ship_stylex.py)
SHIPPED_STYLEX = {
    "faces-stylex": "StylEx generator of the faces, conditioned on faces-smiling-cnn (warm start from faces-style)",
    "mnist-stylex": "StylEx generator of the digits (32x32, padded), conditioned on mnist-cnn",
}


def shipped_stylex_folder(name: str) -> Path | None:
    """The folder of the shipped StylEx generator called ``name`` (see ``SHIPPED_STYLEX``), or None for another
    name; a known name whose files are missing from this installation is refused in one line."""
    if name not in SHIPPED_STYLEX:
        return None
    folder = Path(__file__).resolve().parents[1] / "weights" / "stylex" / name
    if not is_stylex_folder(folder):
        raise CacheError(f"{name}'s files are missing from this vcex installation ({folder}); reinstall vcex")
    return folder


def resolve_stylex(name_or_path: str | Path) -> Path | None:
    """The train-style folder that ``name_or_path`` names: a shipped generator's name or a folder (or its weights
    file) written by ``vcex train-style``; None for anything else."""
    shipped = shipped_stylex_folder(str(name_or_path))
    if shipped is not None:
        return shipped
    return Path(name_or_path) if is_stylex_folder(name_or_path) else None


def is_stylex_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`train_stylex` (or its weights file)."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    return (folder / WEIGHTS_FILE).is_file() and (folder / RECIPE_FILE).is_file()


def load_stylex(path: str | Path, classifier: Callable[[Tensor], Tensor] | None = None) -> StylExAutoencoder:
    """The model in a folder written by ``vcex train-style`` (or its weights.safetensors), or a shipped one by name
    (``SHIPPED_STYLEX``), in eval mode. A conditioned one needs its classifier: ``classifier``, or the zoo model
    its recipe names."""
    path = shipped_stylex_folder(str(path)) or Path(path)
    folder = path.parent if path.is_file() else path
    if not is_stylex_folder(folder):
        raise InputError(f"{path} is not a vcex train-style folder: it needs {WEIGHTS_FILE} and {RECIPE_FILE}")
    tensors, record = load_weights(folder / WEIGHTS_FILE)
    settings = dict(record.get("model", {}))
    if settings.pop("architecture", None) != "StylExAutoencoder":
        raise CacheError(f"{folder / WEIGHTS_FILE} holds no StylEx model record")
    pad = settings.pop("pad", 0)
    config = StyleGeneratorConfig(**settings)
    if config.label_dim and classifier is None:
        from vcex.models.zoo import load_model

        name = record.get("classifier")
        if not name:
            raise InputError(f"{folder} holds a conditioned generator whose classifier is not named: pass it")
        classifier = load_model(name)
    model = StylExAutoencoder(config, pad=pad, classifier=classifier)
    load_state_into(model, tensors, str(folder / WEIGHTS_FILE))
    model.training_record = record
    return model.eval()


@torch.no_grad()
def attribute_confidence(attribute_oracle: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 256) -> Tensor:
    """Per attribute, the oracle's mean confidence max(p, 1 - p) on ``images`` (N, C, H, W): (A,) in [0.5, 1].
    Samples that look like the data are read about as confidently as real images."""
    with evaluating(attribute_oracle):
        probs = torch.cat([torch.sigmoid(attribute_oracle(chunk)) for chunk in images.split(batch_size)])
    return torch.maximum(probs, 1 - probs).mean(0)


__all__ = [
    "CONFIGS",
    "ConditionalDiscriminator",
    "StylExAutoencoder",
    "StylExRecipe",
    "SHIPPED_STYLEX",
    "StylExState",
    "attribute_confidence",
    "fit_mapping",
    "is_stylex_folder",
    "load_checkpoint",
    "load_stylex",
    "mixed_latents",
    "new_state",
    "orojar_penalty",
    "resolve_stylex",
    "save_checkpoint",
    "set_phase",
    "shipped_stylex_folder",
    "stylex_config",
    "train_stylex",
    "warm_start",
]
