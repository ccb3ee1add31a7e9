#!/usr/bin/env bash
# The main job: bring the local stack up and run real Seamless computations on it,
# from a client that knows only the environment output.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
client=$(bash scripts/client-venv.sh)

.venv/bin/seamless-stack up local --name demo --workers 2 --threads 2 > /dev/null
env_file=$(.venv/bin/seamless-stack status --name demo | awk '/^environment:/ {print $2}')
echo "[demo] environment output: $env_file"
(
    source "$env_file"
    export PATH="$client/bin:$PATH"
    echo "[demo] seamless-run 'expr 6 \* 7; hostname'  (runs in a worker container):"
    log=$(mktemp)
    seamless-run 'expr 6 \* 7; hostname' 2>"$log" || { cat "$log" >&2; exit 1; }
    echo "[demo] a Python @direct transformation (scripts/demo_client.py):"
    python scripts/demo_client.py 2>"$log" || { cat "$log" >&2; exit 1; }
)
.venv/bin/seamless-stack status --name demo
echo "[demo] the stack stays up; stop it with: .venv/bin/seamless-stack down --name demo"
