from __future__ import annotations

import io
import sys

import pytest

from vcex.errors import InputError
from vcex.progress import ENV, progress_bar, track


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_stage(steps: int = 200, desc: str = "optimising") -> None:
    bar = progress_bar(total=steps, desc=desc, unit="step")
    for step in range(steps):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.3g}")
    bar.close()


class Captured:
    """stderr as pytest captures it: not a TTY, as in CI or a log file."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        assert not sys.stderr.isatty()

    def getvalue(self) -> str:
        return self.capsys.readouterr().err


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Captured:
    monkeypatch.delenv(ENV, raising=False)
    return Captured(capsys)


def test_without_a_terminal_each_stage_writes_one_line(stderr: Captured):
    run_stage(desc="optimising")
    run_stage(steps=3, desc="fitting")
    written = stderr.getvalue()
    lines = written.splitlines()
    assert len(lines) == 2
    assert "\r" not in written
    assert lines[0].startswith("optimising: 200/200 step in ") and lines[0].endswith("(loss=0.005)")
    assert lines[1].startswith("fitting: 3/3 step in ")


def test_track_writes_one_line_without_a_terminal(stderr: Captured):
    assert list(track(range(50), desc="models")) == list(range(50))
    written = stderr.getvalue()
    assert written.count("\n") == 1
    assert written.startswith("models: 50/50 it in ")


def test_a_terminal_gets_bars(monkeypatch: pytest.MonkeyPatch):
    stream = TerminalStream()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv(ENV, raising=False)
    run_stage()
    assert "\r" in stream.getvalue() and "optimising" in stream.getvalue()


def test_env_1_draws_bars_without_a_terminal(stderr: Captured, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV, "1")
    run_stage()
    written = stderr.getvalue()
    assert "\r" in written and "optimising" in written


@pytest.mark.parametrize("terminal", [True, False])
def test_env_0_writes_nothing(terminal: bool, monkeypatch: pytest.MonkeyPatch):
    stream = TerminalStream() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setenv(ENV, "0")
    run_stage()
    list(track(range(5), desc="models"))
    assert stream.getvalue() == ""


@pytest.mark.parametrize("setting", ["", "1"])
def test_disabled_writes_nothing_whatever_the_env(setting: str, stderr: Captured, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV, setting)
    bar = progress_bar(total=10, desc="quiet", enabled=False)
    bar.update(10)
    bar.close()
    list(track(range(5), enabled=False))
    assert stderr.getvalue() == ""


def test_a_bad_env_value_is_one_clear_error(stderr: Captured, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(InputError, match="VCEX_PROGRESS must be 0 .* or 1 .*got 'yes'"):
        progress_bar(total=3, desc="x")
