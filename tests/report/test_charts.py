import pytest

from vcex.errors import InputError
from vcex.report.charts import ranked_bar_chart


def test_chart_has_a_row_per_descriptor():
    short = ranked_bar_chart([("a", 0.5, 0.4, 0.6)], "t")
    tall = ranked_bar_chart([("a", 0.5, 0.4, 0.6), ("b", -0.2, -0.3, -0.1)], "t")
    assert tall.size[1] == short.size[1] + 18
    with pytest.raises(InputError, match="at least one row"):
        ranked_bar_chart([], "t")
