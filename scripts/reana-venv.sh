#!/usr/bin/env bash
# A virtualenv with reana-client 0.9.6 for offline checks of reana.yaml (`reana-client validate`).
#
# Its own venv, not .venv: reana-client 0.9.6 pins an older yadage (0.20.x) and its own
# reana-commons, and 0.9.6 is the last client line that validates without a REANA server (0.95+
# sends the spec to the server and needs a token).
#
#   bash scripts/reana-venv.sh            # creates .venv-reana when missing, then prints its path
#   REANA_VENV=/elsewhere bash scripts/reana-venv.sh
#
# Idempotent and quiet. It always exits 0: when pip cannot install (no registry), it says so on
# stderr and tests/test_reana.py skips with that reason.
set -uo pipefail

REANA_CLIENT_VERSION=0.9.6
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${REANA_VENV:-$root/.venv-reana}"
python="${PYTHON:-python3}"
client="$venv/bin/reana-client"

installed() {
  [ -x "$client" ] && [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("reana-client"))' \
      2>/dev/null)" = "$REANA_CLIENT_VERSION" ]
}

if ! installed; then
  echo "reana-venv: installing reana-client==$REANA_CLIENT_VERSION into $venv" >&2
  log="$(mktemp)"
  if ! { [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"; } >"$log" 2>&1 ||
     ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
         "reana-client==$REANA_CLIENT_VERSION" >>"$log" 2>&1; then
    echo "reana-venv: could not install reana-client==$REANA_CLIENT_VERSION; the end of the log:" >&2
    tail -n 15 "$log" >&2
  fi
  rm -f "$log"
fi

if installed; then
  echo "$venv"
else
  echo "reana-venv: $client is missing" >&2
fi
exit 0
