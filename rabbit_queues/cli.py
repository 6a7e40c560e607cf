"""What the lesson scripts share on the command line: --url, the worker options, labelled
output, and one-line errors.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn, TextIO

import pika.exceptions

from rabbit_queues.connection import BLOCKED_TOO_LONG, DEFAULT_URL, BrokerError, redact_url
from rabbit_queues.queues import QUEUE_TYPES


class _OneLineErrors(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A mistake on the command line is one line, as every other error of the scripts
        (argparse would print the whole usage, wrapped to the terminal's width)."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def script_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--url`` option every script takes."""
    parser = _OneLineErrors(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        action="append",
        help="broker address, amqp://user:password@host:port/vhost or amqps://... for TLS; "
        "repeat it for the nodes of a cluster (default: the AMQP_URL environment variable, "
        f"comma-separated for a cluster, else {redact_url(DEFAULT_URL)})".replace(
            "%",
            "%%",  # argparse formats help with %
        ),
    )
    return parser


def add_queue_type_option(parser: argparse.ArgumentParser) -> None:
    """``--queue-type quorum|classic`` (default: the QUEUE_TYPE environment variable, else
    quorum). Producers and workers of a queue must agree: it is declared once, one way."""
    parser.add_argument(
        "--queue-type",
        type=_queue_type,
        default=os.environ.get("QUEUE_TYPE") or "quorum",
        metavar="{quorum,classic}",
        help="quorum: replicated over a cluster's nodes, declared as RabbitMQ's own tutorials "
        "declare it; classic: one node holds it (default: the QUEUE_TYPE environment "
        "variable, else quorum)",
    )


def _queue_type(value: str) -> str:
    if value not in QUEUE_TYPES:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a queue type: quorum or classic (from --queue-type or QUEUE_TYPE)"
        )
    return value


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """``--burst``, ``--name`` and ``--verbose``: what every worker takes."""
    parser.add_argument(
        "--burst",
        action="store_true",
        help="process the messages waiting in the queue, then exit 0 (for scripts and tests)",
    )
    parser.add_argument(
        "--name",
        help="start each line with NAME, to tell workers apart in one terminal or log",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="start each line with the time it was printed (to the millisecond), and say "
        "first the process id (to kill -9 this worker)",
    )


def label_output(name: str | None, *, timestamps: bool) -> None:
    """Start every line this process prints with ``name`` and, if asked, the time (then say
    the process id first)."""
    if name is None and not timestamps:
        return

    def label() -> str:
        time_now = datetime.now().strftime("%H:%M:%S.%f")[:-3] if timestamps else ""
        return " ".join(part for part in (time_now, name) if part) + " |"

    sys.stdout = _LabelledLines(sys.stdout, label)
    sys.stderr = _LabelledLines(sys.stderr, label)
    if timestamps:
        print(f" [*] Process id {os.getpid()}")


class _LabelledLines(io.TextIOBase):
    """A text stream that starts each line written to it with ``label()``."""

    def __init__(self, stream: TextIO, label: Callable[[], str]) -> None:
        self._stream = stream
        self._label = label
        self._at_line_start = True
        self._lock = threading.Lock()  # a line may be written from another thread

    def write(self, text: str) -> int:
        with self._lock:
            pieces = []
            for line in text.splitlines(keepends=True):
                if self._at_line_start:
                    pieces.append(self._label() + ("" if line.startswith(" ") else " "))
                pieces.append(line)
                self._at_line_start = line.endswith("\n")
            self._stream.write("".join(pieces))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


def shortened(text: str, limit: int = 200) -> str:
    """``text``, or its first ``limit`` characters and its length: a 20 MB message must not
    flood the terminal. (200 characters: a JSON task, id and all, fits.)"""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def counted(count: int, noun: str) -> str:
    """'1 task', '2 tasks': ``noun`` is the plural."""
    return f"{count} {noun.removesuffix('s') if count == 1 else noun}"


HINTS = {  # what to do about a refusal, by its reply code
    403: (
        "; the user needs configure, write and read permissions on the vhost: rabbitmqctl "
        "set_permissions -p VHOST USER '.*' '.*' '.*'"
    ),
}


def run_script(main: Callable[[], None]) -> None:
    """Run a lesson script: print broker problems in one line on stderr, exit non-zero."""
    # Line-buffered even into a pipe, so `worker.py | tee log` shows each line as it happens;
    # one write per line, even where PYTHONUNBUFFERED would make one per piece of a print (on
    # stderr Python always does): then a line of one stream never lands inside the other's.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=False)  # type: ignore[union-attr]
    # SIGTERM (kill) stops a script as Ctrl+C does, saying what it had done (the lesson
    # scripts set it before their imports already). A worker asks for a clean stop on both
    # instead, once it consumes.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        main()
    except BrokerError as error:
        sys.exit(f"error: {error}")
    except pika.exceptions.ConnectionBlockedTimeout:
        sys.exit(
            f"error: {BLOCKED_TOO_LONG}; the message was not confirmed: it may or may not be "
            "in the queue"
        )
    except pika.exceptions.ChannelClosedByBroker as error:  # it refused what we asked
        sys.exit(f"error: RabbitMQ refused: {error.reply_text}{HINTS.get(error.reply_code, '')}")
    except pika.exceptions.AMQPError as error:
        sys.exit(f"error: lost the connection to RabbitMQ ({type(error).__name__}: {error})")
    except KeyboardInterrupt:
        sys.exit(" [*] Interrupted")
    finally:
        _let_go_of_closed_streams()


def _let_go_of_closed_streams() -> None:
    """A terminal or pipe whose reader went away must not turn a clean exit into Python's exit
    code 120 for what could not be flushed to it: what is left goes nowhere."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
