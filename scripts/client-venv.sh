#!/usr/bin/env bash
# Make (once) a Seamless *client* environment that matches the stack: the requirements
# `seamless-stack client-requirements` prints (the scheduler/worker lock, images/lock/dask.txt)
# installed into a venv, so dask, distributed and seamless-* versions are identical.
# It knows nothing of seamless-stack. Prints the venv's path.
#   usage: scripts/client-venv.sh [DIR]     (default: ~/.cache/seamless-stack/client-<requirements digest>)
# The seamless-stack used: $SEAMLESS_STACK, else .venv's, else the one on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${SEAMLESS_STACK:-$root/.venv/bin/seamless-stack}
[ -x "$cli" ] || cli=$(command -v seamless-stack || true)
if [ -z "$cli" ]; then
    echo "[client-venv] no seamless-stack found: run scripts/setup.sh (or pip install .) first" >&2
    exit 1
fi
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$cli" client-requirements > "$requirements"
digest=$(sha256sum "$requirements" | cut -c1-12)
venv=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/seamless-stack/client-$digest}
if [ ! -x "$venv/bin/seamless-run" ]; then
    echo "[client-venv] creating $venv from \`seamless-stack client-requirements\`" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-deps --requirement "$requirements" 2> >(grep -v '^WARNING: Location' >&2)
fi
echo "$venv"
