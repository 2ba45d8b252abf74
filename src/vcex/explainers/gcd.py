"""Global Counterfactual Directions (Sobieski & Biecek, ECCV 2024): directions in a latent space found from a
black box's answers alone, through a proxy MLP fitted around one source image, and their transfer to a data set.

Constants follow the public code (research note gcd-diffae-metrics.md section A); where vcex departs from it
the comment says so.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from vcex.checks import check_count, check_positive_finite
from vcex.errors import InputError, ModelError
from vcex.explainers.base import Explainer, TargetSpec, ThresholdSpec
from vcex.explainers.result import CounterfactualResult
from vcex.explainers.thresholds import AUTO
from vcex.models.latent import LatentModel, UserLatentModel
from vcex.models.state import evaluating

# Sobieski & Biecek 2024, public code (research note A1.4): the proxy's hidden widths, loss weights and training
PROXY_HIDDEN = (256, 128, 64)
LOGIT_LOSS_WEIGHT, SIMILARITY_LOSS_WEIGHT = 1.0, 3.0
PROXY_LR, PROXY_BATCH, PROXY_MAX_EPOCHS, PROXY_PATIENCE = 1e-3, 128, 1024, 5
# (w_cls, w_sim) of the two g-directions: lambda = 0 and lambda = 20 (research note A2)
G_WEIGHTS = {"g0": (1.0, 0.0), "g20": (0.05, 1.0)}
LINE_STEPS, LINE_ALPHA_MAX = 16, 4.0  # the local line search (A1.5)
TRANSFER_STEPS, TRANSFER_ALPHA_MAX = 128, 3.0  # the global sweep (A3)
# how GCD.select_source picks the source (vcex; not in the public code), and how its record names each rule
_RULE_NAMES = {"flips": "flips", "closest": "closest within {t:g}", "fewest": "fewest changes within {t:g}"}
SELECTION_RULES = tuple(_RULE_NAMES)
# vcex: the early stop waits for this many optimiser steps. The public code's epoch is 32 batches (4096 samples);
# with 512 samples an epoch is 4 batches and its rule stopped MNIST proxies after 10-15 epochs at held-out R^2 ~0,
# against 0.95 after 400 epochs (1,600 steps; mnist-vae, 4 -> 9)
PROXY_MIN_STEPS = 1600
HELD_OUT = 0.2  # share of the samples the proxy is scored on, never trained on
MIN_PROXY_R2 = 0.5  # below this held-out R^2 of the black box's logits a proxy's directions are not used

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pyramid_distance(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over a 3-level average-pooled pyramid, images and references (N, C, H, W) in
    [0, 1] -> (N,) in [0, 1]: the default similarity of a GCD proxy where no feature extractor is given (coarse
    levels weigh shape changes over pixel noise; LPIPS weights cannot be downloaded here)."""
    total = images.new_zeros(images.shape[0])
    a, b = images, references
    for _ in range(3):
        total = total + (a - b).abs().flatten(1).mean(1)
        if min(a.shape[-2:]) < 4:
            break
        a, b = nn.functional.avg_pool2d(a, 2), nn.functional.avg_pool2d(b, 2)
    return total / 3


def feature_distance(features: Callable[[torch.Tensor], torch.Tensor]) -> Distance:
    """A perceptual distance from a feature extractor (e.g. an oracle's penultimate features): ``1 - cos`` of the
    features of images and references (N, C, H, W) -> (N,) in [0, 2]."""

    def distance(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        return 1 - nn.functional.cosine_similarity(features(images), features(references), dim=1)

    return distance


class ProxyEnsemble(nn.Module):
    """P independent proxy MLPs evaluated together: inputs (P, S, D) -> outputs (P, S, K + 1).

    Each is D -> 256 -> 128 -> 64 -> K + 1 with sigmoid activations (the public code's proxy); outputs [..., :K]
    are the (standardised) logits of the black box, output K is the similarity head (sigmoid, a distance in
    [0, 1] after scaling)."""

    def __init__(self, count: int, inputs: int, outputs: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        dims = (inputs, *PROXY_HIDDEN, outputs)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(count, a, b, generator=generator) / math.sqrt(a)) for a, b in zip(dims, dims[1:])
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(count, 1, b)) for b in dims[1:])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = inputs
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            hidden = torch.baddbmm(bias, hidden, weight)
            if i < last:
                hidden = torch.sigmoid(hidden)
        return hidden


@dataclass
class ProxyFit:
    """How well each of P proxies fits its held-out samples.

    logit_r2: (P,) 1 - SSE / SST of the black box's logits (all classes); NaN where they do not vary.
    distance_rmse: (P,) root mean squared error of the similarity head (distances scaled to [0, 1]).
    epochs: (P,) epochs trained before the early stop.
    usable: (P,) bool, logit_r2 >= the explainer's ``min_proxy_r2``.
    """

    logit_r2: torch.Tensor
    distance_rmse: torch.Tensor
    epochs: torch.Tensor
    usable: torch.Tensor


@dataclass
class Proxies:
    """Fitted proxies and what turns their outputs back into the black box's units: logits = out * std + mean."""

    network: ProxyEnsemble
    logit_mean: torch.Tensor  # (P, 1, K)
    logit_std: torch.Tensor  # (P, 1, K)
    fit: ProxyFit

    def logits_and_distance(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (P, S, D) centred and scaled latents -> logits (P, S, K) and scaled distance (P, S)."""
        out = self.network(inputs)
        return out[..., :-1] * self.logit_std + self.logit_mean, torch.sigmoid(out[..., -1])


def fit_proxies(
    inputs: torch.Tensor,
    logits: torch.Tensor,
    distances: torch.Tensor,
    *,
    min_r2: float = MIN_PROXY_R2,
    max_epochs: int = PROXY_MAX_EPOCHS,
    seed: int = 0,
) -> Proxies:
    """Fit P proxies at once, each on its own samples, with the public code's recipe (AdamW, lr 1e-3, batch 128,
    loss 1 * MSE(logits) + 3 * MSE(similarity), early stop when the held-out loss exceeds the mean of the last 5),
    the early stop armed after ``PROXY_MIN_STEPS`` optimiser steps; logits are standardised per proxy for the fit.

    Args:
        inputs: (P, S, D) centred latents (z - z_source) in the explainer's units.
        logits: (P, S, K) the black box's logits on their decodes.
        distances: (P, S) their distance to the source, scaled to [0, 1].
    Returns:
        the proxies; each one's weights are those of its stopping epoch.
    """
    count, samples, dim = inputs.shape
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(samples, generator=generator)
    held = max(1, int(round(samples * HELD_OUT)))
    train_rows, held_rows = order[held:], order[:held]
    if len(train_rows) < 2:
        raise InputError(f"a GCD proxy needs at least 3 samples per source image, got {samples}")
    mean = logits[:, train_rows].mean(1, keepdim=True)
    std = logits[:, train_rows].std(1, keepdim=True).clamp_min(1e-6)
    targets = torch.cat([(logits - mean) / std, distances[..., None]], dim=2).to(inputs.dtype)
    network = ProxyEnsemble(count, dim, logits.shape[2] + 1, generator).to(inputs.device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=PROXY_LR)
    weights = torch.tensor([LOGIT_LOSS_WEIGHT] * logits.shape[2] + [SIMILARITY_LOSS_WEIGHT], device=inputs.device)

    def losses(rows: torch.Tensor) -> torch.Tensor:
        out = network(inputs[:, rows])
        out = torch.cat([out[..., :-1], torch.sigmoid(out[..., -1:])], dim=2)
        return ((out - targets[:, rows]).pow(2).mean(1) * weights).sum(1) / weights.sum()  # (P,)

    min_epochs = math.ceil(PROXY_MIN_STEPS / math.ceil(len(train_rows) / PROXY_BATCH))
    history: list[torch.Tensor] = []
    stopped = torch.zeros(count, dtype=torch.bool, device=inputs.device)
    epochs = torch.full((count,), max_epochs, dtype=torch.long)
    final = [p.detach().clone() for p in network.parameters()]
    for epoch in range(max_epochs):
        for rows in train_rows[torch.randperm(len(train_rows), generator=generator)].split(PROXY_BATCH):
            optimizer.zero_grad(set_to_none=True)
            losses(rows).sum().backward()  # the proxies are independent: the sum's gradient is each one's own
            optimizer.step()
        with torch.no_grad():
            held_loss = losses(held_rows)
            stop = ~stopped
            if len(history) >= max(PROXY_PATIENCE, min_epochs):
                stop &= held_loss > torch.stack(history[-PROXY_PATIENCE:]).mean(0)
            else:
                stop &= False
            if epoch == max_epochs - 1:
                stop = ~stopped
            for kept, current in zip(final, network.parameters()):
                kept[stop] = current[stop]
            epochs[stop.cpu()] = epoch + 1
            stopped |= stop
            history.append(held_loss)
        if bool(stopped.all()):
            break
    with torch.no_grad():
        for kept, current in zip(final, network.parameters()):
            current.copy_(kept)
        out = network(inputs[:, held_rows])
        predicted = out[..., :-1] * std + mean
        actual = logits[:, held_rows]
        sse = (predicted - actual).pow(2).sum((1, 2))
        sst = (actual - actual.mean(1, keepdim=True)).pow(2).sum((1, 2))
        r2 = torch.where(sst > 1e-8 * actual.numel() / count, 1 - sse / sst.clamp_min(1e-12), torch.nan)
        distance_rmse = (torch.sigmoid(out[..., -1]) - distances[:, held_rows]).pow(2).mean(1).sqrt()
    network.requires_grad_(False)
    fit = ProxyFit(r2.cpu(), distance_rmse.cpu(), epochs, (r2 >= min_r2).cpu())  # NaN compares False
    return Proxies(network, mean, std, fit)


def proxy_directions(
    proxies: Proxies,
    origin: torch.Tensor,
    goal: torch.Tensor,
    h_directions: int,
    average_at: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The g- and h-directions of P proxies at their centre (input 0), in the proxies' input units.

    The score the directions raise is the proxy's margin ``logit[goal] - logit[origin]`` (for a binary classifier
    the public code's ``s * logit``, with its sign turned so a step ``+alpha * d`` moves towards the flip).

    Args:
        origin, goal: (P,) the class each source image is in and the class to reach.
        h_directions: how many top Hessian eigenvectors to keep.
        average_at: (P, S, D) or None: the g-directions from the gradients averaged over these inputs (the
            source's neighbourhood) instead of the gradient at the centre; the h-directions stay at the centre.
    Returns:
        ``{"g0": (P, D), "g20": (P, D), "h": (P, k, D), "h_eigenvalues": (P, k)}``, unit vectors.
    """
    count = origin.shape[0]
    dim = proxies.network.weights[0].shape[1]
    rows = torch.arange(count, device=origin.device)

    def scores(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # inputs (P, D) -> margin, distance (P,)
        logits, distance = proxies.logits_and_distance(inputs[:, None])
        logits = logits[:, 0]
        return logits[rows, goal] - logits[rows, origin], distance[:, 0]

    centre = torch.zeros(count, dim, device=origin.device, requires_grad=True)
    with torch.enable_grad():
        margin, distance = scores(centre)
        margin_grad = torch.autograd.grad(margin.sum(), centre, create_graph=True)[0]
        distance_grad = torch.autograd.grad(distance.sum(), centre, retain_graph=True)[0]
        g_margin, g_distance = margin_grad.detach(), distance_grad
        if average_at is not None:
            points = average_at.detach().clone().requires_grad_(True)
            logits, point_distance = proxies.logits_and_distance(points)
            point_margin = logits[rows, :, goal] - logits[rows, :, origin]  # (P, S)
            g_margin = torch.autograd.grad(point_margin.sum(), points, retain_graph=True)[0].mean(1)
            g_distance = torch.autograd.grad(point_distance.sum(), points)[0].mean(1)
        directions: dict[str, torch.Tensor] = {}
        for name, (w_cls, w_sim) in G_WEIGHTS.items():
            # raise the margin, lower the distance to the source (the public code descends w_cls*s*f + w_sim*lpips)
            directions[name] = nn.functional.normalize(w_cls * g_margin - w_sim * g_distance, dim=1).detach()
        k = min(h_directions, dim)
        if k > 0:
            # the Hessian of the margin, one row per basis vector, all P proxies at once (D double-backward passes)
            hessian = torch.stack(
                [torch.autograd.grad(margin_grad[:, j].sum(), centre, retain_graph=True)[0] for j in range(dim)], 1
            )
    if k > 0:
        hessian = (hessian + hessian.transpose(1, 2)) / 2  # symmetric up to rounding: eigh is exact where eig is not
        eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
        top = eigenvalues.abs().topk(k, dim=1).indices  # largest |lambda| first (the public code's order)
        values = eigenvalues.gather(1, top)
        vectors = eigenvectors.transpose(1, 2).gather(1, top[..., None].expand(-1, -1, dim))
        # an eigenvector's sign is arbitrary: vcex points each one up the margin's gradient (the public code negates
        # those of positive eigenvalues and searches one side)
        sign = torch.where((vectors * margin_grad.detach()[:, None]).sum(2) < 0, -1.0, 1.0)
        directions["h"] = vectors * sign[..., None]
        directions["h_eigenvalues"] = values
    else:
        directions["h"] = torch.zeros(count, 0, dim, device=origin.device)
        directions["h_eigenvalues"] = torch.zeros(count, 0, device=origin.device)
    return directions


@dataclass
class Discovery:
    """What GCD found around P source images (the latest :meth:`GCD.explain` or :meth:`GCD.discover`).

    directions: (P, 2 + k, D) unit directions in the flattened latent: g (lambda 0), g (lambda 20), h_1..h_k.
    direction_names: their names, e.g. ``("g0", "g20", "h1", ...)``.
    h_eigenvalues: (P, k) the proxy Hessian's eigenvalues of the h-directions.
    origin, goal: (P,) the black box's class of each source and the class its directions aim for.
    fit: the proxies' held-out fit; where ``fit.usable`` is False the directions are not used.
    unit: the latent length that alpha 1 and sampling radius 1 stand for.
    queries: (P,) black-box images queried per source (samples, line search, the source and its reconstruction).
    """

    directions: torch.Tensor
    direction_names: tuple[str, ...]
    h_eigenvalues: torch.Tensor
    origin: torch.Tensor
    goal: torch.Tensor
    fit: ProxyFit
    unit: float
    queries: torch.Tensor
    settings: dict = field(default_factory=dict)

    def direction(self, name: str = "g0", source: int = 0) -> torch.Tensor:
        """One direction (D,) by name, of source ``source``."""
        if name not in self.direction_names:
            raise InputError(f"unknown direction {name!r}; this discovery has {', '.join(self.direction_names)}")
        return self.directions[source, self.direction_names.index(name)]

    def take(self, source: int) -> Discovery:
        """The discovery of source ``source`` alone (P = 1)."""
        rows = slice(source, source + 1)
        fit = ProxyFit(*(getattr(self.fit, n)[rows] for n in ProxyFit.__dataclass_fields__))
        return Discovery(
            directions=self.directions[rows],
            direction_names=self.direction_names,
            h_eigenvalues=self.h_eigenvalues[rows],
            origin=self.origin[rows],
            goal=self.goal[rows],
            fit=fit,
            unit=self.unit,
            queries=self.queries[rows],
            settings=dict(self.settings),
        )


class GCD(Explainer):
    """Global Counterfactual Directions (Sobieski & Biecek, ECCV 2024): black-box counterfactuals from a proxy.

    Per source image x (all images of a chunk at once): z = encode(x); sample ``samples`` latents
    z + r * unit * u (u a random unit vector, r ~ U[0, radius]), decode them, label each with the black box's
    logits and its distance to the reconstruction of x (``distance``), fit a proxy MLP (logits + similarity heads)
    on 80% and score it on 20%; its g-directions (normalised gradient of the target margin, lambda 0 and 20) and
    h-directions (top-|eigenvalue| eigenvectors of its Hessian) are searched with ``16`` steps alpha in
    (0, 4] * unit each; the counterfactual is the closest (by ``distance``) decode the black box puts in the target
    class, else the one with the highest target probability (not a success). A proxy whose held-out R^2 of the logits
    is under ``min_proxy_r2`` is reported (a warning, :attr:`discovery`) and its image's counterfactual is its
    reconstruction, not a success. Only the black box's outputs are used: no gradient of the classifier.

    Args:
        classifier: the black box: any callable images (N, C, H, W) in [0, 1] -> logits (N, K); its ``queries``
            counter, where it has one, is read before and after.
        latent_model: any latent model (the VAE's z, the style generator's W, ...).
        samples: perturbed latents per source image (the public code: 4096 per outer iteration, 50 iterations).
        radius: the largest sampling radius, in ``unit``s.
        h_directions: Hessian eigenvectors to keep (the public code: 30 at 128 px, 6 at 256 px).
        g_average_radius: 0 (the public code): the g-directions are the proxy's gradient at the source; else the
            proxy's gradients averaged over the samples within this radius (in ``unit``s, at most ``radius``, where
            the proxy was fitted), a direction of the source's neighbourhood rather than of one point.
        unit: the latent length alpha 1 stands for; ``"auto"``: the root mean square over latent coordinates of
            the spread of the encodings (of the images given to :meth:`fit`, else of each ``explain`` call).
        distance: images, references (N, C, H, W) -> (N,); default :func:`pyramid_distance`.
        min_proxy_r2: the held-out R^2 a proxy needs for its directions to be used.
        decode_steps: the DDIM steps of a diffusion autoencoder's decode and inversion (None: the model's default);
            only for a latent model whose ``decode`` takes ``steps``.
        seed: seeds the sampling and the proxies' initialisation.

    A latent model with a stochastic code (``encode_stochastic(images, latents, steps)`` and
    ``decode(latents, x_T=..., steps=...)``: a diffusion autoencoder) is used as published: every latent moved around
    an image (samples, line search, transfer sweep, BB-LIG path) is decoded from that image's own inverted x_T.

    Example:
        >>> gcd = GCD(black_box, vae, threshold=0.5)
        >>> result = gcd.explain(images, target="flip")
        >>> direction = gcd.discovery.direction("g0")
        >>> transfer = gcd.transfer(direction, test_images, source_class=0, goal_class=1)
    """

    name = "gcd"
    needs_gradients = False
    needs_latent_model = True

    def __init__(
        self,
        classifier: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        latent_model: LatentModel,
        *,
        threshold: ThresholdSpec = AUTO,
        samples: int = 512,
        radius: float = 1.0,
        h_directions: int = 3,
        g_average_radius: float = 0.0,
        unit: float | str = "auto",
        distance: Distance | None = None,
        min_proxy_r2: float = MIN_PROXY_R2,
        max_epochs: int = PROXY_MAX_EPOCHS,
        decode_steps: int | None = None,
        seed: int = 0,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        self.black_box = classifier
        super().__init__(
            classifier, latent_model, threshold=threshold, batch_size=batch_size, device=device, progress=progress
        )
        self.samples = check_count("samples", samples, 3)
        self.radius = check_positive_finite("radius", radius)
        self.h_directions = check_count("h_directions", h_directions, 0)
        self.g_average_radius = float(g_average_radius)
        if not 0 <= self.g_average_radius <= self.radius:  # the proxy is fitted within radius only (NaN fails too)
            raise InputError(
                f"g_average_radius must be in [0, radius = {self.radius:g}] (the proxy knows the black box within "
                f"radius only), got {g_average_radius}"
            )
        if unit != "auto":
            unit = check_positive_finite("unit", unit)
        self.unit: float | str = unit
        self._fitted_unit: float | None = None
        self._call_unit: float | None = None
        self.distance = distance or pyramid_distance
        self.min_proxy_r2 = float(min_proxy_r2)
        self.max_epochs = check_count("max_epochs", max_epochs, 1)
        # a user's model behind vcex's wrapper: its own decode's signature tells (the wrapper passes options on)
        user = isinstance(self.latent_model, UserLatentModel)
        decode_parameters = _parameters(self.latent_model.wrapped.decode if user else self.latent_model.decode)
        # the stochastic-code hook: a diffusion autoencoder's x_T, inverted per image (DiffAE; GCD's public code)
        self.stochastic = bool(
            callable(getattr(self.latent_model, "encode_stochastic", None)) and "x_T" in decode_parameters
        )
        if decode_steps is not None:
            decode_steps = check_count("decode_steps", decode_steps, 1)
            if "steps" not in decode_parameters:
                raise InputError(
                    f"decode_steps={decode_steps} is for a latent model whose decode takes steps (a diffusion "
                    f"autoencoder); {type(self.latent_model).__name__}.decode does not: drop decode_steps"
                )
        self.decode_steps: int | None = decode_steps
        self.seed = int(seed)
        self.discovery: Discovery | None = None
        self._chunk_start = True  # the next chunk starts a new discovery (set by each explain call)

    def settings(self) -> dict:
        return {
            **super().settings(),
            "samples": self.samples,
            "radius": self.radius,
            "h_directions": self.h_directions,
            "g_average_radius": self.g_average_radius,
            "unit": self.unit if self._active_unit() is None else self._active_unit(),
            "min_proxy_r2": self.min_proxy_r2,
            "max_epochs": self.max_epochs,
            "seed": self.seed,
            # only where there is a stochastic code, so the other backends' records stay as they were
            **(
                {"stochastic_code": "each image's own (encode_stochastic)", "decode_steps": self.decode_steps}
                if self.stochastic
                else {}
            ),
        }

    # --- units ---------------------------------------------------------------------------------------------------

    def fit(self, images: torch.Tensor, *, encoder: LatentModel | None = None) -> GCD:
        """Measure ``unit`` on ``images`` (N, C, H, W) (e.g. training images) when it is ``"auto"``.

        ``encoder``: measure it on this model's encodings of the same latent space instead of the latent model's,
        e.g. the plain encoder behind a :class:`~vcex.models.refined.RefinedEncoder` (inverting 1,000 training faces
        would take ~13 minutes on one CPU thread; the refined and plain W spreads differ by ~2% on faces)."""
        models = self._models() if encoder is None else (*self._models(), encoder)
        with evaluating(*models), torch.no_grad():
            self._fitted_unit = self._spread(images.to(self.device), encoder)
        return self

    def _spread(self, images: torch.Tensor, encoder: LatentModel | None = None) -> float:
        """The RMS spread per coordinate of ``images``' latents (by ``encoder`` if given, else the latent model)."""
        encode = (encoder or self.latent_model).encode
        latents = torch.cat([encode(c).flatten(1) for c in images.split(self.batch_size)])
        if len(latents) < 2:
            return float(latents.abs().mean().clamp_min(1e-6))  # one image: its own scale, all there is
        return float(latents.var(0).mean().sqrt().clamp_min(1e-6))

    def _active_unit(self) -> float | None:
        if isinstance(self.unit, float):
            return self.unit
        return self._fitted_unit if self._fitted_unit is not None else self._call_unit

    def _prepare(self, images: torch.Tensor) -> None:
        if self.unit == "auto" and self._fitted_unit is None:
            self._call_unit = self._spread(images)

    # --- the black box -------------------------------------------------------------------------------------------

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """The black box's logits (N, K) for images (N, C, H, W), in chunks of ``batch_size``; every chunk is
        checked (shape, finite), as a black box may fail on some inputs only."""
        outputs = []
        with torch.no_grad():
            for chunk in images.split(self.batch_size):
                logits = self.classifier(chunk)
                if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(chunk):
                    got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise ModelError(
                        f"the black box must return logits of shape (N, classes) = ({len(chunk)}, K), got {got}"
                    )
                if outputs and logits.shape[1] != outputs[0].shape[1]:
                    raise ModelError(
                        f"the black box returned {outputs[0].shape[1]} classes, then {logits.shape[1]}; it must "
                        "return the same classes for every image"
                    )
                if not bool(torch.isfinite(logits).all()):
                    raise ModelError(
                        "the black box returned NaN or inf logits on decoded latents; check it on images in [0, 1] "
                        "(or lower radius / alpha so the decodes stay like data)"
                    )
                outputs.append(logits.float())
        return torch.cat(outputs)

    def _step_options(self) -> dict:
        return {} if self.decode_steps is None else {"steps": self.decode_steps}

    def stochastic_codes(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor | None:
        """Each image's stochastic code (N, ...) (``encode_stochastic``: a diffusion autoencoder's DDIM-inverted
        x_T) given its latents (N, ...), in chunks of ``batch_size``; None for a latent model without one."""
        if not self.stochastic:
            return None
        with torch.no_grad():
            return torch.cat(
                [
                    self.latent_model.encode_stochastic(chunk, chunk_latents, **self._step_options())
                    for chunk, chunk_latents in zip(images.split(self.batch_size), latents.split(self.batch_size))
                ]
            )

    def _decode(
        self,
        flat: torch.Tensor,
        latent_shape: torch.Size,
        codes: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images (M, C, H, W) of flat latents (M, D), decoded in chunks of ``batch_size``, clamped to the range.

        ``codes`` (N, ...) from :meth:`stochastic_codes`: latent m is decoded from ``codes[rows[m]]`` (``rows`` (M,)
        default ``0..M-1``), the stochastic code of the image it was moved from; None: the model's own decode."""
        low, high = self.classifier.value_range
        if codes is not None and rows is None:
            rows = torch.arange(len(flat), device=flat.device)
        parts = []
        with torch.no_grad():
            for start in range(0, max(len(flat), 1), self.batch_size):  # an empty batch: as the model decodes one
                chunk = flat[start : start + self.batch_size].view(-1, *latent_shape)
                if codes is None:
                    decoded = self.latent_model.decode(chunk)
                else:
                    code = codes[rows[start : start + self.batch_size]]
                    decoded = self.latent_model.decode(chunk, x_T=code, **self._step_options())
                parts.append(decoded.clamp(low, high))
        return torch.cat(parts)

    def reconstruct(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``images`` (N, C, H, W) -> their latents (N, ...), reconstructions (N, C, H, W) and stochastic codes
        (None without): what discovery, transfer and BB-LIG move from. Checks the decodes' shape once."""
        images = images.to(self.device)
        with evaluating(*self._models()), torch.no_grad():
            latents = self.latent_model.encode(images)
            codes = self.stochastic_codes(images, latents)
            first = self.batch_size
            if codes is None:  # the first chunk through the base's edge check of the decodes' shape
                head = self._decode_checked(latents[:first], images[:first]).clamp(*self.classifier.value_range)
                tail = self._decode(latents[first:].flatten(1), latents.shape[1:]) if len(images) > first else head[:0]
                reconstructions = torch.cat([head, tail])
            else:
                reconstructions = self._decode(latents.flatten(1), latents.shape[1:], codes)
        return latents, reconstructions, codes

    def _label(
        self,
        flat: torch.Tensor,
        latent_shape: torch.Size,
        references: torch.Tensor,
        rows: torch.Tensor,
        codes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode flat latents (M, D) (from ``codes[rows]`` where given), query the black box and measure each
        decode's distance to its reference ``references[rows]``, in chunks (no more than ``batch_size`` images held
        at once): logits (M, K) and distances (M,)."""
        logits, distances = [], []
        for chunk, chunk_rows in zip(flat.split(self.batch_size), rows.split(self.batch_size)):
            images = self._decode(chunk, latent_shape, codes, chunk_rows)
            logits.append(self.query(images))
            with torch.no_grad():
                distances.append(self.distance(images, references[chunk_rows]).float())
        return torch.cat(logits), torch.cat(distances)

    # --- discovery -----------------------------------------------------------------------------------------------

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        if lower:
            raise InputError("GCD raises a target class; to lower class k, raise another class")
        count = len(images)
        unit = self._active_unit()
        latents, reconstructions, codes = self.reconstruct(images)
        latent_shape = latents.shape[1:]
        flat = latents.flatten(1)
        with torch.no_grad():
            origin = self.query(images).argmax(1)
            reconstruction_probs = self.query(reconstructions).softmax(1)
        # an image the black box already puts in the target class (the base refuses that for the original, yet a
        # caller may pass one whose prediction is ambiguous): aim from its reconstruction's class instead
        origin = torch.where(origin == target, reconstruction_probs.argmax(1), origin)
        dim = flat.shape[1]
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        # z + r * u: u uniform on the unit sphere, r ~ U[0, radius] (the public code's "uniform_norm")
        steps = nn.functional.normalize(torch.randn(count, self.samples, dim, generator=generator), dim=2)
        steps = (steps * torch.rand(count, self.samples, 1, generator=generator) * self.radius).to(self.device)
        rows = torch.arange(count, device=self.device).repeat_interleave(self.samples)
        sample_latents = (flat[:, None] + steps * unit).reshape(-1, dim)
        logits, distances = self._label(sample_latents, latent_shape, reconstructions, rows, codes)
        logits, distances = logits.view(count, self.samples, -1), distances.view(count, self.samples)
        scale = distances.amax(1, keepdim=True).clamp_min(1e-8)
        with torch.enable_grad():
            proxies = fit_proxies(
                steps, logits, distances / scale, min_r2=self.min_proxy_r2, max_epochs=self.max_epochs, seed=self.seed
            )
        # the samples scaled into the averaging ball: r ~ U[0, g_average_radius] like the samples' own radii
        average_at = steps * (self.g_average_radius / self.radius) if self.g_average_radius > 0 else None
        found = proxy_directions(proxies, origin, target, self.h_directions, average_at=average_at)
        directions = torch.cat([found["g0"][:, None], found["g20"][:, None], found["h"]], dim=1)  # (B, 2 + k, D)
        names = ("g0", "g20", *(f"h{i + 1}" for i in range(found["h"].shape[1])))
        # the local line search: every direction, LINE_STEPS alphas in (0, LINE_ALPHA_MAX] (public code: 1e-4 .. 4)
        alphas = torch.linspace(1e-4, LINE_ALPHA_MAX, LINE_STEPS, device=self.device)
        candidates = flat[:, None, None] + alphas[None, None, :, None] * unit * directions[:, :, None]
        per_image = candidates.shape[1] * LINE_STEPS
        rows = torch.arange(count, device=self.device).repeat_interleave(per_image)
        line_logits, line_distances = self._label(
            candidates.reshape(-1, dim), latent_shape, reconstructions, rows, codes
        )
        target_prob = (
            line_logits.softmax(1)
            .view(count, per_image, -1)
            .gather(2, target[:, None, None].expand(-1, per_image, 1))[..., 0]
        )
        line_distances = line_distances.view(count, per_image)
        reached = self.reached(target_prob, target[:, None].expand(-1, per_image))
        usable = proxies.fit.usable.to(self.device)
        reached &= usable[:, None]
        # the closest decode that reaches the target; where none does, the most confident one
        choice = torch.where(
            reached.any(1),
            torch.where(reached, line_distances, torch.inf).argmin(1),
            target_prob.argmax(1),
        )
        picked = torch.arange(count, device=self.device)
        cf_latents = candidates.reshape(count, per_image, dim)[picked, choice]
        cf_latents = torch.where(usable[:, None], cf_latents, flat)
        counterfactuals = self._decode(cf_latents, latent_shape, codes)
        success = reached[picked, choice]
        cf_prob = torch.where(usable, target_prob[picked, choice], reconstruction_probs[picked, target])
        # the base's check of the originals, the origin class, the reconstruction, the samples and the line search
        queries = 3 + self.samples + per_image
        if not bool(proxies.fit.usable.all()):
            bad = (~proxies.fit.usable).nonzero().flatten().tolist()
            warnings.warn(
                f"GCD: the proxy of {len(bad)} of {count} images did not fit the black box (held-out R^2 "
                f"{_r2_text(proxies.fit.logit_r2[bad])} < {self.min_proxy_r2}); their directions are not used and "
                "their counterfactuals are their reconstructions, marked failed: raise samples or lower radius",
                stacklevel=4,  # the caller of GCD.explain (through the base explain)
            )
        self._record(
            Discovery(
                directions=directions.cpu(),
                direction_names=names,
                h_eigenvalues=found["h_eigenvalues"].cpu(),
                origin=origin.cpu(),
                goal=target.cpu(),
                fit=proxies.fit,
                unit=float(unit),
                queries=torch.full((count,), queries, dtype=torch.long),
            )
        )
        return {
            "counterfactuals": counterfactuals,
            "target_prob": cf_prob,
            "success": success,
            "steps": torch.zeros_like(target),
            "forward_passes": torch.full_like(target, queries),
            "backward_passes": torch.zeros_like(target),
            "original_latents": latents,
            "counterfactual_latents": cf_latents.view_as(latents),
            "reconstructions": reconstructions,
        }

    def _record(self, part: Discovery) -> None:
        """Append one chunk's discovery to the call's (the first chunk of a call starts a new one)."""
        if self._chunk_start or self.discovery is None:
            self.discovery = part
            self._chunk_start = False
            return
        old = self.discovery
        joined = {
            name: torch.cat([getattr(old, name), getattr(part, name)])
            for name in ("directions", "h_eigenvalues", "origin", "goal", "queries")
        }
        fit = ProxyFit(*(torch.cat([getattr(old.fit, n), getattr(part.fit, n)]) for n in ProxyFit.__dataclass_fields__))
        self.discovery = Discovery(**joined, direction_names=old.direction_names, fit=fit, unit=old.unit)

    def explain(
        self, images: torch.Tensor, target: TargetSpec = "second", *, lower: bool = False
    ) -> CounterfactualResult:
        """Counterfactuals for ``images`` (N, C, H, W); the directions, proxy fits and queries of the call are in
        :attr:`discovery` afterwards. ``target``: as :meth:`Explainer.explain`."""
        self._chunk_start = True
        before = getattr(self.black_box, "queries", None)
        try:
            result = super().explain(images, target, lower=lower)
        finally:
            self._call_unit = None if self._fitted_unit is None or self.unit != "auto" else self._call_unit
        after = getattr(self.black_box, "queries", None)
        if self.discovery is not None:
            self.discovery.settings = {**result.settings, "unit": self.discovery.unit}
            if isinstance(before, int) and isinstance(after, int):
                self.discovery.settings["black_box_queries"] = after - before
        return result

    def discover(self, image: torch.Tensor, target: TargetSpec = "second") -> Discovery:
        """The directions of one source image (1, C, H, W) or (C, H, W): :meth:`explain` on it, its discovery."""
        if image.dim() == 3:
            image = image[None]
        self.explain(image, target)
        assert self.discovery is not None
        return self.discovery

    # --- transfer ------------------------------------------------------------------------------------------------

    def transfer(
        self,
        direction: torch.Tensor,
        images: torch.Tensor,
        *,
        source_class: int,
        goal_class: int,
        steps: int = TRANSFER_STEPS,
        alpha_max: float = TRANSFER_ALPHA_MAX,
        unit: float | None = None,
    ) -> Transfer:
        """Apply one direction to every image: see :func:`transfer_direction`."""
        return transfer_direction(
            self,
            direction,
            images,
            source_class=source_class,
            goal_class=goal_class,
            steps=steps,
            alpha_max=alpha_max,
            unit=unit,
        )

    def select_source(
        self,
        candidates: torch.Tensor | None,
        validation: torch.Tensor | TransferInputs,
        *,
        source_class: int,
        goal_class: int,
        limit: int | None = None,
        direction: str = "g0",
        rule: str = "flips",
        tolerance: float = 0.1,
        attribute_change: Callable[[CounterfactualResult], torch.Tensor] | None = None,
        steps: int = TRANSFER_STEPS,
        alpha_max: float = TRANSFER_ALPHA_MAX,
    ) -> SourceSelection:
        """Choose the source image by validation: discover directions from each candidate (N, C, H, W) that the black
        box and its reconstruction put in ``source_class`` (the first ``limit`` of them; all at once, batched), sweep
        each one's ``direction`` over the ``validation`` images (encoded once) and keep one source (ties: the earlier
        candidate) by ``rule``: ``"flips"``, the direction that flips the largest share of them; ``"closest"``, among
        the directions within ``tolerance`` of that share, the one whose flipped validation images moved least (the
        median of the explainer's ``distance`` from reconstruction to counterfactual); ``"fewest"``, among them the
        one whose flipped validation images change least in named attributes, by the mean of ``attribute_change``
        (flipped counterfactuals -> (M,) how much each changed, e.g. :func:`vcex.pipeline.descriptor_change`: the
        total change of the dataset's descriptors; given with another rule, it is recorded, not used). A black box's
        strongest direction often flips it through several cues at once (a smile and lipstick); "fewest" prefers
        the one that flips it with the least else changed. ``candidates`` None: the
        validation images themselves (their classes and reconstructions are not computed again). Validation images
        should be disjoint from the images the chosen direction is then reported on. Black-box outputs only, like
        discovery and transfer.

        Returns:
            the :class:`SourceSelection`; afterwards :attr:`discovery` is the chosen source's.
        """
        started = time.perf_counter()
        limit = _check_selection(limit, rule, tolerance, attribute_change)
        ready = validation if isinstance(validation, TransferInputs) else prepare_transfer(self, validation)
        eligible = ready.pair(source_class, goal_class)[0]  # checks the classes too
        candidates, faithful, checks = self._faithful_candidates(candidates, ready, source_class, limit)
        with warnings.catch_warnings():  # unusable proxies: one warning below instead of the explain's
            warnings.simplefilter("ignore")
            local = self.explain(candidates[faithful], target=goal_class)
        assert self.discovery is not None
        found = self.discovery
        unusable = int((~found.fit.usable).sum())
        if 0 < unusable < len(faithful):
            warnings.warn(
                f"GCD source selection: the proxies of {unusable} of {len(faithful)} candidates did not fit the black "
                f"box (held-out R^2 < {self.min_proxy_r2}); they are not candidates",
                stacklevel=2,
            )
        rates, moved, changed = self._score_directions(
            found, direction, ready, source_class, goal_class, attribute_change, steps, alpha_max
        )
        if bool(rates.isnan().all()):
            raise InputError(
                f"no candidate's proxy fitted the black box (held-out R^2 {_r2_text(found.fit.logit_r2)} < "
                f"{self.min_proxy_r2}); raise samples or lower radius"
            )
        best = choose_candidate(rates, moved, changed, rule=rule, tolerance=tolerance)
        queries = (
            checks
            + int(found.queries.sum())
            + (0 if isinstance(validation, TransferInputs) else 2 * len(ready))
            + int(eligible.sum()) * steps * int((~rates.isnan()).sum())
        )
        self.discovery = found.take(best)
        return SourceSelection(
            candidates=faithful.cpu(),
            flip_rates=rates,
            distances=moved,
            attribute_changes=changed,
            rule=_RULE_NAMES[rule].format(t=tolerance),
            proxy_r2=found.fit.logit_r2.cpu(),
            chosen=int(faithful[best]),
            discovery=self.discovery,
            discoveries=found,
            local=local.select(torch.tensor([best])),
            direction=direction,
            validation_images=len(ready),
            validation_eligible=int(eligible.sum()),
            queries=queries,
            seconds=time.perf_counter() - started,
        )

    def _faithful_candidates(
        self, candidates: torch.Tensor | None, ready: TransferInputs, source_class: int, limit: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(candidate images, indices of the first ``limit`` that the black box and its reconstruction both put in
        ``source_class``, black-box queries spent checking them); ``candidates`` None: the validation images, whose
        classes are known already."""
        from vcex.models.classifiers import check_classifier_images

        if candidates is None:
            candidates, own, rebuilt, checks = ready.images, ready.logits.argmax(1), ready.reconstruction_class, 0
        else:
            candidates = check_classifier_images(self.classifier, candidates).to(self.device)
            if len(candidates) == 0:
                raise InputError("select_source needs at least one candidate image, got an empty batch")
            with evaluating(*self._models()):
                own = self.query(candidates).argmax(1)
                rebuilt = self.query(self.reconstruct(candidates)[1]).argmax(1)
            checks = 2 * len(candidates)
        faithful = ((own == source_class) & (rebuilt == source_class)).nonzero().flatten()[:limit]
        if len(faithful) == 0:
            raise InputError(
                f"none of the {len(candidates)} candidates is an image the black box and its reconstruction put in "
                f"class {source_class}; give candidates of that class"
            )
        return candidates, faithful, checks

    def _score_directions(
        self,
        found: Discovery,
        direction: str,
        ready: TransferInputs,
        source_class: int,
        goal_class: int,
        attribute_change: Callable[[CounterfactualResult], torch.Tensor] | None,
        steps: int,
        alpha_max: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each candidate's ``direction`` swept over the validation images: (P,) flip rates, (P,) the median
        distance of the images it flips, (P,) their mean ``attribute_change``; NaN where the candidate's proxy is
        unusable, nothing flipped, or no ``attribute_change`` was given."""
        count = len(found.fit.usable)
        rates = torch.full((count,), torch.nan)
        moved = torch.full((count,), torch.nan)
        changed = torch.full((count,), torch.nan)
        for p in range(count):
            if not bool(found.fit.usable[p]):
                continue
            with warnings.catch_warnings():  # a direction that flips nothing scores 0: no warning per candidate
                warnings.simplefilter("ignore")
                transfer = self.transfer(
                    found.direction(direction, p),
                    ready,
                    source_class=source_class,
                    goal_class=goal_class,
                    steps=steps,
                    alpha_max=alpha_max,
                )
            rates[p] = transfer.flip_rate
            flipped = transfer.result.select(transfer.result.success)
            if len(flipped):
                with torch.no_grad():
                    moved[p] = self.distance(flipped.counterfactuals, flipped.reconstructions).float().median()
                    if attribute_change is not None:
                        changed[p] = _mean_change(attribute_change, flipped)
        return rates, moved, changed


def _check_selection(
    limit: int | None,
    rule: str,
    tolerance: float,
    attribute_change: Callable[[CounterfactualResult], torch.Tensor] | None,
) -> int | None:
    """:meth:`GCD.select_source`'s settings checked before any work; returns ``limit`` as an int (or None)."""
    if limit is not None:
        limit = check_count("limit", limit, 1)
    if rule not in SELECTION_RULES:
        raise InputError(f"unknown selection rule {rule!r}; use one of {', '.join(SELECTION_RULES)}")
    if not 0 <= tolerance <= 1:  # NaN fails too
        raise InputError(f"tolerance is a share of the validation images, in [0, 1], got {tolerance}")
    if rule == "fewest" and attribute_change is None:
        raise InputError(
            "rule 'fewest' needs attribute_change: a function from the flipped counterfactuals to how much each "
            "changed in named attributes (vcex.pipeline.descriptor_change(bench) for a dataset with descriptors)"
        )
    return limit


def choose_candidate(
    flip_rates: torch.Tensor,
    distances: torch.Tensor,
    attribute_changes: torch.Tensor,
    *,
    rule: str = "flips",
    tolerance: float = 0.1,
) -> int:
    """The position of the candidate :meth:`GCD.select_source` keeps under ``rule`` from its (P,) validation
    figures (NaN: not measured): ``"flips"`` the largest flip rate (ties: the earlier); ``"closest"`` /
    ``"fewest"``, among those within ``tolerance`` of it, the smallest distance / attribute change (none measured
    there: the largest flip rate). The same figures give every rule's choice (:meth:`SourceSelection.chosen_by`)."""
    if rule not in SELECTION_RULES:
        raise InputError(f"unknown selection rule {rule!r}; use one of {', '.join(SELECTION_RULES)}")
    scores = torch.where(flip_rates.isnan(), -1.0, flip_rates)
    best = int(scores.argmax())
    cost = {"closest": distances, "fewest": attribute_changes}.get(rule)
    if cost is not None:
        near = (scores >= scores[best] - tolerance - 1e-9) & ~cost.isnan()
        if bool(near.any()):
            best = int(torch.where(near, cost, torch.inf).argmin())
    return best


@dataclass
class SourceSelection:
    """Which source image GCD's directions come from, chosen by validation (:meth:`GCD.select_source`).

    candidates: (P,) indices into the candidate images of those tried (the black box and the reconstruction put them
        in the source class), in order.
    flip_rates: (P,) the share of eligible validation images each one's direction flips (NaN: proxy unusable).
    distances: (P,) the median distance from reconstruction to counterfactual of the validation images each one
        flips (NaN: none); attribute_changes: (P,) their mean attribute change (NaN: none flipped, or no
        ``attribute_change`` given); rule: how the source was chosen ("flips", "closest within t" or "fewest changes
        within t").
    proxy_r2: (P,) each proxy's held-out R^2.
    chosen: the index into the candidate images of the chosen source; discovery: its :class:`Discovery` (P = 1);
        discoveries: every candidate's (P rows, in the order of ``candidates``);
        local: its local counterfactual (the line search's, a :class:`CounterfactualResult` of one image). The
        candidates are discovered together, so a later discovery from the chosen image alone draws other samples.
    queries: black-box images queried in all (candidates' checks, discoveries, validation encodings and sweeps).
    """

    candidates: torch.Tensor
    flip_rates: torch.Tensor
    distances: torch.Tensor
    attribute_changes: torch.Tensor
    rule: str
    proxy_r2: torch.Tensor
    chosen: int
    discovery: Discovery
    discoveries: Discovery
    local: CounterfactualResult
    direction: str
    validation_images: int
    validation_eligible: int
    queries: int
    seconds: float

    def chosen_by(self, rule: str, tolerance: float = 0.1) -> int:
        """The candidate position (into ``candidates``, ``discoveries``) that ``rule`` would keep from the same
        validation figures (:func:`choose_candidate`); ``"fewest"`` needs the attribute changes to have been read."""
        if rule == "fewest" and bool(self.attribute_changes.isnan().all()):
            raise InputError("no attribute changes were read in this selection: pass attribute_change to select_source")
        return choose_candidate(self.flip_rates, self.distances, self.attribute_changes, rule=rule, tolerance=tolerance)

    def summary(self) -> dict:
        """The selection as a record: the candidates' validation flip rates and the chosen one's."""
        rates = self.flip_rates[~self.flip_rates.isnan()]
        return {
            "direction": self.direction,
            "candidates": self.candidates.tolist(),
            "rule": self.rule,
            "validation_flip_rates": [None if math.isnan(r) else round(r, 4) for r in self.flip_rates.tolist()],
            "validation_distances": [None if math.isnan(r) else round(r, 5) for r in self.distances.tolist()],
            "validation_attribute_changes": [
                None if math.isnan(r) else round(r, 4) for r in self.attribute_changes.tolist()
            ],
            "proxy_r2": [None if math.isnan(r) else round(r, 4) for r in self.proxy_r2.tolist()],
            "chosen": self.chosen,
            "chosen_validation_flip_rate": float(self.flip_rates[self.candidates.tolist().index(self.chosen)]),
            "median_validation_flip_rate": float(rates.median()) if len(rates) else None,
            "validation_images": self.validation_images,
            "validation_eligible": self.validation_eligible,
            "queries": self.queries,
            "seconds": round(self.seconds, 1),
        }


def _parameters(function: Callable) -> tuple[str, ...]:
    """The parameter names of ``function`` (none where Python cannot read its signature, e.g. a TorchScript method)."""
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return ()


def _mean_change(attribute_change: Callable[[CounterfactualResult], torch.Tensor], flipped: CounterfactualResult):
    """The mean of ``attribute_change(flipped)``, checked: one finite number per counterfactual."""
    values = attribute_change(flipped)
    if not isinstance(values, torch.Tensor) or values.shape != (len(flipped),):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise InputError(
            f"attribute_change must return one number per counterfactual, shape ({len(flipped)},), got {shape}"
        )
    if not bool(values.isfinite().all()):
        raise InputError("attribute_change returned NaN or infinite values; it must read every counterfactual")
    return values.float().mean()


def _r2_text(values: torch.Tensor) -> str:
    shown = ", ".join("nan" if math.isnan(v) else f"{v:.2f}" for v in values[:5].tolist())
    return shown + (", ..." if len(values) > 5 else "")


@dataclass
class Transfer:
    """One direction applied to a set of images with a sweep over alpha (:func:`transfer_direction`).

    alphas: (A,) the sweep, in units of ``unit`` along the direction (per image turned towards its goal).
    flipped: (N, A) bool, the black box's class is the image's goal class at that alpha.
    goal_prob: (N, A) the black box's probability of the image's goal class.
    alpha: (N,) the smallest-|alpha| flip (signed), NaN where none.
    eligible: (N,) bool, the black box puts the image and its reconstruction in the same class, the source or the
        goal (others are not counted: an image whose reconstruction already changes the class would "flip" at
        alpha ~0 because of the latent model, not of the direction).
    reconstruction_flips: images of the source or goal class whose reconstruction the black box reads otherwise.
    result: the counterfactuals as a :class:`CounterfactualResult` of the eligible images (success: flipped).
    queries_per_image: black-box images queried per image (the original and the sweep).
    """

    alphas: torch.Tensor
    flipped: torch.Tensor
    goal_prob: torch.Tensor
    alpha: torch.Tensor
    eligible: torch.Tensor
    result: CounterfactualResult
    queries_per_image: int
    unit: float
    reconstruction_flips: int = 0

    @property
    def flip_rate(self) -> float:
        """Share of eligible images that flip within the sweep."""
        chosen = self.alpha[self.eligible]
        return float((~chosen.isnan()).float().mean()) if len(chosen) else 0.0

    def flip_curve(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Flip rate against the largest |alpha| allowed: (|alpha| values (A/2,), share flipped by then (A/2,))."""
        magnitudes = self.alphas.abs().unique()
        chosen = self.alpha[self.eligible].abs()
        rate = torch.stack([(chosen <= m).float().mean() if len(chosen) else torch.tensor(0.0) for m in magnitudes])
        return magnitudes, rate

    def summary(self) -> dict:
        """Flip rate, the alpha distribution and the counts, for a record."""
        chosen = self.alpha[self.eligible]
        flipped = chosen[~chosen.isnan()]
        quantiles = flipped.abs().quantile(torch.tensor([0.1, 0.5, 0.9])).tolist() if len(flipped) else []
        return {
            "images": int(len(self.alpha)),
            "eligible": int(self.eligible.sum()),
            "reconstruction_flips": self.reconstruction_flips,
            "flip_rate": self.flip_rate,
            "flipped": int(len(flipped)),
            "flips_nothing": bool(len(flipped) == 0),
            "alpha_abs_quantiles_10_50_90": quantiles,
            "share_flipped_on_the_direction_side": float((flipped > 0).float().mean()) if len(flipped) else 0.0,
            "queries_per_image": self.queries_per_image,
            "unit": self.unit,
        }


@dataclass
class TransferInputs:
    """Images made ready for transfers: encoded, reconstructed and queried once, so several directions can be swept
    over them (:meth:`GCD.select_source`) without encoding (a diffusion autoencoder: inverting) them again.

    images: (N, C, H, W) on the explainer's device; latents (N, ...); reconstructions (N, C, H, W); codes: the
    stochastic codes (N, ...) or None; logits: (N, K) the black box's on the images; reconstruction_class: (N,)."""

    images: torch.Tensor
    latents: torch.Tensor
    reconstructions: torch.Tensor
    codes: torch.Tensor | None
    logits: torch.Tensor
    reconstruction_class: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def pair(self, source_class: int, goal_class: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N,) eligible (in the pair, the reconstruction in the image's class), sign (+1 from the source class, -1
        from the goal class: the public code's rule), each image's goal class and in_pair (the image in either
        class, whatever its reconstruction), after checking the classes."""
        classes = self.logits.shape[1]
        for name, value in (("source_class", source_class), ("goal_class", goal_class)):
            if not 0 <= value < classes:
                raise InputError(f"{name} {value} is out of range for a black box with {classes} classes")
        if source_class == goal_class:
            raise InputError("source_class and goal_class are the same class; a flip needs two")
        predicted = self.logits.argmax(1)
        in_pair = (predicted == source_class) | (predicted == goal_class)
        eligible = in_pair & (self.reconstruction_class == predicted)
        sign = torch.where(predicted == goal_class, -1.0, 1.0)
        goal = torch.where(predicted == goal_class, source_class, goal_class)
        return eligible, sign, goal, in_pair


def prepare_transfer(explainer: GCD, images: torch.Tensor) -> TransferInputs:
    """Check ``images`` (N, C, H, W) in the classifier's range, encode and reconstruct them and query the black box
    on both: the :class:`TransferInputs` that :func:`transfer_direction` sweeps."""
    from vcex.models.classifiers import check_classifier_images

    images = check_classifier_images(explainer.classifier, images)
    if len(images) == 0:
        raise InputError("transfer needs at least one image, got an empty batch")
    with evaluating(*explainer._models()):
        images = images.to(explainer.device)
        latents, reconstructions, codes = explainer.reconstruct(images)
        logits = explainer.query(images)
        reconstruction_class = explainer.query(reconstructions).argmax(1)
    return TransferInputs(images, latents, reconstructions, codes, logits, reconstruction_class)


def transfer_direction(
    explainer: GCD,
    direction: torch.Tensor,
    images: torch.Tensor | TransferInputs,
    *,
    source_class: int,
    goal_class: int,
    steps: int = TRANSFER_STEPS,
    alpha_max: float = TRANSFER_ALPHA_MAX,
    unit: float | None = None,
) -> Transfer:
    """One direction applied to every image (research note A3): decode ``z + alpha * unit * sign * d`` for ``steps``
    alphas in [-alpha_max, alpha_max] and keep per image the smallest |alpha| where the black box gives the goal.

    An image the black box puts in ``source_class`` aims for ``goal_class`` (sign +1); one in ``goal_class`` aims for
    ``source_class`` along ``-d`` (the public code's rule); images in any other class, or whose reconstruction the
    black box puts in another class than the image, are not eligible. The whole
    sweep is queried (as the public code renders it), in chunks of the explainer's ``batch_size``.

    Args:
        direction: (D,) a direction of the flattened latent (e.g. ``discovery.direction("g0")``).
        images: (N, C, H, W) in the classifier's range, or the :class:`TransferInputs` of :func:`prepare_transfer`.
        unit: the latent length of alpha 1 (default: the explainer's, measured on ``images`` if "auto" and unfitted).
    Returns:
        the :class:`Transfer`; a direction that flips nothing says so (``summary()["flips_nothing"]``, a warning).
    """
    steps = check_count("steps", steps, 2)
    alpha_max = check_positive_finite("alpha_max", alpha_max)
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten().to(explainer.device)
    if not bool(torch.isfinite(direction).all()) or float(direction.norm()) == 0:
        raise InputError("the direction must be a finite, non-zero vector")
    direction = direction / direction.norm()
    started = time.perf_counter()
    ready = images if isinstance(images, TransferInputs) else prepare_transfer(explainer, images)
    latent_shape, flat = ready.latents.shape[1:], ready.latents.flatten(1)
    if flat.shape[1] != direction.numel():
        raise InputError(
            f"the direction has {direction.numel()} numbers, the latent model's latents {flat.shape[1]}; use a "
            "direction found with this latent model"
        )
    eligible, sign, goal, in_pair = ready.pair(source_class, goal_class)
    with evaluating(*explainer._models()):
        if unit is None:
            unit = explainer._active_unit() or explainer._spread(ready.images)
        alphas = torch.linspace(-alpha_max, alpha_max, steps, device=explainer.device)
        swept = flat[:, None] + (sign[:, None, None] * alphas[None, :, None] * unit) * direction  # (N, A, D)
        # only eligible images are swept (on MNIST 4 -> 9, 8 of 10 images are in neither class)
        keep = eligible.nonzero().flatten()
        probs = _sweep_probs(explainer, swept, keep, latent_shape, ready.codes, ready.logits.shape[1])
        goal_prob = probs.gather(2, goal[:, None, None].expand(-1, steps, 1))[..., 0]
        flipped = (probs.argmax(2) == goal[:, None]) & eligible[:, None]
        # the smallest |alpha| that flips; ties (+a and -a) go to the direction's own side
        order = alphas.abs() - 1e-6 * alphas.sign()
        best = torch.where(flipped, order[None], torch.inf).argmin(1)
        any_flip = flipped.any(1)
        choice = torch.where(any_flip, best, goal_prob.argmax(1))
        alpha = torch.where(any_flip, alphas[choice], torch.nan)
        cf_latents = swept[torch.arange(len(ready), device=explainer.device), choice]
        # no eligible image: no decode (a diffusion autoencoder refuses an empty batch)
        counterfactuals = (
            explainer._decode(cf_latents[keep], latent_shape, ready.codes, keep) if len(keep) else ready.images[:0]
        )
    queries = 2 + steps  # the image, its reconstruction and the sweep (only the first two for ineligible images)
    result = CounterfactualResult(
        method="gcd-transfer",
        originals=ready.images[keep],
        counterfactuals=counterfactuals,
        target=goal[keep],
        original_class=ready.logits.argmax(1)[keep],
        original_prob=ready.logits.softmax(1)[keep, goal[keep]],
        target_prob=goal_prob[keep, choice[keep]],
        success=any_flip[keep],
        steps=torch.zeros_like(keep),
        forward_passes=torch.full_like(keep, queries),
        backward_passes=torch.zeros_like(keep),
        seconds=time.perf_counter() - started,
        threshold=0.5,
        original_latents=ready.latents[keep],
        counterfactual_latents=cf_latents[keep].view(-1, *latent_shape),
        reconstructions=ready.reconstructions[keep],
        settings={
            "source_class": int(source_class),
            "goal_class": int(goal_class),
            "steps": steps,
            "alpha_max": alpha_max,
            "unit": float(unit),
            "success": "the black box's top class is the goal",
        },
    )
    transfer = Transfer(
        alphas=alphas.cpu(),
        flipped=flipped.cpu(),
        goal_prob=goal_prob.cpu(),
        alpha=alpha.cpu(),
        eligible=eligible.cpu(),
        result=result.to("cpu"),
        queries_per_image=queries,
        unit=float(unit),
        reconstruction_flips=int((in_pair & ~eligible).sum()),
    )
    if transfer.summary()["flips_nothing"]:
        warnings.warn(
            f"GCD transfer: the direction flips none of the {int(eligible.sum())} eligible images within "
            f"|alpha| <= {alpha_max}; it is no counterfactual direction for them",
            stacklevel=2,
        )
    return transfer


def _sweep_probs(
    explainer: GCD,
    swept: torch.Tensor,
    keep: torch.Tensor,
    latent_shape: torch.Size,
    codes: torch.Tensor | None,
    classes: int,
) -> torch.Tensor:
    """The black box's probabilities (N, A, K) of the swept latents (N, A, D), decoded for the rows ``keep`` only
    (each from its own image's stochastic code; zeros elsewhere), in chunks of the explainer's ``batch_size``."""
    count, steps, dim = swept.shape
    probs = torch.zeros(count, steps, classes, device=swept.device)
    if len(keep):
        sweep_rows = keep.repeat_interleave(steps)
        sweep_logits = torch.cat(
            [
                explainer.query(explainer._decode(chunk, latent_shape, codes, chunk_rows))
                for chunk, chunk_rows in zip(
                    swept[keep].reshape(-1, dim).split(explainer.batch_size), sweep_rows.split(explainer.batch_size)
                )
            ]
        )
        probs[keep] = sweep_logits.softmax(1).view(len(keep), steps, classes)
    return probs
