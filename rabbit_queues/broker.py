"""The lesson: how a producer and a worker talk to RabbitMQ with pika.

Part 1 is what every script does, with pika's own calls: connect with publisher confirms,
declare a durable queue, publish a persistent message, consume with a prefetch limit, ack.
Part 2 is what keeps a worker going when things go wrong (long tasks, a lost connection,
Ctrl+C): skip it on a first reading.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Basic, BasicProperties

from rabbit_queues.connection import BrokerError, connect_to_a_node, redact_url, without_advice
from rabbit_queues.delivery import DELIVERY_LIMIT, ConnectionLost, Delivery
from rabbit_queues.queues import (
    QueueSpec,
    dead_letter_queue,
    explain_clash,
    passive_declare,
    retry_queue,
)

KILLS_WORKERS = (
    f"came back unacknowledged {DELIVERY_LIMIT} times: did it kill each worker that took it, "
    "or run past RabbitMQ's consumer_timeout?"
)
TIMED_OUT = (
    "ran past RabbitMQ's delivery acknowledgement timeout (consumer_timeout), so RabbitMQ "
    "took it back: raise the timeout, or split the task"
)


class Broker:
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

    def declare(self, *queues: QueueSpec) -> None:
        """Create each queue unless it exists; producers and workers both declare theirs,
        so either may start first."""
        for spec in queues:
            try:
                # durable=True: the queue itself survives a broker restart.
                self.channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
            except ChannelClosedByBroker as error:
                if error.reply_code != 406:  # PRECONDITION_FAILED: it exists, declared otherwise
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
        try:
            with self._in_pika:
                self.channel.basic_publish(
                    exchange="",  # the default exchange routes to the queue named routing_key
                    routing_key=spec.name,
                    body=body,
                    properties=BasicProperties(delivery_mode=mode, **properties),
                    mandatory=True,  # no queue of that name: the broker returns it, not drops it
                )
        except pika.exceptions.UnroutableError:
            raise BrokerError(f"queue {spec.name!r} does not exist; nothing was sent") from None
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
        self._subscribe()
        threading.Thread(target=self._pump, name="heartbeat pump", daemon=True).start()

    def _subscribe(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        # At most prefetch_count unacknowledged messages on this worker at a time: with 1, a
        # busy worker gets no new message, so the next one goes to a worker that is free.
        self.channel.basic_qos(prefetch_count=subscription.prefetch_count)
        self.channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        # pika calls self._on_message for each message: it runs the handler (Part 2).
        self.channel.basic_consume(
            subscription.queue.name, self._on_message, auto_ack=subscription.auto_ack
        )

    def ack(self, channel: BlockingChannel, delivery_tag: int) -> None:
        """Tell RabbitMQ a message is done, so it may delete it (see Delivery.ack)."""
        with self._in_pika:
            if channel is not self.channel or not channel.is_open:
                raise ConnectionLost(closed_channel(channel))
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
                self._disconnect()
                if not self._reconnect():
                    break
        print(" [*] Exiting")

    # -- Part 2: skip on a first reading ------------------------------------------------------
    #
    # The handler runs inside pika's delivery callback, on the connection's own thread, as in a
    # bare pika consumer: acks and publishes are plain pika calls. But pika only sends and reads
    # heartbeats while its thread is in pika, so a task longer than the heartbeat timeout would
    # cost the connection. A pump thread serves the connection meanwhile: `_in_pika` is held by
    # whichever thread is inside pika; the callback lets go of it while the handler runs, and
    # the pump then calls process_data_events(0). As the connection's thread is inside a
    # callback, pika's re-entrancy guard makes that call do I/O and timers only (heartbeats
    # sent and read, frames buffered) and dispatch nothing.

    def _robustness_init(self) -> None:
        self._in_pika = threading.Lock()
        self._handling_since: float | None = None  # while a handler runs (read under the lock)
        self._last_delivery = time.monotonic()
        self._stop_requested = False
        self._cancelled_by_broker = False
        self._closed = threading.Event()
        self._previous_signal_handlers: dict[int, Any] = {}
        self._timed_out: set[str] = set()  # messages RabbitMQ took back from us at its timeout

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        for signum, handler in self._previous_signal_handlers.items():
            signal.signal(signum, handler)
        with self._in_pika, suppress(pika.exceptions.AMQPError):  # going away anyway
            if self.connection.is_open:
                self.connection.close()

    def _pump(self) -> None:
        while not self._closed.wait(PUMP_SECONDS):
            with self._in_pika:
                since = self._handling_since
                if since is None or time.monotonic() - since < PUMP_SECONDS:
                    continue
                with suppress(Exception):  # lost: the handler's ack, or run(), will say so
                    if self.connection.is_open:
                        self.connection.process_data_events(time_limit=0)

    def _on_message(
        self, channel: BlockingChannel, method: Basic.Deliver, props: BasicProperties, body: bytes
    ) -> None:
        """pika's callback, on the connection's thread, holding _in_pika."""
        assert self._subscription is not None
        self._last_delivery = time.monotonic()
        if self._stop_requested:
            return  # not started: unacknowledged, the broker requeues it when we close
        subscription = self._subscription
        delivery = Delivery(
            self,
            channel,
            method.delivery_tag,
            props,
            body,
            subscription.queue,
            redelivered=bool(method.redelivered),
            settled=subscription.auto_ack,
        )
        self._handling_since = time.monotonic()
        self._in_pika.release()  # the pump may serve the connection while the handler runs
        try:
            self._handle(delivery)
        finally:
            self._in_pika.acquire()
            self._handling_since = None

    def _handle(self, delivery: Delivery) -> None:
        assert self._subscription is not None
        try:
            try:
                if (
                    self._timed_out
                    and delivery.redelivered
                    and delivery.fingerprint in self._timed_out
                ):
                    self._timed_out.discard(delivery.fingerprint)
                    print(f" [!] {TIMED_OUT}; {delivery.dead_letter(TIMED_OUT)}")
                    return
                if delivery.returned >= DELIVERY_LIMIT and not delivery.settled:
                    print(f" [!] {KILLS_WORKERS}; {delivery.dead_letter(KILLS_WORKERS)}")
                    return
                self._subscription.handler(delivery)
            except LOST:
                raise
            except Exception as error:  # a bug or a bad message must not kill the worker
                reason = f"{type(error).__name__}: {error}"
                if delivery.settled:
                    print(f" [!] {reason}")
                    return
                print(f" [!] {reason}; {delivery.dead_letter(reason)}")
        except LOST as error:  # not acknowledged on the channel it came on: RabbitMQ requeued it
            if "delivery acknowledgement" in str(error):  # its consumer_timeout: not again here
                self._timed_out.add(delivery.fingerprint)
            lost = str(error) if isinstance(error, ConnectionLost) else "Connection lost"
            print(f" [!] {lost} before the ack: RabbitMQ will deliver that message again")

    def _on_cancelled_by_broker(self, _frame: object) -> None:
        self._cancelled_by_broker = True

    def _serve(self, until_empty: bool) -> bool:
        """Serve the connection until asked to stop (False) or, ``until_empty``, until the
        consumer has been idle a moment and the queue and its retry queue are empty (True)."""
        assert self._subscription is not None
        self._tick()
        while not self._stop_requested:
            self._process_events(None)  # until a message is handled, or the next tick
            if self._cancelled_by_broker:
                raise BrokerError(
                    f"RabbitMQ cancelled this worker's subscription to "
                    f"{self._subscription.queue.name!r} (was the queue deleted?); nothing more "
                    "will arrive, so the worker stops"
                )
            idle = time.monotonic() - self._last_delivery >= IDLE_SECONDS
            if until_empty and idle and self._nothing_waits():
                self._process_events(0)  # a message the broker sent before it answered
                if time.monotonic() - self._last_delivery >= IDLE_SECONDS:
                    print(" [*] Queue is empty, exiting")
                    return True
        return False

    def _tick(self) -> None:
        """Every IDLE_SECONDS, make process_data_events(None) return, to look at Ctrl+C and
        --burst. (One timer for the connection: a time_limit would cost one per message.)"""
        with suppress(pika.exceptions.AMQPError):  # closed: run() is reconnecting
            self.connection.call_later(IDLE_SECONDS, self._tick)

    def _process_events(self, time_limit: float | None) -> None:
        with self._in_pika:
            # Closed (maybe by a callback of the last round): pika would fail with a ValueError
            # (its issue #1291) rather than say so.
            if self.connection.is_closed:
                raise pika.exceptions.StreamLostError("the connection closed")
            self.connection.process_data_events(time_limit=time_limit)
            if self.connection.is_open and not self.channel.is_open:  # closed by the broker
                raise ConnectionLost(closed_channel(self.channel))

    def _nothing_waits(self) -> bool:
        """No message in the queue nor (with manual acks) in its retry queue."""
        assert self._subscription is not None
        spec = self._subscription.queue
        queues = [spec] if self._subscription.auto_ack else [spec, retry_queue(spec)]
        with self._in_pika:
            declared = [passive_declare(self.channel, q.name) for q in queues]
        if None in declared:  # deleted under us: reconnecting declares it again
            raise ConnectionLost(f"{queues[-1].name} was deleted")
        return all(queue.message_count == 0 for queue in declared if queue is not None)

    def _disconnect(self) -> None:
        with self._in_pika, suppress(Exception):  # most likely gone already
            self.connection.close()

    def _reconnect(self) -> bool:
        """Connect again with backoff, one line per attempt; False if asked to stop first."""
        for attempt in itertools.count(1):
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS)) - 1]
            for _ in range(round(delay / IDLE_SECONDS)):  # a Ctrl+C is seen within IDLE_SECONDS
                if self._stop_requested:
                    return False
                time.sleep(IDLE_SECONDS)
            previous_node = self.node_url
            try:
                with self._in_pika:
                    self._open()
                for spec in list(self._declared):
                    self.declare(spec)
                self._subscribe()
            except (BrokerError, pika.exceptions.AMQPError) as failure:
                print(f" [!] Reconnect attempt {attempt} failed: {without_advice(failure)}")
                self._disconnect()
                continue
            verb = "Reconnected to" if self.node_url == previous_node else "Failed over to"
            print(f" [*] {verb} {redact_url(self.node_url or '')} (attempt {attempt})")
            return True
        raise AssertionError("unreachable")

    def _stop_on_signals(self) -> None:
        """Ctrl+C and SIGTERM ask for a clean stop (the current message first); a second one
        quits at once. __exit__ puts the old handlers back."""

        def request_stop(_signum: int, _frame: FrameType | None) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self._handling_since is not None:
                print(" [*] Finishing the current message first (press CTRL+C again to quit now)")

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, request_stop)
            self._previous_signal_handlers.setdefault(signum, previous)


def closed_channel(channel: BlockingChannel) -> str:
    """'RabbitMQ closed the channel (its reason)', or 'Connection lost' if it did not."""
    reason = getattr(channel, "_closing_reason", None)  # what pika recorded when it closed
    if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
        return f"RabbitMQ closed the channel ({reason.reply_text})"
    return "Connection lost"


Handler = Callable[[Delivery], None]


@dataclass
class _Subscription:
    queue: QueueSpec
    handler: Handler
    prefetch_count: int
    auto_ack: bool


IDLE_SECONDS = 0.25  # how long a worker waits in pika between looks at Ctrl+C and --burst
PUMP_SECONDS = 0.5  # a handler running longer than this has the connection served meanwhile
RECONNECT_DELAYS = (0.5, 1, 2, 4, 8)  # seconds before each reconnect attempt; then the last
# The connection, or our channel on it, is gone: reconnect. (A channel the broker closes
# requeues what it had unacknowledged.)
LOST = (
    ConnectionLost,
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelClosedByBroker,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ConnectionWrongStateError,
)
