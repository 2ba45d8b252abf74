"""Deep model inversion helpers for DISC: image parameterisations and priors read from the classifier.

A parameterisation maps one flat variable per image, (B, P), to images (B, C, H, W), so every image
gets its own network yet the whole batch runs as a few batched ops (grouped convolutions for the
deep image prior, batched matmuls for the implicit representation). That is what lets the shared
optimisation loop treat DIP/INR weights exactly like pixels or latents.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vcex.checks import check_positive_finite
from vcex.errors import InputError

PARAMETERISATIONS = ("pixels", "dip", "inr")


class Parameterisation:
    """Maps per-image variables (B, P) to images (B, C, H, W) in ``value_range``.

    ``initial(images)`` returns the variables to start from: for networks, weights first fitted so
    that ``render(initial(x)) ~= x``. ``project`` is applied after every optimiser step.
    """

    name = "parameterisation"

    def __init__(self, shape: tuple[int, int, int], value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        self.shape = tuple(shape)
        self.value_range = value_range

    def initial(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def render(self, variables: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, variables: torch.Tensor) -> torch.Tensor:
        return variables

    def _to_range(self, raw: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        return low + (high - low) * torch.sigmoid(raw)


class PixelParameterisation(Parameterisation):
    """The image itself (image-space optimisation); variables (B, C*H*W), clamped to the value range."""

    name = "pixels"

    def initial(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).clone()

    def render(self, variables: torch.Tensor) -> torch.Tensor:
        return variables.view(-1, *self.shape)

    def project(self, variables: torch.Tensor) -> torch.Tensor:
        return variables.clamp(*self.value_range)


class _FittedNetwork(Parameterisation):
    """A per-image network whose weights are fitted to reproduce each image before it is explained.

    The variable of an image is its network weights followed by the fit's residual ``x - net(w0)``,
    which ``render`` adds back as a constant (it is detached, so its coordinates get no gradient and
    Adam never moves them): the optimisation starts exactly at x, and every change to the image comes
    from the network's weights, i.e. passes through the prior.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        value_range: tuple[float, float] = (0.0, 1.0),
        *,
        fit_steps: int = 200,
        fit_lr: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__(shape, value_range)
        if fit_steps < 0:
            raise InputError(f"fit_steps must be >= 0, got {fit_steps}")
        self.fit_steps = fit_steps
        self.fit_lr = check_positive_finite("fit_lr", fit_lr)
        self.seed = seed
        self.shapes: list[tuple[int, ...]] = []
        self.fit_error: torch.Tensor | None = None  # (B,) mean absolute error of net(w0) after the last fit

    @property
    def num_parameters(self) -> int:
        """The number of network weights per image (the variable adds C*H*W residual entries)."""
        return sum(math.prod(s) for s in self.shapes)

    def _unflatten(self, weights: torch.Tensor) -> list[torch.Tensor]:
        sizes = [math.prod(s) for s in self.shapes]
        return [part.view(-1, *s) for part, s in zip(weights.split(sizes, dim=1), self.shapes)]

    def _init_weights(self, generator: torch.Generator) -> torch.Tensor:
        """One image's initial weights (P,): He-uniform weights, zero biases."""
        parts = []
        for s in self.shapes:
            if len(s) == 1:
                parts.append(torch.zeros(s))
            else:
                fan_in = math.prod(s[1:]) if len(s) == 4 else s[0]
                bound = math.sqrt(6.0 / fan_in)
                parts.append((torch.rand(s, generator=generator) * 2 - 1) * bound)
        return torch.cat([p.flatten() for p in parts])

    def network(self, weights: torch.Tensor) -> torch.Tensor:
        """Images (b, C, H, W) in the value range from per-image weights (b, P)."""
        raise NotImplementedError

    def fit(self, images: torch.Tensor) -> torch.Tensor:
        """Weights (B, P) fitted by Adam on the mean squared error to ``images`` (B, C, H, W)."""
        generator = torch.Generator().manual_seed(self.seed)
        start = self._init_weights(generator).to(images.device, images.dtype)
        weights = start.expand(len(images), -1).clone()
        # the output bias starts at each image's mean intensity, so the fit need not first find the background
        low, high = self.value_range
        mean = ((images - low) / (high - low)).mean((2, 3)).clamp(0.02, 0.98)
        weights[:, -self.shape[0] :] = torch.logit(mean)
        weights.requires_grad_(True)
        optimiser = torch.optim.Adam([weights], lr=self.fit_lr)
        with torch.enable_grad():
            for _ in range(self.fit_steps):
                # a sum over images keeps each image's gradient its own; Adam is per coordinate
                loss = (self.network(weights) - images).pow(2).flatten(1).mean(1).sum()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
        return weights.detach()

    def initial(self, images: torch.Tensor) -> torch.Tensor:
        """Fitted weights and the fit's residual, (B, P + C*H*W); ``render`` of it gives ``images``."""
        weights = self.fit(images)
        with torch.no_grad():
            residual = images - self.network(weights)
        self.fit_error = residual.abs().flatten(1).mean(1)
        return torch.cat([weights, residual.flatten(1)], dim=1)

    def render(self, variables: torch.Tensor) -> torch.Tensor:
        weights, residual = variables.split([self.num_parameters, math.prod(self.shape)], dim=1)
        images = self.network(weights) + residual.detach().view(-1, *self.shape)
        return images.clamp(*self.value_range)


class DeepImagePrior(_FittedNetwork):
    """Deep image prior (Ulyanov et al., 2018) in the decoder-only form of Heckel & Hand's deep decoder
    (2019): fixed noise at a quarter of the image size; a 3x3 convolution, 2x bilinear upsampling,
    a 3x3 convolution, upsampling to full size, a 1x1 convolution, each followed by ReLU and a
    per-image channel normalisation (which keeps ReLUs from dying during the fit); a final 1x1
    convolution to the image channels and a sigmoid. Each image has its own weights; the noise is
    shared. P ~ 3.8k weights per image for 28x28 at width 16.

    Args:
        shape: (C, H, W) of the images.
        width: channels of every hidden layer.
        noise_channels: channels of the fixed noise input.
        fit_steps, fit_lr: Adam steps and rate of the initial fit to each image.
    """

    name = "dip"

    def __init__(
        self,
        shape: tuple[int, int, int],
        value_range: tuple[float, float] = (0.0, 1.0),
        *,
        width: int = 16,
        noise_channels: int = 8,
        fit_steps: int = 200,
        fit_lr: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__(shape, value_range, fit_steps=fit_steps, fit_lr=fit_lr, seed=seed)
        channels, height, width_px = self.shape
        self.sizes = [(-(-height // 4), -(-width_px // 4)), (-(-height // 2), -(-width_px // 2)), (height, width_px)]
        generator = torch.Generator().manual_seed(seed + 1)
        self.noise = torch.rand((1, noise_channels, *self.sizes[0]), generator=generator)
        self.shapes = [
            (width, noise_channels, 3, 3),
            (width,),
            (width, width, 3, 3),
            (width,),
            (width, width, 1, 1),
            (width,),
            (channels, width, 1, 1),
            (channels,),
        ]

    def network(self, weights: torch.Tensor) -> torch.Tensor:
        b = weights.shape[0]
        w1, b1, w2, b2, w3, b3, w4, b4 = self._unflatten(weights)
        hidden = _channel_norm(F.relu(_grouped_conv(self.noise.to(weights).expand(b, -1, -1, -1), w1, b1)))
        hidden = F.interpolate(hidden, size=self.sizes[1], mode="bilinear", align_corners=False)
        hidden = _channel_norm(F.relu(_grouped_conv(hidden, w2, b2)))
        hidden = F.interpolate(hidden, size=self.sizes[2], mode="bilinear", align_corners=False)
        hidden = _channel_norm(F.relu(_pointwise(hidden, w3, b3)))
        return self._to_range(_pointwise(hidden, w4, b4))


def _channel_norm(hidden: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each image's channels to zero mean, unit variance over positions: (b, C, H, W)."""
    mean = hidden.mean((2, 3), keepdim=True)
    var = hidden.var((2, 3), keepdim=True, unbiased=False)
    return (hidden - mean) / (var + eps).sqrt()


def _pointwise(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-image 1x1 convolution as one batched matmul: inputs (b, Cin, H, W), weight (b, Cout, Cin, 1, 1)."""
    b, _, height, width = inputs.shape
    out = torch.bmm(weight.flatten(2), inputs.flatten(2)) + bias[..., None]
    return out.view(b, -1, height, width)


def _grouped_conv(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-image convolution: inputs (b, Cin, H, W), weight (b, Cout, Cin, k, k), bias (b, Cout)."""
    b, cin, height, width = inputs.shape
    cout, kernel = weight.shape[1], weight.shape[-1]
    out = F.conv2d(
        inputs.reshape(1, b * cin, height, width),
        weight.reshape(b * cout, cin, kernel, kernel),
        bias.reshape(b * cout),
        padding=kernel // 2,
        groups=b,
    )
    return out.view(b, cout, height, width)


class FourierINR(_FittedNetwork):
    """Implicit neural representation: a coordinate MLP over random Fourier features (Tancik et al., 2020).

    Pixel centres p in [-1, 1]^2 are mapped to [sin(pi B p), cos(pi B p)] with B ~ N(0, sigma^2),
    shared by all images; each image has its own ReLU MLP (two hidden layers) ending in a sigmoid.
    A small ``sigma`` limits the representation to smooth images, so edits are smooth too.

    Args:
        shape: (C, H, W) of the images.
        frequencies: number of Fourier frequencies (features = 2 * frequencies).
        hidden: width of the hidden layers.
        sigma: scale of the random frequencies.
        fit_steps, fit_lr: Adam steps and rate of the initial fit to each image.
    """

    name = "inr"

    def __init__(
        self,
        shape: tuple[int, int, int],
        value_range: tuple[float, float] = (0.0, 1.0),
        *,
        frequencies: int = 32,
        hidden: int = 48,
        sigma: float = 3.0,
        fit_steps: int = 200,
        fit_lr: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__(shape, value_range, fit_steps=fit_steps, fit_lr=fit_lr, seed=seed)
        channels, height, width = self.shape
        ys = (torch.arange(height) + 0.5) / height * 2 - 1
        xs = (torch.arange(width) + 0.5) / width * 2 - 1
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).view(-1, 2)
        generator = torch.Generator().manual_seed(seed + 1)
        frequencies_matrix = torch.randn((2, frequencies), generator=generator) * sigma
        projected = math.pi * grid @ frequencies_matrix
        self.features = torch.cat([projected.sin(), projected.cos()], dim=1)  # (H*W, 2F)
        self.shapes = [
            (2 * frequencies, hidden),
            (hidden,),
            (hidden, hidden),
            (hidden,),
            (hidden, channels),
            (channels,),
        ]

    def _init_weights(self, generator: torch.Generator) -> torch.Tensor:
        parts = []
        for s in self.shapes:
            if len(s) == 1:
                parts.append(torch.zeros(s))
            else:
                bound = math.sqrt(6.0 / s[0])
                parts.append((torch.rand(s, generator=generator) * 2 - 1) * bound)
        return torch.cat([p.flatten() for p in parts])

    def network(self, weights: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2, w3, b3 = self._unflatten(weights)
        hidden = F.relu(torch.einsum("pf,bfh->bph", self.features.to(weights), w1) + b1[:, None])
        hidden = F.relu(torch.bmm(hidden, w2) + b2[:, None])
        out = torch.bmm(hidden, w3) + b3[:, None]  # (b, H*W, C)
        channels, height, width = self.shape
        return self._to_range(out.transpose(1, 2).reshape(-1, channels, height, width))


def make_parameterisation(
    name: str, shape: tuple[int, int, int], value_range: tuple[float, float], **options: object
) -> Parameterisation:
    """A parameterisation by name: ``"pixels"``, ``"dip"`` or ``"inr"``."""
    if name == "pixels":
        return PixelParameterisation(shape, value_range)
    if name == "dip":
        return DeepImagePrior(shape, value_range, **options)
    if name == "inr":
        return FourierINR(shape, value_range, **options)
    raise InputError(f"unknown parameterisation {name!r}; use one of {', '.join(PARAMETERISATIONS)}")


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image, (N,): mean absolute difference of neighbouring pixels."""
    dy = (images[:, :, 1:] - images[:, :, :-1]).abs().flatten(1).mean(1)
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def module_names(model: nn.Module) -> list[str]:
    """Names of ``model``'s submodules as users know them (a Classifier's ``network.`` prefix dropped)."""
    names = []
    for name, _ in model.named_modules():
        if not name:
            continue
        if name.startswith("network."):
            name = name[len("network.") :]
        elif name == "network":
            continue
        names.append(name)
    return names


def find_modules(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The submodules called ``names`` (with or without a Classifier's ``network.`` prefix).

    Raises InputError listing the valid names when one does not exist.
    """
    modules = dict(model.named_modules())
    found = []
    for name in names:
        module = modules.get(name) if name else None
        if module is None:
            module = modules.get(f"network.{name}")
        if module is None:
            valid = module_names(model)
            raise InputError(
                f"feature layer {name!r} does not exist in the classifier; valid layer names: {', '.join(valid)}"
            )
        found.append(module)
    return found


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch-norm layers of ``model`` that track running statistics (and whose inputs a hook can read:
    those inside TorchScript are counted by :func:`script_batch_norm_count`)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


_BATCH_NORM_NAMES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")


def torchscript_kind(model: nn.Module) -> str | None:
    """How ``model`` (or a part of it) was compiled: ``"traced (torch.jit.trace)"``, ``"scripted
    (torch.jit.script)"``, or None for plain modules. TorchScript runs its forward pass as a compiled graph, so
    Python forward hooks on its layers never run (scripted) or are refused (traced: ignored)."""
    for module in model.modules():
        if isinstance(module, torch.jit.TracedModule):
            return "traced (torch.jit.trace)"
        if isinstance(module, torch.jit.ScriptModule):
            return "scripted (torch.jit.script)"
    return None


def script_batch_norm_count(model: nn.Module) -> int:
    """The batch-norm layers with running statistics inside TorchScript parts of ``model``: a compiled layer
    is no ``_BatchNorm`` instance, but keeps its class's name as ``original_name`` and its buffers."""
    return sum(
        1
        for module in model.modules()
        if isinstance(module, torch.jit.ScriptModule)
        and getattr(module, "original_name", "") in _BATCH_NORM_NAMES
        and isinstance(getattr(module, "running_mean", None), torch.Tensor)
    )


class ActivationRecorder:
    """Forward hooks that keep the latest output of chosen layers and the latest input of BN layers.

    Used inside ``with recorder.attached():``; the hooks cost nothing extra because the loop's own
    classifier pass fills them.
    """

    def __init__(self, layers: Sequence[nn.Module], norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
        self.layers = list(layers)
        self.norms = list(norms)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self.norm_inputs: list[torch.Tensor | None] = [None] * len(self.norms)

    @contextmanager
    def attached(self) -> Iterator[ActivationRecorder]:
        handles = []
        for i, layer in enumerate(self.layers):
            handles.append(layer.register_forward_hook(self._keep_output(i)))
        for i, norm in enumerate(self.norms):
            handles.append(norm.register_forward_hook(self._keep_input(i)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _keep_output(self, i: int):  # noqa: ANN202 - a torch hook
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            self.outputs[i] = output

        return hook

    def _keep_input(self, i: int):  # noqa: ANN202 - a torch hook
        def hook(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> None:
            self.norm_inputs[i] = inputs[0]

        return hook


def feature_distance(features: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean absolute difference of each layer's activations, summed over layers: (N,)."""
    total = features[0].new_zeros(features[0].shape[0])
    for feature, reference in zip(features, references):
        total = total + (feature - reference).abs().flatten(1).mean(1)
    return total


def batch_norm_prior(inputs: Sequence[torch.Tensor], norms: Sequence[nn.modules.batchnorm._BatchNorm]) -> torch.Tensor:
    """DeepInversion's feature-statistics prior (Yin et al., 2020, eq. 4), a scalar: for every BN layer,
    ``|mean - running_mean|_2 + |var - running_var|_2`` of its input over the batch and positions."""
    total = inputs[0].new_zeros(())
    for x, norm in zip(inputs, norms):
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False) if x.shape[0] * math.prod(x.shape[2:]) > 1 else torch.zeros_like(mean)
        total = total + (mean - norm.running_mean).norm() + (var - norm.running_var).norm()
    return total


def warn_script_batch_norm(kind: str, count: int, hookable: int) -> None:
    """The classifier's batch-norm layers (``count`` of them) are inside TorchScript, whose layer inputs cannot be
    read, so DISC's batch-norm prior is off (or, with ``hookable`` plain BN layers elsewhere, leaves them out)."""
    effect = (
        f"DISC's batch-norm prior uses only the {_layers(hookable)} outside TorchScript"
        if hookable
        else "DISC's batch-norm prior is off (settings['bn_weight'] records 0.0)"
    )
    warnings.warn(
        f"the classifier is a {kind} TorchScript module with {_layers(count)}, but the inputs of layers "
        f"inside TorchScript cannot be read (forward hooks do not run in its compiled graph), so {effect}; "
        "explain the original nn.Module to use the prior, or pass bn_weight=0 to silence this",
        UserWarning,
        stacklevel=3,
    )


def _layers(count: int) -> str:
    return f"{count} batch-norm layer{'' if count == 1 else 's'}"


def check_hookable(layers: Sequence[str], modules: Sequence[nn.Module]) -> None:
    """Refuse feature layers inside TorchScript: their activations cannot be read (no forward hooks)."""
    for name, module in zip(layers, modules):
        if isinstance(module, torch.jit.ScriptModule):
            raise InputError(
                f"feature layer {name!r} is inside a {torchscript_kind(module)} TorchScript module, whose layer "
                "activations cannot be read (forward hooks do not run in its compiled graph); pass the original "
                "nn.Module as the classifier to preserve features, or leave feature_layers empty"
            )


def warn_no_batch_norm(model_name: str) -> None:
    """The batch-norm prior was asked for but the classifier has no BN layers: say so once."""
    warnings.warn(
        f"{model_name} has no batch-norm layers with running statistics, so the DeepInversion batch-norm "
        "prior cannot be used and is turned off; set bn_weight=0 to silence this, or explain a classifier "
        "with BatchNorm layers",
        UserWarning,
        stacklevel=3,
    )
