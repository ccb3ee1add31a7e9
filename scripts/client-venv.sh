#!/usr/bin/env bash
# Make (once) a Seamless *client* environment that matches the stack: the scheduler/worker
# lock installed into a venv, so dask, distributed and seamless-* versions are identical.
# It knows nothing of seamless-stack. Prints the venv's path.
#   usage: scripts/client-venv.sh [DIR]     (default: ~/.cache/seamless-stack/client-<lock digest>)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lock="$root/images/lock/dask.txt"
digest=$(sha256sum "$lock" | cut -c1-12)
venv=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/seamless-stack/client-$digest}
if [ ! -x "$venv/bin/seamless-run" ]; then
    echo "[client-venv] creating $venv from images/lock/dask.txt" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --no-deps --requirement "$lock" 2> >(grep -v '^WARNING: Location' >&2)
fi
echo "$venv"
