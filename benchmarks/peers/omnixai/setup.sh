#!/usr/bin/env bash
# Virtual environment for the OmniXAI peer benchmark: benchmarks/peers/.venvs/omnixai.
#
# omnixai 1.3.1 pins numpy<1.24 and scikit-learn<1.2, so it lives here and never in vcex's own
# environment. Those pins lie below vcex's own floors (numpy>=1.24, scikit-learn>=1.3), so vcex is
# installed from this checkout with --no-deps (editable), its other dependencies come from
# requirements.txt, and the dependency check tolerates exactly those two unmet floors of vcex's.
# Idempotent: when the pins, this script and vcex's pyproject.toml are unchanged and the environment
# imports, it only says so. --force reinstalls.
#
#   bash benchmarks/peers/omnixai/setup.sh [--force]
#
# PYTHON picks the interpreter (default python3; the pins were resolved on CPython 3.11). Building
# hnswlib (an OmniXAI dependency with no wheel) needs a C++ compiler.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../peer_venv.sh
source "$here/../peer_venv.sh"
name=omnixai
smoke='import importlib.metadata as md, numpy, torch, vcex
from omnixai.explainers.vision import CounterfactualExplainer
from vcex.pipeline import evaluate_result
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
version = md.version("omnixai")
print(f"omnixai {version}, vcex {vcex.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")'

peer_venv_begin "$@"
"${install[@]}" -r "$here/requirements.txt" -c "$here/constraints.txt"
# vcex itself without its dependency pins (they conflict with OmniXAI's; see the top of this file)
"${install[@]}" --no-deps -e "$root"
# every requirement must hold except vcex's numpy and scikit-learn floors
problems="$("$venv/bin/python" -m pip check 2>&1 | grep -v -E '^vcex [^ ]+ has requirement (numpy|scikit-learn)>=' \
  | grep -v '^No broken requirements found' || true)"
if [[ -n "$problems" ]]; then
  echo "$problems" >&2
  exit 1
fi
peer_venv_finish
