#!/usr/bin/env python
"""Lesson 3: print the results of the 'results' queue as they arrive (of a chain, the last).

Reading a result acknowledges it, and RabbitMQ deletes it: a queue is not a database, so a
result read here (or by any other reader of 'results') is gone for everyone else.
"""

import signal

# kill (SIGTERM) stops it as Ctrl+C does, already while it starts: never without a word
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from task_messages import Result

    from rabbit_queues.cli import (
        add_queue_type_option,
        add_worker_options,
        run_script,
        script_parser,
    )
    from rabbit_queues.connection import broker_url
    from rabbit_queues.delivery import Delivery
    from rabbit_queues.queues import RESULTS
    from rabbit_queues.staying_up import Worker
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None


def main() -> None:
    parser = script_parser(__doc__)
    add_worker_options(parser)  # --burst, --verbose
    add_queue_type_option(parser)
    parser.add_argument("--steps", action="store_true", help="show every step of a chain")
    args = parser.parse_args()

    def on_result(delivery: Delivery) -> None:
        result = Result.decode(delivery.body)
        if result.final or args.steps:
            print(f" [x] {result.heading}: {result.outcome}")
        delivery.ack()

    with Worker(broker_url(args.url)) as worker:
        results = RESULTS.of_type(args.queue_type)
        worker.declare(results)
        worker.consume(results, on_result, prefetch_count=1)
        print(" [*] Waiting for results. To exit press CTRL+C")
        worker.run(until_empty=args.burst)


if __name__ == "__main__":
    run_script(main)
