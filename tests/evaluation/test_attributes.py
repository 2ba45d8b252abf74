import pytest
import torch

from vcex.errors import InputError
from vcex.evaluation import mnac


def test_identical_predictions_change_nothing():
    probs = torch.rand(4, 6)
    assert torch.equal(mnac(probs, probs), torch.zeros(4, dtype=torch.long))


def test_known_counts_and_exclusion():
    original = torch.tensor([[0.9, 0.1, 0.8, 0.2], [0.6, 0.6, 0.6, 0.6]])
    counterfactual = torch.tensor([[0.1, 0.9, 0.7, 0.3], [0.4, 0.4, 0.4, 0.7]])
    assert mnac(original, counterfactual).tolist() == [2, 3]
    assert mnac(original, counterfactual, exclude=0).tolist() == [1, 2]
    assert mnac(original, counterfactual, exclude=[0, 1]).tolist() == [0, 1]
    assert mnac(original, counterfactual, threshold=0.65).tolist() == [2, 1]


def test_threshold_is_strict():
    # 0.5 is not above 0.5, so both images count the attribute as absent
    assert mnac(torch.tensor([[0.5]]), torch.tensor([[0.0]])).tolist() == [0]
    assert mnac(torch.tensor([[0.51]]), torch.tensor([[0.5]])).tolist() == [1]


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="same shape"):
        mnac(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        mnac(torch.rand(2, 3) * 3, torch.rand(2, 3))
    with pytest.raises(InputError, match="exclude"):
        mnac(torch.rand(2, 3), torch.rand(2, 3), exclude=[3])
    with pytest.raises(InputError, match="N=0"):
        mnac(torch.rand(0, 3), torch.rand(0, 3))
    with pytest.raises(InputError, match="attributes"):
        mnac(torch.rand(3), torch.rand(3))
