"""The lesson: how a producer and a worker talk to RabbitMQ with pika.

This file is what every script does, with pika's own calls: connect with publisher confirms,
declare a durable queue, publish a persistent message, consume with a prefetch limit, ack.
What keeps a worker going when things go wrong (long tasks, a lost connection, Ctrl+C) is its
Part 2, in staying_up.py: skip it on a first reading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker
from pika.spec import BasicProperties

from rabbit_queues.connection import BrokerError, connect_to_a_node, report_blocking
from rabbit_queues.delivery import ConnectionLost, Delivery
from rabbit_queues.queues import QueueSpec, dead_letter_queue, explain_clash, retry_queue
from rabbit_queues.staying_up import LOST, KeepsWorking


class Broker(KeepsWorking):
    """One connection to RabbitMQ, with one channel: ``with Broker.connect(url) as broker:``."""

    def __init__(self, url: str) -> None:
        self.url = url  # one node, or a cluster's nodes separated by commas
        self.node_url: str | None = None  # the node we are connected to
        self._declared: list[QueueSpec] = []
        self._subscription: _Subscription | None = None
        self._robustness_init()
        self._open()

    @classmethod
    def connect(cls, url: str) -> Broker:
        """Open a connection to ``url``; raise BrokerError with a one-line reason if we can't."""
        return cls(url)

    def _open(self) -> None:
        # The first node that answers (after a failure: the ones after the node we had first).
        self.connection, self.node_url = connect_to_a_node(self.url, after=self.node_url)
        self.channel = self.connection.channel()
        # Publisher confirms: basic_publish returns only once the broker has taken
        # responsibility for the message (for a persistent one: written it to disk).
        self.channel.confirm_delivery()
        # A resource alarm makes publishes wait: say so (staying_up.py). pika's BlockingConnection
        # runs its own blocked callbacks only between calls, never while basic_publish waits,
        # so they go on the asynchronous connection underneath, which runs them at once.
        report_blocking(self.connection._impl, self._set_blocked)

    def declare(self, *queues: QueueSpec) -> None:
        """Create each queue unless it exists; producers and workers both declare theirs,
        so either may start first."""
        for spec in queues:
            try:
                # durable=True: the queue itself survives a broker restart.
                self.channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
            except ChannelClosedByBroker as error:
                # It exists, declared otherwise. (Other refusals, a vhost's queue limit among
                # them, are printed as RabbitMQ words them: run_script.)
                if "inequivalent arg" not in error.reply_text:
                    raise
                raise BrokerError(explain_clash(spec, error.reply_text, self.connection)) from None
            if spec not in self._declared:
                self._declared.append(spec)  # to declare again after a reconnect

    def publish(
        self, spec: QueueSpec, body: bytes | str, *, persistent: bool, **properties: Any
    ) -> None:
        """Send ``body`` to ``spec`` and return once the broker has confirmed it.

        Persistent messages are written to disk (in a durable queue they survive a restart);
        transient ones live in memory (in a classic queue). Other keywords are properties:
        ``message_id``, ``correlation_id``, ``headers``, ``expiration``...
        """
        mode = pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient
        for attempt in (1, 2):  # a second only if our queue was deleted (staying_up.py)
            try:
                with self._in_pika:
                    self.channel.basic_publish(
                        exchange="",  # the default exchange routes to the queue routing_key names
                        routing_key=spec.name,
                        body=body,
                        properties=BasicProperties(delivery_mode=mode, **properties),
                        mandatory=True,  # no such queue: the broker returns it, not drops it
                    )
                return
            except pika.exceptions.UnroutableError:
                if attempt == 2 or spec not in self._declared:
                    raise BrokerError(
                        f"queue {spec.name!r} does not exist; nothing was sent"
                    ) from None
                self._declare_again(spec)
            except pika.exceptions.NackError:
                raise BrokerError(f"RabbitMQ refused a message for {spec.name!r}") from None

    def consume(
        self, spec: QueueSpec, handler: Handler, *, prefetch_count: int = 0, auto_ack: bool = False
    ) -> None:
        """Call ``handler`` with each message of ``spec`` once ``run()`` is called.

        ``prefetch_count``: how many unacknowledged messages RabbitMQ may push to this worker
        at once (0: no limit). ``auto_ack``: RabbitMQ forgets a message as soon as it sends it.
        """
        if not auto_ack:  # where a failed message waits, and where it ends
            self.declare(dead_letter_queue(spec), retry_queue(spec))
        self._subscription = _Subscription(spec, handler, prefetch_count, auto_ack)
        self._stop_on_signals()  # from now on: a worker that said it waits must stop cleanly
        self._subscribe_or_reconnect()  # _subscribe() below (staying_up.py: if RabbitMQ fails it)
        threading.Thread(target=self._pump, name="heartbeat pump", daemon=True).start()

    def _subscribe(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        # At most prefetch_count unacknowledged messages on this worker at a time: with 1, a
        # busy worker gets no new message, so the next one goes to a worker that is free.
        self.channel.basic_qos(prefetch_count=subscription.prefetch_count)
        # RabbitMQ may cancel the subscription: the queue was deleted, or (4.3 and later, quorum
        # queues) a task ran past consumer_timeout. On the channel underneath, as for resource
        # alarms above: it is told at once, even while a long task runs (staying_up.py).
        self.channel._impl.add_on_cancel_callback(self._on_cancelled_by_broker)
        self._cancelled_by_broker = False
        # pika calls self._on_message for each message: it runs the handler (staying_up.py).
        self.channel.basic_consume(
            subscription.queue.name, self._on_message, auto_ack=subscription.auto_ack
        )

    def ack(self, channel: BlockingChannel, delivery_tag: int) -> None:
        """Tell RabbitMQ a message is done, so it may delete it (see Delivery.ack)."""
        with self._in_pika:
            self._check_still_open(channel)  # (staying_up.py)
            # The tag numbers the message on its channel: only that channel can ack it.
            channel.basic_ack(delivery_tag=delivery_tag)

    def run(self, *, until_empty: bool = False) -> None:
        """Hand messages to the handler until Ctrl+C or SIGTERM (or, ``until_empty``, until
        the queue and its retry queue are empty). Reconnects if the broker goes away."""
        if self._subscription is None:
            raise RuntimeError("call consume() before run()")
        while True:
            try:
                if self._serve(until_empty):
                    return  # --burst: nothing left to do
                break  # Ctrl+C or SIGTERM
            except LOST as error:
                lost = f"Lost the connection to RabbitMQ ({type(error).__name__})"
                print(f" [!] {error if isinstance(error, ConnectionLost) else lost}; reconnecting")
                if not self._reconnect():
                    break
        print(" [*] Exiting")

    def __enter__(self) -> Broker:
        return self


Handler = Callable[[Delivery], None]


@dataclass
class _Subscription:
    queue: QueueSpec
    handler: Handler
    prefetch_count: int
    auto_ack: bool
