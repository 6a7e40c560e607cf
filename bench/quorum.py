"""What a quorum queue costs per task against a classic one, side by side in one run.

  python -m bench.quorum                         on AMQP_URL's broker (one node)
  python -m bench.quorum --url amqp://...        a node of a cluster: the quorum queue is
                                                 replicated over all its nodes

For each queue type: N no-op tasks enqueued with this project's pipelined confirms
(`new_task.py -`), then drained by one worker at prefetch 1, this project's and a bare pika
loop, in turn (each on N tasks of its own). It prints medians, their ratios, and what the
quorum queue adds to each task in microseconds. Its queues
(bench.classic, bench.quorum, with their .retry and .dlq) are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench.run import Probe, drain, enqueue_project, require_at_least, timed
from rabbit_queues.cli import run_script
from rabbit_queues.connection import broker_url
from rabbit_queues.queues import QueueSpec, QueueType, dead_letter_queue

QUEUES: dict[QueueType, QueueSpec] = {
    "classic": QueueSpec("bench.classic"),
    "quorum": QueueSpec("bench.quorum"),
}
ALL_QUEUES = [f"{q.name}{suffix}" for q in QUEUES.values() for suffix in ("", ".retry", ".dlq")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", help="a broker node (default: AMQP_URL, else the local default)")
    parser.add_argument("--n", type=int, default=20_000, help="no-op tasks per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    require_at_least(1, n=args.n, repeats=args.repeats)
    url = broker_url(args.url)
    os.environ["BENCH_DRAIN_BUDGET"] = "120"  # drain() reads it; these drains always finish

    samples: dict[str, list[float]] = {}
    with Probe(url) as probe:
        try:
            for repeat in range(1, args.repeats + 1):
                print(f" [*] Run {repeat} of {args.repeats} (N={args.n})", file=sys.stderr)
                for queue_type, spec in QUEUES.items():
                    probe.delete(ALL_QUEUES)
                    queue = spec.of_type(queue_type)
                    # "0": a task of 0 ms for bench/project_worker.py (anything else fails).
                    enqueue = args.n / timed(
                        lambda q=queue: enqueue_project(url, args.n, q, body="0")
                    )
                    record(samples, f"enqueue.{queue_type}", enqueue)
                    # This project's worker and a bare pika loop on the same queue, in turn
                    # (the other first every other run), each on N freshly enqueued tasks.
                    project = [sys.executable, "-m", "bench.project_worker", "--url", url]
                    project += ["--queue", spec.name, "--queue-type", queue_type]
                    bare = [sys.executable, "-m", "bench.bare_pika_worker", "--url", url]
                    bare += ["--queue", spec.name]
                    workers = [("drain", project), ("bare", bare)]
                    for number, (key, command) in enumerate(workers[:: 1 if repeat % 2 else -1]):
                        if number:
                            enqueue_project(url, args.n, queue, body="0")
                        rate, _ = drain(probe, spec.name, args.n, command)
                        record(samples, f"{key}.{queue_type}", rate)
                    dead_letters = dead_letter_queue(queue).name
                    if (failed := probe.depth(dead_letters)) > 0:  # it measured failures
                        raise RuntimeError(f"{failed} tasks were dead-lettered: see the worker")
        finally:
            probe.delete(ALL_QUEUES)
    m = {name: statistics.median(values) for name, values in samples.items()}
    print("| measure | classic, msg/s | quorum, msg/s | quorum / classic | quorum adds per task |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for measure, key in (
        ("enqueue, pipelined confirms", "enqueue"),
        ("drain, one worker, prefetch 1", "drain"),
        ("drain, bare pika loop, prefetch 1", "bare"),
    ):
        classic, quorum = m[f"{key}.classic"], m[f"{key}.quorum"]
        added = 1e6 / quorum - 1e6 / classic
        ratio = quorum / classic
        print(f"| {measure} | {classic:,.0f} | {quorum:,.0f} | {ratio:.2f}x | {added:+,.0f} µs |")
    against = {  # per run, then the median: the two drains of a run ran side by side
        queue_type: statistics.median(
            ours / bare
            for ours, bare in zip(
                samples[f"drain.{queue_type}"], samples[f"bare.{queue_type}"], strict=True
            )
        )
        for queue_type in QUEUES
    }
    print(
        f"\nThis project's worker against the bare pika loop, median of the runs' ratios: "
        f"{against['classic']:.2f}x on the classic queue, {against['quorum']:.2f}x on the quorum "
        "queue."
    )
    print(f"N = {args.n:,} no-op tasks per measurement, median of {args.repeats} run(s).")


def record(samples: dict[str, list[float]], name: str, value: float | None) -> None:
    if value is None:
        raise RuntimeError(f"{name} stalled: see the worker")
    samples.setdefault(name, []).append(value)
    print(f"     {name}: {value:,.0f} msg/s", file=sys.stderr)


if __name__ == "__main__":
    run_script(main)  # a broker that does not answer: one line, not a traceback
