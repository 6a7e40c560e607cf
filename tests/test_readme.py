"""The README is the front door: every command it shows is run by a test, or says why not."""

import re
import textwrap

import pytest
import yaml
from script_runner import REPO

README = (REPO / "README.md").read_text()
README_RU = (REPO / "README.ru.md").read_text()
CI_SCRIPT = (REPO / ".ci" / "run").read_text()

NOT_RUN_BY_TESTS = {
    "docker compose up -d": "needs a Docker engine; the test machines have none",
    "docker compose exec rabbitmq rabbitmqctl list_queues name messages_ready "
    "messages_unacknowledged": "needs a Docker engine; the tests run the same rabbitmqctl line",
    "docker compose --profile demo run --rm demo": (
        "needs a Docker engine; test_demo.py runs the same `python demo.py <lesson>`"
    ),
    "DEMO_LESSON=task_queue docker compose --profile demo up": (
        "needs a Docker engine; test_demo.py runs the same `python demo.py task_queue`"
    ),
    "docker compose --profile cluster up -d": (
        "needs a Docker engine; test_cluster.py starts three local nodes and joins them"
    ),
    "docker compose exec rabbitmq-1 rabbitmqctl cluster_status": "needs a Docker engine",
    "export AMQP_URL=amqp://guest:guest@localhost:5673/%2F,amqp://guest:guest@localhost:5674/%2F,"
    "amqp://guest:guest@localhost:5675/%2F": (
        "the compose cluster's ports; test_cluster.py lists its three local nodes the same way"
    ),
    "export QUEUE_TYPE=quorum": "test_cluster.py sets QUEUE_TYPE=quorum for every script",
    "export MANAGEMENT_URL=http://localhost:15673/": (
        "the compose cluster's port; test_queues_script.py sets MANAGEMENT_URL the same way"
    ),
    "AMQP_URL=amqp://guest:guest@localhost:5674/%2F,amqp://guest:guest@localhost:5675/%2F,"
    "amqp://guest:guest@localhost:5673/%2F python task_queue/worker.py": (
        "the compose cluster's ports; test_cluster.py starts its second worker on another node "
        "the same way"
    ),
    "docker compose exec rabbitmq-1 rabbitmqctl list_queues name type leader members": (
        "needs a Docker engine; test_cluster.py asks its local nodes the same"
    ),
    "docker compose stop rabbitmq-2": (
        "needs a Docker engine; test_cluster.py kills its leader node mid-run"
    ),
    "python -m venv .venv": "the learner's own setup; CI installs into its environment",
    ". .venv/bin/activate": "the learner's own setup; CI installs into its environment",
    "pip install -r requirements.txt": "run by .ci/run (checked below)",
    "python -m pytest": "the test command itself, run by .ci/run (checked below)",
    "tests/with-rabbitmq4.sh python -m pytest": "run by .ci/run (checked below)",
    "RABBITMQ_TEST_DENY_DEPRECATED=1 tests/with-rabbitmq4.sh python -m pytest": (
        "run by .ci/run (checked below)"
    ),
    'python new_task.py "A task from the tutorial."': (
        "RabbitMQ's tutorial script; test_official_tutorial.py runs tests/tutorial_peer.py, "
        "which declares and publishes exactly as it does"
    ),
    "python worker.py": (
        "RabbitMQ's tutorial script; test_official_tutorial.py runs tests/tutorial_peer.py, "
        "which declares and consumes exactly as it does"
    ),
    "pip install -r requirements-bench.txt": "run by .ci/run (checked below)",
    "python -m bench.run": (
        "test_bench.py runs it with --n 20 --repeats 1 (the full run takes minutes)"
    ),
    "python -m bench.quorum": (
        "test_bench.py runs it with --n 20 --repeats 1 (the full run takes minutes)"
    ),
    "python work_queue/worker.py --url 'amqp://guest:guest@localhost:5672/%2F?heartbeat=2'": (
        "test_what_happens_when.py runs it with its own broker's URL and ?heartbeat=2"
    ),
}


def command_blocks(readme: str) -> list[str]:
    """The README's ```bash blocks, in order."""
    return re.findall(r"^```bash\n(.*?)^```", readme, re.M | re.S)


def readme_commands() -> list[str]:
    """Each line of the README's ```bash blocks."""
    return [line for block in command_blocks(README) for line in block.splitlines() if line.strip()]


def test_every_readme_command_appears_verbatim_in_a_test():
    sources = "\n".join(path.read_text() for path in (REPO / "tests").glob("test_*.py"))
    not_run = [
        command
        for command in readme_commands()
        if command not in NOT_RUN_BY_TESTS
        and not any(f"{quote}{command}{quote}" in sources for quote in ('"', "'", '"""'))
    ]
    assert not_run == []


def test_every_command_not_run_by_a_test_is_still_in_the_readme():
    assert set(NOT_RUN_BY_TESTS) <= set(readme_commands())


def test_ci_installs_the_requirements_and_runs_the_readme_test_command():
    lines = [line.strip() for line in CI_SCRIPT.splitlines()]
    assert "python -m pip install -r requirements.txt" in lines
    assert any(line.startswith("python -m pip install -r requirements-bench.txt") for line in lines)
    # Every test command the README gives: RabbitMQ 3.10, 4.0, and 4.0 made strict.
    for command in ("python -m pytest", *(c for c in NOT_RUN_BY_TESTS if "with-rabbitmq4" in c)):
        assert command in lines
        assert command in readme_commands()


def test_compose_file_runs_rabbitmq_4_locally_with_healthcheck_volume_and_env_credentials():
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["rabbitmq"]

    assert service["image"] == "rabbitmq:4-management"
    # Bound to this machine unless .env says otherwise; the user comes from the environment.
    assert service["ports"] == [
        "${RABBITMQ_BIND:-127.0.0.1}:5672:5672",
        "${RABBITMQ_BIND:-127.0.0.1}:15672:15672",
    ]
    assert service["environment"] == {
        "RABBITMQ_DEFAULT_USER": "${RABBITMQ_DEFAULT_USER:-guest}",
        "RABBITMQ_DEFAULT_PASS": "${RABBITMQ_DEFAULT_PASS:-guest}",
        # queues.py --watch: the management API's figures refreshed every second
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-rabbit collect_statistics_interval 1000",
    }
    example = (REPO / ".env.example").read_text()
    assert "RABBITMQ_DEFAULT_USER=" in example
    assert "RABBITMQ_DEFAULT_PASS=" in example
    assert service["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    assert "rabbitmq-data:/var/lib/rabbitmq" in service["volumes"]
    assert service["hostname"]  # a fixed node name, so the volume's data is found again


def test_compose_demo_profile_runs_the_demo_against_the_healthy_broker():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    demo = services["demo"]

    assert demo["profiles"] == ["demo"]  # not started by a plain `docker compose up -d`
    assert demo["build"] == "."
    assert demo["command"] == ["python", "demo.py", "${DEMO_LESSON:-work_queue}"]
    # The same user as the broker's, at its service name on the compose network.
    assert demo["environment"]["AMQP_URL"] == (
        "amqp://${RABBITMQ_DEFAULT_USER:-guest}:${RABBITMQ_DEFAULT_PASS:-guest}@rabbitmq:5672/%2F"
    )
    assert demo["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY . ." in dockerfile
    assert "pip install --no-cache-dir --root-user-action=ignore ." in dockerfile
    assert "docker compose --profile demo run --rm demo" in readme_commands()


def test_the_russian_readme_shows_the_same_command_blocks_in_the_same_order():
    assert command_blocks(README_RU) == command_blocks(README)
    assert "[Русская версия](README.ru.md)" in README
    assert "[English version](README.md)" in README_RU


@pytest.mark.parametrize("name", ["README.md", "README.ru.md"])
def test_every_link_to_a_section_finds_its_heading(name):
    text = (REPO / name).read_text()
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    headings = re.findall(r"^#+ (.*)$", outside_code, re.M)
    # GitHub's anchors: lower case, punctuation dropped, spaces made hyphens.
    anchors = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
    links = re.findall(r"\]\(#([^)]+)\)", outside_code)
    assert links
    assert sorted(set(links) - anchors) == []


def quoted_python_blocks(text: str) -> list[tuple[str, str]]:
    """(file, code) for each ```python block that quotes this repository: the paragraph just
    before it links to a .py file, or it follows such a block directly. (Other Python, such
    as Celery's way of writing a chain, is not a quote.)"""
    quotes, quoted_file, previous_end = [], None, 0
    for block in re.finditer(r"^```python\n(.*?)^```\n", text, re.M | re.S):
        between = text[previous_end : block.start()]
        introduction = between.strip().split("\n\n")[-1]  # the paragraph just before it
        linked = re.findall(r"\]\(([\w./-]+\.py)\)", introduction)
        if linked:
            quoted_file = linked[-1]
        elif between.strip():
            quoted_file = None
        if quoted_file is not None:
            quotes.append((quoted_file, block.group(1)))
        previous_end = block.end()
    return quotes


@pytest.mark.parametrize("name", ["README.md", "README.ru.md"])
def test_every_python_block_quoting_a_file_is_verbatim(name):
    """What the README shows of the code is what the code says, word for word (at any
    indentation): the lesson half of the wrapper, and a worker using it."""
    quotes = quoted_python_blocks((REPO / name).read_text())
    assert {file for file, _ in quotes} == {"rabbit_queues/broker.py", "work_queue/worker.py"}
    for file, code in quotes:
        source = (REPO / file).read_text()
        indents = (textwrap.indent(code, " " * spaces) for spaces in range(0, 17, 4))
        assert any(indented in source for indented in indents), (file, code)


def test_the_repository_speaks_of_no_document_a_reader_does_not_have():
    """The notes this project grew from are not in the repository: nothing refers to them."""
    texts = [REPO / ".ci" / "run"] + [
        path
        for pattern in ("*.md", "*.py", "*.yml", "*.toml", "*.txt", "*.sh")
        for path in REPO.rglob(pattern)
        if not {".git", ".venv", "venv"} & set(path.relative_to(REPO).parts)
        and path.name != "test_readme.py"
    ]
    assert len(texts) > 40
    for path in texts:
        text = path.read_text(errors="replace").lower()
        for mention in ("seed 0", "seeds 0", "seed_0", "../shared"):
            assert mention not in text, f"{path.relative_to(REPO)} mentions {mention!r}"
