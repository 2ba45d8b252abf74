from __future__ import annotations

import pytest

from vcex.report.markdown import markdown_table


def test_a_table_has_header_separator_and_one_line_per_row():
    lines = markdown_table(["method", "validity"], [["attack", "1.000"], ["pixel", None], ["a|b", ""]])
    assert lines == [
        "| method | validity |",
        "|---|---|",
        "| attack | 1.000 |",
        "| pixel | – |",
        "| a\\|b |  |",
    ]


def test_alignment_per_column():
    assert markdown_table(["a", "b", "c"], [], align="lcr")[1] == "|:---|:---:|---:|"
    assert markdown_table(["a", "b"], [], align=["", "r"])[1] == "|---|---:|"


@pytest.mark.parametrize(
    ("header", "rows", "align", "message"),
    [
        (["a", "b"], [["only one"]], None, "row 0 has 1 cells for 2 columns"),
        (["a", "b"], [], "l", "align has 1 entries for 2 columns"),
        (["a"], [], "x", "unknown alignment"),
    ],
)
def test_a_mismatch_is_named(header, rows, align, message):
    with pytest.raises(ValueError, match=message):
        markdown_table(header, rows, align=align)
