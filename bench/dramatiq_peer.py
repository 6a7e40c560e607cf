"""Dramatiq's side of the benchmark: a no-op actor, publisher confirms."""

import os
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

dramatiq.set_broker(RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"], confirm_delivery=True))


@dramatiq.actor(queue_name="bench_dramatiq")
def noop() -> None:
    pass


@dramatiq.actor(queue_name="bench_dramatiq")
def mark() -> None:
    """The last task of a drain: the benchmark waits for this file."""
    Path(os.environ["BENCH_MARK_FILE"]).touch()
