#!/usr/bin/env python
"""Lesson 3, worker: run the JSON tasks of the 'tasks' queue and send each result to 'results'.

Only the task types registered in tasks.py can run: a message names a function, it never
carries code (no pickle, no eval). A task that cannot run (unknown type, wrong arguments,
not JSON) gets an error result at once, and the message goes to 'tasks.dlq'; a task that
raises is tried again twice, a few seconds apart, before that.
"""

from task_messages import CONTENT_TYPE, BadTask, Result, Task, result_message
from tasks import registry

from rabbit_queues.cli import run_script, script_parser
from rabbit_queues.delivery import Delivery
from rabbit_queues.queues import RESULTS, TASKS
from rabbit_queues.staying_up import Worker


def callback(delivery: Delivery) -> None:  # pika calls it with each task
    task_id, task = delivery.properties.message_id, None
    try:
        task = Task.decode(delivery.body)
        task_id = task.id
        in_chain = f", step {task.chain.step} of chain {task.chain.id}" if task.chain else ""
        print(f" [x] Received {task}, task id {task.id}{in_chain}")
        value = registry.run(task)
        result = result_message(task_id, task, result=value)
    except Exception as error:  # BadTask, or the task itself raised
        reason = f"{type(error).__name__}: {error}"
        # A bad message will never run: dead-letter it now. A task that raised may work
        # later (a service it needs was down...): retry it, a few times.
        if isinstance(error, BadTask) or delivery.is_last_attempt:
            send_result(delivery, task_id, result_message(task_id, task, error=reason))
        if isinstance(error, BadTask):
            outcome = delivery.dead_letter(reason)
        else:
            outcome = delivery.retry(reason)
        print(f" [!] Failed: {reason}; {outcome}")
        return
    # In a chain, the next step goes to 'tasks' with this result as its first argument. The
    # next step and the result first (each confirmed by the broker), the ack last: a crash in
    # between repeats this step, but never loses the chain.
    next_step = task.next_step(value)
    if next_step is not None:  # channel.basic_publish, as new_task.py sends a task
        properties = {"message_id": next_step.id, "content_type": CONTENT_TYPE}
        delivery.broker.publish(delivery.queue, next_step.encode(), persistent=True, **properties)
    send_result(delivery, task_id, result)
    delivery.ack()  # channel.basic_ack(delivery_tag=method.delivery_tag)
    print(f" [x] Done: {Result.decode(result).outcome}")


def send_result(delivery: Delivery, task_id: str | None, result: bytes) -> None:
    """To 'results', declared as 'tasks' is; results.py matches it to its task by the
    correlation_id. channel.basic_publish(..., properties=pika.BasicProperties(
    delivery_mode=pika.DeliveryMode.Persistent, correlation_id=task_id))"""
    results = RESULTS.of_type(delivery.queue.queue_type)
    delivery.broker.publish(
        results, result, persistent=True, correlation_id=task_id, content_type=CONTENT_TYPE
    )


def main() -> None:
    args = script_parser(__doc__, worker=True).parse_args()  # --url, --burst, --queue-type...
    tasks, results = TASKS.of_type(args.queue_type), RESULTS.of_type(args.queue_type)
    with Worker(args.url) as worker:  # pika.BlockingConnection(parameters).channel()
        worker.declare(tasks, results)  # channel.queue_declare(..., durable=True), each
        # channel.basic_qos(prefetch_count=1): one task at a time, as in lesson 2; then
        # channel.basic_consume("tasks", callback), which also declares tasks.retry and .dlq
        worker.consume(tasks, callback, prefetch_count=1)
        print(" [*] Waiting for messages. To exit press CTRL+C")
        worker.run(until_empty=args.burst)  # channel.start_consuming()


if __name__ == "__main__":
    run_script(main)
