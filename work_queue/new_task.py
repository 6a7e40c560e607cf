#!/usr/bin/env python
"""Lesson 2, producer: send a task to the durable 'task_queue'; each '.' is a second of work.

python work_queue/new_task.py "First task."    sends 'First task.' (one second of work)
python work_queue/new_task.py                  sends 'Hello World!'
python work_queue/new_task.py -                sends one task per line of standard input
"""

import signal
import sys

# kill (SIGTERM) stops it as Ctrl+C does, already while it starts: never without a word
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from rabbit_queues.broker import Broker
    from rabbit_queues.cli import add_queue_type_option, run_script, script_parser
    from rabbit_queues.connection import broker_url
    from rabbit_queues.queues import TASK_QUEUE
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("words", nargs="*", help="the task (default: Hello World!), or -")
    add_queue_type_option(parser)
    args = parser.parse_args()
    task_queue = TASK_QUEUE.of_type(args.queue_type)

    url = broker_url(args.url)

    with Broker(url) as broker:
        broker.declare(task_queue)  # durable: the queue survives a broker restart
        if args.words != ["-"]:
            task = " ".join(args.words) or "Hello World!"
            # Persistent: written to disk, so the task survives a broker restart too.
            # publish() returns once the broker has confirmed it (publisher confirms):
            # after " [x] Sent", the task is RabbitMQ's responsibility.
            broker.publish(task_queue, task, persistent=True)
            print(f" [x] Sent '{task}'")
            return
        # `-`: many tasks in flight at once, each still confirmed: see rabbit_queues/pipelined.py.
        # Imported here: a single task needs none of it.
        from rabbit_queues.pipelined import plain_text, send_lines

        send_lines(broker, task_queue, sys.stdin, plain_text, persistent=True, noun="tasks")


if __name__ == "__main__":
    run_script(main)
