#!/bin/bash
# As the official image's entrypoint does: rabbitmq* commands run as the rabbitmq user, which
# owns the data volume; a long host name gets long node names.
set -euo pipefail
if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
    [ "$1" = rabbitmq-server ] && find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$BASH_SOURCE" "$@"
fi
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
    export RABBITMQ_USE_LONGNAME=true
fi
exec "$@"
