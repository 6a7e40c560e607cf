"""docker-compose.yml, read by a real compose implementation: every profile is valid, and
each service belongs to the profile the README says."""

import os
import shutil
import subprocess

import pytest
import yaml
from script_runner import REPO, succeeded

PROFILES = {  # what `docker compose --profile P up` starts besides the default broker
    None: {"rabbitmq"},
    "demo": {"rabbitmq", "demo"},
    "cluster": {"rabbitmq", "rabbitmq-1", "rabbitmq-2", "rabbitmq-3"},
}


def compose_command() -> list[str]:
    """`docker compose` (the plugin) or `docker-compose` (Debian's 1.29), whichever runs."""
    if shutil.which("docker"):
        plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if plugin.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if os.environ.get("RABBITMQ_TEST_IMAGE"):  # the Docker pass (tests/with-docker.sh)
        pytest.fail("no compose implementation: tests/with-docker.sh installs docker-compose")
    pytest.skip("no compose implementation here (tests/with-docker.sh installs one)")


@pytest.mark.parametrize("profile", list(PROFILES), ids=lambda p: p or "default")
def test_every_profile_is_valid_and_starts_its_services(profile):
    selected = ["--profile", profile] if profile else []
    result = subprocess.run(
        [*compose_command(), *selected, "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COMPOSE_PROFILES": ""},
    )
    succeeded(result)
    services = yaml.safe_load(result.stdout)["services"]
    started = {
        name
        for name, service in services.items()
        if not service.get("profiles") or profile in service["profiles"]
    }
    assert started == PROFILES[profile]
