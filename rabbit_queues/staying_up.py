"""A worker that keeps working: the loop around broker.py's Broker. Skip it on a first reading.

Worker.run() is one loop, as pika's blocking_consume_recover_multiple_hosts.py is: serve; on
any loss (the connection or channel closed, the subscription cancelled, a queue of ours gone, a
consumer timeout, a 541 on subscribing) close what is left and start again from the top, with
backoff, over the cluster's nodes: a new Broker, the same declares and subscription.

pika serves heartbeats only while a thread is in pika. While a handler runs, a pump thread calls
process_data_events(0), holding the Broker's in_pika lock, which the serving thread lets go of
for the handler; as that thread is inside pika's callback, pika's re-entrancy guard makes the
pump's call do I/O and timers only, and dispatch nothing.
"""

import itertools
import sys
import threading
import time
from contextlib import ExitStack, suppress

import pika.exceptions

from rabbit_queues.broker import Broker, Handler, Refused
from rabbit_queues.cli import counted, shortened, stop_requests
from rabbit_queues.connection import BrokerError, Lost, redact_url, what_was_lost, without_advice
from rabbit_queues.delivery import Delivery
from rabbit_queues.queues import QueueCounts, QueueSpec, dead_letter_queue, retry_queue

IDLE_SECONDS = 0.25  # how long a worker waits in pika between looks at Ctrl+C and --burst
RETRY_GRACE_SECONDS = 1  # how late a retry may come back from its retry queue
PUMP_SECONDS = 0.5  # a handler running longer than this has the connection served meanwhile
RECONNECT_DELAYS = (0.5, 1, 2, 4, 8)  # seconds before each reconnect attempt; then the last
LOST = (
    Lost,
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.ChannelClosedByBroker,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ConnectionWrongStateError,
)


class Worker:
    """``with Worker(url) as worker:`` declare, consume, run; after a loss, a new Broker."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.broker = Broker(url)  # not even once: the script exits, saying why
        self._declared: list[QueueSpec] = []
        self._subscription: tuple[QueueSpec, int, bool] | None = None  # queue, prefetch, auto_ack
        self._handler: Handler  # the script's, set by consume()
        self._lost: BaseException | None = None  # what run() must start again after
        self._counts: QueueCounts | None = None  # for --burst, on the broker's connection
        self._stop_requested = False
        self._handling_since: float | None = None  # while a handler runs
        self._last_delivery = time.monotonic()
        self._retries_back_by = 0.0  # when the last retry this worker made is due back
        self._dropped = 0  # messages RabbitMQ would not even take a dead-letter copy of
        self._closed = threading.Event()
        self._wake_pump = threading.Event()
        self._signals = ExitStack()  # Ctrl+C and SIGTERM, once it consumes

    def declare(self, *queues: QueueSpec) -> None:
        self.broker.declare(*queues)
        self._declared += [spec for spec in queues if spec not in self._declared]

    def consume(
        self, spec: QueueSpec, handler: Handler, *, prefetch_count: int = 0, auto_ack: bool = False
    ) -> None:
        """As Broker.consume; with manual acks, declare the retry and dead-letter queues too."""
        if not auto_ack:
            self.declare(dead_letter_queue(spec), retry_queue(spec))
        self._subscription, self._handler = (spec, prefetch_count, auto_ack), handler
        # From now on (a worker that said it waits), a clean stop: the current message first.
        self._signals.enter_context(stop_requests(self._request_stop))
        try:
            self._subscribe()
        except pika.exceptions.AMQPConnectionError as error:  # lost, not refused: run() retries
            self._lose(error)  # (RabbitMQ's 541 while a quorum queue's replica starts)

    def _subscribe(self) -> None:
        assert self._subscription is not None
        spec, prefetch_count, auto_ack = self._subscription
        self.broker.consume(spec, self._handle, prefetch_count=prefetch_count, auto_ack=auto_ack)

    def run(self, *, until_empty: bool = False) -> None:
        """Hand messages to the handler until Ctrl+C or SIGTERM (or, ``until_empty``, until
        the queue and its retry queue are empty), starting again after any loss."""
        if self._subscription is None:
            raise RuntimeError("call consume() before run()")
        threading.Thread(target=self._pump, name="heartbeat pump", daemon=True).start()
        while not self._stop_requested:
            try:
                started = self._lost is None or self._start_again()
                if started and self._serve(until_empty):
                    return  # --burst: nothing left to do
            except LOST as error:
                self._lose(error)
        print(" [*] Exiting")

    def _lose(self, error: BaseException) -> None:
        print(f" [!] {what_was_lost(error)}; reconnecting")
        self._lost = error

    def _serve(self, until_empty: bool) -> bool:
        """Serve the connection until asked to stop (False) or, ``until_empty``, until no
        message came for a moment and the queue and its retry queue are empty (True)."""
        broker = self.broker
        self._tick(broker)
        with broker.in_pika:  # let go of only while the handler runs (_handle)
            while not self._stop_requested:
                # Closed (the connection too, maybe, seen by the pump): pika would not say so
                # but raise ValueError (its #1291). Cancelled: nothing more would come.
                broker.check_open()  # either: raises Lost, saying why
                broker.connection.process_data_events(time_limit=None)  # a message, or a tick
                if until_empty and self._idle() and self._nothing_waits():
                    broker.connection.process_data_events(0)  # sent before it answered?
                    if self._idle():
                        print(" [*] Queue is empty, exiting")
                        return True
        return False

    def _tick(self, broker: Broker) -> None:
        """Make process_data_events(None) return every IDLE_SECONDS, to look at Ctrl+C and
        --burst (one timer for the connection: a time_limit would cost one per message)."""
        with suppress(pika.exceptions.AMQPError):  # closed: run() is starting again
            broker.connection.call_later(IDLE_SECONDS, lambda: self._tick(broker))

    def _idle(self) -> bool:
        """No delivery for IDLE_SECONDS, nor a retry of ours on its way back (in no queue)."""
        now = time.monotonic()
        idle = now - self._last_delivery >= IDLE_SECONDS
        return idle and now > self._retries_back_by + RETRY_GRACE_SECONDS

    def _nothing_waits(self) -> bool:
        assert self._subscription is not None
        spec, _prefetch_count, auto_ack = self._subscription
        if self._counts is None or self._counts.connection is not self.broker.connection:
            self._counts = QueueCounts(self.broker.connection)
        for queue in [spec] if auto_ack else [spec, retry_queue(spec)]:
            counts = self._counts.of(queue.name)
            if counts is None:  # deleted under us: starting again declares it again
                raise Lost(f"queue {queue.name!r} was deleted")
            if counts.message_count != 0:  # (None: RabbitMQ could not count it now)
                return False
        return True

    def _handle(self, delivery: Delivery) -> None:
        """Given to Broker.consume: its _on_message calls it, holding in_pika, for each message."""
        self._last_delivery = now = time.monotonic()
        if self._stop_requested:
            return  # not started: unacknowledged, the broker requeues it when we close
        in_pika = self.broker.in_pika
        self._handling_since = now
        in_pika.release()  # the pump may serve the connection meanwhile
        try:
            if not delivery.settled and (why := delivery.why_not_run):
                self._dead_letter(delivery, why)
            else:
                self._handler(delivery)
        except LOST as error:  # not acknowledged: RabbitMQ puts it back in the queue
            again = "before the ack: RabbitMQ will deliver that message again"
            print(f" [!] {what_was_lost(error)} {again}")
            raise
        except Exception as error:  # a bug or a bad message must not kill the worker
            reason = shortened(f"{type(error).__name__}: {error}")
            if delivery.settled:
                print(f" [!] {reason}")
            else:
                self._dead_letter(delivery, reason)
        finally:
            in_pika.acquire()
            self._handling_since = None
        if delivery.back_by is not None:  # --burst must not leave before it is back
            self._retries_back_by = max(self._retries_back_by, delivery.back_by)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park it in the dead-letter queue; if even that fails (RabbitMQ refuses the copy),
        drop it, loudly: a message must never go round and round."""
        try:
            print(f" [!] {reason}; {delivery.dead_letter(reason)}")
        except Exception as error:
            if isinstance(error, LOST) and not isinstance(error, Refused):
                raise
            delivery.drop()
            self._dropped += 1
            print(
                f" [!] {reason}; could not dead-letter it ({shortened(str(error))}), so it was "
                f"DROPPED ({counted(self._dropped, 'messages')} dropped by this worker)"
            )

    def _start_again(self) -> bool:
        """Close what is left; connect, declare, subscribe, with backoff, a line per attempt;
        False if asked to stop first."""
        for attempt in itertools.count(1):
            self._close_broker()
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS)) - 1]
            for _ in range(round(delay / IDLE_SECONDS)):  # a Ctrl+C is seen within IDLE_SECONDS
                if self._stop_requested:
                    return False
                time.sleep(IDLE_SECONDS)
            previous_node = self.broker.node_url
            try:
                self.broker = Broker(self.url, after=previous_node)
                self.broker.declare(*self._declared)
                self._subscribe()
            except (BrokerError, pika.exceptions.AMQPError) as failure:
                why = without_advice(failure) if isinstance(failure, BrokerError) else None
                print(f" [!] Reconnect attempt {attempt} failed: {why or what_was_lost(failure)}")
                continue
            verb = "Reconnected to" if self.broker.node_url == previous_node else "Failed over to"
            print(f" [*] {verb} {redact_url(self.broker.node_url)} (attempt {attempt})")
            self._lost = None
            return True
        raise AssertionError("unreachable")

    def _close_broker(self) -> None:
        with suppress(Exception):  # the lost one, or the last attempt's
            self.broker.close()

    def _request_stop(self) -> None:
        self._stop_requested = True
        self._wake_pump.set()  # it says so

    def _pump(self) -> None:
        said_finishing = False
        while not self._closed.is_set():
            self._wake_pump.wait(PUMP_SECONDS)  # or less: a stop was requested, to say so
            self._wake_pump.clear()
            broker = self.broker
            with broker.in_pika:
                since = self._handling_since
                # Said holding the lock: the handler is not over yet, nor " [*] Exiting" said.
                # On stderr: a print is two writes, which a line of the handler's could split.
                # Nowhere if stderr is gone: this thread must never die, or heartbeats stop.
                if self._stop_requested and since is not None and not said_finishing:
                    said_finishing = True
                    with suppress(OSError):
                        print(
                            " [*] Finishing the current message first (press CTRL+C again to "
                            "quit now)",
                            file=sys.stderr,
                        )
                if since is not None and time.monotonic() - since >= PUMP_SECONDS:
                    with suppress(Exception):  # lost: the handler's ack, or run(), says so
                        if broker.connection.is_open:
                            broker.connection.process_data_events(time_limit=0)

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()
        self._signals.close()
        self._close_broker()
