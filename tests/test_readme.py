"""The README and docs/ are the front door: every command they show is run by a test (or says
why not), every output block the README shows is what a test saw printed, every link lands, and
the Russian pages match the English ones block for block."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import table_rows
from readme_output import BLOCKS as README_OUTPUTS
from script_runner import REPO

from rabbit_queues.queues import (
    HELLO,
    RESULTS,
    TASK_QUEUE,
    TASKS,
    dead_letter_queue,
    retry_queue,
)

README = (REPO / "README.md").read_text()
CI_SCRIPT = (REPO / ".ci" / "run").read_text()
# The English pages, and beside each its Russian twin (README.ru.md, docs/NAME.ru.md).
DOCS = sorted(page for page in (REPO / "docs").glob("*.md") if ".ru." not in page.name)
PAGES = [REPO / "README.md", *DOCS]


def russian(page: Path) -> Path:
    return page.with_name(page.name.removesuffix(".md") + ".ru.md")


ALL_PAGES = [page for english in PAGES for page in (english, russian(english))]
NOT_RUN_BY_TESTS = {
    "tail -n +12001 tasks.txt | python task_queue/new_task.py -": (
        "test_cluster.py resumes the same way, from the count its stopped producer printed"
    ),
    "python -m venv .venv": "the learner's own setup; .ci/run makes a fresh one of its own",
    "apt-get install rabbitmq-server": (
        "the learner's own setup; .ci/run installs it (checked below)"
    ),
    "rabbitmq-plugins enable rabbitmq_management": (
        "the learner's own setup; the tests' nodes enable it in their enabled_plugins file"
    ),
    "systemctl restart rabbitmq-server": (
        "the system's broker, which the tests never touch; test_work_queue.py restarts its own"
    ),
    "systemctl kill -s KILL rabbitmq-server": (
        "the system's broker, which the tests never touch; test_work_queue.py kills its own"
    ),
    "systemctl start rabbitmq-server": (
        "the system's broker, which the tests never touch; test_work_queue.py starts its own again"
    ),
    ". .venv/bin/activate": "the learner's own setup; .ci/run runs its fresh one's python",
    "pip install -r requirements.txt": "run by .ci/run (checked below)",
    "python -m pytest": "the test command itself, run by .ci/run (checked below)",
    "python -m pytest -m long": "the long tests; .ci/run runs them with the rest (checked below)",
    'python -m pytest -m "long or not long"': "run by .ci/run (checked below)",
    'python -m pytest -m "not broker"': "run by .ci/run with no broker (checked below)",
    'python -m pytest -m "long or not broker"': "run by .ci/run on 3.10 (checked below)",
    'tests/with-rabbitmq4.sh python -m pytest -m "long or not long"': (
        "run by .ci/run (checked below)"
    ),
    "RABBITMQ4_SUITE=sid RABBITMQ_TEST_DENY_DEPRECATED=1 tests/with-rabbitmq4.sh "
    'tests/with-docker.sh python -m pytest -m "long or not long"': (
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
    "apt-get install valgrind": "run by .ci/run if valgrind is missing (checked below)",
    "python -m bench.instructions": (
        "test_bench.py runs it with --n 50 (the full run takes a minute)"
    ),
    "python work_queue/worker.py --url 'amqp://guest:guest@localhost:5672/%2F?heartbeat=2'": (
        "test_what_happens_when.py runs it with its own broker's URL and ?heartbeat=2"
    ),
}


def blocks(text: str, kind: str) -> list[str]:
    """The text's ```KIND blocks, in order (for ```text: with the block's name line)."""
    return re.findall(rf"^```{kind}\b(.*?)^```", text, re.M | re.S)


def command_blocks(text: str) -> list[str]:
    return [block.removeprefix("\n") for block in blocks(text, "bash")]


def readme_commands() -> list[str]:
    """Each line of the ```bash blocks of the README and of docs/."""
    return [
        line
        for page in PAGES
        for block in command_blocks(page.read_text())
        for line in block.splitlines()
        if line.strip()
    ]


def test_every_readme_command_appears_verbatim_in_a_test():
    sources = "\n".join(path.read_text() for path in (REPO / "tests").glob("test_*.py"))
    not_run = [
        command
        for command in readme_commands()
        if command not in NOT_RUN_BY_TESTS
        and not any(f"{quote}{command}{quote}" in sources for quote in ('"', "'", '"""'))
    ]
    assert not_run == []


def test_no_documented_compose_command_stays_attached():
    """`docker compose ... up` in the foreground runs until Ctrl+C, which stops the broker too
    (the demo profile's did, after the demo): every command a page shows ends by itself."""
    commands = [
        line
        for page in ALL_PAGES
        for block in command_blocks(page.read_text())
        for line in block.splitlines()
        if "docker compose" in line
    ]
    assert len(commands) >= 10
    attached = [
        command
        for command in commands
        if re.search(r"\bup\b", command)
        and not re.search(r"\s(-d|--detach|--wait|--exit-code-from)\b", command)
    ]
    assert attached == []


def test_every_command_not_run_by_a_test_is_still_in_the_readme():
    assert set(NOT_RUN_BY_TESTS) <= set(readme_commands())


def test_the_readme_is_a_short_front_door_and_maps_every_page_of_docs():
    for page in (REPO / "README.md", REPO / "README.ru.md"):
        text = page.read_text()
        # The lessons first, each broker command for Docker and for a packaged broker; depth
        # in docs/ (the demo's output, chains, --requeue, the broker crash, lesson 1's restart).
        assert len(text.splitlines()) <= 350, page.name
        linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", text))
        twin = ".ru.md" if page.name == "README.ru.md" else ".md"
        pages = set(DOCS) if twin == ".md" else {russian(p) for p in DOCS}
        assert linked == {f"docs/{p.name}" for p in pages}, page.name


def test_every_output_block_of_the_readme_is_named_and_checked_by_a_test():
    """```text NAME: a test runs the command and compares (tests/readme_output.py). Every block
    of the README is named; a page of docs/ names those it has a test for."""
    assert all(block.split("\n", 1)[0].strip() for block in blocks(README, "text"))
    outputs = [block for page in PAGES for block in blocks(page.read_text(), "text")]
    named = [name for name in (block.split("\n", 1)[0].strip() for block in outputs) if name]
    assert len(set(named)) == len(named) == len(README_OUTPUTS)
    sources = "\n".join(path.read_text() for path in (REPO / "tests").glob("test_*.py"))
    unchecked = [name for name in named if not re.search(rf"prints\(\s*\"{name}\"", sources)]
    assert unchecked == []


def test_ci_installs_the_requirements_and_runs_the_readme_test_command():
    lines = [line.strip() for line in CI_SCRIPT.splitlines()]
    assert "python -m pip install -r requirements.txt" in lines
    assert any(line.startswith("python -m pip install -r requirements-dev.txt") for line in lines)
    assert "-r requirements-bench.txt" in (REPO / "requirements-dev.txt").read_text()
    assert "command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)" in lines
    assert "command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)" in lines
    # The README's command in a fresh environment, then the layer that needs no broker with no
    # rabbitmq-server on PATH; every test on RabbitMQ 3.10, 4.0, and the newest 4.x made strict.
    assert '"$fresh/venv/bin/python" -m pytest' in lines
    assert (
        'env -u RABBITMQ_URL PATH=/usr/local/bin:/usr/bin:/bin "$fresh/venv/bin/python" -m pytest '
        '-m "not broker"'
    ) in lines
    every_test = 'python -m pytest -m "long or not long"'
    # on 3.10 the rest: the fresh environment's run above took the others
    assert 'python -m pytest -m "long or not broker"' in lines
    for command in (c for c in NOT_RUN_BY_TESTS if "with-rabbitmq4" in c):
        assert command in lines and command.endswith(every_test)
        assert command in readme_commands()


def test_the_learners_suite_leaves_only_the_long_tests_out_and_a_layer_needs_no_broker():
    """Every test is collectable from tests/; the README's command leaves out only what is
    marked long; at least 150 need no broker (docs/tests.md)."""

    def collected(*options: str) -> int:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
                *options,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        counts = re.search(r"(\d+)(?:/(\d+))? tests collected", done.stdout)
        assert counts is not None, done.stdout + done.stderr
        return int(counts[1])

    every = collected("-o", "addopts=", "tests")
    assert every >= 320
    assert collected() + collected("-o", "addopts=", "-m", "long") == every
    assert collected("-o", "addopts=", "-m", "not broker") >= 150


def test_the_performance_page_shows_the_benchmark_run_that_is_committed():
    """docs/performance.md's table is bench/results.md's (what `python -m bench.run` wrote),
    and the Russian page shows the same figures."""
    committed = table_rows((REPO / "bench/results.md").read_text())
    assert "\n".join(committed) in (REPO / "docs/performance.md").read_text()
    russian = table_rows((REPO / "docs/performance.ru.md").read_text())[: len(committed)]
    medians = [[row.split(" | ")[2] for row in rows[2:]] for rows in (russian, committed)]
    assert medians[0] == medians[1]  # below the header, translated


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
    # healthy once it answers and holds the lessons' policies, imported if missing
    # (docs/what-happens-when.md, "RabbitMQ's own delivery limit acts")
    policies = json.loads((REPO / "rabbitmq-policies.json").read_text())["policies"]
    assert all(policy["name"].startswith("lessons-") for policy in policies)
    assert service["healthcheck"]["test"] == [
        "CMD-SHELL",
        f'[ "$$(rabbitmqctl -q list_policies | grep -c lessons-)" = {len(policies)} ] || '
        "rabbitmqctl -q import_definitions /etc/rabbitmq/rabbitmq-policies.json",
    ]
    assert "rabbitmq-data:/var/lib/rabbitmq" in service["volumes"]
    policies = "./rabbitmq-policies.json:/etc/rabbitmq/rabbitmq-policies.json:ro"
    assert policies in service["volumes"]
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


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_the_russian_page_shows_the_same_blocks_in_the_same_order(page):
    """Commands, outputs (the scripts speak English in both) and code, block for block."""
    english, translated = page.read_text(), russian(page).read_text()
    for kind in ("bash", "text", "python", "json", "diagram"):
        assert blocks(translated, kind) == blocks(english, kind), kind
    assert f"[Русская версия]({russian(page).name})" in english
    assert f"[English version]({page.name})" in translated


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces made
    hyphens."""
    outside_code = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    headings = re.findall(r"^#+ (.*)$", outside_code, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda page: page.name)
def test_every_link_lands(page):
    """A file that exists; a heading of the page linked to; a line that holds the code the
    link shows ([`prefetch_count=1`](work_queue/worker.py#L76))."""
    outside_code = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    links = re.findall(r"\[([^\]]*)\]\(([^)\s]+)\)", outside_code)
    assert links
    for text, target in links:
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), target
        if fragment.startswith("L") and fragment[1:].isdigit():
            line = linked.read_text().splitlines()[int(fragment[1:]) - 1]
            code = re.fullmatch(r"`([^`]+)`", text)
            assert code, f"{target}: a line link shows the code it points at"
            assert code[1].removesuffix("()") in line, (target, line)
        elif fragment:
            assert fragment in anchors(linked), target


def quoted_python_blocks(page: Path) -> list[tuple[Path, str]]:
    """(file, code) for each ```python block that quotes this repository: the paragraph just
    before it links to a .py file, or it follows such a block directly. (Other Python, such
    as Celery's way of writing a chain, is not a quote.)"""
    text = page.read_text()
    quotes, quoted_file, previous_end = [], None, 0
    for block in re.finditer(r"^```python\n(.*?)^```\n", text, re.M | re.S):
        between = text[previous_end : block.start()]
        introduction = between.strip().split("\n\n")[-1]  # the paragraph just before it
        linked = re.findall(r"\]\(([\w./-]+\.py)\)", introduction)
        if linked:
            quoted_file = (page.parent / linked[-1]).resolve()
        elif between.strip():
            quoted_file = None
        if quoted_file is not None:
            quotes.append((quoted_file, block.group(1)))
        previous_end = block.end()
    return quotes


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda page: page.name)
def test_every_python_block_quoting_a_file_is_verbatim(page):
    """What the pages show of the code is what the code says, word for word (at any
    indentation): the lesson half of the wrapper, and a worker using it."""
    for file, code in quoted_python_blocks(page):
        source = file.read_text()
        indents = (textwrap.indent(code, " " * spaces) for spaces in range(0, 25, 4))
        assert any(indented in source for indented in indents), (file, code)


def test_the_wrapper_page_quotes_the_lesson_half_and_a_worker():
    quoted = {
        file.relative_to(REPO).as_posix()
        for file, _ in quoted_python_blocks(REPO / "docs" / "wrapper.md")
    }
    assert quoted == {"rabbit_queues/broker.py", "work_queue/worker.py"}


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


LESSON_QUEUES = {  # what each lesson's scripts declare, by the names the wrapper gives them
    "hello_world": {HELLO.name},
    "work_queue": {
        TASK_QUEUE.name,
        retry_queue(TASK_QUEUE).name,
        dead_letter_queue(TASK_QUEUE).name,
    },
    "task_queue": {TASKS.name, RESULTS.name},
}


@pytest.mark.parametrize("page", [REPO / "README.md", REPO / "README.ru.md"], ids=lambda p: p.name)
def test_each_lesson_opens_with_a_diagram_of_its_queues(page):
    """A picture of the flow first, as RabbitMQ's tutorials open each lesson; its queues,
    [ name ], are the ones the lesson's scripts use."""
    lessons = re.findall(
        r"^## \S+ \d: (\w+)\n\n```diagram\n(.*?)^```", page.read_text(), re.M | re.S
    )
    assert [lesson for lesson, _ in lessons] == list(LESSON_QUEUES)
    for lesson, diagram in lessons:
        assert set(re.findall(r"\[ ([\w.]+) \]", diagram)) == LESSON_QUEUES[lesson], lesson
        assert max(map(len, diagram.splitlines())) <= 100  # a terminal's width, and GitHub's
