#!/usr/bin/env python
"""List the dead letters of a queue, with why each failed; or move them back once fixed.

python work_queue/dead_letters.py                      lists task_queue.dlq
python work_queue/dead_letters.py --queue tasks        lists tasks.dlq (lesson 3; or results)
python work_queue/dead_letters.py --requeue            moves them back to task_queue
"""

from typing import Any

from rabbit_queues.broker import Broker
from rabbit_queues.cli import (
    counted,
    run_script,
    script_parser,
    shortened,
)
from rabbit_queues.connection import UNREADABLE, BrokerError
from rabbit_queues.delivery import (
    ATTEMPTS_HEADER,
    BROKER_HEADERS,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
)
from rabbit_queues.queues import RESULTS, TASK_QUEUE, TASKS, QueueCounts, dead_letter_queue

QUEUES = {spec.name: spec for spec in (TASK_QUEUE, TASKS, RESULTS)}
FAILURE_HEADERS = (REASON_HEADER, ATTEMPTS_HEADER, ORIGINAL_QUEUE_HEADER, UNREADABLE)


def why(headers: dict[str, Any]) -> str:
    """Why it was dead-lettered: the reason the worker wrote, or RabbitMQ's own (x-death)."""
    if ATTEMPTS_HEADER in headers:  # the worker's: it writes both
        attempts = headers[ATTEMPTS_HEADER]
        reason = headers.get(REASON_HEADER, "?")
        return f"{reason} ({attempts} attempt{'' if attempts == 1 else 's'})"
    if REASON_HEADER in headers:
        return str(headers[REASON_HEADER])
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = deaths[0]  # the latest (RabbitMQ's delivery limit, a policy's dead-lettering)
        return f"RabbitMQ dead-lettered it from {death.get('queue')!r}: {death.get('reason')}"
    return "?"


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--queue", choices=QUEUES, default=TASK_QUEUE.name, help="whose DLQ")
    parser.add_argument(
        "--requeue", action="store_true", help="move every dead letter back to its queue"
    )
    args = parser.parse_args()
    queue = QUEUES[args.queue].of_type(args.queue_type)
    dead_letters = dead_letter_queue(queue)

    with Broker(args.url) as broker:
        broker.declare(queue, dead_letters)
        # No more than the queue holds now: with workers running, a letter moved back may
        # fail again and come back behind the others before this loop is done.
        waiting = QueueCounts(broker.connection).of(dead_letters.name)
        if waiting is not None and waiting.message_count is None:
            raise BrokerError(
                f"RabbitMQ could not count {dead_letters.name} now (its leader did not answer): "
                "nothing was read; try again in a moment"
            )
        count = 0
        while waiting is not None and count < waiting.message_count:
            # basic_get takes one message, if any, without subscribing. Unacknowledged, it
            # stays ours until we ack it; given back, RabbitMQ 4 counts a return, and drops a
            # letter after 20 of them: so each one read is settled, never given back.
            method, properties, body = broker.channel.basic_get(dead_letters.name)
            if method is None:
                break
            count += 1
            headers = dict(properties.headers or {})
            reason = why(headers)
            print(f" [x] {count}: {shortened(body.decode(errors='replace'))!r} failed: {reason}")
            if args.requeue:  # a fresh start: attempt 1 again, no trace of the failure
                stale = (*FAILURE_HEADERS, *BROKER_HEADERS)
                headers = {k: v for k, v in headers.items() if not k.startswith(stale)}
            else:  # listed: a copy to the back of the queue, RabbitMQ's reason kept in ours
                headers = {k: v for k, v in headers.items() if not k.startswith(BROKER_HEADERS)}
                if ATTEMPTS_HEADER not in headers:
                    headers.setdefault(REASON_HEADER, reason)
            broker.publish(
                queue if args.requeue else dead_letters,
                body,
                persistent=True,
                headers=headers,
                message_id=properties.message_id,
                correlation_id=properties.correlation_id,
                content_type=properties.content_type,
            )
            broker.channel.basic_ack(method.delivery_tag)  # only once the copy is confirmed
        verb = "moved back to " + queue.name if args.requeue else "in " + dead_letters.name
        print(f" [*] {counted(count, 'dead letters')} {verb}")


if __name__ == "__main__":
    run_script(main)
