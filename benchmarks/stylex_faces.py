"""A StylEx-trained faces generator against the shipped faces-style (issue 27, item 3).

For the train-style folder given (and, once, for the baseline ``faces-style``) it measures, caching each step in
--work so an interrupted run resumes:

- sample quality: the attribute oracle's mean confidence per attribute on samples from z against real test faces,
  and the Frechet distance in the oracle's features (the figures ``vcex train-style`` stored in recipe.json);
- encoder fidelity: held-out PSNR and the oracle's agreement between test faces and their reconstructions;
- the StyleSpace purity probe (``vcex stylespace probe``, same N and k as the baseline page), on the encoded test
  faces or, with ``--invert-steps``, on their styles refined by that many inversion steps (both generators probed
  again, in their own cache folders);
- the W attack on the smiling classifier (``vcex explain``, CLI defaults): validity, oracle agreement, MNAC and
  identity preservation;

then writes docs/benchmarks/stylex-faces.md (+ .json, and the probe's strip page in stylex-faces/).

    OMP_NUM_THREADS=1 python benchmarks/stylex_faces.py --model RUN_FOLDER [--n-probe 100] [--n-attack 200]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

import torch

from vcex.cli import main as vcex
from vcex.data.faces_tasks import load_face_table
from vcex.evaluation import versions
from vcex.models import load_model
from vcex.models.faces import attribute_agreement
from vcex.models.stylegan import reconstruction_psnr
from vcex.models.stylex import load_stylex
from vcex.report.markdown import markdown_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
BASELINE = "faces-style"
# the bar: a coordinate this pure that flips its factor on this share of images, for each group
PURE, FLIPS = 0.70, 0.50
BAR_GROUPS = {"smiling": ("smiling",), "eyeglasses": ("eyeglasses",), "colour": ("dark_hair", "warm_background")}
FIDELITY_FACES = 2000


def _cached(path: Path, compute: object) -> dict:
    """The JSON in ``path``, computed by ``compute()`` and written there the first time."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1) + "\n")
    return value


def _fidelity(latent_model: object) -> dict:
    faces = load_face_table("test").images[:FIDELITY_FACES]
    oracle = load_model("faces-attributes", progress=False)
    with torch.no_grad():
        agreement = attribute_agreement(oracle, faces, latent_model)
    return {"psnr": round(reconstruction_psnr(latent_model, faces), 2), "agreement": agreement, "faces": len(faces)}


def _run_cli(arguments: list[str]) -> None:
    code = vcex(arguments)
    if code != 0:
        raise SystemExit(f"vcex {' '.join(arguments)} failed with code {code}")


def _probe_folder(invert_steps: int) -> str:
    return f"probe-inverted-{invert_steps}" if invert_steps else "probe"


def _probe(model: str, work: Path, n: int, threads: int, invert_steps: int = 0) -> dict:
    out = work / _probe_folder(invert_steps)
    if not (out / "probe.json").exists():
        _run_cli([
            "stylespace", "probe", "--dataset", "faces", "--classifier", "smiling", "--latent-model", model,
            "--n", str(n), "--k", "3", "--batch-size", "256", "--threads", str(threads), "--quiet", "--out", str(out),
            "--invert-steps", str(invert_steps),
        ])  # fmt: skip
    return json.loads((out / "probe.json").read_text())


def _attack(model: str | None, work: Path, n: int, threads: int) -> dict:
    out = work / "attack-w"
    if not (out / "metrics.json").exists():
        chosen = ["--latent-model", model] if model else []
        _run_cli([
            "explain", "--dataset", "faces", "--classifier", "smiling", *chosen, "--n", str(n),
            "--threads", str(threads), "--quiet", "--out", str(out),
        ])  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    keys = ("validity", "oracle_agreement", "mnac", "identity_preservation", "l2", "mean_steps", "threshold")
    return {key: metrics.get(key) for key in keys}


def _bar(probe: dict) -> dict[str, dict]:
    """Per group of the issue's bar, the best coordinate (largest purity among those with flip share >= FLIPS)."""
    bar = {}
    for group, factors in BAR_GROUPS.items():
        rows = [r for r in probe["coordinates"] if r["factor"] in factors and r["flip_share"] >= FLIPS]
        best = max(rows, key=lambda r: r["purity"], default=None)
        bar[group] = {
            "coordinate": None if best is None else best["coordinate"],
            "factor": None if best is None else best["factor"],
            "purity": None if best is None else best["purity"],
            "flip_share": None if best is None else best["flip_share"],
            "met": best is not None and best["purity"] >= PURE,
        }
    return bar


def _kinds(probe: dict) -> dict:
    """Per kind (conv, torgb): count, purity median / max, and the counts at the bar."""
    table = {}
    for kind in ("conv", "torgb"):
        rows = [r for r in probe["coordinates"] if r["kind"] == kind]
        purities = sorted(r["purity"] for r in rows)
        table[kind] = {
            "coordinates": len(rows),
            "median": purities[len(purities) // 2] if purities else None,
            "max": purities[-1] if purities else None,
            "pure": sum(r["purity"] >= PURE for r in rows),
            "pure_and_flips": sum(r["purity"] >= PURE and r["flip_share"] >= FLIPS for r in rows),
        }
    return table


def measure(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    recipe = json.loads((model_dir / "recipe.json").read_text())
    generators, compared = {}, {}
    judged = [(BASELINE, None, work / BASELINE)]
    for folder in [model_dir, *map(Path, args.compare)]:
        judged.append((folder.resolve().name, str(folder), work / folder.resolve().name))
        compared[folder.resolve().name] = json.loads((folder / "recipe.json").read_text())
    for name, model, folder in judged:
        latent_model = load_stylex(model) if model else load_model(BASELINE, progress=False)
        fidelity = _cached(folder / "fidelity.json", lambda lm=latent_model: _fidelity(lm))
        if model or args.invert_steps:
            probe = _probe(model or BASELINE, folder, args.n_probe, args.threads, args.invert_steps)
        else:
            probe = json.loads((DOCS / "stylespace-probe.json").read_text())  # the baseline page's run
        attack = _cached(folder / "attack.json", lambda m=model, f=folder: _attack(m, f, args.n_attack, args.threads))
        trained = compared.get(name, {})
        generators[name] = {
            "training": {key: trained.get(key) for key in ("command", "epochs_done", "train_seconds", "classifier")},
            "samples": trained.get("figures", {}).get("oracle_frechet"),
            "fidelity": fidelity,
            "probe": {"n": probe["n"], "k": probe["k"], "invert_steps": probe.get("invert_steps", 0),
                      "seconds": probe["seconds"], "kinds": _kinds(probe),
                      "bar": _bar(probe), "best_per_factor": probe["summary"]["best_per_factor"]},
            "attack": attack,
        }  # fmt: skip
    probes = _probe_folder(args.invert_steps)
    strips = work / model_dir.resolve().name / probes / "probe.html"
    assets = Path(args.out).with_suffix("")  # beside the page, named after it
    assets.mkdir(parents=True, exist_ok=True)
    shutil.copy(strips, assets / "probe.html")
    for folder in args.compare:
        name = Path(folder).resolve().name
        shutil.copy(work / name / probes / "probe.html", assets / f"probe-{name}.html")
    for picture in ("samples.png", "reconstructions.png"):
        if (model_dir / picture).exists():
            shutil.copy(model_dir / picture, assets / picture)
    return {
        "assets": assets.name,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "versions": versions(),
        "training": {key: recipe.get(key) for key in ("command", "epochs_done", "steps_done", "train_seconds",
                                                        "recipe", "init_from", "classifier", "model")},
        "sample_figures": recipe.get("figures", {}),
        "generators": generators,
    }  # fmt: skip


def _f(value: object, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render(record: dict) -> str:
    training, figures, generators = record["training"], record["sample_figures"], record["generators"]
    lines = [
        "# A StylEx-trained faces generator against faces-style (issue 27, item 3)",
        "",
        f"Command: `{record['command']}`  ",
        f"Training: `{training['command']}`: {training['epochs_done']} epochs, {training['steps_done']} steps, "
        f"{_f(training['train_seconds'], 0)} s of training. Versions: {json.dumps(record['versions'])}.",
        "",
        "## Samples from z",
        "",
    ]
    confidence, frechet = figures.get("oracle_confidence", {}), figures.get("oracle_frechet", {})
    names = list(confidence.get("real", {}))
    rows = [[kind, _f(confidence["mean"][kind])] + [_f(confidence[kind][n]) for n in names]
            for kind in ("real", "samples", "reconstructions") if kind in confidence]  # fmt: skip
    lines += markdown_table(["images", "mean", *names], rows) if rows else ["(no oracle figures)"]
    lines += [
        "",
        f"Frechet distance in the oracle's penultimate features to 500 real test faces: samples "
        f"{_f(frechet.get('samples'), 2)}, reconstructions {_f(frechet.get('reconstructions'), 2)}, 500 real "
        f"training faces {_f(frechet.get('real_train'), 2)} (the floor at this N). "
        f"[samples]({record['assets']}/samples.png), [reconstructions]({record['assets']}/reconstructions.png).",
        "",
        "## The probe, the attack and the encoder, beside the baseline",
        "",
        "The probe's faces: " + "; ".join(f"{name}: {_faces(g['probe'])}" for name, g in generators.items()) + ".",
        "",
    ]
    header = ["figure", *generators]
    table = []
    for kind in ("conv", "torgb"):
        table.append([f"{kind} coordinates / median purity / max"] + [
            f"{g['probe']['kinds'][kind]['coordinates']} / {_f(g['probe']['kinds'][kind]['median'], 2)} / "
            f"{_f(g['probe']['kinds'][kind]['max'], 2)}" for g in generators.values()])  # fmt: skip
        table.append([f"{kind}: purity >= {PURE} (and flips >= {FLIPS})"] + [
            f"{g['probe']['kinds'][kind]['pure']} ({g['probe']['kinds'][kind]['pure_and_flips']})"
            for g in generators.values()])  # fmt: skip
    for group in BAR_GROUPS:
        table.append([f"best {group} coordinate flipping >= {FLIPS}: purity (met?)"] + [
            f"{g['probe']['bar'][group]['coordinate'] or '–'} {_f(g['probe']['bar'][group]['purity'], 2)} "
            f"({'met' if g['probe']['bar'][group]['met'] else 'not met'})" for g in generators.values()])  # fmt: skip
    for key, label in (
        ("validity", "W attack validity (>= 0.95)"),
        ("oracle_agreement", "oracle agreement (>= 0.90)"),
        ("mnac", "MNAC (<= 1.5)"),
        ("identity_preservation", "identity preservation"),
    ):
        table.append([label] + [_f(g["attack"][key]) for g in generators.values()])  # fmt: skip
    table.append(["encoder fidelity: oracle agreement on reconstructions (mean / smiling)"] + [
        f"{_f(g['fidelity']['agreement']['mean'])} / {_f(g['fidelity']['agreement']['per_attribute']['smiling'])}"
        for g in generators.values()])  # fmt: skip
    table.append(["held-out PSNR (dB)"] + [_f(g["fidelity"]["psnr"], 2) for g in generators.values()])
    table.append(["FD of samples from z to real faces (oracle features)"] + [
        _f((g.get("samples") or {}).get("samples"), 1) for g in generators.values()])  # fmt: skip
    table.append(["training: epochs / seconds / conditioned on"] + [
        f"{g['training']['epochs_done']} / {_f(g['training']['train_seconds'], 0)} / {g['training']['classifier']}"
        if g.get("training", {}).get("command") else "(autoencoder)" for g in generators.values()])  # fmt: skip
    lines += markdown_table(header, table)
    page = f"{record['assets']}/probe.html"
    lines += ["", f"The StylEx generator's probe strips: [{page}]({page}).", ""]
    return "\n".join(lines)


def _faces(probe: dict) -> str:
    steps = probe.get("invert_steps", 0)
    faces = f"{probe['n']} test faces, k = {probe['k']:g}"
    return f"{faces}, encoded and inverted ({steps} steps)" if steps else f"{faces}, encoded"


def judge_parser(doc: str, page: str, work: str) -> argparse.ArgumentParser:
    """The options both judging scripts share: --model, --work, --n-probe, --n-attack, --threads, --out."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the vcex train-style folder to judge")
    parser.add_argument("--work", default=work, help="cache of every measured step")
    parser.add_argument("--n-probe", type=int, default=100)
    parser.add_argument("--n-attack", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(DOCS / page))
    return parser


def write_page(record: dict, out: str, render: object) -> None:
    """``out`` (.md, rendered) and its .json twin (the record)."""
    path = Path(out)
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    path.write_text(render(record))
    print(path)


def main() -> None:
    parser = judge_parser(__doc__, "stylex-faces.md", "/tmp/stylex-faces")
    parser.add_argument("--compare", nargs="*", default=[], help="more train-style folders judged beside it")
    parser.add_argument(
        "--invert-steps", type=int, default=0, help="probe the faces' styles refined by this many inversion steps"
    )
    args = parser.parse_args()
    write_page(measure(args), args.out, render)


if __name__ == "__main__":
    main()
