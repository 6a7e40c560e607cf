#!/usr/bin/env python
"""Lesson 2, worker: do the tasks of 'task_queue' one at a time, acknowledging each when done.

Each '.' is a second of work (at most 60). A task containing 'error' fails: it is tried again
twice, a few seconds apart, then moved with the reason to 'task_queue.dlq'. Run two or three.
"""

import time

from rabbit_queues.cli import run_script, script_parser, shortened
from rabbit_queues.delivery import Delivery
from rabbit_queues.queues import TASK_QUEUE
from rabbit_queues.staying_up import Worker

MAX_SECONDS = 60  # fake work has a bound too: 100,000 dots would be 27 hours


def callback(delivery: Delivery) -> None:  # pika calls it with each task
    task = delivery.body.decode()
    print(f" [x] Received '{shortened(task)}'")
    dots = task.count(".")  # fake work: one second per dot
    if dots > MAX_SECONDS:  # no use retrying it: the worker dead-letters it at once
        raise OverflowError(f"{dots} dots: more than {MAX_SECONDS} s of work")
    if dots:  # (even time.sleep(0) gives up the CPU, for ~0.1 ms here)
        time.sleep(dots)
    if "error" in task.lower():  # a task that fails
        error = f"task {shortened(task)!r} asked to fail"
        # Requeued at once, it could fail again in a tight loop; dropped, it would be lost.
        # retry(): a copy waits in task_queue.retry, then comes back; the 3rd failure goes to
        # task_queue.dlq with the reason. Either way this delivery is acked.
        outcome = delivery.retry(reason=f"ValueError: {error}")
        print(f" [!] Failed: {error}; {outcome}")
        return
    # Manual ack, and only now: if this worker dies before this line, RabbitMQ gives the
    # task to another worker instead of losing it. (An ack that fails says why instead.)
    delivery.ack()  # channel.basic_ack(delivery_tag=method.delivery_tag)
    print(" [x] Done")


def main() -> None:
    args = script_parser(__doc__, worker=True).parse_args()  # --url, --burst, --queue-type...
    task_queue = TASK_QUEUE.of_type(args.queue_type)
    with Worker(args.url) as worker:  # pika.BlockingConnection(parameters).channel()
        worker.declare(task_queue)  # channel.queue_declare("task_queue", durable=True)
        # prefetch_count=1 (fair dispatch): a new task only once the last one is acked, so a
        # worker busy with a long task sits on no backlog that idle workers could be doing.
        # channel.basic_qos(prefetch_count=1), then channel.basic_consume(..., callback);
        # with manual acks it also declares task_queue.retry and task_queue.dlq.
        worker.consume(task_queue, callback, prefetch_count=1)
        print(" [*] Waiting for messages. To exit press CTRL+C")
        worker.run(until_empty=args.burst)  # channel.start_consuming()


if __name__ == "__main__":
    run_script(main)
