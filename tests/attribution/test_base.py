"""What every descriptor reader's local attributions share: ranking each counterfactual's changes, saving them."""

from __future__ import annotations

import pytest
import torch

from vcex.attribution import LocalAttribution, rank_by_magnitude
from vcex.errors import CacheError, InputError


def local(scores: list[list[float]], usable: list[bool]) -> LocalAttribution:
    scores = torch.tensor(scores)
    before = torch.full_like(scores, 0.5)
    names = [f"d{j}" for j in range(scores.shape[1])]
    reasons = {names[j]: "held-out accuracy at chance" for j, keep in enumerate(usable) if not keep}
    return LocalAttribution(
        scores, names, torch.tensor(usable), reasons, before, before + scores, torch.ones(len(usable)),
        torch.full((len(usable),), 0.5),
    )  # fmt: skip


def test_ranks_follow_the_size_of_each_change_not_its_sign():
    ranks = rank_by_magnitude(torch.tensor([[0.1, -0.4, 0.2, 0.0], [0.3, 0.3, -0.5, 0.05]]))
    assert ranks.tolist() == [[3, 1, 2, 4], [2, 3, 1, 4]]  # a tie goes to the first descriptor


def test_unusable_descriptors_are_never_ranked_and_do_not_push_others_down():
    attributions = local([[0.9, -0.4, 0.2], [0.0, 0.1, -0.3]], usable=[False, True, True])
    assert attributions.ranks().tolist() == [[0, 1, 2], [0, 2, 1]]
    assert attributions.ranked() == [
        [
            {"name": "d1", "change": pytest.approx(-0.4), "rank": 1},
            {"name": "d2", "change": pytest.approx(0.2), "rank": 2},
        ],
        [
            {"name": "d2", "change": pytest.approx(-0.3), "rank": 1},
            {"name": "d1", "change": pytest.approx(0.1), "rank": 2},
        ],
    ]
    assert [row[0]["name"] for row in attributions.ranked(k=1)] == ["d1", "d2"]
    assert [name for name, _ in attributions.top(0, k=2)] == ["d1", "d2"]  # top() ranks as ranked() does


@pytest.mark.parametrize(
    ("scores", "usable", "message"),
    [(torch.zeros(3), None, r"\(N, A\) tensor"), (torch.zeros(2, 3), torch.ones(2, dtype=torch.bool), r"\(3,\) bool")],
)
def test_rank_by_magnitude_refuses_bad_shapes(scores, usable, message):
    with pytest.raises(InputError, match=message):
        rank_by_magnitude(scores, usable)


def test_saved_attributions_load_back_with_their_record_and_ranks(tmp_path):
    from safetensors.torch import load_file

    attributions = local([[0.9, -0.4, 0.2], [0.0, 0.1, -0.3], [0.2, 0.0, 0.0]], usable=[True, False, True])
    path = attributions.save(tmp_path / "attributions.safetensors", {"fingerprint": "abc"})
    loaded, record = LocalAttribution.load(path)
    assert record["fingerprint"] == "abc" and record["names"] == ["d0", "d1", "d2"]
    assert torch.equal(loaded.scores, attributions.scores) and loaded.reasons == attributions.reasons
    assert torch.equal(loaded.usable, attributions.usable) and torch.equal(loaded.chance, attributions.chance)
    assert torch.equal(load_file(str(path))["rank"], attributions.ranks())  # for readers outside vcex
    rows, _ = LocalAttribution.load(path, rows=slice(1, 3))
    assert torch.equal(rows.scores, attributions.scores[1:3]) and torch.equal(rows.usable, attributions.usable)
    joined = LocalAttribution.concatenate([attributions.select(torch.arange(1)), rows])
    assert torch.equal(joined.counterfactual_probs, attributions.counterfactual_probs)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CacheError, match="cannot read local attributions"):
        LocalAttribution.load(path)
