"""Whatever a message holds, a worker settles it exactly once (acked, dead-lettered with the
reason, or, if even that fails, dropped with a loud line) and goes on to the next."""

import json
import re
import signal
import struct
import sys

import pika.data
import pytest
from conftest import eventually, queue_policy, received, send
from script_runner import succeeded

# Headers this large fit in the one frame that carries a message's properties (131,072 bytes),
# but a copy with a few more headers (the reason, the attempt) does not: RabbitMQ would close
# the connection on it (frame_too_large).
NEAR_FRAME_MAX = {"padding": "x" * (131_072 - 100)}


def no_reconnects(worker) -> bool:
    return not worker.matching("reconnecting|lost the connection|Traceback")


def test_headers_too_large_to_copy_do_not_loop_the_worker(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py")
    probe.publish("task_queue", b"An error", headers=NEAR_FRAME_MAX)
    send(scripts, 'python work_queue/new_task.py "Next task."')

    worker.wait_for(r"moved to task_queue\.dlq after 3 attempts$")
    worker.wait_for(r"^ \[x\] Received 'Next task\.'$")
    worker.wait_for(r"^ \[x\] Done$")
    assert worker.matching("Failed") == [
        " [!] Failed: task 'An error' asked to fail; retry in 2 s, as attempt 2 of 3 "
        "(without its own headers: too large to copy)",
        " [!] Failed: task 'An error' asked to fail; retry in 2 s, as attempt 3 of 3",
        " [!] Failed: task 'An error' asked to fail; moved to task_queue.dlq after 3 attempts",
    ]
    assert received(worker).count("An error") == 3
    assert no_reconnects(worker), worker.output
    ((properties, body),) = probe.get_all("task_queue.dlq")
    assert body == b"An error" and "padding" not in properties.headers
    assert properties.headers["x-dead-letter-reason"] == "ValueError: task 'An error' asked to fail"


def test_a_bad_task_with_huge_headers_gets_its_error_result_once(scripts, probe):
    worker = scripts.start_worker("python task_queue/worker.py")
    probe.publish("tasks", b"not json", message_id="raw-1", headers=NEAR_FRAME_MAX)

    worker.wait_for(r"moved to tasks\.dlq \(without its own headers: too large to copy\)$")
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    assert results.matching("Task ") == [
        " [x] Task raw-1: an undecodable task failed: BadTask: message body is not JSON "
        "(Expecting value: line 1 column 1 (char 0))"
    ]
    assert no_reconnects(worker), worker.output
    assert probe.depth("tasks.dlq") == 1
    assert probe.depth("tasks") == 0


def test_a_deleted_retry_queue_is_declared_again_by_starting_over(scripts, probe):
    """The retry cannot be sent: the task is not acked, and the worker starts again from the
    top (connect, declare, consume), as after any loss; the task comes back and is retried."""
    worker = scripts.start_worker("python work_queue/worker.py")
    probe.channel.queue_delete("task_queue.retry")

    send(scripts, 'python work_queue/new_task.py "An error"')

    worker.wait_for(r"^ \[\*\] Reconnected to ")
    lines = worker.lines
    first = lines.index(" [x] Received 'An error'")
    assert lines[first + 1 : first + 3] == [
        " [!] queue 'task_queue.retry' does not exist; nothing was sent before the ack: "
        "RabbitMQ will deliver that message again",
        " [!] queue 'task_queue.retry' does not exist; nothing was sent; reconnecting",
    ], lines
    worker.wait_for(r"^ \[!\] Failed: task 'An error' asked to fail; retry in 2 s, as attempt 2")
    worker.wait_for(r"^ \[x\] Received 'An error'$", count=3)  # back from task_queue.retry
    assert probe.depth("task_queue.retry") is not None
    assert probe.consumers("task_queue") == 1
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


@pytest.fixture
def refusing_dead_letter_queue(scripts, probe):
    """A policy that makes RabbitMQ refuse every message for task_queue.dlq."""
    probe.declare("task_queue.dlq")
    refuse = '{"max-length": 0, "overflow": "reject-publish"}'
    with queue_policy(scripts, "full", "^task_queue\\.dlq$", refuse):
        # A quorum queue refuses a message only once it is over its limit: fill it first.
        probe.publish("task_queue.dlq", b"filler")
        eventually(lambda: probe.depth("task_queue.dlq") == 1)
        yield


def test_a_message_not_even_the_dead_letter_queue_takes_is_dropped_loudly(
    scripts, probe, refusing_dead_letter_queue
):
    worker = scripts.start_worker("python work_queue/worker.py")
    probe.publish("task_queue", b"\xff not UTF-8")
    probe.publish("task_queue", b"\xfe not UTF-8 either")
    send(scripts, 'python work_queue/new_task.py "Next task."')

    worker.wait_for(r"^ \[x\] Done$")
    assert worker.matching("DROPPED") == [
        " [!] UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid "
        "start byte; could not dead-letter it (RabbitMQ refused a message for "
        "'task_queue.dlq'), so it was DROPPED (1 message dropped by this worker)",
        " [!] UnicodeDecodeError: 'utf-8' codec can't decode byte 0xfe in position 0: invalid "
        "start byte; could not dead-letter it (RabbitMQ refused a message for "
        "'task_queue.dlq'), so it was DROPPED (2 messages dropped by this worker)",
    ]
    assert no_reconnects(worker), worker.output
    assert probe.depth("task_queue") == 0
    assert probe.depth("task_queue.dlq") == 1  # the filler alone
    assert probe.consumers("task_queue") == 1


def test_fake_work_has_a_bound_and_a_huge_task_is_not_printed_whole(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py")
    probe.publish("task_queue", b"." * 100_000)  # 27 hours of fake work
    probe.publish("task_queue", b"x" * 10_000_000)  # 10 MB (RabbitMQ 4 takes 16 MiB at most)

    worker.wait_for(r"^ \[x\] Done$")
    shown_dots, shown_xs = worker.matching("Received")
    assert shown_dots == f" [x] Received '{'.' * 200}... (100,000 characters)'"
    assert shown_xs == f" [x] Received '{'x' * 200}... (10,000,000 characters)'"
    assert worker.matching("OverflowError") == [
        " [!] OverflowError: 100000 dots: more than 60 s of work; moved to task_queue.dlq"
    ]
    assert len(worker.output) < 2_000
    assert probe.depth("task_queue.dlq") == 1


def test_forged_attempts_and_float_headers(scripts, probe, monkeypatch):
    """x-attempts is the worker's own count: a value it could not have written counts as the
    first attempt. A float header (pika reads one as a truncated int, its issue #599) does not
    stop the copy: it carries what pika read (docs/wrapper.md says so)."""
    original_encode = pika.data.encode_value

    def encode_with_floats(pieces, value):  # as a Java or .NET producer would send it
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return original_encode(pieces, value)

    monkeypatch.setattr(pika.data, "encode_value", encode_with_floats)
    probe.declare("task_queue")
    probe.publish("task_queue", b"An error", headers={"x-attempts": 99})
    probe.publish("task_queue", b"." * 61, headers={"ratio": 0.1, "deep": [{"pi": 3.14159}]})
    worker = scripts.start("python work_queue/worker.py --burst")

    assert worker.wait() == 0
    assert worker.matching("Failed")[0] == (
        " [!] Failed: task 'An error' asked to fail; retry in 2 s, as attempt 2 of 3"
    )
    dead = {body: properties.headers for properties, body in probe.get_all("task_queue.dlq")}
    assert set(dead) == {b"An error", b"." * 61}, worker.output
    assert dead[b"." * 61]["ratio"] == 0  # as pika read 0.1
    assert dead[b"." * 61]["deep"] == [{"pi": 3}]  # and 3.14159
    assert dead[b"An error"]["x-attempts"] == 3


def test_an_out_of_range_number_gets_an_error_result(scripts, probe):
    worker = scripts.start_worker("python task_queue/worker.py")
    probe.publish(
        "tasks", b'{"id": "big-1", "type": "add", "args": [1e400, 1]}', message_id="big-1"
    )
    chain = {
        "id": "big-2",
        "type": "add",
        "args": [1, 2],
        "chain": {"id": "c-1", "step": 1, "then": [{"type": "mul", "args": ["BIG"]}]},
    }
    body = json.dumps(chain).replace('"BIG"', "1e400").encode()
    probe.publish("tasks", body, message_id="big-2")

    worker.wait_for(r"moved to tasks\.dlq$", count=2)
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    error = "an undecodable task failed: BadTask: message body is not JSON (1e400 is out of range"
    assert results.matching("Task ") == [
        f" [x] Task big-1: {error} for a number)",
        f" [x] Task big-2: {error} for a number)",
    ]
    assert probe.depth("tasks.dlq") == 2


def test_dead_letters_of_the_results_queue_are_listed_and_moved_back(scripts, probe):
    probe.declare("results.dlq")
    probe.publish(
        "results.dlq",
        b'{"id": "t-1", "result": 5}',
        headers={"x-dead-letter-reason": "KeyError: 'type'", "x-original-queue": "results"},
    )

    listed = succeeded(scripts.run("python work_queue/dead_letters.py --queue results"))
    assert listed.stdout.endswith(" [*] 1 dead letter in results.dlq\n")
    moved = succeeded(scripts.run("python work_queue/dead_letters.py --queue results --requeue"))
    assert moved.stdout.endswith(" [*] 1 dead letter moved back to results\n")
    assert probe.depth("results") == 1


def nested(depth: int) -> dict:
    """A header table nested ``depth`` deep: RabbitMQ takes it, pika cannot read it back
    (deeper than Python's recursion limit, which the tests' own publish raises for a moment)."""
    table: dict = {}
    for _ in range(depth):
        table = {"n": table}
    return {"nested": table}


def publish_unreadable(probe, queue: str, body: bytes, **properties) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        probe.publish(queue, body, headers=nested(600), **properties)
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_a_task_whose_headers_pika_cannot_read_is_dead_lettered_on_its_first_delivery(
    scripts, probe, queue_type
):
    """pika fails on such headers and drops the connection: RabbitMQ delivered the task again
    and again (3.10, and classic queues everywhere) or dropped it after 20 (4.x, quorum)."""
    worker = scripts.start_worker(f"python work_queue/worker.py --queue-type {queue_type}")
    publish_unreadable(probe, "task_queue", b"Deep task.", message_id="deep-1")
    send(scripts, f'python work_queue/new_task.py --queue-type {queue_type} "Next task."')

    worker.wait_for(r"^ \[x\] Received 'Next task\.'$")
    worker.wait_for(r"^ \[x\] Done$")
    ((line,),) = [worker.matching("could not be read")]
    assert re.fullmatch(
        r" \[!\] its headers could not be read \(RecursionError: .+\); moved to task_queue\.dlq",
        line,
    ), line
    assert received(worker) == ["Next task."]
    assert no_reconnects(worker), worker.output
    ((properties, body),) = probe.get_all("task_queue.dlq")
    assert (body, properties.message_id) == (b"Deep task.", "deep-1")
    assert properties.headers["x-dead-letter-reason"].startswith("its headers could not be read")

    succeeded(scripts.run("python work_queue/dead_letters.py --queue-type " + queue_type))
