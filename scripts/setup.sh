#!/usr/bin/env bash
# Everything a fresh Debian 12/13 machine needs, idempotent (second runs take seconds):
#   Docker engine + Compose v2 + buildx, debootstrap, the project venv (.venv),
#   the air-gapped base image and the four images (only what is missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
    bash scripts/install-docker-debian.sh
    missing=""
    command -v debootstrap >/dev/null || missing="$missing debootstrap"
    # ssh for the remote and Slurm methods (and their test beds), openssl for Dask TLS
    command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || missing="$missing openssh-client"
    command -v openssl >/dev/null || missing="$missing openssl"
    command -v pgrep >/dev/null || missing="$missing procps"
    # Debian's own python3 with venv: for .venv, and for the tests' non-root user.
    for py in python3 /usr/bin/python3; do
        "$py" -c 'import ensurepip, venv' 2>/dev/null || missing="$missing python3-venv"
    done
    if [ -n "$missing" ]; then
        log "installing$missing"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
else
    docker info >/dev/null 2>&1 || { log "no Docker engine: run 'sudo bash scripts/install-docker-debian.sh' first"; exit 1; }
fi

if [ ! -x .venv/bin/seamless-stack ]; then
    log "creating .venv with seamless-stack and its test tools"
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --editable '.[test]' 2> >(grep -v '^WARNING: Location' >&2)

# Air-gapped mode: the base from Debian packages, so no registry is needed.
.venv/bin/seamless-stack images base >/dev/null
.venv/bin/seamless-stack images build >/dev/null
log "ready: $(.venv/bin/seamless-stack images list | tr '\n' ' ')"
