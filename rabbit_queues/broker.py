"""A connection to RabbitMQ: declare, publish with confirms, consume, reconnect, stop cleanly.

pika's BlockingConnection is not thread-safe, and it only sends heartbeats while its own
thread is in pika. So a worker's handler runs on a thread of its own, and everything it asks
of the broker (ack, publish) is handed to the connection's thread with
``connection.add_callback_threadsafe``, pika's recommended pattern. The connection's thread
keeps serving heartbeats however long a task takes.
"""

from __future__ import annotations

import itertools
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.spec import Basic, BasicProperties

from rabbit_queues.connection import (
    BrokerError,
    ConnectionLost,
    connect_to_a_node,
    redact_url,
    without_advice,
)
from rabbit_queues.delivery import DELIVERY_LIMIT, Delivery
from rabbit_queues.queues import QueueSpec, dead_letter_queue, retry_queue

IDLE_SECONDS = 0.2  # how often the consume loop looks at --burst and Ctrl+C when idle
RECONNECT_DELAYS = (0.5, 1, 2, 4, 8)  # seconds before each reconnect attempt; then the last

# The connection, or the channel with it, is gone: reconnect. (A channel closed by the broker
# covers its delivery-acknowledgement timeout, which requeues the unacked task.)
CONNECTION_LOST = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelClosedByBroker,
    pika.exceptions.ChannelWrongStateError,
)

KILLS_WORKERS = (
    f"came back unacknowledged {DELIVERY_LIMIT} times: did it kill each worker that took it?"
)

Handler = Callable[[Delivery], None]
T = TypeVar("T")


@dataclass
class _Subscription:
    queue: QueueSpec
    handler: Handler
    prefetch_count: int | None
    auto_ack: bool


class Broker:
    """One connection with one channel in publisher-confirm mode.

    Use as a context manager: ``with Broker.connect(url) as broker: ...``.
    """

    def __init__(self, url: str) -> None:
        self.url = url  # one node, or a cluster's nodes separated by commas
        self.node_url: str | None = None  # the node we are connected to
        self.generation = 0  # counts connections: a delivery can only be acked on its own
        self._declared: list[QueueSpec] = []
        self._subscription: _Subscription | None = None
        self._lock = threading.Lock()
        self._waiting: set[Future[Any]] = set()  # worker-thread calls not yet run
        self._work: queue.Queue[Delivery] = queue.Queue()
        self._in_flight = 0  # deliveries handed to the worker thread, not yet finished
        self._acks_pending = 0  # acks handed to the connection's thread, not yet sent
        self._delivered = False
        self._busy = False
        self._stop_requested = False
        self._cancelled_by_broker = False
        self._connected = False  # False while reconnecting: worker-thread calls fail at once
        self._connection_thread = threading.get_ident()  # pika's calls are made from here
        self._previous_signal_handlers: dict[int, Any] = {}
        self._open()

    @classmethod
    def connect(cls, url: str) -> Broker:
        """Open a connection to ``url``; raise BrokerError with a one-line reason if we can't."""
        return cls(url)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous_signal_handlers.items():
            signal.signal(signum, handler)
        if self.connection.is_open:
            with suppress(pika.exceptions.AMQPError):  # it is going away anyway
                self.connection.close()

    def _open(self) -> None:
        # The first node that answers; after a failure, the nodes after the one we had first.
        connection, self.node_url = connect_to_a_node(self.url, after=self.node_url)
        channel = connection.channel()
        # Publisher confirms: basic_publish returns only once the broker has taken
        # responsibility for the message (for a persistent one: written it to disk).
        channel.confirm_delivery()
        with self._lock:  # the worker thread sees the new connection and generation together
            self.connection, self.channel = connection, channel
            self.generation += 1
            self._connected = True

    # -- declaring and publishing -------------------------------------------------------

    def declare(self, *queues: QueueSpec) -> None:
        """Declare ``queues`` the one way this project declares them (see queues.py)."""
        for spec in queues:
            spec.declare(self.channel)
            if spec not in self._declared:
                self._declared.append(spec)  # declared again after a reconnect

    def queue_depth(self, spec: QueueSpec) -> int:
        """How many messages wait in ``spec``, ready for a consumer."""
        return self.channel.queue_declare(spec.name, passive=True).method.message_count

    def publish(
        self,
        spec: QueueSpec,
        body: bytes | str,
        *,
        persistent: bool,
        **properties: Any,
    ) -> None:
        """Send ``body`` to ``spec`` and wait for the broker's confirm (from any thread).

        ``persistent`` messages are written to disk and survive a broker restart (in a durable
        queue); transient ones live in memory only. Other keywords become message properties
        (``message_id``, ``correlation_id``, ``headers``, ``expiration``, ...).
        """
        mode = pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient
        message_properties = BasicProperties(delivery_mode=mode, **properties)
        try:
            self._on_connection_thread(
                lambda: self.channel.basic_publish(
                    exchange="",  # the default exchange routes to the queue named by routing_key
                    routing_key=spec.name,
                    body=body,
                    properties=message_properties,
                    mandatory=True,  # if no queue has that name, the broker returns the message
                )
            )
        except pika.exceptions.UnroutableError:
            raise BrokerError(f"queue {spec.name!r} does not exist; nothing was sent") from None
        except pika.exceptions.NackError:
            raise BrokerError(f"RabbitMQ refused a message for {spec.name!r}") from None

    # -- settling deliveries (called by Delivery, from the worker thread) ------------------

    def is_current(self, generation: int) -> bool:
        """Is ``generation`` the connection we still have?"""
        with self._lock:
            return generation == self.generation and self._connected

    def acknowledge(self, delivery_tag: int, generation: int) -> None:
        """Ack a delivery of connection ``generation``; ConnectionLost if that one is gone.

        It does not wait for the connection's thread to send the ack: an ack has no reply, and
        with prefetch 1 the next message cannot come before it anyway.
        """

        def ack() -> None:  # on the connection's thread
            with self._lock:
                self._acks_pending -= 1
            if generation == self.generation and self.channel.is_open:
                self.channel.basic_ack(delivery_tag=delivery_tag)

        with self._lock:
            if not self._connected or generation != self.generation:
                raise ConnectionLost("the connection the message came on is gone")
            self._acks_pending += 1
        if threading.get_ident() == self._connection_thread:
            ack()
            return
        try:
            self._hand_to_connection_thread(ack)
        except ConnectionLost:
            with self._lock:
                self._acks_pending -= 1
            raise

    def _on_connection_thread(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the connection's thread and return its result, from any thread."""
        if threading.get_ident() == self._connection_thread:
            return call()
        done: Future[T] = Future()

        def run() -> None:
            if done.set_running_or_notify_cancel():
                try:
                    done.set_result(call())
                except BaseException as error:  # handed to the waiting thread
                    done.set_exception(error)

        with self._lock:
            if not self._connected:
                raise ConnectionLost("the connection to RabbitMQ is gone")
            self._waiting.add(done)
        try:
            self._hand_to_connection_thread(run)
            return done.result()
        finally:
            with self._lock:
                self._waiting.discard(done)

    def _hand_to_connection_thread(self, call: Callable[[], None]) -> None:
        """Queue ``call`` for the connection's thread; ConnectionLost if the connection has
        closed (the connection's thread may not have noticed yet)."""
        try:
            self.connection.add_callback_threadsafe(call)
        except pika.exceptions.ConnectionWrongStateError:
            raise ConnectionLost("the connection to RabbitMQ is gone") from None

    def _disconnect(self) -> None:
        """Give up the connection; worker-thread calls waiting on it get ConnectionLost."""
        with self._lock:
            self._connected = False
        with suppress(Exception):  # it is most likely gone already
            self.connection.close()
        with self._lock:
            for waiting in self._waiting:
                if not waiting.done():
                    waiting.set_exception(ConnectionLost("the connection to RabbitMQ was lost"))

    # -- consuming ----------------------------------------------------------------------

    def consume(
        self,
        spec: QueueSpec,
        handler: Handler,
        *,
        prefetch_count: int | None = None,
        auto_ack: bool = False,
    ) -> None:
        """Subscribe ``handler`` to ``spec``; messages flow once ``run()`` is called.

        ``prefetch_count``: how many unacknowledged messages the broker may push to this
        worker at once. ``auto_ack``: the broker forgets a message as soon as it sends it.
        A handler that raises gets its message dead-lettered, and the worker goes on.
        """
        if not auto_ack:
            self.declare(dead_letter_queue(spec), retry_queue(spec))
        self._subscription = _Subscription(spec, handler, prefetch_count, auto_ack)
        # From here on Ctrl+C and SIGTERM ask for a clean stop, even before run() is called:
        # a worker that has said it is waiting must not die of a SIGTERM.
        self._stop_on_signals()
        self._subscribe()
        threading.Thread(target=self._work_loop, name="handler", daemon=True).start()

    def _subscribe(self) -> None:
        subscription = self._subscription
        assert subscription is not None
        if subscription.prefetch_count is not None:
            self.channel.basic_qos(prefetch_count=subscription.prefetch_count)
        self.channel.add_on_cancel_callback(self._on_cancelled_by_broker)
        self.channel.basic_consume(
            subscription.queue.name, self._on_message, auto_ack=subscription.auto_ack
        )

    def _on_message(
        self, _channel: object, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        """Runs on the connection's thread: hand the message to the worker thread."""
        assert self._subscription is not None
        if self._stop_requested:
            return  # not started: left unacknowledged, the broker requeues it on close
        self._delivered = True
        with self._lock:
            self._in_flight += 1
        subscription = self._subscription
        self._work.put(
            Delivery(
                self,
                subscription.queue,
                method.delivery_tag,
                properties,
                body,
                settled=subscription.auto_ack,
            )
        )

    def _on_cancelled_by_broker(self, _frame: object) -> None:
        self._cancelled_by_broker = True

    def _work_loop(self) -> None:
        """The worker thread: run the handler on each delivery, one at a time."""
        while True:
            delivery = self._work.get()
            try:
                if not self._stop_requested:
                    self._busy = True
                    self._handle(delivery)
            finally:
                self._busy = False
                with self._lock:
                    self._in_flight -= 1

    def _handle(self, delivery: Delivery) -> None:
        assert self._subscription is not None
        try:
            try:
                if delivery.kills_workers:
                    outcome = delivery.dead_letter(KILLS_WORKERS)
                    print(f" [!] {KILLS_WORKERS}; {outcome}")
                    return
                self._subscription.handler(delivery)
            except ConnectionLost:
                raise
            except Exception as error:  # a bug or a bad message must not kill the worker
                reason = f"{type(error).__name__}: {error}"
                if delivery.settled:
                    print(f" [!] {reason}")
                    return
                outcome = delivery.dead_letter(reason)
                print(f" [!] {reason}; {outcome}")
        except ConnectionLost:
            # Not acknowledged on the connection it came on, so RabbitMQ requeued it.
            print(" [!] Connection lost before the ack: RabbitMQ will deliver that message again")

    def run(self, *, until_empty: bool = False) -> None:
        """Hand messages to the handler until Ctrl+C or SIGTERM (or, with ``until_empty``,
        until the queue has no message left). Reconnects by itself if the broker goes away.

        The first Ctrl+C lets the current message finish and be acknowledged; a second one
        quits at once (raising KeyboardInterrupt), and the broker requeues what was unacked.
        """
        if self._subscription is None:
            raise RuntimeError("call consume() before run()")
        while True:
            try:
                if self._serve(until_empty):
                    return  # --burst: the queue is empty
                break  # Ctrl+C or SIGTERM
            except CONNECTION_LOST as error:
                print(
                    f" [!] Lost the connection to RabbitMQ ({type(error).__name__}); reconnecting"
                )
                self._disconnect()
                if not self._reconnect():
                    break
        print(" [*] Exiting")

    def _serve(self, until_empty: bool) -> bool:
        """Serve the connection until asked to stop (False) or the queue is empty (True)."""
        assert self._subscription is not None
        queue_name = self._subscription.queue.name
        while not (self._stop_requested and self._in_flight == 0):
            self._delivered = False
            self._process_events(IDLE_SECONDS)
            if self._cancelled_by_broker:
                raise BrokerError(
                    f"RabbitMQ cancelled this worker's subscription to {queue_name!r} (was the "
                    "queue deleted?); nothing more will arrive, so the worker stops"
                )
            idle = not self._delivered and self._in_flight == 0 and self._acks_pending == 0
            if until_empty and idle and self._all_done():
                # A message the broker sent us before answering is held by pika until now.
                self._process_events(0)
                if not self._delivered:
                    print(" [*] Queue is empty, exiting")
                    return True
        while self._acks_pending:  # send the last ack before closing, or the broker requeues
            self._process_events(IDLE_SECONDS)
        return False

    def _process_events(self, time_limit: float) -> None:
        """Serve the connection for up to ``time_limit`` s (deliveries, acks, heartbeats)."""
        if self.connection.is_closed:
            # Closed by a callback of the last round: pika would fail with a ValueError
            # ("Timeout closed before call", pika issue #1291) rather than say so.
            raise pika.exceptions.StreamLostError("the connection closed")
        self.connection.process_data_events(time_limit=time_limit)

    def _all_done(self) -> bool:
        """Nothing waits in the queue, nor (with manual acks) in its retry queue."""
        assert self._subscription is not None
        spec = self._subscription.queue
        if self.queue_depth(spec) > 0:
            return False
        return self._subscription.auto_ack or self.queue_depth(retry_queue(spec)) == 0

    def _reconnect(self) -> bool:
        """Connect again with backoff, one line per attempt; False if asked to stop first."""
        for attempt in itertools.count(1):
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS)) - 1]
            if not self._sleep_unless_stopped(delay):
                return False
            previous_node = self.node_url
            try:
                self._open()
                for spec in self._declared:
                    spec.declare(self.channel)
                self._subscribe()
            except (BrokerError, pika.exceptions.AMQPError) as failure:
                print(f" [!] Reconnect attempt {attempt} failed: {without_advice(failure)}")
                self._disconnect()
                continue
            assert self.node_url is not None
            verb = "Reconnected to" if self.node_url == previous_node else "Failed over to"
            print(f" [*] {verb} {redact_url(self.node_url)} (attempt {attempt})")
            return True
        raise AssertionError("unreachable")

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._stop_requested:
                return False
            time.sleep(min(IDLE_SECONDS, deadline - time.monotonic()))
        return not self._stop_requested

    def _stop_on_signals(self) -> None:
        """Make Ctrl+C and SIGTERM ask for a clean stop; __exit__ puts the old handlers back."""

        def request_stop(_signum: int, _frame: FrameType | None) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self._busy:
                print(" [*] Finishing the current message first (press CTRL+C again to quit now)")

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, request_stop)
            self._previous_signal_handlers.setdefault(signum, previous)
