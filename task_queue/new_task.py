#!/usr/bin/env python
"""Lesson 3, producer: send a JSON task {"id", "type", "args"} to the 'tasks' queue.

python task_queue/new_task.py add 2 3                    prints the new task's id
python task_queue/new_task.py wordcount "to be or not"
python task_queue/new_task.py add 2 3 --then mul 4       a chain: mul(add(2, 3), 4)
python task_queue/new_task.py -                          one task per line: add 2 3
"""

import sys

from task_command_line import (
    add_task_arguments,
    build_task,
    describe,
    encoded,
    parse_task,
    read_line,
)
from task_messages import CONTENT_TYPE

from rabbit_queues.broker import Broker
from rabbit_queues.cli import run_script, script_parser, send_standard_input
from rabbit_queues.queues import TASKS


def main() -> None:
    parser = script_parser(__doc__)  # --url, --queue-type
    add_task_arguments(parser)  # the task's type, its arguments, --then (task_command_line.py)
    args = parse_task(parser, sys.argv[1:])
    if args.type == "-" and (args.args or args.then):
        parser.error("- reads the tasks from standard input and takes no arguments")
    try:  # before connecting: a task no worker could run is refused, and nothing is sent
        task = None if args.type == "-" else build_task(args)
        body = None if task is None else encoded(task)
    except ValueError as error:
        parser.exit(2, f"error: {error}; nothing was sent\n")
    tasks = TASKS.of_type(args.queue_type)
    with Broker(args.url) as broker:  # pika.BlockingConnection, channel.confirm_delivery()
        broker.declare(tasks)  # channel.queue_declare("tasks", durable=True)
        if task is None:  # `-`: one task per line, many in flight at once, each confirmed
            send_standard_input(broker, tasks, persistent=True, noun="tasks", to_message=read_line)
            return
        # Persistent and confirmed, as in lesson 2. The id travels in the body and as the
        # message_id property; the worker sends the result back under that id.
        # channel.basic_publish(exchange="", routing_key="tasks", body=body,
        #     properties=pika.BasicProperties(delivery_mode=2, message_id=task.id))
        broker.publish(tasks, body, persistent=True, message_id=task.id, content_type=CONTENT_TYPE)
        print(f" [x] Sent {describe(task)}")


if __name__ == "__main__":
    run_script(main)
