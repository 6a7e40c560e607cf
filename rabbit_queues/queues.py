"""Every queue the lessons use, declared in one place.

A queue's properties are fixed when it is first declared; declaring it again with different
ones fails with PRECONDITION_FAILED. Producers and workers both declare their queues (either
may start first), so both take the declaration from here and can never disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker
from pika.spec import Queue

QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[QueueType, ...] = ("classic", "quorum")
# Dead-lettering by a quorum queue itself (here: the retry queue's expired messages) is
# at-most-once unless asked for at-least-once, which RabbitMQ allows only with overflow
# 'reject-publish'.
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
        over the cluster's nodes); its .retry and .dlq follow.

        A quorum queue is declared with ``x-queue-type`` alone, exactly as RabbitMQ's own
        tutorials declare ``hello`` and ``task_queue``: a queue's arguments can never change,
        so any other argument would make the two programs refuse each other's queue.
        """
        if queue_type == "classic":
            return self
        return QueueSpec(self.name, {**self.arguments, "x-queue-type": "quorum"})


def explain_clash(spec: QueueSpec, reply_text: str, connection: BlockingConnection) -> str:
    """Why ``spec`` cannot be declared as it is (RabbitMQ's PRECONDITION_FAILED reply, "...
    inequivalent arg ..."), and what to do: use the queue as it is, or delete it, and those of
    its .retry and .dlq that clash too, saying how many messages that would destroy."""
    clash = re.search(
        r"inequivalent arg '([^']+)'.*: received (.*) but current is (.*)", reply_text
    )
    if clash is None:  # worded otherwise: RabbitMQ's own words, and no advice
        return f"queue {spec.name!r} already exists with other properties ({reply_text})"
    if clash[1] == "x-queue-type":
        existing = _quoted(clash[3]) or "classic"
        problem = f"already exists as a {existing} queue, and a queue's type cannot change"
        advice = f"run with --queue-type {existing} to use it as it is, or "
    else:
        problem = (
            f"already exists with {clash[1]} {_quoted(clash[3]) or 'none'} where this program "
            f"declares {_quoted(clash[2]) or 'none'} (another program, or an older version of "
            "this one, declared it), and a queue's arguments cannot change"
        )
        advice = ""
    depths = _clashing(connection, spec)
    held = sum(depths.values())
    them = "it" if len(depths) == 1 else ", ".join(depths)
    delete = " && ".join(f"rabbitmqctl delete_queue {name}" for name in depths)
    return (
        f"queue {spec.name!r} {problem}: {advice}delete {them} and run again, destroying the "
        f"{held} message{'' if held == 1 else 's'} {them if len(depths) == 1 else 'they'} "
        f"hold{'s' if len(depths) == 1 else ''}: {delete}"
    )


def _quoted(text: str) -> str | None:
    """'quorum' from "the value 'quorum' of type 'longstr'" or "'quorum'"; None from "none"."""
    found = re.search(r"'([^']*)'", text)
    return found[1] if found else None


def _clashing(connection: BlockingConnection, spec: QueueSpec) -> dict[str, int]:
    """How many messages ``spec`` holds, and each of its family (the queue, its .retry and
    .dlq: a new type means new ones of all three) that exists and clashes too: none is named
    for deletion unless RabbitMQ refused it as this program declares it."""
    base = QueueSpec(spec.name.removesuffix(".retry").removesuffix(".dlq"))
    base = base.of_type("quorum" if spec.is_quorum else "classic")
    depths = {}
    for member in (base, retry_queue(base), dead_letter_queue(base)):
        channel = connection.channel()  # a 404 or a 406 closes the channel it happens on
        declared = passive_declare(channel, member.name)
        # RabbitMQ has refused spec itself; a sibling must be refused as well.
        if declared is not None and (member.name == spec.name or _refuses(channel, member)):
            depths[member.name] = declared.message_count
        if channel.is_open:
            channel.close()
    return depths


def _refuses(channel: BlockingChannel, spec: QueueSpec) -> bool:
    """Does RabbitMQ refuse ``spec``, declared as this program declares it, for a clash of
    arguments with the queue that exists?"""
    try:
        channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
    except ChannelClosedByBroker as error:
        return "inequivalent arg" in error.reply_text
    return False


def passive_declare(channel: BlockingChannel, name: str) -> Queue.DeclareOk | None:
    """Queue ``name``'s messages ready and consumers, exact and at once (a passive declare
    creates nothing); None if there is no such queue, and then the broker closed ``channel``."""
    try:
        return channel.queue_declare(name, passive=True).method
    except ChannelClosedByBroker as error:
        if error.reply_code != 404:
            raise
        return None


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
