"""The lesson: how a producer and a worker talk to RabbitMQ, in pika's own calls, in the order a
learner meets them: connect with publisher confirms, declare a durable queue, publish a
persistent message, consume with a prefetch limit (pika then calls _on_message, which hands each
message to the handler), ack. A producer uses a Broker as it is; a worker's Broker is held by a
Worker (staying_up.py), which builds a new one after any loss: skip that on a first reading.
"""

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from rabbit_queues.connection import (
    BrokerError,
    Lost,
    Refused,
    connect,
    report_blocking,
    what_was_lost,
)
from rabbit_queues.delivery import Delivery
from rabbit_queues.queues import QueueSpec, explain_clash

Handler = Callable[[Delivery], None]


def not_routed(spec: QueueSpec) -> Lost:
    """RabbitMQ returned a message: there is no queue ``spec`` (mandatory=True)."""
    return Lost(f"queue {spec.name!r} does not exist", "; nothing was sent")


def refused(spec: QueueSpec) -> Refused:
    """RabbitMQ nacked a message for ``spec``."""
    return Refused(f"RabbitMQ refused a message for {spec.name!r}")


class Broker:
    """One connection to RabbitMQ, with one channel: ``with Broker(url) as broker:``."""

    def __init__(self, url: str, *, after: str | None = None) -> None:
        # url: one node, or a cluster's nodes separated by commas; the first that answers
        # (after a loss, starting with the node listed after the one we had: a failover).
        self.connection, self.node_url = connect(url, after=after)
        self.channel = self.connection.channel()
        # Publisher confirms: basic_publish returns only once the broker has taken
        # responsibility for the message (for a persistent one: written it to disk).
        self.channel.confirm_delivery()
        # Held by whichever thread is inside pika: while a worker's handler runs, a pump
        # thread serves the connection's heartbeats (staying_up.py).
        self.in_pika = threading.Lock()
        self.cancelled = False  # RabbitMQ cancelled our subscription
        # Set by a resource alarm (RabbitMQ reads nothing we send), said at once, even while
        # basic_publish waits: on the asynchronous connection underneath, as pika's
        # BlockingConnection runs its own callbacks only between calls.
        self.blocked = report_blocking(self.connection._impl)

    def declare(self, *queues: QueueSpec) -> None:
        """Create each queue unless it exists: producers and workers both declare theirs, so
        either may start first."""
        for spec in queues:
            try:
                # durable=True: the queue itself survives a broker restart.
                self.channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
            except pika.exceptions.ChannelClosedByBroker as error:
                if "inequivalent arg" not in error.reply_text:
                    raise  # another refusal: run_script prints RabbitMQ's words
                raise BrokerError(explain_clash(spec, error.reply_text)) from None

    def publish(
        self, spec: QueueSpec, body: bytes | str, *, persistent: bool, **properties: Any
    ) -> None:
        """Send ``body`` to ``spec``; return once the broker has confirmed it. Persistent
        messages are written to disk (in a durable queue they survive a restart). Other
        keywords are properties: ``message_id``, ``correlation_id``, ``headers``..."""
        mode = pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient
        try:
            with self.in_pika:
                self.channel.basic_publish(
                    exchange="",  # the default exchange routes to the queue routing_key names
                    routing_key=spec.name,
                    body=body,
                    properties=BasicProperties(delivery_mode=mode, **properties),
                    mandatory=True,  # no such queue: the broker returns it, not drops it
                )
        except pika.exceptions.UnroutableError:
            raise not_routed(spec) from None
        except pika.exceptions.NackError:
            raise refused(spec) from None

    def consume(
        self, spec: QueueSpec, handler: Handler, *, prefetch_count: int = 0, auto_ack: bool = False
    ) -> None:
        """Have pika call ``handler`` with each message of ``spec`` while the connection is
        served (Worker.run). ``auto_ack``: RabbitMQ forgets a message as soon as it sends it."""
        self._queue, self._handler, self._auto_ack = spec, handler, auto_ack
        # At most prefetch_count unacknowledged messages on this worker at a time: with 1, a
        # busy worker gets no new message, so the next one goes to a worker that is free.
        self.channel.basic_qos(prefetch_count=prefetch_count)
        # RabbitMQ may cancel the subscription (a deleted queue; on 4.3, a quorum queue's
        # consumer_timeout): told at once, on the channel underneath, as for alarms above.
        self.channel._impl.add_on_cancel_callback(self._on_cancelled)
        self.channel.basic_consume(spec.name, self._on_message, auto_ack=auto_ack)

    def _on_message(
        self, _channel: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes
    ) -> None:
        """pika's delivery callback: one message, handed to the handler."""
        delivery = Delivery(
            self,
            method.delivery_tag,  # numbers the message on this channel: only it can ack it
            props,
            body,
            self._queue,
            redelivered=method.redelivered,  # delivered before, to this worker or another
            settled=self._auto_ack,
        )
        self._handler(delivery)

    def ack(self, delivery_tag: int) -> None:
        """Tell RabbitMQ a message is done, so it may delete it (see Delivery.ack)."""
        with self.in_pika:
            self.check_open()
            self.channel.basic_ack(delivery_tag=delivery_tag)

    def reject(self, delivery_tag: int) -> None:
        """Drop a message for good (see Delivery.drop)."""
        with self.in_pika:
            self.check_open()
            self.channel.basic_reject(delivery_tag=delivery_tag, requeue=False)

    def check_open(self) -> None:
        """Lost if the channel closed or RabbitMQ cancelled our subscription: what it
        delivered us went back to the queue, and cannot be settled here."""
        if self.cancelled:
            raise Lost(f"RabbitMQ cancelled the subscription to {self._queue.name!r}")
        if not self.channel.is_open:  # why, as pika recorded it (the connection's, if it went)
            raise Lost(what_was_lost(getattr(self.channel, "_closing_reason", None)))

    @property
    def frame_max(self) -> int:
        """The largest frame this connection may send, as negotiated."""
        return self.connection._impl.params.frame_max

    def _on_cancelled(self, _frame: object) -> None:
        self.cancelled = True

    def close(self) -> None:
        if self.blocked.is_set():  # RabbitMQ would not read a close: the socket closes on exit
            return
        with self.in_pika, suppress(pika.exceptions.AMQPError):  # gone already
            if self.connection.is_open:
                self.connection.close()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
