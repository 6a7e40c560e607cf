"""Publishing many messages fast without giving up publisher confirms.

Waiting for each confirm before sending the next message costs a round trip per message.
Instead, keep up to ``window`` messages unconfirmed in flight and count the broker's acks as
they come (one ack may confirm many messages at once: ``multiple=True``). The count that comes
back, or that an error reports, is exactly what the broker has confirmed.

pika's BlockingConnection cannot wait for confirms in the background, so this uses its
asynchronous SelectConnection, and reads the messages on a thread of their own (they may come
from a terminal), handing each to the connection's loop with ``add_callback_threadsafe``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import pika
import pika.exceptions
from pika.spec import Basic, BasicProperties

from rabbit_queues.connection import BrokerError, explain_connection_error, url_parameters
from rabbit_queues.queues import QueueSpec

WINDOW = 1000  # unconfirmed messages in flight at most
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
    except KeyboardInterrupt:
        pipeline.failure = "interrupted"
    if pipeline.failure is not None:
        raise BrokerError(
            f"{pipeline.failure} ({pipeline.confirmed} {noun} were sent and confirmed before that)"
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
        self.parameters = url_parameters(url)
        self.on_confirmed = on_confirmed
        self.queue = queue
        self.messages = messages
        self.mode = pika.DeliveryMode.Persistent if persistent else pika.DeliveryMode.Transient
        self.failure: str | None = None  # once set, nothing more is sent
        self._acked = 0
        self._returned = 0  # unroutable: RabbitMQ returns such a message, then acks it anyway
        self._room = threading.Semaphore(window)  # free places in the window
        self._unconfirmed: set[int] = set()  # delivery tags sent, not yet acked or nacked
        self._next_tag = 0
        self._all_read = False

    @property
    def confirmed(self) -> int:
        """Messages the broker has taken: acked, and not returned as unroutable."""
        return self._acked - self._returned

    def run(self) -> None:
        self.connection = pika.SelectConnection(
            self.parameters,
            on_open_callback=lambda connection: connection.channel(
                on_open_callback=self._on_channel_open
            ),
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )
        self.connection.ioloop.start()  # returns when the connection has closed

    # -- on the connection's loop ---------------------------------------------------------

    def _on_open_error(self, _connection: object, error: BaseException) -> None:
        self.failure = str(explain_connection_error(self.parameters, error))
        self.connection.ioloop.stop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self.channel = channel
        channel.add_on_return_callback(self._on_returned)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._start_reading())

    def _start_reading(self) -> None:
        threading.Thread(target=self._read, name="reader", daemon=True).start()

    def _publish(self, body: bytes | str, properties: dict[str, Any]) -> None:
        if self.failure is not None:
            return
        self.channel.basic_publish(
            exchange="",
            routing_key=self.queue.name,
            body=body,
            properties=BasicProperties(delivery_mode=self.mode, **properties),
            mandatory=True,  # no such queue: the broker returns the message
        )
        self._next_tag += 1
        self._unconfirmed.add(self._next_tag)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        """An ack or a nack for one message, or (``multiple``) for all up to its tag.

        They need not come in order: a refused message is nacked at once, while the acks of
        persistent messages before it wait for the disk.
        """
        method = frame.method
        if method.multiple:
            settled = {tag for tag in self._unconfirmed if tag <= method.delivery_tag}
        else:
            settled = {method.delivery_tag} & self._unconfirmed
        self._unconfirmed -= settled
        if settled:
            self._room.release(len(settled))
        if isinstance(method, Basic.Nack):
            self._fail(f"RabbitMQ refused a message for {self.queue.name!r}")
        else:
            self._acked += len(settled)
            if self.on_confirmed is not None:
                self.on_confirmed(self.confirmed)
        self._close_if_finished()

    def _on_returned(self, *_args: object) -> None:
        self._returned += 1
        self._fail(f"queue {self.queue.name!r} does not exist")

    def _on_channel_closed(self, _channel: object, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            self._fail(f"RabbitMQ closed the channel ({reason.reply_text})")
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
        finished = self._all_read or self.failure is not None
        if finished and not self._unconfirmed and self.connection.is_open:
            self.connection.close()

    def _on_closed(self, _connection: object, reason: BaseException) -> None:
        if not isinstance(reason, pika.exceptions.ConnectionClosedByClient):
            self.failure = f"lost the connection to RabbitMQ ({type(reason).__name__})"
        self.connection.ioloop.stop()

    # -- on the reader thread ---------------------------------------------------------

    def _read(self) -> None:
        failure = None
        try:
            for body, properties in self.messages:
                self._room.acquire()  # wait for a free place in the window
                if self.failure is not None:
                    return
                self._call_soon(self._publish, body, properties)
        except ValueError as error:
            failure = str(error)
        self._call_soon(self._on_read_everything, failure)

    def _call_soon(self, function: Callable[..., None], *args: Any) -> None:
        with suppress(Exception):  # the loop has ended already, and reported why
            self.connection.ioloop.add_callback_threadsafe(lambda: function(*args))
