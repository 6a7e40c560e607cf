"""A throwaway RabbitMQ node for the tests, started from the local `rabbitmq-server`.

It has its own node name, AMQP and distribution ports, data, log and plugin files, and its own
config file (so /etc/rabbitmq's listener on 5672 is not used): it never touches the system
broker. Debian's `rabbitmq-server` wrapper, run as root, drops to the `rabbitmq` user, so the
node's directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pika
import pika.exceptions

START_TIMEOUT = 90
# RabbitMQ 4.0's deprecated features, still permitted by default; a later release denies them.
# RABBITMQ_TEST_DENY_DEPRECATED=1 denies them all on every node the tests start (4.x only:
# 3.10 knows none of these settings), to prove the lessons need none of them.
DEPRECATED_FEATURES = (
    "amqp_address_v1",
    "global_qos",
    "management_metrics_collection",
    "queue_master_locator",
    "ram_node_type",
    "transient_nonexcl_queues",
)
DENY_DEPRECATED = os.environ.get("RABBITMQ_TEST_DENY_DEPRECATED") == "1"
logging.getLogger("pika").setLevel(logging.CRITICAL)  # refused connections while it starts


# Below Linux's ephemeral range (32768 and up), so that while the node restarts no outgoing
# connection (or rabbitmqctl's own Erlang node) can be given one of its ports. Each process
# of a parallel run (pytest-xdist's gw0, gw1, ...) has a slice of its own: a port one of them
# handed out, to a node not started yet, looks free to the others.
TEST_PROCESS = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
TEST_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
PORT_RANGE = range(
    20000 + TEST_PROCESS * 12000 // TEST_PROCESSES,
    20000 + (TEST_PROCESS + 1) * 12000 // TEST_PROCESSES,
)


# Every port handed out: nothing listens on one until its node starts, so a free-looking port
# may already belong to another node of this run (a cluster's nodes start side by side).
HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range, and
    that no node of this run was given before."""
    for port in random.sample(PORT_RANGE, 200):
        if port in HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


class LocalNode:
    """One `rabbitmq-server` process on 127.0.0.1, removed with everything it wrote."""

    def __init__(
        self, extra_config: str = "", advanced_config: str = "", permitted: tuple[str, ...] = ()
    ) -> None:
        """``extra_config``: more rabbitmq.conf lines for this node; ``advanced_config``: its
        advanced.config (Erlang terms), for settings rabbitmq.conf does not have;
        ``permitted``: deprecated features this node permits even when the run denies them."""
        self.name = f"pytest-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="rabbitmq-test-"))
        self.tls_port = free_port()
        self.management_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.management_url = f"http://127.0.0.1:{self.management_port}/"
        self.ca_file = self.directory / "ca.pem"
        self._process: subprocess.Popen[bytes] | None = None
        (self.directory / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.directory / "rabbitmq-env.conf").write_text("")
        self._make_tls_certificates()
        (self.directory / "rabbitmq.conf").write_text(
            # the AMQP listener comes from RABBITMQ_NODE_PORT; this adds one for amqps://
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {self.ca_file}\n"
            f"ssl_options.certfile = {self.directory / 'server.pem'}\n"
            f"ssl_options.keyfile = {self.directory / 'server.key'}\n"
            "ssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
            # the management API (HTTP), for queues.py; its figures refreshed twice a second
            f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n"
            "collect_statistics_interval = 500\n"
            + "".join(
                f"deprecated_features.permit.{feature} = false\n"
                for feature in (DEPRECATED_FEATURES if DENY_DEPRECATED else ())
                if feature not in permitted
            )
            + extra_config
        )
        if advanced_config:
            (self.directory / "advanced.config").write_text(advanced_config)
        for sub in ("mnesia", "log"):
            (self.directory / sub).mkdir()
        self._hand_to_rabbitmq_user()

    @property
    def env(self) -> dict[str, str]:
        """The environment that points `rabbitmq-server` and `rabbitmqctl` at this node."""
        directory = self.directory
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
        }

    def start(self) -> None:
        """Start the node and return once it accepts AMQP connections."""
        output = open(self.directory / "server-output.txt", "ab")  # noqa: SIM115 (kept by Popen)
        self._process = subprocess.Popen(
            ["rabbitmq-server"],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, to clean up after it
        )
        output.close()
        self.wait_for_amqp()
        if DENY_DEPRECATED:
            self._check_every_deprecated_feature_is_denied()

    @property
    def is_running(self) -> bool:
        return self._process is not None

    def wait_for_amqp(self) -> None:
        """Return once the node accepts AMQP connections (not merely once it runs)."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited early:\n{self.output_tail()}")
            if self.accepts_amqp():
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"rabbitmq-server did not start in {START_TIMEOUT} s\n{self.output_tail()}"
        )

    def _check_every_deprecated_feature_is_denied(self) -> None:
        """A RabbitMQ release that deprecates more than DEPRECATED_FEATURES fails the run."""
        # JSON: RabbitMQ 4.3 draws a table even with --quiet, where 4.0 printed tab-separated.
        listing = json.loads(
            self.rabbitmqctl("list_deprecated_features", "--quiet", "--formatter", "json")
        )
        # Still permitted here: by default (4.3 denies some already), and not on our list.
        missed = [
            feature["name"]
            for feature in listing
            if feature["deprecation_phase"] == "permitted_by_default"
            and feature["name"] not in DEPRECATED_FEATURES
        ]
        if missed:
            raise RuntimeError(
                f"RabbitMQ also deprecates {', '.join(missed)}: add to DEPRECATED_FEATURES"
            )

    def rabbitmqctl(self, *arguments: str, timeout: float = 120) -> str:
        """Run `rabbitmqctl` against this node; its output, or RuntimeError if it fails."""
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.name, *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(arguments)}: {done.stderr or done.stdout}")
        return done.stdout

    def kill(self) -> None:
        """Kill the node at once (SIGKILL), as a crash or a pulled plug would."""
        if self._process is None:
            return
        self._kill_everything()
        self._process.wait(timeout=30)
        self._process = None

    def _signal_everything(self, signum: int) -> None:
        """Send ``signum`` to every process of this node. The wrapper's `su` starts the Erlang
        VM in a session of its own, so the wrapper's group is not enough: find them by the
        RABBITMQ_NODENAME in their environment (epmd, shared by every node, is spared)."""
        assert self._process is not None
        marker = f"RABBITMQ_NODENAME={self.name}".encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                environment = (proc / "environ").read_bytes().split(b"\0")
                command = (proc / "comm").read_text().strip()
            except OSError:  # gone already, or not ours to read
                continue
            if marker in environment and command != "epmd":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    def _kill_everything(self) -> None:
        self._signal_everything(signal.SIGKILL)

    def pause(self) -> None:
        """Stop the node's processes (SIGSTOP) without ending them, as a frozen VM or a long
        garbage collection would: the other nodes get no answer from it."""
        self._signal_everything(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_everything(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the node gracefully (as `rabbitmqctl stop` does); kill what is left."""
        if self._process is None:
            return
        with contextlib.suppress(RuntimeError):  # it may be down already: killed below
            self.rabbitmqctl("stop", timeout=60)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=30)
        self._kill_everything()  # whatever `rabbitmqctl stop` left behind
        self._process.wait(timeout=30)
        self._process = None

    def restart(self) -> None:
        """Stop and start the same node: what was durable and persistent is still there."""
        self.stop()
        self.start()

    def crash(self) -> None:
        """Kill the node as a pulled plug would, then start it again: what it had written to
        disk is still there, what it had not is gone."""
        self.kill()
        self.start()

    def remove(self) -> None:
        """Kill the node (nothing of it is kept, so it need not stop gracefully) and delete
        its directory."""
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def output_tail(self, lines: int = 30) -> str:
        path = self.directory / "server-output.txt"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def accepts_amqp(self) -> bool:
        try:
            pika.BlockingConnection(pika.URLParameters(self.url)).close()
        except (pika.exceptions.AMQPError, OSError):
            return False
        return True

    def _make_tls_certificates(self) -> None:
        """A test CA, and a certificate it signs for the host name 'localhost'."""
        directory = self.directory
        (directory / "server.ext").write_text(
            "subjectAltName = DNS:localhost\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid, issuer\n"
        )
        for command in (
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=rabbit-queues-test-CA "
            "-addext basicConstraints=critical,CA:TRUE "
            "-addext keyUsage=critical,keyCertSign,cRLSign -keyout ca.key -out ca.pem",
            "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key "
            "-out server.csr",
            "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
            "-extfile server.ext -out server.pem",
        ):
            subprocess.run(command.split(), cwd=directory, check=True, capture_output=True)

    def _hand_to_rabbitmq_user(self) -> None:
        """As root, Debian's wrapper runs the node as `rabbitmq`: give it the directory."""
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam("rabbitmq")
        except KeyError:
            return
        self.directory.chmod(0o755)
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)


class LocalCluster:
    """Three throwaway nodes joined into one cluster with `rabbitmqctl join_cluster`.

    They share the `rabbitmq` user's Erlang cookie (Debian's wrapper runs every node as that
    user), which is what lets them talk to each other.
    """

    def __init__(self, size: int = 3) -> None:
        # Every deprecated feature denied (RABBITMQ_TEST_DENY_DEPRECATED=1) but transient
        # non-exclusive queues, which the lessons never declare (every queue of theirs is
        # durable; the single nodes of the run deny them too). With it denied, RabbitMQ 4.0.5's
        # start check "is it in use?" may read the queue table on a node that has just joined
        # before Mnesia has loaded it there ({aborted, {no_exists, [rabbit_queue, ...]}} in
        # the node's log), count that as "in use", and fail `rabbitmqctl start_app` with
        # failed_to_deny_deprecated_features: seen on a busy machine, again on retries.
        self.nodes = [LocalNode(permitted=("transient_nonexcl_queues",)) for _ in range(size)]

    @property
    def url(self) -> str:
        """Every node, as AMQP_URL lists a cluster's nodes."""
        return ",".join(node.url for node in self.nodes)

    def url_from(self, first: LocalNode) -> str:
        """Every node, ``first`` first: a client that starts on that node."""
        index = self.nodes.index(first)
        return ",".join(node.url for node in self.nodes[index:] + self.nodes[:index])

    def start(self) -> None:
        """Start the nodes side by side, then join the others to the first."""
        errors: list[BaseException] = []

        def start(node: LocalNode) -> None:
            try:
                node.start()
            except BaseException as error:  # reported below, from the test's thread
                errors.append(error)

        threads = [threading.Thread(target=start, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        first = self.nodes[0]
        for node in self.nodes[1:]:
            for command in (["stop_app"], ["join_cluster", first.name], ["start_app"]):
                node.rabbitmqctl(*command)
            node.wait_for_amqp()

    def node_named(self, name: str) -> LocalNode:
        return next(node for node in self.nodes if node.name == name)

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()
