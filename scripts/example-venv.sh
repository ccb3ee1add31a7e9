#!/usr/bin/env bash
# Make (once) the venv that runs examples/ci's tests: the Seamless client venv
# (scripts/client-venv.sh, from images/lock/dask.txt) copied, plus this checkout installed
# editable with its [testing] extra (the seamless_stack fixture, testcontainers, pytest).
# Cached by the lock, pyproject.toml and the checkout's path; source changes need no rebuild.
# Prints the venv's path.
#   usage: scripts/example-venv.sh [DIR]     (default: ~/.cache/seamless-stack/example-<digest>)
#   SEAMLESS_STACK_CLIENT_VENV: an existing client venv to copy (default: scripts/client-venv.sh's)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
client=${SEAMLESS_STACK_CLIENT_VENV:-$(bash "$root/scripts/client-venv.sh" | tail -1)}
client=$(cd "$client" && pwd -P)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/seamless-stack
digest=$(printf '%s\n%s\n' "$root" "$client" | cat - "$root/pyproject.toml" "$root/images/lock/dask.txt" | sha256sum | cut -c1-12)
venv=${1:-$cache/example-$digest}
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9  # two test sessions at once: one builds, the other waits and reuses
if [ ! -f "$venv/.complete" ]; then
    echo "[example-venv] creating $venv (client venv $client + seamless-stack[testing] from $root)" >&2
    rm -rf "$venv"
    cp -a "$client" "$venv"
    # A venv holds its own path in its scripts and activate files: point them at the copy.
    grep -rlIF --null -e "$client" "$venv/bin" | xargs -0 -r sed -i "s|$client|$venv|g"
    "$venv/bin/python" -m pip install --quiet --editable "$root[testing]" 2> >(grep -v '^WARNING: Location' >&2)
    echo "$root" > "$venv/.checkout"
    touch "$venv/.complete"
    # Venvs of checkouts that are gone (CI's fresh clones) would pile up: remove them.
    for other in "$cache"/example-*/; do
        other=${other%/}
        if [ -f "$other/.checkout" ] && [ ! -d "$(cat "$other/.checkout")" ]; then
            rm -rf "$other" "$other.lock"
        fi
    done
fi
echo "$venv"
