"""One message handed to a worker, and the three ways to settle it: ack, retry, dead-letter."""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Protocol

from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties

from rabbit_queues.queues import QueueSpec, dead_letter_queue, retry_queue

MAX_ATTEMPTS = 3  # a failing message is tried this many times, then dead-lettered
RETRY_DELAY_SECONDS = 2  # how long it waits in <queue>.retry between attempts
# A quorum queue counts in x-delivery-count how often a message came back unacknowledged (its
# worker died, or lost its channel). Past this many, the worker parks it in the dead-letter
# queue instead of running it: a task that kills every worker must not go round forever.
DELIVERY_LIMIT = 5
ATTEMPTS_HEADER = "x-attempts"  # which attempt this delivery is (1 if absent)
REASON_HEADER = "x-dead-letter-reason"  # why it failed: "ExceptionType: text"
ORIGINAL_QUEUE_HEADER = "x-original-queue"  # where it came from, to move it back after a fix
# Headers only the broker sets (dead-lettering out of <queue>.retry, counting returns): a copy
# of the message does not carry them.
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


class ConnectionLost(Exception):
    """The channel a message came on went away before the worker could settle it."""


class Settler(Protocol):
    """What a delivery needs of the broker it came from (the Broker)."""

    def ack(self, channel: BlockingChannel, delivery_tag: int) -> None: ...

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
        headers = properties.headers or {}
        self.headers = {k: v for k, v in headers.items() if not k.startswith(BROKER_HEADERS)}
        attempt = self.headers.get(ATTEMPTS_HEADER, 1)
        self.attempt = attempt if isinstance(attempt, int) and 1 <= attempt <= MAX_ATTEMPTS else 1
        returned = headers.get("x-delivery-count", 0)  # set by quorum queues only
        self.returned = returned if isinstance(returned, int) else 0
        self.redelivered = redelivered  # RabbitMQ delivered it before (to anyone)
        self.queue = queue
        self.settled = settled  # with auto-ack, RabbitMQ forgot it when it sent it
        self._broker, self._channel, self._delivery_tag = broker, channel, delivery_tag

    @functools.cached_property
    def fingerprint(self) -> str:
        """To know the message again when it comes back (hashed only if ever asked)."""
        return hashlib.sha256(self.body).hexdigest()

    def ack(self) -> None:
        """Tell RabbitMQ the work is done, so it may delete the message."""
        self._settle()
        self._broker.ack(self._channel, self._delivery_tag)

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
        self._forward(
            retry_queue(self.queue),
            {ATTEMPTS_HEADER: self.attempt + 1, REASON_HEADER: reason},
            expiration=str(RETRY_DELAY_SECONDS * 1000),
        )
        return f"retry in {RETRY_DELAY_SECONDS} s (attempt {self.attempt + 1} of {MAX_ATTEMPTS})"

    def dead_letter(self, reason: str) -> str:
        """Park the message in ``<queue>.dlq`` with ``reason`` in its headers, and ack it; for
        a message that can never succeed. Returns what happened, to print."""
        headers = {ATTEMPTS_HEADER: self.attempt, REASON_HEADER: reason}
        self._forward(
            dead_letter_queue(self.queue), {**headers, ORIGINAL_QUEUE_HEADER: self.queue.name}
        )
        return f"moved to {dead_letter_queue(self.queue).name}"

    def _forward(self, queue: QueueSpec, headers: dict[str, Any], **properties: Any) -> None:
        """Publish a copy (confirmed), then ack this one. A crash between the two leaves both
        the copy and the original: at-least-once."""
        self._settle()
        self._broker.publish(
            queue,
            self.body,
            persistent=True,
            headers={**self.headers, **headers},
            message_id=self.properties.message_id,
            correlation_id=self.properties.correlation_id,
            content_type=self.properties.content_type,
            **properties,
        )
        self._broker.ack(self._channel, self._delivery_tag)

    def _settle(self) -> None:
        if self.settled:
            raise RuntimeError("this message was already acknowledged or dead-lettered")
        self.settled = True
