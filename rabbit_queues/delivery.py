"""One message handed to a worker, and the three ways to settle it: ack, retry, dead-letter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pika.spec import BasicProperties

from rabbit_queues.connection import ConnectionLost
from rabbit_queues.queues import QueueSpec, dead_letter_queue, retry_queue

if TYPE_CHECKING:
    from rabbit_queues.broker import Broker

MAX_ATTEMPTS = 3  # a failing message is tried this many times, then dead-lettered
RETRY_DELAY_SECONDS = 2  # how long it waits in <queue>.retry between attempts
# A quorum queue counts how often it handed a message out and got it back unacknowledged (its
# worker died, or lost its channel) in the header x-delivery-count. Past this many, the worker
# dead-letters it instead of running it again: the defence against a task that kills every
# worker that takes it. (Classic queues keep no such count.)
DELIVERY_LIMIT = 5

ATTEMPTS_HEADER = "x-attempts"  # which attempt this delivery is (1 if absent)
REASON_HEADER = "x-dead-letter-reason"  # why it failed: "ExceptionType: text"
ORIGINAL_QUEUE_HEADER = "x-original-queue"  # where it came from, to move it back after a fix
DELIVERY_COUNT_HEADER = "x-delivery-count"
# Headers RabbitMQ adds when it dead-letters a message (out of <queue>.retry) or hands it out
# again; only the broker may set them, so they are not copied.
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", DELIVERY_COUNT_HEADER)


class Delivery:
    """A message from ``queue``; the worker settles it exactly once, from any thread."""

    def __init__(
        self,
        broker: Broker,
        queue: QueueSpec,
        delivery_tag: int,
        properties: BasicProperties,
        body: bytes,
        *,
        settled: bool,
    ) -> None:
        self.body = body
        self.properties = properties
        self.headers: dict[str, Any] = {
            name: value
            for name, value in (properties.headers or {}).items()
            if not name.startswith(BROKER_HEADERS)
        }
        self.attempt: int = self._attempt_from(self.headers)
        count = (properties.headers or {}).get(DELIVERY_COUNT_HEADER, 0)
        self.returned: int = count if isinstance(count, int) else 0  # times it came back
        self.queue = queue
        self.settled = settled  # with auto-ack, RabbitMQ forgot the message on sending it
        self._broker = broker
        self._delivery_tag = delivery_tag
        self._generation = broker.generation  # which connection it came on

    def ack(self) -> None:
        """Tell RabbitMQ the work is done, so it may delete the message."""
        self._settle()
        self._broker.acknowledge(self._delivery_tag, self._generation)

    @property
    def kills_workers(self) -> bool:
        """Has this message come back unacknowledged DELIVERY_LIMIT times already?"""
        return self.returned >= DELIVERY_LIMIT

    @property
    def is_last_attempt(self) -> bool:
        """Would a failure now be final (retry() dead-letters it)?"""
        return self.attempt >= MAX_ATTEMPTS

    def retry(self, reason: str) -> str:
        """Try the message again in RETRY_DELAY_SECONDS, or dead-letter it after MAX_ATTEMPTS.

        Requeueing at once would fail again in a tight loop; sleeping on it would hold it
        unacknowledged. Instead a copy waits in ``<queue>.retry`` and the original is acked.
        Returns what happened, for the worker to print.
        """
        if self.is_last_attempt:
            return f"{self.dead_letter(reason)} after {self.attempt} attempts"
        self._settle()
        self._forward(
            retry_queue(self.queue),
            {ATTEMPTS_HEADER: self.attempt + 1, REASON_HEADER: reason},
            expiration=str(RETRY_DELAY_SECONDS * 1000),
        )
        return f"retry in {RETRY_DELAY_SECONDS} s (attempt {self.attempt + 1} of {MAX_ATTEMPTS})"

    def dead_letter(self, reason: str) -> str:
        """Park the message in ``<queue>.dlq``, with ``reason`` in its headers; ack it.

        For a message that can never succeed (not decodable, unknown task...). Returns what
        happened, for the worker to print.
        """
        self._settle()
        self._forward(
            dead_letter_queue(self.queue),
            {
                ATTEMPTS_HEADER: self.attempt,
                REASON_HEADER: reason,
                ORIGINAL_QUEUE_HEADER: self.queue.name,
            },
        )
        return f"moved to {dead_letter_queue(self.queue).name}"

    def _forward(self, queue: QueueSpec, headers: dict[str, Any], **properties: Any) -> None:
        """Publish a copy (confirmed) to ``queue``, then ack this delivery.

        A crash between the two leaves both the copy and the original: at-least-once.
        """
        if not self._broker.is_current(self._generation):
            raise ConnectionLost("the connection the message came on is gone")
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
        self._broker.acknowledge(self._delivery_tag, self._generation)

    def _settle(self) -> None:
        if self.settled:
            raise RuntimeError("this message was already acknowledged or dead-lettered")
        self.settled = True

    @staticmethod
    def _attempt_from(headers: dict[str, Any]) -> int:
        attempt = headers.get(ATTEMPTS_HEADER, 1)
        return attempt if isinstance(attempt, int) and attempt >= 1 else 1
