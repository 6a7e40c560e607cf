"""Every queue the lessons use, declared in one place, and how many messages a queue holds.

A queue's arguments are fixed when it is first declared (declared otherwise, RabbitMQ refuses
it): producers and workers both declare theirs from here, so they never disagree.
"""

import time
from typing import Any, Literal, NamedTuple

from pika.adapters.blocking_connection import BlockingConnection
from pika.exceptions import ChannelClosedByBroker

QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[QueueType, ...] = ("classic", "quorum")
# A quorum queue's own dead-lettering (the retry queue's expired messages) is at-most-once
# unless asked for at-least-once, which RabbitMQ allows only with overflow 'reject-publish'.
QUORUM_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


class QueueSpec(NamedTuple):  # (not a dataclass: one less import for every script's start)
    name: str
    arguments: dict[str, Any] = {}  # noqa: RUF012 (never changed: of_type makes another)

    @property
    def is_quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"

    @property
    def queue_type(self) -> QueueType:
        return "quorum" if self.is_quorum else "classic"

    def of_type(self, queue_type: QueueType) -> "QueueSpec":
        """This queue as a classic queue (one node holds it) or a quorum queue (replicated),
        declared with ``x-queue-type`` alone, as RabbitMQ's own tutorials declare it."""
        if queue_type == "classic":
            return self
        return QueueSpec(self.name, {**self.arguments, "x-queue-type": "quorum"})


def dead_letter_queue(queue: QueueSpec) -> QueueSpec:
    """Where a worker parks the messages of ``queue`` it could not process."""
    return QueueSpec(f"{queue.name}.dlq", {"x-queue-type": "quorum"} if queue.is_quorum else {})


def retry_queue(queue: QueueSpec) -> QueueSpec:
    """Where a failed message of ``queue`` waits before its next attempt. Nobody consumes it:
    when a message's expiration runs out, RabbitMQ dead-letters it back to ``queue``, so the
    wait holds nothing unacknowledged."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue.name}
    if queue.is_quorum:
        arguments |= {"x-queue-type": "quorum", **QUORUM_DEAD_LETTERING}
    return QueueSpec(f"{queue.name}.retry", arguments)


HELLO = QueueSpec("hello")  # lesson 1: durable queue, but transient messages and auto-ack
TASK_QUEUE = QueueSpec("task_queue")  # lesson 2: text tasks, one second of work per '.'
TASKS = QueueSpec("tasks")  # lesson 3: JSON tasks {"id", "type", "args"}
RESULTS = QueueSpec("results")  # lesson 3: JSON results, correlation_id = the task's id
ALL_QUEUES = [  # as queues.py shows them
    HELLO,
    *(
        q
        for base in (TASK_QUEUE, TASKS, RESULTS)
        for q in (base, retry_queue(base), dead_letter_queue(base))
    ),
]


def explain_clash(spec: QueueSpec, reply_text: str) -> str:
    """``spec`` exists, declared otherwise (RabbitMQ's reply says how): the two ways out."""
    return (
        f"queue {spec.name!r} already exists with other arguments (RabbitMQ refused: "
        f"{reply_text}): declare it as it is (another --queue-type?), or delete it and the "
        f"messages it holds: rabbitmqctl delete_queue {spec.name}"
    )


# RabbitMQ asks a quorum queue's leader this long for its figures; with no answer (its node
# stalled, the queue without a majority) it says 0 messages and 0 consumers.
LEADER_WAIT_SECONDS = 0.25


class Figures(NamedTuple):
    """A queue's ready messages and consumers; None for both when RabbitMQ could not tell."""

    message_count: int | None
    consumer_count: int | None


class QueueCounts:
    """A queue's ready messages and consumers, exact and at once, by passive declare (which
    creates nothing), on a channel of its own: RabbitMQ closes the channel of a 404."""

    def __init__(self, connection: BlockingConnection) -> None:
        self.connection = connection
        self.channel = connection.channel()

    def of(self, name: str) -> Figures | None:
        """``message_count`` and ``consumer_count`` of ``name``; None if there is no such queue.
        A 0 and 0 that came LEADER_WAIT_SECONDS later than a round trip (basic_qos, which no
        queue answers) is RabbitMQ's answer when it could not ask: unknown, never 0."""
        started = time.monotonic()
        try:
            declared = self.channel.queue_declare(name, passive=True).method
        except ChannelClosedByBroker as error:
            if error.reply_code != 404:
                raise
            self.channel = self.connection.channel()
            return None
        if declared.message_count or declared.consumer_count:  # most answers: at once
            return Figures(declared.message_count, declared.consumer_count)
        took, started = time.monotonic() - started, time.monotonic()
        self.channel.basic_qos(prefetch_count=0)
        if took - (time.monotonic() - started) >= LEADER_WAIT_SECONDS:
            return Figures(None, None)
        return Figures(0, 0)

    def depth(self, name: str) -> int | None:
        """Ready messages; None if there is no such queue, or RabbitMQ could not count them."""
        counts = self.of(name)
        return None if counts is None else counts.message_count
