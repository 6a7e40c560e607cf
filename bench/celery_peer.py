"""Celery's side of the benchmark: a no-op task, acks late, prefetch 1, publisher confirms."""

import os

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_AMQP_URL"])
app.conf.update(
    task_default_queue="bench.celery",
    task_acks_late=True,  # ack after the task, as this project's worker does
    # prefetch_count=1, as this project's worker; the benchmark also runs Celery's default, 4
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "1")),
    task_ignore_result=True,
    broker_transport_options={"confirm_publish": True},  # wait for the broker's confirm
)


@app.task(name="noop")
def noop() -> None:
    pass
