#!/usr/bin/env python
"""Lesson 2, what confirms are for: send one task per line of standard input to 'task_queue',
persistent, but without publisher confirms, as RabbitMQ's first tutorial sends. Kill the broker
while it sends: it can only say how many tasks it handed to the network, not how many RabbitMQ
kept. `new_task.py -` sends the same tasks with confirms. Not for real work.

seq 1000000 | python work_queue/send_without_confirms.py
"""

import sys

import pika
import pika.exceptions

from rabbit_queues.broker import Broker
from rabbit_queues.cli import run_script, script_parser
from rabbit_queues.connection import BrokerError, what_was_lost
from rabbit_queues.queues import TASK_QUEUE


def main() -> None:
    parser = script_parser(__doc__)
    args = parser.parse_args()
    task_queue = TASK_QUEUE.of_type(args.queue_type)

    with Broker(args.url) as broker:
        broker.declare(task_queue)
        channel = broker.connection.channel()  # a second channel: no confirm_delivery() on it
        persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        sent = 0
        try:
            for line in sys.stdin.buffer:  # bytes, sent as they are: nothing to decode
                if line.strip():
                    # Returns once the task is written to the socket: nobody says whether
                    # RabbitMQ received it, let alone wrote it to disk.
                    channel.basic_publish("", task_queue.name, line.rstrip(b"\r\n"), persistent)
                    sent += 1
        except pika.exceptions.AMQPConnectionError as error:
            raise BrokerError(
                f"{what_was_lost(error)} after sending {sent} "
                "tasks without confirms: how many of them RabbitMQ kept, only the queue can tell"
            ) from None
        except KeyboardInterrupt:
            raise SystemExit(f" [*] Interrupted after sending {sent} tasks") from None
    print(f" [x] Sent {sent} tasks, none confirmed: RabbitMQ has them unless it went down")


if __name__ == "__main__":
    run_script(main)
