#!/usr/bin/env python
"""Lesson 3, worker: run the JSON tasks of the 'tasks' queue and send each result to 'results'.

Only the task types registered in tasks.py can run: a message names a function, it never
carries code (no pickle, no eval). A task that cannot run (unknown type, wrong arguments,
not JSON) gets an error result at once, and the message goes to 'tasks.dlq'; a task that
raises is tried again twice, a few seconds apart, before that.
"""

import signal

# kill (SIGTERM) stops it as Ctrl+C does, already while it starts: never without a word
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from task_messages import BadTask, Result, Task, result_message
    from tasks import registry

    from rabbit_queues.cli import (
        add_queue_type_option,
        add_worker_options,
        run_script,
        script_parser,
    )
    from rabbit_queues.connection import broker_url
    from rabbit_queues.delivery import Delivery
    from rabbit_queues.queues import RESULTS, TASKS
    from rabbit_queues.staying_up import Worker
except ModuleNotFoundError as missing:  # not run in the virtual environment: one line
    raise SystemExit(
        f"error: {missing}; activate the virtual environment (. .venv/bin/activate)"
        " or run pip install -r requirements.txt"
    ) from None
except KeyboardInterrupt:  # Ctrl+C or kill while it starts
    raise SystemExit(" [*] Interrupted") from None


def main() -> None:
    parser = script_parser(__doc__)
    add_worker_options(parser)  # --burst, --verbose
    add_queue_type_option(parser)
    args = parser.parse_args()
    tasks, results = TASKS.of_type(args.queue_type), RESULTS.of_type(args.queue_type)

    with Worker(broker_url(args.url)) as worker:
        worker.declare(tasks, results)

        def send_result(task_id: str | None, result: bytes) -> None:
            # worker.broker: the Broker the worker holds now (a new one after a reconnect)
            worker.broker.publish(
                results,
                result,
                persistent=True,
                correlation_id=task_id,  # results.py matches a result to its task by this
                content_type="application/json",
            )

        def on_task(delivery: Delivery) -> None:
            task_id, task = delivery.properties.message_id, None
            try:
                task = Task.decode(delivery.body)
                task_id = task.id
                in_chain = (
                    f", step {task.chain.step} of chain {task.chain.id}" if task.chain else ""
                )
                print(f" [x] Received {task}, task id {task.id}{in_chain}")
                value = registry.run(task)
                result = result_message(task_id, task, result=value)
            except Exception as error:  # BadTask, or the task itself raised
                reason = f"{type(error).__name__}: {error}"
                # A bad message will never run: dead-letter it now. A task that raised may
                # work later (a service it needs was down...): retry it, a few times.
                if isinstance(error, BadTask) or delivery.is_last_attempt:
                    send_result(task_id, result_message(task_id, task, error=reason))
                if isinstance(error, BadTask):
                    outcome = delivery.dead_letter(reason)
                else:
                    outcome = delivery.retry(reason)
                print(f" [!] Failed: {reason}; {outcome}")
                return
            # In a chain, the next step goes to 'tasks' with this result as its first
            # argument. The next step and the result first (each confirmed by the broker),
            # the ack last: a crash in between repeats this step, but never loses the chain.
            next_step = task.next_step(value)
            if next_step is not None:
                worker.broker.publish(
                    tasks,
                    next_step.encode(),
                    persistent=True,
                    message_id=next_step.id,
                    content_type="application/json",
                )
            send_result(task_id, result)
            delivery.ack()
            print(f" [x] Done: {Result.decode(result).outcome}")

        worker.consume(tasks, on_task, prefetch_count=1)  # one task at a time, as in lesson 2
        print(" [*] Waiting for messages. To exit press CTRL+C")
        worker.run(until_empty=args.burst)


if __name__ == "__main__":
    run_script(main)
