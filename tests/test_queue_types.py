"""Queue types: quorum by default (declared as RabbitMQ's own tutorials declare it), classic one
flag away, and what a queue of the other type already there gets: one line that says what to
do and what deleting it would cost."""

import re

import pytest
from script_runner import succeeded

from rabbit_queues.delivery import DELIVERY_LIMIT


@pytest.mark.timeout(60)
def test_the_lesson_runs_the_same_on_a_classic_queue(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py --queue-type classic")
    for command in (
        'python work_queue/new_task.py --queue-type classic "First task."',
        'python work_queue/new_task.py --queue-type classic "This task will error."',
    ):
        succeeded(scripts.run(command))
    worker.wait_for(r"^ \[x\] Done$")
    worker.wait_for(r"moved to task_queue.dlq after 3 attempts", timeout=30)
    listed = scripts.run("python work_queue/dead_letters.py --queue-type classic")
    assert " failed: ValueError: task 'This task will error.' asked to fail (3 attempts)" in (
        listed.stdout
    )
    assert probe.consumers("task_queue") == 1


@pytest.mark.timeout(60)
def test_switching_types_names_every_queue_to_delete_and_what_it_holds(scripts, probe):
    # A classic run left task_queue, task_queue.retry and task_queue.dlq, and two tasks.
    scripts.start_worker("python work_queue/worker.py --queue-type classic").kill()
    for task in ("one", "two"):
        assert (
            scripts.run(f"python work_queue/new_task.py --queue-type classic {task}").returncode
            == 0
        )

    # Quorum, the default: refused, one queue at a time, each with RabbitMQ's reason and the
    # command that deletes it (and the messages it holds). Nothing is deleted behind the back.
    named = []
    while (refused := scripts.run("python work_queue/worker.py --burst")).returncode == 1:
        assert refused.stdout == ""
        clash = re.fullmatch(
            r"error: queue '([\w.]+)' already exists with other arguments \(RabbitMQ refused: "
            r"PRECONDITION_FAILED - inequivalent arg '[\w-]+' for queue '\1' in vhost "
            r"'/': received .* but current is .*\): declare "
            r"it as it is \(another --queue-type\?\), or delete it and the messages it holds: "
            r"(rabbitmqctl delete_queue \1)\n",
            refused.stderr,
        )
        assert clash is not None and len(named) < 3, refused.stderr
        if not named:
            assert probe.depth("task_queue") == 2  # still there, until the learner deletes it
        named.append(clash[1])
        succeeded(scripts.rabbitmqctl(clash[2]))

    assert named == ["task_queue", "task_queue.dlq", "task_queue.retry"]
    succeeded(refused)
    scripts.start_worker("python work_queue/worker.py")
    assert probe.consumers("task_queue") == 1


def test_a_queue_declared_with_other_arguments_gets_a_one_line_fix(scripts, probe):
    # As if another program had declared task_queue with an argument of its own.
    probe.channel.queue_declare(
        "task_queue", durable=True, arguments={"x-queue-type": "quorum", "x-max-length": 10}
    )
    probe.publish("task_queue", b"A task.")

    refused = scripts.run('python work_queue/new_task.py "Another task."')

    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "error: queue 'task_queue' already exists with other arguments (RabbitMQ refused: "
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'task_queue' in vhost "
        "'/': received none but current is "
    )
    assert refused.stderr.endswith(
        "): declare it as it is (another --queue-type?), or delete it and the messages it "
        "holds: rabbitmqctl delete_queue task_queue\n"
    )
    assert probe.depth("task_queue") == 1


@pytest.mark.timeout(90)
def test_a_task_that_kills_every_worker_is_dead_lettered_after_the_delivery_limit(scripts, probe):
    succeeded(scripts.run('python work_queue/new_task.py "Poison task...."'))
    kills = 0
    while True:
        worker = scripts.start_worker("python work_queue/worker.py")
        (seen,) = worker.wait_for(r"Received 'Poison task\.{4}'|moved to task_queue\.dlq")
        if seen[0].startswith("moved"):
            break
        worker.kill()  # it dies on it, unacknowledged: the quorum queue counts another return
        kills += 1
        assert kills <= DELIVERY_LIMIT, "the poison task was never dead-lettered"
    # Delivered once, then again after each death, up to the limit; then parked, not run.
    assert kills == DELIVERY_LIMIT
    assert worker.matching(r"^ \[!\]") == [
        f" [!] came back unacknowledged {DELIVERY_LIMIT} times: did it kill each worker that "
        "took it, or run past RabbitMQ's consumer_timeout?; moved to task_queue.dlq"
    ]
    assert not worker.matching("Received")
    assert probe.depth("task_queue") == 0
    listed = scripts.run("python work_queue/dead_letters.py")
    assert listed.stdout == (
        f" [x] 1: 'Poison task....' failed: came back unacknowledged {DELIVERY_LIMIT} times: "
        "did it kill each worker that took it, or run past RabbitMQ's consumer_timeout? "
        "(1 attempt)\n [*] 1 dead letter in "
        "task_queue.dlq\n"
    )
    assert worker.process.poll() is None  # and the worker goes on
