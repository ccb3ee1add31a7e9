#!/usr/bin/env bash
# Install and start a Docker engine with Compose v2 and BuildKit (buildx) on Debian 12/13.
#
# Why a script: CI and fresh machines have no engine and no systemd. Debian 12 ships only
# Compose v1, so Compose v2 and buildx come from Debian 13 (trixie) at low pin priority;
# they need only libc >= 2.34. The mirror is read from the host's own apt sources.
# Idempotent: does nothing that is already done.
set -euo pipefail

log() { printf '[install-docker] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root (apt-get, dockerd)"; exit 1; }

mirror_uri() {
    # First Debian mirror URI found in the host's apt sources (deb822 or one-line form).
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    fi
    [ -n "$uri" ] || { log "no Debian mirror found in /etc/apt/sources.list*"; exit 1; }
    echo "$uri"
}

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
export DEBIAN_FRONTEND=noninteractive
need_update=1
apt_update() { if [ $need_update = 1 ]; then apt-get update -qq; need_update=0; fi; }

if ! command -v dockerd >/dev/null; then
    apt_update
    pkgs="docker.io"
    [ "$codename" != bookworm ] && pkgs="$pkgs docker-cli"
    log "installing $pkgs"
    apt-get install -y -qq --no-install-recommends $pkgs iptables >/dev/null
fi

if ! docker compose version >/dev/null 2>&1 || ! docker buildx version >/dev/null 2>&1; then
    if [ "$codename" = bookworm ]; then
        uri=$(mirror_uri)
        log "adding trixie source (pin 100) from the host mirror for docker-compose v2 and docker-buildx"
        printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$uri" > /etc/apt/sources.list.d/seamless-stack-trixie.sources
        printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' \
            > /etc/apt/preferences.d/seamless-stack-trixie
        need_update=1; apt_update
        tmp=$(mktemp -d)
        (cd "$tmp" && apt-get download -qq docker-compose/trixie docker-buildx/trixie)
        dpkg -i "$tmp"/*.deb >/dev/null
        rm -rf "$tmp"
    else
        apt_update
        apt-get install -y -qq --no-install-recommends docker-compose docker-buildx >/dev/null
    fi
fi
# A docker CLI elsewhere on PATH (e.g. /usr/local/bin) must find the plugins too.
mkdir -p /usr/local/lib/docker/cli-plugins
for p in docker-compose docker-buildx; do
    [ -e /usr/libexec/docker/cli-plugins/$p ] && ln -sf /usr/libexec/docker/cli-plugins/$p /usr/local/lib/docker/cli-plugins/$p
done

if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for i in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; tail -n 20 /var/log/dockerd.log >&2; exit 1; }
fi
log "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /'), $(docker buildx version | awk '{print "buildx " $2}')"
