import torch

from vcex.evaluation import evaluate
from vcex.explainers.result import CounterfactualResult
from vcex.report import grid_image, signed_difference, write_report
from vcex.report.html import global_section, metrics_table


def _result(n=3):
    originals = torch.rand(n, 1, 8, 8)
    return CounterfactualResult(
        method="attack",
        originals=originals,
        counterfactuals=originals.flip(-1),
        target=torch.ones(n, dtype=torch.long),
        original_class=torch.zeros(n, dtype=torch.long),
        original_prob=torch.full((n,), 0.1),
        target_prob=torch.full((n,), 0.99),
        success=torch.ones(n, dtype=torch.bool),
        steps=torch.arange(n),
        forward_passes=torch.arange(n) + 1,
        backward_passes=torch.arange(n),
        seconds=0.5,
        threshold=0.9,
        reconstructions=originals,
    )


def test_signed_difference_colours():
    before = torch.zeros(1, 1, 2)
    after = torch.tensor([[[1.0, 0.0]]])
    colours = signed_difference(before, after)
    assert colours[:, 0, 0].tolist() == [1.0, 0.0, 0.0]  # brighter: red
    assert colours[:, 0, 1].tolist() == [1.0, 1.0, 1.0]  # unchanged: white
    assert signed_difference(after, before)[:, 0, 0].tolist() == [0.0, 0.0, 1.0]  # darker: blue


def test_grid_image_size():
    picture = grid_image([[torch.rand(1, 8, 8)] * 3] * 2, zoom=2, pad=1)
    assert picture.size == (3 * 17 + 1, 2 * 17 + 1)


def test_report_holds_table_and_examples(tmp_path):
    result = _result()
    metrics = evaluate(result, dataset="toy")
    path = write_report(
        tmp_path / "report.html", "toy report", [metrics, {**metrics, "method": "pixel"}], [result, result], examples=2
    )
    text = path.read_text()
    assert "toy report" in text and text.count("data:image/png;base64") == 3  # 2 strips + comparison
    assert "validity" in metrics_table([metrics]) and "pixel" in text


def test_metrics_table_shows_identity_and_diversity_when_measured():
    metrics = evaluate(_result(), dataset="toy")
    assert "identity ↑<" not in metrics_table([metrics])  # not measured: no empty column
    assert "identity (pixels) ↑" in metrics_table([metrics])  # needs no oracle: always measured
    table = metrics_table([{**metrics, "identity_preservation": 0.125, "diversity": 0.04}])
    assert "identity ↑" in table and "<td>0.125</td>" in table and "<td>0.04</td>" in table


def test_report_says_which_threshold_each_class_used_and_why(tmp_path):
    result = _result()
    metrics = evaluate(result, dataset="toy")
    per_class = {
        **metrics,
        "method": "pixel",
        "threshold": [0.998, 0.81],
        "settings": {"threshold_reason": "auto: per class, the median confidence"},
    }
    text = write_report(tmp_path / "r.html", "t", [metrics, per_class], [result, result], class_names=["a", "b"])
    text = text.read_text()
    assert "<h2>Thresholds</h2>" in text and "<b>attack</b>: 0.9</li>" in text
    assert "<b>pixel</b>: a 0.998, b 0.810 (auto: per class, the median confidence)" in text


def test_report_lists_each_examples_top_changes_by_size(tmp_path):
    from vcex.attribution import LocalAttribution

    scores = torch.tensor([[0.1, -0.6, 0.3, 0.9], [0.2, 0.0, -0.05, 0.0], [0.0, 0.0, 0.0, 0.0]])
    usable = torch.tensor([True, True, True, False])  # d3 changes most, but its probe is at chance
    probs = torch.full_like(scores, 0.5)
    attributions = LocalAttribution(
        scores, ["smile", "beard", "glasses", "noise"], usable, {"noise": "at chance"}, probs, probs + scores,
        torch.ones(4), torch.full((4,), 0.5),
    )  # fmt: skip
    result = _result()
    metrics = evaluate(result, dataset="toy")
    note = "read by latent probes"
    text = write_report(
        tmp_path / "report.html", "toy", [metrics], [result], examples=2, attributions=attributions,
        attribution_note=note, top_k=2,
    ).read_text()  # fmt: skip
    assert "1. beard −0.60, 2. glasses +0.30</span>" in text
    assert "1. smile +0.20, 2. glasses −0.05</span>" in text
    assert "noise" not in text.split(note)[1] and text.count('class="changes"') == 2  # 2 examples shown
    assert 'class="changes"' not in write_report(tmp_path / "plain.html", "toy", [metrics], [result]).read_text()


def test_global_section_lists_each_explanations_top_descriptors_with_intervals():
    def row(name: str, score: float) -> dict:
        return {"name": name, "score": score, "ci_low": score - 0.1, "ci_high": score + 0.1}

    record = {
        "descriptors": "morphometrics",
        "reader": "latent",
        "classes": {
            "3": {"label": "target 3", "n": 12, "confidence": 0.9, "ranking": ["slant", "stroke-width"],
                  "descriptors": [row("stroke-width", 0.2), row("slant", -0.4), row("area", 0.01)]},
            "attack": {"label": "CounterfactualAttack", "n": 5, "confidence": 0.9, "ranking": [],
                       "descriptors": [row("width", 0.0)]},
        },
    }  # fmt: skip
    text = global_section(record, note="see global/global.html", top_k=3)
    # a class row is the class the counterfactuals move towards; ranked descriptors in order, the rest dashes;
    # numbers get a typographic minus, names keep their hyphens
    assert (
        "<td>→ 3</td><td>12</td><td>slant −0.40 [−0.50, −0.30]</td><td>stroke-width +0.20 [+0.10, +0.30]</td>"
        "<td>–</td>" in text
    )
    assert "<td>attack</td><td>5</td><td>–</td><td>–</td><td>–</td>" in text
    assert "90% bootstrap interval" in text and "latent probes" in text and "see global/global.html" in text
    # nothing to show: nothing written; only a reason: the reason under the heading
    assert global_section(None) == ""
    assert global_section(None, "No global explanation: turned off.").endswith("turned off.</p>")
