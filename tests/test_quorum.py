"""The work queue as a quorum queue (`--queue-type quorum` or QUEUE_TYPE=quorum), on one node:
the same lesson, with the queue's delivery limit as the last line of defence against a task
that kills every worker that takes it."""

import pytest

from rabbit_queues.queues import DELIVERY_LIMIT


@pytest.mark.timeout(60)
def test_the_lesson_runs_the_same_on_a_quorum_queue(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py --queue-type quorum")
    for command in (
        'python work_queue/new_task.py --queue-type quorum "First task."',
        'python work_queue/new_task.py --queue-type quorum "This task will error."',
    ):
        sent = scripts.run(command)
        assert sent.returncode == 0, sent.stderr
    worker.wait_for(r"^ \[x\] Done$")
    # Retried through task_queue.retry (a quorum queue whose messages expire back), then
    # dead-lettered with its reason, as with classic queues.
    worker.wait_for(r"moved to task_queue.dlq after 3 attempts", timeout=30)
    listed = scripts.run("python work_queue/dead_letters.py --queue-type quorum")
    assert " failed: ValueError: task 'This task will error.' asked to fail (3 attempts)" in (
        listed.stdout
    )
    # The queue type is the declaration's: a classic declaration of the same queue is refused.
    classic = scripts.run('python work_queue/new_task.py --queue-type classic "x"')
    assert classic.returncode == 1
    assert "(another --queue-type?)" in classic.stderr


@pytest.mark.timeout(90)
def test_a_task_that_kills_every_worker_is_dead_lettered_by_the_delivery_limit(scripts, probe):
    sent = scripts.run('QUEUE_TYPE=quorum python work_queue/new_task.py "Poison task...."')
    assert sent.returncode == 0, sent.stderr
    kills = 0
    scripts.env["QUEUE_TYPE"] = "quorum"
    for _ in range(DELIVERY_LIMIT + 3):
        if probe.depth("task_queue.dlq"):
            break
        worker = scripts.start("python work_queue/worker.py")
        worker.wait_for(r"^ \[\*\] Waiting for")
        if worker.wait_for_count(r"Received 'Poison task....'", 1, timeout=5):
            kills += 1  # it dies on it, unacknowledged: RabbitMQ counts another delivery
        worker.kill()
    # Delivered once, then again after each death up to the limit.
    assert kills == DELIVERY_LIMIT + 1
    assert probe.depth("task_queue") == 0
    listed = scripts.run("python work_queue/dead_letters.py")
    assert listed.stdout == (
        f" [x] 1: 'Poison task....' failed: delivered more than {DELIVERY_LIMIT} times and "
        "never acknowledged (the queue's x-delivery-limit): did it kill each worker that took "
        "it?\n [*] 1 dead letters in task_queue.dlq\n"
    )
