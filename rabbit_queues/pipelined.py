"""Publishing many messages fast without giving up publisher confirms.

Waiting for each confirm before sending the next message costs a round trip per message.
Instead, keep up to ``window`` messages unconfirmed in flight and count the broker's acks as
they come (one ack may confirm many messages at once: ``multiple=True``). The count that comes
back, or that an error reports, is exactly what the broker has confirmed.

pika's BlockingConnection cannot wait for confirms in the background, so this uses its
asynchronous SelectConnection, and reads the messages on a thread of their own (they may come
from a terminal), handing them to the connection's loop in batches (``add_callback_threadsafe``
once for all that arrive while the loop is busy).

Given a cluster's nodes, it fails over: if its node goes away, it connects to the next one and
sends again the messages that were not confirmed (some may then arrive twice: at-least-once).
"""

from __future__ import annotations

import itertools
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic, BasicProperties

from rabbit_queues.cli import counted, shortened
from rabbit_queues.connection import (
    BLOCKED_TOO_LONG,
    REFUSALS,
    BrokerError,
    explain_connection_error,
    node_urls,
    redact_url,
    report_blocking,
    url_parameters,
)
from rabbit_queues.queues import QueueSpec

WINDOW = 5000  # unconfirmed messages in flight at most
# After a failover, a quorum queue may refuse (nack) messages while it elects a new leader.
# For this long after one, refused messages are sent again, every RESEND_DELAY seconds.
RECOVERY_SECONDS = 30
RESEND_DELAY = 0.5
SIGNAL_CHECK_SECONDS = 0.1  # how soon the loop notices Ctrl+C or SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Message = tuple[bytes | str, dict[str, Any]]  # a body and its properties (message_id, ...)


def publish_pipelined(
    url: str,
    queue: QueueSpec,
    messages: Iterable[Message],
    *,
    persistent: bool,
    noun: str = "messages",
    window: int = WINDOW,
    on_confirmed: Callable[[int], None] | None = None,
) -> int:
    """Publish ``messages`` to ``queue`` with confirms, ``window`` at a time; return the count.
    ``url`` may list a cluster's nodes: the first that answers is used, then the next ones.

    ``on_confirmed``, if given, is called with the count so far each time confirms arrive.

    Raises BrokerError, saying how many were confirmed, if the broker refuses one (nack),
    cannot route one (no such queue), goes away, or if ``messages`` raises ValueError (a line
    that does not parse; the messages before it are still sent and confirmed).
    """
    pipeline = _Pipeline(
        url, queue, iter(messages), persistent=persistent, window=window, on_confirmed=on_confirmed
    )
    try:
        pipeline.run()
    except KeyboardInterrupt:  # a second Ctrl+C or SIGTERM, or not on the main thread
        pipeline.failure = "interrupted"
    if pipeline.failure is not None:
        confirmed, unknown = pipeline.confirmed, len(pipeline.unconfirmed)
        # Sent but not confirmed: the broker may have queued them or not (at-least-once).
        maybe = f"; {unknown} more {'was' if unknown == 1 else 'were'} sent without a confirm: "
        maybe += "they may or may not be in the queue (its depth tells)"
        raise BrokerError(
            f"{pipeline.failure} ({counted(confirmed, noun)} {'was' if confirmed == 1 else 'were'}"
            f" sent and confirmed before that{maybe if unknown else ''})"
        )
    return pipeline.confirmed


class _Pipeline:
    def __init__(
        self,
        url: str,
        queue: QueueSpec,
        messages: Iterable[Message],
        *,
        persistent: bool,
        window: int,
        on_confirmed: Callable[[int], None] | None,
    ) -> None:
        self.nodes = node_urls(url)
        self.queue = queue
        self.messages = messages
        self.on_confirmed = on_confirmed
        self.mode = pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient
        self.failure: str | None = None  # once set, nothing more is sent
        self.ioloop = IOLoop()  # one loop for every connection, so failover keeps the reader
        self.connection: pika.SelectConnection | None = None
        self.channel: pika.channel.Channel | None = None  # None while (re)connecting
        self._node = -1  # index in self.nodes of the node we use
        self._nodes_left = len(self.nodes)  # tried since the last good connection
        self._acked = 0
        self._returned = 0  # unroutable: RabbitMQ returns such a message, then acks it anyway
        self._room = threading.Semaphore(window)  # free places in the window
        self.unconfirmed: dict[int, Message] = {}  # by delivery tag: sent, not acked yet
        self._backlog: list[Message] = []  # read while no channel was open: to send
        self._next_tag = 0
        self._resent: int | None = None  # failing over: how many are sent again
        self._recovering_until = 0.0  # monotonic time: refusals until then are sent again
        self._refused: list[Message] = []  # refused while recovering: to send again
        self._said_refused = False
        self._reading = False
        self._all_read = False
        self._incoming: list[Message] = []  # handed over by the reader, not yet published
        self._wakeup_pending = False  # the loop has been asked to publish _incoming
        self._handover_lock = threading.Lock()
        self._interrupted = False  # by Ctrl+C or SIGTERM: the loop stops at its next look

    @property
    def confirmed(self) -> int:
        """Messages the broker has taken: acked, and not returned as unroutable."""
        return self._acked - self._returned

    def run(self) -> None:
        self._connect_to_next_node()
        with self._stopped_between_callbacks_by_signals():
            self.ioloop.start()  # returns when the connection has closed for good

    @contextmanager
    def _stopped_between_callbacks_by_signals(self) -> Iterator[None]:
        """Ctrl+C and SIGTERM stop the loop between two of its callbacks, never inside one:
        a KeyboardInterrupt raised in the middle of _on_confirm would lose the messages it
        was counting, and the counts reported would no longer be exact. A second one raises
        KeyboardInterrupt at once."""
        if threading.current_thread() is not threading.main_thread():  # no signals there
            yield
            return

        def request_stop(_signum: int, _frame: object) -> None:
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True

        previous = {signum: signal.signal(signum, request_stop) for signum in STOP_SIGNALS}
        self._stop_if_interrupted()
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- on the connection's loop ---------------------------------------------------------

    def _stop_if_interrupted(self) -> None:
        if self._interrupted:
            self.failure = "interrupted"
            self.ioloop.stop()
        else:
            self.ioloop.call_later(SIGNAL_CHECK_SECONDS, self._stop_if_interrupted)

    def _connect_to_next_node(self) -> None:
        self._node = (self._node + 1) % len(self.nodes)
        self._nodes_left -= 1
        self.parameters = url_parameters(self.nodes[self._node])
        self.connection = pika.SelectConnection(
            self.parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=self.ioloop,
        )

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        report_blocking(connection)  # a resource alarm makes us wait: say so
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, _connection: object, error: BaseException) -> None:
        if self._nodes_left > 0 and not isinstance(error, REFUSALS):  # as connect_to_a_node
            self._connect_to_next_node()
            return
        self.failure = self.failure or str(explain_connection_error(self.parameters, error))
        self.ioloop.stop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        channel.add_on_return_callback(self._on_returned)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._ready(channel))

    def _ready(self, channel: pika.channel.Channel) -> None:
        self.channel, self._next_tag = channel, 0  # a new channel numbers from 1 again
        self._nodes_left = len(self.nodes)
        if self._resent is not None:
            node = redact_url(self.nodes[self._node])
            print(f" [*] Failed over to {node}; sending the {self._resent} unconfirmed again")
            self._resent = None
            self._recovering_until = time.monotonic() + RECOVERY_SECONDS
            self._said_refused = False
        backlog, self._backlog = self._backlog, []
        for body, properties in backlog:
            self._publish(body, properties)
        if not self._reading:
            self._reading = True
            threading.Thread(target=self._read, name="reader", daemon=True).start()
        self._close_if_finished()

    def _publish_incoming(self) -> None:
        with self._handover_lock:
            incoming, self._incoming = self._incoming, []
            self._wakeup_pending = False
        for body, properties in incoming:
            self._publish(body, properties)

    def _publish(self, body: bytes | str, properties: dict[str, Any]) -> None:
        if self.failure is not None:
            return
        if self.channel is None:  # failing over: sent once the next node's channel is open
            self._backlog.append((body, properties))
            return
        self.channel.basic_publish(
            exchange="",
            routing_key=self.queue.name,
            body=body,
            properties=BasicProperties(delivery_mode=self.mode, **properties),
            mandatory=True,  # no such queue: the broker returns the message
        )
        self._next_tag += 1
        self.unconfirmed[self._next_tag] = (body, properties)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        """An ack or a nack for one message, or (``multiple``) for all up to its tag.

        They need not come in order: a refused message is nacked at once, while the acks of
        persistent messages before it wait for the disk.
        """
        method = frame.method
        if method.multiple:  # the tags, sent in order, are the dict's keys in order
            settled = list(
                itertools.takewhile(lambda tag: tag <= method.delivery_tag, self.unconfirmed)
            )
        else:
            settled = [method.delivery_tag] if method.delivery_tag in self.unconfirmed else []
        messages = [self.unconfirmed.pop(tag) for tag in settled]
        if isinstance(method, Basic.Nack) and time.monotonic() < self._recovering_until:
            self._send_again_soon(messages)  # they keep their places in the window
        elif isinstance(method, Basic.Nack):
            self._room.release(len(settled))
            self._fail(f"RabbitMQ refused a message for {self.queue.name!r}")
        else:
            self._room.release(len(settled))
            self._acked += len(settled)
            if self.on_confirmed is not None:
                self.on_confirmed(self.confirmed)
        self._close_if_finished()

    def _send_again_soon(self, messages: list[Message]) -> None:
        if not self._said_refused:
            print(
                " [!] RabbitMQ refused messages while the cluster recovers (a quorum queue "
                "electing its leader?); sending them again"
            )
            self._said_refused = True
        if not self._refused:
            self.ioloop.call_later(RESEND_DELAY, self._send_refused_again)
        self._refused.extend(messages)

    def _send_refused_again(self) -> None:
        """Send the refused messages again, on a new channel: the old one may still be
        routing to the queue's old leader."""
        self._backlog[:0] = self._refused + self._take_back_unconfirmed()
        self._refused = []
        old, self.channel = self.channel, None
        if old is not None and self.connection is not None and self.connection.is_open:
            with suppress(Exception):
                old.close()
            self.connection.channel(on_open_callback=self._on_channel_open)

    def _take_back_unconfirmed(self) -> list[Message]:
        """The messages sent on the current channel and not confirmed, in the order sent;
        they are no longer waited for there (their places in the window stay taken)."""
        messages = [self.unconfirmed[tag] for tag in sorted(self.unconfirmed)]
        self.unconfirmed.clear()
        return messages

    def _on_returned(self, *_args: object) -> None:
        self._returned += 1
        self._fail(f"queue {self.queue.name!r} does not exist")

    def _on_channel_closed(self, _channel: object, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            self._fail(f"RabbitMQ closed the channel ({reason.reply_text})")
            assert self.connection is not None
            self.connection.close()

    def _on_read_everything(self, failure: str | None) -> None:
        self._all_read = True
        if failure is not None and self.failure is None:
            self.failure = failure
        self._close_if_finished()

    def _fail(self, failure: str) -> None:
        """Send nothing more; close once what was sent is settled, to report it exactly."""
        if self.failure is None:
            self.failure = failure
        self._room.release()  # a reader waiting for room wakes up, sees the failure, stops
        self._close_if_finished()

    def _close_if_finished(self) -> None:
        nothing_left = not self._backlog and not self._refused
        finished = (self._all_read and nothing_left) or self.failure is not None
        connection = self.connection
        if finished and not self.unconfirmed and connection is not None and connection.is_open:
            connection.close()

    def _on_closed(self, _connection: object, reason: BaseException) -> None:
        self.channel = None
        if isinstance(reason, pika.exceptions.ConnectionClosedByClient):
            self.ioloop.stop()
            return
        lost = f"lost the connection to RabbitMQ ({type(reason).__name__})"
        if isinstance(reason, pika.exceptions.ConnectionBlockedTimeout):
            lost = BLOCKED_TOO_LONG  # an alarm blocks every node of a cluster: no failover
        elif self.failure is None and len(self.nodes) > 1:
            # What was sent and not confirmed may or may not have reached the queue: send it
            # again to the next node, first thing (at-least-once).
            resend = self._take_back_unconfirmed()
            self._backlog[:0] = resend
            self._resent = len(resend)
            print(f" [!] L{lost[1:]}; failing over to another node")
            self._connect_to_next_node()
            return
        self.failure = self.failure or lost
        self.ioloop.stop()

    # -- on the reader thread ---------------------------------------------------------

    def _read(self) -> None:
        failure = None
        try:
            for body, properties in self.messages:
                self._room.acquire()  # wait for a free place in the window
                if self.failure is not None:
                    return
                self._hand_over((body, properties))
        except ValueError as error:  # a line that does not parse
            failure = str(error)
        except Exception as error:  # reading failed: no thread may die and leave us waiting
            failure = f"reading the input failed ({type(error).__name__}: {error})"
        self._call_soon(self._on_read_everything, failure)

    def _hand_over(self, message: Message) -> None:
        """Queue ``message`` for the loop, and wake the loop only if it is not woken already:
        one wake-up (a write to its pipe) for as many messages as arrive meanwhile."""
        with self._handover_lock:
            self._incoming.append(message)
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        self._call_soon(self._publish_incoming)

    def _call_soon(self, function: Callable[..., None], *args: Any) -> None:
        with suppress(Exception):  # the loop has ended already, and reported why
            self.ioloop.add_callback_threadsafe(lambda: function(*args))


def send_lines(
    url: str,
    queue: QueueSpec,
    lines: Iterable[str],
    to_message: Callable[[str], Message],
    *,
    persistent: bool,
    noun: str,
) -> None:
    """``new_task.py -``: send one message per non-blank line, then print one summary line.

    Pipelined: up to five thousand messages are in flight, unconfirmed, at a time; the count
    printed (or reported in the error, if something fails mid-way) is exactly what the broker
    has confirmed. ``to_message`` may raise ValueError for a line it cannot read.
    """
    if getattr(lines, "isatty", lambda: False)():  # someone types them: say how
        singular = noun.removesuffix("s")
        print(
            f" [*] Type one {singular} per line; each is sent when you press Enter. "
            "Ctrl+D to finish.",
            file=sys.stderr,
        )
    if hasattr(lines, "reconfigure"):  # bytes that are not UTF-8 reach _text(), to be named
        lines.reconfigure(errors="surrogateescape")
    started = time.perf_counter()
    messages = (to_message(_text(line.rstrip("\r\n"))) for line in lines if line.strip())
    # On a terminal, a progress line; into a pipe or a file, only the summary.
    progress = _ProgressLine(noun, started) if sys.stderr.isatty() else None
    try:
        count = publish_pipelined(
            url, queue, messages, persistent=persistent, noun=noun, on_confirmed=progress
        )
    finally:
        if progress is not None:
            progress.clear()
    elapsed = time.perf_counter() - started
    print(f" [x] Sent {counted(count, noun)} in {elapsed:.2f} s, each confirmed by the broker")


def _text(line: str) -> str:
    """``line``; ValueError if standard input gave bytes that are not UTF-8 text."""
    try:
        line.encode()
    except UnicodeEncodeError:
        raw = line.encode(errors="surrogateescape")
        raise ValueError(f"a line is not UTF-8 text: {shortened(repr(raw))}") from None
    return line


class _ProgressLine:
    """'12,000 tasks confirmed, 18,210/s', redrawn in place on stderr a few times a second."""

    EVERY_SECONDS = 0.2

    def __init__(self, noun: str, started: float) -> None:
        self.noun = noun
        self.started = started
        self.shown_at = 0.0  # the first count is shown at once

    def __call__(self, confirmed: int) -> None:
        now = time.perf_counter()
        if now - self.shown_at < self.EVERY_SECONDS:
            return
        self.shown_at = now
        rate = confirmed / max(now - self.started, 1e-9)
        sys.stderr.write(f"\r [>] {confirmed:,} {self.noun} confirmed, {rate:,.0f}/s\033[K")
        sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


def plain_text(line: str) -> Message:
    """A line of standard input sent as it is, as the message's body."""
    return line, {}
