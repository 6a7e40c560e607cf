#!/usr/bin/env bash
# Run a command with a Docker engine and local RabbitMQ 4 images, e.g.
#     sudo tests/with-docker.sh python -m pytest -m "long or not long"
#     sudo RABBITMQ4_SUITE=sid tests/with-docker.sh python -m pytest -m "long or not long"
# so that the suite's broker comes from testcontainers, as on a machine with Docker, and
# docker-compose.yml runs for real (tests/test_compose_for_real.py), even where no registry can
# be reached: the images are built here from the Debian chroot that tests/with-rabbitmq4.sh
# makes (trixie: RabbitMQ 4.0; sid: the newest 4.x).
#
# Unless a Docker engine already answers, it starts Debian's dockerd (installing docker.io if
# missing) in a network namespace of its own, and runs the command there too: its localhost is
# not this machine's, so `docker compose up -d` publishes localhost:5672 beside any system
# broker, and the scripts reach it at their default URL, as a learner's do. The suite's own
# broker container uses that namespace's network (no bridge; the tests give it its own node
# name and ports). Stops what it started and removes the namespace, whatever happens.
#
# Compose v2 (the `docker compose` the README uses): Debian sid's docker-compose package, whose
# binary becomes this engine's CLI plugin (Debian 12's own docker-compose is v1). Images under
# the names docker-compose.yml uses: rabbitmq:4-management and python:3.12-slim, stand-ins built
# from the chroot (tests/compose-images/ says how each differs from the official one); the
# demo's own image is built from them with its wheels, as the namespace has no network. Needs
# root. Settings:
#   RABBITMQ4_SUITE       the Debian release of the chroot (default trixie)
#   RABBITMQ4_ROOT        the chroot (default /var/cache/rabbit-queues/rabbitmq4-SUITE)
#   RABBITMQ_TEST_IMAGE   the suite's broker image (default rabbit-queues/rabbitmq:VERSION, the
#                         chroot's rabbitmq-server package version)
#   PYTHON312             a CPython 3.12's prefix, for python:3.12-slim (default: pyenv's)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SUITE=${RABBITMQ4_SUITE:-trixie}
ROOT=${RABBITMQ4_ROOT:-/var/cache/rabbit-queues/rabbitmq4-$SUITE}
CACHE=/var/cache/rabbit-queues
say() { printf '[with-docker] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
[ "$#" -gt 0 ] || die "usage: $0 COMMAND [ARGUMENT...]"
[ "$(id -u)" = 0 ] || die "run as root (it may start dockerd)"

started_dockerd= netns=
cleanup() {
    local name # the suite's containers are named after its pid: remove those of dead runs
    for name in $(docker ps -a --format '{{.Names}}' --filter name=rabbit-queues-test- 2>/dev/null); do
        kill -0 "${name#rabbit-queues-test-}" 2>/dev/null || docker rm -f "$name" >/dev/null
    done
    if [ -n "$started_dockerd" ]; then
        say "stopping the dockerd it started"
        kill "$started_dockerd" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 0.2; done
    fi
    if [ -n "$netns" ]; then
        umount /run/docker/netns/* 2>/dev/null || true # dockerd leaves its bind mounts behind
        ip netns delete "$netns" 2>/dev/null || true
    fi
}
trap cleanup EXIT

apt_install() { # $@: Debian packages
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || apt_install docker.io
    netns=rabbit-queues-$$
    say "starting dockerd in the network namespace $netns (its bridge there, no iptables)"
    # (nsenter, not `ip netns exec`: that mounts a sysfs of its own, without the cgroups.) The
    # default bridge is the namespace's own: image builds run on it, with no way out.
    ip netns add "$netns"
    ip -n "$netns" link set lo up
    nsenter --net="/run/netns/$netns" dockerd --iptables=false --ip6tables=false \
        >/tmp/with-docker-dockerd.log 2>&1 &
    started_dockerd=$!
    for _ in $(seq 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null 2>&1 || die "dockerd did not start; see /tmp/with-docker-dockerd.log"
fi

[ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ] || "$HERE/with-rabbitmq4.sh" true

if ! docker compose version >/dev/null 2>&1; then
    # Compose v2 from Debian sid, downloaded with the apt of a sid chroot (with-rabbitmq4.sh's).
    sid=${RABBITMQ4_SID_ROOT:-$CACHE/rabbitmq4-sid}
    [ -x "$sid/usr/lib/rabbitmq/bin/rabbitmq-server" ] ||
        RABBITMQ4_SUITE=sid RABBITMQ4_ROOT=$sid "$HERE/with-rabbitmq4.sh" true
    say "installing compose v2 (Debian sid's docker-compose) as docker's CLI plugin"
    cp /etc/resolv.conf "$sid/etc/resolv.conf"
    chroot "$sid" apt-get -q update >/dev/null
    rm -f "$sid"/tmp/docker-compose_*.deb
    chroot "$sid" sh -c 'cd /tmp && apt-get -q download docker-compose' >/dev/null
    unpacked=$(mktemp -d)
    dpkg-deb -x "$sid"/tmp/docker-compose_*.deb "$unpacked"
    install -D -m 755 "$unpacked/usr/libexec/docker/cli-plugins/docker-compose" \
        /usr/local/lib/docker/cli-plugins/docker-compose
    rm -rf "$unpacked" "$sid"/tmp/docker-compose_*.deb
fi

VERSION=$(chroot "$ROOT" dpkg-query -W -f '${Version}' rabbitmq-server)
# A Docker tag holds letters, digits, '_', '.' and '-': Debian's '+' (4.0.5-6+deb13u2) and any
# other character become '_', or docker refuses the name (invalid reference format).
TAG=${VERSION//[^A-Za-z0-9_.-]/_}
BASE=rabbit-queues/debian:$TAG
IMAGE=${RABBITMQ_TEST_IMAGE:-rabbit-queues/rabbitmq:$TAG}
build() { # $1: image, $2: Dockerfile, $3: context, then build arguments
    local image=$1 dockerfile=$2 context=$3
    shift 3
    docker build --quiet --network host -t "$image" -f "$dockerfile" "$@" "$context" \
        >/tmp/with-docker-build.log 2>&1 || die "building $image failed; see /tmp/with-docker-build.log"
}
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    say "importing $ROOT as $BASE"
    # Not what with-rabbitmq4.sh may have mounted in it: /proc, /sys, the host's /tmp.
    tar -C "$ROOT" --exclude=./proc/* --exclude=./sys/* --exclude=./tmp/* \
        --exclude=./var/lib/rabbitmq/.erlang.cookie -c . | docker import - "$BASE" >/dev/null
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "building $IMAGE (the suite's broker)"
    build "$IMAGE" "$HERE/rabbitmq4.Dockerfile" "$HERE" --build-arg "BASE=$BASE"
fi
if [ "$(docker image inspect -f '{{index .Config.Labels "base"}}' rabbitmq:4-management 2>/dev/null)" != "$BASE" ]; then
    say "building rabbitmq:4-management (docker-compose.yml's broker) from $BASE"
    build rabbitmq:4-management "$HERE/compose-images/rabbitmq.Dockerfile" "$HERE/compose-images" \
        --build-arg "BASE=$BASE" --label "base=$BASE"
fi
if ! docker image inspect python:3.12-slim >/dev/null 2>&1; then
    prefix=${PYTHON312:-$(ls -d /root/.pyenv/versions/3.12.* 2>/dev/null | tail -n 1)}
    [ -x "$prefix/bin/python3.12" ] || die "no CPython 3.12 for python:3.12-slim (set PYTHON312)"
    say "building python:3.12-slim from $BASE and $prefix"
    context=$(mktemp -d)
    tar -C / --exclude="${prefix#/}/lib/python3.12/test" --exclude='*/__pycache__' \
        --exclude='*/site-packages/*.pth' -cf "$context/python.tar" \
        "${prefix#/}/bin" "${prefix#/}/lib/libpython3.12.so.1.0" "${prefix#/}/lib/python3.12"
    # What `pip install .` takes in the demo's image: the build backend, and pika.
    "$prefix/bin/python3.12" -m pip download -q -d "$context/wheels" "setuptools>=64" "pika>=1.3,<2"
    cp "$HERE/compose-images/python.Dockerfile" "$context/Dockerfile"
    build python:3.12-slim "$context/Dockerfile" "$context" --build-arg "BASE=$BASE" \
        --build-arg "PREFIX=$prefix"
    rm -rf "$context"
fi

export RABBITMQ_TEST_IMAGE=$IMAGE
export RABBITMQ_TEST_NETWORK=host
export TESTCONTAINERS_RYUK_DISABLED=true # Ryuk's image cannot be pulled here; cleanup() does it
if [ -n "$netns" ]; then
    export RABBIT_QUEUES_NETNS=$netns # the compose tests' localhost is this namespace's
    nsenter --net="/run/netns/$netns" "$@"
else
    "$@"
fi
