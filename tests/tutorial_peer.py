#!/usr/bin/env python
"""A producer and a worker written the way RabbitMQ's own Python tutorial writes them.

They declare 'hello' and 'task_queue' exactly as that tutorial does (durable quorum queues,
no other argument), so the tests can mix them with this repository's scripts on one broker:

python tests/tutorial_peer.py send hello "Hello World!"     (transient, like send.py)
python tests/tutorial_peer.py send task_queue "A task..."   (persistent, like new_task.py)
python tests/tutorial_peer.py work hello                    (auto-ack, like receive.py)
python tests/tutorial_peer.py work task_queue               (prefetch 1, manual ack, like
                                                             worker.py)
The broker is AMQP_URL's.
"""

import os
import sys
import time

import pika

QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}


def main(role: str, queue: str, words: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True, arguments=QUEUE_ARGUMENTS)
    if role == "send":
        message = " ".join(words) or "Hello World!"
        properties = None
        if queue == "task_queue":
            properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        channel.basic_publish(exchange="", routing_key=queue, body=message, properties=properties)
        print(f" [x] Sent {message}", flush=True)
        connection.close()
        return

    def callback(ch, method, properties, body):
        print(f" [x] Received {body.decode()}", flush=True)
        if queue == "task_queue":
            time.sleep(body.count(b"."))
            print(" [x] Done", flush=True)
            ch.basic_ack(delivery_tag=method.delivery_tag)

    if queue == "task_queue":
        channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue=queue, on_message_callback=callback, auto_ack=queue == "hello")
    print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
    channel.start_consuming()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
