#!/usr/bin/env python
"""List the dead letters of a queue, with why each failed; or move them back once fixed.

python work_queue/dead_letters.py                      lists task_queue.dlq
python work_queue/dead_letters.py --queue tasks        lists tasks.dlq (lesson 3; or results)
python work_queue/dead_letters.py --requeue            moves them back to task_queue
"""

import signal

# kill (SIGTERM) stops it as Ctrl+C does, already while it starts: never without a word
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from rabbit_queues.broker import Broker
    from rabbit_queues.cli import (
        add_queue_type_option,
        counted,
        run_script,
        script_parser,
        shortened,
    )
    from rabbit_queues.connection import broker_url
    from rabbit_queues.delivery import (
        ATTEMPTS_HEADER,
        BROKER_HEADERS,
        ORIGINAL_QUEUE_HEADER,
        REASON_HEADER,
    )
    from rabbit_queues.queues import RESULTS, TASK_QUEUE, TASKS, QueueCounts, dead_letter_queue
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None

QUEUES = {spec.name: spec for spec in (TASK_QUEUE, TASKS, RESULTS)}
FAILURE_HEADERS = (REASON_HEADER, ATTEMPTS_HEADER, ORIGINAL_QUEUE_HEADER)


def why(headers: dict[str, object]) -> str:
    """The reason the worker wrote when it dead-lettered the message."""
    if REASON_HEADER in headers:
        attempts = headers.get(ATTEMPTS_HEADER, 1)
        return f"{headers[REASON_HEADER]} ({attempts} attempt{'' if attempts == 1 else 's'})"
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

    with Broker(broker_url(args.url)) as broker:
        broker.declare(queue, dead_letters)
        # No more than the queue holds now: with workers running, a letter moved back may
        # fail again and come back behind the others before this loop is done.
        waiting = QueueCounts(broker.connection).of(dead_letters.name)
        count = 0
        while waiting is not None and count < waiting.message_count:
            # basic_get takes one message, if any, without subscribing. Unacknowledged, it
            # stays ours until we ack it or close the channel, which puts it back.
            method, properties, body = broker.channel.basic_get(dead_letters.name)
            if method is None:
                break
            count += 1
            headers = dict(properties.headers or {})
            shown = shortened(body.decode(errors="replace"))
            print(f" [x] {count}: {shown!r} failed: {why(headers)}")
            if args.requeue:
                # A fresh start: attempt 1 again, and no trace of the broker's own headers.
                stale = (*FAILURE_HEADERS, *BROKER_HEADERS)
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
        print(f" [*] {counted(count, 'dead letters')} {verb}")


if __name__ == "__main__":
    run_script(main)
