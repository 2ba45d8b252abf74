"""What the StyleSpace purity probe can read at best: the attribute oracle on true single-factor edits (issue 27).

The probe (``vcex.evaluation.stylespace``) scores a generator coordinate by how purely the attribute oracle
``faces-attributes`` reads its edit. This script asks the same of the faces' renderer itself: each content factor of
the first N test faces is moved alone (binary factors flipped; continuous ones by -a and +a of their range, clamped;
the background hue turned by a, as the hue wraps), the faces are drawn again and the oracle read before and after.
Purity and flip share are the probe's definitions (``top_and_purity``; a flip is the top attribute crossing 0.5
under either sign). A perfect generator coordinate that moves one factor could score these, no more: they are the
ceiling of issue 27's bar (purity >= 0.70 with flips on >= 50% of the faces).

With ``--latent-model NAME|FOLDER`` the drawn faces (edited and not) are read after a round trip through that
model's encoder and decoder: what its reconstructions keep of a perfect edit, so the loss owed to the decoder's
fidelity is told apart from the StyleSpace's entanglement.

With ``--overlay`` (and a style generator as ``--latent-model``) the true change is added to the generator's own
decode of each face instead: the oracle reads ``decode(x) + (edit(x) - x)`` against ``decode(x)``, what a
coordinate that drew exactly the renderer's change would score under the probe, whose images are decodes. With
``--invert-steps`` the decodes are of the styles the probe's ``--invert-steps`` uses.

    python benchmarks/probe_ceiling.py [--n 100] [--latent-model faces-style] [--overlay] [--invert-steps 100]
        [--out docs/benchmarks/probe-ceiling.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vcex.data.faces_tasks import CONTENT_FACTORS, load_face_table
from vcex.data.synthetic_faces import FACTORS, render_faces
from vcex.evaluation import versions
from vcex.evaluation.stylespace import encoded_styles, top_and_purity
from vcex.models import load_model
from vcex.models.stylex import SHIPPED_STYLEX, load_stylex

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "probe-ceiling.json"


def edited(factors: dict[str, torch.Tensor], name: str, amount: float, sign: int) -> dict[str, torch.Tensor]:
    """``factors`` with ``name`` moved by ``sign * amount`` of its range (flipped if binary, turned if the hue)."""
    spec, values = FACTORS[name], factors[name]
    if spec.binary:
        moved = 1 - values
    elif name == "background_hue":
        moved = (values + sign * amount) % 1.0
    else:
        moved = (values + sign * amount * (spec.high - spec.low)).clamp(spec.low, spec.high)
    return {**factors, name: moved}


def measure(
    n: int, amounts: tuple[float, ...], latent_model: str | None = None, overlay: bool = False, invert_steps: int = 0
) -> dict:
    faces = load_face_table("test")
    factors = {name: values[:n] for name, values in faces.factors.items()}
    oracle = load_model("faces-attributes", progress=False).eval()
    names, size = list(oracle.attribute_names), faces.images.shape[-1]
    draw = render_faces
    if latent_model is not None:
        stylex = Path(latent_model).is_dir() or latent_model in SHIPPED_STYLEX
        model = load_stylex(latent_model) if stylex else load_model(latent_model, progress=False)
        model.eval()

        def draw(values: dict, size: int) -> torch.Tensor:
            return model.decode(model.encode(render_faces(values, size=size)))

    if overlay:
        real = render_faces(factors, size=size)
        styles = encoded_styles(model, real, invert_steps=invert_steps)
        with torch.no_grad():
            decoded = model.decode_styles(styles)

        def draw(values: dict, size: int) -> torch.Tensor:
            return (decoded + render_faces(values, size=size) - real).clamp(0, 1)

    rows = []
    with torch.no_grad():
        before = torch.sigmoid(oracle(draw(factors, size=size)))
        for name in CONTENT_FACTORS:
            for amount in (1.0,) if FACTORS[name].binary else amounts:
                moved = [draw(edited(factors, name, amount, sign), size=size) for sign in (-1, 1)]
                after = [torch.sigmoid(oracle(images)) for images in moved]
                change = torch.stack([(reading - before).abs() for reading in after]).mean((0, 1))
                top, purity = top_and_purity(change)
                crossed = torch.stack([(reading[:, top] > 0.5) != (before[:, top] > 0.5) for reading in after])
                rows.append({
                    "factor": name, "amount": None if FACTORS[name].binary else amount,
                    "top_attribute": names[int(top)],
                    "purity": round(float(purity), 3), "flip_share": round(float(crossed.any(0).float().mean()), 3),
                    "change": {a: round(float(v), 3) for a, v in zip(names, change.tolist())},
                })  # fmt: skip
    return {
        "n": n, "oracle": "faces-attributes", "latent_model": latent_model, "overlay": overlay,
        "invert_steps": invert_steps, "versions": versions(), "rows": rows,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="test faces (the probe's first N)")
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.25, 0.5], help="moves, in factor ranges")
    parser.add_argument("--latent-model", help="read the faces after this model's round trip (zoo name or folder)")
    parser.add_argument("--overlay", action="store_true", help="add the true change to the model's own decodes")
    parser.add_argument("--invert-steps", type=int, default=0, help="with --overlay: decodes of inverted styles")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    if (args.overlay or args.invert_steps) and args.latent_model is None:
        parser.error("--overlay and --invert-steps need --latent-model (a style generator)")
    if args.invert_steps and not args.overlay:
        parser.error("--invert-steps applies to --overlay's decodes")
    record = measure(args.n, tuple(args.amounts), args.latent_model, args.overlay, args.invert_steps)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for row in record["rows"]:
        amount = "flip" if row["amount"] is None else f"+-{row['amount']:g}"
        print(f"{row['factor']:15s} {amount:6s} {row['top_attribute']:16s} purity {row['purity']:.2f} "
              f"flips {row['flip_share']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
