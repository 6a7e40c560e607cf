"""A soak: 1,000 tasks, three workers, one of them killed with SIGKILL and restarted about
every second. At-least-once means every task ends with a result, and nothing is left behind.
"""

import re
import signal
import time

import pytest
from script_runner import succeeded

# Long (a soak: 1,000 tasks, a worker killed every second): python -m pytest -m long.
pytestmark = [pytest.mark.long]

TASKS = 1000
RESULT = re.compile(r"^ \[x\] Task \S+: add\((\d+), 0\) = (\d+)$")


@pytest.mark.timeout(300)
def test_every_task_gets_a_result_while_workers_keep_dying(scripts, probe, tmp_path):
    tasks_file = tmp_path / "tasks.txt"
    tasks_file.write_text("".join(f"add {number} 0\n" for number in range(TASKS)))
    succeeded(scripts.run(f"python task_queue/new_task.py - < {tasks_file}"))
    assert probe.depth("tasks") == TASKS
    results = scripts.start_worker("python task_queue/results.py")
    workers = [scripts.start_worker("python task_queue/worker.py") for _ in range(3)]

    kills = 0
    deadline = time.monotonic() + 240
    while len(done(results)) < TASKS:
        assert time.monotonic() < deadline, f"{len(done(results))} of {TASKS} done"
        # Let it work for a second (or 50 more results), then kill the next worker in turn.
        results.wait_for_count(RESULT.pattern, len(results.lines) + 50, timeout=1)
        victim = kills % len(workers)
        workers[victim].kill()
        workers[victim] = scripts.start("python task_queue/worker.py")
        kills += 1

    assert done(results) == set(range(TASKS))
    assert kills >= 3
    print(f"{kills} kills, {len(results.matching(RESULT.pattern))} results for {TASKS} tasks")
    for worker in [*workers, results]:
        worker.wait_for(r"^ \[\*\] Waiting for")  # its SIGTERM handler is in place
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    for queue in ("tasks", "tasks.retry", "tasks.dlq", "results"):
        assert probe.depth(queue) == 0, queue  # with every consumer gone: nothing was unacked


def done(results):
    """The task numbers with a result so far (a task may be done twice: at-least-once)."""
    numbers = set()
    for line in results.matching(RESULT.pattern):
        number, value = RESULT.match(line).groups()
        assert number == value
        numbers.add(int(number))
    return numbers
