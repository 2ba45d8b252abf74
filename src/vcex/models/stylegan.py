"""A small StyleGAN2-like generator with an encoder, trained as an autoencoder: the StyleSpace backend.

The generator follows StyleGAN2 (Karras et al., CVPR'20, arXiv 1912.04958) in miniature:

- a mapping network ``z -> w`` (pixel-norm on z, then an MLP with leaky ReLU);
- a learned constant 4x4 input, then per resolution (4, 8, ..., image_size) two modulated 3x3
  convolutions with weight demodulation (Sec. 2.2: scale the weights per input channel by the style,
  divide by each output channel's norm), optional per-pixel noise (off by default, so decoding is
  deterministic), bias and leaky ReLU; resolutions are doubled by bilinear interpolation;
- per resolution a toRGB layer (modulated 1x1, no demodulation) whose outputs are upsampled and summed
  (the "skip" generator of Sec. 4.1);
- one affine layer per modulated convolution and per toRGB mapping w to that layer's per-input-channel
  style. The concatenated affine outputs are the StyleSpace of Wu et al. (CVPR'21, arXiv 2011.12799)
  that StylEx's AttFind searches, and the stacked affine weights are what EigenFind/SeFa decompose.

The summed RGB output goes through a sigmoid, so images are in [0, 1] like every other vcex model and
gradients never vanish at the range boundary (a clamp of ``(x + 1) / 2`` would stop them).

Style vector layout: layers are named ``"{resolution}.conv0"``, ``"{resolution}.conv1"`` and
``"{resolution}.torgb"`` in synthesis order; :meth:`StyleGenerator.style_layout` gives each layer's
offset and length in the vector returned by :meth:`StyleGenerator.styles`. AttFind excludes toRGB
styles; use ``style_layout(include_torgb=False)`` / :meth:`StyleGenerator.conv_style_mask` for that.
W+ has one w per styled layer (toRGB included), so ``num_ws = 3 * number of resolutions``.

Typical use::

    from vcex.data.synthetic_faces import make_faces
    model = StyleAutoencoder(StyleGeneratorConfig.small(image_size=32))
    data = make_faces(5000, seed=0, size=32)
    metrics = train_style_autoencoder(model, data.images, epochs=4, batch_size=32, lr=2e-3)
    w = model.encode(data.images[:8])          # (8, w_dim)
    s = model.styles(w)                        # (8, S_total)
    name, offset, length = model.style_layout()[4]    # ("8.conv1", offset, length)
    s[:, offset + 3] += 2.0                    # a StyleSpace edit of one channel
    edited = model.decode_styles(s)            # (8, 3, 32, 32) in [0, 1]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vcex.cache import load_state_into, load_weights
from vcex.checks import check_positive_finite
from vcex.errors import InputError
from vcex.models.state import evaluates
from vcex.progress import progress_bar

Tensor = torch.Tensor

_LEAK = 0.2
# StyleGAN2 scales leaky ReLU outputs by sqrt(2) to keep activations at unit variance (Sec. B, "equalized lr")
_ACT_GAIN = math.sqrt(2.0)


def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, _LEAK) * _ACT_GAIN


def _upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleGeneratorConfig:
    """Sizes of the generator (and of the encoder and discriminator, which mirror it).

    ``channels(resolution) = min(max_channels, base_channels * image_size // resolution)``: the
    full-resolution layers have ``base_channels`` and the count doubles per halving, up to the cap.
    ``fused_modconv=True`` runs modulated convolution as one grouped convolution with per-sample weights
    (StyleGAN2's fused form); the default ``False`` scales the activations by the style before a shared
    convolution and the outputs by the demodulation factor after it: the same function, 2-4x faster on CPUs.
    ``w_plus`` makes the autoencoder's encoder return one w per styled layer. ``label_dim`` > 0 conditions the
    generator as StylEx does (Lang et al., ICCV'21): its style input is ``[w ; label]`` (``w_dim + label_dim``),
    the label being a classifier's softmax; the mapping network still maps z to w alone.
    """

    image_size: int = 64
    channels: int = 3
    w_dim: int = 128
    base_channels: int = 16
    max_channels: int = 128
    mapping_layers: int = 4
    noise: bool = False
    fused_modconv: bool = False
    w_plus: bool = False
    label_dim: int = 0

    def __post_init__(self) -> None:
        size = self.image_size
        if size < 4 or size & (size - 1):
            raise InputError(f"image_size must be a power of two >= 4, got {size}")
        for name in ("channels", "w_dim", "base_channels", "max_channels", "mapping_layers"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.label_dim < 0:
            raise InputError(f"label_dim must be >= 0, got {self.label_dim}")

    @classmethod
    def small(cls, image_size: int = 64, **overrides: object) -> StyleGeneratorConfig:
        """Trains on 2 CPU cores: ~16-128 channels, w in R^128."""
        return cls(image_size=image_size, w_dim=128, base_channels=16, max_channels=128, mapping_layers=4, **overrides)

    @classmethod
    def large(cls, image_size: int = 64, **overrides: object) -> StyleGeneratorConfig:
        """For a GPU: 64-512 channels, w in R^512, 8 mapping layers as in StyleGAN2."""
        return cls(image_size=image_size, w_dim=512, base_channels=64, max_channels=512, mapping_layers=8, **overrides)

    @property
    def resolutions(self) -> list[int]:
        """4, 8, ..., image_size."""
        return [2**k for k in range(2, int(math.log2(self.image_size)) + 1)]

    def channels_at(self, resolution: int) -> int:
        return min(self.max_channels, self.base_channels * self.image_size // resolution)

    @property
    def style_input_dim(self) -> int:
        """What the affine layers read: w (``w_dim``), followed by the label (``label_dim``) when conditioned."""
        return self.w_dim + self.label_dim

    @property
    def num_ws(self) -> int:
        """Styled layers (two convs and one toRGB per resolution): the length of a W+ code."""
        return 3 * len(self.resolutions)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


class EqualLinear(nn.Module):
    """Linear layer with StyleGAN's equalised learning rate: weights ~ N(0, 1), scaled at run time."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = 1.0 / math.sqrt(in_features)

    def effective_weight(self) -> Tensor:
        """The matrix A in ``y = A x + b``: (out_features, in_features)."""
        return self.weight * self.scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution: ``forward(x (N, Cin, H, W), style (N, Cin)) -> (N, Cout, H, W)``.

    Weights are scaled per sample and input channel by the style; with ``demodulate`` each output
    channel's weights are then divided by their L2 norm, so the output does not change when a layer's
    style is multiplied by a positive constant.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, demodulate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.padding = kernel_size // 2
        self.fused = True

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        n, cin, h, w = x.shape
        weight = self.weight * self.scale  # (Cout, Cin, k, k)
        if self.fused:
            modulated = weight.unsqueeze(0) * style[:, None, :, None, None]  # (N, Cout, Cin, k, k)
            if self.demodulate:
                modulated = modulated * torch.rsqrt(modulated.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
            out = F.conv2d(
                x.reshape(1, n * cin, h, w),
                modulated.reshape(-1, cin, *weight.shape[2:]),
                padding=self.padding,
                groups=n,
            )
            return out.reshape(n, -1, h, w)
        out = F.conv2d(x * style[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2
            norms = style.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t()  # (N, Cout)
            out = out * torch.rsqrt(norms + 1e-8)[:, :, None, None]
        return out


class StyledConv(nn.Module):
    """Affine (w -> style) + modulated 3x3 conv + optional noise + bias + leaky ReLU."""

    def __init__(self, w_dim: int, in_channels: int, out_channels: int, noise: bool) -> None:
        super().__init__()
        # StyleGAN2 initialises the affine bias to 1 so styles start near identity modulation
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, demodulate=True)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(())) if noise else None

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        out = self.conv(x, style)
        if self.noise_strength is not None:
            out = out + self.noise_strength * torch.randn(out.shape[0], 1, *out.shape[2:], device=out.device)
        return _act(out + self.bias[None, :, None, None])


class ToRGB(nn.Module):
    """Affine + modulated 1x1 conv without demodulation + bias: features -> image-space residual."""

    def __init__(self, w_dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        return self.conv(x, style) + self.bias[None, :, None, None]


# --------------------------------------------------------------------------------------------
# generator
# --------------------------------------------------------------------------------------------


class StyleGenerator(nn.Module):
    """Mapping network + StyleGAN2 synthesis network with an addressable StyleSpace.

    ``mapping(z (N, w_dim)) -> w (N, w_dim)``; ``styles(w) -> s (N, S_total)`` with w of shape
    (N, w_dim) or W+ (N, num_ws, w_dim); ``decode_styles(s) -> images (N, C, S, S)`` in [0, 1];
    ``decode(w) = decode_styles(styles(w))``; ``forward(z) = decode(mapping(z))``.
    """

    def __init__(self, config: StyleGeneratorConfig | None = None) -> None:
        super().__init__()
        config = config or StyleGeneratorConfig()
        self.config = config
        mapping: list[nn.Module] = []
        for _ in range(config.mapping_layers):
            mapping.append(EqualLinear(config.w_dim, config.w_dim))
        self.mapping_net = nn.ModuleList(mapping)
        first = config.channels_at(4)
        self.const = nn.Parameter(torch.randn(1, first, 4, 4))
        self.layers = nn.ModuleDict()
        previous = first
        for resolution in config.resolutions:
            width = config.channels_at(resolution)
            style_input = config.style_input_dim
            self.layers[f"{resolution}_conv0"] = StyledConv(style_input, previous, width, config.noise)
            self.layers[f"{resolution}_conv1"] = StyledConv(style_input, width, width, config.noise)
            self.layers[f"{resolution}_torgb"] = ToRGB(style_input, width, config.channels)
            previous = width
        for module in self.modules():
            if isinstance(module, ModulatedConv2d):
                module.fused = config.fused_modconv
        layout, offset = [], 0
        for key, layer in self.layers.items():
            length = layer.affine.weight.shape[0]
            layout.append((key.replace("_", "."), offset, length))
            offset += length
        self._layout = layout
        self.style_dim = offset

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def mapping(self, z: Tensor) -> Tensor:
        """z (N, w_dim) -> w (N, w_dim); z is pixel-normalised first (StyleGAN, Sec. 2)."""
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.mapping_net:
            x = _act(layer(x))
        return x

    def style_layout(self, include_torgb: bool = True) -> list[tuple[str, int, int]]:
        """``[(layer_name, offset, length), ...]`` in synthesis order; offsets index :meth:`styles`'s output.

        With ``include_torgb=False`` the toRGB layers are left out, but offsets still refer to the full
        vector (AttFind searches only conv styles).
        """
        return [entry for entry in self._layout if include_torgb or not entry[0].endswith("torgb")]

    def conv_style_mask(self) -> Tensor:
        """(S_total,) bool: True at style coordinates of the 3x3 convolutions, False at toRGB ones."""
        mask = torch.zeros(self.style_dim, dtype=torch.bool)
        for _, offset, length in self.style_layout(include_torgb=False):
            mask[offset : offset + length] = True
        return mask

    def affine_weights(self, include_torgb: bool = True) -> list[tuple[str, Tensor, Tensor]]:
        """``[(layer_name, A (length, w_dim), b (length,)), ...]`` in layout order, with s_layer = A w + b.

        ``A`` includes the equalised-learning-rate scale, so it is the matrix that acts on w (EigenFind
        stacks the conv layers' A and takes its SVD). A conditioned generator's A is (length, w_dim + label_dim):
        its last ``label_dim`` columns act on the label.
        """
        out = []
        for (name, _, _), layer in zip(self._layout, self.layers.values()):
            if include_torgb or not name.endswith("torgb"):
                out.append((name, layer.affine.effective_weight(), layer.affine.bias))
        return out

    def _check_w(self, w: Tensor) -> Tensor:
        """Return W+ (N, num_ws, dim) from W (N, dim) or W+, dim = ``style_input_dim``; refuse other shapes."""
        dim = self.config.style_input_dim
        if w.dim() == 2 and w.shape[1] == dim:
            return w.unsqueeze(1).expand(-1, self.num_ws, -1)
        if w.dim() == 3 and w.shape[1:] == (self.num_ws, dim):
            return w
        raise InputError(f"w must have shape (N, {dim}) or W+ (N, {self.num_ws}, {dim}), got {tuple(w.shape)}")

    def styles(self, w: Tensor) -> Tensor:
        """w (N, w_dim) or W+ (N, num_ws, w_dim) -> concatenated styles s (N, S_total)."""
        w_plus = self._check_w(w)
        parts = [layer.affine(w_plus[:, i]) for i, layer in enumerate(self.layers.values())]
        return torch.cat(parts, dim=1)

    def decode_styles(self, s: Tensor) -> Tensor:
        """s (N, S_total) -> images (N, C, S, S) in [0, 1]."""
        if s.dim() != 2 or s.shape[1] != self.style_dim:
            raise InputError(f"styles must have shape (N, {self.style_dim}), got {tuple(s.shape)}")
        _, rgb = self._synthesize(s, self.const.expand(s.shape[0], -1, -1, -1), None, 0, len(self.layers))
        return torch.sigmoid(rgb)

    def _synthesize(self, s: Tensor, x: Tensor, rgb: Tensor | None, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """Run styled layers ``start..stop-1`` (layout indices; per resolution conv0, conv1, toRGB) on features
        ``x`` and the summed RGB so far ``rgb`` (None before the first toRGB); returns both after ``stop - 1``."""
        layers = list(self.layers.values())
        for index in range(start, stop):
            style = self._slice(s, index)
            if index % 3 == 2:
                residual = layers[index](x, style)
                rgb = residual if rgb is None else _upsample(rgb) + residual
            else:
                x = layers[index](_upsample(x) if index % 3 == 0 and index else x, style)
        return x, rgb

    def synthesis_state(self, s: Tensor, layer: int) -> tuple[Tensor, Tensor | None]:
        """The synthesis state just before styled layer ``layer`` (a :meth:`style_layout` index) for styles s (N,
        S_total): features (N, C_l, H, W) and the summed RGB so far (None before the first toRGB). Styles of
        ``layer`` and later do not enter it, so edits there can restart from it (:meth:`decode_from_state`)."""
        return self._synthesize(s, self.const.expand(s.shape[0], -1, -1, -1), None, 0, layer)

    def decode_from_state(self, s: Tensor, layer: int, state: tuple[Tensor, Tensor | None]) -> Tensor:
        """Images (N, C, S, S) in [0, 1] from a :meth:`synthesis_state` at ``layer`` and styles s (N, S_total), of
        which only layers ``layer`` and later are read: ``decode_styles(s)`` without recomputing layers before it.
        A channels-last state runs faster on CPUs; the images come back in the default contiguous layout."""
        _, rgb = self._synthesize(s, state[0], state[1], layer, len(self.layers))
        return torch.sigmoid(rgb).contiguous()

    def _slice(self, s: Tensor, index: int) -> Tensor:
        _, offset, length = self._layout[index]
        return s[:, offset : offset + length]

    def decode(self, w: Tensor) -> Tensor:
        """w (N, w_dim) or W+ (N, num_ws, w_dim) -> images (N, C, S, S) in [0, 1]."""
        return self.decode_styles(self.styles(w))

    def forward(self, z: Tensor) -> Tensor:
        """z (N, w_dim) -> images: a random sample from the generator."""
        return self.decode(self.mapping(z))


# --------------------------------------------------------------------------------------------
# encoder and discriminator
# --------------------------------------------------------------------------------------------


class _DownTrunk(nn.Module):
    """fromRGB 1x1, then per resolution conv3x3 + strided conv4x4 down to 4x4: (N, C, S, S) -> (N, F)."""

    def __init__(self, config: StyleGeneratorConfig) -> None:
        super().__init__()
        resolutions = config.resolutions[::-1]  # image_size, ..., 4
        self.from_rgb = nn.Conv2d(config.channels, config.channels_at(config.image_size), 1)
        blocks = []
        for high, low in zip(resolutions[:-1], resolutions[1:]):
            c_in, c_out = config.channels_at(high), config.channels_at(low)
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, c_in, 3, padding=1),
                    nn.LeakyReLU(_LEAK),
                    nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                    nn.LeakyReLU(_LEAK),
                )
            )
        self.blocks = nn.Sequential(*blocks)
        self.out_features = config.channels_at(4) * 16

    def forward(self, images: Tensor) -> Tensor:
        x = F.leaky_relu(self.from_rgb(images * 2 - 1), _LEAK)
        return self.blocks(x).flatten(1)


class StyleEncoder(nn.Module):
    """Conv downsampling network: images (N, C, S, S) in [0, 1] -> w (N, w_dim) or W+ (N, num_ws, w_dim)."""

    def __init__(self, config: StyleGeneratorConfig, w_plus: bool | None = None) -> None:
        super().__init__()
        self.config = config
        self.w_plus = config.w_plus if w_plus is None else w_plus
        self.trunk = _DownTrunk(config)
        outputs = config.w_dim * (config.num_ws if self.w_plus else 1)
        self.head = nn.Sequential(
            nn.Linear(self.trunk.out_features, 2 * config.w_dim),
            nn.LeakyReLU(_LEAK),
            nn.Linear(2 * config.w_dim, outputs),
        )

    def forward(self, images: Tensor) -> Tensor:
        out = self.head(self.trunk(images))
        return out.view(-1, self.config.num_ws, self.config.w_dim) if self.w_plus else out


class StyleDiscriminator(nn.Module):
    """Small conv discriminator: images (N, C, S, S) in [0, 1] -> realness logits (N,)."""

    def __init__(self, config: StyleGeneratorConfig) -> None:
        super().__init__()
        self.trunk = _DownTrunk(config)
        self.head = nn.Sequential(nn.Linear(self.trunk.out_features, config.channels_at(4)), nn.LeakyReLU(_LEAK))
        self.out = nn.Linear(config.channels_at(4), 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.out(self.head(self.trunk(images))).squeeze(1)


# --------------------------------------------------------------------------------------------
# autoencoder (LatentModel)
# --------------------------------------------------------------------------------------------


class StyleAutoencoder(nn.Module):
    """Encoder + StyleGAN2-like generator behind the :class:`~vcex.models.latent.LatentModel` protocol.

    ``encode(images (N, C, S, S) in [0, 1]) -> w (N, w_dim)`` (W+ (N, num_ws, w_dim) when
    ``config.w_plus``); ``decode(w) -> images (N, C, S, S)`` in [0, 1]. The StyleSpace methods
    (``styles``, ``decode_styles``, ``style_layout``, ``affine_weights``, ``conv_style_mask``) are the
    generator's.
    """

    def __init__(self, config: StyleGeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or StyleGeneratorConfig()
        self.generator = StyleGenerator(self.config)
        self.encoder = StyleEncoder(self.config)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.config.channels, self.config.image_size, self.config.image_size)

    @property
    def style_dim(self) -> int:
        return self.generator.style_dim

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def check_images(self, images: Tensor) -> None:
        """Raise :class:`InputError` unless images are (N, C, S, S) with this model's C and S."""
        if images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise InputError(
                f"StyleAutoencoder expects images of shape (N, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(images.shape)}"
            )

    def encode(self, images: Tensor) -> Tensor:
        self.check_images(images)
        return self.encoder(images)

    def decode(self, latents: Tensor) -> Tensor:
        return self.generator.decode(latents)

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruction: ``decode(encode(images))``."""
        return self.decode(self.encode(images))

    def styles(self, latents: Tensor) -> Tensor:
        return self.generator.styles(latents)

    def decode_styles(self, s: Tensor) -> Tensor:
        return self.generator.decode_styles(s)

    def synthesis_state(self, s: Tensor, layer: int) -> tuple[Tensor, Tensor | None]:
        return self.generator.synthesis_state(s, layer)

    def decode_from_state(self, s: Tensor, layer: int, state: tuple[Tensor, Tensor | None]) -> Tensor:
        return self.generator.decode_from_state(s, layer, state)

    def style_layout(self, include_torgb: bool = True) -> list[tuple[str, int, int]]:
        return self.generator.style_layout(include_torgb)

    def conv_style_mask(self) -> Tensor:
        return self.generator.conv_style_mask()

    def affine_weights(self, include_torgb: bool = True) -> list[tuple[str, Tensor, Tensor]]:
        return self.generator.affine_weights(include_torgb)

    def load_weights(self, source: str | Path | dict[str, Tensor]) -> StyleAutoencoder:
        """Load a safetensors file or a state dict; a config mismatch raises :class:`~vcex.errors.CacheError`."""
        if isinstance(source, dict):
            load_state_into(self, source, "the given state dict")
        else:
            tensors, _ = load_weights(source)
            load_state_into(self, tensors, str(source))
        return self

    def record(self) -> dict:
        """The configuration as a JSON-serialisable dict (for :func:`vcex.cache.save_weights`)."""
        return {"architecture": "StyleAutoencoder", **asdict(self.config)}


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def psnr(images: Tensor, reference: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: (N, C, H, W) x2 -> (N,)."""
    mse = (images - reference).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


@torch.no_grad()
@evaluates("model")
def reconstruction_psnr(model: StyleAutoencoder, images: Tensor, batch_size: int = 256) -> float:
    """Mean PSNR (dB) of ``decode(encode(images))`` against ``images``, the model in eval mode (restored)."""
    values = [psnr(model(chunk), chunk) for chunk in images.split(batch_size)]
    return float(torch.cat(values).mean()) if values else float("nan")


@dataclass(frozen=True)
class _LossTerms:
    """The loss terms of :func:`train_style_autoencoder` and their weights (see its docstring)."""

    pixel_weights: Tensor | None
    perceptual: Callable[[Tensor], Tensor] | None
    perceptual_weight: float
    latent_weight: float
    latent_share: float
    adversarial_weight: float
    r1_gamma: float
    r1_interval: int
    classifier: Callable[[Tensor], Tensor] | None
    stylex_weight: float


@dataclass
class _Optimisers:
    """The autoencoder's Adam with its one-cycle schedule, and the discriminator with its own Adam (or None)."""

    autoencoder: torch.optim.Adam
    schedule: torch.optim.lr_scheduler.OneCycleLR
    discriminator: StyleDiscriminator | None
    discriminator_optimiser: torch.optim.Adam | None


def _checked_pixel_weights(images: Tensor, pixel_weights: Tensor | None) -> Tensor | None:
    """``pixel_weights`` (N, 1, S, S) checked against ``images`` (N, C, S, S) and normalised to mean 1."""
    if pixel_weights is None:
        return None
    expected = (len(images), 1, *images.shape[2:])
    if tuple(pixel_weights.shape) != expected:
        raise InputError(f"pixel_weights must have shape {expected}, got {tuple(pixel_weights.shape)}")
    return pixel_weights / pixel_weights.mean().clamp_min(1e-8)


def _make_optimisers(
    model: StyleAutoencoder, lr: float, generator_lr: float, total_steps: int, adversarial: bool
) -> _Optimisers:
    """Adam (betas 0.9, 0.99) over encoder (``lr``) and generator (``generator_lr``) under a one-cycle schedule
    of ``total_steps``; with ``adversarial``, a new discriminator and its Adam (lr / 2, betas 0.5, 0.99)."""
    groups = [
        {"params": list(model.encoder.parameters()), "lr": lr},
        {"params": list(model.generator.parameters()), "lr": generator_lr},
    ]
    optimiser = torch.optim.Adam(groups, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[lr, generator_lr], total_steps=total_steps, pct_start=0.1
    )
    if not adversarial:
        return _Optimisers(optimiser, schedule, None, None)
    discriminator = StyleDiscriminator(model.config)
    return _Optimisers(
        optimiser, schedule, discriminator, torch.optim.Adam(discriminator.parameters(), lr=lr / 2, betas=(0.5, 0.99))
    )


def _l1_loss(reconstruction: Tensor, x: Tensor, pixel_weights: Tensor | None) -> Tensor:
    """Mean |x' - x| over (n, C, S, S), each pixel weighted by ``pixel_weights`` (n, 1, S, S) if given."""
    if pixel_weights is None:
        return (reconstruction - x).abs().mean()
    return ((reconstruction - x).abs() * pixel_weights).mean()


def _perceptual_loss(perceptual: Callable[[Tensor], Tensor], reconstruction: Tensor, x: Tensor) -> Tensor:
    """MSE between the features of the reconstruction and of the (constant) originals: a scalar."""
    with torch.no_grad():
        target_features = perceptual(x)
    return F.mse_loss(perceptual(reconstruction), target_features)


def _latent_consistency_loss(model: StyleAutoencoder, w: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Mean |E(G(w)) - w| over the first ``k`` encoded latents w (n, ...) (detached) and ``k`` latents mapped
    from z ~ N(0, I) drawn from ``generator``: a scalar."""
    z = torch.randn(k, model.config.w_dim, generator=generator)
    w_sampled = model.generator.mapping(z)
    if model.encoder.w_plus:
        w_sampled = w_sampled.unsqueeze(1).expand(-1, model.num_ws, -1)
    latents = torch.cat([w[:k].detach(), w_sampled.detach()])
    # one generator pass renders both latents whose re-encoding must come back
    rendered = model.generator.decode(latents)
    return (model.encoder(rendered) - latents).abs().mean()


def _stylex_loss(classifier: Callable[[Tensor], Tensor], reconstruction: Tensor, x: Tensor) -> Tensor:
    """KL(C(x) || C(x')) per image, averaged over the batch; the classifier's view of x is constant."""
    with torch.no_grad():
        log_p = F.log_softmax(classifier(x), dim=1)
    log_q = F.log_softmax(classifier(reconstruction), dim=1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def _adversarial_loss(discriminator: StyleDiscriminator, fakes: Tensor) -> Tensor:
    """Non-saturating generator loss softplus(-D(fakes)).mean(); D's parameters get no gradient from it."""
    for p in discriminator.parameters():
        p.requires_grad_(False)
    loss = F.softplus(-discriminator(fakes)).mean()
    for p in discriminator.parameters():
        p.requires_grad_(True)
    return loss


def _discriminator_loss(discriminator: StyleDiscriminator, fakes: Tensor, x: Tensor, r1_weight: float) -> Tensor:
    """Logistic loss of D on ``fakes`` and reals ``x``, plus ``r1_weight * |grad D(x)|^2`` (mean over the
    batch) when ``r1_weight`` is not 0: a scalar."""
    loss = F.softplus(discriminator(fakes.detach())).mean() + F.softplus(-discriminator(x)).mean()
    if r1_weight:
        real = x.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
        loss = loss + r1_weight * gradient.pow(2).flatten(1).sum(1).mean()
    return loss


def _generator_loss(
    model: StyleAutoencoder,
    x: Tensor,
    pixel_weights: Tensor | None,
    terms: _LossTerms,
    discriminator: StyleDiscriminator | None,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The autoencoder's loss on a batch x (n, C, S, S) with its pixel weights (n, 1, S, S) or None.

    Returns the total loss, its L1 term (scalars) and the fakes shown to the discriminator (reconstructions
    and samples, (2n, C, S, S); None without one). Draws the latent term's z, then the samples' z, from
    ``generator``.
    """
    n = len(x)
    w = model.encoder(x)
    reconstruction = model.generator.decode(w)
    l1 = _l1_loss(reconstruction, x, pixel_weights)
    loss = l1
    if terms.perceptual is not None:
        loss = loss + terms.perceptual_weight * _perceptual_loss(terms.perceptual, reconstruction, x)
    # the consistency term on a share of the batch: it costs a generator and an encoder pass per latent
    k = max(1, round(n * terms.latent_share))
    loss = loss + terms.latent_weight * _latent_consistency_loss(model, w, k, generator)
    if terms.stylex_weight > 0:
        loss = loss + terms.stylex_weight * _stylex_loss(terms.classifier, reconstruction, x)
    fakes = None
    if discriminator is not None:
        samples = model.generator(torch.randn(n, model.config.w_dim, generator=generator))
        fakes = torch.cat([reconstruction, samples])
        loss = loss + terms.adversarial_weight * _adversarial_loss(discriminator, fakes)
    return loss, l1, fakes


def _train_step(
    model: StyleAutoencoder,
    x: Tensor,
    pixel_weights: Tensor | None,
    terms: _LossTerms,
    optimisers: _Optimisers,
    step: int,
    generator: torch.Generator,
) -> tuple[float, float]:
    """One optimisation step of the autoencoder, then (if adversarial) of the discriminator, with the lazy R1
    penalty on every ``r1_interval``-th ``step``. Returns the batch's loss and L1 term."""
    loss, l1, fakes = _generator_loss(model, x, pixel_weights, terms, optimisers.discriminator, generator)
    optimisers.autoencoder.zero_grad(set_to_none=True)
    loss.backward()
    optimisers.autoencoder.step()
    optimisers.schedule.step()
    if optimisers.discriminator is not None:
        lazy_r1 = step % terms.r1_interval == 0 and terms.r1_gamma > 0
        # lazy regularisation: the penalty scaled by its interval (StyleGAN2 Sec. B)
        r1_weight = terms.r1_gamma / 2 * terms.r1_interval if lazy_r1 else 0.0
        d_loss = _discriminator_loss(optimisers.discriminator, fakes, x, r1_weight)
        optimisers.discriminator_optimiser.zero_grad(set_to_none=True)
        d_loss.backward()
        optimisers.discriminator_optimiser.step()
    return float(loss.detach()), float(l1.detach())


def _train_epoch(
    model: StyleAutoencoder,
    images: Tensor,
    batch_size: int,
    terms: _LossTerms,
    optimisers: _Optimisers,
    first_step: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """One pass over ``images`` (N, C, S, S) in an order drawn from ``generator``, in batches of ``batch_size``
    numbered from ``first_step``. Returns the epoch's mean ``loss`` and ``l1`` per image."""
    order = torch.randperm(len(images), generator=generator)
    totals = {"loss": 0.0, "l1": 0.0}
    count = 0
    for step, batch in enumerate(order.split(batch_size), start=first_step):
        x = images[batch]
        weights = None if terms.pixel_weights is None else terms.pixel_weights[batch]
        loss, l1 = _train_step(model, x, weights, terms, optimisers, step, generator)
        totals["loss"] += loss * len(x)
        totals["l1"] += l1 * len(x)
        count += len(x)
    return {key: value / count for key, value in totals.items()}


def train_style_autoencoder(
    model: StyleAutoencoder,
    images: Tensor,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    generator_lr: float | None = None,
    perceptual: Callable[[Tensor], Tensor] | None = None,
    perceptual_weight: float = 1.0,
    latent_weight: float = 0.1,
    latent_share: float = 0.25,
    adversarial: bool = False,
    adversarial_weight: float = 0.05,
    r1_gamma: float = 1.0,
    r1_interval: int = 4,
    classifier: Callable[[Tensor], Tensor] | None = None,
    stylex_weight: float = 0.0,
    holdout: float = 0.05,
    pixel_weights: Tensor | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Train ``model`` (encoder and generator together) to reconstruct ``images`` (N, C, S, S) in [0, 1].

    Per minibatch x with w = E(x), x' = G(w), the loss is (StylEx, Lang et al. ICCV'21, Sec. 3, with
    LPIPS replaced by the caller's feature extractor)::

        |x - x'|_1 + perceptual_weight * MSE(f(x'), f(x))                      (if perceptual)
        + latent_weight * (|E(G(w.detach())) - w.detach()|_1 + |E(G(w_z)) - w_z|_1)   w_z = mapping(z)
        + adversarial_weight * softplus(-D(fakes)).mean()                      (if adversarial)
        + stylex_weight * KL(C(x) || C(x'))                                    (if stylex_weight > 0)

    The discriminator D (non-saturating logistic loss, lazy R1 penalty ``r1_gamma / 2 * |grad D(x)|^2``
    every ``r1_interval`` steps; StyleGAN2 Sec. B) sees reconstructions and samples G(mapping(z)) as fakes.
    The latent-consistency term uses ``latent_share`` of each batch (and as many z samples) to save time.
    ``classifier`` maps images to logits; it is not trained. A ``holdout`` share of the images (the
    last ones) is kept out of training to report reconstruction PSNR. ``pixel_weights`` (N, 1, S, S),
    if given, weights the L1 term per pixel (e.g. up-weighting small parts such as the mouth, which a
    plain mean over pixels lets the generator blur away); the weights are normalised to mean 1.

    ``lr`` is the encoder's peak learning rate and ``generator_lr`` (default: ``lr``) the generator's: its
    equalised-learning-rate layers store unit-scale weights, so Adam moves them ~sqrt(fan-in) times more
    slowly than ordinary layers at the same rate, and a short CPU schedule needs a higher one.

    Returns final metrics: ``loss``, ``l1`` (last epoch's means), ``psnr`` (held-out, dB), ``train_psnr``
    (on up to 512 training images), ``seconds`` and ``seconds_per_epoch``. Deterministic for a seed.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InputError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    model.check_images(images)
    pixel_weights = _checked_pixel_weights(images, pixel_weights)
    if stylex_weight > 0 and classifier is None:
        raise InputError("stylex_weight > 0 needs a classifier (images -> logits)")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    held = int(len(images) * holdout) if len(images) > 1 else 0
    train_images, val_images = images[: len(images) - held], images[len(images) - held :]
    steps_per_epoch = -(-len(train_images) // batch_size)
    lr = check_positive_finite("lr", lr)
    if generator_lr is None:
        generator_lr = lr
    elif generator_lr != 0:  # 0 keeps the generator as it is and trains the encoder alone
        generator_lr = check_positive_finite("generator_lr", generator_lr)
    optimisers = _make_optimisers(model, lr, generator_lr, epochs * steps_per_epoch, adversarial)
    terms = _LossTerms(
        pixel_weights=pixel_weights,
        perceptual=perceptual,
        perceptual_weight=perceptual_weight,
        latent_weight=latent_weight,
        latent_share=latent_share,
        adversarial_weight=adversarial_weight,
        r1_gamma=r1_gamma,
        r1_interval=r1_interval,
        classifier=classifier,
        stylex_weight=stylex_weight,
    )

    model.train()
    bar = progress_bar(total=epochs, desc="style autoencoder", enabled=progress, unit="epoch")
    start = time.perf_counter()
    for epoch in range(epochs):
        totals = _train_epoch(model, train_images, batch_size, terms, optimisers, epoch * steps_per_epoch, generator)
        bar.update(1)
        bar.set_postfix(loss=f"{totals['loss']:.4g}", l1=f"{totals['l1']:.4g}")
    bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    return {
        **totals,
        "psnr": reconstruction_psnr(model, val_images),
        "train_psnr": reconstruction_psnr(model, train_images[:512]),
        "seconds": seconds,
        "seconds_per_epoch": seconds / epochs,
    }


class StyleSpaceModel(nn.Module):
    """A style autoencoder seen through its StyleSpace, as a :class:`~vcex.models.latent.LatentModel`.

    ``encode(images (N, C, S, S) in [0, 1]) -> s (N, style_dim)``, the concatenated per-channel
    styles of the encoded w; ``decode(s) -> images``. An attack on this latent edits individual
    channels' styles, the space where StyleSpace and StylEx find disentangled attributes.
    """

    def __init__(self, autoencoder: StyleAutoencoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.autoencoder.image_shape

    def encode(self, images: Tensor) -> Tensor:
        return self.autoencoder.styles(self.autoencoder.encode(images))

    def decode(self, latents: Tensor) -> Tensor:
        return self.autoencoder.decode_styles(latents)

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))
