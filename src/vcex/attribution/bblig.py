"""BB-LIG: integrated gradients along a decoded latent path, with the black box's finite differences for gradients.

Sobieski & Biecek's public code (research note gcd-diffae-metrics.md section A4): from each image's reconstruction,
walk a GCD direction until the black box's probability of the image's own class falls below 0.01; the decoded path
x^1 (the reconstruction) .. x^m (the baseline) is quantised to 8 bits, and pixel i gets

    A_i = (x^1_i - x^m_i) * 1/(m-1) * sum_k [f(x^{k+1}) - f(x^k)] / (x^{k+1}_i - x^k_i)

(terms with a zero denominator are 0, channels summed), f the black box's log-odds of the image's class against the
goal class (for a binary classifier: its logit). The completeness error sum_i A_i - (f(x^1) - f(x^m)) is reported
per image. That estimator credits every pixel that moved with a whole step's change, so its maps add up to many
times the logit change; vcex's default, ``"path_sum"``, sums per-step attributions along the path instead,

    A_i = sum_k g_k,i * (x^k_i - x^{k+1}_i),   g_k = df_k * dx_k / |dx_k|^2   (dx_k = x^{k+1} - x^k, df_k likewise)

whose sum over pixels telescopes to f(x^1) - f(x^m): its completeness holds by construction (to float error), so
the meaningful check of a black-box map is its agreement with the white-box one. :func:`white_box_lig` puts true
gradients of f at x^k in place of g_k on the same path (its completeness error is the Riemann sum's, which shrinks
as the path gets more points); :func:`compare_attributions` compares the two maps (cosine, top-10% pixel overlap).

>>> gcd = GCD(black_box, vae).fit(train_images)
>>> direction = gcd.discover(source).direction("g0")
>>> maps = bb_lig(gcd, direction, images, source_class=0, goal_class=1)
>>> maps.relative_completeness_error.median()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vcex.checks import check_count
from vcex.errors import InputError
from vcex.explainers.gcd import GCD, TRANSFER_ALPHA_MAX
from vcex.models.classifiers import as_classifier, check_classifier_images
from vcex.models.state import evaluating

# the public code's constants (bblig/configs/sig.yaml, research note A4)
COARSE_STEPS = 128
PATH_STEPS = 128
BASELINE_PROB = 0.01  # the baseline is the first coarse point where the image's own class has probability < 0.01
FLIP_PROB = 0.5  # the first flipped point: the image's own class below one half
# "path_sum": per-step attributions summed along the path (complete by construction); "min_norm": the min-norm
# per-step gradient in the public code's endpoint form; "paper": the public code's df / dx_i
ESTIMATORS = ("path_sum", "min_norm", "paper")
WHITE_BOX_FORMS = ("path_sum", "paper")  # true gradients summed along the path, or in the public code's form
# where the path ends: "paper", the first point with the own class < 0.01 (none: no map); "first_flip", the first
# point with the own class < 0.5 (issue 29's "to the first flipped point"); "paper_or_flip", the paper's where the
# sweep reaches it, else the first flipped point
BASELINES = ("paper", "first_flip", "paper_or_flip")


@dataclass
class LatentPath:
    """Decoded latent paths from each image's reconstruction to its baseline.

    images: (N, m, C, H, W) 8-bit quantised path images (index 0 the reconstruction, m - 1 the baseline).
    origin, goal: (N,) the black box's class of the image and the class the path goes to.
    found: (N,) bool, a baseline was reached within the coarse search (else the path is empty: all zero).
    baseline_alpha: (N,) the alpha of the baseline (NaN where none), in the explainer's units.
    flip_baseline: (N,) bool, the path ends at the first flipped point (own class < 0.5) rather than below 0.01.
    queries_per_image: black-box images queried to find the baseline (the reconstruction and the coarse search).
    """

    images: torch.Tensor
    origin: torch.Tensor
    goal: torch.Tensor
    found: torch.Tensor
    baseline_alpha: torch.Tensor
    queries_per_image: int
    flip_baseline: torch.Tensor

    def baseline_counts(self) -> dict[str, int]:
        """How many paths end at each kind of baseline: below 0.01, at the first flip (< 0.5), none."""
        return {
            "below_0.01": int((self.found & ~self.flip_baseline).sum()),
            "first_flip": int((self.found & self.flip_baseline).sum()),
            "none": int((~self.found).sum()),
        }


@dataclass
class PathAttribution:
    """Attribution maps along latent paths (:func:`bb_lig`, :func:`white_box_lig`).

    maps: (N, H, W) per-pixel attributions (channels summed); zero where no baseline was found.
    logit_change: (N,) f(x^1) - f(x^m), the change the map should add up to.
    completeness_error: (N,) sum of the map minus ``logit_change``.
    found: (N,) bool, a baseline was found (the other rows count as failures).
    queries_per_image: black-box images queried per image (path search and path); 0 passes for white box.
    """

    maps: torch.Tensor
    logit_change: torch.Tensor
    completeness_error: torch.Tensor
    found: torch.Tensor
    queries_per_image: int

    @property
    def relative_completeness_error(self) -> torch.Tensor:
        """(N,) |completeness error| / |logit change|, NaN where no baseline was found."""
        relative = self.completeness_error.abs() / self.logit_change.abs().clamp_min(1e-12)
        return torch.where(self.found, relative, torch.nan)

    def summary(self) -> dict:
        relative = self.relative_completeness_error[self.found]
        return {
            "images": int(len(self.found)),
            "baselines_found": int(self.found.sum()),
            "relative_completeness_error_median": float(relative.median()) if len(relative) else None,
            "logit_change_median": float(self.logit_change[self.found].median()) if len(relative) else None,
            "queries_per_image": self.queries_per_image,
        }


def log_odds(logits: torch.Tensor, origin: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """f: logits (N, K) -> (N,) logit[origin] - logit[goal] (a binary classifier's logit of the origin class)."""
    rows = torch.arange(len(logits), device=logits.device)
    return logits[rows, origin] - logits[rows, goal]


def latent_path(
    explainer: GCD,
    direction: torch.Tensor,
    images: torch.Tensor,
    *,
    source_class: int,
    goal_class: int,
    coarse_steps: int = COARSE_STEPS,
    path_steps: int = PATH_STEPS,
    alpha_max: float = TRANSFER_ALPHA_MAX,
    baseline: str = "paper",
) -> LatentPath:
    """Each image's decoded path along ``direction`` (D,) from its reconstruction to the first coarse point (alpha in
    [0, alpha_max], ``coarse_steps`` points) where the black box gives its own class < 0.01, resampled at
    ``path_steps`` points. Images in ``source_class`` go along +d to ``goal_class``, images in ``goal_class`` along
    -d to ``source_class`` (as :func:`vcex.explainers.gcd.transfer_direction`), by the black box's class of their
    reconstruction (the path's start); images whose reconstruction is in another class are refused.
    ``baseline`` (one of BASELINES): ``"first_flip"`` ends at the first point below 0.5 instead, ``"paper_or_flip"``
    there only where the sweep never gets below 0.01.
    """
    if baseline not in BASELINES:
        raise InputError(f"unknown BB-LIG baseline {baseline!r}; use one of {', '.join(BASELINES)}")
    images = check_classifier_images(explainer.classifier, images)
    if len(images) == 0:
        raise InputError("BB-LIG needs at least one image, got an empty batch")
    coarse_steps, path_steps = check_count("coarse_steps", coarse_steps, 2), check_count("path_steps", path_steps, 2)
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten().to(explainer.device)
    if not bool(torch.isfinite(direction).all()) or float(direction.norm()) == 0:
        raise InputError("the direction must be a finite, non-zero vector")
    direction = direction / direction.norm()
    with evaluating(*explainer._models()), torch.no_grad():
        images = images.to(explainer.device)
        unit = explainer._active_unit() or explainer._spread(images)
        # the reconstruction and its stochastic code (a diffusion autoencoder's x_T), as the transfer moves from
        latents, reconstructions, codes = explainer.reconstruct(images)
        shape, flat = latents.shape[1:], latents.flatten(1)
        if flat.shape[1] != direction.numel():
            raise InputError(
                f"the direction has {direction.numel()} numbers, the latent model's latents {flat.shape[1]}; use a "
                "direction found with this latent model"
            )
        # the path starts at the reconstruction (the public code's x^1), so its class is the one the path leaves
        origin = explainer.query(reconstructions).argmax(1)
        outside = ((origin != source_class) & (origin != goal_class)).nonzero().flatten().tolist()
        if outside:
            raise InputError(
                f"the reconstructions of images {outside[:5]} are in neither the source class {source_class} nor the "
                f"goal class {goal_class}; BB-LIG walks from one to the other: pass only images of these two classes"
            )
        sign = torch.where(origin == goal_class, -1.0, 1.0)
        goal = torch.where(origin == goal_class, source_class, goal_class)
        count = len(images)
        step = (sign[:, None] * unit) * direction  # (N, D)
        coarse = torch.linspace(0, alpha_max, coarse_steps, device=explainer.device)
        coarse_latents = flat[:, None] + coarse[None, :, None] * step[:, None]
        rows = torch.arange(count, device=explainer.device)
        coarse_images = explainer._decode(
            coarse_latents.reshape(-1, flat.shape[1]), shape, codes, rows.repeat_interleave(coarse_steps)
        )
        probs = explainer.query(coarse_images).softmax(1)
        origin_prob = probs.view(count, coarse_steps, -1).gather(2, origin[:, None, None].expand(-1, coarse_steps, 1))
        below = origin_prob[..., 0] < (FLIP_PROB if baseline == "first_flip" else BASELINE_PROB)
        flip_baseline = torch.full((count,), baseline == "first_flip", device=explainer.device)
        if baseline == "paper_or_flip":
            flipped = origin_prob[..., 0] < FLIP_PROB
            flip_baseline = ~below.any(1) & flipped.any(1)
            below = torch.where(flip_baseline[:, None], flipped, below)
        found = below.any(1)
        flip_baseline &= found
        baseline_alpha = torch.where(found, coarse[below.float().argmax(1)], torch.nan)
        fractions = torch.linspace(0, 1, path_steps, device=explainer.device)
        alphas = torch.nan_to_num(baseline_alpha)[:, None] * fractions[None]  # (N, m); a zero path where none
        path_latents = flat[:, None] + alphas[..., None] * step[:, None]
        path = explainer._decode(
            path_latents.reshape(-1, flat.shape[1]), shape, codes, rows.repeat_interleave(path_steps)
        )
        # 8-bit like saved images: a pixel that does not change between two points has dx = 0 (the public code)
        path = (path * 255).round() / 255
    return LatentPath(
        images=path.view(count, path_steps, *images.shape[1:]).cpu(),
        origin=origin.cpu(),
        goal=goal.cpu(),
        found=found.cpu(),
        baseline_alpha=baseline_alpha.cpu(),
        queries_per_image=1 + coarse_steps,
        flip_baseline=flip_baseline.cpu(),
    )


def _path_attribution(
    path: LatentPath, slopes: Callable[[torch.Tensor, int], torch.Tensor], path_sum: bool
) -> torch.Tensor:
    """(N, H, W) maps summed over channels, ``slopes(images, i)`` -> (m - 1, C, H, W) the per-pixel slope of f on
    each step of image i's path ``images`` (m, C, H, W). ``path_sum``: sum_k slope_k * (x^k - x^{k+1}); else the
    public code's (x^1 - x^m) * mean_k slope_k."""
    maps = []
    for i in range(len(path.images)):  # one image's path at a time bounds memory: m images per step
        images = path.images[i]
        slope = slopes(images, i)
        if path_sum:
            maps.append((slope * (images[:-1] - images[1:])).sum((0, 1)))
        else:
            maps.append(((images[0] - images[-1]) * slope.mean(0)).sum(0))
    return torch.stack(maps) * path.found[:, None, None]


def bb_lig(
    explainer: GCD,
    direction: torch.Tensor,
    images: torch.Tensor,
    *,
    source_class: int,
    goal_class: int,
    path: LatentPath | None = None,
    estimator: str = "path_sum",
    baseline: str = "paper",
) -> tuple[PathAttribution, LatentPath]:
    """BB-LIG maps of ``images`` (N, C, H, W) along ``direction`` (D,): finite differences of the black box's
    log-odds between consecutive path images (research note A4). Returns the maps and the path (reuse it for
    :func:`white_box_lig` and the other estimators; ``baseline``, one of BASELINES, is used only to make a path).

    ``estimator``: how the steps' changes df_k become a map. ``"path_sum"`` (default): the per-step gradient
    estimate g_k = df_k * dx_k / |dx_k|^2 (the smallest gradient that changes f by df_k over the step), summed
    along the path as sum_k g_k * (x^k - x^{k+1}); each step adds exactly its df_k, so the map's completeness holds
    by construction and says nothing about its quality: compare it with :func:`white_box_lig` instead.
    ``"min_norm"``: the same g_k in the public code's form (x^1 - x^m) * mean_k g_k, complete only on a straight
    path. ``"paper"``: the public code's df_k / dx_k,i for every pixel that moved (each pixel is credited the whole
    change, so the maps add up to many times the logit change). All measured in docs/benchmarks/gcd.md."""
    if estimator not in ESTIMATORS:
        raise InputError(f"unknown BB-LIG estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")
    if path is None:
        path = latent_path(
            explainer, direction, images, source_class=source_class, goal_class=goal_class, baseline=baseline
        )
    count, steps = path.images.shape[:2]
    with evaluating(*explainer._models()):
        flat = path.images.reshape(-1, *path.images.shape[2:]).to(explainer.device)
        logits = explainer.query(flat).cpu().view(count, steps, -1)
    values = torch.stack(
        [log_odds(logits[i], path.origin[i].expand(steps), path.goal[i].expand(steps)) for i in range(count)]
    )

    def slopes(images: torch.Tensor, i: int) -> torch.Tensor:
        dx = images[1:] - images[:-1]
        df = (values[i, 1:] - values[i, :-1]).view(-1, 1, 1, 1)
        if estimator == "paper":  # df / dx_i per pixel: each pixel is credited the whole step's change
            return torch.where(dx != 0, df / torch.where(dx != 0, dx, 1.0), 0.0)
        # the smallest gradient whose step dx changes f by df: df * dx / |dx|^2 (0 for a step that changes no pixel)
        norm = dx.pow(2).flatten(1).sum(1).view(-1, 1, 1, 1)
        return torch.where(norm > 0, df * dx / norm.clamp_min(1e-30), 0.0)

    maps = _path_attribution(path, slopes, path_sum=estimator == "path_sum")
    change = torch.where(path.found, values[:, 0] - values[:, -1], 0.0)
    return (
        PathAttribution(maps, change, maps.sum((1, 2)) - change, path.found, path.queries_per_image + steps),
        path,
    )


def white_box_lig(
    explainer: GCD,
    path: LatentPath,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    form: str = "path_sum",
) -> PathAttribution:
    """The white-box variant on the same ``path``: true gradients of f at x^1 .. x^{m-1} in place of the finite
    differences. ``classifier``: a differentiable model of the same outputs (images -> logits). ``form`` (one of
    WHITE_BOX_FORMS): ``"path_sum"``, sum_k grad f(x^k) * (x^k - x^{k+1}) (a Riemann sum of the path integral:
    its completeness error shrinks as the path gets more points), or ``"paper"``, (x^1 - x^m) * mean_k grad f(x^k)
    (the public code with ``approx_grad=false``)."""
    if form not in WHITE_BOX_FORMS:
        raise InputError(f"unknown white-box LIG form {form!r}; use one of {', '.join(WHITE_BOX_FORMS)}")
    count, steps = path.images.shape[:2]
    values = torch.zeros(count, steps)
    model = as_classifier(classifier)

    def slopes(images: torch.Tensor, i: int) -> torch.Tensor:
        images = images.to(explainer.device)
        origin = path.origin[i].expand(steps).to(images.device)
        goal = path.goal[i].expand(steps).to(images.device)
        points = images[:-1].clone().requires_grad_(True)
        with torch.enable_grad():
            f = log_odds(model(points), origin[:-1], goal[:-1])
            (gradient,) = torch.autograd.grad(f.sum(), points)
        with torch.no_grad():
            values[i] = log_odds(model(images), origin, goal).cpu()
        return gradient.cpu()

    with evaluating(model):
        maps = _path_attribution(path, slopes, path_sum=form == "path_sum")
    change = torch.where(path.found, values[:, 0] - values[:, -1], 0.0)
    return PathAttribution(maps, change, maps.sum((1, 2)) - change, path.found, 0)


def compare_attributions(black_box: PathAttribution, white_box: PathAttribution, top: float = 0.1) -> dict:
    """How alike two attributions of the same paths are, per image and as medians over images with a baseline:
    cosine similarity of the maps, and the overlap of their ``top`` share of pixels by |attribution|."""
    found = black_box.found & white_box.found
    a, b = black_box.maps.flatten(1), white_box.maps.flatten(1)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    k = max(1, int(round(a.shape[1] * top)))
    top_a, top_b = a.abs().topk(k, dim=1).indices, b.abs().topk(k, dim=1).indices
    overlap = torch.tensor([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(top_a, top_b)])
    median = lambda values: float(values[found].median()) if bool(found.any()) else None  # noqa: E731
    return {
        "images": int(found.sum()),
        "cosine": cosine,
        "top_overlap": overlap,
        "cosine_median": median(cosine),
        "top_overlap_median": median(overlap),
        "black_box_completeness_median": median(black_box.relative_completeness_error),
        "white_box_completeness_median": median(white_box.relative_completeness_error),
    }
