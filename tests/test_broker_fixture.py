"""The broker the suite runs against is the one the environment asks for: a container path
that broke (a renamed testcontainers module, a daemon gone) fails here, not quietly falls back
to a local node."""

import os
import subprocess
import sys

import pytest
from conftest import CONTAINER_NAME, DOCKER_IMAGE
from script_runner import REPO

# Long (the harness itself, with brokers of its own): python -m pytest -m long (docs/tests.md).
pytestmark = [pytest.mark.long]


def test_the_broker_is_the_one_asked_for(broker, probe):
    if os.environ.get("RABBITMQ_URL"):
        assert broker.kind == "RABBITMQ_URL"
        # Every test uses that one broker and its queues: one process, no parallel worker.
        assert "PYTEST_XDIST_WORKER" not in os.environ
    elif os.environ.get("RABBITMQ_TEST_IMAGE"):
        assert broker.kind.startswith(f"testcontainers {DOCKER_IMAGE} container")
        inspected = subprocess.run(
            [
                "docker",
                "inspect",
                "--format",
                "{{.State.Running}} {{.Config.Image}}",
                CONTAINER_NAME,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert inspected.stdout.split() == ["true", DOCKER_IMAGE], inspected.stderr
    else:
        assert broker.kind.startswith(("local node", "testcontainers"))
    probe.declare("task_queue")  # and it answers
    assert probe.depth("task_queue") == 0


@pytest.mark.timeout(120)
def test_a_broker_of_your_own_is_used_by_one_test_process(broker):
    """`RABBITMQ_URL=... python -m pytest`, as the README gives it, on the suite's broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-m",
            "long",  # as this file's tests are
            "tests/test_broker_fixture.py::test_the_broker_is_the_one_asked_for",
        ],
        cwd=REPO,
        env={**env, "RABBITMQ_URL": broker.url},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-3000:]
    assert "1 passed" in ran.stdout
