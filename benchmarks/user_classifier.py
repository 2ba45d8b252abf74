"""A classifier that vcex did not train, explained with vcex's defaults: the case of issue 25.

Writes docs/benchmarks/user-classifier.md and user-classifier.json beside it:

    python benchmarks/user_classifier.py [--n 200] [--threads 2]

The user's model is a Fashion-MNIST classifier of a design unlike the zoo's (batch norm, a residual block, global
average pooling, dropout; its own input normalisation), trained here by a plain loop for 3 epochs (test accuracy
about 0.85), saved as TorchScript and loaded back from that file, as a user would hand it over. It is explained on
the first ``n`` test images toward the runner-up class with the zoo's Fashion-MNIST VAE, oracle and kNN as judges:

- the former defaults (threshold 0.998, latent unbounded), then 0.998 with the latent bound, then today's
  defaults (``threshold="auto"`` from the explained images, the latent bound), then per-class thresholds from the
  labelled training images (``class_thresholds``, what the CLI uses by default);
- the amortized explainer at 0.998 and at its default (``"auto"``, decided from its fitting images), fitted on
  10,000 training images for 5 epochs.

Failed images are also measured by how far they end from the data (pixel L2 to the nearest of 20,000 training
images, against the same for the real test images) and by their latents' norm: the former defaults let an image
that never reaches its target drift to flat white silhouettes. After every call the user's model is checked to
be untouched (every tensor of its state dict and every submodule's training flag).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vcex import AmortizedCounterfactual, CounterfactualAttack, class_thresholds, load_classifier
from vcex.data import load_dataset
from vcex.evaluation import diversity_reference, evaluate, penultimate_features, versions
from vcex.models import load_knn_oracle, load_latent_model
from vcex.report.markdown import markdown_table

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks" / "user-classifier.md"


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class UserNet(nn.Module):
    """Not a zoo design: strided stem with batch norm, a residual block, global average pooling, dropout."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = Residual(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(32, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - 0.286) / 0.353  # the user's own normalisation, inside the model
        x = self.down(self.block(self.stem(x)))
        return self.head(self.dropout(F.adaptive_avg_pool2d(x, 1).flatten(1)))


def train_user_model(train, epochs: int, path: Path) -> torch.jit.ScriptModule:
    """The user's training loop (not vcex's), then TorchScript saved and loaded back from ``path``."""
    torch.manual_seed(0)
    model = UserNet()
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(train.images), generator=generator).split(128):
            loss = F.cross_entropy(model(train.images[batch]), train.labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    torch.jit.script(model).save(str(path))
    return torch.jit.load(str(path))


def snapshot(model: nn.Module) -> tuple[dict, list[bool]]:
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def untouched(model: nn.Module, before: tuple[dict, list[bool]]) -> bool:
    state, modes = before
    now = model.state_dict()
    return all(torch.equal(state[k], now[k]) for k in state) and modes == [m.training for m in model.modules()]


def off_data(result, reference: torch.Tensor, latents: bool) -> dict:
    """How far the failed images ended from the data: nearest-training-image L2 and latent norm."""
    failed = ~result.success
    record = {"failed": int(failed.sum())}
    if failed.any():
        distance = torch.cdist(result.counterfactuals[failed].flatten(1), reference).min(1).values
        record["failed_nearest_l2"] = round(float(distance.mean()), 3)
        if latents and result.counterfactual_latents is not None:
            record["failed_latent_norm"] = round(float(result.counterfactual_latents[failed].norm(dim=1).mean()), 2)
    return record


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    train, test = load_dataset("fashion", "train"), load_dataset("fashion", "test")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    classifier = train_user_model(train, args.epochs, work / "user-fashion.pt")
    train_seconds = time.perf_counter() - started
    with torch.no_grad():
        probs = torch.cat([classifier(c).softmax(1) for c in test.images.split(1000)])
    accuracy = float((probs.argmax(1) == test.labels).float().mean())
    vae = load_latent_model("fashion-vae")
    oracle, knn = load_classifier("fashion-oracle"), load_knn_oracle("fashion")
    images = test.images[: args.n]
    reference = train.images[:20000].flatten(1)
    features = penultimate_features(oracle)
    reference_features = diversity_reference(train.images, train.labels, features, per_class=500)
    real_nearest = float(torch.cdist(images.flatten(1), reference).min(1).values.mean())
    before = snapshot(classifier)

    rows = []

    def measure(key: str, label: str, explainer, latents: bool = True) -> None:
        result = explainer.explain(images, target="second")
        metrics = evaluate(
            result, dataset="fashion", oracle=oracle, knn=knn, features=features, diversity_reference=reference_features
        )
        keep = ("validity", "oracle_agreement", "knn_agreement", "identity_preservation")
        keep += ("identity_preservation_pixels", "diversity", "l1")
        row = {"key": key, "label": label, **{k: metrics.get(k) for k in keep}}
        row.update(mean_steps=metrics["mean_steps"], seconds_per_cf=metrics["seconds_per_cf"])
        row.update(off_data(result, reference, latents))
        row["threshold"] = result.threshold
        row["threshold_reason"] = result.settings.get("threshold_reason")
        row["latent_bound"] = result.settings.get("latent_bound_radius")
        row["model_untouched"] = untouched(classifier, before)
        rows.append(row)
        print(f"{key}: {json.dumps({k: v for k, v in row.items() if k not in ('label', 'threshold_reason')})}")

    attack = lambda **kw: CounterfactualAttack(classifier, vae, **kw)  # noqa: E731
    before_label = "attack, former defaults (threshold 0.998, no latent bound)"
    measure("attack-before", before_label, attack(threshold=0.998, latent_bound=None))
    measure("attack-0.998", "attack, threshold 0.998 with the latent bound", attack(threshold=0.998))
    measure("attack-default", "attack, defaults (threshold auto from the explained images, latent bound)", attack())
    thresholds = class_thresholds(classifier, train.images, train.labels)
    training_label = "attack, class_thresholds on the training images (the CLI's default)"
    measure("attack-training", training_label, attack(threshold=thresholds))
    fit_images = train.images[:10000]
    for key, label, threshold in (
        ("amortized-0.998", "amortized, threshold 0.998", 0.998),
        ("amortized-default", "amortized, default (auto, from its fitting images)", "auto"),
    ):
        amortized = AmortizedCounterfactual(classifier, vae, threshold=threshold)
        amortized.fit(fit_images, epochs=5, progress=False)
        measure(key, label, amortized)
    return {
        "command": "python benchmarks/user_classifier.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'CPU'}",
        "versions": versions(),
        "n": args.n,
        "user_model": {
            "design": "stem conv+BN, residual block (2 conv+BN), conv+BN, global average pooling, dropout, linear",
            "epochs": args.epochs,
            "train_seconds": round(train_seconds, 1),
            "test_accuracy": round(accuracy, 4),
            "real_test_share_above_0.998": round(float((probs.max(1).values > 0.998).float().mean()), 4),
            "class_thresholds": [round(float(t), 4) for t in thresholds],
        },
        "real_nearest_l2": round(real_nearest, 3),
        "rows": rows,
    }


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return None
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render(record: dict) -> str:
    """The page from the record."""
    model = record["user_model"]
    table = "\n".join(
        markdown_table(
            ["row", "validity", "oracle", "kNN", "identity", "identity (pixels)", "diversity", "L1", "steps"]
            + ["failed: nearest L2", "failed: |z|"],
            [
                [
                    row["label"],
                    _cell(row["validity"]),
                    _cell(row["oracle_agreement"]),
                    _cell(row["knn_agreement"]),
                    _cell(row.get("identity_preservation")),
                    _cell(row.get("identity_preservation_pixels")),
                    _cell(row.get("diversity")),
                    _cell(row["l1"]),
                    _cell(row["mean_steps"], 0),
                    _cell(row.get("failed_nearest_l2")),
                    _cell(row.get("failed_latent_norm"), 1),
                ]
                for row in record["rows"]
            ],
        )
    )
    untouched_all = all(row["model_untouched"] for row in record["rows"])
    reasons = "\n".join(
        f"- `{row['key']}`: {row['threshold_reason']}" for row in record["rows"] if row["threshold_reason"]
    )
    state = (
        "untouched by every call (every tensor of its state dict and every submodule's training flag, checked "
        "after each row)"
        if untouched_all
        else "**changed** by a call (see the record)"
    )
    by_key = {row["key"]: row for row in record["rows"]}
    free, bounded, default = by_key["attack-before"], by_key["attack-0.998"], by_key["attack-default"]
    bound_text = (
        f"Without the bound an image that never reaches its target drifts off the data (latent norm "
        f"{free['failed_latent_norm']}) and decodes to a flat white silhouette; at the same threshold the bound "
        f"keeps the failed images at norm {bounded['failed_latent_norm']} and brings them from "
        f"{free['failed_nearest_l2']} to {bounded['failed_nearest_l2']} from the nearest training image (real images: "
        f"{record['real_nearest_l2']}). Under the default thresholds only {default['failed']} images fail, the hardest "
        f"ones: they end at the bound, {default['failed_nearest_l2']} from the nearest training image."
    )
    per_class = ", ".join(f"{t:.3f}" for t in model["class_thresholds"])
    versions_text = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    return f"""# A classifier that vcex did not train

Issue 25's case: a Fashion-MNIST classifier of another design than the zoo's ({model["design"]}; its own input
normalisation), trained by a plain loop for {model["epochs"]} epochs ({model["train_seconds"]} s), test accuracy
{model["test_accuracy"]}, saved as TorchScript and loaded back from the file. It is sure of few real images: it puts
{model["real_test_share_above_0.998"]:.0%} of the real test images above 0.998. Explained on the first {record["n"]}
test images toward the runner-up class, with the zoo's Fashion-MNIST VAE; judges: the zoo's Fashion-MNIST oracle
and a kNN on the training images. Identity: the share of counterfactuals whose nearest original (in the oracle's
features, or in pixels) is their own (chance: 1/{record["n"]}); diversity: the counterfactuals' spread per
target class against real images' (1: as varied as real images; near 0: one template per class).

{table}

"failed: nearest L2" is the mean pixel L2 from a failed counterfactual to its nearest of 20,000 training images
(real test images: {record["real_nearest_l2"]}); "failed: |z|" the mean norm of its latent (encoded images: about 3).
{bound_text}

The user's model was {state}.

Thresholds and why (as recorded in each result's settings):

{reasons}

Per-class thresholds from the labelled training images (`class_thresholds`): {per_class}.

Command: `{record["command"]}`; machine: {record["machine"]}; versions: {versions_text}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/vcex-user-classifier")
    parser.add_argument("--render-only", action="store_true", help="rewrite the page from its JSON record")
    args = parser.parse_args()
    record_path = PAGE.with_suffix(".json")
    if not args.render_only:
        record = run(args)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    record = json.loads(record_path.read_text())
    PAGE.write_text(render(record))
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
