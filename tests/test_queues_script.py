"""`python queues.py`: the columns of `rabbitmqctl list_queues`, ready and consumers from
passive declares (exact, at once), unacknowledged from the management API when it answers for
the same broker ('?' otherwise); `--watch` follows them as workers run."""

import re
import signal

import pytest
from conftest import eventually
from rabbitmq_node import LocalNode, free_port
from readme_output import assert_prints
from script_runner import succeeded

LONG_TASK = "Long task " + "." * 60  # holds the worker (and the task unacked) for a minute


def row(name: str, ready: int, unacked: int | str, consumers: int) -> str:
    """A regex for one line of the table."""
    return rf"^{name}\s+{ready}\s+{'[?]' if unacked == '?' else unacked}\s+{consumers}$"


def send_three_tasks(scripts) -> None:
    for task in (LONG_TASK, "Second task.", "Third task."):
        succeeded(scripts.run(f'python work_queue/new_task.py "{task}"'))


@pytest.mark.timeout(90)
def test_queues_shows_waiting_and_unacked_tasks_from_the_management_api(scripts, probe):
    if scripts.broker.management_url is None:
        pytest.skip(
            f"no management API known for a {scripts.broker.kind} broker: set MANAGEMENT_URL"
        )

    # With its metrics collection off (a deprecated feature in RabbitMQ 4, denied in the
    # strict pass), the API lists queues without figures: unacked is then unknown, '?'.
    def unacked(count: int) -> int | str:
        return count if scripts.broker.management_metrics else "?"

    once = succeeded(scripts.run("python queues.py"))
    assert (
        "unacknowledged as RabbitMQ last collected them, every 5 s by default (the management "
        f"API at {scripts.broker.management_url})"
    ) in once.stdout
    assert "none of the lessons' queues exists yet" in once.stdout

    watch = scripts.start("python queues.py --watch")
    send_three_tasks(scripts)
    # RabbitMQ refreshes the API's figures on a timer (0.5 s on the test broker): wait for them.
    watch.wait_for(row("task_queue", 3, unacked(0), 0), timeout=20)
    worker = scripts.start_worker("python work_queue/worker.py")
    worker.wait_for(r"Received 'Long task")
    watch.wait_for(row("task_queue", 2, unacked(1), 1), timeout=20)  # the long task, unacked
    watch.wait_for(row("task_queue.dlq", 0, unacked(0), 0))
    watch.signal(signal.SIGINT)  # Ctrl+C ends --watch
    assert watch.wait() == 0
    assert "Traceback" not in watch.output

    once = scripts.run("python queues.py")
    header = ["name", "messages_ready", "messages_unacknowledged", "consumers"]
    assert header in [line.split() for line in once.stdout.splitlines()]
    if scripts.broker.management_metrics:  # what the README shows, on a default broker
        assert_prints("queues", once.stdout, scripts.broker)


@pytest.mark.long  # queues.py's figures in depth
@pytest.mark.timeout(90)
def test_queues_never_shows_a_figure_the_management_api_does_not_give(scripts):
    """RabbitMQ 4 deprecates the API's metrics; without them it lists names only."""
    node = LocalNode(extra_config="management_agent.disable_metrics_collector = true\n")
    try:
        node.start()
        env = {"AMQP_URL": node.url, "MANAGEMENT_URL": node.management_url}
        for task in ("First task.", "Second task."):
            succeeded(scripts.run(f'python work_queue/new_task.py "{task}"', env=env))
        once = scripts.run("python queues.py", env=env)
    finally:
        node.remove()
    succeeded(once)
    assert once.stdout.splitlines()[1] == (
        "unacknowledged as RabbitMQ last collected them, every 5 s by default (the management "
        f"API at {node.management_url}); '?': not collected yet, or its metrics collection is off"
    )
    assert re.search(row("task_queue", 2, "?", 0), once.stdout, re.M), once.stdout


@pytest.mark.timeout(90)
def test_queues_falls_back_to_passive_declares_without_the_management_api(scripts, probe):
    nowhere = f"http://127.0.0.1:{free_port()}/"
    env = {"MANAGEMENT_URL": nowhere}
    send_three_tasks(scripts)
    once = succeeded(scripts.run("python queues.py", env=env))
    assert (
        f"unacknowledged '?': the management API at {nowhere} did not answer: connection refused"
    ) in once.stdout
    lines = once.stdout.splitlines()
    assert any(re.fullmatch(row("task_queue", 3, "?", 0), line) for line in lines), once.stdout

    scripts.env["MANAGEMENT_URL"] = nowhere
    worker = scripts.start_worker("python work_queue/worker.py")
    worker.wait_for(r"Received 'Long task")
    watch = scripts.start("python queues.py --watch")
    watch.wait_for(row("task_queue", 2, "?", 1))  # passive declares: exact, at once
    watch.wait_for(row("task_queue.retry", 0, "?", 0))
    watch.signal(signal.SIGINT)
    assert watch.wait() == 0


@pytest.mark.timeout(30)
def test_queues_says_in_one_line_when_the_broker_is_unreachable(scripts):
    port = free_port()
    nowhere = {
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        "MANAGEMENT_URL": f"http://127.0.0.1:{port}/",
    }
    result = scripts.run("python queues.py", env=nowhere)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach RabbitMQ at 127.0.0.1:{port} (")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("given", "error"),
    [
        ("localhost:15672", "localhost:15672/: expected http://host:15672/, or https://"),
        (
            "http://admin:s3cret@localhost:15672",
            "http://admin:***@localhost:15672/: it must not hold a user (the API is asked with "
            "the AMQP URL's)",
        ),
        ("http://[::1", "http://[::1/: Invalid IPv6 URL"),
    ],
)
def test_queues_refuses_a_management_url_it_cannot_use_in_one_line(scripts, given, error):
    port = free_port()  # said before connecting to anything
    env = {"AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/%2F", "MANAGEMENT_URL": given}

    result = scripts.run("python queues.py", env=env)

    assert (result.returncode, result.stderr) == (
        1,
        f"error: invalid management API URL {error}; check --management-url or the "
        "MANAGEMENT_URL environment variable\n",
    )


@pytest.mark.long  # queues.py's figures in depth
@pytest.mark.timeout(90)
def test_queues_never_shows_another_brokers_figures(scripts):
    """A management API that answers for another broker (a second RabbitMQ on the host, on
    15672) was shown as if it were the AMQP URL's: queues.py falls back, saying so."""
    if scripts.broker.management_url is None:
        pytest.skip(f"no management API known for a {scripts.broker.kind} broker")
    other_api = scripts.broker.management_url  # the tests' broker: none of the tasks below
    node = LocalNode()
    try:
        node.start()
        env = {"AMQP_URL": node.url, "MANAGEMENT_URL": other_api}
        for task in ("First task.", "Second task.", "Third task."):
            succeeded(scripts.run(f'python work_queue/new_task.py "{task}"', env=env))
        once = scripts.run("python queues.py", env=env)
    finally:
        node.remove()

    succeeded(once)
    assert re.search(
        rf"^unacknowledged '\?': the management API at {re.escape(other_api)} belongs to another "
        rf"broker: its cluster is '[^']+', the AMQP URL's '{re.escape(node.name.split('@')[0])}@"
        r"[^']+'$",
        once.stdout,
        re.M,
    ), once.stdout
    assert re.search(row("task_queue", 3, "?", 0), once.stdout, re.M), once.stdout


@pytest.mark.long  # queues.py's figures in depth
@pytest.mark.timeout(90)
def test_right_after_a_send_and_a_delivery_ready_and_consumers_are_exact(scripts):
    """On a broker with RabbitMQ's default statistics interval (5 s) the management API's
    figures lag: queues.py showed 'task_queue 0 0 0' right after a send, a worker busy. Ready
    and consumers now come from passive declares, exact at once; the line above the table
    says unacknowledged lags."""
    node = LocalNode(extra_config="collect_statistics_interval = 5000\n")  # RabbitMQ's default
    try:
        node.start()
        env = {"AMQP_URL": node.url, "MANAGEMENT_URL": node.management_url}
        worker = scripts.start("python work_queue/worker.py", env=env)
        worker.wait_for(r"^ \[\*\] Waiting for")
        # Once RabbitMQ has collected the idle queue's figures, they are what it shows until
        # its next collection, up to 5 s later (none where metrics collection is denied).
        eventually(
            lambda: (
                re.search(
                    r"^task_queue\s+0\s+(0|\?)\s+1$",  # '?': metrics collection denied
                    scripts.run("python queues.py", env=env).stdout,
                    re.M,
                )
                is not None
            ),
            timeout=30,
        )
        for task in (LONG_TASK, "Second task.", "Third task."):
            succeeded(scripts.run(f'python work_queue/new_task.py "{task}"', env=env))
        worker.wait_for(r"Received 'Long task")

        once = succeeded(scripts.run("python queues.py", env=env))
        assert once.stdout.splitlines()[1].startswith(
            "unacknowledged as RabbitMQ last collected them, every 5 s by default (the "
            f"management API at {node.management_url})"
        )
        assert re.search(r"^task_queue\s+2\s+(\d+|\?)\s+1$", once.stdout, re.M), once.stdout
    finally:
        scripts.stop_all()
        node.remove()
