"""The broker the suite runs against is the one the environment asks for: a container path
that broke (a renamed testcontainers module, a daemon gone) fails here, not quietly falls back
to a local node."""

import os
import subprocess

from conftest import CONTAINER_NAME, DOCKER_IMAGE


def test_the_broker_is_the_one_asked_for(broker, probe):
    if os.environ.get("RABBITMQ_URL"):
        assert broker.kind == "RABBITMQ_URL"
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
