#!/usr/bin/env python
"""Lesson 1, worker: print each message of the 'hello' queue; each '.' is a second of work.

Auto-ack: RabbitMQ deletes a message as soon as it sends it, so what a worker holds when it
dies is lost. Lesson 2 (work_queue) fixes that with manual acknowledgements.
"""

import time

from rabbit_queues.cli import run_script, script_parser, shortened
from rabbit_queues.delivery import Delivery
from rabbit_queues.queues import HELLO
from rabbit_queues.staying_up import Worker

MAX_SECONDS = 60  # fake work has a bound too: 100,000 dots would be 27 hours


def callback(delivery: Delivery) -> None:  # pika calls it with each message
    message = delivery.body.decode()
    print(f" [x] Received '{shortened(message)}'")
    dots = message.count(".")
    if dots > MAX_SECONDS:
        raise OverflowError(f"{dots} dots: more than {MAX_SECONDS} s of work")
    time.sleep(dots)  # fake work: one second per dot
    print(" [x] Done")


def main() -> None:
    args = script_parser(__doc__, worker=True).parse_args()  # --url, --burst, --queue-type...
    hello = HELLO.of_type(args.queue_type)  # quorum (the default) or classic
    with Worker(args.url) as worker:  # pika.BlockingConnection(parameters).channel()
        worker.declare(hello)  # channel.queue_declare("hello", durable=True)
        # auto_ack=True: RabbitMQ forgets a message once sent; a worker that dies loses its share
        worker.consume(hello, callback, auto_ack=True)  # channel.basic_consume(..., callback)
        print(" [*] Waiting for messages. To exit press CTRL+C")
        worker.run(until_empty=args.burst)  # channel.start_consuming()


if __name__ == "__main__":
    run_script(main)
