"""Lesson 1, hello_world: every command of the README's hello_world section, run for real."""

import re
import signal
import time

from conftest import restart
from readme_output import assert_prints, prints
from script_runner import succeeded

FIFTEEN_MESSAGES = (
    'for i in $(seq 0 14); do echo "$i Hello World"; done | python hello_world/new_task.py -'
)


def test_send_and_receive(scripts, probe):
    worker = scripts.start_worker("python hello_world/worker.py")
    assert_prints("hello-waiting", worker.output)

    sent = succeeded(scripts.run("python hello_world/new_task.py"))
    assert sent.stdout == " [x] Sent 'Hello World!'\n"
    worker.wait_for(r"^ \[x\] Received 'Hello World!'$")
    worker.wait_for(r"^ \[x\] Done$")
    assert probe.depth("hello") == 0


def test_three_workers_each_get_every_third_message(scripts, probe):
    """With auto-ack, RabbitMQ deals the messages round-robin: each worker every third one."""
    workers = [scripts.start_worker("python hello_world/worker.py") for _ in range(3)]
    assert probe.consumers("hello") == 3

    sent = succeeded(scripts.run(FIFTEEN_MESSAGES))
    assert_prints("hello-fifteen-sent", sent.stdout)
    for worker in workers:
        worker.wait_for(r"^ \[x\] Done$", count=5)
    # One of the three prints exactly the README's block (after its waiting line).
    assert [prints("hello-every-third", "\n".join(w.lines[1:])) for w in workers].count(True) == 1
    numbers = [
        [int(n) for n in re.findall(r"Received '(\d+) Hello World'", worker.output)]
        for worker in workers
    ]
    assert sorted(n for per_worker in numbers for n in per_worker) == list(range(15))
    for per_worker in numbers:
        assert len(per_worker) == 5
        assert {n % 3 for n in per_worker} == {per_worker[0] % 3}, numbers
        assert per_worker == sorted(per_worker)


def test_auto_ack_loses_what_a_dying_worker_holds(scripts, probe, broker):
    worker = scripts.start_worker("python hello_world/worker.py")
    for command in (
        "python hello_world/new_task.py First...",
        "python hello_world/new_task.py Second...",
        "python hello_world/new_task.py Third...",
    ):
        succeeded(scripts.run(command))
    worker.wait_for(r"Received 'First\.\.\.'")

    worker.signal(signal.SIGKILL)
    worker.wait()

    # The other two had already been pushed to the worker and auto-acked: they are gone.
    assert probe.depth("hello") == 0
    assert worker.matching("Received") == [" [x] Received 'First...'"]
    # rabbitmqctl says so too (its figures are refreshed every few seconds: poll).
    listing, deadline = "", time.monotonic() + 30
    while not prints("hello-nothing-left", listing) and time.monotonic() < deadline:
        listing = scripts.rabbitmqctl(
            "rabbitmqctl list_queues name messages_ready messages_unacknowledged"
        ).stdout
    assert_prints("hello-nothing-left", listing)


def test_transient_messages_in_a_classic_queue_do_not_survive_a_broker_restart(
    scripts, probe, broker
):
    succeeded(scripts.run("python hello_world/new_task.py --queue-type classic"))
    assert probe.depth("hello") == 1

    probe.close()
    restart(broker)

    after = type(probe)(broker.url)
    try:
        assert after.depth("hello") == 0  # the queue is durable and still there, empty
    finally:
        after.close()


def test_burst_worker_exits_when_queue_is_empty(scripts, probe):
    succeeded(scripts.run(FIFTEEN_MESSAGES))

    worker = scripts.start("python hello_world/worker.py --burst")

    assert worker.wait() == 0
    assert len(worker.matching("Received")) == 15
    assert worker.lines[-1] == " [*] Queue is empty, exiting"
    assert probe.depth("hello") == 0


def test_fake_work_has_a_bound_here_too(scripts, probe):
    """More than 60 dots is refused, not slept on; with auto-ack the message is gone already,
    so the worker says why and goes on."""
    worker = scripts.start_worker("python hello_world/worker.py")
    long_one = "Too long" + "." * 61

    sent = scripts.run(
        f'python hello_world/new_task.py "{long_one}" && python hello_world/new_task.py "Next."'
    )

    succeeded(sent)
    worker.wait_for(r"^ \[x\] Received 'Next\.'$")
    worker.wait_for(r"^ \[x\] Done$")
    assert worker.lines[1:3] == [
        f" [x] Received '{long_one}'",
        " [!] OverflowError: 61 dots: more than 60 s of work",
    ]
    assert probe.depth("hello") == 0
