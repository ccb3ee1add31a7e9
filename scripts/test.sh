#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite against the real Docker engine.
# Extra arguments go to pytest. pytest's exit code 5 (no tests collected) counts as failure.
# --seamless-stack-require: a missing Docker engine fails the tests that need it (and the
# test beds built on it) instead of skipping them; one switch, the plugin's own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
export SEAMLESS_STACK_CLIENT_VENV=$(bash scripts/client-venv.sh)
set +e
.venv/bin/python -m pytest -ra --seamless-stack-require "$@"
code=$?
set -e
if [ $code = 5 ]; then echo "[test] pytest collected no tests" >&2; exit 1; fi
exit $code
