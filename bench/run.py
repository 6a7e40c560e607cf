"""Side by side, in one run, on one broker: this project, bare pika, Celery and Dramatiq.

  python -m bench.run                      N=20,000 tasks, 3 repeats, on AMQP_URL's broker
  python -m bench.run --n 2000 --repeats 1

It uses its own queues (bench.*, bench_dramatiq*) and deletes them afterwards. It prints a
Markdown table of medians and ratios and writes it, with a PNG chart, to --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pika

from rabbit_queues import QueueSpec, broker_url
from rabbit_queues.pipelined import publish_pipelined

PROJECT, BARE, BARE_CONFIRM_EACH = "bench.project", "bench.bare", "bench.bare_confirm_each"
CELERY, DRAMATIQ = "bench.celery", "bench_dramatiq"
FAIR = "bench.fair"
BENCH_QUEUES = [PROJECT, BARE, BARE_CONFIRM_EACH, CELERY, DRAMATIQ, FAIR] + [
    f"{queue}.{suffix}" for queue in (PROJECT, FAIR) for suffix in ("retry", "dlq")
]  # with the retry and dead-letter queues this project's worker declares
DRAMATIQ_EXTRA = ["bench_dramatiq.DQ", "bench_dramatiq.XQ"]  # its delay and dead-letter queues
# Fair dispatch: every third task is long. Dealt round-robin, they all land on one worker.
# (Long ones first: a greedy dispatcher cannot do better than the last long task started.)
SKEWED_MS = [400 if number < 30 and number % 3 == 0 else 20 for number in range(60)]
WORKERS = 3
DRAIN_BUDGET = 30  # seconds a drain may take before its rate is taken from what it did so far


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
    url = broker_url(args.url)
    os.environ["BENCH_DRAIN_BUDGET"] = str(args.drain_budget)
    os.environ["BENCH_AMQP_URL"] = url  # read by the Celery and Dramatiq peers

    samples: dict[str, list[float]] = {}
    with Probe(url) as probe:
        try:
            for repeat in range(1, args.repeats + 1):
                print(f" [*] Run {repeat} of {args.repeats} (N={args.n})", file=sys.stderr)
                for name, value in run_once(url, probe, args.n).items():
                    samples.setdefault(name, []).append(value)
                    print(f"     {name}: {value:,.2f}", file=sys.stderr)
        finally:
            probe.delete(BENCH_QUEUES + DRAMATIQ_EXTRA)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    table = markdown_table(medians, args.n, args.repeats)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table)
    draw_chart(medians, args.out / "results.png")


def run_once(url: str, probe: Probe, n: int) -> dict[str, float]:
    python = sys.executable
    measured: dict[str, float] = {}
    probe.delete(BENCH_QUEUES + DRAMATIQ_EXTRA)
    QueueSpec(PROJECT).declare(probe.channel)

    # Enqueue N no-op tasks with confirms, each way; then drain them with one worker.
    measured["enqueue.project"] = n / timed(lambda: enqueue_project(url, n, QueueSpec(PROJECT)))
    measured["drain.project"], rss = drain(
        probe, PROJECT, n, [python, "-m", "bench.project_worker", "--url", url, "--queue", PROJECT]
    )
    measured["memory.project"] = rss
    measured["enqueue.bare"] = n / timed(lambda: enqueue_bare(url, BARE, n, confirm_each=False))
    measured["drain.bare"], _ = drain(
        probe, BARE, n, [python, "-m", "bench.bare_pika_worker", "--url", url, "--queue", BARE]
    )
    measured["enqueue.bare_confirm_each"] = n / timed(
        lambda: enqueue_bare(url, BARE_CONFIRM_EACH, n, confirm_each=True)
    )
    measured["enqueue.celery"] = n / timed(lambda: enqueue_celery(n))
    celery_worker = [
        python,
        "-m",
        "celery",
        "-A",
        "bench.celery_peer",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        CELERY,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
    ]
    measured["drain.celery"], _ = drain(probe, CELERY, n, celery_worker)
    os.environ["BENCH_CELERY_PREFETCH"] = "4"  # Celery's default multiplier, for comparison
    enqueue_celery(n)
    measured["drain.celery_prefetch_4"], _ = drain(probe, CELERY, n, celery_worker)
    del os.environ["BENCH_CELERY_PREFETCH"]
    measured["enqueue.dramatiq"] = n / timed(lambda: enqueue_dramatiq(n))
    measured["drain.dramatiq"], _ = drain(
        probe,
        DRAMATIQ,
        n,
        [python, "-m", "dramatiq", "bench.dramatiq_peer", "--processes", "1", "--threads", "1"],
    )
    # Fair dispatch: the skewed workload on three workers, prefetch 1 against unlimited.
    measured["fair.prefetch_1"] = makespan(url, probe, prefetch=1)
    measured["fair.unlimited"] = makespan(url, probe, prefetch=0)
    return measured


# -- enqueueing ---------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def enqueue_project(url: str, n: int, queue: QueueSpec) -> None:
    """This project's `new_task.py -` path: pipelined confirms, a window of 1,000."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        queue.declare(connection.channel())
    messages = (("0" if number < n - 1 else "mark", {}) for number in range(n))
    publish_pipelined(url, queue, messages, persistent=True)


def enqueue_bare(url: str, queue: str, n: int, *, confirm_each: bool) -> None:
    """Bare pika: no confirms at all (the ceiling), or one round trip per confirm."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    if confirm_each:
        channel.confirm_delivery()
    properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    for number in range(n):
        channel.basic_publish("", queue, b"0" if number < n - 1 else b"mark", properties)
    connection.close()


def enqueue_celery(n: int) -> None:
    from bench.celery_peer import mark, noop

    for _ in range(n - 1):
        noop.apply_async()
    mark.apply_async()


def enqueue_dramatiq(n: int) -> None:
    from bench.dramatiq_peer import mark, noop

    for _ in range(n - 1):
        noop.send()
    mark.send()


# -- draining -----------------------------------------------------------------------------


def drain(probe: Probe, queue: str, n: int, command: list[str]) -> tuple[float, float]:
    """Start a worker on a queue holding ``n`` tasks; return (tasks/s, its RSS in MB).

    Timed from the first task taken (the queue's depth drops, seen by passive declares; the
    worker's start-up does not count) to the last task done: the queue is first in, first
    out, so when the last task, the 'mark', touches its file, all the others are done. A
    worker still at it after --drain-budget seconds is rated on what it took off the queue by
    then (its prefetch, at most a few tasks, counted as done).
    """
    mark_file = Path(tempfile.mkdtemp()) / "mark"
    os.environ["BENCH_MARK_FILE"] = str(mark_file)
    started = time.perf_counter()
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first_seen = first_depth = None
        deadline = time.monotonic() + 120
        while not mark_file.exists():
            probe.connection.process_data_events(time_limit=0)  # keeps its heartbeats going
            now = time.perf_counter()
            if first_seen is None:
                depth = probe.depth(queue)
                if 0 <= depth < n:
                    first_seen, first_depth = now, depth
                elif time.monotonic() > deadline:
                    raise RuntimeError(f"{queue}: the worker took no task in 120 s")
            elif now - first_seen > float(os.environ["BENCH_DRAIN_BUDGET"]):
                rate = (first_depth - probe.depth(queue)) / (now - first_seen)
                return rate, resident_megabytes(worker.pid)
            time.sleep(0.005)
        finished = time.perf_counter()
        if not first_depth:  # all taken before the first look (a tiny N): count the start-up
            return n / (finished - started), resident_megabytes(worker.pid)
        assert first_seen is not None
        return first_depth / (finished - first_seen), resident_megabytes(worker.pid)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        shutil.rmtree(mark_file.parent, ignore_errors=True)
        probe.channel.queue_purge(queue)  # what a slow worker left


def resident_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def makespan(url: str, probe: Probe, *, prefetch: int) -> float:
    """Seconds from publishing the skewed workload to its last task done, on three workers."""
    probe.delete([FAIR])
    QueueSpec(FAIR).declare(probe.channel)
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
        publish_pipelined(url, QueueSpec(FAIR), messages, persistent=True)
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
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.connection.close()

    def depth(self, queue: str) -> int:
        try:
            return self.channel.queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet by its worker
            self.channel = self.connection.channel()
            return -1

    def delete(self, queues: list[str]) -> None:
        for queue in queues:
            self.channel.queue_delete(queue)


# -- reporting ----------------------------------------------------------------------------


def times(a: float, b: float, digits: int = 2) -> str:
    """a / b as '1.23x', or 'n/a' where b measured nothing."""
    return f"{a / b:.{digits}f}x" if b else "n/a"


def markdown_table(medians: dict[str, float], n: int, repeats: int) -> str:
    m = medians
    ideal = ideal_makespan()
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
            "this project, prefetch 1",
            m["drain.project"],
            f"{times(m['drain.project'], m['drain.bare'], 2)} bare pika, "
            f"{times(m['drain.project'], m['drain.celery'], 1)} Celery, "
            f"{times(m['drain.project'], m['drain.dramatiq'], 1)} Dramatiq",
        ),
        ("", "bare pika loop, prefetch 1", m["drain.bare"], ""),
        ("", "Celery solo pool, acks late, prefetch 1", m["drain.celery"], ""),
        ("", "Celery, the same with its default prefetch (4)", m["drain.celery_prefetch_4"], ""),
        ("", "Dramatiq, 1 process, 1 thread", m["drain.dramatiq"], ""),
        (
            "Fair dispatch, makespan s",
            "3 workers, prefetch 1",
            m["fair.prefetch_1"],
            f"{m['fair.prefetch_1'] / ideal:.2f}x the ideal {ideal:.2f} s",
        ),
        (
            "",
            "3 workers, unlimited prefetch",
            m["fair.unlimited"],
            f"{m['fair.unlimited'] / ideal:.2f}x the ideal",
        ),
        ("Worker memory, MB", "this project's worker, resident", m["memory.project"], ""),
    ]
    lines = [
        "| measure | what | median | ratio |",
        "| --- | --- | ---: | --- |",
        *(
            f"| {measure} | {what} | {value:,.2f} | {ratio} |"
            if value < 100
            else f"| {measure} | {what} | {value:,.0f} | {ratio} |"
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


def draw_chart(medians: dict[str, float], path: Path) -> None:
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
            ("this project", medians["drain.project"]),
            ("bare pika", medians["drain.bare"]),
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
        labels, values = zip(*bars, strict=True)
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
    main()
