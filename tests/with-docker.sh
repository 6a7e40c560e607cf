#!/usr/bin/env bash
# Run a command with a Docker engine and a local RabbitMQ 4 image, e.g.
#     sudo tests/with-docker.sh python -m pytest
#     sudo RABBITMQ4_SUITE=sid tests/with-docker.sh python -m pytest
# so that the suite's broker comes from testcontainers, as on a machine with Docker, even where
# no registry can be reached: the image is built here from the Debian chroot that
# tests/with-rabbitmq4.sh makes (trixie: RabbitMQ 4.0; sid: the newest 4.x), and the container
# uses the host's network (no bridge; the tests give it its own node name and ports, away from
# any system broker).
#
# Starts Debian's dockerd (installing docker.io if missing) unless one answers, and stops it
# again; removes the suite's containers whatever happens. Installs docker-compose (Debian's)
# if no compose implementation is there, for tests/test_compose.py. Needs root. Settings:
#   RABBITMQ4_SUITE       the Debian release of the chroot (default trixie)
#   RABBITMQ4_ROOT        the chroot (default /var/cache/rabbit-queues/rabbitmq4-SUITE)
#   RABBITMQ_TEST_IMAGE   the image built and used (default rabbit-queues/rabbitmq:VERSION,
#                         the chroot's rabbitmq-server package version)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=${RABBITMQ4_SUITE:-trixie}
ROOT=${RABBITMQ4_ROOT:-/var/cache/rabbit-queues/rabbitmq4-$SUITE}
say() { printf '[with-docker] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
[ "$#" -gt 0 ] || die "usage: $0 COMMAND [ARGUMENT...]"
[ "$(id -u)" = 0 ] || die "run as root (it may start dockerd)"

started_dockerd=
cleanup() {
    local name # the suite's containers are named after its pid: remove those of dead runs
    for name in $(docker ps -a --format '{{.Names}}' --filter name=rabbit-queues-test- 2>/dev/null); do
        kill -0 "${name#rabbit-queues-test-}" 2>/dev/null || docker rm -f "$name" >/dev/null
    done
    if [ -n "$started_dockerd" ]; then
        say "stopping the dockerd it started"
        kill "$started_dockerd" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.2; done
    fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io
    fi
    say "starting dockerd (no bridge network, no iptables: containers use the host's network)"
    dockerd --bridge=none --iptables=false --ip6tables=false >/tmp/with-docker-dockerd.log 2>&1 &
    started_dockerd=$!
    for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null 2>&1 || die "dockerd did not start; see /tmp/with-docker-dockerd.log"
fi

if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose
fi

[ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ] || "$HERE/with-rabbitmq4.sh" true
VERSION=$(chroot "$ROOT" dpkg-query -W -f '${Version}' rabbitmq-server)
# A Docker tag holds letters, digits, '_', '.' and '-': Debian's '+' (4.0.5-6+deb13u2) and any
# other character become '_', or docker refuses the name (invalid reference format).
IMAGE=${RABBITMQ_TEST_IMAGE:-rabbit-queues/rabbitmq:${VERSION//[^A-Za-z0-9_.-]/_}}
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "building $IMAGE from $ROOT"
    # Not what with-rabbitmq4.sh may have mounted in it: /proc, /sys, the host's /tmp.
    tar -C "$ROOT" --exclude=./proc/* --exclude=./sys/* --exclude=./tmp/* -c . |
        docker import - "$IMAGE-base" >/dev/null
    docker build --quiet --network host -t "$IMAGE" --build-arg "BASE=$IMAGE-base" \
        -f "$HERE/rabbitmq4.Dockerfile" "$HERE" >/tmp/with-docker-build.log 2>&1 ||
        die "docker build failed; see /tmp/with-docker-build.log"
fi

export RABBITMQ_TEST_IMAGE=$IMAGE
export RABBITMQ_TEST_NETWORK=host
export TESTCONTAINERS_RYUK_DISABLED=true # Ryuk's image cannot be pulled here; cleanup() does it
"$@"
