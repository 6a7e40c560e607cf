"""What every lesson script shares on the command line: --url, --burst, and one-line errors."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable

import pika.exceptions

from rabbit_queues.broker import Broker
from rabbit_queues.connection import DEFAULT_URL, BrokerError, redact_url
from rabbit_queues.pipelined import Message, publish_pipelined
from rabbit_queues.queues import QueueSpec


def script_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--url`` option every script takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        help="broker address, amqp://user:password@host:port/vhost or amqps://... for TLS "
        f"(default: the AMQP_URL environment variable, else {redact_url(DEFAULT_URL)})".replace(
            "%",
            "%%",  # argparse formats help with %
        ),
    )
    return parser


def add_burst_option(parser: argparse.ArgumentParser) -> None:
    """``--burst``: for workers, exit 0 once the queue is empty instead of waiting for more."""
    parser.add_argument(
        "--burst",
        action="store_true",
        help="process the messages waiting in the queue, then exit 0 (for scripts and tests)",
    )


def send_lines(
    broker: Broker,
    queue: QueueSpec,
    lines: Iterable[str],
    to_message: Callable[[str], Message],
    *,
    persistent: bool,
    noun: str,
) -> None:
    """``new_task.py -``: send one message per non-blank line, then print one summary line.

    Pipelined: up to a thousand messages are in flight, unconfirmed, at a time; the count
    printed (or reported in the error, if something fails mid-way) is exactly what the broker
    has confirmed. ``to_message`` may raise ValueError for a line it cannot read.
    """
    started = time.perf_counter()
    messages = (to_message(line.rstrip("\r\n")) for line in lines if line.strip())
    count = publish_pipelined(broker.url, queue, messages, persistent=persistent, noun=noun)
    elapsed = time.perf_counter() - started
    print(f" [x] Sent {count} {noun} in {elapsed:.2f} s, each confirmed by the broker")


def plain_text(line: str) -> Message:
    """A line of standard input sent as it is, as the message's body."""
    return line, {}


def run_script(main: Callable[[], None]) -> None:
    """Run a lesson script: print broker problems in one line on stderr, exit non-zero."""
    # Line-buffered even into a pipe, so `worker.py | tee log` shows each line as it happens.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        main()
    except BrokerError as error:
        sys.exit(f"error: {error}")
    except pika.exceptions.AMQPError as error:
        sys.exit(f"error: lost the connection to RabbitMQ ({type(error).__name__}: {error})")
    except KeyboardInterrupt:
        sys.exit(" [*] Interrupted")
