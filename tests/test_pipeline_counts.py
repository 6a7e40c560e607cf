"""`new_task.py -`'s counting, in process, with no broker: what it reports as confirmed, and as
sent without a confirm, when RabbitMQ acks one by one or many at once, nacks, returns a message,
or goes away, and when a line does not parse. The connection is a stand-in that answers each
publish as it is told, through the same callbacks pika calls."""

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pika.exceptions
import pytest
from pika.spec import Basic

from rabbit_queues.connection import BrokerError
from rabbit_queues.pipelined import publish_pipelined
from rabbit_queues.queues import TASK_QUEUE


class StandInConnection:
    """Runs what the reader thread hands over, publishes on a channel that records each
    message, and answers it with ``answer(number, published)``: "ack", "multiple" (one ack
    for all so far), "nack", "return" (returned, then acked, as RabbitMQ does), "hold" (no
    answer yet), or "lose" (the connection goes)."""

    def __init__(self, answer: Callable[[int, list[int]], str]) -> None:
        self.answer = answer
        self.published: list[int] = []
        self.unanswered: list[int] = []
        self._handed_over: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._impl = SimpleNamespace(
            add_on_return_callback=lambda callback: setattr(self, "on_return", callback),
            add_on_close_callback=lambda callback: None,
            confirm_delivery=lambda callback: setattr(self, "on_confirm", callback),
            basic_publish=self._publish,
        )

    def channel(self) -> SimpleNamespace:
        return SimpleNamespace(_impl=self._impl)

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._handed_over.append(callback)

    def _publish(self, **_message: object) -> None:
        self.published.append(len(self.published) + 1)
        self.unanswered.append(len(self.published))

    def _confirm(self, method: object) -> None:
        self.on_confirm(SimpleNamespace(method=method))

    def process_data_events(self, time_limit: float) -> None:
        with self._lock:
            handed_over, self._handed_over = self._handed_over, []
        for callback in handed_over:
            callback()
        for tag in list(self.unanswered):
            what = self.answer(tag, self.published)
            if what == "hold":
                continue
            if what == "lose":
                raise pika.exceptions.StreamLostError("Stream connection lost")
            self.unanswered.remove(tag)
            if what == "return":
                self.on_return(None, None, None, b"")
            if what == "multiple":  # one ack for all unanswered so far
                last, self.unanswered = self.unanswered[-1] if self.unanswered else tag, []
                self._confirm(Basic.Ack(delivery_tag=last, multiple=True))
                break
            self._confirm((Basic.Nack if what == "nack" else Basic.Ack)(delivery_tag=tag))
        if not handed_over:
            time.sleep(min(time_limit, 0.001))  # as pika waits for the socket


def send(answer, lines: int = 10, window: int = 5, **options) -> int:
    connection = StandInConnection(answer)
    messages = ((f"task {n}", {}) for n in range(1, lines + 1))
    broker = SimpleNamespace(connection=connection)
    return publish_pipelined(
        broker, TASK_QUEUE, messages, persistent=True, noun="tasks", window=window, **options
    )


@pytest.mark.timeout(10)
def test_every_task_acked_one_by_one_is_counted():
    confirmed = []
    assert send(lambda tag, _: "ack", lines=12, on_confirmed=confirmed.append) == 12
    assert confirmed == sorted(confirmed) and confirmed[-1] == 12


@pytest.mark.timeout(10)
def test_one_ack_for_many_confirms_each_of_them():
    assert send(lambda tag, published: "multiple", lines=20, window=7) == 20


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("what", "at", "said"),
    [
        ("nack", 3, "RabbitMQ refused a message for 'task_queue' (2 tasks were"),
        # RabbitMQ acks a message it returns, too: not counted
        ("return", 4, "queue 'task_queue' does not exist (3 tasks were"),
    ],
)
def test_a_refused_or_returned_task_stops_the_send_counting_only_what_was_taken(what, at, said):
    with pytest.raises(BrokerError) as stopped:
        send(lambda tag, _: what if tag == at else "ack", window=1)
    assert str(stopped.value) == f"{said} sent and confirmed before that)"


@pytest.mark.timeout(10)
def test_a_lost_connection_says_what_is_safe_and_what_may_be_in_the_queue():
    def answer(tag, published):
        if tag <= 2:
            return "ack"
        return "lose" if len(published) >= 7 else "hold"  # 5 in flight, the window full

    with pytest.raises(BrokerError) as lost:
        send(answer, lines=10, window=5)
    assert str(lost.value) == (
        "lost the connection to RabbitMQ (StreamLostError) (2 tasks were sent and confirmed "
        "before that; 5 more were sent without a confirm: they may or may not be in the queue "
        "(its depth tells))"
    )


@pytest.mark.timeout(10)
def test_a_line_that_does_not_parse_stops_after_the_ones_before_are_confirmed():
    def messages():
        yield "one", {}
        yield "two", {}
        raise ValueError("unbalanced quote on a line")

    connection = StandInConnection(lambda tag, _: "ack")
    broker = SimpleNamespace(connection=connection)
    with pytest.raises(BrokerError) as bad:
        publish_pipelined(broker, TASK_QUEUE, messages(), persistent=True, noun="tasks")
    assert str(bad.value) == (
        "unbalanced quote on a line (2 tasks were sent and confirmed before that)"
    )
    assert connection.published == [1, 2]


@pytest.mark.timeout(10)
def test_one_task_is_counted_in_the_singular():
    with pytest.raises(BrokerError) as refused:
        send(lambda tag, _: "nack" if tag == 2 else "ack", window=1)
    assert "(1 task was sent and confirmed before that)" in str(refused.value)
