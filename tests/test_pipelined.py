"""The pipelined publisher behind `new_task.py -`: fast, and exact about what was confirmed."""

import pytest

from rabbit_queues.broker import Broker
from rabbit_queues.connection import BrokerError
from rabbit_queues.pipelined import publish_pipelined
from rabbit_queues.queues import QueueSpec

OVERFLOWING = QueueSpec(
    "pipelined-test.overflow", arguments={"x-max-length": 5, "x-overflow": "reject-publish"}
)
PLAIN = QueueSpec("pipelined-test.plain")


@pytest.fixture
def queues(probe):
    for spec in (OVERFLOWING, PLAIN):
        probe.channel.queue_delete(spec.name)
        probe.channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
    yield
    for spec in (OVERFLOWING, PLAIN):
        probe.channel.queue_delete(spec.name)


@pytest.fixture
def producer(broker):
    with Broker(broker.url) as producer:
        yield producer


def numbered(count):
    return ((f"message {number}", {"message_id": str(number)}) for number in range(count))


@pytest.mark.parametrize("window", [1, 7, 1000])
def test_every_message_is_confirmed_and_counted(producer, probe, queues, window):
    count = publish_pipelined(producer, PLAIN, numbered(5000), persistent=True, window=window)

    assert count == 5000
    assert probe.depth(PLAIN.name) == 5000


def test_a_nack_stops_it_and_the_count_is_what_was_confirmed(producer, probe, queues):
    # The queue takes 5 messages, then the broker nacks (refuses) the rest.
    with pytest.raises(BrokerError) as refused:
        publish_pipelined(producer, OVERFLOWING, numbered(50), persistent=True, noun="tasks")

    assert str(refused.value) == (
        "RabbitMQ refused a message for 'pipelined-test.overflow' (5 tasks were sent and "
        "confirmed before that)"
    )
    assert probe.depth(OVERFLOWING.name) == 5


def test_a_missing_queue_is_reported(producer, probe, queues):
    with pytest.raises(BrokerError, match=r"^queue 'nowhere' does not exist \(0 messages"):
        publish_pipelined(producer, QueueSpec("nowhere"), numbered(3), persistent=True)


def test_a_line_that_does_not_parse_stops_after_the_ones_before_are_confirmed(
    producer, probe, queues
):
    def messages():
        yield from numbered(100)
        raise ValueError("line 101 does not parse")

    with pytest.raises(BrokerError) as stopped:
        publish_pipelined(producer, PLAIN, messages(), persistent=True)

    assert str(stopped.value) == (
        "line 101 does not parse (100 messages were sent and confirmed before that)"
    )
    assert probe.depth(PLAIN.name) == 100
