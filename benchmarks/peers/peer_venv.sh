# What every peer's setup.sh shares; sourced, never run. A setup.sh sets `name` (its venv under
# benchmarks/peers/.venvs/) and `smoke` (Python that imports the peer and vcex and prints versions), then:
#
#   peer_venv_begin "$@"    # exits 0 when the venv is up to date; else creates it, installs torch==2.13.0
#   ...its own pip installs with "${install[@]}" (requirements.txt, constraints.txt, vcex)...
#   peer_venv_finish        # the smoke test, then the stamp
#
# Up to date means: this peer's setup.sh, requirements.txt and constraints.txt, this file and vcex's
# pyproject.toml are unchanged since the last finished setup, and the smoke test passes. --force reinstalls.
# PYTHON picks the interpreter for a new venv (default python3; the pins were resolved on CPython 3.11).

peer_venv_begin() {
  root="$(cd "$here/../../.." && pwd)"
  venv="$root/benchmarks/peers/.venvs/$name"
  stamp="$venv/.vcex-peer-setup"
  want="$(cat "$here/setup.sh" "$here/requirements.txt" "$here/constraints.txt" "$here/../peer_venv.sh" \
    "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [[ "${1:-}" != "--force" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -W ignore -c "$smoke" >/dev/null 2>&1; then
    echo "up to date: $venv"
    exit 0
  fi
  [[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
  install=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  # torch first and pinned: left to a peer's resolver, an unpinned torch pulls a multi-GB CUDA build
  "${install[@]}" torch==2.13.0
}

peer_venv_finish() {
  "$venv/bin/python" -W ignore -c "$smoke"
  echo "$want" > "$stamp"
  echo "ready: $venv"
}
