"""AttFind on the shortcut classifiers of the global-explanation benchmark (issue 28, item 5, second bullet).

For seeds 0-9 of the task ``smiling-spurious`` (label: smile; a warm background agrees with it in 90% of the
training faces), each FaceCNN is trained exactly as benchmarks/faces_global_ground_truth.py trains it (its
functions and settings, imported); the true driver is the content factor with the largest intervention influence
(vcex.evaluation.ground_truth, as that benchmark computes it); AttFind (faces-style, N = 100 encoded test faces,
top 8 per class, as ``vcex stylespace attfind`` runs it) ranks StyleSpace coordinates, and each found attribute is
labelled by the attribute oracle (faces-attributes) reading of its own edit (``oracle_reading``: the coordinate set
to its found extreme on the N faces), mapped to its factor by ``descriptor_factor`` (smiling -> smile,
warm_background -> background_hue). A hit: the true driver's factor labels one of AttFind's top-3 attributes (the
colab's binary merge of both classes' lists; each class's own list is recorded too). Beside it, the rank of the same
driver in what the global benchmark's records (docs/benchmarks/faces-global/seeds-*.json) hold for these
classifiers; vcex global is not rerun.

    nice -n 10 env VCEX_HOME=... python benchmarks/attfind_shortcut.py --seeds 0 1 2 3 4
    nice -n 10 python benchmarks/attfind_shortcut.py --include-torgb --seeds 4 6 9  # toRGB coordinates too
    python benchmarks/attfind_shortcut.py --render-only

Everything is cached under --work (classifiers, AttFind's partial tables, per-seed records), so a rerun resumes;
every run rewrites docs/benchmarks/attfind-shortcut.md and .json, one section per setting (conv coordinates only,
as published; toRGB included), from the per-seed records found there, else from those the page's JSON holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from faces_global_ground_truth import (  # noqa: E402
    RECORDS,
    SIZE,
    TASKS,
    Settings,
    train_classifier,
)

from vcex.attribution.stylespace_attributes import (  # noqa: E402
    NUM_ATTRIBUTES,
    StyleSpaceEffects,
    apply_attributes,
    attfind,
    merge_binary,
    oracle_reading,
    stylespace_effects,
)
from vcex.cli.stylespace import load_style_model  # noqa: E402
from vcex.data.faces_tasks import load_face_table  # noqa: E402
from vcex.errors import InputError  # noqa: E402
from vcex.evaluation import versions  # noqa: E402
from vcex.evaluation.ground_truth import (  # noqa: E402
    CONTENT_FACTORS,
    descriptor_factor,
    driver_rank,
    intervention_images,
    intervention_influence,
)
from vcex.models import load_model  # noqa: E402
from vcex.models.stylex import WEIGHTS_FILE, resolve_stylex  # noqa: E402
from vcex.report.markdown import markdown_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks" / "attfind-shortcut.md"
TASK = TASKS["smiling-spurious"]
BASELINE_STYLE = "faces-style"
TOP = 3  # the figure: the true driver among the labels of AttFind's top 3
TARGET_HITS = 9  # of 10 classifiers
# file-name tag of each setting's records: conv coordinates only (as published) or toRGB included
SETTING_TAGS = {False: "", True: "torgb-"}
# the global benchmark's methods whose ranking of the true driver is shown beside AttFind's
GLOBAL_METHODS = {
    "attack": "W attack, latent probes",
    "attack_image": "W attack, image-read",
    "attack_away": "explaining away (W first)",
}


def style_fingerprint(style: object, name: str) -> str:
    """The zoo model's fingerprint, or a train-style folder's (shipped or not) name and the hash of its weights."""
    record = getattr(style, "training_record", None)
    if record and "fingerprint" in record:
        return str(record["fingerprint"])
    weights = (resolve_stylex(name) or Path(name)) / WEIGHTS_FILE
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10] if weights.exists() else "unknown"
    return f"{Path(name).name}-{digest}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def labelled(
    attributes: list,
    style: object,
    oracle: torch.nn.Module,
    images: torch.Tensor,
    before: torch.Tensor,
    extremes: dict[int, float],
) -> list[dict]:
    """Each attribute's row with the oracle's reading of its own edit: attribute name, its factor and purity."""
    names = oracle.attribute_names
    rows = []
    for attribute in attributes:
        value = extremes[(attribute.coordinate, attribute.direction)]
        after = apply_attributes(style, images, {attribute.coordinate: value})
        top, purity = oracle_reading(oracle, before, after)
        rows.append(attribute.row() | {
            "attribute": names[top], "factor": descriptor_factor(names[top]), "purity": round(purity, 4)
        })  # fmt: skip
    return rows


def run_seed(
    seed: int,
    settings: Settings,
    folder: Path,
    style: object,
    oracle: torch.nn.Module,
    test: object,
    renders: dict[str, torch.Tensor],
    include_torgb: bool = False,
) -> dict:
    """One classifier's record: truth (influence), AttFind's lists with their labels, hit or not (cached).

    ``include_torgb`` searches the toRGB coordinates too (not as published); its records and effects are kept
    under their own names in the same folder, so the classifiers are shared and the conv-only records untouched.
    """
    tag = SETTING_TAGS[include_torgb]
    path = folder / f"attfind-{tag}s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    classifier, train_record = train_classifier(TASK, seed, settings, folder)
    factors = {name: value[: settings.influence_faces] for name, value in test.factors.items()}
    influence = intervention_influence(
        classifier, factors, CONTENT_FACTORS, SIZE, levels=settings.levels, images=renders
    )
    driver = max(influence, key=influence.get)
    images = test.images[: settings.n]
    started = time.perf_counter()
    effects_path = folder / f"effects-{tag}s{seed}.pt"
    if effects_path.exists():  # our own file of plain tensors and a list of names; weights_only refuses anything else
        effects = StyleSpaceEffects(**torch.load(effects_path, weights_only=True))
    else:
        partial = folder / "attfind-partial"
        effects = stylespace_effects(
            style, classifier, images, include_torgb=include_torgb, resume_dir=partial, progress=False
        )
        torch.save(asdict(effects), effects_path)
    search_seconds = time.perf_counter() - started
    found, unexplained = {}, {}
    for target in range(effects.logits.shape[1]):
        try:
            found[target] = attfind(effects, target, num_attributes=NUM_ATTRIBUTES)
        except InputError as error:  # a class no image moves toward: reported, as the CLI does
            unexplained[str(target)] = str(error)
    extremes = {
        (int(c), direction): float(effects.extremes[slot, direction])
        for slot, c in enumerate(effects.coordinates) for direction in (0, 1)
    }  # fmt: skip
    before = apply_attributes(style, images, {})
    lists = {str(t): labelled(a, style, oracle, images, before, extremes) for t, a in found.items()}
    if len(found) == 2:
        lists["merged"] = labelled(merge_binary(effects, found[0], found[1]), style, oracle, images, before, extremes)
    hits = {key: any(row["factor"] == driver for row in rows[:TOP]) for key, rows in lists.items()}
    record = {
        "seed": seed,
        "include_torgb": include_torgb,
        **train_record,
        "influence": influence,
        "driver": driver,
        "stable_images": int(effects.stable.sum()),
        "coordinates_searched": len(effects.coordinates),
        "search_seconds": round(search_seconds, 1),
        "attributes": lists,
        "unexplained": unexplained,
        "hits": hits,
        "hit": hits.get("merged", False),
        "seconds": round(time.perf_counter() - started, 1),
    }
    path.write_text(json.dumps(record, indent=1, default=float))
    return record


def global_records() -> dict[int, dict]:
    """The global benchmark's smiling-spurious records by seed (its per-seed results; not rerun here)."""
    records = {}
    for path in sorted(RECORDS.glob("*seeds-*.json")):
        for record in json.loads(path.read_text())["records"]:
            if record["task"] == TASK.name:
                records.setdefault(record["seed"], record | {"file": path.name})
    return records


def global_rank(record: dict, method: str, driver: str) -> int | None:
    """The driver's rank in the global benchmark's ``method`` result for this classifier (None: not recorded)."""
    result = record.get(method)
    if not result:
        return None
    if "factor_scores" in result:
        return driver_rank(result["factor_scores"], [driver])
    ranking = result.get("ranking")
    return ranking.index(driver) + 1 if ranking and driver in ranking else None


def _top(rows: list[dict]) -> str:
    return "; ".join(f"{r['coordinate']} {r['direction']}: {r['attribute']} ({r['purity']:.2f})" for r in rows[:TOP])


def influence_differences(records: list[dict], known: dict[int, dict]) -> list[float]:
    """Per seed, the largest |influence difference| against the global benchmark's record of the same classifier."""
    return [
        max(abs(r["influence"][f] - known[r["seed"]]["influence"][f]) for f in r["influence"])
        for r in records
        if r["seed"] in known
    ]


def same_driver(records: list[dict], known: dict[int, dict]) -> int:
    """How many seeds have the same largest-influence factor as the global benchmark's record of them."""
    return sum(
        r["driver"] == max(known[r["seed"]]["influence"], key=known[r["seed"]]["influence"].get)
        for r in records
        if r["seed"] in known
    )


def misses_section(records: list[dict]) -> list[str]:
    """One line per miss: what AttFind's list held instead, where the driver first labels it, and how far its best
    attribute moves the logits."""
    lines = []
    for r in records:
        if r["hit"]:
            continue
        merged = r["attributes"].get("merged", [])
        labels = sorted({row["attribute"] for row in merged})
        rank = next((i for i, row in enumerate(merged, start=1) if row["factor"] == r["driver"]), None)
        best = max((abs(row["effect"]) for rows in r["attributes"].values() for row in rows), default=0.0)
        lines.append(
            f"- Seed {r['seed']} (driver {r['driver']}): the merged list's {len(merged)} attributes read as "
            f"{', '.join(labels)}; "
            + (f"the driver first labels attribute {rank}" if rank else "the driver labels none of them")
            + f"; the largest mean logit change of any found attribute is {best:.3f}."
        )
    return ["### Misses", "", *lines, ""] if lines else []


def verdict(hits: int, done: int) -> str:
    """Whether ">= TARGET_HITS of 10" is met: decided once 10 seeds ran or once too many missed for it."""
    if done - hits > 10 - TARGET_HITS:
        return "not met"
    return ("met" if hits >= TARGET_HITS else "not met") if done >= 10 else f"undecided, {10 - done} seeds not run"


def setting_summary(records: list[dict]) -> str:
    """The bold result line of one setting: hits of the seeds run, and the verdict on the target."""
    hits, done = sum(r["hit"] for r in records), len(records)
    partial = "" if done >= 10 else f" Seeds run: {done} of 10; the others are missing."
    return (
        f"the true driver is among the labels of AttFind's top 3 for {hits} of {done} classifiers "
        f"(target >= {TARGET_HITS} of 10: {verdict(hits, done)}).{partial}"
    )


def setting_section(records: list[dict], context: dict, known: dict[int, dict], compare: dict[int, dict]) -> list[str]:
    """One setting's per-seed table, misses, reproduction and cost lines; ``compare``: the other setting's
    records by seed (its hit shown beside this one's; empty for none)."""
    rows = []
    for r in records:
        ranks = {m: global_rank(known.get(r["seed"], {}), m, r["driver"]) for m in GLOBAL_METHODS}
        other = compare.get(r["seed"])
        rows.append([
            r["seed"], f"{r['driver']} ({r['influence'][r['driver']]:.2f})",
            f"{r['influence']['smile']:.2f} / {r['influence']['background_hue']:.2f}",
            _top(r["attributes"].get("merged", [])), "yes" if r["hit"] else "no",
            "/".join("yes" if r["hits"].get(k) else "no" for k in ("0", "1")),
            *([("yes" if other["hit"] else "no") if other else "-"] if compare else []),
            *[str(ranks[m]) if ranks[m] is not None else "-" for m in GLOBAL_METHODS],
        ])  # fmt: skip
    header = ["seed", "true driver (influence)", "influence smile / background_hue",
              "AttFind top 3 (merged): coordinate, oracle attribute (purity)", "hit", "hit in class 0 / 1 list",
              *(["hit, conv only"] if compare else []),
              *[f"vcex global: {name}, driver rank" for name in GLOBAL_METHODS.values()]]  # fmt: skip
    reproduced = influence_differences(records, known)
    return [
        f"Command: `{context['command']}`" + ("  " if context.get("note") else ""),
        *([context["note"]] if context.get("note") else []),
        f"Machine: {context['machine']}. Versions: " + ", ".join(f"{k} {v}" for k, v in context["versions"].items()),
        "",
        *markdown_table(header, rows),
        "",
        *misses_section(records),
        # a list stops early once its attributes have moved every image by 1 logit (AttFind's cap)
        "Attributes in the merged list (up to 8 per class; a class's list stops early once its images have been "
        "moved by 1 logit each): "
        + ", ".join(f"seed {r['seed']} {len(r['attributes'].get('merged', []))}" for r in records)
        + ".",
        "",
        "Retrained by the same function, yet not identical to the global benchmark's classifiers (why was not "
        "checked): the largest |difference| between this run's influence and its record's, over the 11 "
        "factors and the seeds: "
        + (f"{max(reproduced):.3f}" if reproduced else "no record")
        + f"; the true driver is the record's largest-influence factor for {same_driver(records, known)} of "
        f"{sum(r['seed'] in known for r in records)} seeds.",
        *(
            [
                "Against the conv-only run's classifier of the same seed (retrained, same seed): largest |influence "
                f"difference| {max(same):.3f} over {len(same)} seeds."
            ]
            if compare and (same := influence_differences(records, compare))
            else []
        ),
        "",
        "Time per seed (training + influence + AttFind + labels): "
        + ", ".join(f"seed {r['seed']} {r['seconds'] + r.get('train_seconds', 0):.0f} s" for r in records)
        + " (1 thread, shared CPU); coordinates searched per seed: "
        + ", ".join(sorted({str(r["coordinates_searched"]) for r in records}))
        + ".",
        "",
    ]


def payload_of(records: list[dict], context: dict, known: dict[int, dict]) -> dict:
    """One setting's JSON: its context, the counts, the verdict and the records with the global ranks."""
    hits, done = sum(r["hit"] for r in records), len(records)
    rows = [
        r | {"global_ranks": {m: global_rank(known.get(r["seed"], {}), m, r["driver"]) for m in GLOBAL_METHODS}}
        for r in records
    ]
    return {"context": context, "hits": hits, "seeds_done": done, "target_hits": TARGET_HITS,
            "met": verdict(hits, done) == "met", "verdict": verdict(hits, done), "records": rows}  # fmt: skip


def render(settings_records: dict[bool, list[dict]], contexts: dict[bool, dict]) -> tuple[str, dict]:
    """The page and its JSON payload from each setting's per-seed records (False: conv only, True: toRGB too)."""
    known = global_records()
    conv, torgb = settings_records[False], settings_records[True]
    style_name = contexts[False].get("latent_model", BASELINE_STYLE)
    by_seed = {r["seed"]: r for r in conv}
    lines = [
        "# AttFind on the shortcut classifiers" + ("" if style_name == BASELINE_STYLE else f" through `{style_name}`"),
        "",
        "Issue 28, item 5 (second bullet): on the shortcut classifiers of the global-explanation benchmark "
        "([faces-global.md](faces-global.md), task `smiling-spurious`: label smile > 0, a warm background agrees with "
        "it in 90% of the training faces), does AttFind's top 3 contain each classifier's true driver? Target: for "
        ">= 9 of 10 classifiers.",
        "",
        f"**Result (conv coordinates, as published): {setting_summary(conv)}**",
        "",
        *(
            [f"**Result with toRGB coordinates included (`include_torgb`): {setting_summary(torgb)}**", ""]
            if torgb
            else []
        ),
        "## Setup",
        "",
        "- Classifiers: seeds " + ", ".join(str(r["seed"]) for r in conv) + " of `smiling-spurious`, trained by "
        "`faces_global_ground_truth.train_classifier` with its settings (12,000 faces, 4 epochs, agreement 0.9), so "
        "they are the classifiers of its records.",
        "- Truth: intervention influence per content factor on 100 test faces (`vcex.evaluation.ground_truth`); the "
        "true driver is the factor with the largest influence, as that benchmark's 'largest influence' column.",
        f"- AttFind: {style_name}, the first 100 test faces encoded, every non-toRGB StyleSpace coordinate set to "
        "its min and max (2 x K x N decodes), top 8 per class (the images outside each class pushed toward it), then "
        "the colab's binary merge of both lists; no discriminator filter.",
        "- Labels: each attribute's own edit (its coordinate set to the found extreme on the 100 faces) read by the "
        "attribute oracle `faces-attributes` (`oracle_reading`: the attribute with the largest mean |delta p| and "
        "its share, the purity), mapped to factors by `descriptor_factor` (smiling -> smile, warm_background -> "
        "background_hue). Hit: the driver's factor labels one of the merged list's top 3; the columns 'class 0 / 1' "
        "say the same of each class's own list.",
        "- vcex global (not rerun): the true driver's rank in the global benchmark's records for the same seeds "
        "(factor scores merged per factor; explaining away by its ranking).",
        "",
        "## Per seed (conv coordinates, as published)",
        "",
        *setting_section(conv, contexts[False], known, {}),
    ]
    if torgb:
        lines += [
            "## With toRGB coordinates (`include_torgb`)",
            "",
            "The same setup, except that AttFind also sets each toRGB StyleSpace coordinate (the colour of each "
            "resolution's RGB output; the published AttFind leaves them out) to its min and max: "
            f"{torgb[0]['coordinates_searched']} coordinates instead of "
            f"{conv[0]['coordinates_searched'] if conv else '-'}. "
            "The classifiers are retrained by the same function with the same seeds. The seeds with a "
            "background-driven classifier (4, 6, 9) ran first. 'hit, conv only' repeats the table above.",
            "",
            *setting_section(torgb, contexts[True], known, by_seed),
        ]
    payload = payload_of(conv, contexts[False], known)
    if torgb:
        payload["include_torgb"] = payload_of(torgb, contexts[True], known)
    return "\n".join(lines), payload


def cached_records(work: Path, include_torgb: bool) -> dict[int, dict]:
    """One setting's per-seed records under ``work`` (every folder: groups of seeds may have run apart), by seed."""
    paths = sorted(work.glob(f"*/attfind-{SETTING_TAGS[include_torgb]}s*.json"))
    return {r["seed"]: r for r in (json.loads(p.read_text()) for p in paths)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "out" / "attfind-shortcut"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--page", default=str(PAGE))
    parser.add_argument("--render-only", action="store_true", help="rewrite the page from the cached records")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--include-torgb", action="store_true", help="search the toRGB coordinates too (records kept apart)"
    )
    parser.add_argument(
        "--latent-model",
        default=BASELINE_STYLE,
        help="the style generator AttFind searches: a zoo name or a vcex train-style folder (default faces-style); "
        "give another --page and --work for another generator",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    style = load_style_model(args.latent_model, progress=False).requires_grad_(False)
    # the key leaves the seeds out (its default list), so every group of seeds shares one folder
    settings = Settings(tasks=(TASK.name,), style=style_fingerprint(style, args.latent_model))
    folder = Path(args.work) / settings.key()
    folder.mkdir(parents=True, exist_ok=True)
    if not args.render_only:
        oracle = load_model("faces-attributes", progress=False)
        test = load_face_table("test", SIZE)
        factors = {name: value[: settings.influence_faces] for name, value in test.factors.items()}
        renders = intervention_images(factors, CONTENT_FACTORS, SIZE, settings.levels)
        for seed in args.seeds:
            record = run_seed(seed, settings, folder, style, oracle, test, renders, args.include_torgb)
            log(f"seed {seed}: driver {record['driver']}, hit {record['hits']}, {record['seconds']:.0f} s")
    # the page's own JSON keeps each setting's published records, so a setting not cached under --work (or a
    # seed of it) is rendered from them, and rerunning one setting leaves the other's records as they were
    json_path = Path(args.page).with_suffix(".json")
    published = json.loads(json_path.read_text()) if json_path.exists() else {}
    published_settings = {False: published, True: published.get("include_torgb", {})}
    settings_records, contexts = {}, {}
    for include_torgb, old in published_settings.items():
        cached = cached_records(Path(args.work), include_torgb)
        found = {r["seed"]: {k: v for k, v in r.items() if k != "global_ranks"} for r in old.get("records", [])}
        found.update(cached)
        settings_records[include_torgb] = [found[seed] for seed in sorted(found)]
        flag = " --include-torgb" if include_torgb else ""
        fresh = {
            "command": f"nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/attfind_shortcut.py{flag} --seeds "
            + " ".join(str(seed) for seed in sorted(cached))
            + "; this page: "
            + " ".join(shlex.quote(a) for a in sys.argv),
            "machine": f"{platform.machine()}, {platform.processor() or 'CPU'}, 1 torch thread, shared cores",
            "versions": versions(),
            "latent_model": Path(args.latent_model).name,
            "settings": asdict(settings) | {"seeds": sorted(found), "include_torgb": include_torgb},
        }
        # the context of the run that computed the records is kept, not a later re-render's
        contexts[include_torgb] = fresh if cached or "context" not in old else old["context"]
    page, payload = render(settings_records, contexts)
    Path(args.page).write_text(page)
    json_path.write_text(json.dumps(payload, indent=1, default=float))
    log(f"wrote {args.page} ({', '.join(f'{len(r)} seeds' for r in settings_records.values())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
