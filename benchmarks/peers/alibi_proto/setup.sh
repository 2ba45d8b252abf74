#!/usr/bin/env bash
# Virtual environment for the alibi CounterfactualProto peer benchmark: benchmarks/peers/.venvs/proto.
#
# CounterfactualProto is alibi's TensorFlow explainer; alibi 0.9.6 wants tensorflow < 2.15 and numpy < 2,
# so it lives here and never in vcex's own environment. vcex is installed into it from this checkout
# (editable) with its dependencies held to constraints.txt. Idempotent: when the pins, this script and
# vcex's pyproject.toml are unchanged and the environment imports, it only says so. --force reinstalls.
#
#   bash benchmarks/peers/alibi_proto/setup.sh [--force]
#
# PYTHON picks the interpreter (default python3; the pins were resolved on CPython 3.11, where
# tensorflow-cpu 2.14.1 has wheels).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../peer_venv.sh
source "$here/../peer_venv.sh"
name=proto
smoke='import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy, tensorflow as tf, torch, alibi, vcex
from alibi.explainers import CounterfactualProto
from vcex.pipeline import evaluate_result
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
assert tf.__version__.startswith("2.14."), tf.__version__
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
print(f"alibi {alibi.__version__}, tensorflow {tf.__version__}, vcex {vcex.__version__}, torch {torch.__version__}, "
      f"numpy {numpy.__version__}")'

peer_venv_begin "$@"
"${install[@]}" -r "$here/requirements.txt" -c "$here/constraints.txt"
# vcex itself; the constraints keep numpy < 2 (vcex's mlxtend would otherwise resolve to 0.25 and numpy 2)
"${install[@]}" -e "$root" -c "$here/constraints.txt"
"$venv/bin/python" -m pip check
peer_venv_finish
