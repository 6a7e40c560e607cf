"""How a worker settles a message, in process, with no broker: what retry() and dead_letter()
publish and ack, the attempts, the reason, the delivery limit, settling once. The broker is a
recorder with the two calls a Delivery makes (publish, ack) and the frame size it reads."""

from typing import Any

import pytest
from pika.spec import BasicProperties

from rabbit_queues.delivery import (
    ATTEMPTS_HEADER,
    DELIVERY_LIMIT,
    KILLS_WORKERS,
    MAX_ATTEMPTS,
    MAX_REASON,
    ORIGINAL_QUEUE_HEADER,
    REASON_HEADER,
    RETRY_DELAY_SECONDS,
    Delivery,
)
from rabbit_queues.queues import TASK_QUEUE


class RecordingBroker:
    """What a Delivery did: the copies it published (queue, body, properties) and its acks."""

    def __init__(self, frame_max: int = 131072) -> None:
        self.frame_max = frame_max
        self.published: list[tuple[str, bytes, dict[str, Any]]] = []
        self.acked: list[int] = []
        self.rejected: list[int] = []

    def publish(self, spec, body, *, persistent: bool, **properties: Any) -> None:
        assert persistent  # a copy of a task is as persistent as the task
        self.published.append((spec.name, body, properties))

    def ack(self, delivery_tag: int) -> None:
        self.acked.append(delivery_tag)

    def reject(self, delivery_tag: int) -> None:
        self.rejected.append(delivery_tag)


def delivery(headers=None, *, queue=TASK_QUEUE, redelivered=False, **properties) -> Delivery:
    broker = RecordingBroker()
    props = BasicProperties(headers=headers, **properties)
    return Delivery(broker, 7, props, b"task.", queue, redelivered=redelivered)


def test_ack_acks_its_own_delivery_tag_once():
    message = delivery()
    message.ack()
    assert message.broker.acked == [7]
    with pytest.raises(RuntimeError):
        message.ack()
    with pytest.raises(RuntimeError):
        message.retry("again")
    assert message.broker.published == []


def test_a_first_failure_waits_in_the_retry_queue_as_attempt_2():
    message = delivery(message_id="t-1", content_type="text/plain")

    outcome = message.retry("ValueError: boom")

    assert outcome == f"retry in {RETRY_DELAY_SECONDS} s, as attempt 2 of {MAX_ATTEMPTS}"
    [(queue, body, properties)] = message.broker.published
    assert (queue, body) == ("task_queue.retry", b"task.")
    assert properties["headers"] == {ATTEMPTS_HEADER: 2, REASON_HEADER: "ValueError: boom"}
    assert properties["expiration"] == str(RETRY_DELAY_SECONDS * 1000)
    assert (properties["message_id"], properties["content_type"]) == ("t-1", "text/plain")
    assert message.broker.acked == [7]  # the copy first, then the ack
    assert message.back_by is not None


def test_the_last_attempt_goes_to_the_dead_letter_queue_with_the_reason():
    message = delivery({ATTEMPTS_HEADER: MAX_ATTEMPTS, "app": "kept"})

    outcome = message.retry("ValueError: boom")

    assert outcome == f"moved to task_queue.dlq after {MAX_ATTEMPTS} attempts"
    [(queue, _body, properties)] = message.broker.published
    assert queue == "task_queue.dlq"
    assert properties["headers"] == {
        "app": "kept",  # the message's own headers travel with it
        ATTEMPTS_HEADER: MAX_ATTEMPTS,
        REASON_HEADER: "ValueError: boom",
        ORIGINAL_QUEUE_HEADER: "task_queue",  # where --requeue sends it back
    }
    assert "expiration" not in properties
    assert message.broker.acked == [7]


@pytest.mark.parametrize("attempts", [0, -1, MAX_ATTEMPTS + 1, "2", 2.5, None])
def test_an_attempt_count_out_of_range_or_forged_counts_as_the_first(attempts):
    assert delivery({ATTEMPTS_HEADER: attempts}).attempt == 1


def test_a_quorum_queue_task_retries_through_a_quorum_retry_queue():
    message = delivery(queue=TASK_QUEUE.of_type("quorum"))
    message.retry("ValueError: boom")
    assert message.broker.published[0][0] == "task_queue.retry"
    assert message.queue.queue_type == "quorum"


def test_a_long_reason_is_cut_to_what_a_header_keeps():
    message = delivery()
    message.dead_letter("x" * (MAX_REASON * 3))
    headers = message.broker.published[0][2]["headers"]
    assert len(headers[REASON_HEADER]) == MAX_REASON


def test_the_headers_rabbitmq_adds_are_not_copied():
    message = delivery(
        {"x-death": [{"count": 1}], "x-delivery-count": 3, "x-first-death-queue": "q"}
    )
    message.dead_letter("boom")
    headers = message.broker.published[0][2]["headers"]
    assert not [name for name in headers if name.startswith(("x-death", "x-first", "x-delivery"))]


def test_a_copy_too_large_for_a_frame_keeps_only_our_headers():
    big = {"blob": "y" * 5000}
    message = Delivery(
        RecordingBroker(frame_max=4096), 7, BasicProperties(headers=big), b"t", TASK_QUEUE
    )

    outcome = message.dead_letter("boom")

    assert outcome == "moved to task_queue.dlq (without its own headers: too large to copy)"
    assert "blob" not in message.broker.published[0][2]["headers"]
    assert message.broker.acked == [7]


def test_drop_rejects_for_good_once():
    message = delivery()
    message.drop()
    assert message.broker.rejected == [7]
    with pytest.raises(RuntimeError):
        message.drop()


@pytest.mark.parametrize("count", ["x-delivery-count", "x-acquired-count"])
def test_the_delivery_limit_counts_only_returns_of_a_redelivery(count):
    assert delivery({count: DELIVERY_LIMIT}, redelivered=True).why_not_run == KILLS_WORKERS
    assert delivery({count: DELIVERY_LIMIT - 1}, redelivered=True).why_not_run is None
    assert delivery({count: "5"}, redelivered=True).returned == 0  # not a count


def test_the_larger_of_both_counts_is_the_returns():
    message = delivery({"x-delivery-count": 2, "x-acquired-count": 6}, redelivered=True)
    assert message.returned == 6
    assert message.why_not_run == KILLS_WORKERS


def test_an_auto_ack_delivery_is_settled_already():
    message = Delivery(RecordingBroker(), 7, BasicProperties(), b"x", TASK_QUEUE, settled=True)
    with pytest.raises(RuntimeError):
        message.ack()
    assert message.broker.acked == []
