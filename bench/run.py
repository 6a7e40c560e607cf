"""Side by side, in one run, on one broker: this project, bare pika, Celery and Dramatiq.

  python -m bench.run                      N=20,000 tasks, 3 repeats, on AMQP_URL's broker
  python -m bench.run --n 2000 --repeats 1

It uses its own queues (bench.*, bench_dramatiq*) and task_queue, with its .retry and .dlq,
and deletes them afterwards; it refuses to start if one of the last three holds a message or
has a worker. It prints a Markdown table of medians and ratios and writes it, with a PNG chart,
to --out.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from subprocess import DEVNULL

import pika

from rabbit_queues.broker import Broker
from rabbit_queues.cli import counted, run_script
from rabbit_queues.connection import broker_url, connect
from rabbit_queues.pipelined import publish_pipelined
from rabbit_queues.queues import QueueCounts, QueueSpec

REPO = Path(__file__).resolve().parent.parent
# The lesson's worker consumes task_queue; the benchmark declares it classic, as the bare loops'.
LESSON_QUEUE = QueueSpec("task_queue")
# With the retry and dead-letter queues the lesson's worker declares (classic too, here).
LESSON_QUEUES = [f"{LESSON_QUEUE.name}{suffix}" for suffix in ("", ".retry", ".dlq")]
WORKER_ARGS = ["--queue-type", "classic"]
BARE, BARE_CONFIRM_EACH = "bench.bare", "bench.bare_confirm_each"
CELERY, DRAMATIQ = "bench.celery", "bench_dramatiq"
FAIR = "bench.fair"
# With the retry and dead-letter queues this project's workers declare.
BENCH_QUEUES = [BARE, BARE_CONFIRM_EACH, CELERY, DRAMATIQ, FAIR, f"{FAIR}.retry", f"{FAIR}.dlq"]
BENCH_QUEUES += LESSON_QUEUES
PEERS = ("celery", "dramatiq", "matplotlib")  # requirements-bench.txt: the peers and the chart
DRAMATIQ_EXTRA = ["bench_dramatiq.DQ", "bench_dramatiq.XQ"]  # its delay and dead-letter queues
# Fair dispatch: every third task is long. Dealt round-robin, they all land on one worker.
# (Long ones first: a greedy dispatcher cannot do better than the last long task started.)
SKEWED_MS = [400 if number < 30 and number % 3 == 0 else 20 for number in range(60)]
WORKERS = 3
DRAIN_BUDGET = 30  # seconds a drain may take before its rate is taken from what it did so far
STALL_SECONDS = 10  # a worker that takes no task for this long has stalled


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", help="broker (default: AMQP_URL, else the local default)")
    parser.add_argument("--n", type=int, default=20_000, help="no-op tasks per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="where to write")
    parser.add_argument(
        "--drain-budget",
        type=float,
        default=DRAIN_BUDGET,
        help="seconds a drain may take; a slower worker is rated on what it did by then",
    )
    args = parser.parse_args()
    require_at_least(1, n=args.n, repeats=args.repeats, drain_budget=args.drain_budget)
    for peer in PEERS:  # before a minute of work, not in the middle of it
        try:
            importlib.import_module(peer)
        except ModuleNotFoundError as missing:
            install = "pip install -r requirements-bench.txt"
            sys.exit(f"error: {missing.name} is not installed: {install}")
    url = broker_url(args.url)
    os.environ["BENCH_DRAIN_BUDGET"] = str(args.drain_budget)
    os.environ["BENCH_AMQP_URL"] = url  # read by the Celery and Dramatiq peers

    samples: dict[str, list[float | None]] = {}
    # The workers' temporary files go in a directory of the benchmark's own, removed at the end:
    # Celery's prefork pool, stopped with SIGTERM, can leave an empty pymp-* directory behind.
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, Probe(url) as probe:
        os.environ["TMPDIR"] = scratch  # for the workers it starts (this process has its own)
        probe.take_over_lesson_queues()
        try:
            for repeat in range(1, args.repeats + 1):
                print(f" [*] Run {repeat} of {args.repeats} (N={args.n})", file=sys.stderr)
                for name, value in run_once(url, probe, args.n, repeat).items():
                    samples.setdefault(name, []).append(value)
                    print(f"     {name}: {show(value)}", file=sys.stderr)
        finally:
            probe.delete(BENCH_QUEUES + DRAMATIQ_EXTRA)
    medians = {name: median(values) for name, values in samples.items()}
    table = markdown_table(medians, args.n, args.repeats)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table)
    draw_chart(medians, args.out / "results.png")


def require_at_least(minimum: float, **options: float) -> None:
    """Exit with one line if an option is below ``minimum``: before any work, not in it."""
    for name, value in options.items():
        if not value >= minimum:  # NaN too
            sys.exit(f"error: --{name.replace('_', '-')} must be at least {minimum:g}")


def run_once(url: str, probe: Probe, n: int, repeat: int) -> dict[str, float | None]:
    python = sys.executable
    measured: dict[str, float | None] = {}
    # Emptied, not deleted: Celery's producer remembers the queues it declared, and would
    # publish to a deleted one (into nothing) without declaring it again.
    probe.purge(BENCH_QUEUES + DRAMATIQ_EXTRA)

    # Enqueue N no-op tasks, bare and this project's way, one after the other into fresh
    # queues (the order swapped every other run). Bare pika without confirms is done when it
    # has written them, not when RabbitMQ has taken them: the next enqueue starts once the
    # queue holds all N, so that it does not pay for the broker's backlog of the last.
    enqueues = [
        ("bare", BARE, lambda: enqueue_bare(url, BARE, n, confirm_each=False)),
        ("project", LESSON_QUEUE.name, lambda: enqueue_project(url, n, LESSON_QUEUE)),
    ]
    for key, queue, enqueue in enqueues if repeat % 2 else reversed(enqueues):
        measured[f"enqueue.{key}"] = bounded(enqueue, n)
        wait_until_queued(probe, queue, n)
    probe.delete([BARE, LESSON_QUEUE.name])
    # One worker drains N no-op tasks: the bare loop, the lesson's worker both ways, and the
    # threaded pika consumer, one after another on freshly filled queues (in reverse order
    # every other run, so that none always goes first).
    lesson_worker = [python, "work_queue/worker.py", "--url", url, *WORKER_ARGS]
    drains = [
        ("bare", BARE, [python, "-m", "bench.bare_pika_worker", "--url", url, "--queue", BARE]),
        ("project_run", LESSON_QUEUE.name, lesson_worker),
        ("project_burst", LESSON_QUEUE.name, [*lesson_worker, "--burst"]),
        (
            "threaded",
            BARE,
            [python, "-m", "bench.threaded_pika_worker", "--url", url, "--queue", BARE],
        ),
    ]
    for key, queue, command in drains if repeat % 2 else reversed(drains):
        if queue == BARE:
            enqueue_bare(url, BARE, n, confirm_each=False)
        else:
            enqueue_project(url, n, LESSON_QUEUE)
        measured[f"drain.{key}"], measured[f"memory.{key}"] = drain(probe, queue, n, command)
    measured["enqueue.bare_confirm_each"] = bounded(
        lambda: enqueue_bare(url, BARE_CONFIRM_EACH, n, confirm_each=True), n
    )
    # Celery's default pool (prefork), one child; its solo pool stalls here at prefetch 1.
    celery_worker = [python, "-m", "celery", "-A", "bench.celery_peer", "worker"]
    celery_worker += ["--concurrency=1", "-Q", CELERY, "--without-gossip", "--without-mingle"]
    celery_worker += ["--without-heartbeat", "--loglevel=WARNING"]
    for key, prefetch in (("celery", "1"), ("celery_prefetch_4", "4")):
        os.environ["BENCH_CELERY_PREFETCH"] = prefetch  # 4: Celery's default multiplier
        measured[f"enqueue.{key}"] = bounded(lambda: enqueue_celery(n), n)
        measured[f"drain.{key}"], _ = drain(probe, CELERY, n, celery_worker)
    measured["enqueue.dramatiq"] = bounded(lambda: enqueue_dramatiq(n), n)
    dramatiq_worker = [python, "-m", "dramatiq", "bench.dramatiq_peer", "--processes", "1"]
    measured["drain.dramatiq"], _ = drain(probe, DRAMATIQ, n, [*dramatiq_worker, "--threads", "1"])
    # Fair dispatch: the skewed workload on three workers, prefetch 1 against unlimited.
    measured["fair.prefetch_1"] = makespan(url, probe, prefetch=1)
    measured["fair.unlimited"] = makespan(url, probe, prefetch=0)
    return measured


# -- enqueueing ---------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bounded(action: Callable[[], object], n: int) -> float | None:
    """``n`` / the seconds ``action`` takes; None (stalled) if it takes over a minute."""
    spent: list[float] = []
    thread = threading.Thread(target=lambda: spent.append(timed(action)), daemon=True)
    thread.start()
    thread.join(STALL_SECONDS * 6)
    return n / spent[0] if spent else None


def enqueue_project(url: str, n: int, queue: QueueSpec, body: str = "x") -> None:
    """This project's `new_task.py -` path: pipelined confirms, `pipelined.WINDOW` in flight.
    ("x" is a no-op for work_queue/worker.py; bench/project_worker.py takes "0".)"""
    with Broker(url) as broker:
        broker.declare(queue)
        publish_pipelined(broker, queue, ((body, {}) for _ in range(n)), persistent=True)


def enqueue_bare(url: str, queue: str, n: int, *, confirm_each: bool) -> None:
    """Bare pika: no confirms at all (the ceiling), or one round trip per confirm."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    if confirm_each:
        channel.confirm_delivery()
    properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    for _ in range(n):
        channel.basic_publish("", queue, b"x", properties)
    connection.close()


def enqueue_celery(n: int) -> None:
    from bench.celery_peer import noop

    for _ in range(n):
        noop.apply_async()


def enqueue_dramatiq(n: int) -> None:
    from bench.dramatiq_peer import noop

    for _ in range(n):
        noop.send()


# -- draining -----------------------------------------------------------------------------


def drain(
    probe: Probe, queue: str, n: int, command: list[str], *, stall_seconds: float = STALL_SECONDS
) -> tuple[float | None, float]:
    """Start a worker (output to /dev/null) on a queue holding ``n`` tasks; return (tasks/s,
    its RSS in MB), tasks/s None if it stalled. Then stop it with SIGTERM.

    Timed from the first task taken to the queue's last, both seen by passive declares (the
    worker's start-up does not count; the task it still holds, at prefetch 1, is one in
    ``n``). A worker still at it after --drain-budget seconds is rated on what it took by
    then; one that takes nothing for ``stall_seconds`` is stalled (and one still running
    twice that long after SIGTERM is killed).
    """
    wait_until_queued(probe, queue, n)
    started = time.perf_counter()
    worker = subprocess.Popen(command, cwd=REPO, stdout=DEVNULL, stderr=DEVNULL)
    try:
        first_seen = first_depth = None
        last_change, last_depth = time.monotonic(), n
        while True:
            probe.connection.process_data_events(time_limit=0)  # keeps its heartbeats going
            depth, now = probe.depth(queue), time.perf_counter()
            if depth != last_depth:
                last_change, last_depth = time.monotonic(), depth
            elif time.monotonic() - last_change > stall_seconds:
                return None, resident_megabytes(worker.pid)
            if first_seen is None and depth == 0:  # all taken at once (a tiny N): with start-up
                return n / (now - started), resident_megabytes(worker.pid)
            if first_seen is None and 0 <= depth < n:
                first_seen, first_depth = now, depth
            if first_seen is not None and (depth == 0 or now - first_seen > budget()):
                return (first_depth - depth) / (now - first_seen), resident_megabytes(worker.pid)
            time.sleep(0.005)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=2 * stall_seconds)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        probe.channel.queue_purge(queue)  # what a slow worker left


def wait_until_queued(probe: Probe, queue: str, n: int) -> None:
    """Until ``queue`` holds the ``n`` tasks just sent (unconfirmed ones may still arrive)."""
    deadline = time.monotonic() + STALL_SECONDS
    while (waiting := probe.depth(queue)) != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queue} holds {waiting} tasks, not the {n} just enqueued")
        time.sleep(0.05)


def budget() -> float:
    return float(os.environ["BENCH_DRAIN_BUDGET"])


def resident_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def makespan(url: str, probe: Probe, *, prefetch: int) -> float:
    """Seconds from publishing the skewed workload to its last task done, on three workers."""
    probe.delete([FAIR])
    probe.channel.queue_declare(FAIR, durable=True)
    command = [
        sys.executable,
        "-m",
        "bench.project_worker",
        "--url",
        url,
        "--queue",
        FAIR,
        "--prefetch",
        str(prefetch),
    ]
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(WORKERS)
    ]
    done = threading.Semaphore(0)
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", "a worker did not start"
            threading.Thread(target=count_done, args=(worker, done), daemon=True).start()
        started = time.perf_counter()
        messages = ((str(milliseconds), {}) for milliseconds in SKEWED_MS)
        with Broker(url) as broker:
            publish_pipelined(broker, QueueSpec(FAIR), messages, persistent=True)
        for _ in SKEWED_MS:
            if not done.acquire(timeout=60):
                raise RuntimeError("the skewed workload did not finish in time")
        return time.perf_counter() - started
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(timeout=20)


def count_done(worker: subprocess.Popen[str], done: threading.Semaphore) -> None:
    assert worker.stdout is not None
    for line in worker.stdout:
        if line.strip() == "done":
            done.release()


def ideal_makespan() -> float:
    """No schedule beats the work spread evenly, or the longest task."""
    return max(sum(SKEWED_MS) / WORKERS, max(SKEWED_MS)) / 1000


# -- the broker, as the benchmark sees it ---------------------------------------------


class Probe:
    def __init__(self, url: str) -> None:
        self.connection, _node = connect(url)
        self.counts = QueueCounts(self.connection)

    @property
    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        return self.counts.channel  # a new one after a 404

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.connection.close()

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue``; -1 if it is not declared (yet, by its worker)."""
        depth = self.counts.depth(queue)
        return -1 if depth is None else depth

    def take_over_lesson_queues(self) -> None:
        """Delete task_queue, its .retry and .dlq, so that the benchmark declares them classic
        whatever the lessons declared; exit with one line instead if one holds a message or has
        a consumer (a learner's tasks, dead letters or worker)."""
        for queue in LESSON_QUEUES:
            declared = self.counts.of(queue)
            if declared is not None and (declared.message_count or declared.consumer_count):
                sys.exit(
                    f"error: {queue} is in use ({counted(declared.message_count, 'messages')}, "
                    f"{counted(declared.consumer_count, 'consumers')}); the benchmark runs the "
                    f"lesson's worker on {', '.join(LESSON_QUEUES)} and deletes them: empty "
                    "them and stop their workers first, or give --url another vhost"
                )
        self.delete(LESSON_QUEUES)

    def purge(self, queues: list[str]) -> None:
        for queue in queues:
            if self.depth(queue) > 0:
                self.channel.queue_purge(queue)

    def delete(self, queues: list[str]) -> None:
        for queue in queues:
            self.channel.queue_delete(queue)


# -- reporting ----------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    """The median of the runs; None (stalled) if any run stalled."""
    return None if None in values else statistics.median(v for v in values if v is not None)


def show(value: float | None) -> str:
    if value is None:
        return "stalled"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def times(a: float | None, b: float | None, digits: int = 2) -> str:
    """a / b as '1.23x', or 'n/a' where either stalled or b measured nothing."""
    return f"{a / b:.{digits}f}x" if a and b else "n/a"


def markdown_table(medians: dict[str, float | None], n: int, repeats: int) -> str:
    m = medians
    ideal = ideal_makespan()

    def against(key: str, digits: int = 2) -> str:
        return f"{times(m[key], m['drain.bare'], digits)} bare pika"

    def peers(key: str) -> str:
        return (
            f"{times(m[key], m['drain.celery'], 1)} Celery, "
            f"{times(m[key], m['drain.dramatiq'], 1)} Dramatiq"
        )

    rows = [
        (
            "Enqueue, msg/s",
            "this project: pipelined confirms",
            m["enqueue.project"],
            f"{times(m['enqueue.project'], m['enqueue.bare'], 2)} bare without confirms, "
            f"{times(m['enqueue.project'], m['enqueue.celery'], 1)} Celery, "
            f"{times(m['enqueue.project'], m['enqueue.dramatiq'], 1)} Dramatiq",
        ),
        ("", "bare pika, no confirms (the ceiling)", m["enqueue.bare"], ""),
        ("", "bare pika, one confirm per message", m["enqueue.bare_confirm_each"], ""),
        ("", "Celery apply_async, confirm_publish", m["enqueue.celery"], ""),
        ("", "Dramatiq send, confirm_delivery", m["enqueue.dramatiq"], ""),
        (
            "Drain, one worker, msg/s",
            "work_queue/worker.py, prefetch 1",
            m["drain.project_run"],
            f"{against('drain.project_run')}, {peers('drain.project_run')}",
        ),
        (
            "",
            "work_queue/worker.py --burst",
            m["drain.project_burst"],
            f"{against('drain.project_burst')}, {peers('drain.project_burst')}",
        ),
        ("", "bare pika loop, prefetch 1, ack inline", m["drain.bare"], ""),
        (
            "",
            "pika, handler thread per message, threadsafe ack",
            m["drain.threaded"],
            against("drain.threaded"),
        ),
        ("", "Celery prefork -c 1, acks late, prefetch 1", m["drain.celery"], ""),
        ("", "Celery, the same with its default prefetch (4)", m["drain.celery_prefetch_4"], ""),
        ("", "Dramatiq, 1 process, 1 thread", m["drain.dramatiq"], ""),
        (
            "Fair dispatch, makespan s",
            "3 workers, prefetch 1",
            m["fair.prefetch_1"],
            f"{times(m['fair.prefetch_1'], ideal)} the ideal {ideal:.2f} s",
        ),
        (
            "",
            "3 workers, unlimited prefetch",
            m["fair.unlimited"],
            f"{times(m['fair.unlimited'], ideal)} the ideal",
        ),
        ("Worker memory, MB", "work_queue/worker.py, resident", m["memory.project_run"], ""),
    ]
    lines = [
        "| measure | what | median | ratio |",
        "| --- | --- | ---: | --- |",
        *(
            f"| {measure} | {what} | {show(value)} | {ratio} |"
            for measure, what, value, ratio in rows
        ),
        "",
        f"N = {n:,} no-op tasks per measurement, median of {repeats} run(s), all in one run on "
        f"one broker. {machine()}",
        "",
    ]
    return "\n".join(lines)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    packages = ", ".join(f"{name} {version(name)}" for name in ("pika", "celery", "dramatiq"))
    return (
        f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {packages}."
    )


def draw_chart(medians: dict[str, float | None], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "Enqueue with confirms (msg/s)": [
            ("this project", medians["enqueue.project"]),
            ("bare pika, no confirms", medians["enqueue.bare"]),
            ("bare pika, confirm each", medians["enqueue.bare_confirm_each"]),
            ("Celery", medians["enqueue.celery"]),
            ("Dramatiq", medians["enqueue.dramatiq"]),
        ],
        "Drain, one worker, prefetch 1 (msg/s)": [
            ("this project", medians["drain.project_run"]),
            ("this project, --burst", medians["drain.project_burst"]),
            ("bare pika", medians["drain.bare"]),
            ("pika, threaded handler", medians["drain.threaded"]),
            ("Celery", medians["drain.celery"]),
            ("Celery, prefetch 4", medians["drain.celery_prefetch_4"]),
            ("Dramatiq", medians["drain.dramatiq"]),
        ],
        "Skewed workload, 3 workers (makespan, s)": [
            ("prefetch 1", medians["fair.prefetch_1"]),
            ("unlimited prefetch", medians["fair.unlimited"]),
            ("ideal", ideal_makespan()),
        ],
    }
    figure, axes = plt.subplots(len(groups), 1, figsize=(8, 8))
    for axis, (title, bars) in zip(axes, groups.items(), strict=True):
        labels, values = zip(*((label, value or 0) for label, value in bars), strict=True)
        colours = [
            "tab:green" if label in ("this project", "prefetch 1") else "tab:gray"
            for label in labels
        ]
        axis.barh(labels, values, color=colours)
        axis.invert_yaxis()
        axis.set_title(title)
        for position, value in enumerate(values):
            axis.text(
                value, position, f" {value:,.0f}" if value >= 100 else f" {value:.2f}", va="center"
            )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    run_script(main)  # a broker that does not answer: one line, not a traceback
