"""Fixtures: a real RabbitMQ broker, the lesson scripts as processes, and a probe of the queues.

The `broker` fixture finds a broker in this order, and never skips:
  1. RABBITMQ_URL, if set (the tests empty the lessons' queues there: use a scratch vhost);
  2. a testcontainers RabbitMQ container, if a Docker daemon answers: the image
     RABBITMQ_TEST_IMAGE (default rabbitmq:4-management) with its ports published, or, with
     RABBITMQ_TEST_NETWORK=host, on the host's network with the settings (own node name,
     ports, TLS listener) of a throwaway local node (what tests/with-docker.sh does);
  3. a throwaway node of the local `rabbitmq-server`, removed afterwards.
The system broker at 127.0.0.1:5672 is only used if RABBITMQ_URL points at it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import docker
import docker.errors
import pika
import pika.exceptions
import pika.spec
import pytest
from rabbitmq_node import DENY_DEPRECATED, START_TIMEOUT, LocalNode, free_port
from script_runner import REPO, RunningScript, python_on_path, succeeded

try:
    from testcontainers.community.rabbitmq import RabbitMqContainer
except ImportError:  # testcontainers before the community namespace
    from testcontainers.rabbitmq import RabbitMqContainer

from rabbit_queues.connection import BrokerError, connect, redact_url
from rabbit_queues.queues import ALL_QUEUES, QueueCounts

DOCKER_IMAGE = os.environ.get("RABBITMQ_TEST_IMAGE", "rabbitmq:4-management")
HOST_NETWORK = os.environ.get("RABBITMQ_TEST_NETWORK") == "host"
# Ryuk (testcontainers' reaper) may not run: a run removes what a killed one left behind.
CONTAINER_PREFIX = "rabbit-queues-test-"
CONTAINER_NAME = f"{CONTAINER_PREFIX}{os.getpid()}"
LESSON_QUEUES = [queue.name for queue in ALL_QUEUES]  # with each .retry and .dlq


@dataclass
class BrokerUnderTest:
    url: str
    kind: str
    rabbitmqctl_env: dict[str, str] | None = None  # env that points `rabbitmqctl` at it
    docker_exec: list[str] | None = None  # or: how to run rabbitmqctl in its container
    restart: Callable[[], None] | None = None
    crash: Callable[[], None] | None = None  # kill it (SIGKILL), then start it again
    tls_port: int | None = None  # an amqps:// listener whose certificate says 'localhost'
    ca_file: Path | None = None  # the CA that signed that certificate
    management_url: str | None = None  # its management API (HTTP), for queues.py
    management_metrics: bool = True  # does that API give figures (not only names)?


def _remove_containers_of_dead_runs(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters={"name": CONTAINER_PREFIX}):
        pid = container.name.removeprefix(CONTAINER_PREFIX)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            container.remove(force=True)
        except (ValueError, PermissionError):  # not one of ours, or a live process
            continue


class HostNetworkRabbitMqContainer(RabbitMqContainer):
    """On the host's network: nothing is published, the ports it listens on are the host's."""

    def __init__(self, image: str, port: int) -> None:
        super().__init__(image, port=port, network_mode="host")
        self.ports.clear()  # docker refuses port bindings with network_mode=host

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        return int(port)


def _from_docker() -> Iterator[BrokerUnderTest] | None:
    try:
        docker.from_env().ping()
    except docker.errors.DockerException as error:  # no daemon answers
        if "RABBITMQ_TEST_IMAGE" in os.environ:  # asked for a container: no quiet fallback
            pytest.fail(f"RABBITMQ_TEST_IMAGE is set, but no Docker daemon answers ({error})")
        return None
    _remove_containers_of_dead_runs(docker.from_env())
    settings = LocalNode()  # never started: its node name, ports, config and TLS files
    if HOST_NETWORK:
        container = HostNetworkRabbitMqContainer(DOCKER_IMAGE, port=settings.port)
        _with_local_node_settings(container, settings)
    else:
        container = RabbitMqContainer(
            DOCKER_IMAGE, port=settings.port
        )  # the same port numbers outside as inside, so that they survive a restart
        container.with_bind_ports(settings.port, settings.port)
        container.with_bind_ports(15672, settings.management_port)
        # queues.py reads the management API: have RabbitMQ refresh its figures often
        container.with_env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-rabbit collect_statistics_interval 500"
        )

    container.with_name(CONTAINER_NAME)

    def restart() -> None:
        container.get_wrapped_container().restart(timeout=60)
        eventually(settings.accepts_amqp, timeout=START_TIMEOUT)

    def crash() -> None:
        container.get_wrapped_container().kill()
        container.get_wrapped_container().start()
        eventually(settings.accepts_amqp, timeout=START_TIMEOUT)

    def run() -> Iterator[BrokerUnderTest]:
        try:
            with container:
                network = "host network" if HOST_NETWORK else "published ports"
                yield BrokerUnderTest(
                    url=settings.url,
                    kind=f"testcontainers {DOCKER_IMAGE} container ({network})",
                    docker_exec=["docker", "exec", container.get_wrapped_container().id],
                    restart=restart,
                    crash=crash,
                    tls_port=settings.tls_port if HOST_NETWORK else None,
                    ca_file=settings.ca_file if HOST_NETWORK else None,
                    management_url=settings.management_url,
                    management_metrics=not DENY_DEPRECATED,
                )
        finally:
            settings.remove()

    return run()


def _with_local_node_settings(container: RabbitMqContainer, settings: LocalNode) -> None:
    """Give ``container`` the settings of a local node: its own node name, its AMQP, TLS,
    management and distribution ports, and an epmd port of its own, so that on the host's
    network it never meets a system broker's node, epmd or ports."""
    container.with_volume_mapping(str(settings.directory), str(settings.directory), "ro")
    for name, value in settings.env.items():
        if name.startswith("RABBITMQ_") and not name.endswith(("_MNESIA_BASE", "_LOG_BASE")):
            container.with_env(name, value)
    container.with_env("ERL_EPMD_PORT", str(free_port()))


def _from_local_node() -> Iterator[BrokerUnderTest] | None:
    if shutil.which("rabbitmq-server") is None:
        return None

    def run() -> Iterator[BrokerUnderTest]:
        node = LocalNode()
        try:
            node.start()
            yield BrokerUnderTest(
                url=node.url,
                kind=f"local node {node.name}",
                rabbitmqctl_env=node.env,
                restart=node.restart,
                crash=node.crash,
                tls_port=node.tls_port,
                ca_file=node.ca_file,
                management_url=node.management_url,
                management_metrics=not DENY_DEPRECATED,
            )
        finally:
            node.remove()

    return run()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the broker fixture needs a broker: ``-m "not broker"`` runs the rest,
    on a machine with no RabbitMQ, no Docker and no network."""
    for item in items:
        if "broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.broker)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many test processes ``-n auto`` (pyproject.toml) starts: two, each with a broker
    of its own, as most tests wait on processes and brokers; one (0: no worker processes)
    with RABBITMQ_URL, as every test would then use that one broker and its queues."""
    return 0 if os.environ.get("RABBITMQ_URL") else 2


def pytest_sessionstart(session: pytest.Session) -> None:
    """A broker of the user's (RABBITMQ_URL) that does not answer ends the run in one line,
    the scripts' own (a missing vhost: the two rabbitmqctl commands that make it), before
    hundreds of tests fail with a traceback each."""
    if url := os.environ.get("RABBITMQ_URL"):
        try:
            connect(url)[0].close()
        except BrokerError as error:
            pytest.exit(f"RABBITMQ_URL: {error}", returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_report_header() -> list[str]:
    """Which broker the tests will run against, and its version."""
    if url := os.environ.get("RABBITMQ_URL"):
        return [f"broker: RABBITMQ_URL={redact_url(url)}"]
    if shutil.which("rabbitmqctl") is None:
        local = "no local rabbitmq-server"
    else:
        version = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout.strip()
        denied = ", every deprecated feature denied" if DENY_DEPRECATED else ""
        package = os.environ.get("RABBITMQ_TEST_PACKAGE")  # set by tests/with-rabbitmq4.sh
        source = f" ({package})" if package else ""
        local = f"throwaway nodes of the local rabbitmq-server: RabbitMQ {version}{source}{denied}"
    network = ", on the host network" if HOST_NETWORK else ""
    container = f"a testcontainers {DOCKER_IMAGE} container{network}"
    if "RABBITMQ_TEST_IMAGE" in os.environ:  # asked for: no fallback
        return [f"broker: {container}; nodes of the tests' own: {local}"]
    return [f"broker: {container} if Docker answers, else {local}"]


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerUnderTest]:
    """A real broker for the whole session (see the module docstring for where from)."""
    if url := os.environ.get("RABBITMQ_URL"):
        management_url = os.environ.get("MANAGEMENT_URL")
        yield BrokerUnderTest(url=url, kind="RABBITMQ_URL", management_url=management_url)
        return
    source = _from_docker() or _from_local_node()
    if source is None:
        pytest.fail(
            "no RabbitMQ broker for the tests: set RABBITMQ_URL to a broker (vhost) the tests "
            "may empty, or start a Docker daemon (testcontainers runs rabbitmq:4-management), "
            "or install rabbitmq-server (apt-get install rabbitmq-server) so the tests can "
            "start a throwaway node"
        )
    yield from source


def eventually(condition: Callable[[], bool], timeout: float = 15) -> None:
    """Wait until ``condition()`` holds (e.g. a queue depth), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout} s: {condition}")
        time.sleep(0.05)


def table_rows(text: str) -> list[str]:
    """The rows of the Markdown tables in ``text`` (a benchmark's output, a page)."""
    return [line for line in text.splitlines() if line.startswith("| ")]


UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class Sent(NamedTuple):
    """What a producer's ` [x] Sent ...` line said: the message (lesson 1 and 2: in quotes),
    and in lesson 3 the id of the task or chain it sent."""

    what: str
    id: str | None


def send(scripts: Scripts, command: str, env: dict[str, str] | None = None) -> Sent:
    """Run a producer's command line as the README does; check that it succeeded and said
    that it sent one message (or one task, or one chain), and nothing else."""
    sent = succeeded(scripts.run(command, env=env))
    said = re.fullmatch(rf" \[x\] Sent (.+?)(?:, (?:task|chain) id ({UUID}))?\n", sent.stdout)
    assert said is not None, sent.stdout
    asked = re.search(r'"(.*)"', command)  # lessons 1 and 2: what was asked for, in quotes
    if said[2] is None and asked is not None:
        assert said[1] == f"'{asked[1]}'", sent.stdout
    return Sent(said[1], said[2])


@contextmanager
def queue_policy(scripts: Scripts, name: str, pattern: str, definition: str) -> Iterator[None]:
    """A policy (rabbitmqctl set_policy, as the docs show it) on the queues ``pattern``
    matches, in force while inside (RabbitMQ applies one some time after it says OK), cleared
    after."""
    apply = f"rabbitmqctl set_policy {name} '{pattern}' '{definition}' --apply-to queues"
    succeeded(scripts.rabbitmqctl(apply))
    try:
        in_force = re.compile(rf"\s{re.escape(name)}$", re.MULTILINE)
        listed = "rabbitmqctl list_queues name policy"
        eventually(lambda: in_force.search(scripts.rabbitmqctl(listed).stdout) is not None, 30)
        yield
    finally:
        succeeded(scripts.rabbitmqctl(f"rabbitmqctl clear_policy {name}"))


def received(worker: RunningScript) -> list[str]:
    """The work_queue tasks a worker printed as received, in order."""
    return re.findall(r"Received '([^']*)'", worker.output)


def restart(broker: BrokerUnderTest) -> None:
    """Stop and start the broker under test (only the throwaway local node can be)."""
    if broker.restart is None:
        pytest.skip(f"only the throwaway local node can be restarted, not {broker.kind}")
    broker.restart()


def crash(broker: BrokerUnderTest) -> None:
    """Kill the broker under test (SIGKILL) and start it again, as `docker compose kill` and
    `docker compose up -d --wait` would (only the tests' own broker can be)."""
    if broker.crash is None:
        pytest.skip(f"only the tests' own broker can be killed, not {broker.kind}")
    broker.crash()


class Probe:
    """Looks at the broker directly, as the tests' own client (never through the scripts)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self._connection.channel()
        self.channel.confirm_delivery()  # so publish() fails loudly if the queue does not exist
        self._counts = QueueCounts(self._connection)  # on a channel of its own

    def depth(self, queue: str) -> int | None:
        """Messages ready in ``queue`` (a passive declare: exact, unlike list_queues);
        None if there is no such queue."""
        return self._counts.depth(queue)

    def consumers(self, queue: str) -> int | None:
        counts = self._counts.of(queue)
        return None if counts is None else counts.consumer_count

    def declare(self, queue: str) -> None:
        """Declare ``queue`` as the lessons do by default (a durable quorum queue)."""
        self.channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})

    def get_all(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Take every ready message off ``queue``."""
        messages = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            if properties.headers:  # a quorum queue's count of returns (3.10 adds it at 0)
                properties.headers.pop("x-delivery-count", None)
            messages.append((properties, body))

    def publish(self, queue: str, body: bytes, **properties: object) -> None:
        """Publish as some other producer would, bypassing the lesson scripts."""
        self.channel.basic_publish(
            "", queue, body, pika.BasicProperties(**properties), mandatory=True
        )

    def delete_lesson_queues(self) -> None:
        for name in LESSON_QUEUES:
            self.channel.queue_delete(name)

    def delete_lesson_queues_and_close(self) -> None:
        self.delete_lesson_queues()
        self.close()

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()


@pytest.fixture
def probe(broker: BrokerUnderTest) -> Iterator[Probe]:
    """A client of the broker; every test starts with the lessons' queues deleted. On a broker
    of the user's (RABBITMQ_URL) each also ends so: the tests leave them as they found them."""
    probe = Probe(broker.url)
    probe.delete_lesson_queues()
    yield probe
    if broker.kind == "RABBITMQ_URL":
        Probe(broker.url).delete_lesson_queues_and_close()  # this one may be closed by now
    probe.close()


class Scripts:
    """Starts README commands as processes with AMQP_URL set; cleans up after the test."""

    def __init__(self, broker: BrokerUnderTest, bin_dir: Path) -> None:
        self.broker = broker
        self.env = {**os.environ, "AMQP_URL": broker.url, "PATH": python_on_path(bin_dir)}
        self.env.pop("MANAGEMENT_URL", None)
        if broker.management_url is not None:
            self.env["MANAGEMENT_URL"] = broker.management_url
        self.env.pop("PYTHONUNBUFFERED", None)  # the scripts must flush lines on their own
        self._running: list[RunningScript] = []

    def start(
        self, command: str, *, stdin: bool = False, env: dict[str, str] | None = None
    ) -> RunningScript:
        """Start a long-running command (no shell), e.g. 'python work_queue/worker.py'."""
        script = RunningScript(command, {**self.env, **(env or {})}, stdin=stdin)
        self._running.append(script)
        return script

    def start_worker(self, command: str) -> RunningScript:
        """Start a consumer and wait until it is subscribed."""
        script = self.start(command)
        script.wait_for(r"^ \[\*\] Waiting for")
        return script

    def run(
        self, command: str, *, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command line as bash would (pipes and all) and wait for it to finish."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def rabbitmqctl(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run a README `rabbitmqctl ...` line against the broker under test."""
        if self.broker.rabbitmqctl_env is not None:
            return subprocess.run(
                ["bash", "-c", command],
                env=self.broker.rabbitmqctl_env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        if self.broker.docker_exec is not None:
            return subprocess.run(
                [*self.broker.docker_exec, "bash", "-c", command],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        pytest.skip(f"rabbitmqctl cannot reach a {self.broker.kind} broker")

    def stop_all(self) -> None:
        for script in self._running:
            script.kill()


@pytest.fixture
def scripts(broker: BrokerUnderTest, probe: Probe, tmp_path: Path) -> Iterator[Scripts]:
    scripts = Scripts(broker, tmp_path)
    yield scripts
    scripts.stop_all()
