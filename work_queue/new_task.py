#!/usr/bin/env python
"""Lesson 2, producer: send a task to the durable 'task_queue'; each '.' is a second of work.

python work_queue/new_task.py "First task."    sends 'First task.' (one second of work)
python work_queue/new_task.py                  sends 'Hello World!'
python work_queue/new_task.py -                sends one task per line of standard input
"""

from rabbit_queues.broker import Broker
from rabbit_queues.cli import run_script, script_parser, send_standard_input
from rabbit_queues.queues import TASK_QUEUE


def main() -> None:
    parser = script_parser(__doc__)  # --url, --queue-type
    parser.add_argument("words", nargs="*", help="the task (default: Hello World!), or -")
    args = parser.parse_args()
    task_queue = TASK_QUEUE.of_type(args.queue_type)
    # Publisher confirms: each publish returns only once RabbitMQ has taken the task.
    with Broker(args.url) as broker:  # pika.BlockingConnection, channel.confirm_delivery()
        # durable=True: the queue survives a broker restart.
        broker.declare(task_queue)  # channel.queue_declare("task_queue", durable=True)
        if args.words != ["-"]:
            task = " ".join(args.words) or "Hello World!"
            # Persistent: written to disk, so the task survives a broker restart too. After
            # " [x] Sent" (the broker confirmed it), the task is RabbitMQ's responsibility.
            #   channel.basic_publish(exchange="", routing_key="task_queue", body=task,
            #       properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
            broker.publish(task_queue, task, persistent=True)
            print(f" [x] Sent '{task}'")
        else:  # `-`: one task per line, many in flight at once, each still confirmed
            send_standard_input(broker, task_queue, persistent=True, noun="tasks")


if __name__ == "__main__":
    run_script(main)
