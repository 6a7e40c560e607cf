"""What each worker does per message, counted in instructions: the same figure on every run.

  python -m bench.instructions             N=2,000 no-op tasks, on AMQP_URL's broker
  python -m bench.instructions --n 500

A drain's rate (python -m bench.run) swings with a shared machine by more than the wrapper
costs; the instructions a worker executes per message do not. Each worker drains N tasks, and
N/10, under valgrind's callgrind (apt-get install valgrind), and is stopped with SIGTERM
once its queue is empty: the difference between the two counts, divided by the
difference in tasks, is what one message costs it, start-up and shutdown left out. Counted: the
worker process's own instructions, in every thread; not the kernel's (a print's write, the
socket), nor the broker's. It uses the queues bench.bare and task_queue, with its .retry and
.dlq (classic, as bench.run does; like it, it refuses to start if one of the last three holds
a message or has a worker), and deletes them afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.run import (
    BARE,
    LESSON_QUEUE,
    LESSON_QUEUES,
    WORKER_ARGS,
    Probe,
    drain,
    enqueue_bare,
    enqueue_project,
    require_at_least,
)
from rabbit_queues.cli import run_script
from rabbit_queues.connection import broker_url

# A worker that takes no task for this long has stalled (callgrind slows it some fifty times).
STALL_SECONDS = 120
QUEUES = [BARE, *LESSON_QUEUES]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", help="broker (default: AMQP_URL, else the local default)")
    parser.add_argument("--n", type=int, default=2_000, help="no-op tasks (at least 20)")
    args = parser.parse_args()
    require_at_least(20, n=args.n)
    if shutil.which("valgrind") is None:
        sys.exit("error: valgrind is not installed (apt-get install valgrind)")
    url = broker_url(args.url)
    os.environ["BENCH_DRAIN_BUDGET"] = "inf"  # drain() reads it: every task, however slow
    python = sys.executable
    lesson_worker = [python, "work_queue/worker.py", "--url", url, *WORKER_ARGS]
    project_worker = [python, "-m", "bench.project_worker", "--url", url, "--queue"]
    workers: list[tuple[str, str, Callable[[int], None], list[str]]] = [
        (
            "bare pika loop, prefetch 1, ack inline",
            BARE,
            lambda n: enqueue_bare(url, BARE, n, confirm_each=False),
            [python, "-m", "bench.bare_pika_worker", "--url", url, "--queue", BARE],
        ),
        (
            "this project's consume path, a handler that only acks (bench/project_worker.py)",
            LESSON_QUEUE.name,
            lambda n: enqueue_project(url, n, LESSON_QUEUE, body="0"),
            [*project_worker, LESSON_QUEUE.name],
        ),
        (
            "work_queue/worker.py, its two prints to /dev/null",
            LESSON_QUEUE.name,
            lambda n: enqueue_project(url, n, LESSON_QUEUE),
            lesson_worker,
        ),
    ]
    counts: dict[str, float] = {}
    with Probe(url) as probe, tempfile.TemporaryDirectory() as scratch:
        probe.take_over_lesson_queues()
        try:
            for what, queue, enqueue, command in workers:
                totals = []
                for n in (args.n // 10, args.n):
                    print(f" [*] {n:,} tasks under callgrind: {what}", file=sys.stderr)
                    probe.delete(QUEUES)  # fresh: nothing the last worker gave back
                    enqueue(n)
                    totals.append(instructions(probe, queue, n, command, Path(scratch) / "out"))
                counts[what] = (totals[1] - totals[0]) / (args.n - args.n // 10)
                print(f"     {what}: {counts[what]:,.0f}", file=sys.stderr)
        finally:
            probe.delete(QUEUES)
    bare = counts[workers[0][0]]
    print("| worker | instructions per message | against bare pika |")
    print("| --- | ---: | ---: |")
    for what, count in counts.items():
        print(f"| {what} | {count:,.0f} | {count / bare:.3f}x |")
    print(
        f"\nN = {args.n:,} no-op tasks against {args.n // 10:,}, counted by valgrind's callgrind;"
        " prefetch 1, a classic queue."
    )


def instructions(probe: Probe, queue: str, n: int, command: list[str], out: Path) -> int:
    """Run ``command`` under callgrind until ``queue``'s ``n`` tasks are taken, stop it with
    SIGTERM (drain() does both), and return the instructions it executed."""
    # The worker holds the last task at most (prefetch 1) when the queue is empty. On SIGTERM
    # this project's workers finish it first; the bare loop, which has no handler for it, ends
    # inside it or after it: one message's count at most is off, in the N - N/10 of the
    # difference. (Not SIGINT: valgrind ends the bare loop at once on SIGTERM, where a
    # KeyboardInterrupt waits for Python to see it; once, under load, it did not come within
    # two minutes.)
    callgrind = ["valgrind", "--tool=callgrind", "--vgdb=no", f"--callgrind-out-file={out}"]
    out.unlink(missing_ok=True)  # callgrind writes it at exit: never the last worker's
    rate, _ = drain(probe, queue, n, [*callgrind, *command], stall_seconds=STALL_SECONDS)
    name = " ".join(command[1:3])
    if rate is None:
        raise RuntimeError(f"{name} stalled: no task taken for {STALL_SECONDS} s")
    summary = re.search(r"^summary: (\d+)$", out.read_text() if out.exists() else "", re.MULTILINE)
    if summary is None:  # killed, not stopped: it did not exit within 2 * STALL_SECONDS
        raise RuntimeError(f"callgrind wrote no summary for {name}")
    return int(summary.group(1))


if __name__ == "__main__":
    run_script(main)  # a broker that does not answer: one line, not a traceback
