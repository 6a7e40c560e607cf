"""The benchmark runs from one command and reports every row (no speed is asserted here)."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import table_rows
from rabbitmq_node import free_port
from script_runner import REPO, succeeded

from rabbit_queues.connection import how_to_start_rabbitmq

# Long (the benchmarks, against Celery and Dramatiq too): python -m pytest -m long (docs/tests.md).
pytestmark = [pytest.mark.long]

# Lesson 2's queues: the benchmarks run its worker on them, declared classic, and delete them.
LESSON_2_QUEUES = ("task_queue", "task_queue.retry", "task_queue.dlq")

PEERS = ("celery", "dramatiq", "matplotlib")
ROWS = [
    "| Enqueue, msg/s | this project: pipelined confirms |",
    "|  | bare pika, no confirms (the ceiling) |",
    "|  | bare pika, one confirm per message |",
    "|  | Celery apply_async, confirm_publish |",
    "|  | Dramatiq send, confirm_delivery |",
    "| Drain, one worker, msg/s | work_queue/worker.py, prefetch 1 |",
    "|  | work_queue/worker.py --burst |",
    "|  | bare pika loop, prefetch 1, ack inline |",
    "|  | pika, handler thread per message, threadsafe ack |",
    "|  | Celery prefork -c 1, acks late, prefetch 1 |",
    "|  | Celery, the same with its default prefetch (4) |",
    "|  | Dramatiq, 1 process, 1 thread |",
    "| Fair dispatch, makespan s | 3 workers, prefetch 1 |",
    "|  | 3 workers, unlimited prefetch |",
    "| Worker memory, MB | work_queue/worker.py, resident |",
]


def skip_unless_it_can_run(module: str) -> None:
    """What each benchmark looks for first: bench.run its peers (requirements-bench.txt, not
    in requirements.txt), bench.instructions valgrind. Without them, a test of it skips."""
    missing = [name for name in PEERS if importlib.util.find_spec(name) is None]
    if module == "run" and missing:
        pytest.skip(f"pip install -r requirements-bench.txt (missing: {', '.join(missing)})")
    if module == "instructions" and shutil.which("valgrind") is None:
        pytest.skip("apt-get install valgrind (bench/instructions.py counts with callgrind)")


@pytest.mark.timeout(300)
def test_the_benchmark_produces_every_row_and_the_chart(broker, probe, tmp_path):
    skip_unless_it_can_run("run")
    for queue in LESSON_2_QUEUES:  # as a learner's lessons left them: empty, quorum
        probe.declare(queue)
    temporary = tmp_path / "tmp"  # where the benchmark and every worker it starts write theirs
    temporary.mkdir()

    output = run_bench(
        "run",
        "--n",
        "20",
        "--repeats",
        "1",
        "--drain-budget",
        "5",  # a stalled peer is rated after 5 s, not 30
        "--url",
        broker.url,
        "--out",
        str(tmp_path),
        timeout=280,
        env={**os.environ, "TMPDIR": str(temporary)},
    )
    table = (tmp_path / "results.md").read_text()
    assert output.strip() == table.strip()
    for row in ROWS:
        assert row in table
    assert "N = 20 no-op tasks per measurement, median of 1 run(s)" in table
    assert (tmp_path / "results.png").read_bytes().startswith(b"\x89PNG")
    for queue in LESSON_2_QUEUES:
        assert probe.depth(queue) is None  # deleted afterwards
    assert list(temporary.iterdir()) == []  # nothing left (Celery left a pymp-* one run in four)


@pytest.mark.timeout(120)
def test_the_quorum_benchmark_compares_both_queue_types(broker, probe):
    output = run_bench("quorum", "--n", "20", "--repeats", "1", "--url", broker.url, timeout=100)
    rows = table_rows(output)
    assert rows[0] == (
        "| measure | classic, msg/s | quorum, msg/s | quorum / classic | quorum adds per task |"
    )
    assert [row.split(" | ")[0] for row in rows[2:]] == [
        "| enqueue, pipelined confirms",
        "| drain, one worker, prefetch 1",
        "| drain, bare pika loop, prefetch 1",
    ]
    assert re.search(
        r"^This project's worker against the bare pika loop, median of the runs' ratios: "
        r"[\d.]+x on the classic queue, [\d.]+x on the quorum queue\.$",
        output,
        re.M,
    ), output
    for row in rows[2:]:
        assert re.fullmatch(r"\| .+ \| [\d,]+ \| [\d,]+ \| [\d.]+x \| [+-][\d,]+ µs \|", row), row
    for queue in ("bench.classic", "bench.quorum", "bench.quorum.dlq"):
        assert probe.depth(queue) is None  # deleted afterwards


@pytest.mark.timeout(300)
def test_the_instruction_count_compares_each_worker_with_bare_pika(broker, probe):
    skip_unless_it_can_run("instructions")

    output = run_bench("instructions", "--n", "50", "--url", broker.url, timeout=280)
    rows = table_rows(output)
    assert rows[0] == "| worker | instructions per message | against bare pika |"
    counted = [re.fullmatch(r"\| (.+) \| ([\d,]+) \| ([\d.]+)x \|", row) for row in rows[2:]]
    assert [match.group(1) for match in counted if match] == [
        "bare pika loop, prefetch 1, ack inline",
        "this project's consume path, a handler that only acks (bench/project_worker.py)",
        "work_queue/worker.py, its two prints to /dev/null",
    ]
    assert counted[0].group(3) == "1.000"  # the others are against it
    assert all(int(match.group(2).replace(",", "")) > 0 for match in counted)
    assert "N = 50 no-op tasks against 5, counted by valgrind's callgrind" in output
    for queue in ("bench.bare", *LESSON_2_QUEUES):
        assert probe.depth(queue) is None  # deleted afterwards


@pytest.mark.timeout(60)
@pytest.mark.parametrize("module", ["run", "quorum", "instructions"])
def test_a_benchmark_whose_broker_does_not_answer_says_so_in_one_line(module):
    skip_unless_it_can_run(module)
    port = free_port()  # nothing listens there

    ran = bench_process(module, "--url", f"amqp://guest:guest@127.0.0.1:{port}/%2F", timeout=50)

    assert ran.returncode == 1
    assert ran.stderr == (
        f"error: cannot reach RabbitMQ at 127.0.0.1:{port} (connection refused): start the "
        f"broker ({how_to_start_rabbitmq()}) or check --url or the AMQP_URL environment "
        "variable\n"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("module", ["run", "instructions"])
def test_a_benchmark_leaves_a_learners_dead_letter_alone_and_says_why(broker, probe, module):
    skip_unless_it_can_run(module)
    for queue in LESSON_2_QUEUES:
        probe.declare(queue)
    probe.publish("task_queue.dlq", b"a dead letter of lesson 2's")

    ran = bench_process(module, "--url", broker.url, timeout=50)

    assert ran.returncode == 1
    assert ran.stderr == (
        "error: task_queue.dlq is in use (1 message, 0 consumers); the benchmark runs the "
        "lesson's worker on task_queue, task_queue.retry, task_queue.dlq and deletes them: "
        "empty them and stop their workers first, or give --url another vhost\n"
    )
    assert [probe.depth(queue) for queue in LESSON_2_QUEUES] == [0, 0, 1]


@pytest.mark.timeout(60)
def test_the_benchmark_without_its_peers_says_what_to_install_before_anything_else(tmp_path):
    # A package that is not there, as the import system reports it; and a broker that is
    # not there either: the missing peer is what it must say, before it connects.
    (tmp_path / "dramatiq").mkdir()
    (tmp_path / "dramatiq/__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'dramatiq'\", name='dramatiq')\n"
    )
    port = free_port()

    ran = bench_process(
        "run",
        "--url",
        f"amqp://guest:guest@127.0.0.1:{port}/%2F",
        timeout=50,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )

    # The first of them it misses: dramatiq, or one before it where the peers are not there.
    first = next(name for name in PEERS if name == "dramatiq" or not importlib.util.find_spec(name))
    assert ran.returncode == 1
    assert ran.stderr == f"error: {first} is not installed: pip install -r requirements-bench.txt\n"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("module", "option", "value", "error"),
    [
        ("run", "--n", "0", "error: --n must be at least 1"),
        ("run", "--repeats", "0", "error: --repeats must be at least 1"),
        ("run", "--drain-budget", "-1", "error: --drain-budget must be at least 1"),
        ("quorum", "--n", "-5", "error: --n must be at least 1"),
        ("instructions", "--n", "5", "error: --n must be at least 20"),
    ],
)
def test_a_benchmark_refuses_a_count_it_cannot_run_in_one_line(module, option, value, error):
    skip_unless_it_can_run(module)
    port = free_port()  # nothing listens there: the check comes before connecting

    ran = bench_process(
        module, option, value, "--url", f"amqp://guest:guest@127.0.0.1:{port}/%2F", timeout=50
    )

    assert (ran.returncode, ran.stderr) == (1, f"{error}\n")


def run_bench(module: str, *args: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """What ``python -m bench.<module> <args>`` printed, once it has succeeded."""
    ran = bench_process(module, *args, timeout=timeout, env=env)
    succeeded(ran)
    return ran.stdout


def bench_process(
    module: str, *args: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bench.<module> <args>`` within ``timeout`` seconds (less than the
    test's own)."""
    return subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(60)
def test_the_start_up_yardstick_sends_what_new_task_sends(scripts, probe):
    """bench/bare_pika_new_task.py, timed against `work_queue/new_task.py "x"` in
    docs/performance.md, leaves the same task in the same queue, and says the same."""
    for command in ('python work_queue/new_task.py "x"', 'python bench/bare_pika_new_task.py "x"'):
        sent = scripts.run(command)
        assert (sent.returncode, sent.stdout, sent.stderr) == (0, " [x] Sent 'x'\n", ""), command
    ((first, body), (second, same)) = probe.get_all("task_queue")
    assert body == same == b"x"
    assert first.delivery_mode == second.delivery_mode == 2
