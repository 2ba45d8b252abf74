"""Amortized counterfactuals: a small network predicts the Counterfactual Attack's latent shift in one pass."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from vcex.cache import data_fingerprint, load_state_into, load_weights, parameter_fingerprint, save_weights
from vcex.checks import check_count, check_images, check_positive_finite
from vcex.errors import CacheError, InputError, ModelError
from vcex.explainers.base import Explainer, TargetSpec, ThresholdSpec, check_threshold
from vcex.explainers.counterfactual_attack import latent_attack
from vcex.explainers.result import CounterfactualResult
from vcex.explainers.thresholds import AUTO, explained_thresholds
from vcex.models.classifiers import Classifier, check_differentiable
from vcex.models.latent import LatentModel
from vcex.models.state import evaluating
from vcex.progress import progress_bar

if TYPE_CHECKING:
    from tqdm.auto import tqdm

    from vcex.progress import LineProgress

LATENT_NORMS = ("l2", "l1")
IDENTITY_WEIGHT = 1.0
# the identity term's softmax temperature, as a share of the batch's mean squared latent distance between originals
IDENTITY_TEMPERATURE = 0.1
ONE_PASS_CHUNK_CPU = 128
ONE_PASS_CHUNK_GPU = 4096
_FORMAT = "vcex-amortized-counterfactual"
_NETWORK = "network."
_OPTIMIZER = "optimizer."


class ShiftNetwork(nn.Module):
    """MLP g(z, one_hot(target)) -> latent shift (N, d); the last layer starts near zero, so g starts at ~0."""

    def __init__(self, latent_dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.latent_dim, self.num_classes, self.hidden = latent_dim, num_classes, hidden
        self.layers = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, latent_dim),
        )
        with torch.no_grad():
            self.layers[-1].weight.mul_(1e-3)
            self.layers[-1].bias.zero_()

    def forward(self, latents: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(target, self.num_classes).to(latents.dtype)
        return self.layers(torch.cat([latents, one_hot], dim=1))


def _fitting_threshold(threshold: ThresholdSpec) -> float | tuple[float, ...]:
    """The threshold as the fit sees it: per-class thresholds that are all equal fit exactly what their one
    value fits (``class_thresholds`` gives ten 0.998s on MNIST), so they are recorded as that value and a
    network fitted for one serves the other."""
    threshold = check_threshold(threshold)
    if threshold == AUTO:
        return threshold
    if isinstance(threshold, tuple) and len(set(threshold)) == 1:
        return threshold[0]
    return threshold


def _same_setting(key: str, saved: object, asked: object) -> bool:
    """Whether a setting asked for at load time is the one the network was fitted with (per-class thresholds
    come back from the record as a list, and may be asked for as a tensor or a tuple)."""
    if key == "threshold":
        return _fitting_threshold(saved) == _fitting_threshold(asked)
    return saved == asked


def _identity_term(latents: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """Per-image (N,) cross-entropy of picking its own original among the batch's (N, d) latents by distance to
    ``moved``: low when each moved latent stays nearer its own original than any other (no shared template)."""
    # squared distances by broadcasting, not cdist: its gradient at a zero distance (no shift yet) is NaN
    distances = (moved[:, None, :] - latents[None, :, :]).pow(2).sum(-1)
    spread = (latents[:, None, :] - latents[None, :, :]).pow(2).sum(-1).mean().clamp_min(1e-12)
    logits = -distances / (IDENTITY_TEMPERATURE * spread)
    return F.cross_entropy(logits, torch.arange(len(latents), device=latents.device), reduction="none")


class _NonFiniteLoss(Exception):
    """A fitting batch's loss was not finite: ``value`` and the 0-based ``batch_number`` in its epoch."""

    def __init__(self, value: float, batch_number: int) -> None:
        super().__init__(value, batch_number)
        self.value, self.batch_number = value, batch_number


def _stopped_fit(bad: _NonFiniteLoss, epoch: int, checkpoint: str | Path | None, lr: float) -> ModelError:
    """The one-line error of a fit stopped by a non-finite loss in (0-based) ``epoch``: where it happened, whether
    the checkpoint of the ``epoch`` epochs finished before it is kept, and what to try."""
    kept = (
        f"the last good checkpoint ({checkpoint}, after epoch {epoch}) is kept"
        if checkpoint is not None and Path(checkpoint).is_file()
        else "no checkpoint was written"
    )
    return ModelError(
        f"the fitting loss became {bad.value} at epoch {epoch + 1}, batch {bad.batch_number + 1}: "
        f"stopped; {kept}. Try a lower lr (now {lr}) or check the models for NaN outputs"
    )


class AmortizedCounterfactual(Explainer):
    """Amortized Counterfactual Attacks: learn the latent shift once, explain in one pass.

    A conditional MLP maps a latent z and a target class t to a shift, ``z' = z + g(z, t)``. ``fit``
    trains g on a training set's latents, with random targets (the runner-up class half the time),
    through the frozen decoder and classifier, minimising per image

        ``relu(logit(threshold) + margin - m_t(decode(z')))
        + latent_weight * |g(z, t)|  +  pixel_weight * mean|decode(z') - decode(z)|
        + identity_weight * CE(softmax_j(-|z'_i - z_j|^2 / T), i)``

    where ``m_t = l_t - logsumexp_{j != t} l_j`` is the target's logit margin (``p_t > threshold``
    exactly when ``m_t > logit(threshold)``), so the target term saturates once the target passes
    the threshold with ``margin`` to spare. The identity term (over the other images j of the training batch,
    T = 0.1 of their mean squared latent distance) asks each z' to stay nearer its own original than any other:
    without it the network can learn one template per target class, which validity and both agreement judges
    rate highly but which no longer resembles its original. ``explain`` is then one encode, one network pass and one
    decode (``steps`` 0, ``forward_passes`` 1). With ``refine_steps=k`` the predicted latent warm-starts
    the Counterfactual Attack's loop (per-image early stop, at most k steps), trading a few steps for
    the attack's validity. Distance: latent L2 (or L1) and pixel L1, weighted as given.

    Args:
        classifier, latent_model: as for :class:`CounterfactualAttack`.
        threshold: target probability a counterfactual must pass (default 0.998), or one per class.
        hidden: width of the MLP's two hidden layers (256).
        latent_weight: weight of the shift's norm in the fitting loss (0.2; with pixel_weight 5.0 it keeps
            MNIST's one-pass L1 close to the attack's).
        pixel_weight: weight of the mean absolute pixel change in the fitting loss (5.0).
        identity_weight: weight of the identity term in the fitting loss (IDENTITY_WEIGHT; 0 turns it off, the
            recipe before it existed).
        latent_norm: ``"l2"`` (Euclidean norm of the shift) or ``"l1"``.
        margin: logit margin beyond ``logit(threshold)`` the fitting aims for (0.5), so one-pass
            counterfactuals clear the threshold instead of landing on it.
        refine_steps: Counterfactual Attack steps after the network's prediction (0: one pass).
        lr_refine: Adam learning rate of the refinement (0.1, the attack's).
        reconstructions: also decode each original's own latent into ``result.reconstructions`` (for MNAC
            against the reconstruction and side-by-side figures); False saves one decoder pass per image
            when only the counterfactuals are wanted, e.g. behind an API.
        batch_size: images per chunk (default 128 on a CPU, 4096 on a GPU).
        device, progress: see :class:`Explainer`.

    Shape: images (N, C, H, W) -> result with counterfactuals (N, C, H, W), latents (N, d).

    Example:
        >>> from vcex import AmortizedCounterfactual, load_classifier, load_latent_model
        >>> amortized = AmortizedCounterfactual(load_classifier("mnist-cnn"), load_latent_model("mnist-vae"))
        >>> amortized.fit(train_images, epochs=30, checkpoint="amortized.ckpt").save("amortized.safetensors")
        >>> result = amortized.explain(images, target="second")  # one pass per image
    """

    name = "amortized"
    needs_latent_model = True

    def __init__(
        self,
        classifier: nn.Module | Classifier,
        latent_model: LatentModel,
        *,
        threshold: ThresholdSpec = AUTO,
        hidden: int = 256,
        latent_weight: float = 0.2,
        pixel_weight: float = 5.0,
        identity_weight: float = IDENTITY_WEIGHT,
        latent_norm: str = "l2",
        margin: float = 0.5,
        refine_steps: int = 0,
        lr_refine: float = 0.1,
        reconstructions: bool = True,
        batch_size: int | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(
            classifier,
            latent_model,
            threshold=threshold,
            batch_size=1 if batch_size is None else batch_size,
            device=device,
            progress=progress,
        )
        if batch_size is None:
            # one pass is a few forward calls per chunk: on a CPU, chunks of ~100 images stay in cache
            # (MNIST, 1 thread: 0.55 ms per counterfactual at 100-128 vs 0.75 at 256); a GPU wants large ones
            self.batch_size = ONE_PASS_CHUNK_CPU if self.device.type == "cpu" else ONE_PASS_CHUNK_GPU
        if hidden < 1:
            raise InputError(f"hidden must be >= 1, got {hidden}")
        if latent_weight < 0 or pixel_weight < 0 or margin < 0 or identity_weight < 0:
            raise InputError(
                "latent_weight, pixel_weight, identity_weight and margin must be >= 0, got "
                f"{latent_weight}, {pixel_weight}, {identity_weight}, {margin}"
            )
        if latent_norm not in LATENT_NORMS:
            raise InputError(f"unknown latent_norm {latent_norm!r}; use one of {', '.join(LATENT_NORMS)}")
        refine_steps = check_count("refine_steps", refine_steps)
        lr_refine = check_positive_finite("lr_refine", lr_refine)
        self.hidden = int(hidden)
        self.latent_weight = float(latent_weight)
        self.pixel_weight = float(pixel_weight)
        self.identity_weight = float(identity_weight)
        self.latent_norm = latent_norm
        self.margin = float(margin)
        self.refine_steps = int(refine_steps)
        self.lr_refine = float(lr_refine)
        self.reconstructions = bool(reconstructions)
        self.check_every = 1 if self.device.type == "cpu" else 8
        self.network: ShiftNetwork | None = None
        self.record: dict = {}
        self.latent_shape: tuple[int, ...] = ()
        self.loaded = False  # True when the network came from a file rather than a fit in this process

    # ---- settings and records -------------------------------------------------------------------------

    def fit_settings(self) -> dict:
        """The settings that change what ``fit`` learns (recorded with the network)."""
        return {
            "threshold": _fitting_threshold(self.threshold),
            "hidden": self.hidden,
            "latent_weight": self.latent_weight,
            "pixel_weight": self.pixel_weight,
            "identity_weight": self.identity_weight,
            "latent_norm": self.latent_norm,
            "margin": self.margin,
        }

    def settings(self) -> dict:
        return {
            **super().settings(),
            **self.fit_settings(),
            "threshold": self.threshold,  # as asked (fit_settings gives equal per-class thresholds as one)
            "refine_steps": self.refine_steps,
            "lr_refine": self.lr_refine,
            "network": self.record.get("network_fingerprint"),
            "reconstructions": self.reconstructions,
        }

    @property
    def needs_gradients(self) -> bool:  # type: ignore[override]
        """One pass only runs the classifier forward; the refinement (and ``fit``) need its gradients."""
        return self.refine_steps > 0

    @property
    def fit_seconds(self) -> float:
        """Seconds the network took to fit, over all resumed runs (from its record)."""
        return float(self.record.get("fit_seconds", 0.0))

    def models_record(self) -> dict:
        """Fingerprints of the classifier and latent model: what a fitted network is only valid for."""
        return {
            "classifier": parameter_fingerprint(self.classifier),
            "latent_model": parameter_fingerprint(self.latent_model),
        }

    # ---- fitting ---------------------------------------------------------------------------------------

    def fit(
        self,
        images: torch.Tensor,
        *,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 3e-3,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        progress: bool = True,
    ) -> AmortizedCounterfactual:
        """Fit the shift network on ``images`` (N, C, H, W), e.g. the training set.

        Latents, reconstructions and predictions are computed once; each epoch draws new targets
        (the runner-up class for a random half of the images, another random class otherwise).
        With ``checkpoint`` the state (network, Adam, random generator, epoch) is saved there after
        every epoch, and a later ``fit`` with the same arguments resumes from it. A non-finite loss
        stops the fit with :class:`ModelError`, leaving the last good checkpoint in place.
        """
        epochs, batch_size = check_count("epochs", epochs, 1), check_count("batch_size", batch_size, 1)
        lr = check_positive_finite("lr", lr)
        images = check_images(images, value_range=self.classifier.value_range)
        if len(images) < 2:
            raise InputError(f"fit needs at least 2 images, got {len(images)}")
        started = time.perf_counter()
        torch.manual_seed(seed)
        with evaluating(*self._models()):
            images = images.to(self.device)
            # the fit backpropagates through the classifier: refuse a black box before any work
            check_differentiable(self.classifier, images, f"{type(self).__name__}.fit")
            latents, reconstructions, probs = self._training_inputs(images)
            if self.threshold == AUTO:
                # decided once, from the fit's images; the network is fitted for (and saved with) these values
                self.threshold, self.threshold_reason = explained_thresholds(probs)
            self.latent_shape = tuple(latents.shape[1:]) if latents.dim() > 1 else ()
            latents = latents.flatten(1)
            num_classes = probs.shape[1]
            if num_classes < 2:
                raise ModelError(f"the classifier returns {num_classes} class; counterfactuals need at least 2")
            fit = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
            record = self._fit_record(images, latents.shape[1], num_classes, fit)
            network = ShiftNetwork(latents.shape[1], num_classes, self.hidden).to(self.device)
            optimizer = torch.optim.Adam(network.parameters(), lr=lr)
            generator = torch.Generator().manual_seed(seed)
            start_epoch, history, previous_seconds = 0, [], 0.0
            if checkpoint is not None and Path(checkpoint).is_file():
                start_epoch, history, previous_seconds = self._resume(checkpoint, record, network, optimizer, generator)
            predicted = probs.argmax(1)
            runner_up = probs.topk(2, dim=1).indices[:, 1]
            batches = -(-len(images) // batch_size)
            bar = progress_bar(
                total=(epochs - start_epoch) * batches,
                desc="fitting amortized explainer",
                enabled=progress,
                unit="batch",
            )
            network.train()
            for epoch in range(start_epoch, epochs):
                targets = self._draw_targets(predicted, runner_up, num_classes, generator)
                order = torch.randperm(len(images), generator=generator).to(self.device)
                try:
                    mean_loss = self._fit_epoch(
                        network, optimizer, latents, reconstructions, targets, order, batch_size, bar, epoch
                    )
                except _NonFiniteLoss as bad:
                    bar.close()
                    raise _stopped_fit(bad, epoch, checkpoint, lr) from None
                history.append(round(mean_loss, 6))
                start_epoch = epoch + 1
                if checkpoint is not None:
                    seconds = previous_seconds + time.perf_counter() - started
                    self._write(
                        checkpoint,
                        network,
                        {**record, "epoch": epoch + 1, "loss_history": history, "fit_seconds": round(seconds, 3)},
                        optimizer=optimizer,
                        generator=generator,
                    )
            bar.close()
        network.eval().requires_grad_(False)
        self.network = network
        self.record = {
            **record,
            "epoch": start_epoch,
            "loss_history": history,
            "fit_seconds": round(previous_seconds + time.perf_counter() - started, 3),
            "network_fingerprint": parameter_fingerprint(network),
        }
        self.loaded = False
        return self

    def _fit_record(self, images: torch.Tensor, latent_dim: int, num_classes: int, fit: dict) -> dict:
        """What a fitted network is saved with and valid for: the models' and images' fingerprints, the settings it
        was fitted with (``fit``: epochs, batch_size, lr, seed) and its latent and class shapes."""
        return {
            "format": _FORMAT,
            "version": 1,
            **self.models_record(),
            "data": {"n": len(images), "fingerprint": data_fingerprint(images)},
            "settings": self.fit_settings(),
            "fit": fit,
            "latent_dim": latent_dim,
            "latent_shape": list(self.latent_shape),
            "num_classes": num_classes,
        }

    def _fit_epoch(
        self,
        network: ShiftNetwork,
        optimizer: torch.optim.Optimizer,
        latents: torch.Tensor,
        reconstructions: torch.Tensor,
        targets: torch.Tensor,
        order: torch.Tensor,
        batch_size: int,
        bar: tqdm | LineProgress,
        epoch: int,
    ) -> float:
        """One epoch of Adam over the images in ``order`` (a permutation of the N images), ``batch_size`` at a time,
        on latents (N, D), reconstructions (N, C, H, W) and targets (N,); the mean loss over the N images.

        Raises:
            _NonFiniteLoss: a batch's loss was NaN or infinite (before its step: the network stays as it was).
        """
        total = 0.0
        for batch_number, batch in enumerate(order.split(batch_size)):
            with torch.enable_grad():
                shift = network(latents[batch], targets[batch])
                loss = self._objective(latents[batch], shift, reconstructions[batch], targets[batch]).mean()
            value = float(loss.detach())  # the one host sync per batch: NaN guard, total and progress
            if not math.isfinite(value):
                raise _NonFiniteLoss(value, batch_number)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += value * len(batch)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4g}")
        return total / len(order)

    @torch.no_grad()
    def _training_inputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latents, reconstructions = [], []
        low, high = self.classifier.value_range
        for i, chunk in enumerate(images.split(self.batch_size)):
            latent = self.latent_model.encode(chunk)
            decoded = self._decode_checked(latent, chunk) if i == 0 else self.latent_model.decode(latent)
            latents.append(latent)
            reconstructions.append(decoded.clamp(low, high))
        probs = self.predict_proba(images)
        return torch.cat(latents), torch.cat(reconstructions), probs

    def _draw_targets(
        self, predicted: torch.Tensor, runner_up: torch.Tensor, num_classes: int, generator: torch.Generator
    ) -> torch.Tensor:
        n = len(predicted)
        other = torch.randint(0, num_classes - 1, (n,), generator=generator).to(predicted.device)
        other = other + (other >= predicted).long()  # any class but the prediction, uniformly
        use_runner_up = (torch.rand(n, generator=generator) < 0.5).to(predicted.device)
        return torch.where(use_runner_up, runner_up, other)

    def _objective(
        self, latents: torch.Tensor, shift: torch.Tensor, reconstructions: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Per-image fitting loss (N,): saturating target margin + latent and pixel proximity."""
        low, high = self.classifier.value_range
        counterfactuals = self.latent_model.decode((latents + shift).view(-1, *self.latent_shape)).clamp(low, high)
        logits = self.classifier(counterfactuals)
        target_logit = logits.gather(1, target[:, None])[:, 0]
        others = logits.scatter(1, target[:, None], float("-inf")).logsumexp(1)
        goal = self.threshold_logit(target) + self.margin
        target_term = F.relu(goal - (target_logit - others))
        if self.latent_norm == "l2":
            latent_term = shift.pow(2).sum(1).add(1e-12).sqrt()
        else:
            latent_term = shift.abs().sum(1)
        pixel_term = (counterfactuals - reconstructions).abs().flatten(1).mean(1)
        loss = target_term + self.latent_weight * latent_term + self.pixel_weight * pixel_term
        if self.identity_weight > 0 and len(latents) > 1:
            loss = loss + self.identity_weight * _identity_term(latents, latents + shift)
        return loss

    # ---- saving, loading, resuming ---------------------------------------------------------------------

    def _write(
        self,
        path: str | Path,
        network: ShiftNetwork,
        record: dict,
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
    ) -> Path:
        tensors = {_NETWORK + name: tensor for name, tensor in network.state_dict().items()}
        if optimizer is not None:
            for index, state in optimizer.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"{_OPTIMIZER}{index}.{key}"] = (
                        torch.as_tensor(value).reshape(-1) if key == "step" else value
                    )
        if generator is not None:
            tensors["generator_state"] = generator.get_state()
        return save_weights(path, tensors, record)

    def save(self, path: str | Path) -> Path:
        """Write the fitted network (safetensors) with its record: models, data and settings it was fitted for."""
        if self.network is None:
            raise InputError("AmortizedCounterfactual has no fitted network to save: call .fit(train_images) first")
        return self._write(path, self.network, self.record)

    @classmethod
    def load(
        cls, path: str | Path, classifier: nn.Module | Classifier, latent_model: LatentModel, **overrides: object
    ) -> AmortizedCounterfactual:
        """A fitted explainer from :meth:`save` (or a ``fit`` checkpoint) for these exact models.

        The fitting settings come from the file; ``overrides`` may change the explain-time ones
        (``refine_steps``, ``lr_refine``, ``batch_size``, ``device``, ``progress``). Loading against a
        classifier or latent model other than the ones it was fitted for raises :class:`InputError`.
        """
        tensors, record = load_weights(path)
        if record.get("format") != _FORMAT:
            raise CacheError(
                f"{path} is not an AmortizedCounterfactual network (its record says {record.get('format')})"
            )
        # a network saved before the identity term existed was fitted without it
        fitted = {"identity_weight": 0.0, **record["settings"]}
        fitted_for = {k: v for k, v in overrides.items() if k in fitted}
        changed = {k: v for k, v in fitted_for.items() if not _same_setting(k, fitted[k], v)}
        if changed:
            was = ", ".join(f"{k}={fitted[k]}" for k in changed)
            raise InputError(
                f"{path} was fitted with {was}; these settings cannot change after fitting "
                f"(asked for {changed}): fit a new network"
            )
        # an equivalent threshold asked for (a tensor, equal per-class values) is kept as asked
        overrides = {k: v for k, v in overrides.items() if k not in fitted_for or k == "threshold"}
        explainer = cls(classifier, latent_model, **{**fitted, **overrides})
        explainer._check_models(record, str(path))
        network = ShiftNetwork(record["latent_dim"], record["num_classes"], record["settings"]["hidden"])
        load_state_into(
            network, {k[len(_NETWORK) :]: v for k, v in tensors.items() if k.startswith(_NETWORK)}, str(path)
        )
        explainer.network = network.to(explainer.device).eval().requires_grad_(False)
        explainer.record = {**record, "network_fingerprint": parameter_fingerprint(network)}
        explainer.latent_shape = tuple(record["latent_shape"])
        explainer.loaded = True
        return explainer

    def _check_models(self, record: dict, source: str) -> None:
        """Refuse a network fitted for other models: class count first (clearest), then fingerprints."""
        shape = self.classifier.input_shape
        if shape is not None:
            probe = torch.zeros(1, *shape, device=self.device)
            with evaluating(self.classifier), torch.no_grad():
                classes = self.classifier(probe).shape[1]
            if classes != record["num_classes"]:
                raise InputError(
                    f"{source} was fitted for a classifier with {record['num_classes']} classes, "
                    f"this one has {classes}: fit a new network for it"
                )
        ours = self.models_record()
        for role in ("classifier", "latent_model"):
            if record.get(role) != ours[role]:
                raise InputError(
                    f"{source} was fitted for another {role.replace('_', ' ')} (fingerprint {record.get(role)}, "
                    f"this one is {ours[role]}): an amortized explainer is only valid for the models it was fitted "
                    "with; fit a new one"
                )

    def _resume(
        self,
        path: str | Path,
        record: dict,
        network: ShiftNetwork,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
    ) -> tuple[int, list[float], float]:
        tensors, saved = load_weights(path)
        comparable = ("format", "classifier", "latent_model", "data", "settings", "latent_dim", "num_classes")
        different = [key for key in comparable if saved.get(key) != record.get(key)]
        fit_different = {k for k in ("batch_size", "lr", "seed") if saved.get("fit", {}).get(k) != record["fit"][k]}
        if different or fit_different:
            raise InputError(
                f"checkpoint {path} belongs to another fit (different {', '.join(different + sorted(fit_different))}); "
                "delete it or pass another checkpoint path"
            )
        load_state_into(network, {k[len(_NETWORK) :]: v for k, v in tensors.items() if k.startswith(_NETWORK)}, path)
        state = optimizer.state_dict()
        for index in state["param_groups"][0]["params"]:
            prefix = f"{_OPTIMIZER}{index}."
            entries = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if entries:
                entries["step"] = entries["step"].reshape(())
                state["state"][index] = entries
        optimizer.load_state_dict(state)
        generator.set_state(tensors["generator_state"])
        return int(saved["epoch"]), list(saved.get("loss_history", [])), float(saved.get("fit_seconds", 0.0))

    # ---- explaining ------------------------------------------------------------------------------------

    def predict_latents(self, latents: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """z + g(z, target) for latents (N, ...) and targets (N,), same shape as ``latents``."""
        flat = latents.flatten(1)
        if flat.shape[1] != self.network.latent_dim:
            raise ModelError(
                f"the latent model encodes to {flat.shape[1]} dimensions, the network was fitted for "
                f"{self.network.latent_dim}: use the latent model it was fitted with"
            )
        return (flat + self.network(flat, target)).view_as(latents)

    def _explain_batch(self, images: torch.Tensor, target: torch.Tensor, lower: bool) -> dict[str, torch.Tensor]:
        if self.network is None:
            raise InputError(
                "AmortizedCounterfactual has no fitted network yet: call .fit(train_images) "
                "or AmortizedCounterfactual.load(path, classifier, latent_model) before .explain"
            )
        if lower:
            raise InputError(
                "AmortizedCounterfactual is fitted to raise a target class; to lower class k, raise another"
            )
        if int(target.max()) >= self.network.num_classes:
            raise InputError(
                f"target class {int(target.max())} is beyond the {self.network.num_classes} classes the network "
                "was fitted for: fit it for this classifier"
            )
        low, high = self.classifier.value_range
        with torch.no_grad():
            latents = self.latent_model.encode(images)
            predicted = self.predict_latents(latents, target)
            reconstructions = None
            if self.refine_steps == 0 and self.reconstructions:
                # one pass: the reconstructions and the counterfactuals in a single decoder call
                shape = torch.Size((2 * len(images), *images.shape[1:]))
                decoded = self._decode_checked(torch.cat([latents, predicted]), shape)
                reconstructions, counterfactuals = decoded.clamp(low, high).split(len(images))
            elif self.refine_steps == 0:
                counterfactuals = self._decode_checked(predicted, images).clamp(low, high)
            elif self.reconstructions:
                reconstructions = self._decode_checked(latents, images).clamp(low, high)
        fields = {"original_latents": latents}
        if reconstructions is not None:
            fields["reconstructions"] = reconstructions
        if self.refine_steps == 0:
            with torch.no_grad():
                probs = self.classifier(counterfactuals).softmax(1)
            if probs.shape[1] != self.network.num_classes:
                raise InputError(
                    f"the classifier returns {probs.shape[1]} classes, the network was fitted for "
                    f"{self.network.num_classes}: fit it for this classifier"
                )
            target_prob = probs.gather(1, target[:, None])[:, 0]
            return {
                **fields,
                "counterfactuals": counterfactuals,
                "counterfactual_latents": predicted,
                "target_prob": target_prob,
                "success": self.reached(target_prob, target),
                "steps": torch.zeros_like(target),
                "forward_passes": torch.ones_like(target),
                "backward_passes": torch.zeros_like(target),
            }
        # the loop's step 0 is the one-pass check itself, so its pass counts already include it
        loop = latent_attack(
            predicted,
            self.latent_model,
            self.classifier,
            target,
            threshold=self.stop_threshold(target, lower),
            lr=self.lr_refine,
            max_steps=self.refine_steps,
            objective="prob",
            check_every=self.check_every,
            progress=self.progress,
        )
        return {**fields, **loop.result_fields(), "counterfactual_latents": loop.variables}

    def explain(
        self, images: torch.Tensor, target: TargetSpec = "second", *, lower: bool = False
    ) -> CounterfactualResult:
        """As :meth:`Explainer.explain`; refused before the network is fitted or loaded."""
        if self.network is None:
            raise InputError(
                "AmortizedCounterfactual has no fitted network yet: call .fit(train_images) "
                "or AmortizedCounterfactual.load(path, classifier, latent_model) before .explain"
            )
        return super().explain(images, target, lower=lower)


__all__ = ["AmortizedCounterfactual", "ShiftNetwork", "data_fingerprint", "parameter_fingerprint"]
