#!/usr/bin/env python
"""Lesson 1, producer: send a message to the 'hello' queue.

python hello_world/new_task.py                 sends 'Hello World!'
python hello_world/new_task.py Hi there...     sends 'Hi there...'
python hello_world/new_task.py -               sends one message per line of standard input
"""

import signal
import sys

# kill (SIGTERM) stops it as Ctrl+C does, already while it starts: never without a word
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from rabbit_queues.broker import Broker
    from rabbit_queues.cli import add_queue_type_option, run_script, script_parser
    from rabbit_queues.connection import broker_url
    from rabbit_queues.queues import HELLO
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("words", nargs="*", help="the message (default: Hello World!), or -")
    add_queue_type_option(parser)
    args = parser.parse_args()
    hello = HELLO.of_type(args.queue_type)

    url = broker_url(args.url)

    with Broker(url) as broker:
        broker.declare(hello)  # both sides declare the queue: either may start first
        # Transient (persistent=False): a classic queue keeps it in memory only, so a broker
        # restart loses it. (A quorum queue writes every message to disk, whatever it asks.)
        # Lesson 2 (work_queue) makes messages persistent.
        if args.words != ["-"]:
            message = " ".join(args.words) or "Hello World!"
            broker.publish(hello, message, persistent=False)
            print(f" [x] Sent '{message}'")
            return
        # `-`: one message per line, many in flight at once (see rabbit_queues/pipelined.py).
        # Imported here: a single task needs none of it.
        from rabbit_queues.pipelined import plain_text, send_lines

        send_lines(broker, hello, sys.stdin, plain_text, persistent=False, noun="messages")


if __name__ == "__main__":
    run_script(main)
