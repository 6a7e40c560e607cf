#!/usr/bin/env python
"""Lesson 2, worker: do the tasks of 'task_queue', one at a time, acknowledging each when done.

A task sleeps one second per '.' (at most 60); a task containing 'error' fails: it is tried
again twice, a few seconds apart, then moved with the reason to the dead-letter queue
'task_queue.dlq'. A task of more than 60 dots goes there at once.
Run two or three of these side by side.
"""

import signal
import time

# kill (SIGTERM) stops it as Ctrl+C does, already while it starts: never without a word
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from rabbit_queues.cli import (
        add_queue_type_option,
        add_worker_options,
        run_script,
        script_parser,
        shortened,
    )
    from rabbit_queues.connection import broker_url
    from rabbit_queues.delivery import Delivery
    from rabbit_queues.queues import TASK_QUEUE
    from rabbit_queues.staying_up import Worker
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None

MAX_SECONDS = 60  # fake work has a bound too: 100,000 dots would be 27 hours


def do_work(task: str) -> None:
    dots = task.count(".")  # fake work: one second per dot
    if dots > MAX_SECONDS:  # no use retrying it: the wrapper dead-letters it at once
        raise OverflowError(f"{dots} dots: more than {MAX_SECONDS} s of work")
    if dots:  # (even time.sleep(0) gives up the CPU, for ~0.1 ms here)
        time.sleep(dots)
    if "error" in task.lower():
        raise ValueError(f"task {shortened(task)!r} asked to fail")


def on_message(delivery: Delivery) -> None:
    task = delivery.body.decode()
    print(f" [x] Received '{shortened(task)}'")
    try:
        do_work(task)
    except ValueError as error:
        # Requeued at once, it could fail again in a tight loop; dropped, it would be lost.
        # retry() parks it in task_queue.retry for a few seconds, then it comes back; after
        # the last attempt it goes to task_queue.dlq with the reason. Either way it is acked.
        outcome = delivery.retry(reason=f"ValueError: {error}")
        print(f" [!] Failed: {error}; {outcome}")
        return
    # Manual ack, and only now: if this worker dies before this line, RabbitMQ gives the
    # task to another worker instead of losing it. "Done" once it is acked (an ack that
    # fails prints why instead: the task will run again).
    delivery.ack()
    print(" [x] Done")


def main() -> None:
    parser = script_parser(__doc__)
    add_worker_options(parser)  # --burst, --verbose
    add_queue_type_option(parser)
    args = parser.parse_args()
    task_queue = TASK_QUEUE.of_type(args.queue_type)

    with Worker(broker_url(args.url)) as worker:
        worker.declare(task_queue)
        # prefetch_count=1 (fair dispatch): send this worker a new task only once it has
        # acked the last one. Without it, tasks are dealt round-robin as they arrive, and a
        # worker busy with a long task sits on a backlog that idle workers could be doing.
        worker.consume(task_queue, on_message, prefetch_count=1)
        print(" [*] Waiting for messages. To exit press CTRL+C")
        worker.run(until_empty=args.burst)


if __name__ == "__main__":
    run_script(main)
