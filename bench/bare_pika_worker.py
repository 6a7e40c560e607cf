"""The bare pika loop the benchmark compares against: prefetch 1, ack in the callback."""

import argparse

import pika


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()

    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)

    def on_message(channel, method, _properties, _body):
        channel.basic_ack(method.delivery_tag)

    channel.basic_consume(args.queue, on_message)
    channel.start_consuming()


if __name__ == "__main__":
    main()
