"""Lesson 3, task_queue: every command of the README's task_queue section, run for real."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import UUID, eventually, queue_policy, send
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readme_output import assert_prints
from script_runner import REPO, succeeded

# Message bodies as any producer might send them: bytes, JSON, tasks good and bad. No
# 'sleep': a fuzzed sleep would take up to a minute.
fuzz_bodies = st.one_of(
    st.binary(max_size=64),
    st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=8),
            "type": st.sampled_from(["add", "mul", "wordcount", "nosuch"]),
            "args": st.lists(
                st.integers() | st.floats() | st.text(max_size=8) | st.booleans(), max_size=3
            ),
        }
    ).map(lambda fields: json.dumps(fields).encode()),
)


def test_add_then_read_the_result(scripts, probe, broker):
    worker = scripts.start_worker("python task_queue/worker.py")
    results = scripts.start_worker("python task_queue/results.py")

    sent = succeeded(scripts.run("python task_queue/new_task.py add 2 3"))
    assert_prints("task-sent", sent.stdout)
    task_id = re.search(rf"task id ({UUID})", sent.stdout)[1]
    worker.wait_for(r"^ \[x\] Done: ")
    results.wait_for(rf"^ \[x\] Task {task_id}: ")
    assert_prints("task-worker", worker.output)
    assert_prints("task-result", results.output)
    assert task_id in worker.output  # the same id all along
    assert probe.depth("results") == 0


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python task_queue/new_task.py mul 6 7", "mul(6, 7) = 42"),
        ("python task_queue/new_task.py add 0.5 2", "add(0.5, 2) = 2.5"),
        (
            'python task_queue/new_task.py wordcount "to be or not to be"',
            'wordcount("to be or not to be") = 6',
        ),
        ("python task_queue/new_task.py sleep 1", "sleep(1) = 1"),
    ],
)
def test_each_task_type(scripts, probe, command, expected):
    task_id = send(scripts, command).id

    worker = scripts.start("python task_queue/worker.py --burst")
    assert worker.wait() == 0
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0

    assert results.matching("Task ") == [f" [x] Task {task_id}: {expected}"]


def test_a_result_read_is_gone(scripts, probe):
    """A queue hands each message to one reader, then forgets it."""
    task_id = send(scripts, "python task_queue/new_task.py add 2 3").id
    assert scripts.start("python task_queue/worker.py --burst").wait() == 0

    first_reader = scripts.start("python task_queue/results.py --burst")
    assert first_reader.wait() == 0
    second_reader = scripts.start("python task_queue/results.py --burst")
    assert second_reader.wait() == 0

    assert first_reader.matching("Task ") == [f" [x] Task {task_id}: add(2, 3) = 5"]
    assert second_reader.matching("Task ") == []


def test_stdin_sends_many_tasks(scripts, probe):
    sent = scripts.run(
        r"""printf 'add 1 2\nmul 3 4\nwordcount "a b c"\n' | python task_queue/new_task.py -"""
    )
    succeeded(sent)
    assert re.fullmatch(
        r" \[x\] Sent 3 tasks in \d+\.\d\d s, each confirmed by the broker\n", sent.stdout
    )

    assert scripts.start("python task_queue/worker.py --burst").wait() == 0
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    assert [line.split(": ", 1)[1] for line in results.matching("Task ")] == [
        "add(1, 2) = 3",
        "mul(3, 4) = 12",
        'wordcount("a b c") = 3',
    ]


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (
            "python task_queue/new_task.py divide 1 2",
            "unknown task type 'divide' (known: add, mul, sleep, wordcount)",
        ),
        (
            "python task_queue/new_task.py add 1 2 3",
            "wrong arguments for add: too many positional arguments",
        ),
        ("python task_queue/new_task.py add two 3", "add: a must be float, got 'two'"),
        (
            "python task_queue/new_task.py add 2 3 --then mul 4 5",
            "wrong arguments for mul: too many positional arguments",
        ),
        (  # a traceback (OverflowError) before
            "python task_queue/new_task.py mul $(printf '9%.0s' $(seq 4000)) 1",
            "99999999999999999999... (4,000 characters) is out of range for a number",
        ),
        ("python task_queue/new_task.py add 1e400 1", "1e400 is out of range for a number"),
        ("python task_queue/new_task.py add -- -inf 1", "add: a must be float, got '-inf'"),
    ],
)
def test_the_producer_refuses_a_task_no_worker_could_run(scripts, probe, command, error):
    refused = scripts.run(command)

    assert refused.returncode == 2
    assert refused.stderr == f"error: {error}; nothing was sent\n"
    assert refused.stdout == ""
    assert probe.depth("tasks") is None  # it did not even connect


def test_a_value_that_looks_like_an_option_is_explained(scripts, probe):
    refused = scripts.run("python task_queue/new_task.py add -inf 1")

    assert refused.returncode == 2
    assert refused.stderr == (
        "error: unrecognized arguments: -inf 1 (a value that starts with '-' goes after --, as "
        "in: add -- -1e5 2) (see new_task.py --help)\n"
    )
    assert probe.depth("tasks") is None


def test_a_line_out_of_range_stops_the_producer_with_its_counts(scripts, probe):
    """Before, the reader thread died of an OverflowError and the producer waited forever."""
    huge = "1" + "0" * 400
    sent = scripts.run(
        f"printf 'add 1 2\\nadd {huge} 1\\nadd 3 4\\n' | python task_queue/new_task.py -",
        timeout=30,
    )

    assert sent.returncode == 1
    assert sent.stderr == (
        "error: 10000000000000000000... (401 characters) is out of range for a number "
        "(1 task was sent and confirmed before that)\n"
    )
    assert probe.depth("tasks") == 1  # add 3 4, after the bad line, was not sent


@pytest.mark.timeout(60)
def test_a_line_too_large_for_a_worker_is_refused_and_the_next_lines_are_sent(scripts, probe):
    """Refused at once, with the limit, counted, and skipped: a line far longer than any task
    is not even parsed (shlex took minutes on 2 MB), a 100 KB task is not sent."""
    huge = "wordcount '" + "word " * 400_000 + "'"  # 2,000,012 characters
    large = "wordcount '" + "word " * 20_000 + "'"  # a task of over 100,000 bytes
    lines = f"add 1 2\n{huge}\n{large}\nadd 3 4\n"
    done = subprocess.run(
        [sys.executable, "task_queue/new_task.py", "-"],
        input=lines,
        cwd=REPO,
        env=scripts.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    succeeded(done)
    assert done.stderr.splitlines() == [
        " [!] Line 2: a line of 2,000,012 characters: a task may be 65,536 bytes; not sent",
        " [!] Line 3: a task of 100,081 bytes: a worker takes at most 65,536; not sent",
    ]
    assert re.fullmatch(
        r" \[x\] Sent 2 tasks in \S+ s, each confirmed by the broker; 2 lines not sent\n",
        done.stdout,
    ), done.stdout
    eventually(lambda: probe.depth("tasks") == 2)


def test_a_producer_whose_terminal_goes_away_stops_with_its_counts(scripts, probe):
    """Its reader thread fails (the terminal closed under it: EIO); the producer stops at
    once, saying what the broker confirmed, instead of waiting forever for a dead thread."""
    controller, terminal = os.openpty()
    try:
        producer = subprocess.Popen(
            [sys.executable, "task_queue/new_task.py", "-"],
            cwd=REPO,
            env=scripts.env,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(terminal)
    try:
        os.write(controller, b"add 1 2\n")
        eventually(lambda: probe.depth("tasks") == 1)
    finally:
        os.close(controller)
    stdout, stderr = producer.communicate(timeout=30)

    assert producer.returncode == 1
    assert stdout == ""
    assert stderr.splitlines() == [
        " [*] Type one task per line; each is sent when you press Enter. Ctrl+D to finish.",
        "error: reading the input failed (OSError: [Errno 5] Input/output error) (1 task was "
        "sent and confirmed before that)",
    ]


def test_a_result_out_of_range_is_an_error_result_at_once_not_retried(scripts, probe):
    succeeded(scripts.run("python task_queue/new_task.py add 1e308 1e308"))

    worker = scripts.start("python task_queue/worker.py --burst")
    assert worker.wait() == 0
    reason = "BadTask: add(1e+308, 1e+308) = inf, which is out of range for a number"
    assert worker.matching(r"^ \[!\] Failed") == [f" [!] Failed: {reason}; moved to tasks.dlq"]
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    assert [line.split(": ", 1)[1] for line in results.matching("Task ")] == [
        f"add(1e+308, 1e+308) failed: {reason}"
    ]
    assert probe.depth("tasks.dlq") == 1


def test_a_result_rabbitmq_refuses_is_sent_again_on_a_new_connection_not_dead_lettered(
    scripts, probe
):
    """A nack of the worker's own publish is not the task's fault (seen on a channel that could
    not reach a quorum queue's new leader: it refused every result). The task is not acked:
    the worker starts again, and once RabbitMQ takes results again the result comes."""
    classic = {"QUEUE_TYPE": "classic"}  # quorum: the delivery limit would park it after 5
    probe.channel.queue_declare("results", durable=True)  # classic, as the worker declares it
    refuse = '{"max-length": 0, "overflow": "reject-publish"}'
    with queue_policy(scripts, "refuse", "^results$", refuse):
        send(scripts, "python task_queue/new_task.py add 1 2", env=classic)
        worker = scripts.start("python task_queue/worker.py", env=classic)
        worker.wait_for(
            r"^ \[!\] RabbitMQ refused a message for 'results' before the ack: RabbitMQ will "
            r"deliver that message again$"
        )
        worker.wait_for(r"^ \[!\] RabbitMQ refused a message for 'results'; reconnecting$")
    worker.wait_for(r"^ \[x\] Done: add\(1, 2\) = 3$")
    assert worker.matching("tasks.dlq|Failed|DROPPED") == []
    results = scripts.start("python task_queue/results.py --burst", env=classic)
    assert results.wait() == 0
    assert [line.split(": ", 1)[1] for line in results.matching("Task ")] == ["add(1, 2) = 3"]
    assert probe.depth("tasks") == 0
    assert probe.depth("tasks.dlq") in (0, None)


def test_the_readme_shows_the_refusal_of_an_unknown_type(scripts):
    refused = scripts.run("python task_queue/new_task.py divide 1 2")

    assert refused.returncode == 2
    assert_prints("task-refused", refused.stderr)


def publish_task(probe, task_id: str, task_type: str, args: list) -> str:
    """A task as another producer might send it, unchecked."""
    body = json.dumps({"id": task_id, "type": task_type, "args": args}).encode()
    probe.publish("tasks", body, message_id=task_id, content_type="application/json")
    return task_id


def test_bad_tasks_get_an_error_result_and_a_dead_letter(scripts, probe):
    worker = scripts.start_worker("python task_queue/worker.py")
    # From other producers: the worker trusts no message, checked by a producer or not.
    unknown = publish_task(probe, "bad-1", "divide", [1, 2])
    too_many = publish_task(probe, "bad-2", "add", [1, 2, 3])
    not_a_number = publish_task(probe, "bad-3", "add", ["two", 3])
    probe.publish("tasks", b'{"id": "raw-1", "type": "add"', message_id="raw-1")  # broken JSON
    probe.publish("tasks", b"\xff\xfe", message_id="raw-2")  # not UTF-8
    probe.publish("tasks", b" " * 2**20, message_id="raw-3")  # 1 MiB
    good = send(scripts, "python task_queue/new_task.py add 2 3").id

    worker.wait_for(r"^ \[x\] Done: add\(2, 3\) = 5$")  # the worker is still up
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0

    assert results.matching("Task ") == [
        f" [x] Task {unknown}: divide(1, 2) failed: BadTask: unknown task type 'divide' "
        "(known: add, mul, sleep, wordcount)",
        f" [x] Task {too_many}: add(1, 2, 3) failed: BadTask: wrong arguments for add: "
        "too many positional arguments",
        f' [x] Task {not_a_number}: add("two", 3) failed: BadTask: add: a must be float, '
        "got 'two'",
        " [x] Task raw-1: an undecodable task failed: BadTask: message body is not JSON "
        "(Expecting ',' delimiter: line 1 column 30 (char 29))",
        " [x] Task raw-2: an undecodable task failed: BadTask: message body is not UTF-8 text",
        " [x] Task raw-3: an undecodable task failed: BadTask: message body is 1048576 bytes; "
        "a task may be 65536",
        f" [x] Task {good}: add(2, 3) = 5",
    ]
    listed = succeeded(scripts.run("python work_queue/dead_letters.py --queue tasks"))
    assert listed.stdout.endswith(" [*] 6 dead letters in tasks.dlq\n")
    assert "failed: BadTask: unknown task type 'divide'" in listed.stdout
    # The whole task is shown, its type and arguments included; the 1 MiB body is cut.
    assert f'"id": "{unknown}", "type": "divide", "args": [1, 2]' in listed.stdout
    cut = "... (1,048,576 characters)' failed: BadTask: message body is 1048576 bytes"
    assert cut in listed.stdout
    dead = probe.get_all("tasks.dlq")
    assert [properties.message_id for properties, _ in dead] == [
        unknown,
        too_many,
        not_a_number,
        "raw-1",
        "raw-2",
        "raw-3",
    ]
    assert all(p.headers["x-original-queue"] == "tasks" for p, _ in dead)
    assert dead[0][1] == json.dumps({"id": unknown, "type": "divide", "args": [1, 2]}).encode()
    assert dead[3][1] == b'{"id": "raw-1", "type": "add"'
    assert probe.depth("tasks") == 0


def test_a_task_that_raises_is_retried_then_gets_an_error_result(scripts, probe):
    task_id = send(scripts, "python task_queue/new_task.py sleep 3600").id

    worker = scripts.start("python task_queue/worker.py --burst")
    assert worker.wait() == 0
    failure = " [!] Failed: ValueError: sleep takes 0 to 60 seconds; "
    assert worker.matching("Failed") == [
        failure + "retry in 2 s, as attempt 2 of 3",
        failure + "retry in 2 s, as attempt 3 of 3",
        failure + "moved to tasks.dlq after 3 attempts",
    ]
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    assert results.matching("Task ") == [
        f" [x] Task {task_id}: sleep(3600) failed: ValueError: sleep takes 0 to 60 seconds"
    ]
    assert probe.depth("tasks.dlq") == 1


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(fuzz_bodies, min_size=1, max_size=12))
def test_a_worker_settles_any_batch_of_messages_and_keeps_running(scripts, probe, batch):
    """Whatever bytes arrive, each message gets exactly one result and the worker goes on."""
    probe.declare("tasks")
    for number, body in enumerate(batch):
        probe.publish("tasks", body, message_id=f"fuzz-{number}")

    worker = scripts.start("python task_queue/worker.py --burst")

    assert worker.wait(timeout=60) == 0, worker.output
    assert "Traceback" not in worker.output
    results = [json.loads(body) for _, body in probe.get_all("results")]
    dead = probe.get_all("tasks.dlq")
    assert len(results) == len(batch)
    assert len(dead) == sum("error" in result for result in results)
    assert probe.depth("tasks") == 0


def test_requeue_moves_each_dead_letter_once_while_a_worker_keeps_dead_lettering(scripts, probe):
    """A worker sends each bad task straight back to tasks.dlq; --requeue must not take the
    letters it moved for new ones (it reported 5 moved for 3 before, and error results to match)."""
    probe.declare("tasks")
    for n in range(10):
        publish_task(probe, f"bad-{n}", "divide", [n, 2])  # to tasks: dead-lettered at once
    worker = scripts.start("python task_queue/worker.py")
    eventually(lambda: probe.depth("tasks.dlq") == 10)

    moved = succeeded(scripts.run("python work_queue/dead_letters.py --queue tasks --requeue"))
    listed = moved.stdout.splitlines()
    assert listed[-1] == " [*] 10 dead letters moved back to tasks"
    assert [re.search(r'"id": "(bad-\d)"', line)[1] for line in listed[:-1]] == [
        f"bad-{n}" for n in range(10)
    ]
    eventually(lambda: probe.depth("tasks.dlq") == 10)  # each failed once more, and is back
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    results = scripts.start("python task_queue/results.py --burst")
    assert results.wait() == 0
    assert len(results.matching("failed: BadTask: unknown task type 'divide'")) == 20
