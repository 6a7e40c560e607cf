#!/usr/bin/env python
"""List the dead letters of a queue, with why each failed; or move them back once fixed.

python work_queue/dead_letters.py                      lists task_queue.dlq
python work_queue/dead_letters.py --queue tasks        lists tasks.dlq (lesson 3)
python work_queue/dead_letters.py --requeue            moves them back to task_queue
"""

from rabbit_queues import (
    TASK_QUEUE,
    TASKS,
    Broker,
    add_queue_type_option,
    broker_url,
    dead_letter_queue,
    run_script,
    script_parser,
)
from rabbit_queues.delivery import (
    ATTEMPTS_HEADER,
    BROKER_DEATH_HEADERS,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
)
from rabbit_queues.queues import DELIVERY_LIMIT

QUEUES = {spec.name: spec for spec in (TASK_QUEUE, TASKS)}
FAILURE_HEADERS = (REASON_HEADER, ATTEMPTS_HEADER, ORIGINAL_QUEUE_HEADER)


def why(headers: dict[str, object]) -> str:
    """The reason a worker wrote, or the one a quorum queue gives for its own dead letters."""
    if REASON_HEADER in headers:
        return f"{headers[REASON_HEADER]} ({headers.get(ATTEMPTS_HEADER, 1)} attempts)"
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and deaths[0].get("reason") == "delivery_limit":
        return (
            f"delivered more than {DELIVERY_LIMIT} times and never acknowledged (the queue's "
            "x-delivery-limit): did it kill each worker that took it?"
        )
    return "?"


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--queue", choices=QUEUES, default=TASK_QUEUE.name, help="whose DLQ")
    parser.add_argument(
        "--requeue", action="store_true", help="move every dead letter back to its queue"
    )
    add_queue_type_option(parser)
    args = parser.parse_args()
    queue = QUEUES[args.queue].of_type(args.queue_type)
    dead_letters = dead_letter_queue(queue)

    with Broker.connect(broker_url(args.url)) as broker:
        broker.declare(queue, dead_letters)
        count = 0
        while True:
            # basic_get takes one message, if any, without subscribing. Unacknowledged, it
            # stays ours until we ack it or close the channel, which puts it back.
            method, properties, body = broker.channel.basic_get(dead_letters.name)
            if method is None:
                break
            count += 1
            headers = dict(properties.headers or {})
            text = body.decode(errors="replace")
            print(f" [x] {count}: {text[:60]!r} failed: {why(headers)}")
            if args.requeue:
                # A fresh start: attempt 1 again, and no trace of the broker's dead-lettering.
                stale = (*FAILURE_HEADERS, *BROKER_DEATH_HEADERS, "x-delivery-count")
                headers = {k: v for k, v in headers.items() if not k.startswith(stale)}
                broker.publish(
                    queue,
                    body,
                    persistent=True,
                    headers=headers,
                    message_id=properties.message_id,
                    correlation_id=properties.correlation_id,
                    content_type=properties.content_type,
                )
                broker.channel.basic_ack(method.delivery_tag)  # only once it is back
        verb = "moved back to " + queue.name if args.requeue else "in " + dead_letters.name
        print(f" [*] {count} dead letters {verb}")


if __name__ == "__main__":
    run_script(main)
