#!/usr/bin/env python
"""Lesson 3: print the results of the 'results' queue as they arrive (of a chain, the last).

Reading a result acknowledges it, and RabbitMQ deletes it: a queue is not a database, so a
result read here (or by any other reader of 'results') is gone for everyone else.
"""

from task_messages import Result

from rabbit_queues.cli import run_script, script_parser
from rabbit_queues.delivery import Delivery
from rabbit_queues.queues import RESULTS
from rabbit_queues.staying_up import Worker


def main() -> None:
    parser = script_parser(__doc__, worker=True)  # --url, --burst, --queue-type...
    parser.add_argument("--steps", action="store_true", help="show every step of a chain")
    args = parser.parse_args()

    def callback(delivery: Delivery) -> None:  # pika calls it with each result
        result = Result.decode(delivery.body)
        if result.final or args.steps:
            print(f" [x] {result.heading}: {result.outcome}")
        delivery.ack()  # channel.basic_ack: read, so RabbitMQ deletes it

    results = RESULTS.of_type(args.queue_type)
    with Worker(args.url) as worker:  # pika.BlockingConnection(parameters).channel()
        worker.declare(results)  # channel.queue_declare("results", durable=True)
        worker.consume(results, callback, prefetch_count=1)  # basic_qos, basic_consume
        print(" [*] Waiting for results. To exit press CTRL+C")
        worker.run(until_empty=args.burst)  # channel.start_consuming()


if __name__ == "__main__":
    run_script(main)
