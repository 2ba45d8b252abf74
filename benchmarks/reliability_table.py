"""The reliability table: every bad input of tests/reliability_cases.py, the one line it gets, and the faults
injected by tests/test_reliability.py with what each lost. Writes docs/benchmarks/reliability.md:

    python benchmarks/reliability_table.py [--skip-faults]

The bad inputs run here, in this process, from the same list the tests run (each in a folder of its own, with a
throw-away VCEX_HOME; the CLI cases use the embedded MNIST and the weights that ship with vcex, so nothing is
trained). The faults run as the tests themselves (pytest, one thread), and their rows say whether each passed:
a passing fault test means its rerun's outputs were bit-identical to an undisturbed run's, i.e. nothing was lost.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import torch  # noqa: E402
from reliability_cases import CASES, attempt, problems  # noqa: E402

from vcex import __version__  # noqa: E402

PAGE = ROOT / "docs" / "benchmarks" / "reliability.md"
TEST_MODULE = "tests/test_reliability.py"
# each fault test of TEST_MODULE: the fault, how it is injected, and what a pass shows was kept and lost
FAULTS = [
    (
        "test_sigkill_mid_explain_then_rerun_resumes_and_loses_nothing",
        "SIGKILL mid-job (`vcex explain`, 6 images in chunks of 2)",
        "the job's own process SIGKILLs itself as it would write its third chunk",
        "the 2 finished chunks are kept byte for byte; the rerun resumes from them (resumed_chunks 2), and its "
        "chunks, counterfactuals and metrics equal an undisturbed run's bit for bit",
    ),
    (
        "test_sigkill_mid_benchmark_then_rerun_keeps_finished_rows_and_loses_nothing",
        "SIGKILL mid-benchmark (`vcex benchmark --methods attack pixel`)",
        "SIGKILL as the second row would write its first chunk",
        "the finished row is reused without explaining it again (reused: attack); every row's files equal an "
        "undisturbed run's bit for bit",
    ),
    (
        "test_full_disk_gives_one_line_keeps_finished_chunks_and_a_rerun_completes",
        "a full output disk",
        "a failing writer: the second chunk's write leaves 10 bytes and raises OSError(ENOSPC)",
        "one line (`vcex: error: No space left on device: ...; free some space and run the same command again`), "
        "exit status 1; the finished chunk is intact; the rerun recomputes the half chunk and equals an "
        "undisturbed run bit for bit",
    ),
    (
        "test_ctrl_c_mid_job_says_so_in_one_line_and_a_rerun_resumes",
        "Ctrl-C mid-job",
        "KeyboardInterrupt as the second chunk would be written",
        "one line (`vcex: interrupted; finished chunks are kept and a rerun resumes from them`), exit status 130; "
        "the rerun resumes from the finished chunk and equals an undisturbed run bit for bit",
    ),
    (
        "test_a_damaged_cache_file_is_retrained_to_the_same_weights[garbage]",
        "a corrupt cache file (a trained model's weights replaced by garbage)",
        "bytes written over the cached safetensors file",
        "one warning naming the file; the model is retrained to weights equal to the first training's bit for "
        "bit, and the cache is whole again",
    ),
    (
        "test_a_damaged_cache_file_is_retrained_to_the_same_weights[truncated]",
        "a truncated weights file in the cache",
        "the cached safetensors file cut to half its length",
        "as above: detected (`not a readable safetensors file`), retrained to the same weights",
    ),
    (
        "test_a_corrupt_cache_file_of_a_shipped_model_falls_back_to_the_shipped_weights",
        "a corrupt cache file of a model that ships with vcex",
        "64 zero bytes as the cached mnist-cnn",
        "one warning; the shipped weights are loaded, equal to those loaded without the damage",
    ),
    (
        "test_seeded_cpu_runs_reproduce_bit_for_bit",
        "a second run of the same job in a fresh process",
        "none: reproducibility",
        "counterfactuals.safetensors and every chunk equal byte for byte; metrics equal but for timings",
    ),
]


def run_cases() -> list[dict]:
    """Every case, each in a folder of its own under a throw-away VCEX_HOME; paths shown as DIR and $VCEX_HOME."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["VCEX_HOME"] = str(Path(scratch) / "vcex-home")
        for case in CASES:
            folder = Path(scratch) / case.id
            outcome = attempt(case, folder)
            wrong = problems(case, outcome, folder)
            line = outcome.message.replace(str(folder), "DIR").replace(os.environ["VCEX_HOME"], "$VCEX_HOME")
            kind = "warning" if case.warns else outcome.error_type or f"exit status {outcome.status}"
            rows.append({"case": case, "line": line, "kind": kind, "problems": wrong, "status": outcome.status})
            print(f"{'ok ' if not wrong else 'BAD'} {case.id}: {line[:100]}", file=sys.stderr)
    return rows


def run_faults() -> tuple[dict[str, tuple[str, float]], float]:
    """The fault tests by pytest: {test name: (outcome, seconds)} and the wall time of the run."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "faults.xml"
        names = " or ".join(name.split("[")[0] for name, *_ in FAULTS)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST_MODULE, "-k", names,
                   f"--junitxml={report}"]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=False)
        wall = time.perf_counter() - started
        results = {}
        for test in ElementTree.parse(report).iter("testcase"):
            failed = test.find("failure") is not None or test.find("error") is not None
            skipped = test.find("skipped") is not None
            results[test.get("name")] = ("FAILED" if failed else "skipped" if skipped else "passed",
                                         float(test.get("time", 0)))  # fmt: skip
    return results, wall


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict], faults: dict[str, tuple[str, float]] | None, seconds: float) -> str:
    bad = [row for row in rows if row["problems"]]
    cli = sum(row["case"].where == "CLI" for row in rows)
    lines = [
        "# Reliability: bad inputs and injected faults",
        "",
        f"Every bad input below was tried through the CLI (`vcex ...`, run in process) or the Python API, and got the "
        f"line shown: {len(rows)} inputs, {cli} through the CLI and {len(rows) - cli} through the API, "
        f"{len(rows) - len(bad)} of them with one line naming the problem and no traceback"
        + (f"; **{len(bad)} did not** (marked ✗)." if bad else "."),
        "Each row is a test (`tests/test_reliability.py::test_bad_input_gets_one_clear_line[ID]`); the list lives "
        "once, in `tests/reliability_cases.py`, and `python benchmarks/reliability_table.py` writes this page from "
        "it. DIR is the case's own folder. A CLI error line starts with `vcex: error:` (vcex's own checks, exit "
        "status 2; the system's refusals such as a full disk, exit status 1) or `vcex COMMAND: error: argument` "
        "(the argument parser, exit status 2).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}; "
        f"vcex {__version__}, torch {torch.__version__}, Python {platform.python_version()}. The cases took "
        f"{seconds:.0f} s.",
        "",
        "## Faults injected, and what was lost",
        "",
    ]
    if faults is None:
        lines += ["Not run this time (`--skip-faults`): see the tests in `tests/test_reliability.py`.", ""]
    else:
        lines += [
            "Each is a test of `tests/test_reliability.py`, run by this script through pytest on one thread; "
            '"lost" is 0 when the test passes, since each compares the recovered outputs with an undisturbed '
            "run's, byte for byte.",
            "",
            "| fault | injected by | test | result | lost | what the test checks |",
            "|---|---|---|---|---|---|",
        ]
        for name, fault, how, kept in FAULTS:
            outcome, test_seconds = faults.get(name, ("not run", 0.0))
            lost = "0" if outcome == "passed" else "see the test"
            lines.append(
                f"| {cell(fault)} | {cell(how)} | `{name}` | {outcome} ({test_seconds:.0f} s) | {lost} | {cell(kept)} |"
            )
        lines += [
            "",
            "Seconds are wall time on a 2-core machine shared with other jobs. A tiny tmpfs needs root to mount, "
            "which CI runners do not give, so the full disk is a writer that fails (the write of a counterfactual "
            "result, monkeypatched); an output folder one may not write in is simulated the same way (EACCES), "
            "since root, which runs these tests here, ignores a chmod. The explain job is the attack on MNIST with "
            "the shipped models, which draws no random numbers; the amortized explainer's fit, which does, resumes "
            "from its checkpoint bit for bit in "
            "`tests/explainers/test_amortized.py::test_resume_continues_from_the_checkpoint` (interrupted between "
            "epochs, not by SIGKILL).",
            "",
        ]
    lines += [
        "## Bad inputs",
        "",
        "| # | input | where | error | the line it gets |",
        "|---|---|---|---|---|",
    ]
    for k, row in enumerate(rows, start=1):
        case = row["case"]
        mark = " ✗ " + cell("; ".join(row["problems"])) if row["problems"] else ""
        lines.append(
            f"| {k} | {cell(case.input)} (`{case.id}`) | {case.where} | {row['kind']} | `{cell(row['line'])}`{mark} |"
        )
    lines += [
        "",
        "Not refused, on purpose: a latent model whose `encode()` returns a tuple `(mu, logvar)` runs with its first "
        "element, after the one warning shown (issue 25 allowed unpacking or refusing; vcex unpacks).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-faults", action="store_true", help="only the bad inputs (the faults take minutes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = run_cases()
    seconds = time.perf_counter() - started
    faults = None if args.skip_faults else run_faults()[0]
    PAGE.write_text(render(rows, faults, seconds), encoding="utf-8")
    print(PAGE)


if __name__ == "__main__":
    main()
