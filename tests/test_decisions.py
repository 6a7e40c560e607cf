"""What the wrapper decides, in process, with no broker: the headers pika cannot read, which
counts are returns, what a connection failure is told as."""

import ssl
import sys
import time
from types import SimpleNamespace

import pika.exceptions
import pika.frame
import pytest
from pika.spec import BasicProperties

from rabbit_queues.connection import (
    TLS_ALERTS,
    UNREADABLE,
    BrokerError,
    explain_connection_error,
    url_parameters,
    without_advice,
    without_headers,
)
from rabbit_queues.delivery import DELIVERY_LIMIT, KILLS_WORKERS, Delivery
from rabbit_queues.queues import LEADER_WAIT_SECONDS, TASK_QUEUE, Figures, QueueCounts


def header_frame(**properties) -> bytes:
    """A content header frame as RabbitMQ sends it, for a body of 42 bytes."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # to write headers nested deeper than pika can read
    try:
        return pika.frame.Header(1, 42, BasicProperties(**properties)).marshal()
    finally:
        sys.setrecursionlimit(limit)


def nested(depth: int) -> dict:
    table: dict = {}
    for _ in range(depth):
        table = {"n": table}
    return table


def test_a_header_frame_pika_cannot_read_keeps_its_other_properties():
    frame = header_frame(
        content_type="application/json",
        headers={"deep": nested(600)},
        delivery_mode=2,
        message_id="deep-1",
        correlation_id="c-1",
    )
    with pytest.raises(RecursionError) as failed:
        pika.frame.decode_frame(frame)

    length, header = without_headers(frame + b"next frame", failed.value)

    assert length == len(frame)
    assert (header.channel_number, header.body_size) == (1, 42)
    properties = header.properties
    assert (properties.content_type, properties.delivery_mode) == ("application/json", 2)
    assert (properties.message_id, properties.correlation_id) == ("deep-1", "c-1")
    assert list(properties.headers) == [UNREADABLE]
    assert properties.headers[UNREADABLE].startswith("RecursionError: maximum recursion depth")


def test_a_frame_without_headers_to_drop_is_not_mended():
    frame = header_frame(message_id="no-headers")
    error = RecursionError("not from the headers")
    with pytest.raises(RecursionError):
        without_headers(frame, error)
    method = pika.frame.Method(1, pika.spec.Basic.Ack(delivery_tag=1)).marshal()
    with pytest.raises(ValueError):
        without_headers(method, ValueError("a method frame"))


def test_a_bad_frame_end_is_left_to_pika():
    frame = bytearray(header_frame(headers={"a": 1}))
    frame[-1] = 0
    error = pika.exceptions.InvalidFrameError("Invalid FRAME_END marker")
    with pytest.raises(pika.exceptions.InvalidFrameError):
        without_headers(bytes(frame), error)


def delivery(headers=None, *, redelivered=False) -> Delivery:
    return Delivery(
        None, 1, BasicProperties(headers=headers), b"task", TASK_QUEUE, redelivered=redelivered
    )


@pytest.mark.parametrize("count", ["x-delivery-count", "x-acquired-count"])
def test_only_a_redelivery_counts_returns(count):
    assert delivery({count: 9}).returned == 0
    assert delivery({count: 9}).why_not_run is None
    assert delivery({count: DELIVERY_LIMIT - 1}, redelivered=True).why_not_run is None
    assert delivery({count: DELIVERY_LIMIT}, redelivered=True).why_not_run == KILLS_WORKERS


def test_unreadable_headers_are_why_a_message_is_not_run():
    unreadable = delivery({UNREADABLE: "RecursionError: too deep"})
    assert unreadable.why_not_run == "its headers could not be read (RecursionError: too deep)"
    assert delivery().why_not_run is None
    assert delivery({"x-attempts": 2}).why_not_run is None


PARAMETERS = url_parameters("amqps://guest:guest@localhost:5671/%2F")


def lost(reason: str) -> pika.exceptions.IncompatibleProtocolError:
    """How pika reports a TLS alert: only as text, inside another error."""
    return pika.exceptions.IncompatibleProtocolError(
        f"StreamLostError: (\"Stream connection lost: SSLError(1, '[SSL: {reason}] ...')\",)"
    )


@pytest.mark.parametrize(
    "alert",
    [
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    ],
)
def test_a_tls_alert_is_told_by_its_cause_without_advice_to_start_the_broker(alert):
    error = explain_connection_error(PARAMETERS, lost(alert))
    assert str(error) == f"TLS with RabbitMQ at localhost:5671 failed: {TLS_ALERTS[alert]}"


def test_an_alert_told_in_a_tls_1_2_handshake_is_told_alike():
    error = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    error.reason = "TLSV1_ALERT_UNKNOWN_CA"  # as the ssl module sets it
    told = str(explain_connection_error(PARAMETERS, error))
    assert told == f"TLS with RabbitMQ at localhost:5671 failed: {TLS_ALERTS[error.reason]}"


def test_an_unknown_tls_alert_and_a_lost_alert_still_name_tls():
    unknown = explain_connection_error(PARAMETERS, lost("SOME_NEW_ALERT"))
    assert str(unknown) == "TLS with RabbitMQ at localhost:5671 failed: some_new_alert"
    eof = pika.exceptions.StreamLostError(
        "Stream connection lost: SSLEOFError(8, 'EOF occurred in violation of protocol')"
    )
    told = str(explain_connection_error(PARAMETERS, eof))
    assert told == f"TLS with RabbitMQ at localhost:5671 failed: {TLS_ALERTS['EOF']}"


def test_a_connection_taken_then_closed_does_not_say_start_the_broker():
    reset = pika.exceptions.StreamLostError(
        "Stream connection lost: ConnectionResetError(104, 'Connection reset by peer')"
    )
    error = explain_connection_error(PARAMETERS, reset)
    assert without_advice(error) == (
        "localhost:5671 took the connection, then closed it before AMQP began "
        "(connection reset by peer)"
    )
    assert "start the broker" not in str(error)


def test_a_refused_connection_says_how_to_start_the_broker_apart_from_what_happened():
    refused = pika.exceptions.AMQPConnectionError(ConnectionRefusedError(111, "Connection refused"))
    error = explain_connection_error(PARAMETERS, refused)
    assert isinstance(error, BrokerError)
    assert without_advice(error) == "cannot reach RabbitMQ at localhost:5671 (connection refused)"
    assert str(error).startswith(without_advice(error) + ": start the broker (")


class AnsweringChannel:
    """Answers passive declares with ``counts`` after ``declare_seconds`` (RabbitMQ's own
    wait for a quorum queue's leader), and anything else at once."""

    def __init__(self, counts: tuple[int, int], declare_seconds: float) -> None:
        self.counts, self.declare_seconds = counts, declare_seconds

    def queue_declare(self, name: str, passive: bool) -> SimpleNamespace:
        time.sleep(self.declare_seconds)
        ready, consumers = self.counts
        return SimpleNamespace(
            method=SimpleNamespace(message_count=ready, consumer_count=consumers)
        )

    def basic_qos(self, prefetch_count: int) -> None:
        pass


@pytest.mark.parametrize(
    ("counts", "declare_seconds", "figures"),
    [
        ((0, 0), 0.0, Figures(0, 0)),  # empty, answered at once
        ((0, 0), LEADER_WAIT_SECONDS, Figures(None, None)),  # RabbitMQ could not ask
        ((300, 0), LEADER_WAIT_SECONDS, Figures(300, 0)),  # slow, but an answer
        ((0, 2), 0.0, Figures(0, 2)),
    ],
    ids=["empty", "no answer from the leader", "slow answer", "consumers"],
)
def test_a_late_zero_is_unknown_not_zero(counts, declare_seconds, figures):
    channel = AnsweringChannel(counts, declare_seconds)
    counting = QueueCounts(SimpleNamespace(channel=lambda: channel))
    assert counting.of("tasks") == figures
    assert counting.depth("tasks") == figures.message_count
