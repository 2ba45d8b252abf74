import pytest
import torch
from torch import nn

from vcex.cache import cache_dir, load_state_into, load_weights, save_weights
from vcex.errors import CacheError


def test_cache_dir_follows_vcex_home(tmp_path, monkeypatch):
    monkeypatch.setenv("VCEX_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" and cache_dir().is_dir()


def test_round_trip_keeps_tensors_and_record(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    path = save_weights(tmp_path / "m.safetensors", tensors, {"seed": 3, "note": "x"})
    loaded, record = load_weights(path)
    assert torch.equal(loaded["w"], tensors["w"]) and torch.equal(loaded["b"], tensors["b"])
    assert record == {"seed": 3, "note": "x"}
    assert not (tmp_path / "m.safetensors.tmp").exists()


def test_corrupt_file_raises_cache_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CacheError, match="not a readable safetensors"):
        load_weights(path)


def test_pickle_is_never_loaded(tmp_path):
    path = tmp_path / "weights.safetensors"
    torch.save({"w": torch.ones(2)}, path)  # a pickle in disguise
    with pytest.raises(CacheError):
        load_weights(path)


def test_shape_mismatch_names_the_parameter():
    module = nn.Linear(4, 2)
    with pytest.raises(CacheError, match="weight has shape"):
        load_state_into(module, {"weight": torch.zeros(3, 4), "bias": torch.zeros(2)}, "file")
