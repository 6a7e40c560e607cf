"""What the scripts share on the command line: the options, one-line errors, and stopping on
Ctrl+C or SIGTERM (which run_script makes a Ctrl+C)."""

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pika.exceptions

from rabbit_queues.connection import (
    BLOCKED_TOO_LONG,
    DEFAULT_URL,
    BrokerError,
    broker_url,
    grant_command,
    redact_url,
    what_was_lost,
)
from rabbit_queues.queues import QUEUE_TYPES


class _ScriptParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # not the whole usage, as argparse would
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, *args: Any, **kwargs: Any) -> tuple[argparse.Namespace, list[str]]:
        parsed, rest = super().parse_known_args(*args, **kwargs)
        parsed.url = broker_url(parsed.url)  # the broker's URL, wherever it was given
        return parsed, rest


def script_parser(
    description: str, *, queue_type: bool = True, worker: bool = False
) -> argparse.ArgumentParser:
    """An argument parser with the ``--url`` option every script takes (``args.url``: from
    ``--url``, else ``AMQP_URL``, else the default), ``--queue-type`` (``queue_type``), and
    ``--burst`` and ``--verbose`` (a ``worker``)."""
    parser = _ScriptParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = redact_url(DEFAULT_URL).replace("%", "%%")  # argparse formats help with %
    parser.add_argument(
        "--url",
        action="append",
        help="broker address, amqp://user:password@host:port/vhost or amqps://... for TLS; "
        "repeat it for the nodes of a cluster (default: the AMQP_URL environment variable, "
        f"comma-separated for a cluster, else {default})",
    )
    if worker:
        parser.add_argument(
            "--burst",
            action="store_true",
            help="process the messages waiting in the queue, then exit 0 (for scripts and tests)",
        )
        parser.add_argument(
            "--verbose",
            action=_SayProcessId,
            nargs=0,
            help="say first the process id (to kill -9 this worker)",
        )
    if queue_type:  # producers and workers of a queue must agree: it is declared once, one way
        parser.add_argument(
            "--queue-type",
            type=_queue_type,
            default=os.environ.get("QUEUE_TYPE") or "quorum",
            metavar="{quorum,classic}",
            help="quorum: replicated over a cluster's nodes, declared as RabbitMQ's own "
            "tutorials declare it; classic: one node holds it (default: the QUEUE_TYPE "
            "environment variable, else quorum)",
        )
    return parser


def _queue_type(value: str) -> str:
    if value not in QUEUE_TYPES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a queue type: quorum or classic (from --queue-type or QUEUE_TYPE)"
        )
    return value


class _SayProcessId(argparse.Action):
    def __call__(self, *_args: Any) -> None:
        print(f" [*] Process id {os.getpid()}")


class NotSent(ValueError):
    """A line of standard input whose message no worker would take (too large): said,
    counted, and skipped: the lines after it are sent."""


def shortened(text: str, limit: int = 200) -> str:
    """``text``, or its first ``limit`` characters and its length: a 20 MB message must not
    flood the terminal."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def counted(count: int, noun: str) -> str:
    """'1 task', '2 tasks': ``noun`` is the plural."""
    return f"{count} {noun.removesuffix('s') if count == 1 else noun}"


def send_standard_input(broker: Any, queue: Any, **options: Any) -> None:
    """`new_task.py -`: a message per line of standard input, many in flight at once, each
    confirmed, by pipelined.py, imported only by a run that reads standard input."""
    from rabbit_queues.pipelined import send_lines

    send_lines(broker, queue, sys.stdin, **options)


PERMISSIONS = "; the user needs configure, write and read permissions on the vhost: " + (
    grant_command("VHOST", "USER")
)


def run_script(main: Callable[[], None]) -> None:
    """Run a script: broker problems in one line on stderr, and a non-zero exit. From here on,
    kill (SIGTERM) stops it as Ctrl+C does."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # Line-buffered even into a pipe (`worker.py | tee log` shows each line as it happens),
    # one write per line: a line of one stream never lands inside the other's.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]
    try:
        main()
    except BrokerError as error:
        sys.exit(f"error: {error}")
    except pika.exceptions.ConnectionBlockedTimeout:
        unsure = "the message was not confirmed: it may or may not be in the queue"
        sys.exit(f"error: {BLOCKED_TOO_LONG}; {unsure}")
    except pika.exceptions.ChannelClosedByBroker as error:  # it refused what we asked
        hint = PERMISSIONS if error.reply_code == 403 else ""
        sys.exit(f"error: RabbitMQ refused: {error.reply_text}{hint}")
    except pika.exceptions.AMQPError as error:
        sys.exit(f"error: {what_was_lost(error)}")
    except KeyboardInterrupt:
        sys.exit(" [*] Interrupted")
    finally:
        for stream in (sys.stdout, sys.stderr):  # a reader gone must not make the exit code 120
            try:
                stream.flush()
            except OSError:
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


@contextmanager
def stop_requests(stop: Callable[[], None]) -> Iterator[None]:
    """Within: Ctrl+C or SIGTERM calls ``stop()`` (finish what is in hand), a second one raises
    KeyboardInterrupt. ``stop`` must not print: the signal may have come inside a print."""
    if threading.current_thread() is not threading.main_thread():  # no signals there
        yield
        return
    requested = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        stop()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
