"""Every queue the lessons use, declared in one place.

A queue's properties are fixed when it is first declared; declaring it again with different
ones fails with PRECONDITION_FAILED. Producers and workers both declare their queues (either
may start first), so both take the declaration from here and can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from rabbit_queues.connection import BrokerError

QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[QueueType, ...] = ("classic", "quorum")
# A quorum queue counts how often it has handed out a message that came back unacknowledged
# (its worker died, or closed its channel). Past this limit it dead-letters the message: the
# last line of defence against a task that kills every worker that takes it.
DELIVERY_LIMIT = 5
# Dead-lettering by a quorum queue itself (expired, or over the delivery limit) is at-most-once
# unless asked for at-least-once, which RabbitMQ allows only with overflow 'reject-publish'.
QUORUM_DEAD_LETTERING = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}


@dataclass(frozen=True)
class QueueSpec:
    """A queue shared by producers and workers."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def is_quorum(self) -> bool:
        return self.arguments.get("x-queue-type") == "quorum"

    def of_type(self, queue_type: QueueType) -> QueueSpec:
        """This queue as a classic queue (one node holds it) or a quorum queue (replicated
        over the cluster's nodes, with a delivery limit); its .retry and .dlq follow."""
        if queue_type == "classic":
            return self
        return QueueSpec(
            self.name,
            {
                **self.arguments,
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": "",  # over the limit: to <name>.dlq
                "x-dead-letter-routing-key": dead_letter_queue(self).name,
                **QUORUM_DEAD_LETTERING,
            },
        )

    def declare(self, channel: BlockingChannel) -> None:
        """Create the queue if it does not exist yet; explain a clash in one line.

        Durable: the queue survives a broker restart, and so do its *persistent* messages.
        RabbitMQ 4.3 also refuses non-durable queues that are not exclusive to one connection,
        so even hello_world's queue is durable (its messages are not).
        """
        try:
            channel.queue_declare(queue=self.name, durable=True, arguments=self.arguments)
        except ChannelClosedByBroker as error:
            if error.reply_code != 406:
                raise
            raise BrokerError(
                f"queue {self.name!r} already exists with other properties ({error.reply_text}); "
                "its type and arguments cannot change (another --queue-type?): delete it and run "
                f"again: rabbitmqctl delete_queue {self.name}"
            ) from None


def dead_letter_queue(queue: QueueSpec) -> QueueSpec:
    """Where a worker parks the messages of ``queue`` it could not process."""
    return QueueSpec(f"{queue.name}.dlq", {"x-queue-type": "quorum"} if queue.is_quorum else {})


def retry_queue(queue: QueueSpec) -> QueueSpec:
    """Where a failed message of ``queue`` waits before its next attempt.

    Nobody consumes it. Each message is published to it with an expiration; when that runs
    out, RabbitMQ dead-letters the message through the default exchange ("") back to
    ``queue``. So the wait costs no worker anything: nothing is held unacknowledged.
    """
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue.name}
    if queue.is_quorum:
        arguments |= {"x-queue-type": "quorum", **QUORUM_DEAD_LETTERING}
    return QueueSpec(f"{queue.name}.retry", arguments)


HELLO = QueueSpec("hello")  # lesson 1: durable queue, but transient messages and auto-ack
TASK_QUEUE = QueueSpec("task_queue")  # lesson 2: text tasks, one second of work per '.'
TASKS = QueueSpec("tasks")  # lesson 3: JSON tasks {"id", "type", "args"}
RESULTS = QueueSpec("results")  # lesson 3: JSON results, correlation_id = the task's id

# Every queue of the lessons, in the order queues.py shows them (each worker with manual acks
# declares its queue's .retry and .dlq too).
ALL_QUEUES = [
    HELLO,
    *(
        q
        for base in (TASK_QUEUE, TASKS, RESULTS)
        for q in (base, retry_queue(base), dead_letter_queue(base))
    ),
]
