"""Queue types: quorum by default (declared as RabbitMQ's own tutorials declare it), classic one
flag away, and what a queue of the other type already there gets: one line that says what to
do and what deleting it would cost."""

import pytest

from rabbit_queues.delivery import DELIVERY_LIMIT


@pytest.mark.timeout(60)
def test_the_lesson_runs_the_same_on_a_classic_queue(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py --queue-type classic")
    for command in (
        'python work_queue/new_task.py --queue-type classic "First task."',
        'python work_queue/new_task.py --queue-type classic "This task will error."',
    ):
        sent = scripts.run(command)
        assert sent.returncode == 0, sent.stderr
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

    refused = scripts.run("python work_queue/worker.py")  # quorum, the default

    assert refused.returncode == 1
    assert refused.stdout == ""
    fix = (
        "rabbitmqctl delete_queue task_queue && rabbitmqctl delete_queue task_queue.retry && "
        "rabbitmqctl delete_queue task_queue.dlq"
    )
    assert refused.stderr == (
        "error: queue 'task_queue' already exists as a classic queue, and a queue's type cannot "
        "change: run with --queue-type classic to use it as it is, or delete task_queue, "
        "task_queue.retry, task_queue.dlq and run again, destroying the 2 messages they hold: "
        f"{fix}\n"
    )
    assert probe.depth("task_queue") == 2  # nothing was deleted behind the learner's back

    deleted = scripts.rabbitmqctl(fix)
    assert deleted.returncode == 0, deleted.stderr
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
    assert refused.stderr == (
        "error: queue 'task_queue' already exists with x-max-length 10 where this program "
        "declares none (another program, or an older version of this one, declared it), and "
        "a queue's arguments cannot change: delete it and run again, destroying the 1 message "
        "it holds: rabbitmqctl delete_queue task_queue\n"
    )
    assert probe.depth("task_queue") == 1


@pytest.mark.timeout(90)
def test_a_task_that_kills_every_worker_is_dead_lettered_after_the_delivery_limit(scripts, probe):
    sent = scripts.run('python work_queue/new_task.py "Poison task...."')
    assert sent.returncode == 0, sent.stderr
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
