import pytest
import torch

from vcex.explainers.result import CounterfactualResult, ResultBuilder


def part(rows: range, with_latents: bool = True) -> CounterfactualResult:
    n = len(rows)
    index = torch.tensor(list(rows), dtype=torch.float32)
    return CounterfactualResult(
        method="toy",
        originals=index.view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
        counterfactuals=-index.view(n, 1, 1, 1).expand(n, 1, 2, 2).clone(),
        target=torch.tensor(list(rows)),
        original_class=torch.zeros(n, dtype=torch.long),
        original_prob=index / 10,
        target_prob=index / 20,
        success=torch.tensor([r % 2 == 0 for r in rows]),
        steps=torch.tensor(list(rows)),
        forward_passes=torch.ones(n, dtype=torch.long),
        backward_passes=torch.zeros(n, dtype=torch.long),
        seconds=0.0,
        threshold=0.9,
        original_latents=index[:, None].repeat(1, 3) if with_latents else None,
        settings={"k": 1},
    )


def test_result_builder_matches_concatenation_row_for_row():
    parts = [part(range(0, 3)), part(range(3, 7)), part(range(7, 8))]
    builder = ResultBuilder(8)
    for p in parts:
        builder.add(p)
    built = builder.result(seconds=1.5)
    joined = CounterfactualResult.concatenate(parts, seconds=1.5)
    for name in ("originals", "counterfactuals", "target", "target_prob", "success", "steps", "original_latents"):
        assert torch.equal(getattr(built, name), getattr(joined, name)), name
    assert built.reconstructions is None and built.settings == {"k": 1} and built.seconds == 1.5
    assert built.success.dtype == torch.bool and torch.equal(built.target, torch.arange(8))


def test_result_builder_refuses_a_short_result():
    builder = ResultBuilder(5)
    builder.add(part(range(0, 3)))
    with pytest.raises(RuntimeError, match="3 of 5 rows"):
        builder.result(seconds=0.0)


def test_a_saved_result_from_another_version_loads_without_its_unknown_keys(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from vcex.errors import CacheError

    path = part(range(4)).save(tmp_path / "chunk.safetensors")
    scalars_path = path.with_name(path.name + ".json")
    scalars = json.loads(scalars_path.read_text())
    scalars_path.write_text(json.dumps({**scalars, "added_by_a_later_version": 1}))
    save_file({**load_file(str(path)), "later_tensor": torch.zeros(4)}, str(path))
    loaded = CounterfactualResult.load(path)
    assert torch.equal(loaded.steps, torch.arange(4)) and loaded.settings == {"k": 1}
    # a field this version needs and the file lacks: refused as damage is, so the caller recomputes it
    scalars_path.write_text(json.dumps({k: v for k, v in scalars.items() if k != "method"}))
    with pytest.raises(CacheError, match=r"chunk.safetensors lacks method \(written by another vcex version"):
        CounterfactualResult.load(path)
    scalars_path.write_text("[1, 2]")
    with pytest.raises(CacheError, match="not an object"):
        CounterfactualResult.load(path)


def test_a_result_file_written_chunk_by_chunk_is_the_saved_whole(tmp_path):
    from safetensors.torch import load_file

    from vcex.explainers.result import ResultFileWriter, load_run

    parts = [part(range(0, 3)), part(range(3, 7)), part(range(7, 8))]
    whole = CounterfactualResult.concatenate(parts, seconds=2.5)
    whole.save(tmp_path / "whole.safetensors")
    with ResultFileWriter(tmp_path / "counterfactuals.safetensors", 8) as writer:
        for p in parts:
            writer.add(p)
        writer.seconds = 2.5
    saved, streamed = (
        load_file(str(tmp_path / "whole.safetensors")),
        load_file(str(tmp_path / "counterfactuals.safetensors")),
    )
    assert saved.keys() == streamed.keys()
    for name in saved:
        assert saved[name].dtype == streamed[name].dtype and torch.equal(saved[name], streamed[name]), name
    loaded = load_run(tmp_path)
    assert loaded.seconds == 2.5 and loaded.settings == {"k": 1} and loaded.threshold == 0.9
    middle = load_run(tmp_path, rows=slice(2, 5))
    assert torch.equal(middle.steps, torch.tensor([2, 3, 4])) and torch.equal(middle.originals, whole.originals[2:5])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_result_file_writer_stopped_short_or_fed_another_layout_leaves_no_file(tmp_path):
    from vcex.explainers.result import ResultFileWriter

    path = tmp_path / "counterfactuals.safetensors"
    with pytest.raises(RuntimeError, match="3 of 5 rows"), ResultFileWriter(path, 5) as writer:
        writer.add(part(range(0, 3)))
    with pytest.raises(RuntimeError, match="does not fit"), ResultFileWriter(path, 5) as writer:
        writer.add(part(range(0, 3)))
        writer.add(part(range(3, 5), with_latents=False))
    assert list(tmp_path.iterdir()) == []


def test_load_run_of_an_unfinished_run_says_how_to_finish_it(tmp_path):
    from vcex.errors import CacheError
    from vcex.explainers.result import load_run

    (tmp_path / "chunks").mkdir()
    with pytest.raises(CacheError, match="unfinished run: rerun the same vcex explain command"):
        load_run(tmp_path)
