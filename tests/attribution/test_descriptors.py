"""Descriptors: the three sources and the bad-input errors."""

from __future__ import annotations

import re

import pytest
import torch

from vcex.attribution import Descriptors
from vcex.data.synthetic_faces import BINARY_ATTRIBUTES, NUISANCE_FACTORS, make_faces
from vcex.errors import InputError


def write_csv(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_from_faces_binary_attributes_and_continuous_factors():
    faces = make_faces(300, size=32, seed=0)
    descriptors = Descriptors.from_faces(faces)
    assert len(descriptors) == 300
    assert set(BINARY_ATTRIBUTES) <= set(descriptors.names)
    assert descriptors.binary == frozenset(BINARY_ATTRIBUTES)
    assert "smile" in descriptors.names and not descriptors.is_binary("smile")
    assert not set(NUISANCE_FACTORS) & set(descriptors.names)
    assert all(v.shape == (300,) and v.dtype == torch.float32 for v in descriptors.values.values())


def test_from_csv_orders_by_index_and_detects_binary(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["thick,index,glasses", "2.5,2,1", "0.5,0,0", "1.5,1,1"])
    descriptors = Descriptors.from_csv(path, n_images=3)
    assert descriptors.names == ["thick", "glasses"]
    assert descriptors.values["thick"].tolist() == [0.5, 1.5, 2.5]
    assert descriptors.binary == frozenset({"glasses"})


def test_auto_binary_detection_and_table():
    descriptors = Descriptors({"a": torch.tensor([0, 1, 1]), "b": torch.tensor([0.1, 0.2, 0.3])})
    assert descriptors.binary == frozenset({"a"})
    assert descriptors.table().shape == (3, 2)


def test_one_class_descriptor_is_refused():
    with pytest.raises(InputError, match="only one class"):
        Descriptors({"a": torch.ones(10), "b": torch.arange(10.0)})


def test_nan_in_csv_names_column_and_row(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["index,thick,glasses", "0,1.0,0", "1,,1", "2,3.0,1"])
    with pytest.raises(InputError, match=r"column 'thick', line 3 \(image 1\)"):
        Descriptors.from_csv(path)
    path = write_csv(tmp_path / "e.csv", ["index,thick", "0,1.0", "1,nan"])
    with pytest.raises(InputError, match="NaN"):
        Descriptors.from_csv(path)


def test_non_numeric_csv_value(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["index,colour", "0,1", "1,red"])
    with pytest.raises(InputError, match="non-numeric value 'red'"):
        Descriptors.from_csv(path)


def test_csv_index_column_missing_or_bad(tmp_path):
    with pytest.raises(InputError, match="no 'index' column"):
        Descriptors.from_csv(write_csv(tmp_path / "a.csv", ["id,x", "0,1", "1,2"]))
    with pytest.raises(InputError, match="missing 1"):
        Descriptors.from_csv(write_csv(tmp_path / "b.csv", ["index,x", "0,1", "2,2"]))
    with pytest.raises(InputError, match="repeats image indices 0"):
        Descriptors.from_csv(write_csv(tmp_path / "c.csv", ["index,x", "0,1", "0,2"]))
    with pytest.raises(InputError, match="non-negative integer"):
        Descriptors.from_csv(write_csv(tmp_path / "d.csv", ["index,x", "a,1", "1,2"]))


def test_count_mismatch(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["index,x", "0,1", "1,2"])
    with pytest.raises(InputError, match="2 rows but there are 5 images"):
        Descriptors.from_csv(path, n_images=5)
    with pytest.raises(InputError, match="different lengths"):
        Descriptors({"a": torch.arange(3.0), "b": torch.arange(4.0)})
    with pytest.raises(InputError, match="descriptors for 3 images but 4 images"):
        Descriptors({"a": torch.arange(3.0)}).check_count(4)


def test_binary_values_must_be_zero_or_one():
    with pytest.raises(InputError, match="only 0 and 1"):
        Descriptors({"a": torch.tensor([0.0, 2.0, 1.0])}, binary=frozenset({"a"}))


def test_from_morphometrics_keeps_nan_rows_with_a_note():
    images = torch.zeros(4, 1, 28, 28)
    for i, (lean, width) in enumerate([(0.0, 2), (0.4, 3), (-0.3, 4)]):
        for row in range(6, 22):  # a slanted bar: ``lean`` columns per row, ``width`` px wide
            col = int(14 + lean * (14 - row))
            images[i, 0, row, col : col + width] = 0.7 + 0.1 * i
    descriptors = Descriptors.from_morphometrics(images)
    assert len(descriptors) == 4 and not descriptors.binary
    assert torch.isnan(descriptors.values["thickness"][3])
    assert any("without foreground" in note for note in descriptors.notes)


def test_from_csv_by_file_follows_the_images_files_and_ignores_other_rows(tmp_path):
    lines = ["file,thick,glasses", "dog/1.png,3.0,1", "./cat/0.png,1.0,0", "cat/9.png,9.0,1", "cat\\1.png,2.0,1"]
    path = write_csv(tmp_path / "d.csv", lines)
    files = ["cat/0.png", "cat/1.png", "dog/1.png"]  # an ImageDataset's order; cat/9.png is in another split
    descriptors = Descriptors.from_csv(path, files=files)
    assert torch.equal(descriptors.values["thick"], torch.tensor([1.0, 2.0, 3.0]))
    assert descriptors.binary == frozenset({"glasses"})
    with pytest.raises(InputError, match=r"no row for 1 of the 4 images, e.g. dog/2.png"):
        Descriptors.from_csv(path, files=files + ["dog/2.png"])
    with pytest.raises(InputError, match="repeats the files cat/0.png"):
        Descriptors.from_csv(write_csv(tmp_path / "r.csv", lines + ["cat/0.png,5,0"]), files=files)
    with pytest.raises(InputError, match="no 'file' column"):
        Descriptors.from_csv(write_csv(tmp_path / "i.csv", ["index,x", "0,1"]), files=["a.png"])
    with pytest.raises(InputError, match=r"line 3 \(image cat/0.png\) holds the non-numeric"):
        Descriptors.from_csv(write_csv(tmp_path / "n.csv", ["file,x", "dog/1.png,1", "cat/0.png,big"]), files=files)


def test_a_csv_that_is_not_utf8_names_the_file_the_byte_and_the_fix(tmp_path):
    path = tmp_path / "latin1.csv"
    text = "file,size\ncafé/0.png,1\ncafé/1.png,2\n"
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xe9")
    expected = rf"{re.escape(str(path))} is not UTF-8 text: byte {offset} \(line 2\).*save it as UTF-8"
    with pytest.raises(InputError, match=expected):
        Descriptors.from_csv(path, files=["café/0.png", "café/1.png"])
    # behind a byte-order mark the offset still counts from the file's start
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("latin-1"))
    with pytest.raises(InputError, match=f"byte {offset + 3} "):
        Descriptors.from_csv(path, files=["café/0.png", "café/1.png"])


def test_a_utf8_csv_with_a_byte_order_mark_reads_as_without(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffindex,größe\r\n0,1\r\n1,3\r\n".encode())
    descriptors = Descriptors.from_csv(path, n_images=2)
    assert descriptors.names == ["größe"] and descriptors.values["größe"].tolist() == [1.0, 3.0]
