#!/usr/bin/env bash
# Virtual environment for the torchattacks PGD peer benchmark: benchmarks/peers/.venvs/pgd.
#
# torchattacks pins requests~=2.25.1 (and with it urllib3 1.26, idna 2.10, chardet 4), so it lives here
# and never in vcex's own environment; vcex is installed into it from this checkout (editable).
# Idempotent: when the pins, this script and vcex's pyproject.toml are unchanged and the environment
# imports, it only says so. --force reinstalls.
#
#   bash benchmarks/peers/pgd/setup.sh [--force]
#
# PYTHON picks the interpreter (default python3; the pins were resolved on CPython 3.11).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../peer_venv.sh
source "$here/../peer_venv.sh"
name=pgd
smoke='import importlib.metadata as md, numpy, torch, torchattacks, vcex
from torchattacks import PGD
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
version = md.version("torchattacks")
print(f"torchattacks {version}, vcex {vcex.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")'

# torch first and pinned: torchattacks asks for torchvision, and an unpinned torchvision (0.29) pulls
# torch 2.14 with its multi-GB CUDA libraries; requirements.txt holds torchvision at 0.28.0 (torch 2.13's)
peer_venv_begin "$@"
"${install[@]}" -r "$here/requirements.txt" -c "$here/constraints.txt"
# vcex itself, under the same constraints so it cannot move a peer's pin
"${install[@]}" -e "$root" -c "$here/constraints.txt"
"$venv/bin/python" -m pip check
peer_venv_finish
