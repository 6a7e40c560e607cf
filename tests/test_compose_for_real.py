"""docker-compose.yml run for real, with the commands the README and docs/ give, as a learner
runs them: `docker compose up -d` and healthy, the lessons' scripts at their default URL
(localhost:5672), lesson 2's restart, a killed broker, `docker compose exec rabbitmq rabbitmqctl
...`, durable data across `down` and `up`, the demo profile and the cluster profile.

It needs a Docker engine whose published ports are this test's localhost, and no other broker
there: tests/with-docker.sh gives it one in a network namespace of its own (CI runs it so); on a
machine with Docker and port 5672 free, RABBIT_QUEUES_COMPOSE=1 runs it with that engine and the
real images.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BrokerUnderTest, Scripts, eventually
from readme_output import assert_prints
from script_runner import RunningScript, succeeded

from rabbit_queues.connection import DEFAULT_URL

# Long (the compose file's brokers, built and started for real): python -m pytest -m long. One
# process runs them in order: they share the compose project.
pytestmark = [pytest.mark.long, pytest.mark.broker, pytest.mark.xdist_group("compose")]

# docs/cluster.md's lines for a terminal of the cluster's, as given there
IN_THE_CLUSTER = "\n".join(
    [
        "export AMQP_URL=amqp://guest:guest@localhost:5673/%2F,amqp://guest:guest@localhost:5674/%2F,amqp://guest:guest@localhost:5675/%2F",
        "export QUEUE_TYPE=quorum",
        "export MANAGEMENT_URL=http://localhost:15673/",
    ]
)
THOUSAND_TASKS = (
    'for i in $(seq 1000); do echo "sleep 0.01"; done | python task_queue/new_task.py -'
)
SECOND_WORKER = "AMQP_URL=amqp://guest:guest@localhost:5674/%2F,amqp://guest:guest@localhost:5675/%2F,amqp://guest:guest@localhost:5673/%2F python task_queue/worker.py"  # noqa: E501
EVERY_PROFILE = "docker compose --profile demo --profile cluster"


def _why_not_here() -> str | None:
    if not (os.environ.get("RABBIT_QUEUES_NETNS") or os.environ.get("RABBIT_QUEUES_COMPOSE")):
        return (
            "docker-compose.yml runs for real under tests/with-docker.sh (as CI runs it), or with "
            "RABBIT_QUEUES_COMPOSE=1 where Docker may publish localhost:5672"
        )
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 5672)) == 0:
            return "something already listens on localhost:5672, where the compose broker goes"
    return None


class Learner(Scripts):
    """Runs README lines as a learner's terminal would: no AMQP_URL (the scripts' default,
    localhost:5672), `python` the tests' interpreter; compose commands get minutes."""

    def __init__(self, bin_dir: Path) -> None:
        super().__init__(BrokerUnderTest(url=DEFAULT_URL, kind="docker compose"), bin_dir)
        del self.env["AMQP_URL"]

    def run(
        self, command: str, *, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return super().run(command, env=env, timeout=timeout)

    def start_in_the_cluster(self, command: str) -> RunningScript:
        """A script started in a terminal where docs/cluster.md's exports were typed (bash
        then becomes the script: `exec`, after the line's own variables, if any)."""
        variables, python, script = command.partition("python ")
        return self.start(f"bash -c '{IN_THE_CLUSTER}\n{variables}exec {python}{script}'")

    def ready(self, queue: str, service: str = "rabbitmq") -> int | None:
        """Messages ready in ``queue``, as `rabbitmqctl list_queues` in the container says."""
        listed = self.run(
            f"docker compose exec -T {service} rabbitmqctl -q list_queues name messages"
        )
        rows = dict(line.split("\t") for line in listed.stdout.splitlines() if "\t" in line)
        return int(rows[queue]) if queue in rows else None

    def healthy(self, *services: str) -> bool:
        listed = self.run("docker compose --profile cluster ps --format json")
        states = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
        health = {state["Service"]: state.get("Health") for state in states}
        return all(health.get(service) == "healthy" for service in services)


@pytest.fixture(scope="module")
def learner(tmp_path_factory) -> Iterator[Learner]:
    if why := _why_not_here():
        pytest.skip(why)
    learner = Learner(tmp_path_factory.mktemp("bin"))
    succeeded(learner.run(f"{EVERY_PROFILE} down -v --remove-orphans"))  # a clean start
    try:
        yield learner
    finally:
        learner.stop_all()
        learner.run(f"{EVERY_PROFILE} down -v --remove-orphans")


@pytest.mark.timeout(300)
def test_docker_compose_up_starts_a_broker_that_becomes_healthy_with_the_lessons_policies(learner):
    succeeded(learner.run("docker compose up -d"))

    eventually(lambda: learner.healthy("rabbitmq"), timeout=180)
    policies = succeeded(learner.run("docker compose exec rabbitmq rabbitmqctl -q list_policies"))
    assert len(re.findall(r"\blessons-", policies.stdout)) == 4, policies.stdout


@pytest.mark.timeout(180)
def test_the_scripts_reach_it_at_their_default_url_and_rabbitmqctl_shows_the_queues(learner):
    sent = succeeded(learner.run('python work_queue/new_task.py "First task."'))
    assert sent.stdout == " [x] Sent 'First task.'\n"
    listed = "docker compose exec rabbitmq rabbitmqctl list_queues name messages_ready messages_unacknowledged"  # noqa: E501
    eventually(  # RabbitMQ's statistics lag, as the README says
        lambda: re.search(r"(?m)^task_queue\t1\t0$", learner.run(listed).stdout) is not None,
        timeout=30,
    )
    worker = succeeded(learner.run("python work_queue/worker.py --burst"))
    assert " [x] Received 'First task.'" in worker.stdout
    shown = succeeded(learner.run("python queues.py"))
    assert "amqp://guest:***@localhost:5672/%2F" in shown.stdout
    assert "the management API at http://localhost:15672/" in shown.stdout


@pytest.mark.timeout(300)
def test_the_readmes_restart_keeps_the_persistent_task(learner):
    """Lesson 2's restart step with Docker, line by line as the README gives it."""
    for command in (
        'python work_queue/new_task.py "Kept through a restart."',
        "docker compose restart rabbitmq",
        "docker compose up -d --wait",
    ):
        succeeded(learner.run(command))
    kept = succeeded(learner.run("python work_queue/worker.py --burst"))
    assert_prints("restart-kept", kept.stdout)


@pytest.mark.timeout(300)
def test_lesson_1s_transient_message_is_lost_in_a_restart(learner):
    """docs/what-happens-when.md's restart of lesson 1, with Docker, line by line, after
    lesson 1 made its quorum 'hello'."""
    succeeded(learner.run("python hello_world/new_task.py"))
    for command in (
        "docker compose exec rabbitmq rabbitmqctl delete_queue hello",
        'python hello_world/new_task.py --queue-type classic "Lost in a restart."',
        "docker compose restart rabbitmq",
        "docker compose up -d --wait",
    ):
        succeeded(learner.run(command))
    lost = succeeded(learner.run("python hello_world/worker.py --queue-type classic --burst"))
    assert_prints("restart-lost", lost.stdout)
    succeeded(learner.run("docker compose exec rabbitmq rabbitmqctl delete_queue hello"))


@pytest.mark.timeout(300)
def test_a_killed_broker_comes_back_with_every_confirmed_task(learner):
    """The crash step's broker commands with Docker (docs/what-happens-when.md), on a thousand
    confirmed tasks: `kill` is SIGKILL, and `up -d --wait` waits until it is healthy again."""
    succeeded(learner.run("docker compose exec rabbitmq rabbitmqctl delete_queue task_queue"))
    succeeded(learner.run("seq 1000 | python work_queue/new_task.py --queue-type classic -"))
    succeeded(learner.run("docker compose kill rabbitmq"))
    succeeded(learner.run("docker compose up -d --wait"))
    counted = "docker compose exec rabbitmq rabbitmqctl list_queues name messages"
    eventually(lambda: "task_queue\t1000" in learner.run(counted).stdout, timeout=30)
    succeeded(learner.run("docker compose exec rabbitmq rabbitmqctl delete_queue task_queue"))


@pytest.mark.timeout(300)
def test_durable_tasks_outlive_down_and_up(learner):
    """`down` removes the container, not the volume; the fixed hostname finds its data again."""
    for task in ("one.", "two..", "three..."):
        succeeded(learner.run(f'python work_queue/new_task.py "{task}"'))
    succeeded(learner.run("docker compose down"))
    succeeded(learner.run("docker compose up -d --wait"))
    eventually(lambda: learner.ready("task_queue") == 3, timeout=30)
    done = succeeded(learner.run("python work_queue/worker.py --burst"))
    assert re.findall(r"Received '([^']*)'", done.stdout) == ["one.", "two..", "three..."]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "command",
    [
        "docker compose --profile demo run --rm demo",
        "DEMO_LESSON=task_queue docker compose --profile demo run --rm demo",
    ],
)
def test_the_demo_profile_runs_a_lesson_and_ends_with_its_exit_code(learner, command):
    demo = learner.run(command, timeout=540)

    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert re.search(r"\d+ tasks sent, (\d+) done, \d+ redelivered, 0 lost", demo.stdout)
    assert "Nothing lost:" in demo.stdout
    running = learner.run("docker compose ps --services --status running").stdout.split()
    assert running == ["rabbitmq"]  # the demo's container is gone, the broker still runs


@pytest.mark.timeout(600)
def test_the_cluster_profile_runs_lesson_3_over_three_nodes_and_rides_out_a_stopped_node(
    learner,
):
    succeeded(learner.run("docker compose --profile cluster up -d"))
    eventually(lambda: learner.healthy("rabbitmq-1", "rabbitmq-2", "rabbitmq-3"), timeout=300)
    status = succeeded(learner.run("docker compose exec rabbitmq-1 rabbitmqctl cluster_status"))
    assert all(f"rabbit@rabbitmq-{n}" in status.stdout for n in (1, 2, 3)), status.stdout

    first = learner.start_in_the_cluster("python task_queue/worker.py")
    second = learner.start_in_the_cluster(SECOND_WORKER)
    results = learner.start_in_the_cluster("python task_queue/results.py")
    try:
        for script in (first, second, results):
            script.wait_for(r"^ \[\*\] Waiting for", timeout=60)
        succeeded(learner.run(f"{IN_THE_CLUSTER}\n{THOUSAND_TASKS}"))
        leaders = succeeded(
            learner.run(
                "docker compose exec rabbitmq-1 rabbitmqctl list_queues name type leader members"
            )
        )
        assert re.search(r"(?m)^tasks\tquorum\trabbit@rabbitmq-\d", leaders.stdout), leaders.stdout
        succeeded(learner.run("docker compose stop rabbitmq-2"))
        results.wait_for(r"^ \[x\] Task \S+: sleep\(0\.01\) = 0\.01$", count=1000, timeout=300)
        shown = succeeded(learner.run(f"{IN_THE_CLUSTER}\npython queues.py"))
        assert "the management API at http://localhost:15673/" in shown.stdout
    finally:
        for script in (first, second, results):
            script.kill()
    assert second.matching(r"Failed over to|Reconnected to") or first.matching(
        r"Failed over to|Reconnected to"
    ), second.output + first.output
