"""What `python work_queue/new_task.py "x"` does, in bare pika: the yardstick of its start-up.

Connect, confirm_delivery, declare task_queue as the lesson does (quorum), publish one
persistent task and wait for its confirm, close. Timed as a whole process with farm-bench
(docs/performance.md, "One task from a fresh process").
"""

import os
import sys

import pika

url = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.confirm_delivery()
channel.queue_declare("task_queue", durable=True, arguments={"x-queue-type": "quorum"})
channel.basic_publish(
    "", "task_queue", sys.argv[1].encode(), pika.BasicProperties(delivery_mode=2), mandatory=True
)
print(f" [x] Sent '{sys.argv[1]}'")
connection.close()
