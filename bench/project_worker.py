"""This project's worker for the benchmark: rabbit_queues' consume path, minus the printing.

A body is a number of milliseconds to sleep (0 for the no-op tasks); a finished task that
slept prints 'done'.
"""

import argparse
import sys
import time

from rabbit_queues.delivery import Delivery
from rabbit_queues.queues import QueueSpec
from rabbit_queues.staying_up import Worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--prefetch", type=int, default=1, help="0: unlimited")
    parser.add_argument("--queue-type", choices=("classic", "quorum"), default="classic")
    args = parser.parse_args()

    def on_message(delivery: Delivery) -> None:
        milliseconds = int(delivery.body or b"0")
        if milliseconds:
            time.sleep(milliseconds / 1000)
        delivery.ack()
        if milliseconds:
            print("done", flush=True)

    with Worker(args.url) as broker:
        queue = QueueSpec(args.queue).of_type(args.queue_type)
        broker.declare(queue)
        broker.consume(queue, on_message, prefetch_count=args.prefetch)
        print("ready", flush=True)
        broker.run()


if __name__ == "__main__":
    sys.exit(main())
