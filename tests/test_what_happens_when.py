"""docs/what-happens-when.md: the damage done for real, nothing lost."""

import signal
import subprocess
import sys

import pytest
from conftest import Probe, eventually, received, restart, send
from rabbitmq_node import LocalNode
from readme_output import assert_prints
from script_runner import REPO, succeeded


def test_killed_mid_task_with_kill_9_another_worker_does_it(scripts, probe):
    first = scripts.start_worker("python work_queue/worker.py")
    second = scripts.start_worker("python work_queue/worker.py")
    send(scripts, 'python work_queue/new_task.py "Long task....."')
    eventually(lambda: any(received(w) for w in (first, second)))
    busy, idle = (first, second) if received(first) else (second, first)

    busy.signal(signal.SIGKILL)

    idle.wait_for(r"^ \[x\] Received 'Long task\.\.\.\.\.'$", timeout=15)
    idle.wait_for(r"^ \[x\] Done$", timeout=15)
    idle.signal(signal.SIGTERM)
    assert idle.wait() == 0
    assert busy.wait() == -signal.SIGKILL
    assert probe.depth("task_queue") == 0  # with both gone, nothing unacked came back


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_stopped_mid_task_it_finishes_acks_and_exits_0(scripts, probe, stop):
    worker = scripts.start_worker("python work_queue/worker.py")
    send(scripts, 'python work_queue/new_task.py "Short task.."')
    worker.wait_for("Received 'Short task..'")

    worker.signal(stop)

    assert worker.wait() == 0
    assert worker.lines[-3:] == [
        " [*] Finishing the current message first (press CTRL+C again to quit now)",
        " [x] Done",
        " [*] Exiting",
    ]
    assert probe.depth("task_queue") == 0  # acked, not requeued
    assert "Traceback" not in worker.output


def test_ctrl_c_twice_quits_at_once_and_the_task_goes_back(scripts, probe):
    worker = scripts.start_worker("python work_queue/worker.py")
    send(scripts, 'python work_queue/new_task.py "Long task....."')
    worker.wait_for("Received 'Long task.....'")

    worker.signal(signal.SIGINT)
    worker.wait_for("Finishing the current message first")
    worker.signal(signal.SIGINT)

    assert worker.wait(timeout=10) == 1
    assert worker.lines[-1] == " [*] Interrupted"
    assert worker.matching(r"^ \[x\] Done$") == []  # it quit inside the task, not after it
    assert probe.depth("task_queue") == 1


@pytest.mark.long  # docs/what-happens-when.md in depth
def test_a_task_longer_than_the_heartbeat_is_done_once(scripts, probe, broker):
    """pika only sends heartbeats while a thread is inside pika: during the six-second task
    (three heartbeat timeouts) the worker's pump thread serves the connection."""
    url = broker.url + "?heartbeat=2"
    worker = scripts.start_worker(f"python work_queue/worker.py --url '{url}'")

    send(scripts, 'python work_queue/new_task.py "Six seconds......"')

    worker.wait_for(r"^ \[x\] Done$", timeout=20)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert received(worker) == ["Six seconds......"]
    assert "lost the connection" not in worker.output
    assert "Connection lost" not in worker.output
    assert probe.depth("task_queue") == 0


@pytest.mark.long  # docs/what-happens-when.md in depth
@pytest.mark.timeout(60)
def test_a_worker_whose_stderr_is_gone_keeps_its_heartbeats_and_finishes(scripts, probe, broker):
    """Its pump thread says ' [*] Finishing the current message first' on stderr; a closed
    stderr killed the thread (BrokenPipeError), and with it the heartbeats during the task."""
    url = broker.url + "?heartbeat=2"
    worker = subprocess.Popen(
        [sys.executable, "work_queue/worker.py", "--url", url],
        cwd=REPO,
        env=scripts.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None and worker.stderr is not None
    worker.stderr.close()  # as when the terminal or the log it wrote to goes away
    assert worker.stdout.readline() == " [*] Waiting for messages. To exit press CTRL+C\n"
    send(scripts, 'python work_queue/new_task.py "Six seconds......"')
    assert worker.stdout.readline() == " [x] Received 'Six seconds......'\n"

    worker.send_signal(signal.SIGTERM)  # mid-task: the pump thread tries to say so

    assert worker.wait(timeout=30) == 0
    assert worker.stdout.read().splitlines() == [" [x] Done", " [*] Exiting"]
    assert probe.depth("task_queue") == 0


@pytest.mark.long  # docs/what-happens-when.md in depth
def test_a_running_worker_rides_out_a_broker_restart(scripts, probe, broker):
    worker = scripts.start_worker("python work_queue/worker.py")
    send(scripts, 'python work_queue/new_task.py "First task..."')
    send(scripts, 'python work_queue/new_task.py "Second task."')
    send(scripts, 'python work_queue/new_task.py "Third task."')
    worker.wait_for("Received 'First task...'")
    probe.close()

    restart(broker)  # mid-task, with two tasks waiting

    worker.wait_for(
        r"^ \[!\] (lost the connection to RabbitMQ \(\w+\)|RabbitMQ closed the connection "
        r"\(320 CONNECTION_FORCED - [^()]+\)); reconnecting$"
    )
    worker.wait_for(
        r"^ \[\*\] Reconnected to amqp://guest:\*\*\*@127\.0\.0\.1:\d+/%2F \(attempt \d+\)$",
        timeout=60,
    )
    worker.wait_for("Received 'Third task.'", timeout=30)
    # Each done once; First ran twice (its first ack was lost, so that run printed no Done).
    worker.wait_for(r"^ \[x\] Done$", count=3, timeout=30)
    assert worker.process.poll() is None  # the same process, never restarted
    assert len(worker.matching(r"before the ack: RabbitMQ will deliver that message again$")) == 1
    assert sorted(received(worker)) == [
        "First task...",
        "First task...",
        "Second task.",
        "Third task.",
    ]
    after = Probe(broker.url)
    try:
        assert after.depth("task_queue") == 0
        assert after.consumers("task_queue") == 1
    finally:
        after.close()
    assert "Traceback" not in worker.output


@pytest.mark.long  # docs/what-happens-when.md in depth
def test_deleting_the_queue_under_a_worker_it_subscribes_again_and_goes_on(scripts, probe, broker):
    """RabbitMQ cancels the subscription to a deleted queue: the worker goes back to the top,
    as after any loss (connect, declare, consume), so the queue is there again, and so is a
    consumer, rather than a worker alive but idle."""
    worker = scripts.start_worker("python work_queue/worker.py")

    succeeded(scripts.rabbitmqctl("rabbitmqctl delete_queue task_queue"))

    worker.wait_for(r"^ \[\*\] Reconnected to ", timeout=30)
    assert_prints("queue-deleted", worker.output, broker)
    eventually(lambda: probe.consumers("task_queue") == 1)
    does_a_task_and_stops_cleanly(scripts, probe, worker)


def does_a_task_and_stops_cleanly(scripts, probe, worker) -> None:
    """The worker, back on its feet, does a new task and exits 0 on SIGTERM, queue empty."""
    send(scripts, 'python work_queue/new_task.py "A task."')
    worker.wait_for(r"^ \[x\] Done$")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert probe.depth("task_queue") == 0
    assert "Traceback" not in worker.output


# task_queue's replica on this node (a quorum queue is a Ra cluster), stopped or started again.
RA_SERVER = (
    'rabbitmqctl eval \'{ok, Q} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, '
    '<<"task_queue">>)), {Name, _} = amqqueue:get_pid(Q), ra:ACTION(quorum_queues, '
    "{Name, node()}).'"
)


@pytest.mark.long  # docs/what-happens-when.md in depth
def test_a_subscription_rabbitmq_fails_at_start_up_is_retried(scripts, probe, broker):
    """RabbitMQ closes the connection (541) when a consume reaches a quorum queue whose
    replica is not running: here stopped on purpose; in the wild, a queue deleted and
    declared again a moment before (as every test here does to task_queue). A loss like any
    other: the worker starts again from the top until the subscription holds."""
    probe.declare("task_queue")
    stopped = scripts.rabbitmqctl(RA_SERVER.replace("ACTION", "stop_server"))
    succeeded(stopped)
    try:
        worker = scripts.start("python work_queue/worker.py")
        # RabbitMQ 4.3 adds its reason: (541 INTERNAL_ERROR - failed consuming from quorum
        # queue 'task_queue' in vhost '/': noproc)
        worker.wait_for(
            r"^ \[!\] RabbitMQ closed the connection \(541 INTERNAL_ERROR( - [^()]+)?\); "
            r"reconnecting$"
        )
        worker.wait_for(r"^ \[!\] Reconnect attempt 1 failed: ")  # the replica is still down
    finally:
        started = scripts.rabbitmqctl(RA_SERVER.replace("ACTION", "restart_server"))
    succeeded(started)

    worker.wait_for(r"^ \[\*\] Reconnected to ", timeout=30)
    assert_prints("subscription-retried", worker.output, broker)
    does_a_task_and_stops_cleanly(scripts, probe, worker)


@pytest.mark.long  # docs/what-happens-when.md in depth
def test_the_password_never_shows_even_when_reconnecting(scripts, probe, broker):
    user, password = "learner", "Not-4-Your-Eyes"
    for command in (
        f"rabbitmqctl add_user {user} {password}",
        f"rabbitmqctl set_permissions {user} '.*' '.*' '.*'",
    ):
        succeeded(scripts.rabbitmqctl(command))
    url = broker.url.replace("guest:guest@", f"{user}:{password}@")
    worker = scripts.start_worker(f"python work_queue/worker.py --url '{url}'")

    succeeded(scripts.rabbitmqctl(f"rabbitmqctl close_all_user_connections {user} 'a test'"))

    worker.wait_for(rf"^ \[\*\] Reconnected to amqp://{user}:\*\*\*@", timeout=30)
    send(scripts, 'python work_queue/new_task.py "A task."')
    worker.wait_for(r"^ \[x\] Done$")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert password not in worker.output


@pytest.mark.long  # docs/what-happens-when.md in depth
@pytest.mark.timeout(120)
def test_a_task_past_the_consumer_timeout_goes_back_until_the_delivery_limit(scripts):
    """RabbitMQ takes back a task a worker holds unacknowledged longer than its consumer_timeout
    (here 3 s; 3.10 checks it once a minute unless channel_tick_interval is shorter): before
    4.3 it closes the worker's channel, since 4.3 it cancels the worker's subscription to the
    quorum queue. Either way a loss: the worker says the task went back instead of Done and
    starts again from the top. The quorum queue counts each return; at the delivery limit the
    worker parks the task in the dead-letter queue instead of running it again, and goes on."""
    node = LocalNode(
        extra_config="consumer_timeout = 3000\n",
        advanced_config="[{rabbit, [{channel_tick_interval, 1000}]}].\n",
    )
    try:
        node.start()
        scripts.env["AMQP_URL"] = node.url
        worker = scripts.start_worker("python work_queue/worker.py")
        send(scripts, 'python work_queue/new_task.py "Long task......"')
        send(scripts, 'python work_queue/new_task.py "Next task."')

        worker.wait_for(r"^ \[!\] came back unacknowledged 5 times: ", timeout=90)
        worker.wait_for(r"^ \[x\] Received 'Next task\.'$")
        worker.wait_for(r"^ \[x\] Done$")  # Next task's: the long one never acked
        lines = worker.lines
        first = lines.index(" [x] Received 'Long task......'")
        # What RabbitMQ said (a channel closed with PRECONDITION_FAILED - delivery
        # acknowledgement..., or a cancelled subscription) varies with its version; what the
        # worker does with it does not.
        assert lines[first + 1].startswith(" [!] RabbitMQ "), lines
        assert lines[first + 1].endswith(
            " before the ack: RabbitMQ will deliver that message again"
        ), lines
        assert lines[first + 2].startswith(" [!] RabbitMQ "), lines
        assert lines[first + 2].endswith("; reconnecting"), lines
        assert lines[first + 3].startswith(" [*] Reconnected to "), lines
        assert lines[first + 4] == " [x] Received 'Long task......'", lines
        assert worker.matching("came back unacknowledged") == [
            " [!] came back unacknowledged 5 times: did it kill each worker that took it, or "
            "run past RabbitMQ's consumer_timeout?; moved to task_queue.dlq"
        ]
        assert received(worker).count("Long task......") == 5  # then parked, not looped
        after = Probe(node.url)
        try:
            assert after.depth("task_queue") == 0
            assert after.consumers("task_queue") == 1  # consuming again, not alive but idle
            ((properties, body),) = after.get_all("task_queue.dlq")
            assert body == b"Long task......"
            assert properties.headers["x-dead-letter-reason"].startswith("came back")
        finally:
            after.close()
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        scripts.stop_all()
        node.remove()
