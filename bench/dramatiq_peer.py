"""Dramatiq's side of the benchmark: a no-op actor, publisher confirms."""

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

dramatiq.set_broker(RabbitmqBroker(url=os.environ["BENCH_AMQP_URL"], confirm_delivery=True))


@dramatiq.actor(queue_name="bench_dramatiq")
def noop() -> None:
    pass
