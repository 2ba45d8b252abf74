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
root="$(cd "$here/../../.." && pwd)"
venv="$root/benchmarks/peers/.venvs/pgd"
stamp="$venv/.vcex-peer-setup"
want="$(cat "$here/setup.sh" "$here/requirements.txt" "$here/constraints.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
smoke='import importlib.metadata as md, numpy, torch, torchattacks, vcex
from torchattacks import PGD
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
version = md.version("torchattacks")
print(f"torchattacks {version}, vcex {vcex.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")'

if [[ "${1:-}" != "--force" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
  && "$venv/bin/python" -W ignore -c "$smoke" >/dev/null 2>&1; then
  echo "up to date: $venv"
  exit 0
fi

[[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
install=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: torchattacks asks for torchvision, and an unpinned torchvision (0.29) pulls
# torch 2.14 with its multi-GB CUDA libraries; requirements.txt holds torchvision at 0.28.0 (torch 2.13's)
"${install[@]}" torch==2.13.0
"${install[@]}" -r "$here/requirements.txt" -c "$here/constraints.txt"
# vcex itself, under the same constraints so it cannot move a peer's pin
"${install[@]}" -e "$root" -c "$here/constraints.txt"
"$venv/bin/python" -m pip check
"$venv/bin/python" -W ignore -c "$smoke"
echo "$want" > "$stamp"
echo "ready: $venv"
