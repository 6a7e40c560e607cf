#!/usr/bin/env python
"""Lesson 1, producer: send a message to the 'hello' queue.

python hello_world/new_task.py                 sends 'Hello World!'
python hello_world/new_task.py Hi there...     sends 'Hi there...'
python hello_world/new_task.py -               sends one message per line of standard input
"""

from rabbit_queues.broker import Broker
from rabbit_queues.cli import run_script, script_parser, send_standard_input
from rabbit_queues.queues import HELLO


def main() -> None:
    parser = script_parser(__doc__)  # --url, --queue-type
    parser.add_argument("words", nargs="*", help="the message (default: Hello World!), or -")
    args = parser.parse_args()
    hello = HELLO.of_type(args.queue_type)
    with Broker(args.url) as broker:  # pika.BlockingConnection, channel.confirm_delivery()
        broker.declare(hello)  # channel.queue_declare("hello", durable=True), as workers do
        if args.words != ["-"]:
            message = " ".join(args.words) or "Hello World!"
            # channel.basic_publish(exchange="", routing_key="hello", body=message): transient,
            # so a classic queue keeps it in memory only (lesson 2 makes messages persistent)
            broker.publish(hello, message, persistent=False)
            print(f" [x] Sent '{message}'")
        else:  # `-`: one message per line, many in flight at once (rabbit_queues/pipelined.py)
            send_standard_input(broker, hello, persistent=False, noun="messages")


if __name__ == "__main__":
    run_script(main)
