"""The explainers the CLI, the demo and the benchmark offer, declared once: :data:`METHODS`.

Each :class:`Method` names its class, says in one line what it does, lists the options it takes (the
keywords of ``vcex.pipeline.build_explainer``; the CLI refuses any other before any work) and how it is built
from a :class:`BuildRequest` (models already placed on their device, the latent model already in its space).
A new method is its own file plus one entry here.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vcex.cache import cache_dir
from vcex.data import dataset_file_stem
from vcex.data.profiles import profile_for
from vcex.errors import InputError, VcexError
from vcex.explainers.amortized import AmortizedCounterfactual
from vcex.explainers.base import Explainer
from vcex.explainers.counterfactual_attack import CounterfactualAttack
from vcex.explainers.disc import DISC
from vcex.explainers.gcd import GCD
from vcex.explainers.linear_edit import LinearLatentEdit
from vcex.explainers.pixel_attack import PixelAttack
from vcex.explainers.stylespace_direction import StyleSpaceDirection

PAPER_PRESET_THRESHOLD = 0.75  # the paper preset's threshold for the methods without a paper() of their own
DISC_CONSISTENCY = "energy"  # the CLI's DISC manifold-consistency term: none | energy | duq (the zoo's DUQ model)


@dataclass
class BuildRequest:
    """What a method's builder gets: the models to explain with and the settings to apply.

    ``latent_model`` is the dataset's, already seen in the asked space (W, StyleSpace, whitened, refined) and on
    the explainer's device; ``train_images`` (N, C, H, W) in [0, 1] are the dataset's training images, for
    methods that fit something; ``options`` are the method's own keywords (only those it takes, None dropped).
    """

    classifier: torch.nn.Module
    latent_model: torch.nn.Module
    dataset: str
    train_images: torch.Tensor
    preset: str
    progress: bool
    options: dict


def accepts_black_box(explainer: type[Explainer]) -> bool:
    """Whether an explainer class explains a black box: its registry entry says so, or, for a class outside the
    registry, it declares ``needs_gradients = False`` (a property, decided per instance, counts as needing them)."""
    entries = [entry for entry in globals().get("METHODS", {}).values() if entry.explainer is explainer]
    if entries:
        return any(entry.black_box for entry in entries)
    return getattr(explainer, "needs_gradients", True) is False


@dataclass(frozen=True)
class Method:
    """One explainer as the CLI offers it (``vcex explain --method NAME``)."""

    name: str
    explainer: type[Explainer]
    description: str
    options: tuple[str, ...]
    build: Callable[[BuildRequest], Explainer]
    demo: bool = False  # whether ``vcex demo`` compares it
    # whether it explains a black-box classifier (vcex.models.blackbox: queries only, no gradients, no fit that
    # backpropagates through the classifier); None: from the class, whose needs_gradients is False exactly then
    black_box: bool | None = None
    # whether it needs a style generator's StyleSpace (the faces' latent model): a suite without one leaves it out
    needs_stylespace: bool = False

    def __post_init__(self) -> None:
        if self.black_box is None:
            object.__setattr__(self, "black_box", accepts_black_box(self.explainer))


def _build_attack(request: BuildRequest) -> Explainer:
    options = request.options
    attack_lr = profile_for(request.dataset).attack_lr
    if attack_lr is not None and request.preset != "paper":
        # faces: measured on 100 test faces (smiling), lr 0.1 / 0.03 / 0.01 gave MNAC 3.3 / 2.4 / 2.0 and oracle
        # agreement 0.93 / 0.95 / 0.96 at validity 1.0 with the previous generator, whose W coordinates had a
        # per-dimension spread of ~0.4 (the profile's attack_lr keeps 0.01's step relative to the current spread)
        options.setdefault("lr", attack_lr)
    make = CounterfactualAttack.paper if request.preset == "paper" else CounterfactualAttack
    return make(request.classifier, request.latent_model, progress=request.progress, **options)


def _paper_threshold(request: BuildRequest) -> dict:
    """The options with the paper preset's threshold where the preset asks for it and none was given."""
    if request.preset == "paper":
        request.options.setdefault("threshold", PAPER_PRESET_THRESHOLD)
    return request.options


def _build_pixel(request: BuildRequest) -> Explainer:
    return PixelAttack(request.classifier, progress=request.progress, **_paper_threshold(request))


def _build_linear(request: BuildRequest) -> Explainer:
    options = _paper_threshold(request)
    explainer = LinearLatentEdit(request.classifier, request.latent_model, progress=request.progress, **options)
    return explainer.fit(request.train_images)


def _build_disc(request: BuildRequest) -> Explainer:
    options = _paper_threshold(request)
    # the classifier alone: no latent model, no training data. Manifold consistency defaults to the
    # classifier's own energy (no second model; on MNIST it matched the DUQ variant, docs/benchmarks/disc.md)
    consistency = options.pop("consistency", DISC_CONSISTENCY)
    if consistency == "duq":
        from vcex.models import load_duq

        options["consistency_model"] = load_duq(request.dataset, progress=request.progress)
    return DISC(request.classifier, consistency=consistency, progress=request.progress, **options)


def _build_amortized(request: BuildRequest) -> Explainer:
    """Load the amortized explainer fitted for these models and settings, or fit it on the training images and
    cache it (the fit recipe and settings are the dataset profile's)."""
    classifier, latent_model, progress = request.classifier, request.latent_model, request.progress
    profile = profile_for(request.dataset)
    settings = {"lr_refine" if key == "lr" else key: value for key, value in _paper_threshold(request).items()}
    settings = {**profile.amortized_settings, **settings}
    fit_settings = dict(profile.amortized_fit)
    explainer = AmortizedCounterfactual(classifier, latent_model, progress=progress, **settings)
    key = json.dumps({**explainer.fit_settings(), **fit_settings, **explainer.models_record()}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = cache_dir() / f"amortized-{dataset_file_stem(request.dataset)}-{digest}.safetensors"
    if path.exists():
        try:
            return AmortizedCounterfactual.load(path, classifier, latent_model, progress=progress, **settings)
        except VcexError as error:
            warnings.warn(f"cached amortized explainer {path} is unusable ({error}); fitting it again", stacklevel=2)
    checkpoint = path.with_name(path.name + ".ckpt")  # an interrupted fit resumes from here
    explainer.fit(request.train_images, **fit_settings, checkpoint=checkpoint, progress=progress)
    explainer.save(path)
    checkpoint.unlink(missing_ok=True)
    return explainer


def _build_gcd(request: BuildRequest) -> Explainer:
    """GCD over the classifier's outputs alone; alpha's unit measured on (up to) 1,000 training encodings."""
    explainer = GCD(request.classifier, request.latent_model, progress=request.progress, **_paper_threshold(request))
    return explainer.fit(request.train_images[:1000])


def _build_stylespace_direction(request: BuildRequest) -> Explainer:
    """A StyleSpace direction per class pair, fitted on (up to) 2,000 training codes when first needed."""
    options = _paper_threshold(request)
    explainer = StyleSpaceDirection(request.classifier, request.latent_model, progress=request.progress, **options)
    return explainer.fit(request.train_images[:STYLESPACE_FIT_IMAGES])


# training images a StyleSpace direction is fitted on: class means and the learned fit's batches come from them
STYLESPACE_FIT_IMAGES = 2000
_COMMON = ("threshold", "lr", "max_steps", "batch_size", "device")
_LATENT = ("space", "objective", "residual", "whiten", "invert_steps", "precision")
# in the CLI's order: `vcex explain --method` lists them so, and the demo compares its methods in it
METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "attack",
            CounterfactualAttack,
            "Adam on the generator's latent until the classifier is confident (the core method)",
            (*_COMMON, *_LATENT),
            _build_attack,
            demo=True,
        ),
        Method(
            "pixel",
            PixelAttack,
            "the same optimisation on the pixels, no generative prior (baseline)",
            _COMMON,
            _build_pixel,
            demo=True,
        ),
        Method(
            "linear",
            LinearLatentEdit,
            "one step along the classifier's latent direction (InterFaceGAN baseline)",
            ("threshold", "batch_size", "device", "space", "probe_c"),
            _build_linear,
            demo=True,
            # its probe is fitted to the classifier's predictions and the edit is checked by forward passes
            black_box=True,
        ),
        Method(
            "amortized",
            AmortizedCounterfactual,
            "a network fitted once predicts the latent change in one pass (optional refinement)",
            ("threshold", "lr", "batch_size", "device", "refine_steps"),
            _build_amortized,
        ),
        Method(
            "disc",
            DISC,
            "model inversion from the classifier alone, with feature and manifold consistency (DISC)",
            ("threshold", "lr", "max_steps", "batch_size", "device", "consistency"),
            _build_disc,
            demo=True,
        ),
        Method(
            "gcd",
            GCD,
            "black box only: a proxy MLP fitted around each image gives latent directions, searched for a flip (GCD)",
            ("threshold", "batch_size", "device", "space", "samples", "radius", "h_directions", "max_epochs"),
            _build_gcd,
        ),
        Method(
            "stylespace-direction",
            StyleSpaceDirection,
            "one global StyleSpace offset per class pair (mean difference or learned, optionally sparse), swept "
            "by its step size until the classifier is confident (StyleDomain)",
            (*_COMMON, "mode", "sparsity", "alpha_max", "alpha_steps", "proximity"),
            _build_stylespace_direction,
            needs_stylespace=True,
        ),
    )
}
DEMO_METHODS = tuple(name for name, method in METHODS.items() if method.demo)


def check_black_box(method: str | type[Explainer], black_box: bool) -> None:
    """Refuse, in one line naming the methods that can, to explain a black-box classifier (``black_box``:
    :func:`vcex.models.blackbox.is_black_box`, or the CLI's --black-box) with ``method``, a :data:`METHODS` name or an
    explainer class, when it needs the classifier's gradients. Anything else passes. The CLI calls it before any
    work, ``build_explainer`` before its threshold's queries and the explainer base on construction (Python)."""
    if not black_box:
        return
    if isinstance(method, str):
        if method not in METHODS or METHODS[method].black_box:
            return
        named = f"--method {method} ({METHODS[method].explainer.__name__})"
    elif accepts_black_box(method):
        return
    else:
        named = method.__name__
    usable = [f"{name} ({entry.explainer.__name__})" for name, entry in METHODS.items() if entry.black_box]
    raise InputError(
        f"{named} needs the classifier's gradients, but this classifier is a black box (an ONNX file, --black-box "
        f"or a BlackBoxClassifier): use --method {' | '.join(usable)}, or give a differentiable model (a TorchScript "
        "file without --black-box, or package.module:factory)"
    )
