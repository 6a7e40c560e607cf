"""Part 2 of the Broker of broker.py: what keeps a worker going when things go wrong. Skip it
on a first reading.

The handler runs inside pika's delivery callback, on the connection's own thread, as in a bare
pika consumer: acks and publishes are plain pika calls. But pika only sends and reads
heartbeats while its thread is in pika, so a task longer than the heartbeat timeout would cost
the connection. A pump thread serves the connection meanwhile: `_in_pika` is held by whichever
thread is inside pika; the callback lets go of it while the handler runs, and the pump then
calls process_data_events(0). As the connection's thread is inside a callback, pika's
re-entrancy guard makes that call do I/O and timers only (heartbeats sent and read, frames
buffered) and dispatch nothing.

Also here: a handler that raises (its message dead-lettered with the reason, or dropped, loudly,
if even that is refused), reconnecting with backoff and failing over to the next node (also
when RabbitMQ fails the first subscription), Ctrl+C and SIGTERM (the current message first),
--burst, the broker cancelling the subscription (a deleted queue; consumer_timeout on RabbitMQ
4.3) or closing the channel (consumer_timeout before 4.3), a resource alarm blocking publishes.
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
import time
from contextlib import suppress
from types import FrameType
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

from rabbit_queues.cli import counted, shortened
from rabbit_queues.connection import BrokerError, redact_url, without_advice
from rabbit_queues.delivery import DELIVERY_LIMIT, ConnectionLost, Delivery
from rabbit_queues.queues import QueueSpec, passive_declare, retry_queue

IDLE_SECONDS = 0.25  # how long a worker waits in pika between looks at Ctrl+C and --burst
RETRY_GRACE_SECONDS = 1  # how late a retry may come back from its retry queue
PUMP_SECONDS = 0.5  # a handler running longer than this has the connection served meanwhile
RECONNECT_DELAYS = (0.5, 1, 2, 4, 8)  # seconds before each reconnect attempt; then the last
INTERNAL_ERROR = 541  # RabbitMQ closes the connection with it when it crashes on our request
# The connection, or our channel on it, is gone: reconnect. (A channel the broker closes
# requeues what it had unacknowledged.)
LOST = (
    ConnectionLost,
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelClosedByBroker,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ConnectionWrongStateError,
)
KILLS_WORKERS = (
    f"came back unacknowledged {DELIVERY_LIMIT} times: did it kill each worker that took it, "
    "or run past RabbitMQ's consumer_timeout?"
)
# RabbitMQ 4.3 and later cancel the subscription of a worker that holds a task of a quorum
# queue past consumer_timeout (earlier versions close the channel), and put the task back.
TOOK_IT_BACK = (
    "RabbitMQ cancelled the subscription and took the task back (past consumer_timeout, or "
    "the queue was deleted)"
)
TIMED_OUT = (
    "ran past RabbitMQ's delivery acknowledgement timeout (consumer_timeout), so RabbitMQ "
    "took it back: raise the timeout, or split the task"
)


class KeepsWorking:
    """The Broker's Part 2, as its base class: broker.py opens the connection and the channel,
    declares, publishes, subscribes and acks; these methods keep all that working."""

    # Set by the Broker (broker.py):
    url: str
    node_url: str | None
    connection: BlockingConnection
    channel: BlockingChannel
    _declared: list[QueueSpec]
    _subscription: Any  # the subscription consume() made, or None before

    def _robustness_init(self) -> None:
        self._in_pika = threading.Lock()
        self._handling_since: float | None = None  # while a handler runs (read under the lock)
        self._last_delivery = time.monotonic()
        self._stop_requested = False
        self._cancelled_by_broker = False
        self._closed = threading.Event()
        self._wake_pump = threading.Event()
        self._previous_signal_handlers: dict[int, Any] = {}
        self._timed_out: set[str] = set()  # messages RabbitMQ took back from us at its timeout
        self._blocked = False  # by a resource alarm: RabbitMQ reads nothing we send
        self._dropped = 0  # messages RabbitMQ would not even take a dead-letter copy of
        self._retries_back_by = 0.0  # when the last retry this worker made is due back

    def _set_blocked(self, blocked: bool) -> None:
        self._blocked = blocked

    @property
    def frame_max(self) -> int:
        """The largest frame this connection may send (negotiated with the broker)."""
        return self.connection._impl.params.frame_max

    def _declare_again(self, spec: QueueSpec) -> None:
        """One of our queues was deleted while we ran (say, task_queue.retry): declare it
        again, rather than leave the message we were settling unsettled."""
        print(f" [!] Queue {spec.name!r} was deleted; declaring it again")
        with self._in_pika:
            self.declare(spec)

    def reject(self, channel: BlockingChannel, delivery_tag: int) -> None:
        """Drop a message for good (see Delivery.drop)."""
        with self._in_pika:
            self._check_still_open(channel)
            channel.basic_reject(delivery_tag=delivery_tag, requeue=False)

    def _check_still_open(self, channel: BlockingChannel) -> None:
        """A message is settled on the channel it came on; if that one is gone, or RabbitMQ
        cancelled the subscription it came on, RabbitMQ has put the message back already."""
        if channel is self.channel and self._cancelled_by_broker:
            raise ConnectionLost(TOOK_IT_BACK)
        if channel is not self.channel or not channel.is_open:
            raise ConnectionLost(closed_channel(channel))

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        for signum, handler in self._previous_signal_handlers.items():
            signal.signal(signum, handler)
        if self._blocked:  # RabbitMQ would never read our close: the socket closes on exit
            return
        with self._in_pika, suppress(pika.exceptions.AMQPError):  # going away anyway
            if self.connection.is_open:
                self.connection.close()

    def _pump(self) -> None:
        said_finishing = False
        while not self._closed.is_set():
            self._wake_pump.wait(PUMP_SECONDS)  # or less: a stop was requested, to say so
            self._wake_pump.clear()
            with self._in_pika:
                since = self._handling_since
                # Said holding the lock: the handler cannot be over yet, nor " [*] Exiting" said.
                # On stderr: a print is two writes (the text, then "\n"), so a line printed to
                # stdout from this thread could land inside one the handler is printing.
                # (Nowhere, if stderr is gone: this thread must never die, or heartbeats stop.)
                if self._stop_requested and since is not None and not said_finishing:
                    with suppress(OSError):
                        print(
                            " [*] Finishing the current message first (press CTRL+C again to "
                            "quit now)",
                            file=sys.stderr,
                        )
                    said_finishing = True
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
        self._last_delivery = now = time.monotonic()
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
        self._handling_since = now
        self._in_pika.release()  # the pump may serve the connection while the handler runs
        try:
            self._handle(delivery)
            if delivery.back_by is not None:  # --burst must not leave before it is back
                self._retries_back_by = max(self._retries_back_by, delivery.back_by)
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
                    self._dead_letter(delivery, TIMED_OUT)
                    return
                if not delivery.settled and delivery.returned >= DELIVERY_LIMIT:
                    self._dead_letter(delivery, KILLS_WORKERS)
                    return
                self._subscription.handler(delivery)
            except LOST:
                raise
            except Exception as error:  # a bug or a bad message must not kill the worker
                reason = shortened(f"{type(error).__name__}: {error}")
                if delivery.settled:
                    print(f" [!] {reason}")
                    return
                self._dead_letter(delivery, reason)
        except LOST as error:  # not acknowledged on the channel it came on: RabbitMQ requeued it
            # Its consumer_timeout (RabbitMQ 4.3 cancels the subscription, older ones close
            # the channel): this worker will not run it again.
            if str(error) == TOOK_IT_BACK or "delivery acknowledgement" in str(error):
                self._timed_out.add(delivery.fingerprint)
            lost = str(error) if isinstance(error, ConnectionLost) else "Connection lost"
            print(f" [!] {lost} before the ack: RabbitMQ will deliver that message again")

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park the message in the dead-letter queue; if even that fails (RabbitMQ refuses
        the copy...), drop it, loudly: a message must never go round and round."""
        try:
            print(f" [!] {reason}; {delivery.dead_letter(reason)}")
        except LOST:
            raise
        except Exception as error:
            delivery.drop()
            self._dropped += 1
            print(
                f" [!] {reason}; could not dead-letter it ({shortened(str(error))}), so it was "
                f"DROPPED ({counted(self._dropped, 'messages')} dropped by this worker)"
            )

    def _on_cancelled_by_broker(self, _frame: object) -> None:
        self._cancelled_by_broker = True

    def _serve(self, until_empty: bool) -> bool:
        """Serve the connection until asked to stop (False) or, ``until_empty``, until the
        consumer has been idle a moment and the queue and its retry queue are empty (True)."""
        assert self._subscription is not None
        self._tick()
        # Held all along, as this thread is in pika but for the handler (see _on_message).
        with self._in_pika:
            while not self._stop_requested:
                self._process_events(None)  # until a message is handled, or the next tick
                if self._cancelled_by_broker:  # nothing more would arrive: subscribe again
                    raise ConnectionLost(
                        f"RabbitMQ cancelled this worker's subscription to "
                        f"{self._subscription.queue.name!r}"
                    )
                if until_empty and self._idle() and self._nothing_waits():
                    self._process_events(0)  # a message the broker sent before it answered
                    if self._idle():
                        print(" [*] Queue is empty, exiting")
                        return True
        return False

    def _idle(self) -> bool:
        """No delivery for IDLE_SECONDS, nor a retry of ours on its way back (which is, for a
        moment, in neither queue)."""
        now = time.monotonic()
        idle = now - self._last_delivery >= IDLE_SECONDS
        return idle and now > self._retries_back_by + RETRY_GRACE_SECONDS

    def _tick(self) -> None:
        """Every IDLE_SECONDS, make process_data_events(None) return, to look at Ctrl+C and
        --burst. (One timer for the connection: a time_limit would cost one per message.)"""
        with suppress(pika.exceptions.AMQPError):  # closed: run() is reconnecting
            self.connection.call_later(IDLE_SECONDS, self._tick)

    def _process_events(self, time_limit: float | None) -> None:
        """(Holding _in_pika.)"""
        # Closed (maybe by a callback of the last round): pika would fail with a ValueError
        # (its issue #1291) rather than say so.
        if self.connection.is_closed:
            raise pika.exceptions.StreamLostError("the connection closed")
        self.connection.process_data_events(time_limit=time_limit)
        if not self.channel.is_open and self.connection.is_open:  # closed by the broker
            raise ConnectionLost(closed_channel(self.channel))

    def _nothing_waits(self) -> bool:
        """No message in the queue nor (with manual acks) in its retry queue. (Holding
        _in_pika.)"""
        assert self._subscription is not None
        spec = self._subscription.queue
        queues = [spec] if self._subscription.auto_ack else [spec, retry_queue(spec)]
        declared = [passive_declare(self.channel, q.name) for q in queues]
        if None in declared:  # deleted under us: reconnecting declares it again
            raise ConnectionLost(f"{queues[-1].name} was deleted")
        return all(queue.message_count == 0 for queue in declared if queue is not None)

    def _reconnect(self) -> bool:
        """Close what is left of the connection and connect again with backoff, one line per
        attempt; False if asked to stop first."""
        for attempt in itertools.count(1):
            with self._in_pika, suppress(Exception):  # the lost one, or the last attempt's
                self.connection.close()
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
                continue
            verb = "Reconnected to" if self.node_url == previous_node else "Failed over to"
            print(f" [*] {verb} {redact_url(self.node_url or '')} (attempt {attempt})")
            return True
        raise AssertionError("unreachable")

    def _subscribe_or_reconnect(self) -> None:
        """consume()'s _subscribe(). RabbitMQ (3.10 and 4.0 alike) crashes on a basic_consume
        that reaches a quorum queue whose replica is not running, such as one deleted and
        declared again a moment before, and closes the whole connection with 541
        INTERNAL_ERROR: connect again, as run() does after a loss, rather than exit."""
        try:
            self._subscribe()
        except pika.exceptions.ConnectionClosedByBroker as error:
            if error.reply_code != INTERNAL_ERROR:
                raise
            print(
                f" [!] RabbitMQ failed this worker's subscription ({error.reply_code} "
                f"{error.reply_text}); reconnecting"
            )
            if not self._reconnect():  # Ctrl+C while waiting to: stop as before consume()
                raise KeyboardInterrupt from None

    def _stop_on_signals(self) -> None:
        """Ctrl+C and SIGTERM ask for a clean stop (the current message first); a second one
        quits at once. __exit__ puts the old handlers back."""

        def request_stop(_signum: int, _frame: FrameType | None) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            # No print here: the signal may have interrupted a print of the handler's, whose
            # output lock a print here would wait for forever. The pump thread says it.
            self._stop_requested = True
            self._wake_pump.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, request_stop)
            self._previous_signal_handlers.setdefault(signum, previous)


def closed_channel(channel: BlockingChannel) -> str:
    """'RabbitMQ closed the channel (its reason)', or 'Connection lost' if it did not."""
    reason = getattr(channel, "_closing_reason", None)  # what pika recorded when it closed
    if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
        return f"RabbitMQ closed the channel ({reason.reply_text})"
    return "Connection lost"
