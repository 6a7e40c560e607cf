"""A resource alarm (memory or disk running low) makes RabbitMQ block every publisher: the
scripts say so at once, wait, finish when it lifts, stop on Ctrl+C, and give up after the
URL's blocked_connection_timeout. The alarm is raised for real, by setting the node's memory
watermark to 0, and lifted again whatever happens."""

import re
import signal
from collections.abc import Iterator

import pytest
from conftest import send
from script_runner import succeeded

BLOCKED = (
    r"^ \[!\] RabbitMQ is blocking publishers \(low on memory: a resource alarm, see "
    r"`rabbitmqctl status`\); waiting until it lifts, Ctrl\+C to stop$"
)

# Long (resource alarms, set and lifted on the broker): python -m pytest -m long (docs/tests.md).
pytestmark = [pytest.mark.long]
UNBLOCKED = " [*] RabbitMQ accepts publishers again"


@pytest.fixture
def alarm(scripts) -> Iterator[None]:
    """The memory alarm on the broker under test, for the test's duration."""

    def watermark(fraction: str) -> None:
        succeeded(scripts.rabbitmqctl(f"rabbitmqctl set_vm_memory_high_watermark {fraction}"))

    watermark("0")
    try:
        yield
    finally:
        watermark("0.4")


def test_blocked_publishes_wait_say_why_and_finish_when_the_alarm_lifts(scripts, probe, alarm):
    one = scripts.start('python work_queue/new_task.py "Blocked task."')
    many = scripts.start("python work_queue/new_task.py -", stdin=True)
    many.write("".join(f"Task {n}.\n" for n in range(1, 51)))
    many.close_stdin()
    one.wait_for(BLOCKED)
    many.wait_for(BLOCKED)
    assert one.process.poll() is None and many.process.poll() is None  # waiting, not failed

    succeeded(scripts.rabbitmqctl("rabbitmqctl set_vm_memory_high_watermark 0.4"))

    assert one.wait() == 0
    assert one.lines[1:] == [UNBLOCKED, " [x] Sent 'Blocked task.'"]
    assert many.wait() == 0
    assert many.lines[1] == UNBLOCKED
    assert re.fullmatch(
        r" \[x\] Sent 50 tasks in \S+ s, each confirmed by the broker", many.lines[2]
    )
    assert probe.depth("task_queue") == 51  # none lost, none twice


def test_a_worker_whose_retry_is_blocked_says_why_and_goes_on_after(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py")
    send(scripts, 'python work_queue/new_task.py "An error....."')  # fails after 5 s
    worker.wait_for(r"^ \[x\] Received 'An error\.\.\.\.\.'$")
    done = scripts.rabbitmqctl("rabbitmqctl set_vm_memory_high_watermark 0")
    try:
        succeeded(done)
        worker.wait_for(BLOCKED)  # its retry copy is what gets blocked
    finally:
        succeeded(scripts.rabbitmqctl("rabbitmqctl set_vm_memory_high_watermark 0.4"))
    worker.wait_for(r"^ \[!\] Failed: task 'An error\.\.\.\.\.' asked to fail; retry in 2 s")
    send(scripts, 'python work_queue/new_task.py "Next task."')
    worker.wait_for(r"^ \[x\] Received 'Next task\.'$")
    worker.wait_for(r"^ \[x\] Done$")
    assert UNBLOCKED in worker.lines
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_a_blocked_publish_stops_at_once_on_ctrl_c(scripts, alarm, stop):
    one = scripts.start('python work_queue/new_task.py "Blocked task."')
    one.wait_for(BLOCKED)

    one.signal(stop)

    assert one.wait(timeout=5) == 1
    assert one.lines[-1] == " [*] Interrupted"


def test_a_blocked_bulk_publish_stopped_says_what_is_unconfirmed(scripts, probe, alarm):
    many = scripts.start("python work_queue/new_task.py -", stdin=True)
    many.write("".join(f"Task {n}.\n" for n in range(1, 51)))
    many.wait_for(BLOCKED)

    many.signal(signal.SIGINT)

    assert many.wait(timeout=5) == 1
    assert many.lines[-1] == (
        "error: interrupted (0 tasks were sent and confirmed before that; 50 more were sent "
        "without a confirm: they may or may not be in the queue (its depth tells))"
    )
    assert probe.depth("task_queue") <= 50


def test_blocked_connection_timeout_gives_up_with_one_line(scripts, probe, alarm):
    url = scripts.env["AMQP_URL"] + "?blocked_connection_timeout=1"
    one = scripts.start(f'python work_queue/new_task.py --url "{url}" "Blocked task."')
    many = scripts.start(f'python work_queue/new_task.py --url "{url}" -', stdin=True)
    many.write("Task 1.\nTask 2.\n")
    many.close_stdin()

    assert one.wait(timeout=10) == 1
    assert one.lines[-1] == (
        "error: RabbitMQ blocked publishers longer than the URL's blocked_connection_timeout; "
        "the message was not confirmed: it may or may not be in the queue"
    )
    assert many.wait(timeout=10) == 1
    assert many.lines[-1] == (
        "error: RabbitMQ blocked publishers longer than the URL's blocked_connection_timeout "
        "(0 tasks were sent and confirmed before that; 2 more were sent without a confirm: "
        "they may or may not be in the queue (its depth tells))"
    )
    assert "Traceback" not in one.output + many.output
