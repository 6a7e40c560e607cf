"""One message handed to a worker, and the ways to settle it: ack, retry, dead-letter."""

import functools
import time
from typing import Any

from pika.spec import FRAME_END_SIZE, FRAME_HEADER_SIZE, BasicProperties

from rabbit_queues.connection import UNREADABLE
from rabbit_queues.queues import QueueSpec, dead_letter_queue, retry_queue

MAX_ATTEMPTS = 3  # a failing message is tried this many times, then dead-lettered
RETRY_DELAY_SECONDS = 2  # how long it waits in <queue>.retry between attempts
# A quorum queue counts the times a message came back unacknowledged (its worker died, lost
# its channel, or ran past consumer_timeout): in x-delivery-count before RabbitMQ 4.3, in
# x-acquired-count since. This many, and the worker parks it instead of running it: a task
# that kills every worker must not go round forever (nor reach RabbitMQ 4's own limit, 20).
DELIVERY_LIMIT = 5
KILLS_WORKERS = (
    f"came back unacknowledged {DELIVERY_LIMIT} times: did it kill each worker that took it, "
    "or run past RabbitMQ's consumer_timeout?"
)
RETURN_COUNTS = ("x-delivery-count", "x-acquired-count")
ATTEMPTS_HEADER = "x-attempts"  # which attempt this delivery is (1 if absent)
REASON_HEADER = "x-dead-letter-reason"  # why it failed: "ExceptionType: text"
ORIGINAL_QUEUE_HEADER = "x-original-queue"  # where it came from, to move it back after a fix
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", *RETURN_COUNTS)  # not copied
MAX_REASON = 1000  # characters of a failure's reason kept in a header
SETTLED_ALREADY = "this message was already acknowledged or dead-lettered"


class Delivery:
    """A message handed to a worker, settled exactly once: ack, retry or dead-letter. Its
    broker is the Broker (broker.py) it came from."""

    def __init__(
        self,
        broker: Any,
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
        self.broker, self._delivery_tag = broker, delivery_tag

    @functools.cached_property  # read only if asked: most messages are acked without a look
    def headers(self) -> dict[str, Any]:
        """The message's own headers, without those RabbitMQ adds (x-death...)."""
        headers = self.properties.headers or {}
        return {k: v for k, v in headers.items() if not k.startswith(BROKER_HEADERS)}

    @functools.cached_property
    def attempt(self) -> int:
        """1, then 2 and 3 when it comes back from retry()."""
        attempt = self.headers.get(ATTEMPTS_HEADER, 1)
        return attempt if isinstance(attempt, int) and 1 <= attempt <= MAX_ATTEMPTS else 1

    @property
    def returned(self) -> int:
        """How often it came back unacknowledged to this queue (quorum queues count it; 0
        elsewhere). A first delivery came back never, whatever counts its headers carry (set by
        whoever published it, or by another broker a shovel took it from)."""
        headers = self.properties.headers
        if not headers or not self.redelivered:  # most messages: answered at once
            return 0
        counts = [headers.get(name) for name in RETURN_COUNTS]
        return max((count for count in counts if isinstance(count, int)), default=0)

    @property
    def why_not_run(self) -> str | None:
        """Why the handler must not have it (the worker parks it): pika could not read its
        headers, or it came back DELIVERY_LIMIT times. None for most messages, at once."""
        headers = self.properties.headers
        if not headers:
            return None
        if UNREADABLE in headers:
            return f"its headers could not be read ({headers[UNREADABLE]})"
        return KILLS_WORKERS if self.returned >= DELIVERY_LIMIT else None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= MAX_ATTEMPTS

    def ack(self) -> None:
        """Tell RabbitMQ the work is done, so it may delete the message."""
        if self.settled:
            raise RuntimeError(SETTLED_ALREADY)
        self.broker.ack(self._delivery_tag)
        self.settled = True

    def retry(self, reason: str) -> str:
        """Try it again in RETRY_DELAY_SECONDS, or dead-letter it after MAX_ATTEMPTS; say what
        happened. Requeued at once it could fail in a tight loop; slept on, it would be held: a
        copy waits in ``<queue>.retry``, which sends it back when it expires, and this is acked."""
        if self.is_last_attempt:
            return f"{self.dead_letter(reason)} after {self.attempt} attempts"
        headers = {ATTEMPTS_HEADER: self.attempt + 1, REASON_HEADER: reason}
        delay = str(RETRY_DELAY_SECONDS * 1000)
        note = self._forward(retry_queue(self.queue), headers, expiration=delay)
        self.back_by = time.monotonic() + RETRY_DELAY_SECONDS
        attempt = f"attempt {self.attempt + 1} of {MAX_ATTEMPTS}"  # the next one: 2 after 1
        return f"retry in {RETRY_DELAY_SECONDS} s, as {attempt}{note}"

    def dead_letter(self, reason: str) -> str:
        """Park it in ``<queue>.dlq`` with ``reason`` in its headers, and ack it; say so."""
        headers = {ATTEMPTS_HEADER: self.attempt, REASON_HEADER: reason}
        headers[ORIGINAL_QUEUE_HEADER] = self.queue.name
        note = self._forward(dead_letter_queue(self.queue), headers)
        return f"moved to {dead_letter_queue(self.queue).name}{note}"

    def drop(self) -> None:
        """Reject it for good: for a message RabbitMQ would not even take a copy of."""
        if self.settled:
            raise RuntimeError(SETTLED_ALREADY)
        self.broker.reject(self._delivery_tag)
        self.settled = True

    def _forward(self, queue: QueueSpec, headers: dict[str, Any], **properties: Any) -> str:
        """Publish a copy (confirmed), then ack this one: a crash between the two leaves both
        (at-least-once). Returns a note on the copy, if any."""
        if self.settled:
            raise RuntimeError(SETTLED_ALREADY)
        headers[REASON_HEADER] = headers[REASON_HEADER][:MAX_REASON]
        copy = dict(
            headers={**self.headers, **headers},
            message_id=self.properties.message_id,
            correlation_id=self.properties.correlation_id,
            content_type=self.properties.content_type,
            **properties,
        )
        note = ""
        # A properties frame is never split: one larger than the connection allows would make
        # RabbitMQ close it and send the message back, again and again. Then: our headers only.
        size = FRAME_HEADER_SIZE + 12 + sum(map(len, BasicProperties(**copy).encode()))
        if size + FRAME_END_SIZE > self.broker.frame_max:
            copy["headers"], note = headers, " (without its own headers: too large to copy)"
        self.broker.publish(queue, self.body, persistent=True, **copy)
        self.ack()
        return note
