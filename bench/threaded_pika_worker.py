"""A second reference: the minimal threaded pika consumer (pika's basic_consumer_threaded.py
idea). Each message is handled on a thread of its own and the ack is handed back to the
connection's thread with add_callback_threadsafe: two thread hand-offs per message."""

import argparse
import functools
import threading

import pika


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)

    def handle(delivery_tag: int) -> None:  # on its own thread: the task would run here
        ack = functools.partial(channel.basic_ack, delivery_tag)
        connection.add_callback_threadsafe(ack)

    def on_message(_channel, method, _properties, _body) -> None:
        threading.Thread(target=handle, args=(method.delivery_tag,)).start()

    channel.basic_consume(args.queue, on_message)
    channel.start_consuming()


if __name__ == "__main__":
    main()
