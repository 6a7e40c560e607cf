# A stand-in for the official rabbitmq:4-management image, for tests/with-docker.sh where no
# registry can be reached: RabbitMQ 4 from a Debian chroot (BASE, imported), laid out as the
# official image is (data in /var/lib/rabbitmq, node rabbit@<hostname>, the management plugin,
# guest allowed from other hosts, RABBITMQ_DEFAULT_USER/PASS honoured by RabbitMQ itself, the
# server run as the rabbitmq user). Where it differs: Debian's Erlang and RabbitMQ builds, no
# rabbitmq_prometheus tuning, no RABBITMQ_ERLANG_COOKIE handling (docker-compose.yml passes
# the cookie with -setcookie).
ARG BASE
FROM ${BASE}
ENV RABBITMQ_DATA_DIR=/var/lib/rabbitmq HOME=/var/lib/rabbitmq LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq/conf.d \
 && rm -rf /var/lib/rabbitmq/.erlang.cookie /var/lib/rabbitmq/mnesia \
 && printf '%s\n' 'loopback_users.guest = false' 'log.console = true' \
        > /etc/rabbitmq/conf.d/10-defaults.conf \
 && echo '[rabbitmq_management].' > /etc/rabbitmq/enabled_plugins \
 && chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/rabbitmq
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 4369 5672 15672 25672
CMD ["rabbitmq-server"]
