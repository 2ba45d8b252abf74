"""Peer benchmark: alibi's CounterfactualRL (torch backend) vs vcex's AmortizedCounterfactual on MNIST.

Both amortise counterfactual search into a network fitted once, after which each counterfactual is one
forward pass. CounterfactualRL (Samoilescu et al., 2021) treats the classifier as a black box and learns
by reinforcement learning (DDPG); vcex's AmortizedCounterfactual backpropagates through the frozen
decoder and classifier. Both work in the latent space of the same autoencoder (vcex's ``mnist-vae``),
explain the same 200 MNIST test images toward the same targets (the classifier's runner-up class,
fixed before anything runs) and are scored by the same ``vcex.pipeline.evaluate_result``.

Runs inside its own virtual environment (alibi needs numpy<2), made by ``setup.sh`` beside this file:

    bash benchmarks/peers/alibi_cfrl/setup.sh
    benchmarks/peers/.venvs/alibi/bin/python benchmarks/peers/alibi_cfrl/run.py --threads 1

Resume-safe: every finished stage (CFRL fit, CFRL explain, vcex fit, vcex explain, attack reference) is
written to ``--work-dir`` (results.json plus safetensors) as soon as it ends, and a rerun with the same
settings reuses it. alibi's ``fit`` cannot resume part-way (its replay buffer and exploration schedule
live only in memory), so an interrupted CFRL fit starts again; vcex's fit resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vcex.report.markdown import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peer_common import (  # noqa: E402
    State,
    command_line,
    cpu_model,
    fingerprint,
    log,
    mnist_task,
    num,
    pct,
    resumed_note,
    write_report,
)

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = ROOT / "docs" / "benchmarks" / "peers-cfrl.md"

# alibi's MNIST example (doc/source/examples/cfrl_mnist.ipynb): everything else stays at alibi's defaults
CFRL_EXAMPLE = {"coeff_sparsity": 7.5, "coeff_consistency": 0.0, "train_steps": 50000, "batch_size": 100}
CFRL_EXAMPLE_LATENT_DIM = 64  # the example's own autoencoder; ours has 16
CFRL_EXPLAIN_BATCH = 100  # the example's explain(..., batch_size=100)
THRESHOLD = 0.998  # vcex's default confidence threshold
REFINE_STEPS = 100  # attack steps allowed after the amortized prediction (the refinement row)
TIMING_REPEATS = 21  # warm, alternating explain calls per one-pass method for the per-counterfactual cost


# ---- the autoencoder as CFRL sees it ------------------------------------------------------------------


class ScaledEncoder(nn.Module):
    """vcex VAE's posterior mean divided by a fixed per-dimension scale, so training latents lie in [-1, 1].

    CFRL's actor ends in tanh and its exploration noise is clipped to [act_low, act_high] = [-1, 1]
    (alibi's own MNIST encoder ends in tanh for this reason); an unscaled VAE latent would put part of
    the data out of the actor's reach. The scale is linear and exactly undone by :class:`ScaledDecoder`,
    so decode(encode(x)) is the VAE's own reconstruction.
    """

    def __init__(self, vae: nn.Module, scale: torch.Tensor) -> None:
        super().__init__()
        self.vae = vae
        self.register_buffer("scale", scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(images) / self.scale


class ScaledDecoder(nn.Module):
    def __init__(self, vae: nn.Module, scale: torch.Tensor) -> None:
        super().__init__()
        self.vae = vae
        self.register_buffer("scale", scale)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents * self.scale)


@torch.no_grad()
def latent_scale(vae: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-dimension max |z| over the training latents (d,)."""
    latents = torch.cat([vae.encode(chunk) for chunk in images.split(500)])
    return latents.abs().amax(0).clamp_min(1e-6)


def make_predictor(classifier: nn.Module):
    """CFRL's black box: numpy images (N, 1, 28, 28) -> numpy class probabilities (N, 10)."""

    @torch.no_grad()
    def predictor(images: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
        return torch.cat([classifier(chunk).softmax(1) for chunk in x.split(1000)]).numpy()

    return predictor


class StepLog:
    """alibi callback: one log line every ``every`` training steps (alibi's own bar is switched off)."""

    def __init__(self, total: int, every: int) -> None:
        self.total, self.every = total, max(1, every)
        self.started = time.perf_counter()
        self.rewards: list[float] = []

    def __call__(self, step, update, model, sample, losses) -> None:  # noqa: ARG002 - alibi's signature
        self.rewards.append(float(np.mean(sample["R_tilde"])))
        done = step + 1
        if done % self.every and done != self.total:
            return
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        reward = float(np.mean(self.rewards)) if self.rewards else float("nan")
        self.rewards = []
        parts = " ".join(f"{k}={v:.4g}" for k, v in losses.items() if isinstance(v, float | int))
        log(
            f"cfrl step {done}/{self.total} | {elapsed:.0f}s elapsed, {rate:.1f} steps/s, eta {eta / 60:.1f} min "
            f"| replay reward {reward:.3f} | {parts}"
        )


# ---- state on disk ---------------------------------------------------------------------------------------


# ---- the two methods -------------------------------------------------------------------------------------


def build_cfrl(bench, scale: torch.Tensor, args):
    from alibi.explainers import CounterfactualRL

    return CounterfactualRL(
        predictor=make_predictor(bench.classifier),
        encoder=ScaledEncoder(bench.latent_model, scale),
        decoder=ScaledDecoder(bench.latent_model, scale),
        latent_dim=int(scale.numel()),
        coeff_sparsity=CFRL_EXAMPLE["coeff_sparsity"],
        coeff_consistency=CFRL_EXAMPLE["coeff_consistency"],
        train_steps=args.train_steps,
        batch_size=CFRL_EXAMPLE["batch_size"],
        num_workers=args.num_workers,
        backend="pytorch",
        seed=args.seed,
        callbacks=[StepLog(args.train_steps, args.log_every)],
    )


def cfrl_params_record(explainer) -> dict:
    keep = (
        "coeff_sparsity",
        "coeff_consistency",
        "latent_dim",
        "train_steps",
        "batch_size",
        "act_noise",
        "act_low",
        "act_high",
        "replay_buffer_size",
        "num_workers",
        "exploration_steps",
        "update_every",
        "update_after",
        "lr_actor",
        "lr_critic",
        "actor_hidden_dim",
        "critic_hidden_dim",
        "seed",
    )
    return {k: explainer.params[k] for k in keep if k in explainer.params}


def cfrl_result(
    bench, images: torch.Tensor, targets: torch.Tensor, counterfactuals: np.ndarray, seconds: float, settings: dict
):
    """CFRL's counterfactuals as a vcex CounterfactualResult (scored by the explained classifier)."""
    from vcex.explainers import CounterfactualResult

    cf = torch.as_tensor(counterfactuals, dtype=torch.float32).reshape(images.shape).clamp(0, 1)
    with torch.no_grad():
        original_probs = bench.classifier(images).softmax(1)
        cf_probs = bench.classifier(cf).softmax(1)
    target_prob = cf_probs.gather(1, targets[:, None])[:, 0]
    return CounterfactualResult(
        method="cfrl",
        originals=images,
        counterfactuals=cf,
        target=targets,
        original_class=original_probs.argmax(1),
        original_prob=original_probs.gather(1, targets[:, None])[:, 0],
        target_prob=target_prob,
        success=target_prob > THRESHOLD,
        steps=torch.zeros_like(targets),
        forward_passes=torch.ones_like(targets),  # the check of the counterfactual, as vcex counts one pass
        backward_passes=torch.zeros_like(targets),
        seconds=seconds,
        threshold=THRESHOLD,
        settings=settings,
    )


def run_cfrl(bench, images, targets, state: State, args):
    import alibi.explainers.cfrl_base as cfrl_base
    from safetensors.torch import load_file, save_file

    # alibi's tqdm bars are carriage-return noise in a log file; StepLog prints plain lines instead
    cfrl_base.tqdm = functools.partial(cfrl_base.tqdm, disable=True)
    train = bench.train.images
    scale = latent_scale(bench.latent_model, train)
    bench.latent_model.requires_grad_(False)  # the actor's gradient still flows through the frozen decoder
    actor_path = state.dir / "cfrl-actor.safetensors"
    fit = state.stage("cfrl_fit")
    explainer = build_cfrl(bench, scale, args)
    if fit is None or not actor_path.is_file():
        log(f"CFRL: fitting on {len(train)} training images, {args.train_steps} steps")
        started = time.perf_counter()
        explainer.fit(X=train.numpy())
        seconds = time.perf_counter() - started
        save_file(
            {
                **{f"actor.{k}": v.contiguous() for k, v in explainer.params["actor"].state_dict().items()},
                **{f"critic.{k}": v.contiguous() for k, v in explainer.params["critic"].state_dict().items()},
                "latent_scale": scale,
            },
            str(actor_path),
        )
        state.finish(
            "cfrl_fit",
            {"seconds": round(seconds, 3), "actor": actor_path.name, "params": cfrl_params_record(explainer)},
        )
        log(f"CFRL: fitted in {seconds:.1f} s")
    else:
        tensors = load_file(str(actor_path))
        if not torch.equal(tensors["latent_scale"], scale):
            raise SystemExit(f"{actor_path} was fitted with another latent scale; delete {state.dir} and rerun")
        actor = explainer.params["actor"]  # its lazy layers take their shapes from the saved state
        actor.load_state_dict({k[len("actor.") :]: v for k, v in tensors.items() if k.startswith("actor.")})
        log(f"CFRL: reusing the fit from {fit['finished']} ({fit['seconds']:.1f} s)")
    if state.stage("cfrl_explain") is None:
        started = time.perf_counter()
        explanation = explainer.explain(images.numpy(), targets.numpy(), batch_size=CFRL_EXPLAIN_BATCH)
        seconds = time.perf_counter() - started
        result = cfrl_result(
            bench, images, targets, explanation.data["cf"]["X"], seconds, cfrl_params_record(explainer)
        )
        result.save(state.dir / "cfrl-result.safetensors")
        state.finish("cfrl_explain", {"seconds": round(seconds, 4), "result": "cfrl-result.safetensors"})
        log(f"CFRL: explained {len(images)} images in {seconds:.3f} s")
    return explainer


def run_amortized(bench, images, targets, state: State):
    from vcex.data.profiles import profile_for
    from vcex.explainers import AmortizedCounterfactual

    AMORTIZED_FIT = dict(profile_for("mnist").amortized_fit)

    network_path = state.dir / "amortized.safetensors"
    if state.stage("vcex_fit") is None or not network_path.is_file():
        # fitted here, never taken from vcex's cache: the fit is what is timed
        explainer = AmortizedCounterfactual(bench.classifier, bench.latent_model)
        log(f"vcex: fitting AmortizedCounterfactual on {len(bench.train)} training images ({AMORTIZED_FIT})")
        started = time.perf_counter()
        explainer.fit(bench.train.images, **AMORTIZED_FIT, checkpoint=state.dir / "amortized.ckpt", progress=False)
        wall = time.perf_counter() - started
        explainer.save(network_path)
        (state.dir / "amortized.ckpt").unlink(missing_ok=True)
        state.finish(
            "vcex_fit",
            {
                # the explainer's own record adds the time of earlier, interrupted runs of the same fit
                "seconds": explainer.fit_seconds,
                "wall_seconds_this_process": round(wall, 3),
                "network": network_path.name,
                "fit": AMORTIZED_FIT,
                "settings": explainer.fit_settings(),
            },
        )
        log(f"vcex: fitted in {explainer.fit_seconds:.1f} s")
    else:
        explainer = AmortizedCounterfactual.load(network_path, bench.classifier, bench.latent_model)
        log(f"vcex: reusing the fit from {state.stage('vcex_fit')['finished']}")
    if state.stage("vcex_explain") is None:
        result = explainer.explain(images, target=targets)
        result.save(state.dir / "amortized-result.safetensors")
        state.finish("vcex_explain", {"seconds": round(result.seconds, 4), "result": "amortized-result.safetensors"})
        log(f"vcex: explained {len(images)} images in {result.seconds:.3f} s")
    if state.stage("vcex_refine") is None:
        # the one-pass prediction as the attack's warm start, with its per-image early stop
        explainer.refine_steps = REFINE_STEPS
        result = explainer.explain(images, target=targets)
        result.save(state.dir / "amortized-refine-result.safetensors")
        state.finish(
            "vcex_refine",
            {
                "seconds": round(result.seconds, 4),
                "refine_steps": REFINE_STEPS,
                "result": "amortized-refine-result.safetensors",
            },
        )
        log(f"vcex: explained {len(images)} images with refinement in {result.seconds:.3f} s")
    explainer.refine_steps = 0
    return explainer


def time_one_pass(cfrl, amortized, images, targets, state: State) -> None:
    """Per-counterfactual cost of both one-pass explainers, warm, measured back to back.

    A single explain call of 200 images lasts a fraction of a second, so one timing is at the mercy of
    whatever else the machine does in that moment; here each explainer runs TIMING_REPEATS times,
    alternating, after one untimed warm-up call each, and the median is kept."""
    if state.stage("timing") is not None:
        return
    from vcex.explainers import AmortizedCounterfactual

    # CounterfactualRL returns the counterfactuals only; vcex also decodes each original's reconstruction
    # unless told not to, so the like-for-like comparison is with reconstructions=False
    bare = AmortizedCounterfactual.load(
        state.dir / "amortized.safetensors", amortized.classifier, amortized.latent_model, reconstructions=False
    )
    calls = {
        "cfrl": lambda: cfrl.explain(images.numpy(), targets.numpy(), batch_size=CFRL_EXPLAIN_BATCH),
        "amortized": lambda: amortized.explain(images, target=targets),
        "amortized_bare": lambda: bare.explain(images, target=targets),
    }
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(TIMING_REPEATS):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - started)
    record = {
        name: {"median_ms_per_cf": 1000 * float(np.median(values)) / len(images), "seconds": values}
        for name, values in seconds.items()
    }
    state.finish("timing", {"repeats": TIMING_REPEATS, **record})
    log("one-pass timing (median ms/CF): " + ", ".join(f"{k} {v['median_ms_per_cf']:.3f}" for k, v in record.items()))


def run_attack(bench, images, targets, state: State) -> None:
    """vcex's CounterfactualAttack at its defaults: the per-image optimisation both methods amortise."""
    from vcex.pipeline import build_explainer

    if state.stage("attack_explain") is None:
        result = build_explainer("attack", bench).explain(images, target=targets)
        result.save(state.dir / "attack-result.safetensors")
        state.finish("attack_explain", {"seconds": round(result.seconds, 4), "result": "attack-result.safetensors"})
        log(f"attack: explained {len(images)} images in {result.seconds:.3f} s")


# ---- evaluation and report -------------------------------------------------------------------------------

ROWS = (
    ("cfrl", "cfrl_fit", "cfrl-result.safetensors"),
    ("amortized", "vcex_fit", "amortized-result.safetensors"),
    ("amortized_refine", "vcex_fit", "amortized-refine-result.safetensors"),
    ("attack", None, "attack-result.safetensors"),
)


def evaluate_all(bench, state: State) -> dict:
    from vcex.evaluation import predict_labels
    from vcex.explainers import CounterfactualResult
    from vcex.pipeline import evaluate_result

    metrics = {}
    for name, fit_stage, filename in ROWS:
        path = state.dir / filename
        if not path.is_file():
            continue
        result = CounterfactualResult.load(path)
        record = evaluate_result(result, bench)
        record["argmax_validity"] = round(
            float((predict_labels(bench.classifier, result.counterfactuals) == result.target).float().mean()), 6
        )
        record["fit_seconds"] = state.stage(fit_stage)["seconds"] if fit_stage else 0.0
        timing = (state.stage("timing") or {}).get(name)
        record["timed_ms_per_cf"] = timing["median_ms_per_cf"] if timing else None
        metrics[name] = record
    state.data["metrics"] = metrics
    state.write()
    return metrics


def target_checks(metrics: dict, timing: dict) -> list[tuple[str, bool]]:
    """Each figure the amortized explainer must reach, as (what was measured, met?)."""
    cfrl, one, refined, attack = (metrics[k] for k in ("cfrl", "amortized", "amortized_refine", "attack"))
    bare_ms = timing["amortized_bare"]["median_ms_per_cf"]
    fit_minutes = one["fit_seconds"] / 60
    fit_ratio = one["fit_seconds"] / max(cfrl["fit_seconds"], 1e-9)
    knn_gap = 100 * (one["knn_agreement"] - attack["knn_agreement"])
    l1_ratio = one["l1"] / attack["l1"]
    steps_ratio = refined["mean_steps"] / max(attack["mean_steps"], 1e-9)
    return [
        (f"fit time {fit_minutes:.1f} min (target <= 5 min)", fit_minutes <= 5),
        (f"fit time {fit_ratio:.3f}× CounterfactualRL's (target <= 0.1)", fit_ratio <= 0.1),
        (f"one pass: validity {pct(one['validity'])} (target >= 90%)", one["validity"] >= 0.9),
        (
            f"one pass: kNN agreement {pct(one['knn_agreement'])} vs the attack's {pct(attack['knn_agreement'])}, "
            f"{knn_gap:+.1f} points (target: within 10 points below, or above)",
            knn_gap >= -10,
        ),
        (f"one pass: L1 {l1_ratio:.2f}× the attack's (target <= 1.2)", l1_ratio <= 1.2),
        (
            f"one pass: {bare_ms:.3f} ms per counterfactual vs CounterfactualRL's {cfrl['timed_ms_per_cf']:.3f} ms, "
            f"warm medians of {TIMING_REPEATS} alternating calls, both returning the counterfactuals only "
            f"(with its reconstructions as well, vcex takes {one['timed_ms_per_cf']:.3f} ms) (target: no higher)",
            bare_ms <= cfrl["timed_ms_per_cf"],
        ),
        (f"with refinement: validity {pct(refined['validity'])} (target >= 99%)", refined["validity"] >= 0.99),
        (
            f"with refinement: kNN agreement {pct(refined['knn_agreement'])} vs the attack's "
            f"{pct(attack['knn_agreement'])} (target: at least the attack's)",
            refined["knn_agreement"] >= attack["knn_agreement"],
        ),
        (
            f"with refinement: mean steps {refined['mean_steps']:.2f} vs the cold-start attack's "
            f"{attack['mean_steps']:.1f}, {steps_ratio:.3f}× (target <= 1/3)",
            steps_ratio <= 1 / 3,
        ),
    ]


def render(metrics: dict, state: State, command: str, args) -> str:
    """The Markdown page: how the run was made, the table, the amortized explainer's targets, what it means."""
    stages = state.data["stages"]
    params = stages.get("cfrl_fit", {}).get("params", {})
    lines = [*_page_intro(state, command, args, params), "", f"## MNIST, {args.n} test images, target = runner-up"]
    lines += ["", *_results_table(metrics, _row_labels(params, args))]
    lines += _fit_ratio_and_targets(metrics, stages)
    lines += ["", COLUMN_NOTES]
    lines += resumed_note(stages, "Stages")
    return "\n".join(lines) + "\n"


def _page_intro(state: State, command: str, args, params: dict) -> list[str]:
    """Title, command, machine, versions, data, models and both methods' settings (``params``: CFRL's fit)."""
    import alibi

    import vcex

    stages = state.data["stages"]
    return [
        "# Peer benchmark: alibi CounterfactualRL vs vcex AmortizedCounterfactual (MNIST)",
        "",
        "Generated by `benchmarks/peers/alibi_cfrl/run.py` in its own virtual environment "
        "(`benchmarks/peers/alibi_cfrl/setup.sh`; alibi is never a dependency of vcex). "
        "Every figure on this page comes from the run below.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {cpu_model()}, nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}"
        f" (interop {torch.get_num_interop_threads()}), no GPU; niceness {state.data.get('niceness', 0)}, load "
        f"average {state.data.get('load_average_at_start')} at the start and {state.data.get('load_average_at_end')}"
        " at the end (1, 5, 15 min; the machine is shared, so timings include contention)",
        f"- Versions: alibi {alibi.__version__}, vcex {vcex.__version__}, torch {torch.__version__}, "
        f"numpy {np.__version__}, Python {platform.python_version()}",
        f"- Data: the first {args.n} images of vcex's fixed MNIST test split; target = the classifier's runner-up "
        "class on the original image, fixed before either method runs. Both methods are fitted on the same "
        f"{state.data['identity']['train_n']} training images (vcex's MNIST training split).",
        "- Models: the zoo's `mnist-cnn` (explained), `mnist-vae` (16-d latent, shared by both methods), "
        "`mnist-oracle` and a 5-NN on the training images (evaluation only), `mnist-im-ae` (IM1).",
        f"- CounterfactualRL: alibi's MNIST example settings (coeff_sparsity {CFRL_EXAMPLE['coeff_sparsity']}, "
        f"coeff_consistency {CFRL_EXAMPLE['coeff_consistency']:g}, batch_size {CFRL_EXAMPLE['batch_size']}, "
        f"train_steps {params.get('train_steps', args.train_steps)}; alibi's default is 50000), pytorch backend, "
        f"everything else at alibi's defaults (act_noise {params.get('act_noise')}, replay buffer "
        f"{params.get('replay_buffer_size')} batches, {params.get('exploration_steps')} exploration steps, "
        f"lr {params.get('lr_actor')}, hidden {params.get('actor_hidden_dim')}, num_workers "
        f"{params.get('num_workers')}, seed {params.get('seed')}). Latent dim 16 (our VAE; the example's own "
        f"autoencoder has {CFRL_EXAMPLE_LATENT_DIM}). The encoder is the VAE's posterior mean divided by a fixed "
        "per-dimension scale (max |z| over the training latents) so the data lie in the actor's [-1, 1] "
        "action range, and the decoder multiplies it back: decode(encode(x)) is exactly the VAE's "
        "reconstruction. The VAE's weights are frozen (gradients still flow through the decoder to the actor). "
        f"Explained with `explain(X, Y_t, batch_size={CFRL_EXPLAIN_BATCH})`.",
        "- AmortizedCounterfactual: vcex's defaults and the CLI's fitting settings "
        f"({stages.get('vcex_fit', {}).get('fit', '–')}), fitted fresh in this run (not taken from the cache).",
    ]


def _row_labels(params: dict, args) -> dict[str, str]:
    """The table's method names, by the keys of ROWS."""
    return {
        "cfrl": f"alibi CounterfactualRL, {params.get('train_steps', args.train_steps)} steps (one pass)",
        "amortized": "vcex AmortizedCounterfactual (one pass)",
        "amortized_refine": f"vcex AmortizedCounterfactual + refinement (up to {REFINE_STEPS} attack steps)",
        "attack": "vcex CounterfactualAttack, defaults (reference: per-image optimisation, no fit)",
    }


TABLE_HEADER = [
    "method", "fit s", "argmax = target ↑", "p > 0.998 ↑", "mean p(target)", "oracle agreement ↑",
    "kNN agreement ↑", "L1 ↓", "latent dist. ↓", "IM1 ↓", "mean steps", "ms / CF", "ms / CF, warm median ↓",
]  # fmt: skip


def _results_table(metrics: dict, labels: dict[str, str]) -> list[str]:
    """One table row per entry of ROWS that has metrics."""
    cells = []
    for name, fit_stage, _filename in ROWS:
        m = metrics.get(name)
        if m is None:
            continue
        realism = m.get("realism") or {}
        fit_seconds = num(m["fit_seconds"], 1) if fit_stage else "–"
        cells.append([
            labels[name], fit_seconds, pct(m["argmax_validity"]), pct(m["validity"]), num(m["mean_target_prob"]),
            pct(m["oracle_agreement"]), pct(m["knn_agreement"]), num(m["l1"]), num(m["latent_distance"]),
            num(realism.get("im1")), f"{m['mean_steps']:.1f}", f"{1000 * m['seconds_per_cf']:.2f}",
            num(m["timed_ms_per_cf"], 2),
        ])  # fmt: skip
    return markdown_table(TABLE_HEADER, cells)


def _fit_ratio_and_targets(metrics: dict, stages: dict) -> list[str]:
    """vcex's fit time as a share of CFRL's, and issue 9's targets met or missed, where the rows allow."""
    lines = []
    if "cfrl" in metrics and "amortized" in metrics and metrics["cfrl"]["fit_seconds"] > 0:
        ratio = metrics["amortized"]["fit_seconds"] / metrics["cfrl"]["fit_seconds"]
        lines += ["", f"vcex's fit took {ratio:.3f}× CounterfactualRL's fit time in this run."]
    if all(name in metrics for name in ("cfrl", "amortized", "amortized_refine", "attack")):
        lines += ["", "### The amortized explainer's targets (issue 9), checked on this run", ""]
        lines += [f"- {text}: {'met' if met else 'missed'}" for text, met in target_checks(metrics, stages["timing"])]
    return lines


COLUMN_NOTES = (
    "argmax = target: the explained classifier's top class on the counterfactual is the target "
    "(CounterfactualRL's own reward). p > 0.998: the target probability passes vcex's default threshold "
    "(vcex's `validity`). Oracle / kNN agreement: share of counterfactuals an independent network / a "
    "5-nearest-neighbour classifier on the training images also assigns to the target. L1: mean absolute "
    "pixel change. Latent dist.: both images re-encoded by the VAE. IM1 < 1: the counterfactual is "
    "reconstructed better by its target class's autoencoder than by its original class's. ms / CF: wall "
    "time of the whole explain call over all images, divided by their number (fitting excluded), for the "
    f"call that made the row's counterfactuals; warm median: the median of {TIMING_REPEATS} further calls of each "
    "one-pass method, alternating with the other's after a warm-up call, in the same process. "
    "Fit s: wall time of `fit` on the training images."
)


# ---- main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--train-steps",
        type=int,
        default=CFRL_EXAMPLE["train_steps"],
        help="CFRL training steps (default: alibi's MNIST example, 50000)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--n", type=int, default=200, help="test images to explain (default 200)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="Markdown report (default docs/benchmarks/peers-cfrl.md)"
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="results.json, fitted networks and counterfactuals; default: vcex's cache dir "
        "+ peers/alibi-cfrl/steps<N>-n<n>",
    )
    parser.add_argument("--num-workers", type=int, default=4, help="CFRL's DataLoader workers (alibi's default 4)")
    parser.add_argument("--seed", type=int, default=0, help="CFRL seed (alibi's default 0)")
    parser.add_argument("--log-every", type=int, default=None, help="CFRL log line every K steps (default steps/100)")
    args = parser.parse_args()
    if args.train_steps < 20 or args.n < 1:
        parser.error("--train-steps must be >= 20 and --n >= 1")
    if args.log_every is None:
        args.log_every = max(10, args.train_steps // 100)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = command_line(ROOT)

    from vcex.cache import cache_dir
    from vcex.explainers.amortized import parameter_fingerprint

    bench, images, targets = mnist_task(args.n, parser.error)
    work_dir = (
        Path(args.work_dir)
        if args.work_dir
        else cache_dir() / "peers" / "alibi-cfrl" / (f"steps{args.train_steps}-n{args.n}")
    )
    identity = {
        "train_steps": args.train_steps,
        "n": args.n,
        "seed": args.seed,
        "num_workers": args.num_workers,
        "classifier": parameter_fingerprint(bench.classifier),
        "latent_model": parameter_fingerprint(bench.latent_model),
        "images_and_targets": fingerprint(images, targets),
        "train_n": len(bench.train),
        "train": fingerprint(bench.train.images),
    }
    state = State(work_dir, identity)
    state.begin_run(command=command, threads=torch.get_num_threads())
    state.write()
    log(f"work dir {work_dir}; {args.n} images, targets fixed (runner-up class)")

    cfrl = run_cfrl(bench, images, targets, state, args)
    amortized = run_amortized(bench, images, targets, state)
    run_attack(bench, images, targets, state)
    time_one_pass(cfrl, amortized, images, targets, state)
    state.end_run()
    metrics = evaluate_all(bench, state)
    for name, m in metrics.items():
        log(
            f"{name}: fit {m['fit_seconds']:.1f} s, argmax {m['argmax_validity']:.3f}, p>{THRESHOLD} "
            f"{m['validity']:.3f}, oracle {m['oracle_agreement']:.3f}, kNN {m['knn_agreement']:.3f}, "
            f"L1 {m['l1']:.4f}, {1000 * m['seconds_per_cf']:.2f} ms/CF"
        )
    out = Path(args.out)
    record = write_report(out, render(metrics, state, command, args), state)
    log(f"wrote {out}, {record} and {state.path}")


if __name__ == "__main__":
    main()
