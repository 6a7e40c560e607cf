"""`python demo.py <lesson>`: three workers and a producer as real processes, one worker
killed mid-task; its final table must add up, and nothing may be left running."""

import re
import signal
from pathlib import Path

import pytest
from readme_output import assert_prints
from script_runner import succeeded

SUMMARY = re.compile(
    r"^(?P<sent>\d+) tasks sent, (?P<done>\d+) done, (?P<redelivered>\d+) redelivered, "
    r"(?P<lost>\d+) lost, (?P<left>\d+) left in '(?P<queue>\S+)'$",
    re.MULTILINE,
)

# Long (the demo: three workers and a producer per lesson): python -m pytest -m long.
pytestmark = [pytest.mark.long]
WORKER_ROW = re.compile(r"^(worker-\d)\s+(\d+)\s+(\d+)(?:   killed during '(.*)')?$", re.MULTILINE)
QUEUE = {"hello_world": "hello", "work_queue": "task_queue", "task_queue": "tasks"}


def table(output: str) -> tuple[dict[str, int], list[tuple[str, int, int, str]]]:
    summary = SUMMARY.search(output)
    assert summary is not None, output
    counts = {key: int(value) for key, value in summary.groupdict().items() if key != "queue"}
    rows = [
        (name, int(took), int(done), killed)
        for name, took, done, killed in WORKER_ROW.findall(output)
    ]
    return counts, rows


def assert_no_process_left(output: str) -> None:
    pids = re.findall(r"\(pid (\d+)\)", output)
    assert len(pids) >= 4, output  # three workers and a producer at least
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still running"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "command",
    ["python demo.py hello_world", "python demo.py work_queue", "python demo.py task_queue"],
)
def test_the_demo_runs_a_lesson_end_to_end_and_its_table_adds_up(scripts, probe, command):
    lesson = command.split()[-1]
    demo = scripts.run(command, timeout=100)
    succeeded(demo)
    assert "Traceback" not in demo.stdout + demo.stderr
    counts, rows = table(demo.stdout)

    assert counts["sent"] == 12
    assert len(rows) == 3
    killed = [row for row in rows if row[3]]
    assert len(killed) == 1, rows  # one worker killed, in the middle of a task it never finished
    _, took, done, task = killed[0]
    assert done == took - 1
    # Each task done once: by the workers' own counts, the done column adds up.
    assert sum(row[2] for row in rows) == counts["done"] == counts["sent"] - counts["lost"]
    assert counts["left"] == 0, demo.stdout
    assert probe.depth(QUEUE[lesson]) == 0
    assert probe.consumers(QUEUE[lesson]) == 0  # every worker is gone
    if lesson == "hello_world":
        # Auto-ack: the killed worker's task and those pushed to it before are lost.
        assert counts["lost"] >= 1 and counts["redelivered"] == 0
        assert f"lost: '{task}'" in demo.stdout
    else:
        assert counts["lost"] == 0 and counts["redelivered"] == 1
        redelivery = re.search(
            rf"^(worker-\d) \| \[x\] Received {re.escape(task)}.*<- redelivered",
            demo.stdout.replace("'", ""),
            re.MULTILINE,
        )
        assert redelivery is not None and redelivery.group(1) != killed[0][0], demo.stdout
    if lesson == "work_queue":
        assert_prints("demo", demo.stdout, scripts.broker)
    if lesson == "task_queue":
        assert len(re.findall(r"^results  \| \[x\] Task \S+: ", demo.stdout, re.MULTILINE)) >= 12
    assert_no_process_left(demo.stdout)


@pytest.mark.timeout(90)
def test_ctrl_c_stops_the_demo_cleanly_and_every_task_is_done_or_still_queued(scripts, probe):
    demo = scripts.start("python demo.py work_queue")
    demo.wait_for(r"kill -9 \d+: worker-\d dies")
    demo.wait_for(r"<- redelivered")
    demo.signal(signal.SIGINT)  # what Ctrl+C sends (the workers have sessions of their own)
    assert demo.wait(timeout=30) == 130
    output = demo.output
    assert "Traceback" not in output
    summary = re.search(
        r"^12 tasks sent, (\d+) done, 1 redelivered; interrupted: (\d+) left in "
        r"'task_queue' for the next worker$",
        output,
        re.MULTILINE,
    )
    assert summary is not None, output
    done, left = map(int, summary.groups())
    assert done + left == 12  # every task done, or waiting in the queue: none lost
    assert probe.depth("task_queue") == left
    assert probe.consumers("task_queue") == 0
    assert_no_process_left(output)


@pytest.mark.timeout(60)
def test_the_demo_refuses_a_queue_with_old_tasks_and_starts_nothing(scripts, probe):
    succeeded(scripts.run('python work_queue/new_task.py "Old task."'))
    demo = scripts.run("python demo.py work_queue")
    assert demo.returncode == 1
    assert demo.stderr == (
        "error: queue 'task_queue' holds 1 message from before, and the demo counts every "
        "task: do them first (python work_queue/worker.py --burst) or drop them (rabbitmqctl "
        "purge_queue task_queue)\n"
    )
    assert "$ python" not in demo.stdout  # no process started
    assert probe.depth("task_queue") == 1


@pytest.mark.timeout(60)
def test_the_demo_refuses_to_share_its_queue_with_another_worker(scripts, probe):
    scripts.start_worker("python work_queue/worker.py")
    demo = scripts.run("python demo.py work_queue")
    assert demo.returncode == 1
    assert "1 consumer(s) already take from 'task_queue' (a worker in another terminal?)" in (
        demo.stderr
    )
    assert probe.consumers("task_queue") == 1  # the other worker is untouched
