#!/usr/bin/env bash
# Run a command with RabbitMQ 4 as the local `rabbitmq-server`, e.g.
#     sudo tests/with-rabbitmq4.sh python -m pytest
#     sudo RABBITMQ4_SUITE=sid tests/with-rabbitmq4.sh python -m pytest
# The suite starts its own throwaway nodes with whatever `rabbitmq-server` and `rabbitmqctl`
# are on PATH; here they are Debian's RabbitMQ 4 (trixie: 4.0 with Erlang 27; sid: the newest
# 4.x Debian has, 4.3 with Erlang 29 when this was written), installed in a chroot so that it
# runs on an older Debian beside the system's RabbitMQ, which it never touches.
#
# The first run builds the chroot with mmdebstrap (~20 s, ~80 MB) from the Debian mirror apt
# already uses. Needs root (chroot, mount). Settings:
#   RABBITMQ4_SUITE  the Debian release to take RabbitMQ from (default trixie; or sid)
#   RABBITMQ4_ROOT   where the chroot lives (default /var/cache/rabbit-queues/rabbitmq4-SUITE)
set -euo pipefail

SUITE=${RABBITMQ4_SUITE:-trixie}
ROOT=${RABBITMQ4_ROOT:-/var/cache/rabbit-queues/rabbitmq4-$SUITE}

say() { printf '[with-rabbitmq4] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
[ "$#" -gt 0 ] || die "usage: $0 COMMAND [ARGUMENT...]"
[ "$(id -u)" = 0 ] || die "run as root (it builds and enters a chroot)"

# The Debian mirror this machine's apt uses (deb822 sources first, then sources.list).
apt_mirror() { # $1: a pattern the URI must match
    local uris
    uris=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        awk '/^URIs:/ {print $2} /^deb / {print $2}') || true
    grep -m1 -E "$1" <<<"$uris"
}

build_chroot() {
    local mirror security partial=$ROOT.partial
    mirror=$(apt_mirror '/debian/?$') || die "no Debian mirror found in apt's sources"
    security=$(apt_mirror 'security') || security=$mirror-security
    if ! command -v mmdebstrap >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap
    fi
    local sources=("deb $mirror $SUITE main") options=()
    case $SUITE in
    sid | unstable)
        # sid has no -updates or -security suite, and a mirror may serve its Release file
        # past its Valid-Until date.
        options+=(--aptopt='Acquire::Check-Valid-Until "false"')
        ;;
    *) sources+=("deb $mirror $SUITE-updates main" "deb $security $SUITE-security main") ;;
    esac
    say "building a Debian $SUITE chroot with rabbitmq-server in $ROOT"
    rm -rf --one-file-system "$partial"
    mkdir -p "$(dirname "$ROOT")"
    mmdebstrap --quiet --variant=apt --include=rabbitmq-server \
        --aptopt='APT::Install-Recommends "false"' "${options[@]}" "$SUITE" "$partial" \
        "${sources[@]}"
    mv "$partial" "$ROOT"
}

# The tests hand each node's directory to the host's `rabbitmq` user; the chroot's user of
# that name must have the same uid and gid to own it.
align_rabbitmq_user() {
    local uid gid old_uid old_gid
    uid=$(id -u rabbitmq 2>/dev/null) || return 0
    gid=$(id -g rabbitmq)
    old_uid=$(awk -F: '$1 == "rabbitmq" {print $3}' "$ROOT/etc/passwd")
    old_gid=$(awk -F: '$1 == "rabbitmq" {print $3}' "$ROOT/etc/group")
    [ "$old_uid:$old_gid" = "$uid:$gid" ] && return 0
    say "giving the chroot's rabbitmq user the host's uid:gid $uid:$gid"
    chroot "$ROOT" groupmod -g "$gid" rabbitmq
    chroot "$ROOT" usermod -u "$uid" -g "$gid" rabbitmq
    find "$ROOT" -xdev -uid "$old_uid" -exec chown -h "$uid" {} +
    find "$ROOT" -xdev -gid "$old_gid" -exec chgrp -h "$gid" {} +
}

[ -x "$ROOT/usr/lib/rabbitmq/bin/rabbitmq-server" ] || build_chroot
align_rabbitmq_user
# Erlang's epmd resolves `localhost` through the chroot's /etc/hosts (Erlang 29 fails every
# node with `epmd_error ... nxdomain` without one): the host's.
cp /etc/hosts "$ROOT/etc/hosts"

# The nodes keep their directories (and TLS files) under /tmp: the chroot sees the host's.
mounted=()
unmount() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}"
    done
    rm -rf "${shims:-}"
}
trap unmount EXIT
mount_once() { # type-or-bind source target
    mountpoint -q "$3" && return 0
    if [ "$1" = bind ]; then mount --bind "$2" "$3"; else mount -t "$1" "$2" "$3"; fi
    mounted+=("$3")
}
mount_once proc proc "$ROOT/proc"
mount_once sysfs sysfs "$ROOT/sys"
mount_once bind /tmp "$ROOT/tmp"

# rabbitmq-server & co. on PATH run the chroot's. Debian's wrapper there drops to its
# rabbitmq user with su and keeps the RABBITMQ_* variables the tests set.
shims=$(mktemp -d /tmp/rabbitmq4-shims.XXXXXX)
for tool in rabbitmq-server rabbitmqctl rabbitmq-diagnostics rabbitmq-plugins rabbitmq-queues; do
    printf '#!/bin/sh\nexec chroot %q /usr/sbin/%s "$@"\n' "$ROOT" "$tool" > "$shims/$tool"
    chmod +x "$shims/$tool"
done
# Named in pytest's header (tests/conftest.py), so that a run says which RabbitMQ it tested.
RABBITMQ_TEST_PACKAGE="rabbitmq-server $(chroot "$ROOT" dpkg-query -W -f '${Version}' \
    rabbitmq-server) from Debian $SUITE"
export RABBITMQ_TEST_PACKAGE
say "$RABBITMQ_TEST_PACKAGE"
PATH="$shims:$PATH" "$@"
