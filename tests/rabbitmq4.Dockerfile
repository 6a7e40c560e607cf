# RabbitMQ 4 from Debian's packages, for tests/with-docker.sh (BASE: the chroot, imported).
# Its settings (node name, ports, plugins, TLS) come from the tests, as for a local node.
ARG BASE
FROM ${BASE}
RUN mkdir -p /var/lib/rabbitmq /var/log/rabbitmq \
 && chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq
ENV HOME=/var/lib/rabbitmq LANG=C.UTF-8 PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/bin
USER rabbitmq
WORKDIR /var/lib/rabbitmq
CMD ["rabbitmq-server"]
