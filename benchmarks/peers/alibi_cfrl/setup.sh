#!/usr/bin/env bash
# Virtual environment for the alibi CounterfactualRL peer benchmark: benchmarks/peers/.venvs/alibi.
#
# alibi 0.9.6 needs numpy<2, so it lives here and never in vcex's own environment; vcex is installed
# into it from this checkout (editable). Idempotent: when the pins, this script and vcex's
# pyproject.toml are unchanged and the environment imports, it only says so. --force reinstalls.
#
#   bash benchmarks/peers/alibi_cfrl/setup.sh [--force]
#
# PYTHON picks the interpreter (default python3; the pins were resolved on CPython 3.11).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../peer_venv.sh
source "$here/../peer_venv.sh"
name=alibi
smoke='import numpy, torch, alibi, vcex
from alibi.explainers import CounterfactualRL
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
print(f"alibi {alibi.__version__}, vcex {vcex.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")'

peer_venv_begin "$@"
"${install[@]}" -r "$here/requirements.txt" -c "$here/constraints.txt"
# vcex itself; the constraints keep numpy < 2 (vcex's mlxtend would otherwise resolve to 0.25 and numpy 2)
"${install[@]}" -e "$root" -c "$here/constraints.txt"
"$venv/bin/python" -m pip check
peer_venv_finish
