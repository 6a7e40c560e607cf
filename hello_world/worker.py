#!/usr/bin/env python
"""Lesson 1, worker: print each message of the 'hello' queue (one second of work per '.', at
most 60).

Auto-ack: RabbitMQ deletes a message as soon as it sends it, so what a worker holds when it
dies is lost. Lesson 2 (work_queue) fixes that with manual acknowledgements.
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
    from rabbit_queues.queues import HELLO
    from rabbit_queues.staying_up import Worker
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None

MAX_SECONDS = 60  # fake work has a bound too: 100,000 dots would be 27 hours


def on_message(delivery: Delivery) -> None:
    message = delivery.body.decode()
    print(f" [x] Received '{shortened(message)}'")
    dots = message.count(".")  # fake work: one second per dot
    if dots > MAX_SECONDS:
        raise OverflowError(f"{dots} dots: more than {MAX_SECONDS} s of work")
    if dots:  # (even time.sleep(0) gives up the CPU, for ~0.1 ms here)
        time.sleep(dots)
    print(" [x] Done")


def main() -> None:
    parser = script_parser(__doc__)
    add_worker_options(parser)  # --burst, --verbose
    add_queue_type_option(parser)
    args = parser.parse_args()
    hello = HELLO.of_type(args.queue_type)

    with Worker(broker_url(args.url)) as worker:
        worker.declare(hello)
        # auto_ack=True: "delivered" counts as "done". RabbitMQ pushes every waiting message
        # to the workers at once and forgets it; a worker that dies takes its share with it.
        worker.consume(hello, on_message, auto_ack=True)
        print(" [*] Waiting for messages. To exit press CTRL+C")
        worker.run(until_empty=args.burst)


if __name__ == "__main__":
    run_script(main)
