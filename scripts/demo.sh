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
    seamless-run 'expr 6 \* 7; hostname' 2>/dev/null
    echo "[demo] a Python @direct transformation:"
    python - <<'PY' 2>/dev/null
from seamless_config.extern_clients import set_remote_clients_from_env
set_remote_clients_from_env(include_dask=True)
from seamless.transformer import direct

@direct
def triangle(n):
    import socket
    return f"triangle({n}) = {n * (n + 1) // 2}, computed on {socket.gethostname()}"

print(triangle(100))
PY
)
.venv/bin/seamless-stack status --name demo
echo "[demo] the stack stays up; stop it with: .venv/bin/seamless-stack down --name demo"
