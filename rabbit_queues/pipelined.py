"""`new_task.py -`: many messages fast, each still confirmed.

Waiting for each confirm before the next message costs a round trip per message. Instead up to
``window`` messages are in flight unconfirmed, and RabbitMQ's acks are counted as they come (one
may confirm many: ``multiple``); the count reported, also when something fails, is exactly what
RabbitMQ confirmed. On any loss it stops, saying so (docs/cluster.md: how to resume).

pika's BlockingChannel waits for each confirm, so the messages go on the asynchronous channel
underneath (``channel._impl``) of a second channel on the Broker's connection. A thread reads
them (they may be typed) and hands them over in batches: one ``add_callback_threadsafe`` for
all that arrive while the connection is busy.
"""

import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from typing import Any

import pika
import pika.exceptions
from pika.spec import Basic, BasicProperties

from rabbit_queues.broker import Broker, not_routed, refused
from rabbit_queues.cli import NotSent, counted, shortened, stop_requests
from rabbit_queues.connection import BLOCKED_TOO_LONG, BrokerError, what_was_lost
from rabbit_queues.queues import QueueSpec

WINDOW = 5000  # unconfirmed messages in flight at most
SIGNAL_CHECK_SECONDS = 0.1  # how soon Ctrl+C or SIGTERM is noticed
Message = tuple[bytes | str, dict[str, Any]]  # a body and its properties (message_id, ...)


def publish_pipelined(
    broker: Broker,
    queue: QueueSpec,
    messages: Iterable[Message],
    *,
    persistent: bool,
    noun: str = "messages",
    window: int = WINDOW,
    on_confirmed: Callable[[int], None] | None = None,
) -> int:
    """Publish ``messages`` with confirms, ``window`` at a time; return how many were confirmed
    (``on_confirmed`` is told the count as it grows). BrokerError, with the counts, if RabbitMQ
    refuses one (nack), cannot route one, goes away, or ``messages`` raises ValueError (a line
    that does not parse: those before it are still sent and confirmed)."""
    pipeline = _Pipeline(broker.connection, queue, iter(messages), persistent, window, on_confirmed)
    try:
        with stop_requests(pipeline.interrupt):
            pipeline.run()
    except KeyboardInterrupt:  # the second Ctrl+C or SIGTERM
        pipeline.failure = "interrupted"
    if pipeline.failure is None:
        return pipeline.confirmed
    confirmed, unknown = pipeline.confirmed, len(pipeline.unconfirmed)
    were = f"{counted(confirmed, noun)} {'was' if confirmed == 1 else 'were'}"
    maybe = f"; {unknown} more {'was' if unknown == 1 else 'were'} sent without a confirm: "
    maybe += "they may or may not be in the queue (its depth tells)"
    raise BrokerError(
        f"{pipeline.failure} ({were} sent and confirmed before that{maybe if unknown else ''})"
    )


class _Pipeline:
    def __init__(
        self,
        connection: pika.BlockingConnection,
        queue: QueueSpec,
        messages: Iterator[Message],
        persistent: bool,
        window: int,
        on_confirmed: Callable[[int], None] | None,
    ) -> None:
        self.connection, self.queue, self.messages = connection, queue, messages
        self.on_confirmed = on_confirmed
        self.mode = pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient
        self.failure: str | None = None  # once set, nothing more is sent
        self.unconfirmed: dict[int, None] = {}  # delivery tags sent, in order, not confirmed
        self._room = threading.Semaphore(window)  # free places in the window
        self._acked = self._returned = self._last_tag = 0  # RabbitMQ acks what it returns, too
        self._all_read = self._channel_closed = self._interrupted = False
        self._incoming: list[Message] = []  # handed over by the reader, not yet published
        self._wakeup_pending = False  # the connection has been asked to publish _incoming
        self._handover_lock = threading.Lock()
        self.channel = connection.channel()._impl  # the asynchronous channel
        self.channel.add_on_return_callback(self._on_returned)
        self.channel.add_on_close_callback(self._on_channel_closed)
        self.channel.confirm_delivery(self._on_confirm)

    @property
    def confirmed(self) -> int:
        return self._acked - self._returned

    def interrupt(self) -> None:
        self._interrupted = True

    def run(self) -> None:
        threading.Thread(target=self._read, name="reader", daemon=True).start()
        try:  # until what was sent is settled (to report it exactly) and nothing more will be
            while not self._channel_closed and (
                self.unconfirmed or (self.failure is None and not self._all_read)
            ):
                self.connection.process_data_events(time_limit=SIGNAL_CHECK_SECONDS)
                if self._interrupted:
                    self.failure = "interrupted"
                    return
        except pika.exceptions.ConnectionBlockedTimeout:
            self._fail(BLOCKED_TOO_LONG)
        except pika.exceptions.AMQPConnectionError as error:
            self._fail(what_was_lost(error))

    # -- in process_data_events, on the main thread -------------------------------------

    def _publish_incoming(self) -> None:
        with self._handover_lock:
            incoming, self._incoming, self._wakeup_pending = self._incoming, [], False
        for body, properties in incoming:
            if self.failure is not None:
                return
            self.channel.basic_publish(
                exchange="",
                routing_key=self.queue.name,
                body=body,
                properties=BasicProperties(delivery_mode=self.mode, **properties),
                mandatory=True,  # no such queue: the broker returns the message
            )
            self._last_tag += 1
            self.unconfirmed[self._last_tag] = None

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        """An ack or a nack of one message or (``multiple``) of all up to its tag, in any
        order: a refusal is nacked at once, acks of persistent messages wait for the disk."""
        method = frame.method
        if method.multiple:
            last = method.delivery_tag
            tags = list(itertools.takewhile(lambda tag: tag <= last, self.unconfirmed))
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self.unconfirmed else []
        for tag in tags:
            del self.unconfirmed[tag]
        self._room.release(len(tags))
        if isinstance(method, Basic.Nack):
            self._fail(refused(self.queue).what)
            return
        self._acked += len(tags)
        if self.on_confirmed is not None:
            self.on_confirmed(self.confirmed)

    def _on_returned(self, *_args: object) -> None:
        self._returned += 1
        self._fail(not_routed(self.queue).what)

    def _on_channel_closed(self, _channel: object, reason: BaseException) -> None:
        self._channel_closed = True
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            self._fail(what_was_lost(reason))

    def _on_read_everything(self, failure: str | None) -> None:
        self._all_read = True
        if failure is not None:
            self._fail(failure)

    def _fail(self, failure: str) -> None:
        self.failure = self.failure or failure
        self._room.release()  # a reader waiting for room wakes up, sees the failure, stops

    # -- on the reader thread -------------------------------------------------------------

    def _read(self) -> None:
        failure = None
        try:
            for message in self.messages:
                self._room.acquire()  # wait for a free place in the window
                if self.failure is not None:
                    return
                with self._handover_lock:
                    self._incoming.append(message)
                    wake, self._wakeup_pending = not self._wakeup_pending, True
                if wake:  # once for as many messages as arrive meanwhile
                    self._call_soon(self._publish_incoming)
        except ValueError as error:  # a line that does not parse
            failure = str(error)
        except Exception as error:  # reading failed: no thread may die and leave us waiting
            failure = f"reading the input failed ({type(error).__name__}: {error})"
        self._call_soon(lambda: self._on_read_everything(failure))

    def _call_soon(self, function: Callable[[], None]) -> None:
        with suppress(Exception):  # the connection has closed already, and reported why
            self.connection.add_callback_threadsafe(function)


def send_lines(
    broker: Broker,
    queue: QueueSpec,
    lines: Iterable[str],
    *,
    persistent: bool,
    noun: str,
    to_message: Callable[[str], Message] | None = None,
) -> None:
    """One message per non-blank line, pipelined, then a summary line; ``to_message`` (the
    line as it is, by default) may raise ValueError for a line it cannot read."""
    to_message = to_message or (lambda line: (line, {}))  # by default, the line as it is
    if getattr(lines, "isatty", lambda: False)():  # someone types them: say how
        print(
            f" [*] Type one {noun.removesuffix('s')} per line; each is sent when you press "
            "Enter. Ctrl+D to finish.",
            file=sys.stderr,
        )
    if hasattr(lines, "reconfigure"):  # bytes that are not UTF-8 reach _text(), to be named
        lines.reconfigure(errors="surrogateescape")
    started = shown_at = time.perf_counter()
    shown_at -= 1  # the first count is shown at once

    def progress(confirmed: int) -> None:  # on a terminal, redrawn in place 5 times a second
        nonlocal shown_at
        if (now := time.perf_counter()) - shown_at >= 0.2:
            shown_at, rate = now, confirmed / max(now - started, 1e-9)
            sys.stderr.write(f"\r [>] {confirmed:,} {noun} confirmed, {rate:,.0f}/s\033[K")
            sys.stderr.flush()

    not_sent = 0

    def messages() -> Iterator[Message]:
        nonlocal not_sent
        for number, line in enumerate(lines, 1):
            try:
                if line.strip():
                    yield to_message(_text(line.rstrip("\r\n")))
            except NotSent as error:
                not_sent += 1
                print(f" [!] Line {number}: {error}; not sent", file=sys.stderr)

    terminal = sys.stderr.isatty()  # into a pipe or a file: only the summary
    try:
        shown = progress if terminal else None
        count = publish_pipelined(
            broker, queue, messages(), persistent=persistent, noun=noun, on_confirmed=shown
        )
    finally:
        if terminal:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
    elapsed = time.perf_counter() - started
    skipped = f"; {counted(not_sent, 'lines')} not sent" if not_sent else ""
    sent = f" [x] Sent {counted(count, noun)} in {elapsed:.2f} s"
    print(f"{sent}, each confirmed by the broker{skipped}")


def _text(line: str) -> str:
    """``line``; ValueError if standard input gave bytes that are not UTF-8 text. (Read as
    text: a reader thread left blocked in a binary read aborts the interpreter at exit.)"""
    try:
        line.encode()
    except UnicodeEncodeError:
        raw = line.encode(errors="surrogateescape")
        raise ValueError(f"a line is not UTF-8 text: {shortened(repr(raw))}") from None
    return line
