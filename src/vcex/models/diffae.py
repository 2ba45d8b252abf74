"""A small diffusion autoencoder (DiffAE, Preechakul et al., CVPR'22, arXiv 2111.15640): the GCD backend.

Two parts, trained together with the plain epsilon-prediction MSE of DDPM (Ho et al., NeurIPS'20):

- a semantic encoder, a CNN ``x -> z_sem`` (N, latent_dim): the latent that explainers move;
- a conditional denoising UNet ``eps(x_t, t, z_sem)``: ADM-style residual blocks whose second group norm is
  modulated by the time embedding (``h * (1 + t_s) + t_b``) and then by the semantic code (``h * (1 + A z_sem)``,
  scale only), as in DiffAE's ``ResBlock`` (adaptive group norm, paper Sec. 3.1), self-attention at the lowest
  resolution, T = 1000 linear betas (1e-4 .. 0.02).

Decoding is deterministic DDIM (Song et al., ICLR'21; eta = 0) over ``steps`` of the T training steps, evenly
spaced as DiffAE's ``ddim{S}`` respacing; the stochastic code x_T of an image is its DDIM inversion (the same
steps run backwards) given its z_sem, so ``decode(encode(x), x_T=encode_stochastic(x))`` returns ``x`` up to the
model's error. Without ``x_T``, :meth:`DiffusionAutoencoder.decode` starts from one fixed, seeded noise image
(a buffer, the same for every image and every call), so ``decode`` is a deterministic, differentiable function
of z_sem alone and the model is a :class:`~vcex.models.latent.LatentModel` the attack and GCD can use as is.

Shapes: images (N, C, H, W) in [0, 1] at the model's ``image_size``; inside, images are mapped to [-1, 1] and
zero-padded (background 0) to ``padded_size`` where the UNet's levels need it (a multiple of 2 ** (levels - 1);
MNIST's 28 stays 28 with three levels). The stochastic code
x_T has the padded shape (N, C, P, P). Decoded images are clamped to [0, 1] and cropped back.

>>> model = DiffusionAutoencoder(DiffAEConfig.tiny())
>>> z = model.encode(images)                      # (N, latent_dim)
>>> x_T = model.encode_stochastic(images, z)      # (N, C, P, P)
>>> again = model.decode(z, x_T=x_T, steps=20)    # ~ images
>>> edited = model.decode(z + 0.5 * direction)    # from the fixed noise
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vcex.errors import InputError
from vcex.models.state import evaluates

Tensor = torch.Tensor


@dataclass(frozen=True)
class DiffAEConfig:
    """Architecture and diffusion constants of a :class:`DiffusionAutoencoder`.

    ``channel_mults`` sets the UNet's levels (one per entry, halving the side between levels);
    ``encoder_channels`` the encoder's stride-2 convolutions. ``decode_steps`` is the DDIM step count used
    when a call gives none; ``noise_seed`` seeds the fixed x_T of :meth:`DiffusionAutoencoder.decode`.
    """

    channels: int = 1
    image_size: int = 28
    latent_dim: int = 32
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: int = 1
    attention: bool = True
    encoder_channels: tuple[int, ...] = (32, 64, 128)
    train_steps: int = 1000
    beta_start: float = 1e-4  # DDPM's linear schedule (Ho et al. Sec. 4), DiffAE's default
    beta_end: float = 0.02
    decode_steps: int = 20
    noise_seed: int = 0
    groups: int = 8

    def __post_init__(self) -> None:
        for name in ("channels", "image_size", "latent_dim", "base_channels", "blocks_per_level", "train_steps"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"DiffAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.channel_mults or not self.encoder_channels:
            raise InputError("DiffAEConfig needs at least one channel_mults and one encoder_channels entry")
        if not 1 <= self.decode_steps <= self.train_steps:
            raise InputError(f"DiffAEConfig.decode_steps must be in 1..{self.train_steps}, got {self.decode_steps}")
        widths = [self.base_channels * m for m in self.channel_mults] + list(self.encoder_channels)
        if any(w % self.groups for w in widths):
            raise InputError(f"DiffAEConfig: every width must be a multiple of groups={self.groups}, got {widths}")

    @property
    def padded_size(self) -> int:
        """The side the UNet works at: ``image_size`` rounded up so every level halves evenly."""
        multiple = 2 ** (len(self.channel_mults) - 1)
        return -(-self.image_size // multiple) * multiple

    @classmethod
    def tiny(cls, **overrides: object) -> DiffAEConfig:
        """A few thousand parameters' worth: trains on CPU in seconds (tests)."""
        base = {"latent_dim": 8, "base_channels": 8, "channel_mults": (1, 2), "encoder_channels": (8, 16)}
        return cls(**{**base, **overrides})

    def record(self) -> dict:
        return {"architecture": "DiffusionAutoencoder", **asdict(self)}


def _norm(config: DiffAEConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(config.groups, channels)


def timestep_embedding(timesteps: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps (N,) -> (N, dim), as in the Transformer / DDPM."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    angles = timesteps.float()[:, None] * frequencies[None]
    embedding = torch.cat([angles.cos(), angles.sin()], 1)
    return F.pad(embedding, (0, dim % 2))


class SemanticEncoder(nn.Module):
    """Images in [-1, 1] (N, C, P, P) -> z_sem (N, latent_dim): stride-2 convolutions with group norm and
    SiLU, global average pooling, a linear head (DiffAE's encoder is the downsampling half of its UNet)."""

    def __init__(self, config: DiffAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(config.channels, config.encoder_channels[0], 3, 1, 1)]
        previous = config.encoder_channels[0]
        for width in config.encoder_channels:
            layers += [_norm(config, previous), nn.SiLU(), nn.Conv2d(previous, width, 4, 2, 1)]
            previous = width
        layers += [_norm(config, previous), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, config.latent_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class ResBlock(nn.Module):
    """DiffAE's conditional residual block: GN, SiLU, conv; GN, then ``h * (1 + t_s) + t_b`` (time) and
    ``h * (1 + A z_sem)`` (semantic code, scale only), SiLU, conv (zero-initialised, so each block starts as
    the identity); a 1x1 convolution on the skip where the width changes."""

    def __init__(self, config: DiffAEConfig, in_channels: int, out_channels: int, time_dim: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            _norm(config, in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        )
        self.time_layers = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * out_channels))
        self.cond_layers = nn.Sequential(nn.SiLU(), nn.Linear(config.latent_dim, out_channels))
        self.out_norm = _norm(config, out_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, 1, 1))
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, time: Tensor, cond: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.time_layers(time)[:, :, None, None].chunk(2, 1)
        h = self.out_norm(h) * (1 + scale) + shift
        h = h * (1 + self.cond_layers(cond)[:, :, None, None])
        return self.skip(x) + self.out_layers(h)


class SelfAttention(nn.Module):
    """Single-head self-attention over pixels with a residual connection (zero-initialised output)."""

    def __init__(self, config: DiffAEConfig, channels: int) -> None:
        super().__init__()
        self.norm = _norm(config, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x).flatten(2)).chunk(3, 1)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.out(attended.transpose(1, 2)).view(n, c, h, w)


class ConditionalUNet(nn.Module):
    """``eps(x_t (N, C, P, P), t (N,) integer, z_sem (N, latent_dim)) -> (N, C, P, P)``: an ADM-style UNet
    with ``blocks_per_level`` ResBlocks per level going down, one more per level coming up (on the skip
    concatenation), stride-2 convolutions down, nearest upsampling + convolution up."""

    def __init__(self, config: DiffAEConfig) -> None:
        super().__init__()
        base = config.base_channels
        self.time_dim = 4 * base
        self.time_embed = nn.Sequential(
            nn.Linear(base, self.time_dim), nn.SiLU(), nn.Linear(self.time_dim, self.time_dim)
        )
        self.input = nn.Conv2d(config.channels, base, 3, 1, 1)
        widths = [base * m for m in config.channel_mults]
        self.down = nn.ModuleList()
        skips, previous = [base], base
        for level, width in enumerate(widths):
            for _ in range(config.blocks_per_level):
                self.down.append(ResBlock(config, previous, width, self.time_dim))
                previous = width
                skips.append(width)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(previous, previous, 3, 2, 1))
                skips.append(previous)
        self.middle = nn.ModuleList(
            [ResBlock(config, previous, previous, self.time_dim), ResBlock(config, previous, previous, self.time_dim)]
        )
        self.attention = SelfAttention(config, previous) if config.attention else None
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(config.blocks_per_level + 1):
                self.up.append(ResBlock(config, previous + skips.pop(), width, self.time_dim))
                previous = width
            if level > 0:
                self.up.append(
                    nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, 1, 1))
                )
        self.output = nn.Sequential(_norm(config, previous), nn.SiLU(), nn.Conv2d(previous, config.channels, 3, 1, 1))
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)
        self._base = base

    def forward(self, x: Tensor, timesteps: Tensor, cond: Tensor) -> Tensor:
        time = self.time_embed(timestep_embedding(timesteps, self._base))
        h = self.input(x)
        saved = [h]
        for layer in self.down:
            h = layer(h, time, cond) if isinstance(layer, ResBlock) else layer(h)
            saved.append(h)
        h = self.middle[0](h, time, cond)
        if self.attention is not None:
            h = self.attention(h)
        h = self.middle[1](h, time, cond)
        for layer in self.up:
            h = layer(torch.cat([h, saved.pop()], 1), time, cond) if isinstance(layer, ResBlock) else layer(h)
        return self.output(h)


class DiffusionAutoencoder(nn.Module):
    """Semantic encoder + conditional DDIM decoder behind the :class:`~vcex.models.latent.LatentModel` protocol.

    ``encode(images (N, C, S, S) in [0, 1]) -> z_sem (N, latent_dim)``;
    ``encode_stochastic(images, z_sem=None, steps=None) -> x_T (N, C, P, P)`` (DDIM inversion);
    ``decode(z_sem, x_T=None, steps=None) -> images (N, C, S, S)`` in [0, 1], from ``x_T`` or, without one,
    from the model's fixed seeded noise. Both DDIM directions are batched and differentiable. ``latent_radius``
    is the largest z_sem norm among the training images (set by :func:`train_diffae`), the region an attack
    stays in.
    """

    def __init__(self, config: DiffAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or DiffAEConfig()
        self.encoder = SemanticEncoder(self.config)
        self.unet = ConditionalUNet(self.config)
        betas = torch.linspace(
            self.config.beta_start, self.config.beta_end, self.config.train_steps, dtype=torch.float64
        )
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())
        size = self.config.padded_size
        noise = torch.randn(
            1, self.config.channels, size, size, generator=torch.Generator().manual_seed(self.config.noise_seed)
        )
        self.register_buffer("fixed_noise", noise)
        # the training latents' largest norm (0: not measured yet, see latent_radius)
        self.register_buffer("latent_norm_max", torch.zeros(()))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.config.channels, self.config.image_size, self.config.image_size)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def latent_radius(self) -> float | None:
        """The largest z_sem norm among the training images (None before :func:`train_diffae` measured it)."""
        value = float(self.latent_norm_max)
        return value if value > 0 else None

    # ---- checks at the public edge -------------------------------------------------------------

    def check_images(self, images: Tensor) -> None:
        """Raise :class:`InputError` unless images are a non-empty finite (N, C, S, S) batch of this model's shape."""
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(
                f"DiffusionAutoencoder expects images of shape (N, {', '.join(map(str, self.image_shape))}), got {got}"
            )
        if images.shape[0] == 0:
            raise InputError("DiffusionAutoencoder got an empty batch (0 images); pass at least one image")
        if not torch.isfinite(images).all():
            raise InputError(
                "DiffusionAutoencoder got images with NaN or infinite values; images must be finite, in [0, 1]"
            )

    def _check_latents(self, latents: Tensor) -> None:
        if (
            not isinstance(latents, Tensor)
            or latents.dim() != 2
            or latents.shape[1] != self.latent_dim
            or not len(latents)
        ):
            got = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
            raise InputError(
                f"DiffusionAutoencoder.decode expects latents of shape (N >= 1, {self.latent_dim}), got {got}"
            )

    def _check_noise(self, x_T: Tensor, count: int) -> Tensor:
        size = self.config.padded_size
        shape = (self.config.channels, size, size)
        if (
            not isinstance(x_T, Tensor)
            or x_T.dim() != 4
            or tuple(x_T.shape[1:]) != shape
            or x_T.shape[0] not in (1, count)
        ):
            got = tuple(x_T.shape) if isinstance(x_T, Tensor) else type(x_T).__name__
            raise InputError(
                f"x_T must have shape ({count} or 1, {', '.join(map(str, shape))}) (what encode_stochastic returns), "
                f"got {got}"
            )
        return x_T.expand(count, *shape)

    def _steps(self, steps: int | None) -> int:
        steps = self.config.decode_steps if steps is None else steps
        if not isinstance(steps, int) or not 1 <= steps <= self.config.train_steps:
            raise InputError(f"DDIM steps must be an integer in 1..{self.config.train_steps}, got {steps!r}")
        return steps

    # ---- pixels <-> the diffusion space -----------------------------------------------------------

    def to_diffusion(self, images: Tensor) -> Tensor:
        """Images in [0, 1] (N, C, S, S) -> [-1, 1], zero-padded (background) to (N, C, P, P)."""
        pad = self.config.padded_size - self.config.image_size
        return F.pad(images * 2 - 1, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=-1.0)

    def from_diffusion(self, x: Tensor) -> Tensor:
        """(N, C, P, P) in about [-1, 1] -> images (N, C, S, S) clamped to [0, 1]."""
        pad = self.config.padded_size - self.config.image_size
        start, side = pad // 2, self.config.image_size
        return ((x[:, :, start : start + side, start : start + side] + 1) / 2).clamp(0, 1)

    # ---- the LatentModel protocol and the stochastic code ----------------------------------------

    def encode(self, images: Tensor) -> Tensor:
        self.check_images(images)
        return self.encoder(self.to_diffusion(images))

    def ddim_timesteps(self, steps: int | None = None) -> list[int]:
        """The ``steps`` training timesteps DDIM visits, ascending from 0 to T - 1 (DiffAE's even respacing)."""
        steps = self._steps(steps)
        last = self.config.train_steps - 1
        return [0] if steps == 1 else [round(i * last / (steps - 1)) for i in range(steps)]

    def _levels(self, timesteps: list[int]) -> Tensor:
        """alpha-bar at each DDIM level: 1 (the clean image) then one per timestep."""
        return torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[timesteps]])

    def _ddim_move(self, x: Tensor, eps: Tensor, level_from: Tensor, level_to: Tensor) -> Tensor:
        """One deterministic DDIM update (eta = 0) of x at alpha-bar ``level_from`` to ``level_to``.

        The predicted clean image is clipped to [-1, 1] and the noise re-derived from it, as DiffAE's
        ``ddim_sample`` / ``ddim_reverse_sample`` do (``clip_denoised=True``): near t = T the prediction divides
        by sqrt(alpha-bar) ~ 0.006, and unclipped, a small model's noise error blows up into saturated images."""
        predicted_x0 = ((x - (1 - level_from).sqrt() * eps) / level_from.sqrt()).clamp(-1, 1)
        eps = (x - level_from.sqrt() * predicted_x0) / (1 - level_from).sqrt().clamp_min(1e-8)
        return level_to.sqrt() * predicted_x0 + (1 - level_to).sqrt() * eps

    def decode(self, latents: Tensor, x_T: Tensor | None = None, steps: int | None = None) -> Tensor:
        """DDIM (eta = 0) from ``x_T`` (N or 1, C, P, P) given z_sem ``latents`` (N, latent_dim) -> images
        (N, C, S, S) in [0, 1]. Without ``x_T``: the model's fixed seeded noise. ``steps``: the config's default."""
        self._check_latents(latents)
        x = self._check_noise(self.fixed_noise if x_T is None else x_T, len(latents)).to(latents.dtype)
        timesteps = self.ddim_timesteps(steps)
        levels = self._levels(timesteps)
        for index in reversed(range(len(timesteps))):
            t = torch.full((len(latents),), timesteps[index], dtype=torch.long, device=latents.device)
            eps = self.unet(x, t, latents)
            x = self._ddim_move(x, eps, levels[index + 1], levels[index])
        return self.from_diffusion(x)

    def encode_stochastic(self, images: Tensor, latents: Tensor | None = None, steps: int | None = None) -> Tensor:
        """The stochastic code x_T (N, C, P, P) of ``images``: DDIM run backwards from the image to noise, given
        z_sem ``latents`` (default: ``encode(images)``). Decode with the same ``steps`` to get the image back."""
        self.check_images(images)
        latents = self.encode(images) if latents is None else latents
        self._check_latents(latents)
        if len(latents) != len(images):
            raise InputError(
                f"encode_stochastic got {len(images)} images but {len(latents)} latents; give one per image"
            )
        x = self.to_diffusion(images)
        timesteps = self.ddim_timesteps(steps)
        levels = self._levels(timesteps)
        # the clean image is read as the first timestep's (alpha-bar 0.9999), as DiffAE's ddim_reverse_sample does:
        # S - 1 moves up to t = T - 1, mirroring decode's moves down; decode's last move (t_0 -> clean) is ~identity
        for index in range(len(timesteps) - 1):
            t = torch.full((len(images),), timesteps[index], dtype=torch.long, device=images.device)
            eps = self.unet(x, t, latents)
            x = self._ddim_move(x, eps, levels[index + 1], levels[index + 2])
        return x

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruction from the fixed noise: ``decode(encode(images))`` (what an attack starts from)."""
        return self.decode(self.encode(images))

    @torch.no_grad()
    @evaluates("self")
    def reconstruct(self, images: Tensor, steps: int | None = None, batch_size: int = 256) -> Tensor:
        """Images (N, C, S, S) -> decode(z_sem, x_T = their DDIM inversion): the autoencoder's exact-code
        reconstruction, batched, without gradients."""
        self.check_images(images)
        parts = []
        for chunk in images.split(batch_size):
            latents = self.encode(chunk)
            parts.append(self.decode(latents, x_T=self.encode_stochastic(chunk, latents, steps), steps=steps))
        return torch.cat(parts)

    # ---- training ---------------------------------------------------------------------------

    def training_loss(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """DDPM's simple loss: mean squared error of the predicted noise at a uniform timestep, the encoder
        and UNet trained jointly (DiffAE Sec. 3.1, ``L_simple``). Images (N, C, S, S) in [0, 1]."""
        x0 = self.to_diffusion(images)
        latents = self.encoder(x0)
        t = torch.randint(0, self.config.train_steps, (len(x0),), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        level = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = level.sqrt() * x0 + (1 - level).sqrt() * noise
        return F.mse_loss(self.unet(noisy, t, latents), noise)

    @torch.no_grad()
    @evaluates("self")
    def measure_latent_radius(self, images: Tensor, batch_size: int = 512) -> float:
        """Store (and return) the largest z_sem norm among ``images``: the :attr:`latent_radius`."""
        norms = torch.cat([self.encode(chunk).norm(dim=1) for chunk in images.split(batch_size)])
        self.latent_norm_max.fill_(float(norms.max()))
        return float(norms.max())


@dataclass(frozen=True)
class DiffAERecipe:
    """How the zoo trains a diffusion autoencoder: the architecture and the optimiser's schedule."""

    config: DiffAEConfig = field(default_factory=DiffAEConfig)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3

    def record(self) -> dict:
        return {**self.config.record(), "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}


# the zoo's recipes per dataset family, trained on one H200 GPU by scripts/train_diffae.py (the epochs sized to a
# 5.5-minute budget shared with four other jobs; scripts/gpu_generators.sh) and shipped with vcex:
# docs/benchmarks/diffae.md. MNIST: 165 epochs of the 4,000 embedded digits (5,280 steps, 271 s): z_sem alone carries
# the digit (the CNN reads it on 96% of decodes from the fixed noise). Faces: 47 epochs of the 12,000 faces
# (4,418 steps, 244 s). A machine without the shipped file trains the same recipe, on its GPU when it has one.
DIFFAE_RECIPES: dict[str, DiffAERecipe] = {
    "mnist": DiffAERecipe(DiffAEConfig(), epochs=165, batch_size=128, lr=1e-3),
    "faces": DiffAERecipe(
        DiffAEConfig(channels=3, image_size=32, latent_dim=64, base_channels=32, encoder_channels=(32, 64, 128)),
        epochs=47,
        batch_size=128,
        lr=1e-3,
    ),
}


def train_diffae(
    model: DiffusionAutoencoder,
    images: Tensor,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> DiffusionAutoencoder:
    """Train encoder and UNet together on ``images`` (N, C, S, S) in [0, 1] with :meth:`training_loss` (Adam,
    one-cycle schedule: :func:`vcex.models.training.fit`), then measure the latent radius on them. ``device``:
    where to train (the model is left there)."""
    from vcex.models.training import fit

    model.check_images(images)
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    labels = torch.zeros(len(images), dtype=torch.long)
    fit(
        model,
        lambda x, _y, generator: model.training_loss(x, generator),
        images,
        labels,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        desc="training diffusion autoencoder",
        device=device,
    )
    model.measure_latent_radius(images.to(model.fixed_noise.device))
    return model


@torch.no_grad()
@evaluates("model")
def reconstruction_figures(model: DiffusionAutoencoder, images: Tensor, steps: int | None = None) -> dict[str, float]:
    """How well ``images`` (N, C, S, S) come back at ``steps`` DDIM steps, two ways: from their own DDIM-inverted
    x_T (``inverted_*``: the autoencoder, z_sem + x_T) and from the fixed noise (``fixed_noise_*``: what
    ``decode(encode(x))`` and so an attack or GCD sees, z_sem alone). PSNR in dB, L1 the mean absolute pixel error."""
    from vcex.models.stylegan import psnr

    inverted = model.reconstruct(images, steps=steps)
    fixed = torch.cat([model.decode(model.encode(chunk), steps=steps) for chunk in images.split(256)])
    return {
        "inverted_psnr": round(float(psnr(inverted, images).mean()), 2),
        "inverted_l1": round(float((inverted - images).abs().mean()), 4),
        "fixed_noise_psnr": round(float(psnr(fixed, images).mean()), 2),
        "fixed_noise_l1": round(float((fixed - images).abs().mean()), 4),
    }
