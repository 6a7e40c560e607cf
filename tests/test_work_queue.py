"""Lesson 2, work_queue: every command of the README's work_queue section, run for real."""

import re
import shlex
import signal

import pytest
from conftest import Probe, crash, eventually, received, restart, send
from readme_output import assert_prints
from script_runner import succeeded

FAIR_DISPATCH = [
    'python work_queue/new_task.py "First task....."',
    'python work_queue/new_task.py "Second task."',
    'python work_queue/new_task.py "Third task."',
    'python work_queue/new_task.py "Fourth task."',
]


def test_two_workers_share_the_tasks_fairly(scripts, probe):
    """With prefetch_count=1 a task goes to whichever worker is free: while one is busy five
    seconds with the first task, the other does the three short ones (dealt in turn, the
    third would have waited behind the first)."""
    workers = [scripts.start_worker("python work_queue/worker.py") for _ in range(2)]
    assert probe.consumers("task_queue") == 2

    for command in FAIR_DISPATCH:
        send(scripts, command)

    for worker in workers:
        worker.wait_for(r"^ \[x\] Received '(First|Second) task\.")
    busy = next(w for w in workers if "First task....." in received(w))
    free = next(w for w in workers if w is not busy)
    free.wait_for(r"^ \[x\] Done$", count=3, timeout=20)
    busy.wait_for(r"^ \[x\] Done$", timeout=20)
    assert busy.lines == [
        " [*] Waiting for messages. To exit press CTRL+C",
        " [x] Received 'First task.....'",
        " [x] Done",
    ]
    assert_prints("fair-dispatch", free.output)
    assert probe.depth("task_queue") == 0


def test_a_failing_task_is_retried_then_dead_lettered_with_its_reason(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py")

    send(scripts, 'python work_queue/new_task.py "This task will error."')
    send(scripts, 'python work_queue/new_task.py "A good task."')

    worker.wait_for(r"^ \[!\] Failed: .* moved to task_queue\.dlq after 3 attempts$", timeout=30)
    assert_prints("retried-then-dead-lettered", "\n".join(worker.matching("This task will error")))
    # The good task did not wait behind the retries.
    failing = "This task will error."
    assert received(worker) == [failing, "A good task.", failing, failing]
    assert probe.depth("task_queue") == 0
    assert probe.depth("task_queue.retry") == 0
    ((properties, body),) = probe.get_all("task_queue.dlq")
    assert body == b"This task will error."
    assert properties.headers == {
        "x-attempts": 3,
        "x-dead-letter-reason": "ValueError: task 'This task will error.' asked to fail",
        "x-original-queue": "task_queue",
    }
    assert properties.delivery_mode == 2  # still persistent


def test_bad_bytes_are_dead_lettered_not_fatal(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py")

    probe.publish("task_queue", b"\xff\xfe not utf-8")
    send(scripts, 'python work_queue/new_task.py "A good task."')

    worker.wait_for(r"^ \[!\] UnicodeDecodeError: .*; moved to task_queue\.dlq$")
    worker.wait_for(r"^ \[x\] Done$")
    ((properties, body),) = probe.get_all("task_queue.dlq")
    assert body == b"\xff\xfe not utf-8"
    assert properties.headers["x-dead-letter-reason"].startswith("UnicodeDecodeError: ")


@pytest.mark.long  # a broker restart beyond the lesson's one
def test_persistent_tasks_survive_a_broker_restart(scripts, probe, broker):
    send(scripts, 'python work_queue/new_task.py "First task."')
    send(scripts, 'python work_queue/new_task.py "Second task.."')
    probe.close()

    restart(broker)

    worker = scripts.start("python work_queue/worker.py --burst")
    assert worker.wait(timeout=30) == 0
    assert received(worker) == ["First task.", "Second task.."]


def test_a_broker_restart_loses_the_transient_message_and_keeps_the_persistent_task(
    scripts, probe, broker
):
    """The README's restart step, the broker restarted for real: lesson 1's message, transient
    in a classic queue, is gone; lesson 2's task, persistent and confirmed, is done."""
    probe.declare("hello")  # as lesson 1 left it: a quorum queue
    succeeded(scripts.rabbitmqctl("rabbitmqctl delete_queue hello"))
    for command in (
        'python hello_world/new_task.py --queue-type classic "Lost in a restart."',
        'python work_queue/new_task.py "Kept through a restart."',
    ):
        succeeded(scripts.run(command))
    assert (probe.depth("hello"), probe.depth("task_queue")) == (1, 1)  # both there, before
    probe.close()

    restart(broker)  # docker compose restart rabbitmq, for the tests' own broker

    lost = scripts.start("python hello_world/worker.py --queue-type classic --burst")
    assert lost.wait(timeout=30) == 0
    assert_prints("restart-lost", lost.output)
    kept = scripts.start("python work_queue/worker.py --burst")
    assert kept.wait(timeout=30) == 0
    assert_prints("restart-kept", kept.output)


UNCONFIRMED = "seq 1000000 | python work_queue/send_without_confirms.py --queue-type classic"
CONFIRMED = "seq 1000000 | python work_queue/new_task.py --queue-type classic -"
COUNT_TASKS = "rabbitmqctl list_queues name messages"


@pytest.mark.long  # a broker restart beyond the lesson's one
@pytest.mark.timeout(300)
def test_a_broker_killed_mid_stream_keeps_every_confirmed_task_and_loses_unconfirmed_ones(
    scripts, probe, broker
):
    """The README's crash step, the broker killed (SIGKILL) for real while a producer sends a
    million tasks: without confirms the queue holds fewer than the producer sent, and it cannot
    say which; with confirms it holds every task confirmed, and at most the unconfirmed more."""
    probe.close()  # the lessons' queues deleted: task_queue is declared classic below

    stopped, counted, kept = kill_the_broker_while_it_sends(scripts, broker, UNCONFIRMED)
    assert_prints("crash-without-confirms", f"{stopped}\n{counted}")
    sent = int(re.search(r"after sending (\d+) tasks without confirms", stopped)[1])
    assert kept < sent, stopped

    deleted = scripts.rabbitmqctl("rabbitmqctl delete_queue task_queue")  # empty again
    succeeded(deleted)
    stopped, counted, kept = kill_the_broker_while_it_sends(scripts, broker, CONFIRMED)
    assert_prints("crash-with-confirms", f"{stopped}\n{counted}")
    found = re.search(r"\((\d+) tasks were sent and confirmed .*; (\d+) more", stopped)
    confirmed, unconfirmed = int(found[1]), int(found[2])
    assert confirmed <= kept <= confirmed + unconfirmed, stopped


def test_sending_without_confirms_sends_each_line_as_it_is(scripts, probe):
    """Its lines as new_task.py - cuts them (no line ending, blank lines skipped), but bytes
    that are not UTF-8 are sent too, unread: no traceback, nothing decoded."""
    sent = scripts.run(r"printf 'one\r\n\n\xff two\n' | python work_queue/send_without_confirms.py")

    succeeded(sent)
    said = " [x] Sent 2 tasks, none confirmed: RabbitMQ has them unless it went down\n"
    assert sent.stdout == said
    assert [body for _properties, body in probe.get_all("task_queue")] == [b"one", b"\xff two"]


def kill_the_broker_while_it_sends(scripts, broker, command: str) -> tuple[str, str, int]:
    """Start ``command``, kill the broker once 60,000 tasks are in the queue, start it again;
    return what the producer printed, what `rabbitmqctl list_queues` printed, and how many
    tasks the queue kept."""
    producer = scripts.start(f"bash -c {shlex.quote(command)}")
    counter = Probe(broker.url)
    eventually(lambda: (counter.depth("task_queue") or 0) >= 60_000, timeout=60)
    counter.close()

    crash(broker)  # docker compose kill rabbitmq; docker compose up -d --wait

    assert producer.wait(timeout=60) == 1, producer.output
    counted = succeeded(scripts.rabbitmqctl(COUNT_TASKS))
    kept = re.search(r"^task_queue\t(\d+)$", counted.stdout, re.M)
    assert kept is not None, counted.stdout
    return producer.output, counted.stdout, int(kept[1])


def test_stdin_then_burst_worker(scripts, probe):
    sent = scripts.run(r"printf 'one.\ntwo\nthree\n' | python work_queue/new_task.py -")

    succeeded(sent)
    assert re.fullmatch(
        r" \[x\] Sent 3 tasks in \d+\.\d\d s, each confirmed by the broker\n", sent.stdout
    )
    assert probe.depth("task_queue") == 3

    worker = scripts.start("python work_queue/worker.py --burst")

    assert worker.wait() == 0
    assert received(worker) == ["one.", "two", "three"]
    assert worker.lines[-1] == " [*] Queue is empty, exiting"
    assert probe.depth("task_queue") == 0


def test_rabbitmqctl_shows_ready_and_unacknowledged(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py")
    # Busy long enough for a quorum queue's figures, refreshed every 5 s, to show it.
    send(scripts, 'python work_queue/new_task.py "Busy task....................."')
    send(scripts, 'python work_queue/new_task.py "Waiting task."')
    send(scripts, 'python work_queue/new_task.py "Waiting task too."')
    worker.wait_for("Received 'Busy task")

    # list_queues reports statistics the broker refreshes every few seconds: poll it.
    listing = ""
    for _ in range(20):
        listing = scripts.rabbitmqctl(
            "rabbitmqctl list_queues name messages_ready messages_unacknowledged"
        ).stdout
        if re.search(r"^task_queue\t2\t1$", listing, re.M):
            break
    assert re.search(r"^task_queue\t2\t1$", listing, re.M), listing
    assert re.search(r"^task_queue\.dlq\t0\t0$", listing, re.M), listing


@pytest.mark.long  # a broker restart beyond the lesson's one
def test_a_producer_cut_off_mid_way_says_how_many_tasks_the_broker_confirmed(
    scripts, probe, broker
):
    producer = scripts.start("python work_queue/new_task.py -", stdin=True)
    producer.write("one\ntwo\nthree\n")  # and more to come: standard input stays open
    eventually(lambda: probe.depth("task_queue") == 3)
    probe.close()

    restart(broker)  # the producer's connection goes with it

    assert producer.wait() == 1
    assert re.fullmatch(
        # RabbitMQ's own reason when it closed the connection; else what pika saw
        r"error: (RabbitMQ closed the connection \(320 CONNECTION_FORCED - [^()]*\)|lost the "
        r"connection to RabbitMQ \(\w+\)) \(3 tasks were sent and confirmed before that\)",
        producer.output,
    )
    after = Probe(broker.url)
    try:
        assert after.depth("task_queue") == 3  # the confirmed ones are all there
    finally:
        after.close()


def test_dead_letters_are_listed_with_their_reason_and_moved_back_after_a_fix(scripts, probe):
    probe.declare("task_queue.dlq")
    probe.publish(
        "task_queue.dlq",
        b"This task will error.",
        headers={
            "x-dead-letter-reason": "ValueError: task 'This task will error.' asked to fail",
            "x-attempts": 3,
            "x-original-queue": "task_queue",
        },
    )

    listed = succeeded(scripts.run("python work_queue/dead_letters.py"))
    assert_prints("dead-letters-listed", listed.stdout)
    assert probe.depth("task_queue.dlq") == 1  # listing takes nothing away

    moved = succeeded(scripts.run("python work_queue/dead_letters.py --requeue"))
    assert_prints("dead-letters-requeued", moved.stdout)
    assert probe.depth("task_queue.dlq") == 0
    ((properties, body),) = probe.get_all("task_queue")
    assert body == b"This task will error."
    assert properties.headers == {}  # attempt 1 again
    assert properties.delivery_mode == 2


@pytest.mark.timeout(60)
def test_a_bulk_producer_stopped_mid_way_says_what_was_confirmed_and_what_may_be_queued(
    scripts, probe, tmp_path
):
    """`kill` (SIGTERM) reports like Ctrl+C: N confirmed, and M sent without a confirm, which
    may or may not be in the queue. Whatever arrived, the queue holds between N and N + M."""
    lines = tmp_path / "tasks.txt"
    lines.write_text("".join(f"task {n}\n" for n in range(300_000)))
    producer = scripts.start(f"bash -c 'exec python work_queue/new_task.py - < {lines}'")
    eventually(lambda: (probe.depth("task_queue") or 0) > 20_000, timeout=30)

    producer.signal(signal.SIGTERM)

    assert producer.wait() == 1
    stopped = re.fullmatch(
        r"error: interrupted \((\d+) tasks were sent and confirmed before that"
        r"(?:; (\d+) more were sent without a confirm: they may or may not be in the queue "
        r"\(its depth tells\))?\)",
        producer.output,
    )
    assert stopped, producer.output
    confirmed, unconfirmed = int(stopped[1]), int(stopped[2] or 0)
    # The queue held over 20,000 before the signal, and only what was sent can be in it; how many
    # of those were confirmed by then depends on how far the broker's disk writes lagged.
    assert confirmed > 0 and 20_000 < confirmed + unconfirmed < 300_000
    eventually(lambda: probe.depth("task_queue") >= confirmed)  # all the confirmed ones
    assert probe.depth("task_queue") <= confirmed + unconfirmed  # and no more than was sent
