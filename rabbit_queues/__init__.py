"""The small wrapper over pika that the lesson scripts share.

It is the only place that knows how to reach the broker and how each queue is declared, so a
producer and a worker can never declare the same queue differently. Its lesson is broker.py,
pika's own calls (confirm_delivery, queue_declare, basic_publish, basic_qos, basic_consume,
basic_ack) in one short file; what keeps a worker going when things go wrong is its Part 2,
staying_up.py. The scripts still say where messages are persistent, where they are
acknowledged and how many a worker may hold (prefetch).
"""

from rabbit_queues.broker import Broker
from rabbit_queues.cli import (
    add_queue_type_option,
    add_worker_options,
    counted,
    label_output,
    run_script,
    script_parser,
    shortened,
)
from rabbit_queues.connection import DEFAULT_URL, BrokerError, broker_url, redact_url
from rabbit_queues.delivery import Delivery
from rabbit_queues.pipelined import plain_text, send_lines
from rabbit_queues.queues import (
    HELLO,
    RESULTS,
    TASK_QUEUE,
    TASKS,
    QueueSpec,
    dead_letter_queue,
    retry_queue,
)

__all__ = [
    "DEFAULT_URL",
    "HELLO",
    "RESULTS",
    "TASKS",
    "TASK_QUEUE",
    "Broker",
    "BrokerError",
    "Delivery",
    "QueueSpec",
    "add_queue_type_option",
    "add_worker_options",
    "broker_url",
    "counted",
    "dead_letter_queue",
    "label_output",
    "plain_text",
    "redact_url",
    "retry_queue",
    "run_script",
    "script_parser",
    "send_lines",
    "shortened",
]
