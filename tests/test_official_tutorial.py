"""Side by side with RabbitMQ's own Python tutorial: its scripts declare 'hello' and
'task_queue' as durable quorum queues (tests/tutorial_peer.py does exactly what they do). This
repository's scripts declare them the same way, so a learner can mix the two on one broker, in
either order, and no queue has to be deleted."""

import re

import pytest
from conftest import eventually
from script_runner import succeeded

PEER = "python tests/tutorial_peer.py"
TASKS = ["First task.", "Second task..", "Third task."]


def assert_each_done_once(worker_output: list[str], prefix: str, messages: list[str]) -> None:
    received = sorted(
        line.removeprefix(prefix) for line in worker_output if line.startswith(prefix)
    )
    assert received == sorted(messages)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", ["tutorial", "repository"])
def test_the_tutorials_producer_feeds_this_worker(scripts, probe, first):
    """work_queue's worker does the tutorial's tasks; whoever declares task_queue first."""
    if first == "tutorial":
        succeeded(scripts.run(f'{PEER} send task_queue "A task from the tutorial."'))
    worker = scripts.start_worker("python work_queue/worker.py")
    for task in TASKS:
        succeeded(scripts.run(f'{PEER} send task_queue "{task}"'))
    tasks = ["A task from the tutorial.", *TASKS] if first == "tutorial" else TASKS
    worker.wait_for(r"^ \[x\] Done$", count=len(tasks))
    assert_each_done_once(worker.matching("Received"), " [x] Received ", [f"'{t}'" for t in tasks])
    assert probe.depth("task_queue") == 0
    assert probe.consumers("task_queue") == 1  # the same queue all along, never deleted


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", ["tutorial", "repository"])
def test_this_producer_feeds_the_tutorials_worker(scripts, probe, first):
    """The tutorial's worker does work_queue's tasks, acking each; whoever declares first."""
    if first == "repository":
        succeeded(scripts.run('python work_queue/new_task.py "A task from here."'))
    worker = scripts.start_worker(f"{PEER} work task_queue")
    for task in TASKS:
        succeeded(scripts.run(f'python work_queue/new_task.py "{task}"'))
    tasks = ["A task from here.", *TASKS] if first == "repository" else TASKS
    worker.wait_for(r"^ \[x\] Done$", count=len(tasks))
    assert_each_done_once(worker.matching("Received"), " [x] Received ", tasks)
    assert probe.depth("task_queue") == 0
    # The tutorial's worker prints Done, then acks: the last ack may still be on its way. At
    # prefetch 1 RabbitMQ sends the next task only once the last is acked, so one more: when
    # the worker has it, every task before was acked. Killed on it, only that one comes back.
    held = "Held when killed...."
    succeeded(scripts.run(f'python work_queue/new_task.py "{held}"'))
    worker.wait_for(rf"^ \[x\] Received {re.escape(held)}$")
    worker.kill()
    eventually(lambda: probe.depth("task_queue") == 1)
    assert [body for _, body in probe.get_all("task_queue")] == [held.encode()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("first", ["tutorial", "repository"])
def test_hello_goes_both_ways(scripts, probe, first):
    """Lesson 1 with the tutorial's send.py and receive.py, on the one 'hello' queue."""
    send = {"tutorial": f"{PEER} send hello", "repository": "python hello_world/new_task.py"}
    receive = {"tutorial": f"{PEER} work hello", "repository": "python hello_world/worker.py"}
    second = "repository" if first == "tutorial" else "tutorial"
    for sender, receiver in ((first, second), (second, first)):
        succeeded(scripts.run(f'{send[sender]} "From the {sender}"'))
        worker = scripts.start_worker(receive[receiver])
        worker.wait_for(rf"^ \[x\] Received '?From the {sender}'?$")
        worker.kill()
    assert probe.depth("hello") == 0
