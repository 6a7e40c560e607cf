"""One message handed to a worker, and the three ways to settle it: ack, retry, dead-letter."""

from __future__ import annotations

import functools
import hashlib
import struct
import time
from typing import Any, Protocol

import pika.data
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import FRAME_END_SIZE, FRAME_HEADER_SIZE, BasicProperties

from rabbit_queues.queues import QueueSpec, dead_letter_queue, retry_queue

MAX_ATTEMPTS = 3  # a failing message is tried this many times, then dead-lettered
RETRY_DELAY_SECONDS = 2  # how long it waits in <queue>.retry between attempts
# A quorum queue counts how often a message came back unacknowledged (its worker died, lost
# its channel, or held it past consumer_timeout): in x-delivery-count before RabbitMQ 4.3, in
# x-acquired-count since (x-delivery-count then leaves out a consumer_timeout). Past this many,
# the worker parks it in the dead-letter queue instead of running it: a task that kills every
# worker must not go round forever.
DELIVERY_LIMIT = 5
RETURN_COUNTS = ("x-delivery-count", "x-acquired-count")
ATTEMPTS_HEADER = "x-attempts"  # which attempt this delivery is (1 if absent)
REASON_HEADER = "x-dead-letter-reason"  # why it failed: "ExceptionType: text"
ORIGINAL_QUEUE_HEADER = "x-original-queue"  # where it came from, to move it back after a fix
# Headers only the broker sets (dead-lettering out of <queue>.retry, counting returns): a copy
# of the message does not carry them.
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", *RETURN_COUNTS)
MAX_REASON = 1000  # characters of a failure's reason kept in a header


class ConnectionLost(Exception):
    """The channel a message came on went away before the worker could settle it."""


class Settler(Protocol):
    """What a delivery needs of the broker it came from (the Broker)."""

    frame_max: int  # the largest frame the connection may send, in bytes

    def ack(self, channel: BlockingChannel, delivery_tag: int) -> None: ...

    def reject(self, channel: BlockingChannel, delivery_tag: int) -> None: ...

    def publish(
        self, spec: QueueSpec, body: bytes | str, *, persistent: bool, **properties: Any
    ) -> None: ...


class Delivery:
    """A message handed to a worker; the worker settles it exactly once: ack, retry or
    dead-letter."""

    def __init__(
        self,
        broker: Settler,
        channel: BlockingChannel,
        delivery_tag: int,
        properties: BasicProperties,
        body: bytes,
        queue: QueueSpec,
        *,
        redelivered: bool = False,
        settled: bool = False,
    ) -> None:
        self.body = body
        self.properties = properties
        self.redelivered = redelivered  # RabbitMQ delivered it before (to anyone)
        self.queue = queue
        self.settled = settled  # with auto-ack, RabbitMQ forgot it when it sent it
        self.back_by: float | None = None  # retried: when (time.monotonic()) it is due back
        self._broker, self._channel, self._delivery_tag = broker, channel, delivery_tag

    # Read from the headers only when asked: most messages are acked without a look at them.

    @functools.cached_property
    def headers(self) -> dict[str, Any]:
        """The message's own headers: without those RabbitMQ adds (x-death...)."""
        headers = self.properties.headers or {}
        return {k: v for k, v in headers.items() if not k.startswith(BROKER_HEADERS)}

    @functools.cached_property
    def attempt(self) -> int:
        """Which attempt this delivery is: 1, then 2 and 3 when it comes back from retry()."""
        attempt = self.headers.get(ATTEMPTS_HEADER, 1)
        return attempt if isinstance(attempt, int) and 1 <= attempt <= MAX_ATTEMPTS else 1

    @property
    def returned(self) -> int:
        """How often it came back unacknowledged (quorum queues count it; 0 elsewhere)."""
        headers = self.properties.headers or {}
        counts = [headers.get(name) for name in RETURN_COUNTS]
        return max((count for count in counts if isinstance(count, int)), default=0)

    @functools.cached_property
    def fingerprint(self) -> str:
        """To know the message again when it comes back (hashed only if ever asked)."""
        return hashlib.sha256(self.body).hexdigest()

    def ack(self) -> None:
        """Tell RabbitMQ the work is done, so it may delete the message."""
        self._check_unsettled()
        self._broker.ack(self._channel, self._delivery_tag)
        self.settled = True

    @property
    def is_last_attempt(self) -> bool:
        """Would a failure now be final (retry() dead-letters it)?"""
        return self.attempt >= MAX_ATTEMPTS

    def retry(self, reason: str) -> str:
        """Try the message again in RETRY_DELAY_SECONDS, or dead-letter it after MAX_ATTEMPTS.

        Requeued at once it could fail again in a tight loop; slept on, it would be held
        unacknowledged. So a copy waits in ``<queue>.retry``, which dead-letters it back when
        its expiration runs out, and this one is acked. Returns what happened, to print.
        """
        if self.is_last_attempt:
            return f"{self.dead_letter(reason)} after {self.attempt} attempts"
        note = self._forward(
            retry_queue(self.queue),
            {ATTEMPTS_HEADER: self.attempt + 1, REASON_HEADER: reason},
            expiration=str(RETRY_DELAY_SECONDS * 1000),
        )
        self.back_by = time.monotonic() + RETRY_DELAY_SECONDS
        attempt = f"attempt {self.attempt + 1} of {MAX_ATTEMPTS}"  # the next one: 2 after 1
        return f"retry in {RETRY_DELAY_SECONDS} s, as {attempt}{note}"

    def dead_letter(self, reason: str) -> str:
        """Park the message in ``<queue>.dlq`` with ``reason`` in its headers, and ack it; for
        a message that can never succeed. Returns what happened, to print."""
        headers = {ATTEMPTS_HEADER: self.attempt, REASON_HEADER: reason}
        note = self._forward(
            dead_letter_queue(self.queue), {**headers, ORIGINAL_QUEUE_HEADER: self.queue.name}
        )
        return f"moved to {dead_letter_queue(self.queue).name}{note}"

    def drop(self) -> None:
        """Reject the message for good: for one RabbitMQ would not even take a copy of."""
        self._check_unsettled()
        self._broker.reject(self._channel, self._delivery_tag)
        self.settled = True

    def _forward(self, queue: QueueSpec, headers: dict[str, Any], **properties: Any) -> str:
        """Publish a copy (confirmed), then ack this one; return a note on the copy, if any.
        A crash between the two leaves both the copy and the original: at-least-once."""
        self._check_unsettled()
        headers = {**headers, REASON_HEADER: headers[REASON_HEADER][:MAX_REASON]}
        copy = dict(
            headers={**self.headers, **headers},
            message_id=self.properties.message_id,
            correlation_id=self.properties.correlation_id,
            content_type=self.properties.content_type,
            **properties,
        )
        note = ""
        if _header_frame_size(BasicProperties(**copy)) > self._broker.frame_max:
            # RabbitMQ would close the connection (frame_too_large) and send the message
            # back, again and again: copy it without the headers it came with.
            copy["headers"], note = headers, " (without its own headers: too large to copy)"
        self._broker.publish(queue, self.body, persistent=True, **copy)
        self._broker.ack(self._channel, self._delivery_tag)
        self.settled = True
        return note

    def _check_unsettled(self) -> None:
        if self.settled:
            raise RuntimeError("this message was already acknowledged or dead-lettered")


def _header_frame_size(properties: BasicProperties) -> int:
    """Bytes of the frame that carries a message's properties: one frame, never split."""
    class_weight_and_body_size = 12
    encoded = sum(map(len, properties.encode()))
    return FRAME_HEADER_SIZE + class_weight_and_body_size + encoded + FRAME_END_SIZE


def _read_and_write_float_headers() -> None:
    """pika (1.4.4 still; its issue #599) reads a float or double header as a truncated int
    (3.14159 becomes 3) and cannot write one at all. Other clients (Java, .NET) send them, and
    a worker's copy of a message must keep its headers as they came: fixed here, for pika."""
    decode_value, encode_value = pika.data.decode_value, pika.data.encode_value

    def decode(encoded: bytes, offset: int) -> tuple[Any, int]:
        kind = encoded[offset : offset + 1]
        if kind == b"f":
            return struct.unpack_from(">f", encoded, offset + 1)[0], offset + 5
        if kind == b"d":
            return struct.unpack_from(">d", encoded, offset + 1)[0], offset + 9
        return decode_value(encoded, offset)

    def encode(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return encode_value(pieces, value)

    pika.data.decode_value, pika.data.encode_value = decode, encode


_read_and_write_float_headers()
